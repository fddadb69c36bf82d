"""Issue 11: peak RSS on large originals against the lean client, and the fixed rate.

    .venv/bin/python benchmarks/memrate_bench.py memory --images 24 --concurrency 8 --runs 3 \
        --base /path/to/other/checkout
    .venv/bin/python benchmarks/memrate_bench.py rate --items 600 --runs 3 --base /path/to/other

``memory``: the local server (colour model, latency 0) on CPU 1; batchclassify (this checkout,
and ``--base``'s if given) and the lean client each over the same large JPEGs on CPU 0,
interleaved; peak RSS is the client's ``ru_maxrss`` (``os.wait4``).

``rate``: the server with ``--rate-limit 20`` (a sliding window: at most 20 accepted
requests in any second); batchclassify ``--rate-limit 20 --concurrency 32`` over ``--items``
small images. Figures per run: run.py's end-to-end rate (items / (wall - the one-image
start-up, the fastest of 3)), and from the server's own arrival times of accepted requests
(polled from ``/_stats``): the rate between the first and the last accepted arrival, the
most accepted arrivals in any one-second span, and the 429s.

Data: ``benchmarks/data/large`` and ``benchmarks/data/small`` (made by datagen.py on first
use). Prints one line per run and a summary (min–max); asserts nothing.
"""

from __future__ import annotations

import argparse
import bisect
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import clients
import datagen
from harness import ROOT, Server, pinned

DATA = ROOT / "data"
OUT = DATA / "memrate"
SERVER_CPU, CLIENT_CPU = "1", "0"


def run(
    cmd: list[str], cwd: Path, extra_env: dict[str, str] | None = None
) -> tuple[float, float, int, float]:
    """Run ``cmd`` pinned to the client CPU: (wall seconds, peak RSS MB, exit code, CPU s)."""
    env = {**os.environ, "PYTHONPATH": str(cwd), **(extra_env or {})}
    started = time.monotonic()
    proc = subprocess.Popen(
        pinned(cmd, CLIENT_CPU), cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0 and proc.stderr is not None:
        sys.stderr.write(proc.stderr.read().decode(errors="replace")[-2000:])
    return wall, usage.ru_maxrss / 1024, code, usage.ru_utime + usage.ru_stime


def command(client: str, manifest: Path, url: str, output: Path, c: int, extra: tuple[str, ...]):
    cmd = clients.command(
        client, manifest=manifest, url=url, output=output, concurrency=c, extra=extra
    )
    if client == "lean":
        cmd[1] = str(ROOT / "lean_client.py")
    return cmd


def checkouts(args: argparse.Namespace) -> list[tuple[str, Path]]:
    found = [("new", ROOT.parent)]
    if args.base:
        found.append(("old", Path(args.base).resolve()))
    return found


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}–{max(values):.2f}" if values else "–"


def memory(args: argparse.Namespace) -> None:
    originals = datagen.ensure_images(DATA / "large", args.images, large=True)
    # Hardlinked copies: distinct items, the same bytes (page cache); never in flight together.
    images = clients.hardlinked_copies(originals, args.images * args.copies, DATA / "copies-large")
    manifest = clients.write_manifest(OUT / "large.txt", [str(p) for p in images])
    peaks: dict[str, list[float]] = {}
    cpus: dict[str, list[float]] = {}
    with Server([], cpu=SERVER_CPU, log=OUT / "server-memory.log") as server:
        for repeat in range(args.runs):
            variants: list[tuple[str, str, Path]] = [
                (f"batchclassify {name}", "batchclassify", where) for name, where in checkouts(args)
            ]
            variants.append(("lean", "lean", ROOT.parent))
            # Rotate the order each repeat, so no client always runs after the same one.
            shift = repeat % len(variants)
            for label, client, where in variants[shift:] + variants[:shift]:
                output = OUT / f"mem-{label.replace(' ', '-')}.jsonl"
                cmd = command(client, manifest, server.url, output, args.concurrency, ())
                env = dict(e.split("=", 1) for e in args.env) if label.endswith("new") else {}
                wall, rss, code, cpu = run(cmd, where, env)
                peaks.setdefault(label, []).append(rss)
                cpus.setdefault(label, []).append(cpu)
                print(
                    f"{label:22} run {repeat}: {rss:6.1f} MB peak, {wall:5.1f} s, "
                    f"CPU {cpu:5.2f} s, exit {code}"
                )
    lean = peaks.get("lean", [])
    for label, values in peaks.items():
        ratio = ""
        if lean and label != "lean":
            ratio = f"  ({min(values) / max(lean):.2f}–{max(values) / min(lean):.2f}× lean)"
        print(f"{label:22} peak RSS {spread(values)} MB{ratio}, CPU {spread(cpus[label])} s")


