"""Reading an image file and turning it into the request body: base64, optionally downscaled.

``encode_data`` does the same for bytes read elsewhere (an object in S3, ``objectstore``).
Everything here is blocking. The runner calls it on the event loop while reads are fast and in
worker threads otherwise (the policy is in ARCHITECTURE.md, *Flow control*); downscaling
always runs in threads, where Pillow releases the GIL, so it spreads over the cores.
"""

from __future__ import annotations

import errno
import io
import os
import re
from dataclasses import dataclass

import pybase64

from ..error_types import ErrorType
from ..errors import ItemError


class OpenFilesExhausted(Exception):
    """The process (EMFILE) or the system (ENFILE) has no file descriptor left: nothing is
    wrong with the image, the read is worth trying again once others have finished."""


@dataclass(slots=True)
class EncodedImage:
    body: bytes
    """Base64 text, ready to be the request body."""
    original_bytes: int
    """The file's size as read (``batchclassify plan`` reports bytes read)."""
    original_size: tuple[int, int] | None = None
    """Width and height before downscaling; ``None`` when the image was sent as it is."""


def read_and_encode(
    path: str, *, max_upload_bytes: int, max_size: int | None = None, jpeg_quality: int = 90
) -> EncodedImage:
    """Read ``path`` and base64 it, raising ``ItemError`` with a clear message on any problem."""
    try:
        # os.open/os.read, not open(): no file objects, and one read of the known size.
        fd = os.open(path, _READ_FLAGS)
        try:
            size = os.fstat(fd).st_size
            # base64 grows data by 4/3; refuse before reading a file that cannot be sent anyway.
            if max_size is None and _encoded_length(size) > max_upload_bytes:
                raise ItemError(
                    f"file is {_size(size)}, over the {_size(max_upload_bytes)} upload limit "
                    "once base64-encoded; use --max-size to downscale it",
                    kind=ErrorType.TOO_LARGE,
                )
            # The size fstat gave is what is read: a file still being written is a snapshot,
            # as a listing is. A size of 0 (a pipe, /proc) or a short read: to the end.
            data = os.read(fd, size) if size else b""
            if len(data) < size or not size:
                data = _read_rest(fd, [data])
        finally:
            os.close(fd)
    except FileNotFoundError:
        message = "file not found" if not os.path.islink(path) else "broken symlink"
        raise ItemError(
            f"{message} (moved or deleted since it was listed?)", kind=ErrorType.MISSING_FILE
        ) from None
    except PermissionError:
        raise ItemError(
            "permission denied: the file is not readable", kind=ErrorType.UNREADABLE
        ) from None
    except IsADirectoryError:
        raise ItemError("is a directory, not an image file", kind=ErrorType.UNREADABLE) from None
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            raise OpenFilesExhausted(
                "too many open files (the open-file limit, ulimit -n, is reached)"
            ) from None
        raise ItemError(
            f"cannot read the file: {exc.strerror or exc}", kind=ErrorType.UNREADABLE
        ) from None
    return encode_data(
        data,
        original_bytes=len(data),  # what was read: a special file's fstat size is 0
        max_upload_bytes=max_upload_bytes,
        max_size=max_size,
        jpeg_quality=jpeg_quality,
    )


_READ_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
_CHUNK = 1 << 16


def _read_rest(fd: int, chunks: list[bytes]) -> bytes:
    """The file's bytes from ``chunks`` read so far to its end."""
    while chunk := os.read(fd, _CHUNK):
        chunks.append(chunk)
    return b"".join(chunks)


def max_raw_bytes(max_upload_bytes: int) -> int:
    """The largest file that is at most ``max_upload_bytes`` once base64-encoded."""
    return max_upload_bytes // 4 * 3


def encode_data(
    data: bytes,
    *,
    original_bytes: int,
    max_upload_bytes: int,
    max_size: int | None = None,
    jpeg_quality: int = 90,
) -> EncodedImage:
    """An image's bytes (a file's, an object's) as the request body; ``ItemError`` if empty,
    undecodable for downscaling, or over the upload limit."""
    if not data:
        raise ItemError("file is empty (0 bytes)", kind=ErrorType.EMPTY_FILE)
    if max_size is None and _encoded_length(len(data)) > max_upload_bytes:
        raise ItemError(
            f"file is over the {_size(max_upload_bytes)} upload limit once base64-encoded; "
            "use --max-size to downscale it",
            kind=ErrorType.TOO_LARGE,
        )
    size = original_bytes
    original_size = None
    if max_size is not None:
        data, original_size = _downscale(data, max_size=max_size, quality=jpeg_quality)
        if _encoded_length(len(data)) > max_upload_bytes:
            raise ItemError(
                f"still {_size(len(data))} after downscaling, over the "
                f"{_size(max_upload_bytes)} upload limit once base64-encoded",
                kind=ErrorType.TOO_LARGE,
            )
    return EncodedImage(
        body=pybase64.b64encode(data), original_bytes=size, original_size=original_size
    )


