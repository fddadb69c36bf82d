"""Benchmark ``batchclassify export --to csv`` on a synthesised 1,000,000-row output.

No server: rows shaped like ``run``'s (10 classes, a metadata column, 1% failed) are written
to a JSONL file, then ``export`` runs in a child process whose wall time and peak RSS
(``ru_maxrss``) are measured. Also measures what collision tracking for the tree formats costs
per file name (``FileNames``, an ``IdIndex`` of hashes) against a plain dict of names.

    python benchmarks/export_bench.py [--rows N] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
CLASSES = ["cat", "dog", "bird", "car", "truck", "boat", "plane", "horse", "frog", "deer"]


def make_output(path: Path, rows: int) -> None:
    rng = random.Random(0)
    with open(path, "wb") as handle:
        for n in range(rows):
            item_id = f"/data/shard{n % 100:03d}/img{n:07d}.jpg"
            if n % 100 == 99:
                row = {
                    "id": item_id,
                    "path": item_id,
                    "url": None,
                    "status": "error",
                    "error_type": "timeout",
                    "error": "timed out",
                    "site": "north",
                }
            else:
                scores = sorted(((rng.random(), c) for c in CLASSES), reverse=True)
                total = sum(s for s, _ in scores)
                preds = [{"class": c, "confidence": round(s / total, 4)} for s, c in scores]
                row = {
                    "id": item_id,
                    "path": item_id,
                    "url": None,
                    "status": "ok",
                    "top": preds[0]["class"],
                    "confidence": preds[0]["confidence"],
                    "predicted_classes": [preds[0]["class"]],
                    "predictions": preds,
                    "multilabel": False,
                    "image_width": 640,
                    "image_height": 480,
                    "inference_id": None,
                    "attempts": 1,
                    "http_status": 200,
                    "error_type": None,
                    "error": None,
                    "elapsed_ms": 12.5,
                    "site": "north",
                }
            handle.write(orjson.dumps(row) + b"\n")


#: Runs the CLI, then reports its own peak RSS: VmHWM belongs to the process's memory map
#: since exec. (``ru_maxrss`` would not do: Linux carries the forking parent's peak across
#: fork and exec into the child's.)
_CHILD = """
import sys
from batchclassify.commands.cli import main
code = main(sys.argv[1:])
hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM:'))
sys.stderr.write('peak-kb %s\\n' % hwm.split()[1])
sys.exit(code)
"""


def run_export(output: Path, fmt: str, dest: Path, *extra: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of ``batchclassify export OUTPUT --to FMT DEST``."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    args = ["export", str(output), "--to", fmt, str(dest), *extra]
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"export failed ({done.returncode}): {done.stderr}")
    peak_kb = int(done.stderr.rsplit("peak-kb ", 1)[1].split()[0])
    return elapsed, peak_kb / 1024


def make_files(output: Path, root: Path) -> None:
    """Empty files at the paths of ``output``'s rows, rewritten under ``root``."""
    moved = output.with_name(output.name + ".tmp")
    with open(output, "rb") as source, open(moved, "wb") as target:
        for line in source:
            line = line.replace(b'"/data/', f'"{root}/'.encode())
            target.write(line)
            path = Path(orjson.loads(line)["path"])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    os.replace(moved, output)


def names_memory(rows: int) -> tuple[float, float]:
    """MB to track ``rows`` file names: FileNames (hashes) vs a dict of strings."""
    from batchclassify.commands.export.files import FileNames

    names = FileNames()
    for n in range(rows):
        names.count(f"train/{CLASSES[n % 10]}", f"img{n:07d}.jpg")
    hashed = names.nbytes / 1e6
    tracemalloc.start()
    plain: dict[str, int] = {}
    for n in range(rows):
        key = f"train/{CLASSES[n % 10]}/img{n:07d}.jpg"
        plain[key] = plain.get(key, 0) + 1
    as_dict = tracemalloc.get_traced_memory()[0] / 1e6
    tracemalloc.stop()
    return hashed, as_dict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--folders-rows",
        type=int,
        default=0,
        help="also export this many rows --to folders (one empty file and one symlink each)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        output = Path(work) / "out.jsonl"
        started = time.perf_counter()
        make_output(output, args.rows)
        size = output.stat().st_size / 1e6
        print(f"made {args.rows:,} rows ({size:,.0f} MB) in {time.perf_counter() - started:.1f} s")
        elapsed, peak = run_export(output, "csv", Path(work) / "out.csv")
        print(
            f"export --to csv: {elapsed:.1f} s, {args.rows / elapsed:,.0f} rows/s, "
            f"peak RSS {peak:.0f} MB"
        )
        if args.folders_rows:
            small = Path(work) / "small.jsonl"
            make_output(small, args.folders_rows)
            make_files(small, Path(work) / "images")
            split = "train=0.8,valid=0.1,test=0.1"
            elapsed, peak = run_export(small, "folders", Path(work) / "ds", "--split", split)
            print(
                f"export --to folders ({args.folders_rows:,} rows, symlinks): {elapsed:.1f} s, "
                f"{args.folders_rows / elapsed:,.0f} rows/s, peak RSS {peak:.0f} MB"
            )
    hashed, as_dict = names_memory(args.rows)
    print(
        f"collision tracking for {args.rows:,} names: FileNames {hashed:.1f} MB, "
        f"dict of names {as_dict:.1f} MB"
    )


if __name__ == "__main__":
    main()
