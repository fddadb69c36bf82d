"""Benchmark data: small and large photo-like JPEGs and a URL manifest, made once and reused.

Pillow only (no numpy): a smooth colour field (a few random colours blown up with bicubic
interpolation, like sky, walls and skin in real photos) plus Gaussian sensor-like noise, so
the files compress like photos rather than like flat test cards. Some images carry an EXIF
orientation tag, so downscaling has to honour it.
"""

from __future__ import annotations

import os
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

SMALL_SIZE = (640, 480)
#: ~130 KiB at quality 85: the 100-150 KiB photos issue 25 measures with.
MEDIUM_SIZE = (1024, 768)
LARGE_SIZE = (4000, 3000)
#: EXIF orientations given to every few images (6 and 8 rotate, 3 flips upside down).
_ORIENTATIONS = (1, 1, 1, 6, 1, 3, 1, 8)


def _photo_like(size: tuple[int, int], seed: int, noise_sigma: float) -> object:
    from PIL import Image, ImageChops

    rng = random.Random(seed)
    # A dominant hue (so the colour model's answers vary across the set) with local variation.
    base = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    grid = Image.new("RGB", (5, 4))
    grid.putdata(
        [
            tuple(max(0, min(255, c + rng.randint(-60, 60))) for c in base)  # type: ignore[misc]
            for _ in range(20)
        ]
    )
    field = grid.resize(size, Image.Resampling.BICUBIC)
    # Medium-scale texture (foliage, fabric): coarse noise, upscaled.
    coarse = Image.effect_noise((size[0] // 16, size[1] // 16), 40).resize(
        size, Image.Resampling.BILINEAR
    )
    field = ImageChops.add(field, Image.merge("RGB", (coarse, coarse, coarse)), 1.0, -128)
    # Fine per-channel noise: the part JPEG cannot squeeze away. Drawing it is the slow part,
    # so each process draws a slightly larger plane once and crops it at random offsets.
    planes = _noise_planes(size, noise_sigma)
    channels = []
    for plane in planes:
        dx, dy = rng.randrange(_MARGIN), rng.randrange(_MARGIN)
        channels.append(plane.crop((dx, dy, dx + size[0], dy + size[1])))
    return ImageChops.add(field, Image.merge("RGB", channels), 1.0, -128)


_MARGIN = 64
_planes: dict[tuple[tuple[int, int], float], list[object]] = {}


def _noise_planes(size: tuple[int, int], sigma: float) -> list[Any]:
    from PIL import Image

    key = (size, sigma)
    if key not in _planes:
        bigger = (size[0] + _MARGIN, size[1] + _MARGIN)
        _planes[key] = [Image.effect_noise(bigger, sigma) for _ in range(3)]
    return _planes[key]


def _write(path: Path, size: tuple[int, int], seed: int, sigma: float, quality: int) -> None:
    from PIL import Image

    image = _photo_like(size, seed, sigma)
    assert isinstance(image, Image.Image)
    exif = Image.Exif()
    orientation = _ORIENTATIONS[seed % len(_ORIENTATIONS)]
    if orientation != 1:
        exif[0x0112] = orientation
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="JPEG", quality=quality, exif=exif.tobytes())
    os.replace(tmp, path)


def _small(args: tuple[Path, int]) -> None:
    path, seed = args
    _write(path, SMALL_SIZE, seed, sigma=6.0, quality=85)


def _medium(args: tuple[Path, int]) -> None:
    path, seed = args
    _write(path, MEDIUM_SIZE, seed, sigma=6.0, quality=85)


def _large(args: tuple[Path, int]) -> None:
    path, seed = args
    _write(path, LARGE_SIZE, seed, sigma=9.0, quality=92)


def ensure_images(
    folder: Path, count: int, *, large: bool, medium: bool = False, log: object = print
) -> list[Path]:
    """Make ``count`` JPEGs in ``folder`` (only the missing ones); return their paths, sorted.

    Small (640x480, ~50 KB), ``medium`` (1024x768, ~130 KiB) or ``large`` (4000x3000).
    """
    folder.mkdir(parents=True, exist_ok=True)
    prefix = "large" if large else "medium" if medium else "small"
    paths = [folder / f"{prefix}-{i:05d}.jpg" for i in range(count)]
    seed0 = 100_000 if large else 200_000 if medium else 0
    missing = [(p, i + seed0) for i, p in enumerate(paths) if not p.exists()]
    if missing:
        assert callable(log)
        log(f"generating {len(missing)} {prefix} images in {folder} ...")
        with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            make = _large if large else _medium if medium else _small
            list(pool.map(make, missing, chunksize=8))
    return paths


def ensure_tiny(folder: Path, count: int) -> list[Path]:
    """``count`` 32x24 JPEGs of distinct colours: URL items the server decodes for nothing."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"tiny-{i:03d}.jpg" for i in range(count)]
    for i, path in enumerate(paths):
        if not path.exists():
            rng = random.Random(i)
            colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
            Image.new("RGB", (32, 24), colour).save(path, format="JPEG", quality=90)
    return paths


def write_url_manifest(path: Path, base_url: str, files: list[str], count: int) -> None:
    """``count`` URL lines cycling over ``files``; a query makes every line a distinct item."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    n_files = len(files)
    with open(tmp, "w", encoding="ascii") as handle:
        step = 50_000
        for start in range(0, count, step):
            handle.write(
                "".join(
                    f"{base_url}/{files[i % n_files]}?n={i}\n"
                    for i in range(start, min(count, start + step))
                )
            )
    os.replace(tmp, path)
