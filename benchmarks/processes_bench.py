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
    for sidecar in DATA.glob("out.parquet.*"):  # P=1's settings and progress files
        sidecar.unlink()
    cmd = [PY, "-m", "batchclassify", "run", str(folder), "--model", "colors/1"]
    cmd += ["--api-url", server.url, "--output", str(output), "--quiet"]
    cmd += ["--processes", str(processes)]
    result = run_client(cmd, output=None, cpu=cpu, log=DATA / "client.log")
    return result.wall, result.cpu, result.exit_code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=2000, help="distinct images")
    parser.add_argument("--copies", type=int, default=5, help="hardlinked copies of each")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("ROBOFLOW_API_KEY", "bench-key")
    paths = ensure_images(ROOT / "data" / "images" / "small", args.count, large=False)
    folder = DATA / "images"
    for copy in range(args.copies):  # hardlinks: distinct paths (items), the same bytes
        (folder / f"c{copy}").mkdir(parents=True, exist_ok=True)
        for path in paths:
            if not (folder / f"c{copy}" / path.name).exists():
                os.link(path, folder / f"c{copy}" / path.name)
    items = len(paths) * args.copies
    single = DATA / "single"
    single.mkdir(parents=True, exist_ok=True)
    if not (single / paths[0].name).exists():
        os.link(paths[0], single / paths[0].name)
    figures: dict[tuple[int, str], list[tuple[float, float]]] = {p: [] for p in PLACEMENTS}
    start_up: dict[tuple[int, str], list[tuple[float, float]]] = {p: [] for p in PLACEMENTS}
    with Server(["--model-cost", "hash"], cpu="1", log=DATA / "server.log") as server:
        one_run(folder, server, 1, "0")  # warm the page cache and the server
        for _ in range(args.repeats):
            for placement in PLACEMENTS:  # interleaved: the machine's load hits all alike
                start_up[placement].append(_checked(single, server, placement))
                figures[placement].append(_checked(folder, server, placement))
    print(f"{items:,} images, medians of {args.repeats} runs (all runs in brackets); start-up")
    print("(a one-image run of the same placement) is subtracted from wall and CPU time\n")
    print("| --processes | client CPUs | start-up s (CPU s) | images/s | client CPU ms/image |")
    print("|---:|---|---:|---:|---:|")
    for placement, runs in figures.items():
        base_wall = statistics.median(w for w, _ in start_up[placement])
        base_cpu = statistics.median(c for _, c in start_up[placement])
        rates = [items / (wall - base_wall) for wall, _ in runs]
        per_image = (statistics.median(c for _, c in runs) - base_cpu) / items * 1000
        listed = ", ".join(f"{rate:.0f}" for rate in rates)
        print(
            f"| {placement[0]} | {placement[1]} | {base_wall:.2f} ({base_cpu:.2f}) | "
            f"{statistics.median(rates):.0f} ({listed}) | {per_image:.2f} |"
        )


def _checked(folder: Path, server: Server, placement: tuple[int, str]) -> tuple[float, float]:
    wall, cpu, code = one_run(folder, server, *placement)
    if code != 0:
        raise SystemExit(f"{placement}: exit {code}; see {DATA / 'client.log'}")
    return wall, cpu


if __name__ == "__main__":
    main()