class ArrivalLog:
    """The server's accepted arrival times, polled from ``/_stats`` (its last 20 requests)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.seen: dict[tuple[float, str], int | None] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> ArrivalLog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)
        self._stop.set()
        self._thread.join()
        self._poll()

    def _loop(self) -> None:
        while not self._stop.wait(0.15):
            self._poll()

    def _poll(self) -> None:
        stats: dict[str, Any] = self.server.stats()
        for record in stats.get("recent", []):
            key = (record["received"], record.get("image_url") or str(record["content_length"]))
            self.seen[key] = record.get("status")

    def accepted(self, since: float) -> list[float]:
        return self.answered(since, 200)

    def answered(self, since: float, status: int) -> list[float]:
        return sorted(t for (t, _), got in self.seen.items() if t >= since and got == status)


def busiest_second(times: list[float]) -> int:
    """The most arrivals in any span (t - 1, t]."""
    return max(
        (i + 1 - bisect.bisect_right(times, t - 1.0) for i, t in enumerate(times)), default=0
    )


def rate(args: argparse.Namespace) -> None:
    small = datagen.ensure_images(DATA / "small", min(args.items, 400), large=False)
    paths = clients.hardlinked_copies(small, args.items, DATA / "copies")
    manifest = clients.write_manifest(OUT / f"rate-{args.items}.txt", [str(p) for p in paths])
    one = clients.write_manifest(OUT / "one.txt", [str(paths[0])])
    extra = ("--rate-limit", "20")
    figures: dict[str, dict[str, list[float]]] = {}
    with Server(["--rate-limit", "20"], cpu=SERVER_CPU, log=OUT / "server-rate.log") as server:
        startup: dict[str, float] = {}
        for name, where in checkouts(args):
            walls = []
            for _ in range(3):
                cmd = command("batchclassify", one, server.url, OUT / "one.jsonl", 32, extra)
                walls.append(run(cmd, where)[0])
                time.sleep(1.1)
            startup[name] = min(walls)
            print(f"start-up {name}: {startup[name]:.2f} s (fastest of {walls})")
        for repeat in range(args.runs):
            order = checkouts(args)
            if repeat % 2:
                order.reverse()
            for name, where in order:
                time.sleep(1.5)  # let the server's window empty
                output = OUT / f"rate-{name}.jsonl"
                cmd = command("batchclassify", manifest, server.url, output, 32, extra)
                before = server.stats().get("statuses", {})
                since = time.monotonic()
                with ArrivalLog(server) as log:
                    wall, _, code, _ = run(cmd, where)
                after = server.stats().get("statuses", {})
                n429 = int(after.get("429", 0)) - int(before.get("429", 0))
                times = log.accepted(since)
                refused = [round(t - times[0], 3) for t in log.answered(since, 429)]
                end_to_end = args.items / (wall - startup[name]) / 20 * 100
                server_rate = (len(times) - 1) / (times[-1] - times[0]) / 20 * 100
                # Without the first and last 10% of arrivals: steady state only.
                lo, hi = len(times) // 10, len(times) - len(times) // 10
                steady = (hi - 1 - lo) / (times[hi - 1] - times[lo]) / 20 * 100
                row = figures.setdefault(name, {})
                for key, value in (
                    ("end to end %", end_to_end),
                    ("server first-last %", server_rate),
                    ("server 10-90% %", steady),
                    ("busiest second", busiest_second(times)),
                    ("429s", n429),
                    ("accepted seen", len(times)),
                ):
                    row.setdefault(key, []).append(float(value))
                print(
                    f"{name} run {repeat}: wall {wall:.2f} s, end to end {end_to_end:.2f}%, "
                    f"server first-last {server_rate:.2f}%, 10-90% {steady:.2f}%, "
                    f"busiest second {busiest_second(times)}, 429s {n429}, "
                    f"accepted seen {len(times)}/{args.items}, exit {code}"
                    + (f", 429s at {refused} s after the first arrival" if refused else "")
                )
    for name, row in figures.items():
        print(name + ": " + "; ".join(f"{k} {min(v):.2f}–{max(v):.2f}" for k, v in row.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["memory", "rate"])
    parser.add_argument("--base", help="another checkout of batchclassify, run interleaved")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for 'new' only")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--copies", type=int, default=1, help="items = images x copies")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--items", type=int, default=600)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    (memory if args.what == "memory" else rate)(args)


if __name__ == "__main__":
    main()
