"""Issue 11: time to the first batch of a big folder's walk, and the resume scan of a big output.

    python benchmarks/startup_bench.py [--files 100000] [--rows 1000000]

Run it once per checkout to compare (``PYTHONPATH=<checkout>``), interleaved, a few times:
the machine is shared, so show the spread. Data goes to ``benchmarks/data/startup``.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from pathlib import Path

from batchclassify.config import DEFAULT_EXTENSIONS
from batchclassify.inputs.sources import iter_item_batches
from batchclassify.output.resume import PriorState
from batchclassify.output.sinks import open_sink

DATA = Path(__file__).resolve().parent / "data" / "startup"


def walk(files: int) -> str:
    """Time (and traced memory) to the walk's first batch of 512, then to its end."""
    folder = DATA / f"flat-{files}"
    if not folder.is_dir():
        folder.mkdir(parents=True)
        for i in range(files):
            (folder / f"img_{i:08d}.jpg").touch()
    tracemalloc.start()
    started = time.perf_counter()
    batches = iter_item_batches([str(folder)], extensions=DEFAULT_EXTENSIONS, batch_size=512)
    first = next(batches)
    to_first = time.perf_counter() - started
    peak_first = tracemalloc.get_traced_memory()[1]
    count = len(first) + sum(len(batch) for batch in batches)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return (
        f"walk {count:,} files: first batch {to_first * 1000:.1f} ms "
        f"(traced peak {peak_first / 1e6:.1f} MB), whole walk traced peak {peak / 1e6:.1f} MB"
    )


def scan(rows: int, output_format: str) -> str:
    """Time for a sink's scan to fill the resume state from ``rows`` finished rows."""
    name = "out.jsonl" if output_format == "jsonl" else "out"
    path = DATA / f"{output_format}-{rows}" / name
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True)
        sink = open_sink(path, output_format)
        sink.open()
        for i in range(rows):
            item_id = f"/data/photos/batch-{i // 1000:04d}/img_{i:08d}.jpg"
            sink.write(
                {"id": item_id, "path": item_id, "url": None, "status": "ok", "top": "cat",
                 "confidence": 0.93, "predictions": [{"class": "cat", "confidence": 0.93}],
                 "error_type": None, "error": None, "attempts": 1, "elapsed_ms": 41.2}
            )  # fmt: skip
        sink.close()
    state = PriorState()
    started = time.perf_counter()
    # Before the bulk scan (issue 11's rescan branch) a sink called ``record(id, status)``.
    target = state if hasattr(state, "expect") else state.record
    state.scan = open_sink(path, output_format).scan(target)
    seconds = time.perf_counter() - started
    per_id = state.index.nbytes / max(1, len(state.index))
    return (
        f"scan {output_format} {state.scan.rows:,} rows: {seconds:.2f} s ({state.ok:,} ok), "
        f"index {per_id:.1f} bytes/id"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    print(walk(args.files))
    for output_format in ("jsonl", "parquet"):
        print(scan(args.rows, output_format))


if __name__ == "__main__":
    main()
