"""Benchmark ``batchclassify push``: uploads per second against the local server at a
realistic upload latency.

Synthesises N JPEG photos (640x480, about 150 KB each) and an output of ``run`` rows for
them, then pushes them to a ``BackgroundServer`` whose dataset routes answer after
``--latency`` seconds (default 0.5 s: an upload of a photo to Roboflow's API, whose answer
comes once the image is stored), at several ``--concurrency`` values, each into a fresh
project and ledger. A push is an upload plus an annotation per image; the figure is images
fully pushed per second. For comparison, Roboflow's own client (``rfapi.upload_image`` +
``save_annotation``) in a 10-thread pool, as ``Workspace.upload_dataset`` runs it.

    python benchmarks/push_bench.py [--images N] [--latency S] [--concurrency 1,10,32]
"""

from __future__ import annotations

import argparse
import io
import os
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from batchclassify.server import BackgroundServer, ServerConfig  # noqa: E402

KEY = "bench-key"
CLASSES = ["cat", "dog", "bird", "car", "boat"]


def make_images(folder: Path, count: int) -> list[Path]:
    from PIL import Image

    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    noise = Image.effect_noise((640, 480), 64).convert("RGB")
    paths = []
    for n in range(count):
        tinted = Image.new("RGB", (640, 480), tuple(rng.randrange(256) for _ in range(3)))
        image = Image.blend(noise, tinted, 0.5)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85, comment=f"bench {n}".encode())
        path = folder / f"img{n:05d}.jpg"
        path.write_bytes(buffer.getvalue())
        paths.append(path)
    return paths


def make_output(path: Path, images: list[Path]) -> None:
    rng = random.Random(1)
    with open(path, "wb") as handle:
        for image in images:
            top = rng.choice(CLASSES)
            row = {
                "id": str(image),
                "path": str(image),
                "url": None,
                "status": "ok",
                "top": top,
                "confidence": 0.9,
                "predicted_classes": [top],
                "predictions": [{"class": top, "confidence": 0.9}],
                "multilabel": False,
            }
            handle.write(orjson.dumps(row) + b"\n")


def push(output: Path, server: BackgroundServer, project: str, concurrency: int) -> float:
    env = dict(os.environ, ROBOFLOW_API_KEY=KEY, PYTHONPATH=str(REPO))
    args = [sys.executable, "-m", "batchclassify", "push", str(output), "--project", project]
    args += ["--api-url", server.url, "--concurrency", str(concurrency), "--quiet"]
    started = time.perf_counter()
    subprocess.run(args, env=env, check=True)
    return time.perf_counter() - started


def roboflow_client(images: list[Path], server: BackgroundServer, project: str) -> float:
    from roboflow.adapters import rfapi

    rfapi.API_URL = server.url  # read by every call: where the client sends its requests

    def one(path: Path) -> None:
        answer = rfapi.upload_image(KEY, project, str(path))
        rfapi.save_annotation(KEY, project, "cat", "cat", answer["id"], is_prediction=True)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(one, images))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--concurrency", default="1,10,32")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="push-bench-"))
    images = make_images(workdir / "images", args.images)
    size = sum(p.stat().st_size for p in images)
    output = workdir / "out.jsonl"
    make_output(output, images)
    print(
        f"{len(images)} images, {size / len(images) / 1000:.0f} KB each; latency {args.latency} s"
    )
    rows = []
    config = ServerConfig(api_key=KEY, latency=args.latency)
    for concurrency in (int(c) for c in args.concurrency.split(",")):
        with BackgroundServer(config) as server:
            seconds = push(output, server, f"bench-c{concurrency}", concurrency)
            stored = len(server.stats.dataset.stored(f"bench-c{concurrency}"))
            assert stored == len(images), stored
        rows.append((f"batchclassify push -c {concurrency}", seconds))
    with BackgroundServer(config) as server:
        rows.append(("roboflow rfapi, 10 threads", roboflow_client(images, server, "bench-rf")))
    print("| client | seconds | images/s (upload + annotation) |")
    print("|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.1f} | {len(images) / seconds:.1f} |")


if __name__ == "__main__":
    main()
