"""Issue 25: a 10M-item job's peak memory, on a real 10M manifest.

    python benchmarks/index10m_bench.py [--items 10000000] [--left 75000] [--runs 1]
        [--checkouts OLD NEW ...]

Builds once, under ``benchmarks/data/index10m-N/``: a ``.txt`` manifest of N URL items (the
local server's ``/_files/`` route, cycling over 48 tiny JPEGs, a query making each line its own
item) and a finished JSONL output holding an ok row (the fields and shape ``run`` writes) for
every item but the last ``--left``, with its ``.job.json``. The URLs name a fixed port (kept in
``meta.json``, the server started on it); a port taken by something else rebuilds the data.
Then, for each run, each checkout in turn (the order rotated each run) runs the real CLI,
``batchclassify run MANIFEST --model colors/1 --api-url SERVER --api-key k --output
OUT --quiet`` with the checkout first on ``sys.path``, against ``python -m batchclassify.server
--model-cost hash --files-dir DIR``: it scans the output, walks the manifest, and classifies
the remainder. Printed per run: wall time, CPU, peak RSS (``ru_maxrss`` from ``os.wait4``),
the rows it added (must be ``--left``) and, in a process of its own, the checkout's resume
index sized as the job sizes it (reserved from the output's row estimate, then from the
count) and filled with N ids: its ``nbytes`` and growths. The output is cut back to its
built length after each run, so every run resumes the same job.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import datagen  # noqa: E402
from clients import _RUN_CHECKOUT  # noqa: E402
from harness import PY, Server, run_client  # noqa: E402

MODEL = "colors/1"
_CLASSES = ("red", "green", "blue", "yellow", "gray", "black", "white", "orange")
#: An ok row as ``run`` writes it (field order and all), for a URL item.
_ROW = (
    b'{"id":"%s","path":null,"url":"%s","status":"ok","top":"%s","confidence":0.%04d,'
    b'"predicted_classes":["%s"],"predictions":[{"class":"%s","confidence":0.%04d}],'
    b'"multilabel":false,"image_width":0,"image_height":0,'
    b'"inference_id":"%08x-%04x-4%03x-8%03x-%012x","attempts":1,"http_status":200,'
    b'"error_type":null,"error":null,"elapsed_ms":%d.%d,"cached":false,"cached_from":null,'
    b'"server_ms":null,"cold_start":null,"credits":0.0003333333333333333}\n'
)
#: What ``index_figures`` runs in the checkout's own interpreter: the job's sizing sequence.
_INDEX_PROBE = """
import json, sys
sys.path.insert(0, sys.argv.pop(1))
from batchclassify.output.idindex import IdIndex
items, done = int(sys.argv[1]), int(sys.argv[2])
index = IdIndex()
index.reserve(done)  # the scan's estimate (exact here: every row is alike)
chunk = 2_000
for start in range(0, items, chunk):
    if start == done - done % chunk:
        index.reserve(items)  # the count, met by the walk after the recorded items
    ids = [f"u{n}" for n in range(start, min(items, start + chunk))]
    index.set_all(ids, [1] * len(ids))
print(json.dumps({"nbytes": index.nbytes, "growths": index.growths, "ids": len(index)}))
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def build(folder: Path, items: int, left: int) -> dict[str, int]:
    """The manifest, the finished output (all but ``left`` items) and its settings file."""
    meta_path = folder / "meta.json"
    if meta_path.exists():
        meta: dict[str, int] = json.loads(meta_path.read_text())
        if meta["items"] == items and meta["left"] == left and port_is_free(meta["port"]):
            return meta
    folder.mkdir(parents=True, exist_ok=True)
    tiny = datagen.ensure_tiny(HERE / "data" / "tiny", 48)
    port = free_port()
    base = f"http://127.0.0.1:{port}/_files"
    print(f"building {items:,} items under {folder} (once) ...", flush=True)
    started = time.monotonic()
    datagen.write_url_manifest(folder / "urls.txt", base, [p.name for p in tiny], items)
    names = [p.name.encode() for p in tiny]
    done = items - left
    out = folder / "out.jsonl"
    with open(out, "wb") as handle:
        step = 100_000
        for start in range(0, done, step):
            rows = []
            for n in range(start, min(done, start + step)):
                url = b"%s/%s?n=%d" % (base.encode(), names[n % len(names)], n)
                top = _CLASSES[n % len(_CLASSES)].encode()
                conf = 5000 + n * 7919 % 5000
                rows.append(
                    _ROW
                    % (
                        url,
                        url,
                        top,
                        conf,
                        top,
                        top,
                        conf,
                        n * 2654435761 % (1 << 32),
                        n % 65536,
                        n % 4096,
                        n * 7 % 4096,
                        n * 40503 % (1 << 48),
                        20 + n % 30,
                        n % 10,
                    )
                )
            handle.write(b"".join(rows))
    settings = {
        "model": MODEL,
        "confidence": None,
        "max_size": None,
        "format": "jsonl",
        "api_url": f"http://127.0.0.1:{port}",
        "shard": None,
        "id_scheme": 2,
        "batchclassify_version": "0.1.0",
        "workdir": str(HERE.parent),
    }
    (folder / "settings.json").write_text(json.dumps(settings, indent=2))
    meta = {"items": items, "left": left, "port": port, "out_bytes": out.stat().st_size}
    meta_path.write_text(json.dumps(meta))
    print(f"built in {time.monotonic() - started:.0f} s ({meta['out_bytes'] / 1e9:.1f} GB)")
    return meta


