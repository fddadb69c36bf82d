"""Requests in flight as the server counts them (issue 25): is ``--concurrency`` a bound?

    .venv/bin/python benchmarks/inflight_bench.py                 # -c 8, 32, 128
    .venv/bin/python benchmarks/inflight_bench.py -c 32 --hang-rate 0.01 --scale 1

A job runs in this process against the local server (in a thread) with the hosted-like long
tail (``--latency-distribution longtail``, scaled) and a share of requests hanging for an
hour. It prints the server's ``max_in_flight`` beside the bound ``N + extra_requests(N)``,
and what the hangs cost in requests. The maximum is a count, not a speed: it holds on a busy
machine; the wall times printed beside it do not.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import anyio
import datagen

from batchclassify import HttpConfig, JobConfig
from batchclassify.job.hedging import extra_requests
from batchclassify.job.runner import Job
from batchclassify.server import BackgroundServer
from batchclassify.server.config import ServerConfig


def measure(folder: Path, concurrency: int, hang_rate: float, scale: float) -> str:
    server = BackgroundServer(
        ServerConfig(
            api_key="k",
            latency_distribution="longtail",
            latency_scale=scale,
            hang_rate=hang_rate,
            seed=3,
        )
    )
    try:
        with tempfile.TemporaryDirectory() as out:
            config = JobConfig(
                sources=(str(folder),),
                model="colors/1",
                output=Path(out) / "out.jsonl",
                http=HttpConfig(api_url=server.url, api_key="k", concurrency=concurrency),
            )
            started = time.monotonic()
            summary = anyio.run(Job(config).run)
            wall = time.monotonic() - started
        stats = server.stats
        return (
            f"-c {concurrency:>3}: max in flight {stats.max_in_flight:>3} (bound "
            f"{concurrency + extra_requests(concurrency)}), {summary.ok:,} ok, {stats.hangs} "
            f"hangs, {stats.requests - summary.ok} extra requests ({summary.hedged} copies, "
            f"{summary.retries} retries), {wall:.1f} s wall (indicative only)"
        )
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--concurrency", type=int, action="append")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--hang-rate", type=float, default=0.01)
    parser.add_argument("--scale", type=float, default=0.25, help="long-tail latency scale")
    args = parser.parse_args()
    folder = Path(tempfile.gettempdir()) / "batchclassify-inflight-images"
    datagen.ensure_tiny(folder, args.images)
    for concurrency in args.concurrency or [8, 32, 128]:
        print(measure(folder, concurrency, args.hang_rate, args.scale), flush=True)


if __name__ == "__main__":
    main()
