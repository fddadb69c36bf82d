"""Issue 24: ``run --watch`` — arrival-to-row latency at a steady arrival rate, and idle CPU.

    python benchmarks/watch_bench.py [--rate 50] [--seconds 20] [--settle 2] [--idle 60]
                                     [--poll S] [--quiet-files 100000]

A ``--watch`` job (a child process) follows an empty folder against the local server (in this
process, on a thread). First it is left idle for ``--idle`` seconds, its CPU read from /proc
(``--quiet-files N`` puts N files the job passes over, ``.raw``, in the folder first: a
big quiet folder). Then files arrive at ``--rate`` a second for ``--seconds`` (each written
under a hidden name and renamed into place, as uploaders do); each file's latency is from its
rename to its row being readable in the output (this process tails the JSONL output every
10 ms), and the job's own figures (``status``: first sight to row) are read too. Prints a
Markdown table. Not a test: nothing is asserted. Data goes to ``benchmarks/data/watch``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from batchclassify.server import BackgroundServer, ServerConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import _proc_status_kb, proc_cpu_seconds

DATA = Path(__file__).resolve().parent / "data" / "watch"
KEY = "bench-key"


def progress(output: Path) -> dict[str, Any]:
    try:
        found = orjson.loads(output.with_name(output.name + ".progress.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return found if isinstance(found, dict) else {}


def png(tag: int) -> bytes:
    """A tiny PNG with its own bytes (a text chunk), so no two files share an answer."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    raw = b"".join(b"\0" + b"\xdc\x14\x1e" * 8 for _ in range(8))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
        + chunk(b"tEXt", b"n\0" + str(tag).encode())
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[round((len(ordered) - 1) * share)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0, help="files a second")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long files arrive")
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("--idle", type=float, default=60.0, help="idle seconds measured")
    parser.add_argument("--poll", type=float, default=None, help="poll instead of inotify")
    parser.add_argument("--quiet-files", type=int, default=0, help="files passed over")
    args = parser.parse_args()

    shutil.rmtree(DATA, ignore_errors=True)
    folder, output = DATA / "in", DATA / "out.jsonl"
    folder.mkdir(parents=True)
    for n in range(args.quiet_files):
        (folder / f"q{n:07d}.raw").touch()
    env = dict(os.environ, ROBOFLOW_API_KEY=KEY)
    with BackgroundServer(ServerConfig(api_key=KEY)) as server:
        command = [
            sys.executable, "-m", "batchclassify", "run", str(folder), "--model", "colors/1",
            "--api-url", server.url, "--output", str(output), "--watch",
            "--settle", str(args.settle), "-q",
        ]  # fmt: skip
        if args.poll is not None:
            command += ["--poll", str(args.poll)]
        job = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
        try:
            while not (progress(output).get("watching") or {}).get("following"):
                assert job.poll() is None, job.communicate()[1]
                time.sleep(0.05)
            how = progress(output)["watching"]["how"]
            time.sleep(1.0)  # past the start-up
            cpu0, t0 = proc_cpu_seconds(job.pid), time.monotonic()
            time.sleep(args.idle)
            idle_cpu = proc_cpu_seconds(job.pid) - cpu0
            idle_span = time.monotonic() - t0
            rss_idle = _proc_status_kb(job.pid, "VmRSS:")

            total = int(args.rate * args.seconds)
            arrived: dict[str, float] = {}
            seen: dict[str, float] = {}
            offset = 0
            pending = b""
            start = time.monotonic()
            cpu1 = proc_cpu_seconds(job.pid)
            n = 0
            while len(seen) < total:
                now = time.monotonic()
                while n < total and now >= start + n / args.rate:
                    name = f"{n:06d}.png"
                    hidden = folder / f".{name}.tmp"
                    hidden.write_bytes(png(n))
                    os.rename(hidden, folder / name)
                    arrived[str(folder / name)] = time.monotonic()
                    n += 1
                if output.exists():
                    with open(output, "rb") as handle:
                        handle.seek(offset)
                        chunk = handle.read()
                    offset += len(chunk)
                    lines = (pending + chunk).split(b"\n")
                    pending = lines.pop()
                    moment = time.monotonic()
                    for line in lines:
                        seen.setdefault(orjson.loads(line)["path"], moment)
                assert job.poll() is None, job.communicate()[1]
                if now - start > args.seconds + 120:
                    break
                time.sleep(0.01)
            busy_cpu = proc_cpu_seconds(job.pid) - cpu1
            busy_span = time.monotonic() - start
            time.sleep(2.5)  # one more progress-file write
            own = progress(output).get("watching") or {}
            rss_after = _proc_status_kb(job.pid, "VmRSS:")
        finally:
            job.terminate()
            job.communicate(timeout=60)
    latencies = [seen[path] - arrived[path] for path in seen if path in arrived]
    rows = [
        ("noticed by", how),
        ("--settle", f"{args.settle:g} s"),
        ("quiet files in the folder", f"{args.quiet_files:,}"),
        ("idle CPU", f"{idle_cpu:.2f} s in {idle_span:.0f} s ({100 * idle_cpu / idle_span:.2f}%)"),
        ("RSS idle / after", f"{(rss_idle or 0) / 1024:.1f} MB / {(rss_after or 0) / 1024:.1f} MB"),
        ("files arrived", f"{total:,} at {args.rate:g}/s; {len(seen):,} rows"),
        (
            "rename to row readable: p50 / p95 / max",
            f"{statistics.median(latencies):.2f} / {percentile(latencies, 0.95):.2f} / "
            f"{max(latencies):.2f} s"
            if latencies
            else "-",
        ),
        (
            "job's own (first sight to row): p50 / p95",
            f"{own.get('latency_p50_s')} / {own.get('latency_p95_s')} s "
            f"(last {own.get('latency_samples')} files)",
        ),
        ("job CPU while files arrived", f"{busy_cpu:.2f} s over {busy_span:.1f} s"),
    ]
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
