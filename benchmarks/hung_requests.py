"""Hung requests (issue 9): images/s and extra requests with and without 1% of requests hanging.

    .venv/bin/python benchmarks/hung_requests.py      # a few minutes; writes hung_requests.md
    .venv/bin/python benchmarks/hung_requests.py --images 500 --latencies 0.05

For each server latency, the local server runs twice in its own process: once answering every
request, once hanging 1% of them for an hour (``--hang-rate 0.01``, the seed fixed so both
runs see the same draws). batchclassify runs with its default settings (32 in flight, 60 s
timeout) on the same images each time. *extra requests* is what the server counted beyond one
per image: the copies sent for hung requests (hedges) and any retries. The target is ≥ 80% of
the no-hang images/s with ≤ 2% extra requests. Nothing here asserts anything: it prints the
table and writes it to ``benchmarks/hung_requests.md``, which ``report.py`` puts in RESULTS.md.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import datagen
from clients import command, write_manifest
from harness import ROOT, Server, run_client

DATA = ROOT / "data"
TABLE = ROOT / "hung_requests.md"
_SUMMARY = re.compile(r"([\d,]+) images in ([\d,.]+) s")


def one_run(paths: list[Path], latency: float, hang_rate: float, pin: bool) -> dict[str, float]:
    """One server, one batchclassify run over ``paths``: what the client and server saw."""
    knobs = ["--latency", str(latency), "--model-cost", "hash", "--seed", "9"]
    knobs += ["--hang-rate", str(hang_rate)] if hang_rate else []
    tag = f"hung-{latency:g}-{hang_rate:g}"
    with Server(knobs, cpu="1" if pin else None, log=DATA / "logs" / f"{tag}-server.log") as srv:
        manifest = write_manifest(DATA / "manifests" / "hung.txt", [str(p) for p in paths])
        output = DATA / "out" / f"{tag}.jsonl"
        cmd = command(
            "batchclassify", manifest=manifest, url=srv.url, output=output, concurrency=32
        )
        cmd.remove("--quiet")  # the summary line gives the job's own elapsed time
        cmd.remove("--concurrency")
        cmd.remove("32")  # default settings
        log = DATA / "logs" / f"{tag}-client.log"
        before = srv.stats().get("requests", 0)
        result = run_client(cmd, output=output, cpu="0" if pin else None, log=log)
        requests = srv.stats().get("requests", 0) - before
    text = log.read_text(encoding="utf-8")
    match = _SUMMARY.search(text)
    images = int(match.group(1).replace(",", "")) if match else 0
    elapsed = float(match.group(2).replace(",", "")) if match else result.wall
    hedged = re.search(r"([\d,]+) hedged", text)
    return {
        "images": images,
        "seconds": elapsed,
        "images_per_s": images / elapsed if elapsed else 0.0,
        "requests": requests,
        "hedged": int(hedged.group(1).replace(",", "")) if hedged else 0,
        "exit": result.exit_code,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--latencies", default="0.05,0", help="server latencies, seconds")
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args()
    paths = datagen.ensure_images(DATA / "small", min(args.images, 2000), large=False)
    paths = (paths * (args.images // len(paths) + 1))[: args.images]
    rows = [
        "| server latency | hang rate | images | images/s | % of no-hang | requests | "
        "extra requests | hedged | exit |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for latency in (float(x) for x in args.latencies.split(",")):
        base = 0.0
        for hang_rate in (0.0, 0.01):
            run = one_run(paths, latency, hang_rate, pin=not args.no_pin)
            base = base or run["images_per_s"]
            share = run["images_per_s"] / base if base else 0.0
            extra = run["requests"] - run["images"]
            rows.append(
                f"| {latency * 1000:g} ms | {hang_rate:.0%} | {run['images']:,.0f} | "
                f"{run['images_per_s']:,.0f} | {share:.0%} | {run['requests']:,.0f} | "
                f"{extra:,.0f} ({extra / max(run['images'], 1):.1%}) | {run['hedged']:,.0f} | "
                f"{run['exit']:.0f} |"
            )
            print(rows[-1], flush=True)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    TABLE.write_text(
        "\n".join(
            [
                "## Hung requests (issue 9)",
                "",
                "`python benchmarks/hung_requests.py`: batchclassify with default settings "
                "(32 in flight, 60 s timeout) against the local server (hash model), answering "
                "every request or hanging 1% of them; the same images and server seed each "
                "time. *extra requests*: counted by the server beyond one per image. "
                f"Target: ≥ 80% of the no-hang images/s, ≤ 2% extra requests. Run {when}.",
                "",
                *rows,
                "",
            ]
        ),
        encoding="utf-8",
    )
    print(f"wrote {TABLE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
