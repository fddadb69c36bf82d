"""What an export is asked to do: format, splits, threshold, link mode; parsed and checked."""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from ...errors import UsageError
from ...output.reading import run_folder
from ..thresholds import Thresholds

FORMATS = ("folders", "roboflow-multilabel", "label-studio", "csv")
MODES = ("symlink", "hardlink", "copy")
#: Formats that hold image files (and so cannot hold a URL item).
TREE_FORMATS = frozenset({"folders", "roboflow-multilabel", "label-studio"})
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    """One export: every option of ``batchclassify export``, validated."""

    output: Path
    to: str
    dest: Path
    splits: tuple[tuple[str, float], ...] = (("train", 1.0),)
    seed: str = "0"
    min_confidence: float | None = None
    thresholds: Thresholds | None = None
    """Per-class thresholds (``report --write-thresholds``): an answer below its class's needs
    review."""
    mode: str = "symlink"
    overwrite: bool = False
    formula_guard: bool = True
    """csv: a text cell starting ``=``, ``+``, ``-``, ``@`` gets a ``'`` before it (csvfile.py)."""
    only: frozenset[str] | None = None
    """``--only MANIFEST``: the ids of the rows to export (``select``'s manifest)."""
    document_root: Path | None = None
    """label-studio: the Label Studio server's LOCAL_FILES_DOCUMENT_ROOT (default: DEST)."""
    split_names: tuple[str, ...] = field(init=False)
    run_folder: Path = field(init=False)
    """Where the rows' relative paths start (``reading.run_folder``), read once."""

    def __post_init__(self) -> None:
        if self.to not in FORMATS:
            raise UsageError(f"--to {self.to}: unknown format; choose one of {', '.join(FORMATS)}")
        if self.mode not in MODES:
            raise UsageError(f"--mode {self.mode}: choose one of {', '.join(MODES)}")
        if self.min_confidence is not None and not 0.0 <= self.min_confidence <= 1.0:
            raise UsageError(f"--min-confidence {self.min_confidence:g}: must be within 0..1")
        object.__setattr__(self, "split_names", tuple(name for name, _ in self.splits))
        object.__setattr__(self, "run_folder", run_folder(self.output))

    @property
    def is_tree(self) -> bool:
        return self.to in TREE_FORMATS


def parse_splits(text: str) -> tuple[tuple[str, float], ...]:
    """``train=0.8,valid=0.1,test=0.1`` -> ((name, fraction), ...); fractions must sum to 1."""
    splits: list[tuple[str, float]] = []
    for part in text.split(","):
        name, sep, value = part.strip().partition("=")
        name = name.strip()
        if not sep or not _SPLIT_NAME.match(name):
            raise UsageError(
                f"--split {text}: write NAME=FRACTION pairs, e.g. train=0.8,valid=0.1,test=0.1 "
                "(names: letters, digits, '-', '_', '.')"
            )
        try:
            fraction = float(value)
        except ValueError:
            raise UsageError(f"--split {text}: {value!r} is not a number") from None
        if not 0.0 <= fraction <= 1.0 or math.isnan(fraction):
            raise UsageError(f"--split {text}: {name}={value} is not within 0..1")
        if name in (known for known, _ in splits):
            raise UsageError(f"--split {text}: {name} is named twice")
        splits.append((name, fraction))
    total = sum(fraction for _, fraction in splits)
    if abs(total - 1.0) > 1e-6:
        raise UsageError(f"--split {text}: the fractions add up to {total:g}, not 1")
    return tuple(splits)


def split_of(key: str | bytes, splits: tuple[tuple[str, float], ...], seed: str) -> str:
    """The split a key falls in: the same on every machine and every run with the same seed.

    The key is an image's ``content_key`` (identical bytes, one split: no image is in both
    train and test under two names), or its id when its bytes cannot be read (a URL item).
    A keyed BLAKE2b of the key, not Python's ``hash`` (salted per process), read as a number
    in [0, 1) and placed on the cumulative fractions.
    """
    if len(splits) == 1:
        return splits[0][0]
    data = key if isinstance(key, bytes) else key.encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(data, digest_size=8, key=seed.encode("utf-8")[:64]).digest()
    point = int.from_bytes(digest, "big") / 2.0**64
    edge = 0.0
    for name, fraction in splits:
        edge += fraction
        if point < edge:
            return name
    return next(name for name, fraction in reversed(splits) if fraction > 0)


_CHUNK = 1 << 20


def content_key(path: str) -> bytes | None:
    """XXH3-128 of a file's bytes, read a megabyte at a time; None if it cannot be read."""
    digest = xxhash.xxh3_128()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    except OSError:
        return None
    return b"content:" + digest.digest()