def reset(folder: Path, meta: dict[str, int]) -> Path:
    """The output as built: rows a run added cut off, its sidecars as a finished run left."""
    out = folder / "out.jsonl"
    os.truncate(out, meta["out_bytes"])
    for sidecar in folder.glob("out.jsonl.*"):
        sidecar.unlink()
    (folder / "out.jsonl.job.json").write_bytes((folder / "settings.json").read_bytes())
    return out


def index_figures(checkout: str, items: int, done: int) -> dict[str, int]:
    cmd = [PY, "-c", _INDEX_PROBE, checkout, str(items), str(done)]
    answer = subprocess.run(cmd, capture_output=True, text=True, check=True)
    figures: dict[str, int] = json.loads(answer.stdout)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000_000)
    parser.add_argument("--left", type=int, default=75_000, help="items not yet in the output")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--checkouts", nargs="+", default=[str(HERE.parent)])
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    folder = HERE / "data" / f"index10m-{args.items}"
    # Built in a process of its own: a child's ru_maxrss counts its parent's peak RSS when
    # it was started (forked, then exec'd), and building 10M rows takes ~160 MB.
    with ProcessPoolExecutor(max_workers=1) as pool:
        meta = pool.submit(build, folder, args.items, args.left).result()
    files = HERE / "data" / "tiny"
    knobs = ["--model-cost", "hash", "--files-dir", str(files), "--port", str(meta["port"])]
    results: dict[str, list[str]] = {checkout: [] for checkout in args.checkouts}
    with Server(knobs, cpu=None, log=folder / "server.log") as server:
        for run in range(args.runs):
            order = args.checkouts[run % len(args.checkouts) :]
            order += args.checkouts[: run % len(args.checkouts)]
            for checkout in order:
                out = reset(folder, meta)
                # The checkout first on the path (``-m`` would put the working directory,
                # this checkout, before PYTHONPATH).
                cmd = [PY, "-c", _RUN_CHECKOUT, checkout, "run", str(folder / "urls.txt")]
                cmd += ["--model", MODEL, "--api-url", server.url, "--api-key", "k"]
                cmd += ["--output", str(out), "--concurrency", str(args.concurrency)]
                cmd += ["--quiet"]
                result = run_client(cmd, output=None, cpu=None, log=folder / "client.log")
                with open(out, "rb") as handle:
                    handle.seek(meta["out_bytes"])
                    added = handle.read().count(b"\n")
                line = (
                    f"run {run + 1}: wall {result.wall:6.1f} s  cpu {result.cpu:6.1f} s  "
                    f"peak RSS {result.maxrss_mb:6.1f} MiB ({result.maxrss_mb * 1.048576:.1f} MB)  "
                    f"rows added {added:,}  "
                    f"exit {result.exit_code}"
                )
                print(f"{checkout}: {line}", flush=True)
                results[checkout].append(line)
    reset(folder, meta)
    done = args.items - args.left
    for checkout in args.checkouts:
        figures = index_figures(checkout, args.items, done)
        print(
            f"{checkout}: index of {figures['ids']:,} ids: {figures['nbytes'] / 2**20:.1f} MiB "
            f"({figures['nbytes'] / figures['ids']:.2f} B/id), {figures['growths']} growth(s)"
        )


if __name__ == "__main__":
    main()
