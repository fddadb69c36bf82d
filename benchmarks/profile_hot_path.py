"""Profile batchclassify's hot path in the CPU-bound regime (server latency 0, small images).

    .venv/bin/python benchmarks/profile_hot_path.py [--items 2000] [--concurrency 32]

Samples the real CLI with py-spy (all threads, ~1 kHz, low overhead) and prints where the
client's time goes: the functions that hold the most samples inclusively (a frame anywhere on
the stack) and by own time (the innermost Python frame), aggregated over all threads. The raw
collapsed stacks are left in ``benchmarks/data/profile/`` for a flame graph.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import clients
import datagen
from harness import PY, ROOT, Server, pinned

DATA = ROOT / "data"
OUT = DATA / "profile"


def _label(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``file.py:func`` (lines merged)."""
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rsplit("/", 1)[-1]
    return f"{file}:{name}" if file else name


#: Innermost frames that mean "waiting", not working: the selector, idle worker threads.
_IDLE = ("EpollSelector.select", "Condition.wait", "Event.wait")


def summarise(raw: Path, top: int) -> str:
    """Where the busy samples go, per thread kind, imports (start-up) set apart."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        thread, *frames = stack.split(";")
        who = "event loop" if "MainThread" in thread else "worker threads"
        labels = [_label(f) for f in frames]
        if not labels:
            kinds[f"{who}: no Python frame (native code / interpreter start and exit)"] += count
            continue
        if labels[-1].split(":", 1)[-1] in _IDLE:
            kinds[f"{who}: idle (waiting in select / for work)"] += count
            continue
        if any("_find_and_load" in label for label in labels):
            kinds[f"{who}: imports (start-up)"] += count
            continue
        kinds[f"{who}: busy"] += count
        for label in set(labels):
            inclusive[f"{who}: {label}"] += count
        own[f"{who}: {labels[-1]}"] += count
    busy = sum(n for k, n in kinds.items() if k.endswith("busy"))
    lines = ["samples by kind:"]
    lines += [f"  {n:7d}  {k}" for k, n in kinds.most_common()]
    lines += ["", f"inclusive, share of the {busy} busy samples:"]
    lines += [f"  {n / max(busy, 1):6.1%}  {k}" for k, n in inclusive.most_common(top)]
    lines += ["", "own time (innermost Python frame):"]
    lines += [f"  {n / max(busy, 1):6.1%}  {k}" for k, n in own.most_common(top)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=int, default=997, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    if not Path(pyspy).exists():
        print("py-spy not found: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    small = datagen.ensure_images(DATA / "small", 2000, large=False)
    paths = clients.hardlinked_copies(small, args.items, DATA / "copies")
    manifest = clients.write_manifest(OUT / "manifest.txt", [str(p) for p in paths])
    raw = OUT / "batchclassify.collapsed.txt"
    with Server([], cpu="1", log=OUT / "server.log") as server:
        cmd = clients.command(
            "batchclassify",
            manifest=manifest,
            url=server.url,
            output=OUT / "out.jsonl",
            concurrency=args.concurrency,
        )
        spy = [pyspy, "record", "--format", "raw", "-r", str(args.rate), "-t", "-o", str(raw)]
        subprocess.run(pinned([*spy, "--", *cmd], "0"), check=True, cwd=ROOT.parent)
    print(summarise(raw, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
