"""``batchclassify report`` on a 1,000,000-row output: time and peak memory (issue 12).

Synthesises the outputs (no server): single- and multi-label rows over 10 classes with random
confidences, 2% error rows of four types, a ``split`` column, paths cycling over 500 small
JPEGs on disk (so the gallery's thumbnails are real work) and some that do not exist. Then
runs the real CLI in a child process, text only and with ``--html --by split``, on the JSONL
output and on the same rows as Parquet, and reports wall time, peak RSS (the child's
``ru_maxrss``) and the page's size. Writes its section of ``RESULTS.md`` in place.

    python benchmarks/report_command.py            # 1,000,000 rows (~2 minutes)
    python benchmarks/report_command.py --rows 100000
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent
DATA = ROOT / "data" / "report"
CLASSES = [f"class-{n}" for n in range(10)]
ERRORS = ["missing_file", "timeout", "bad_image", "server_error"]
MARK_START, MARK_END = "<!-- report-benchmark -->", "<!-- /report-benchmark -->"


def make_images(folder: Path, count: int = 500) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(count):
        path = folder / f"img-{n:04d}.jpg"
        if not path.exists():
            # Noise over a colour field: compresses like a photo, so thumbnails weigh what
            # a real job's do.
            shade = Image.new("RGB", (640, 480), (n * 37 % 256, n * 91 % 256, n * 53 % 256))
            noise = Image.effect_noise((640, 480), 40).convert("RGB")
            Image.blend(shade, noise, 0.35).save(path, quality=85)
        paths.append(path)
    return paths


def row(n: int, rng: random.Random, images: list[Path], multilabel: bool) -> dict[str, object]:
    path = str(images[n % len(images)]) if n % 10 else f"/nonexistent/{n}.jpg"
    base: dict[str, object] = {"id": f"item-{n:07d}", "path": path, "url": None}
    if rng.random() < 0.02:
        kind = rng.choice(ERRORS)
        return base | {
            "status": "error",
            "error_type": kind,
            "error": f"{kind} (synthetic)",
            "attempts": 1,
            "elapsed_ms": 12.0,
            "split": "train",
        }
    scores = sorted(((c, rng.random() ** 3) for c in CLASSES), key=lambda p: -p[1])
    total = 1.0 if multilabel else sum(s for _, s in scores)
    predictions = [{"class": c, "confidence": round(s / total, 4)} for c, s in scores]
    top = predictions[0]
    chosen = (
        [p["class"] for p in predictions if p["confidence"] >= 0.4]
        if multilabel
        else [top["class"]]
    )
    return base | {
        "status": "ok", "top": top["class"], "confidence": top["confidence"],
        "predicted_classes": chosen, "predictions": predictions, "multilabel": multilabel,
        "attempts": 1, "http_status": 200, "elapsed_ms": 40.0,
        "split": "train" if n % 10 < 8 else "valid",
    }  # fmt: skip


def write_parquet(jsonl: Path, parquet: Path) -> None:
    """The same rows as ``run`` writes them: the real sink's parts and row groups."""
    sys.path.insert(0, str(ROOT.parent))
    from batchclassify.models import ROW_FIELDS
    from batchclassify.output.parquet_sink import ParquetSink

    sink = ParquetSink(parquet)
    sink.open()
    with open(jsonl, "rb") as handle:
        for n, line in enumerate(handle, 1):
            sink.write(dict.fromkeys(ROW_FIELDS) | orjson.loads(line))
            if n % 20_000 == 0:
                sink.flush()
    sink.close()


def outputs(rows: int, multilabel: bool) -> tuple[Path, Path]:
    name = f"out-{'ml-' if multilabel else ''}{rows}"
    return DATA / f"{name}.jsonl", DATA / f"{name}.parquet"


def make_output(rows: int, multilabel: bool) -> tuple[Path, Path]:
    """``out-[ml-]N.jsonl`` and ``.parquet`` under data/report, made once per size and kind."""
    jsonl, parquet = outputs(rows, multilabel)
    DATA.mkdir(parents=True, exist_ok=True)
    if not jsonl.exists():
        images = make_images(DATA / "images")
        rng = random.Random(12)
        with open(jsonl, "wb") as handle:
            for n in range(rows):
                handle.write(orjson.dumps(row(n, rng, images, multilabel)) + b"\n")
    if not parquet.exists():
        write_parquet(jsonl, parquet)
    return jsonl, parquet


def measure(args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of ``python -m batchclassify ARGS``."""
    env = dict(os.environ, PYTHONPATH=str(ROOT.parent))
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "batchclassify", *args], env=env, stdout=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"batchclassify {' '.join(args)} exited {child.returncode}")
    return elapsed, usage.ru_maxrss / 1024


def write_section(lines: list[str]) -> None:
    results = ROOT / "RESULTS.md"
    text = results.read_text()
    section = "\n".join([MARK_START, *lines, MARK_END])
    pattern = re.compile(re.escape(MARK_START) + ".*?" + re.escape(MARK_END), re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text + "\n" + section
    results.write_text(text.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--make-only", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.make_only:
        make_output(options.rows, multilabel=False)
        make_output(options.rows, multilabel=True)
        return
    # Made in a child: a forked child's ru_maxrss counts the parent's memory at fork time,
    # so this process stays small (no pyarrow, no Pillow) while it measures.
    subprocess.run(
        [sys.executable, __file__, "--rows", str(options.rows), "--make-only"], check=True
    )
    page = DATA / "report.html"
    table = [
        "| model | output | command | wall time | peak RSS | page |",
        "|---|---|---|---:|---:|---:|",
    ]
    for multilabel in (False, True):
        for output in outputs(options.rows, multilabel):
            for extra in ([], ["--html", str(page), "--by", "split"]):
                page.unlink(missing_ok=True)
                seconds, peak = measure(["report", str(output), *extra])
                size = f"{page.stat().st_size / 1e6:.1f} MB" if page.exists() else ""
                command = "report --html --by split" if extra else "report (text)"
                kind = "multi-label" if multilabel else "single-label"
                table.append(
                    f"| {kind} | {output.suffix[1:]} | `{command}` | {seconds:.1f} s "
                    f"| {peak:.0f} MB | {size} |"
                )
                print(table[-1], flush=True)
    write_section(
        [
            f"## `report` on a {options.rows:,}-row output (issue 12)",
            "",
            "`python benchmarks/report_command.py`: synthetic rows (10 classes, 2% errors, a "
            "`split` column; multi-label: every class scored, those >= 0.4 predicted), the JSONL "
            "output and the same rows written by the Parquet sink (100,000-row parts); the real "
            "CLI in a child process, peak RSS is the child's. `--html` embeds 240 thumbnails "
            "(24 per class) made from 640x480 JPEGs of noise over a colour field, ~1.6 KB each; a "
            "photo's thumbnail is ~8 KB, so a real page of 240 cards is ~2 MB.",
            "",
            *table,
        ]
    )


if __name__ == "__main__":
    main()
