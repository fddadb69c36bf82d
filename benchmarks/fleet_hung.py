"""A fleet with a hung member against its healthy member alone (issue 19).

    python benchmarks/fleet_hung.py                 # 4,000 small images, ~1 minute
    python benchmarks/fleet_hung.py --items 2000 --repeat 3

Three local servers (``python -m batchclassify.server``) in processes of their own and the
real CLI in a child process: one that takes every request and never answers
(``--hang-rate 1``), one that answers every request with a 500 (``--error-rate 1``), one
healthy. The same images go once to the healthy server alone, once to the fleet of three.
The goal (issue 19): the fleet within ~1.5× of the healthy server alone.

Nothing here asserts a speed: it prints the figures and a Markdown table for RESULTS.md,
with the load average, since the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness import PY, Server, run_client

from tests.conftest import make_images

KEY = "bench-key"
KNOBS = {"healthy": [], "hung": ["--hang-rate", "1"], "500": ["--error-rate", "1"]}


def _run(folder: Path, members: list[str], out: Path) -> tuple[float, dict[str, int]]:
    """Seconds of one job over servers of the kinds ``members``, and its rows by status."""
    with ExitStack() as stack:
        running = [
            stack.enter_context(
                Server(["--api-key", KEY, *KNOBS[kind]], cpu=None, log=out.with_suffix(f".{n}.log"))
            )
            for n, kind in enumerate(members)
        ]
        urls = [arg for server in running for arg in ("--api-url", server.url)]
        cmd = [PY, "-m", "batchclassify", "run", str(folder), "--model", "colors/1",
               "--output", str(out), "--quiet", "--api-key", KEY, "--overwrite", *urls]  # fmt: skip
        result = run_client(cmd, output=None, cpu=None, log=out.with_suffix(".log"))
    if result.exit_code not in (0, 1):
        raise SystemExit(f"the job failed ({result.exit_code}); see {out.with_suffix('.log')}")
    statuses: dict[str, int] = {}
    for line in out.read_bytes().splitlines():
        status = orjson.loads(line)["status"]
        statuses[status] = statuses.get(status, 0) + 1
    return result.wall, statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_images(root / "images", args.items)
        for run in range(args.repeat):
            for label, members in (
                ("healthy alone", ["healthy"]),
                ("hung + 500 + healthy", ["hung", "500", "healthy"]),
            ):
                wall, statuses = _run(
                    root / "images", members, root / f"{run}-{len(members)}.jsonl"
                )
                rows.append((label, wall, statuses))
                print(f"{label}: {wall:.2f} s, rows {statuses}", flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("\n| servers | seconds | rows |\n|---|---:|---|")
    for label, wall, statuses in rows:
        print(f"| {label} | {wall:.2f} | {statuses} |")
    alone = min(wall for label, wall, _ in rows if label == "healthy alone")
    fleet = min(wall for label, wall, _ in rows if label != "healthy alone")
    print(f"\nfleet / healthy alone (best of {args.repeat}): {fleet / alone:.2f}×")


if __name__ == "__main__":
    main()
