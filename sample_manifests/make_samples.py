"""Make the sample images and manifests in this folder (deterministic; rerun to refresh).

    python sample_manifests/make_samples.py

Each image is mostly one colour the built-in ``colors`` model knows, with a small patch of
another, so answers are clear but not trivial. ``more/red-blue.png`` is half red, half blue
(two labels for ``colors-multilabel``); ``more/turned.jpg`` carries EXIF orientation 6, so a
server that applies it reports 120x160 for the stored 160x120 pixels.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
IMAGES = HERE / "images"

COLOURS = {
    "red": (205, 35, 30),
    "green": (45, 165, 55),
    "blue": (30, 65, 205),
    "yellow": (235, 215, 45),
    "white": (245, 245, 242),
    "black": (12, 14, 12),
    "gray": (128, 130, 128),
}

#: file name (relative to images/), dominant colour, size, patch colour.
SAMPLES: list[tuple[str, str, tuple[int, int], str]] = [
    ("red.jpg", "red", (320, 240), "white"),
    ("green.png", "green", (64, 48), "yellow"),
    ("blue.JPG", "blue", (200, 150), "white"),
    ("yellow.jpeg", "yellow", (128, 96), "black"),
    ("white.png", "white", (96, 64), "gray"),
    ("black.jpg", "black", (160, 120), "red"),
    ("gray.PNG", "gray", (100, 100), "blue"),
    ("more/red-small.jpg", "red", (64, 48), "green"),
    ("more/blue.png", "blue", (120, 80), "red"),
    ("more/green.JPEG", "green", (240, 180), "blue"),
    ("more/red-blue.png", "red", (160, 80), "blue"),
    ("more/turned.jpg", "yellow", (160, 120), "gray"),
]


def draw(colour: str, size: tuple[int, int], patch: str, *, halves: bool) -> Image.Image:
    image = Image.new("RGB", size, COLOURS[colour])
    pen = ImageDraw.Draw(image)
    w, h = size
    if halves:
        pen.rectangle((w // 2, 0, w, h), fill=COLOURS[patch])
    else:  # a small patch, about 6% of the area, so the answer is clear but not trivial
        pen.ellipse((w // 8, h // 8, w // 8 + w // 4, h // 8 + h // 4), fill=COLOURS[patch])
    return image


def save(image: Image.Image, path: Path, *, orientation: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".png":
        image.save(path, format="PNG", optimize=True)
        return
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    image.save(path, format="JPEG", quality=80, exif=exif.tobytes())


def main() -> None:
    rows = []
    for index, (name, colour, size, patch) in enumerate(SAMPLES):
        image = draw(colour, size, patch, halves=name.endswith("red-blue.png"))
        save(image, IMAGES / name, orientation=6 if name.endswith("turned.jpg") else 1)
        label = "red,blue" if name.endswith("red-blue.png") else colour
        rows.append(
            {
                "id": f"img-{index:02d}",
                "path": f"images/{name}",
                "label": label,
                "split": "val" if index % 4 == 3 else "train",
            }
        )
    # Files a directory walk must skip: not an image, and hidden.
    (IMAGES / "notes.txt").write_text("Not an image: a folder walk must skip this file.\n")
    save(draw("green", (32, 24), "red", halves=False), IMAGES / ".hidden.jpg")

    lines = ["# Sample images, relative to this manifest's folder.", ""]
    lines += [row["path"] for row in rows]
    (HERE / "images.txt").write_text("\n".join(lines) + "\n")
    with open(HERE / "images.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "path", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    with open(HERE / "images.jsonl", "w") as handle:
        for row in rows:
            handle.write(json.dumps({**row, "photographer": "make_samples.py"}) + "\n")
    base = "http://127.0.0.1:9001/_files"
    urls = [f"{base}/{name}" for name, *_ in SAMPLES[:6]]
    (HERE / "urls.txt").write_text(
        "# Served by: batchclassify serve --port 9001 --files-dir sample_manifests/images\n"
        + "\n".join(urls)
        + "\n"
    )


if __name__ == "__main__":
    main()
