"""Shards: split one job over N processes or machines by a stable hash of each item's id.

``--shard I/N`` keeps the items whose id hashes to shard ``I``. The hash is the first 8 bytes
of BLAKE2b over the id's UTF-8 bytes (``surrogateescape``, as ids of non-UTF-8 names carry
escapes), read big-endian, modulo N: the same on every machine, Python version and run
(Python's own ``hash`` is salted per process and would scatter items between runs).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

#: Compiled on first use (by ``re``'s cache), not at import: most jobs have no ``--shard``.
_SHARD_RE = r"^\s*(\d+)\s*/\s*(\d+)\s*$"
#: The placeholder ``--output`` may contain; it becomes the shard's index.
PLACEHOLDER = "{shard}"


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise UsageError(
                f"--shard {self.index}/{self.count}: want I/N with N >= 1 and 0 <= I < N "
                "(shards are numbered from 0)"
            )

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, item_id: str) -> bool:
        """Whether the item with this id belongs to this shard."""
        return self.count == 1 or shard_of(item_id, self.count) == self.index


def parse_shard(text: str) -> Shard:
    """``"I/N"`` -> ``Shard(I, N)``; anything else is a ``UsageError`` naming the flag."""
    match = re.match(_SHARD_RE, text)
    if match is None:
        raise UsageError(f"--shard {text!r}: want I/N, e.g. 0/4 for the first of four shards")
    return Shard(int(match.group(1)), int(match.group(2)))


def shard_of(item_id: str, count: int) -> int:
    """The shard (0 to count - 1) of an item id: stable across machines and Python versions."""
    digest = hashlib.blake2b(item_id.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def shard_output(output: Path, shard: Shard | None) -> Path:
    """``--output`` with ``{shard}`` replaced by the shard's index (as given, unpadded).

    Without a shard, a ``{shard}`` in the name is an error: it would name a file literally.
    """
    text = str(output)
    if PLACEHOLDER not in text:
        return output
    if shard is None:
        raise UsageError(f"--output {output}: {PLACEHOLDER} needs --shard I/N (or --processes)")
    return Path(text.replace(PLACEHOLDER, str(shard.index)))


# -- the `run --processes P` layout ----------------------------------------------------------

#: A shard output of ``run --processes P``: ``shard-I-of-P.parquet`` or ``shard-I-of-P.jsonl``.
_LAYOUT_RE = r"^shard-(\d+)-of-(\d+)\.(parquet|jsonl)$"


def layout_name(shard: Shard, suffix: str) -> str:
    """The name ``run --processes`` gives a shard's output: ``shard-I-of-P.parquet``."""
    return f"shard-{shard.index}-of-{shard.count}{suffix}"


def layout_shard(name: str) -> tuple[Shard, str] | None:
    """The shard and format a ``run --processes`` output name stands for, if it is one."""
    match = re.match(_LAYOUT_RE, name)
    if match is None or not 0 <= int(match.group(1)) < int(match.group(2)):
        return None
    return Shard(int(match.group(1)), int(match.group(2))), match.group(3)


def layout_folder(output: Path, output_format: str) -> Path:
    """Where ``run --processes`` puts the shard outputs of ``--output``: a Parquet output is
    itself the folder (one dataset); a JSONL one gets ``<output>.shards/`` (merged at the end)."""
    return output if output_format == "parquet" else Path(f"{output}.shards")
