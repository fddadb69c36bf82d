"""``run --processes P`` scaling: images/s and client CPU per image at P=1 and P=2.

    .venv/bin/python benchmarks/processes_bench.py [--count 2000] [--repeats 3]

The local server (hash model: answers from a checksum, no decoding; latency 0) runs in its own
process pinned to CPU 1, so the client is the bottleneck. The client is the real CLI
(``python -m batchclassify run FOLDER --processes P --output OUT.parquet --quiet``), measured
from outside: wall time (start-up included) and CPU seconds of the parent and its children
(``os.wait4`` counts the children it reaped). Three placements on this 2-core machine:

- P=1 on CPU 0, P=2 on CPU 0 (two processes sharing one core: the cost of splitting), and
- P=2 on CPUs 0 and 1 (the second process shares a core with the server).

Prints a Markdown table; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from datagen import ensure_images
from harness import PY, ROOT, Server, run_client

DATA = ROOT / "data" / "processes"
PLACEMENTS = [(1, "0"), (2, "0"), (2, "0,1")]


def one_run(folder: Path, server: Server, processes: int, cpu: str) -> tuple[float, float, int]:
    """(wall s, client CPU s, exit code) of one job from scratch."""
    output = DATA / "out.parquet"
    shutil.rmtree(output, ignore_errors=True)
    cmd = [PY, "-m", "batchclassify", "run", str(folder), "--model", "colors/1"]
    cmd += ["--api-url", server.url, "--output", str(output), "--quiet"]
    cmd += ["--processes", str(processes)]
    result = run_client(cmd, output=None, cpu=cpu, log=DATA / "client.log")
    return result.wall, result.cpu, result.exit_code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("ROBOFLOW_API_KEY", "bench-key")
    paths = ensure_images(ROOT / "data" / "images" / "small", args.count, large=False)
    folder = DATA / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:  # hardlinks: the same bytes, a folder holding only these
        if not (folder / path.name).exists():
            os.link(path, folder / path.name)
    figures: dict[tuple[int, str], list[tuple[float, float]]] = {p: [] for p in PLACEMENTS}
    with Server(["--model-cost", "hash"], cpu="1", log=DATA / "server.log") as server:
        one_run(folder, server, 1, "0")  # warm the page cache and the server
        for _ in range(args.repeats):
            for placement in PLACEMENTS:  # interleaved: the machine's load hits all alike
                wall, cpu, code = one_run(folder, server, *placement)
                if code != 0:
                    raise SystemExit(f"{placement}: exit {code}; see {DATA / 'client.log'}")
                figures[placement].append((wall, cpu))
    print(f"{len(paths)} images, medians of {args.repeats} runs (all runs in brackets)\n")
    print("| --processes | client CPUs | wall s | images/s | client CPU ms/image |")
    print("|---:|---|---:|---:|---:|")
    for (processes, cpu), runs in figures.items():
        walls = [wall for wall, _ in runs]
        wall = statistics.median(walls)
        per_image = statistics.median(c for _, c in runs) / len(paths) * 1000
        rates = ", ".join(f"{len(paths) / w:.0f}" for w in walls)
        print(
            f"| {processes} | {cpu} | {wall:.2f} | {len(paths) / wall:.0f} ({rates}) | "
            f"{per_image:.2f} |"
        )


if __name__ == "__main__":
    main()
