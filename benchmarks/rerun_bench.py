"""Issue 11: a whole finished rerun (``batchclassify run`` over a job that has nothing left).

    python benchmarks/rerun_bench.py [--rows 1000000] [--runs 3]
        [--sources txt,csv,jsonl,folder] [--checkouts OLD NEW ...]

Builds once, under ``benchmarks/data/rerun-N/``: a tree of N empty ``.jpg`` files (1,000 per
folder), a finished JSONL output holding one ok row per file (and its ``.job.json``), and
manifests (.txt, .csv, .jsonl) listing the same files by absolute path. Then for each source
kind and run, each checkout in turn (interleaved, the order rotated each run) runs
``python -m batchclassify run SOURCE --output OUT --quiet`` against the local server
(``python -m batchclassify.server --port 0``) with ``PYTHONPATH=<checkout>``, and the script
prints wall time, user and system CPU and peak RSS of the process (``os.wait4``), the server's
request count (must stay 0) and whether the output changed (it must not): min–max per checkout.
Then, in a process of its own, the decision alone: CPU seconds of the resume scan and of the
walk that finds every item done (the checkout's own producer check), one run each.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import Server  # noqa: E402

PY = sys.executable
MODEL = "colors/1"


NEWLINE = orjson.OPT_APPEND_NEWLINE
#: An ok row as the sink writes one (every row field, in order; ~600 bytes with its paths).
ROW = {
    "id": "", "path": "", "url": None, "status": "ok", "top": "red", "confidence": 0.9312,
    "predicted_classes": None,
    "predictions": [{"class": "red", "class_id": 0, "confidence": 0.9312},
                    {"class": "green", "class_id": 1, "confidence": 0.0500},
                    {"class": "blue", "class_id": 2, "confidence": 0.0188}],
    "multilabel": False, "image_width": 640, "image_height": 480,
    "inference_id": "4d3c2b1a-0f9e-4d8c-b7a6-5e4f3a2b1c0d", "attempts": 1, "http_status": 200,
    "error_type": None, "error": None, "elapsed_ms": 41.2, "cached": False, "cached_from": None,
    "server_ms": None, "cold_start": None, "credits": None,
}  # fmt: skip


_WRITE_SETTINGS = """
import sys
from pathlib import Path
from batchclassify.config import JobConfig
from batchclassify.output.sidecars import settings_path
from batchclassify.output.resume import job_settings, write_settings
config = JobConfig(sources=["x"], model=sys.argv[1], output=Path(sys.argv[2]))
write_settings(settings_path(config.output), job_settings(config))
"""


def build(data: Path, rows: int) -> None:
    """The tree, the finished output and the manifests (skipped when already there)."""
    done = data / "built"
    if done.exists():
        return
    tree = data / "tree"
    real_tree = os.path.realpath(tree)
    out = data / "out.jsonl"
    with (
        open(out, "wb") as rows_out,
        open(data / "manifest.txt", "w") as txt,
        open(data / "manifest.csv", "w") as csv,
        open(data / "manifest.jsonl", "wb") as jsonl,
    ):
        csv.write("path,label\n")
        for i in range(rows):
            folder = tree / f"batch-{i // 1000:04d}"
            if i % 1000 == 0:
                folder.mkdir(parents=True, exist_ok=True)
            name = f"img_{i:08d}.jpg"
            (folder / name).touch()
            path = f"{real_tree}/batch-{i // 1000:04d}/{name}"
            rows_out.write(orjson.dumps({**ROW, "id": path, "path": path}, option=NEWLINE))
            txt.write(path + "\n")
            csv.write(f"{path},x\n")
            jsonl.write(orjson.dumps({"path": path}, option=NEWLINE))
    # The settings file a finished job leaves, written by the package itself.
    subprocess.run([PY, "-c", _WRITE_SETTINGS, MODEL, str(out)], check=True)
    done.touch()


#: In one process of a checkout: CPU seconds of the resume scan, then of the walk deciding
#: every item is done (the producer's check, old or new), for one source.
_DECISION = """
import sys, time
from pathlib import Path
from batchclassify.config import DEFAULT_EXTENSIONS
from batchclassify.output.resume import PriorState
from batchclassify.output.sinks import open_sink
from batchclassify.inputs.sources import iter_item_batches
out, source = Path(sys.argv[1]), sys.argv[2]
state = PriorState()
started = time.process_time()
try:
    from batchclassify.output.resume import Screen
