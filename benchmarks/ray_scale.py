"""Ray Data at scale, against the CLI on the same machine: rows/s, and the same rows.

A Parquet manifest of N URL items (``id``, ``url``: the local server's ``/_files/`` images,
which it fetches from itself and keeps in its URL cache) is classified twice against one
local server (``python -m batchclassify.server --model-cost hash``, its own process):

* by the CLI, ``batchclassify run manifest.parquet --output cli.parquet``;
* by Ray Data on a local multi-worker Ray: ``read_parquet(manifest)`` →
  ``map_batches(Classifier, compute=ActorPoolStrategy(size=A))`` → ``write_parquet``, the
  key in the environment Ray's workers start in (docs/ray.md).

It checks that both wrote one ``ok`` row per item with the same ``top`` and confidence, and
prints rows/s for each (Ray: with and without starting Ray itself). Not a test: it asserts
nothing about speed. ::

    python benchmarks/ray_scale.py                      # 100,000 items
    python benchmarks/ray_scale.py --items 20000 --actors 2 --concurrency 32
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from harness import Server  # noqa: E402

KEY = "bench-ray-key"
MODEL = "colors/1"


def make_files(folder: Path, count: int = 48) -> list[str]:
    """``count`` small PNGs of distinct colours for the server's ``/_files/`` route."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for n in range(count):
        name = f"c{n:02d}.png"
        colour = ((n * 53) % 256, (n * 97) % 256, (n * 29) % 256)
        Image.new("RGB", (16, 16), colour).save(folder / name)
        names.append(name)
    return names


def write_manifest(path: Path, base_url: str, names: list[str], count: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = [f"item-{i:07d}" for i in range(count)]
    urls = [f"{base_url}/_files/{names[i % len(names)]}?n={i}" for i in range(count)]
    pq.write_table(pa.table({"id": ids, "url": urls}), path)


def run_cli(manifest: Path, output: Path, url: str, concurrency: int) -> float:
    env = {**os.environ, "ROBOFLOW_API_KEY": KEY, "PYTHONPATH": str(HERE.parent)}
    command = [
        sys.executable, "-m", "batchclassify", "run", str(manifest), "--model", MODEL,
        "--api-url", url, "--output", str(output), "--concurrency", str(concurrency), "--quiet",
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True)
    return time.perf_counter() - started


def run_ray(
    manifest: Path, output: Path, url: str, *, actors: int, concurrency: int, batch_size: int
) -> tuple[float, float]:
    """(seconds with Ray's start, seconds of the dataset alone)."""
    import ray

    from batchclassify.config import HttpConfig
    from batchclassify.ray_data import Classifier

    started = time.perf_counter()
    temp = Path(tempfile.mkdtemp(prefix="bc-ray-"))
    # The recipe: the key in the environment the workers start in, not in runtime_env.
    os.environ["ROBOFLOW_API_KEY"] = KEY
    ray.init(
        num_cpus=os.cpu_count() or 2,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=str(temp),  # PYTHONPATH, if set, reaches the workers like the key
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        job_started = time.perf_counter()
        # Blocks enough for every actor: one Parquet file is read as one block.
        ray.data.read_parquet(str(manifest)).repartition(4 * actors).map_batches(
            Classifier,
            fn_constructor_kwargs={
                "model": MODEL,
                "http": HttpConfig(api_url=url, concurrency=concurrency),
                "actors": actors,
            },
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=0.25,
            batch_size=batch_size,
        ).write_parquet(str(output))
        finished = time.perf_counter()
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    return finished - started, finished - job_started


def same_rows(cli: Path, ray_out: Path, count: int) -> str:
    """'yes', or what differs."""
    import pyarrow.dataset as pads

    def answers(path: Path) -> dict[str, tuple[str, str | None, float | None]]:
        table = pads.dataset(path).to_table(columns=["id", "status", "top", "confidence"])
        return {
            row["id"]: (row["status"], row["top"], row["confidence"])
            for row in table.to_pylist()
        }

    by_cli, by_ray = answers(cli), answers(ray_out)
    problems = []
    if len(by_cli) != count or len(by_ray) != count:
        problems.append(f"{len(by_cli)} CLI ids, {len(by_ray)} Ray ids for {count} items")
    not_ok = sum(1 for row in by_ray.values() if row[0] != "ok")
    if not_ok:
        problems.append(f"{not_ok} Ray rows not ok")
    differ = sum(1 for key, row in by_cli.items() if by_ray.get(key) != row)
    if differ:
        problems.append(f"{differ} rows differ")
    return "; ".join(problems) or "yes"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32, help="per actor, and the CLI's")
    parser.add_argument("--batch-size", type=int, default=1024)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bc-ray-scale-"))
    try:
        names = make_files(work / "files")
        knobs = ["--api-key", KEY, "--model-cost", "hash", "--files-dir", str(work / "files")]
        knobs += ["--url-cache-size", "64"]
        with Server(knobs, cpu=None, log=work / "server.log") as server:
            manifest = work / "manifest.parquet"
            write_manifest(manifest, server.url, names, args.items)
            cli_s = run_cli(manifest, work / "cli.parquet", server.url, args.concurrency)
            with_start, job_s = run_ray(
                manifest,
                work / "ray",
                server.url,
                actors=args.actors,
                concurrency=args.concurrency,
                batch_size=args.batch_size,
            )
            requests = server.stats().get("requests")
        same = same_rows(work / "cli.parquet", work / "ray", args.items)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    n = args.items
    print(f"{n:,} URL items, {os.cpu_count()} CPUs, server requests {requests}")
    print("| run | seconds | rows/s |")
    print("|---|---:|---:|")
    print(f"| CLI, --concurrency {args.concurrency} | {cli_s:.1f} | {n / cli_s:,.0f} |")
    label = f"Ray Data, {args.actors} actors × {args.concurrency}"
    print(f"| {label}, dataset only | {job_s:.1f} | {n / job_s:,.0f} |")
    print(f"| {label}, with ray.init | {with_start:.1f} | {n / with_start:,.0f} |")
    print(f"same rows as the CLI: {same}")


if __name__ == "__main__":
    main()
