"""S3 source vs local folder: the same JPEGs, classified from disk and from moto's S3 server.

    .venv/bin/python benchmarks/s3_bench.py [--count 1000] [--repeats 2]

The local server (hash model, latency 0) and moto's S3 server each run in their own process
on CPU 1; the client (``python -m batchclassify run ... --quiet``) on CPU 0, as in the main
benchmark. The bucket is filled once over HTTP with boto3 before the runs. Also measured: how
fast moto alone serves the same objects to s3fs (32 GETs in flight, no classification), the
ceiling the S3 run cannot pass on this machine. Prints a Markdown table; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from datagen import ensure_images
from harness import PY, ROOT, Server, pinned, run_client

DATA = ROOT / "data"
BUCKET = "bench"
CLIENT_CPU = "0"
SERVER_CPU = "1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto(port: int, log: Path) -> subprocess.Popen[bytes]:
    cmd = pinned([PY, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], SERVER_CPU)
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"moto did not start; see {log}")


def fill_bucket(paths: list[Path]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)

    def put(path: Path) -> None:
        s3.put_object(Bucket=BUCKET, Key=f"small/{path.name}", Body=path.read_bytes())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, paths))


def moto_ceiling(paths: list[Path]) -> tuple[float, float]:
    """Objects per second moto serves to s3fs with 32 ranged GETs in flight, and s3fs's CPU
    milliseconds per object."""
    code = (
        "import s3fs, sys, time; fs = s3fs.S3FileSystem(); "
        "names = [f'bench/small/{n}' for n in sys.argv[1:]]; fs.cat(names[:1]); "
        "t, c = time.monotonic(), time.process_time(); "
        # One ranged GET per object, as the job reads (a plain cat adds a HEAD for the size).
        "fs.cat_ranges(names, [0] * len(names), [2**24] * len(names), batch_size=32); "
        "print(len(names) / (time.monotonic() - t), "
        "(time.process_time() - c) / len(names) * 1000)"
    )
    done = subprocess.run(
        pinned([PY, "-c", code, *(p.name for p in paths)], CLIENT_CPU),
        capture_output=True,
        text=True,
        check=True,
    )
    rate, cpu = done.stdout.split()
    return float(rate), float(cpu)


def classify(source: str, server: Server, output: Path) -> tuple[float, float, int]:
    """(wall seconds, client CPU seconds, rows) of one ``run``."""
    for leftover in output.parent.glob(output.name + "*"):
        leftover.unlink()
    cmd = [PY, "-m", "batchclassify", "run", source, "--model", "colors/1"]
    cmd += ["--api-url", server.url, "--output", str(output), "--quiet"]
    result = run_client(cmd, output=output, cpu=CLIENT_CPU, log=output.with_suffix(".log"))
    if result.exit_code != 0:
        raise RuntimeError(f"{source}: exit {result.exit_code}; see {output.with_suffix('.log')}")
    rows = sum(1 for _ in output.open("rb"))
    return result.wall, result.cpu, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    paths = ensure_images(DATA / "images" / "small", args.count, large=False)
    folder = DATA / "s3bench" / "small"
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:  # hardlinks: the same bytes, a folder holding only these
        if not (folder / path.name).exists():
            os.link(path, folder / path.name)
    port = free_port()
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench-secret",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        ROBOFLOW_API_KEY="bench-key",
    )
    moto = start_moto(port, DATA / "s3bench" / "moto.log")
    try:
        started = time.monotonic()
        fill_bucket(paths)
        print(f"filled the bucket: {len(paths)} objects in {time.monotonic() - started:.1f} s")
        ceiling = moto_ceiling(paths)
        with Server(
            ["--model-cost", "hash"], cpu=SERVER_CPU, log=DATA / "s3bench" / "server.log"
        ) as server:
            print("| source | images | wall s | images/s | client CPU ms/image |")
            print("|---|---:|---:|---:|---:|")
            for _ in range(args.repeats):
                for name, source in (
                    ("local folder", str(folder)),
                    (f"s3://{BUCKET}/small/ (moto)", f"s3://{BUCKET}/small/"),
                ):
                    wall, cpu, rows = classify(source, server, DATA / "s3bench" / "out.jsonl")
                    print(
                        f"| {name} | {rows} | {wall:.2f} | {rows / wall:.0f} | "
                        f"{cpu / rows * 1000:.2f} |"
                    )
        print(
            f"\nmoto alone serves {ceiling[0]:.0f} objects/s to s3fs (32 GETs in flight), "
            f"s3fs using {ceiling[1]:.2f} ms of CPU per object"
        )
    finally:
        moto.terminate()
        moto.wait(10)


if __name__ == "__main__":
    main()