def _size(count: int) -> str:
    return f"{count / 2**20:.1f} MiB" if count >= 2**20 else f"{count / 1024:.1f} KiB"


def _encoded_length(raw_bytes: int) -> int:
    return 4 * ((raw_bytes + 2) // 3)


def _downscale(data: bytes, *, max_size: int, quality: int) -> tuple[bytes, tuple[int, int] | None]:
    """Shrink so the longer side is at most ``max_size``; keep small images byte for byte.

    For JPEG, ``draft`` asks libjpeg to decode at 1/2, 1/4 or 1/8 scale directly, which is far
    cheaper than a full decode followed by a resize. EXIF orientation is applied so the model
    sees the picture the right way up, as it would have after the server's own decode.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
            if orientation in (5, 6, 7, 8):
                width, height = height, width
            if max(width, height) <= max_size and orientation == 1:
                return data, None
            if image.format == "JPEG":
                image.draft("RGB", (max_size, max_size))
            upright: Image.Image = ImageOps.exif_transpose(image)
            if upright.mode not in ("RGB", "L"):
                upright = upright.convert("RGB")
            upright.thumbnail((max_size, max_size), Image.Resampling.BILINEAR, reducing_gap=2.0)
            out = io.BytesIO()
            upright.save(out, format="JPEG", quality=quality)
    except UnidentifiedImageError:
        # Pillow's own message only names its in-memory buffer ("<_io.BytesIO object at ...>").
        raise ItemError(
            f"cannot decode the image to downscale it: {_not_an_image(data)}",
            kind=ErrorType.BAD_IMAGE,
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        # Unreadable here means the server could not read it either; say so without a request.
        raise ItemError(
            f"cannot decode the image to downscale it: {_without_buffer(str(exc))}",
            kind=ErrorType.BAD_IMAGE,
        ) from None
    except Image.DecompressionBombError as exc:
        raise ItemError(
            f"image too large to decode safely: {exc}", kind=ErrorType.BAD_IMAGE
        ) from None
    return out.getvalue(), (width, height)


#: Compiled on first use (by ``re``'s cache), not at import: most jobs never meet a bad image.
_BUFFER_REPR = r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>"

#: Formats Pillow cannot open out of the box, by their first bytes: name them, so the user
#: knows what the file is rather than only that it is not an image.
_KNOWN_OTHERS = (
    (b"ftypheic", "a HEIC photo (Pillow cannot decode HEIC; convert it to JPEG)"),
    (b"ftypheix", "a HEIC photo (Pillow cannot decode HEIC; convert it to JPEG)"),
    (b"ftypmif1", "a HEIF/AVIF image Pillow cannot decode here; convert it to JPEG"),
    (b"ftypavif", "an AVIF image Pillow cannot decode here; convert it to JPEG"),
    (b"%PDF", "a PDF document, not an image"),
    (b"PK\x03\x04", "a ZIP archive, not an image"),
    (b"<", "text (HTML or XML?), not an image"),
)


def _not_an_image(data: bytes) -> str:
    """What to say about bytes Pillow does not recognise as any image format."""
    head = data[:16]
    for magic, what in _KNOWN_OTHERS:
        # ISO media files (HEIC, AVIF) put their brand at byte 4, after the box size.
        if head[4:12] == magic if magic.startswith(b"ftyp") else head.lstrip().startswith(magic):
            return f"the file is {what}"
    if data[:3] == b"\xff\xd8\xff" or data[:8] == b"\x89PNG\r\n\x1a\n":
        return "the file starts like an image but its header is corrupt"
    return "the file is not in an image format Pillow recognises (unknown or corrupt header)"


def _without_buffer(message: str) -> str:
    """Pillow's message without its buffer's repr; a cut-short file said in plain words."""
    message = re.sub(_BUFFER_REPR, "", message).strip() or "corrupt image data"
    if "truncated" in message.lower():
        return f"the file is cut short (incomplete copy or download?): {message}"
    return message


#: What ``image_type`` calls the ISO media images Pillow does not open (by brand).
_ISO_IMAGES = {
    b"heic": "image/heic",
    b"heix": "image/heic",
    b"mif1": "image/heif",
    b"avif": "image/avif",
}


def image_type(data: bytes) -> str:
    """The MIME type of an image's bytes, from its header (nothing is decoded); ``ItemError``
    (``bad_image``) saying what the bytes are instead when they are no image."""
    from PIL import Image, UnidentifiedImageError

    if data[4:8] == b"ftyp" and data[8:12] in _ISO_IMAGES:
        return _ISO_IMAGES[data[8:12]]
    try:
        with Image.open(io.BytesIO(data)) as image:
            found = image.format
    except (UnidentifiedImageError, OSError, ValueError):
        raise ItemError(_not_an_image(data), kind=ErrorType.BAD_IMAGE) from None
    return Image.MIME.get(found or "", "application/octet-stream")
