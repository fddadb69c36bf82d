"""Several servers against one: throughput of ``--api-url`` given 1 and 3 times (issue 13).

    python benchmarks/fleet_bench.py            # ~1 minute; prints a Markdown table
    python benchmarks/fleet_bench.py --items 600 --uplink 4

Two regimes, each with the local server (``python -m batchclassify.server``) in processes of
its own and the real CLI in a child process:

* ``capacity``: each server takes at most ``--uplink`` Mbit/s of uploads (``--upload-mbps``,
  a cap over all its connections), like an inference machine that is saturated: the job is
  bound by the servers, so three should give about three times one;
* ``fast``: servers with no latency and tiny images: the job is bound by the client's own
  CPU, so this shows what spreading over several servers costs the client per request.

Nothing here asserts a speed; the figures go into ``RESULTS.md`` by hand.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import PY, Server, run_client

KEY = "bench-key"


def _images(folder: Path, count: int, side: int) -> None:
    """``count`` PNGs of noise (they do not compress: each is ~3 bytes a pixel)."""
    folder.mkdir(parents=True)
    rng = random.Random(1)
    for n in range(count):
        image = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        (folder / f"{n:06d}.png").write_bytes(buffer.getvalue())


def _run(
    folder: Path, servers: int, knobs: list[str], concurrency: int, out: Path
) -> tuple[float, float]:
    """Images per second of one job over ``servers`` servers, and the client's CPU
    microseconds per image."""
    with ExitStack() as stack:
        running = [
            stack.enter_context(
                Server(["--api-key", KEY, *knobs], cpu=None, log=out.with_suffix(f".s{n}.log"))
            )
            for n in range(servers)
        ]
        urls = [arg for server in running for arg in ("--api-url", server.url)]
        cmd = [PY, "-m", "batchclassify", "run", str(folder), "--model", "colors/1",
               "--output", str(out), "--quiet", "--api-key", KEY,
               "--concurrency", str(concurrency), *urls]  # fmt: skip
        result = run_client(cmd, output=None, cpu=None, log=out.with_suffix(".log"))
    if result.exit_code != 0:
        raise SystemExit(f"the job failed ({result.exit_code}); see {out.with_suffix('.log')}")
    count = sum(1 for _ in folder.iterdir())
    return count / result.wall, result.cpu / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=300, help="images of the capacity regime")
    parser.add_argument("--fast-items", type=int, default=3000, help="images of the fast regime")
    parser.add_argument("--uplink", type=float, default=4.0, help="Mbit/s each server takes")
    parser.add_argument("--concurrency", type=int, default=24)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _images(root / "big", args.items, 80)  # ~19 KB each, ~26 KB as base64
        _images(root / "small", args.fast_items, 4)
        rows = []
        for regime, folder, knobs in (
            ("capacity", root / "big", ["--upload-mbps", str(args.uplink)]),
            ("fast", root / "small", []),
        ):
            for servers in (1, 3):
                out = root / f"{regime}-{servers}.jsonl"
                rate, cpu = _run(folder, servers, knobs, args.concurrency, out)
                rows.append((regime, servers, rate, cpu))
                print(f"{regime}: {servers} server(s): {rate:,.0f} images/s, {cpu:,.0f} µs CPU")
    print("\n| regime | servers | images/s | client CPU per image |\n|---|---:|---:|---:|")
    for regime, servers, rate, cpu in rows:
        print(f"| {regime} | {servers} | {rate:,.0f} | {cpu:,.0f} µs |")


if __name__ == "__main__":
    main()
