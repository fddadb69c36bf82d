"""Profile batchclassify's hot path in the CPU-bound regime (server latency 0, small images).

    .venv/bin/python benchmarks/profile_hot_path.py [--items 10000] [--concurrency 32]

Runs the real CLI and the lean client over the same images against a zero-latency server
(its hash model, so the client is the bottleneck), each under cProfile (the event-loop
thread, where all per-request Python work happens), and
prints where the time goes, grouped by package, side by side: what batchclassify spends
beyond the lean client is its own overhead. Then the costliest batchclassify, anyio and
asyncio functions. With ``--py-spy`` it also samples the CLI with ``py-spy record --gil``
(low overhead, all threads) and leaves the collapsed stacks in ``benchmarks/data/profile/``.
cProfile inflates every Python call, so compare shares and ratios, not absolute seconds.
"""

from __future__ import annotations

import argparse
import pstats
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
_PACKAGES = ("aiohttp", "anyio", "asyncio", "batchclassify", "yarl", "multidict", "selectors")
#: Waiting for the network, not work: left out of the totals.
_IDLE = ("poll' of 'select.epoll", "select' of 'select.epoll")


def _bucket(file: str, name: str) -> str:
    for package in _PACKAGES:
        if f"/{package}/" in file or file.endswith(f"/{package}.py"):
            return package
    if file == "~":
        return "C calls (socket I/O, base64, orjson, file reads)"
    if "lean_client" in file:
        return "lean_client.py"
    return "other Python (stdlib)"


def by_package(prof: Path) -> tuple[Counter[str], float]:
    stats = pstats.Stats(str(prof)).stats  # type: ignore[attr-defined]
    buckets: Counter[str] = Counter()
    for (file, _, name), (_, _, own, _, _) in stats.items():
        if any(idle in name for idle in _IDLE):
            continue
        buckets[_bucket(file, name)] += own
    return buckets, sum(buckets.values())


def top_functions(prof: Path, packages: tuple[str, ...], top: int) -> list[str]:
    stats = pstats.Stats(str(prof)).stats  # type: ignore[attr-defined]
    rows = []
    for (file, line, name), (_, calls, own, cumulative, _) in stats.items():
        if any(f"/{package}/" in file for package in packages):
            short = file.split("site-packages/")[-1].split("python3.11/")[-1]
            short = short.split("/work/main/")[-1]
            rows.append((own, cumulative, calls, f"{short}:{line} {name}"))
    rows.sort(reverse=True)
    return [
        f"  {own:6.3f} {cumulative:7.3f} {calls:8d}  {label}"
        for own, cumulative, calls, label in rows[:top]
    ]


def _label(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``file.py:func`` (lines merged)."""
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rsplit("/", 1)[-1]
    return f"{file}:{name}" if file else name


def summarise_pyspy(raw: Path, top: int) -> str:
    """Inclusive share of GIL-holding samples per function, imports set apart."""
    inclusive: Counter[str] = Counter()
    busy = imports = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        labels = [_label(f) for f in stack.split(";")[1:]]
        if any("_find_and_load" in label for label in labels):
            imports += count
            continue
        busy += count
        for label in set(labels):
            inclusive[label] += count
    lines = [f"py-spy --gil: {busy} samples at work, {imports} importing"]
    lines += [f"  {n / max(busy, 1):6.1%}  {k}" for k, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--py-spy", action="store_true", help="also sample with py-spy --gil")
    args = parser.parse_args()
    small = datagen.ensure_images(DATA / "small", 2000, large=False)
    paths = clients.hardlinked_copies(small, args.items, DATA / "copies")
    manifest = clients.write_manifest(OUT / "manifest.txt", [str(p) for p in paths])
    reports = {}
    with Server(["--model-cost", "hash"], cpu="1", log=OUT / "server.log") as server:
        for client in ("batchclassify", "lean"):
            cmd = clients.command(
                client,
                manifest=manifest,
                url=server.url,
                output=OUT / f"{client}.jsonl",
                concurrency=args.concurrency,
            )
            prof = OUT / f"{client}.prof"
            # ``python -m cProfile -o F -m batchclassify ...`` / ``... script.py ...``
            profiled = [cmd[0], "-m", "cProfile", "-o", str(prof), *cmd[1:]]
            subprocess.run(pinned(profiled, "0"), check=True, cwd=ROOT.parent)
            reports[client] = by_package(prof)
        if args.py_spy:
            pyspy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
            raw = OUT / "batchclassify.collapsed.txt"
            cmd = clients.command(
                "batchclassify",
                manifest=manifest,
                url=server.url,
                output=OUT / "batchclassify.jsonl",
                concurrency=args.concurrency,
            )
            spy = [pyspy, "record", "--gil", "--format", "raw", "-r", "500", "-o", str(raw)]
            subprocess.run(
                pinned([*spy, "--", *cmd], "0"), check=True, cwd=ROOT.parent, capture_output=True
            )
    names = sorted(set(reports["batchclassify"][0]) | set(reports["lean"][0]))
    total_bc, total_lean = reports["batchclassify"][1], reports["lean"][1]
    print(f"cProfile own time, event-loop thread, {args.items:,} images, c={args.concurrency}")
    print(f"  {'':52} {'batchclassify':>14} {'lean':>10}")
    for name in sorted(names, key=lambda n: -reports["batchclassify"][0].get(n, 0.0)):
        bc, lean = reports["batchclassify"][0].get(name, 0.0), reports["lean"][0].get(name, 0.0)
        print(f"  {name:52} {bc:12.2f} s {lean:8.2f} s")
    print(f"  {'total (select/epoll waits excluded)':52} {total_bc:12.2f} s {total_lean:8.2f} s")
    print(f"  ratio {total_bc / max(total_lean, 1e-9):.2f}")
    print("\nbatchclassify, anyio and asyncio functions by own time (own, cumulative, calls):")
    prof = OUT / "batchclassify.prof"
    print("\n".join(top_functions(prof, ("batchclassify", "anyio", "asyncio"), args.top)))
    if args.py_spy:
        print()
        print(summarise_pyspy(OUT / "batchclassify.collapsed.txt", args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
