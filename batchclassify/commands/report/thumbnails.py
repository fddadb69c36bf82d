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


def thumbnail_uri(path: str | Path, size: int = THUMBNAIL_PX) -> str | None:
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


def make_thumbnails(files: Iterable[tuple[str, str]]) -> dict[str, str | None]:
    """Thumbnails of ``(id, file)`` pairs (files as ``image_file`` finds them), made in
    threads; by id."""
    unique = dict(files)
    with ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="thumbnail") as pool:
        uris = pool.map(thumbnail_uri, unique.values())
        return dict(zip(unique, uris, strict=True))
