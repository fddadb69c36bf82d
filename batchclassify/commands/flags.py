"""Flags more than one command reads the same way (``run`` and ``plan``): ``--cache`` and
``--extensions``, so a plan judges the sources and the cache exactly as the run will."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def cache_option(args: argparse.Namespace) -> Path | None:
    """The cache file ``--cache`` / ``--no-cache`` / ``$BATCHCLASSIFY_CACHE`` name, if any."""
    from ..output.cache import resolve_cache_path

    if getattr(args, "no_cache", False):
        return None
    text = args.cache or os.environ.get("BATCHCLASSIFY_CACHE") or None
    return None if text is None else resolve_cache_path(text)


def extensions_option(text: str) -> frozenset[str]:
    """``--extensions jpg,.PNG`` as the configuration's set: lower case, no dots, no blanks."""
    return frozenset(part.strip().lower().lstrip(".") for part in text.split(",") if part.strip())
