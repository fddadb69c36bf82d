"""File names as ids: bytes that are not UTF-8 become ``\\xNN`` so an id is valid text."""

from __future__ import annotations

import os


def as_text(name: str) -> str:
    """``name`` as valid UTF-8 text: undecodable file-name bytes become ``\\xNN``."""
    if name.isascii():
        return name
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    return name


def is_text(value: str) -> bool:
    """False when ``value`` holds surrogate escapes, i.e. bytes that were not UTF-8."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
