"""Small JPEG thumbnails of local images, embedded in the HTML report as data URIs.

Pillow's draft mode lets the JPEG decoder scale by 1/2..1/8 while decoding, so a 24 MP photo
costs a fraction of a full decode; the files are read in threads (Pillow releases the GIL
while decoding). A file that is missing or unreadable gets ``None``: the page shows a
placeholder, and the report never fails because of one image.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

THUMBNAIL_PX = 160
JPEG_QUALITY = 75
THREADS = 8


def thumbnail_uri(path: Path, size: int = THUMBNAIL_PX) -> str | None:
    """A ``data:image/jpeg;base64,...`` URI of ``path`` shrunk to fit ``size``, or ``None``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.draft("RGB", (size, size))
            image.thumbnail((size, size))
            rgb = image.convert("RGB")
            buffer = io.BytesIO()
            rgb.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def resolve(path: str, base: Path) -> Path:
    """``path`` as recorded; a relative one that is not found here is tried against ``base``.

    Rows hold paths as the job saw them, relative to where ``run`` was started; the report
    may run elsewhere, and the output's folder is the best second guess.
    """
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return candidate
    return base / candidate


def make_thumbnails(paths: Iterable[str], base: Path) -> dict[str, str | None]:
    """Thumbnails for distinct ``paths`` (as recorded in rows), made in threads."""
    unique = list(dict.fromkeys(paths))
    with ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="thumbnail") as pool:
        uris = pool.map(lambda p: thumbnail_uri(resolve(p, base)), unique)
        return dict(zip(unique, uris, strict=True))