except ImportError:  # before the screen: the producer checked each item of a batch
    Screen = None
    state.scan = open_sink(out, "jsonl").scan(state.record)
else:
    state.scan = open_sink(out, "jsonl").scan(state)
scanned = time.process_time()
done = 0
if Screen is None:
    get = state.index.get
    for batch in iter_item_batches([source], extensions=DEFAULT_EXTENSIONS):
        for item in batch:
            done += get(item.id) == 1
else:
    screen = Screen(state.index, retry_failed=False, shard=None)
    for batch in iter_item_batches([source], extensions=DEFAULT_EXTENSIONS, keep=screen.keep):
        pass
    done = screen.done
walked = time.process_time()
print(scanned - started, walked - scanned, done)
"""


def decision(checkout: str, source: Path, out: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": checkout}
    text = subprocess.run(
        [PY, "-c", _DECISION, str(out), str(source)],
        env=env, cwd=checkout, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    scan, walk, done = text.split()
    assert int(done) > 0, text
    return {"scan": float(scan), "walk": float(walk), "decision": float(scan) + float(walk)}


def digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "md5").hexdigest()


def rerun(checkout: str, source: Path, out: Path, url: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": checkout}
    cmd = [PY, "-m", "batchclassify", "run", str(source), "--model", MODEL, "--output", str(out),
           "--api-url", url, "--api-key", "bench", "--quiet"]  # fmt: skip
    started = time.perf_counter()
    # cwd: ``python -m`` puts the working directory first on sys.path, before PYTHONPATH.
    proc = subprocess.Popen(
        cmd, env=env, cwd=checkout, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    text = proc.stdout.read().decode() if proc.stdout else ""
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{checkout}: exit {code}\n{text}")
    return {
        "wall": wall,
        "user": usage.ru_utime,
        "sys": usage.ru_stime,
        "rss": usage.ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sources", default="txt,csv,jsonl,folder")
    parser.add_argument("--checkouts", nargs="+", default=[str(HERE.parent)])
    args = parser.parse_args()
    data = HERE / "data" / f"rerun-{args.rows}"
    data.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    build(data, args.rows)
    print(f"data ready in {time.perf_counter() - started:.0f} s: {data}", flush=True)
    out = data / "out.jsonl"
    before = digest(out)
    sources = {
        "txt": data / "manifest.txt",
        "csv": data / "manifest.csv",
        "jsonl": data / "manifest.jsonl",
        "folder": data / "tree",
    }
    results: dict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)
    with Server([], cpu=None, log=data / "server.log") as server:
        for run in range(args.runs):
            for kind in args.sources.split(","):
                order = args.checkouts[run % len(args.checkouts) :]
                order += args.checkouts[: run % len(args.checkouts)]
                for checkout in order:
                    got = rerun(checkout, sources[kind], out, server.url)
                    got.update(decision(checkout, sources[kind], out))
                    results[(kind, checkout)].append(got)
                    print(
                        f"run {run} {kind:6} {checkout}: wall {got['wall']:.2f} s, user "
                        f"{got['user']:.2f} s, sys {got['sys']:.2f} s, rss {got['rss']:.0f} MB; "
                        f"in process: scan {got['scan']:.2f} s + walk {got['walk']:.2f} s CPU",
                        flush=True,
                    )
        requests = server.stats().get("requests")
    unchanged = digest(out) == before
    print(f"\nserver requests: {requests}; output unchanged: {unchanged}")
    print(f"\n{args.rows:,} items, min–max over {args.runs} runs (CPU in process: a second run)")
    print(
        "| source | checkout | wall s | user CPU s | sys CPU s | peak RSS MB "
        "| scan CPU s | walk CPU s | scan + walk (the decision) CPU s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    columns = ("wall", "user", "sys", "rss", "scan", "walk", "decision")
    for (kind, checkout), runs in results.items():
        cells = []
        for key in columns:
            fmt = ".0f" if key == "rss" else ".2f"
            values = [r[key] for r in runs]
            cells.append(f"{min(values):{fmt}}–{max(values):{fmt}}")
        print(f"| {kind} | {checkout} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
