"""The colour model: decode an image into a thumbnail, score it against colour classes."""

from __future__ import annotations

import io
import math
import zlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .errors import bad_image

#: Class name and prototype colour; the order gives ``class_id``.
CLASSES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (200, 30, 30)),
    ("green", (40, 160, 50)),
    ("blue", (35, 60, 200)),
    ("yellow", (230, 210, 40)),
    ("white", (240, 240, 240)),
    ("black", (15, 15, 15)),
    ("gray", (128, 128, 128)),
)
MODELS: Mapping[str, Literal["single", "multi"]] = {
    "colors": "single",
    "colors-multilabel": "multi",
}
_THUMB = 12  # pixels per side the model looks at: a mean colour needs no more


@dataclass(frozen=True)
class _Analysis:
    width: int
    height: int
    mean: tuple[float, float, float]
    pixels: list[tuple[int, int, int]]


def analyse(data: bytes, auto_orient: bool) -> _Analysis:
    """Decode at reduced scale into a tiny thumbnail; report the upright original size."""
    from PIL import Image, ImageStat, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if auto_orient and image.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                width, height = height, width
            # draft lets libjpeg decode at 1/8 scale: a 12 MP photo costs a few ms, not 100.
            image.draft("RGB", (_THUMB * 2, _THUMB * 2))
            # Via RGBA so palette transparency converts without a warning.
            source = image.convert("RGBA") if "transparency" in image.info else image
            thumb = source.convert("RGB")
            thumb.thumbnail((_THUMB, _THUMB), Image.Resampling.BOX, reducing_gap=None)
    except UnidentifiedImageError:  # its text names a BytesIO object: say what it means
        raise bad_image("the image data could not be decoded (not a known image format)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise bad_image(f"the image data could not be decoded ({exc})") from None
    except Image.DecompressionBombError as exc:
        raise bad_image(f"image too large to decode ({exc})") from None
    mean = ImageStat.Stat(thumb).mean
    raw = thumb.tobytes()  # not getdata(): deprecated in recent Pillow
    pixels = [(raw[i], raw[i + 1], raw[i + 2]) for i in range(0, len(raw), 3)]
    return _Analysis(width, height, (mean[0], mean[1], mean[2]), pixels)


def hashed(data: bytes) -> _Analysis:
    """The ``model_cost="hash"`` stand-in: a class picked by a checksum, no decoding."""
    _name, color = CLASSES[zlib.crc32(data) % len(CLASSES)]
    return _Analysis(0, 0, (color[0], color[1], color[2]), [color])


def _distance(a: tuple[float, ...], b: tuple[int, int, int]) -> float:
    """RGB distance scaled to 0..√3."""
    return math.dist(a, b) / 255.0


def single_label(analysis: _Analysis, threshold: float) -> dict[str, Any]:
    # Softmax over negative distances: the nearest class wins clearly, neighbours share the rest.
    scores = [math.exp(-_distance(analysis.mean, colour) / 0.08) for _, colour in CLASSES]
    total = sum(scores)
    probs = [round(score / total, 4) for score in scores]
    kept = [
        {"class": CLASSES[i][0], "class_id": i, "confidence": probs[i]}
        for i in sorted(range(len(CLASSES)), key=lambda i: -probs[i])
        if probs[i] >= threshold
    ]
    return {
        "predictions": kept,
        "top": kept[0]["class"] if kept else "",
        "confidence": kept[0]["confidence"] if kept else 0.0,
    }


def multi_label(analysis: _Analysis, threshold: float) -> dict[str, Any]:
    nearest: Counter[int] = Counter()
    for pixel in analysis.pixels:
        nearest[min(range(len(CLASSES)), key=lambda i: _distance(pixel, CLASSES[i][1]))] += 1
    count = max(1, len(analysis.pixels))
    predictions: dict[str, dict[str, Any]] = {}
    for i, (name, _) in enumerate(CLASSES):
        share = nearest[i] / count
        # A class covering a fifth of the picture is a coin toss; half of it is near-certain.
        confidence = round(1.0 / (1.0 + math.exp(-16.0 * (share - 0.2))), 4)
        predictions[name] = {"confidence": confidence, "class_id": i}
    chosen = sorted(
        (n for n, p in predictions.items() if p["confidence"] >= threshold),
        key=lambda n: -float(predictions[n]["confidence"]),
    )
    return {"predictions": predictions, "predicted_classes": chosen}
