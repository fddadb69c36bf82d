"""The names of the files batchclassify keeps beside an output: its settings, progress and lock.

Beside ``OUTPUT`` they are ``OUTPUT.job.json``, ``OUTPUT.progress.json`` and ``OUTPUT.lock``.
A Parquet shard output of ``run --processes`` (``results.parquet/shard-I-of-P.parquet``) sits
inside a folder that is one Parquet dataset, so its files start with ``_``
(``_shard-0-of-4.parquet.job.json``): pyarrow, pandas and DuckDB skip names starting with ``_``
or ``.`` when they read the folder, and a ``**/*.parquet`` glob never matches them. Earlier
versions named them without the ``_`` (``legacy``): readers fall back to those names, and a
job renames them (``outputs.adopt_legacy_files``) before it writes. ``find_shards`` finds
the shard outputs of a ``run --processes`` job from its ``--output``.

A push of ``OUTPUT`` to a project keeps two files beside it, named for its target (the
project, and a tag of the API for one other than Roboflow's): its ledger
``OUTPUT.push-TARGET.jsonl`` and, while it runs and after, its progress file
``OUTPUT.push-TARGET.progress.json`` (``push_file``; ``push_progress_files`` finds them).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from ..shards import layout_folder, layout_shard

Kind = Literal[".job.json", ".progress.json", ".lock"]
SETTINGS: Kind = ".job.json"
PROGRESS: Kind = ".progress.json"
LOCK: Kind = ".lock"
KINDS: tuple[Kind, ...] = (SETTINGS, PROGRESS, LOCK)
#: The settings' key of the folder ``run`` started in: a row's relative ``path`` is relative to
#: it (``reading.run_folder``). Added later: an older settings file lacks it.
WORKDIR = "workdir"
#: Starts the names of a dataset shard's own files: Parquet readers skip them.
HIDDEN_PREFIX = "_"

PushKind = Literal[".jsonl", ".progress.json"]
PUSH_LEDGER: PushKind = ".jsonl"
PUSH_PROGRESS: PushKind = ".progress.json"
_PUSH = ".push-"


def in_dataset(output: Path) -> bool:
    """Is ``output`` a Parquet shard output of ``run --processes`` (one part of a dataset)?"""
    found = layout_shard(output.name)
    return found is not None and found[1] == "parquet"


def sidecar(output: Path, kind: Kind) -> Path:
    """The file of this kind that belongs to ``output`` (which need not exist yet)."""
    if in_dataset(output):
        return output.with_name(HIDDEN_PREFIX + output.name + kind)
    # Not with_name(): an output such as "." has no name (the job refuses it before writing).
    return Path(f"{output}{kind}")


def settings_path(output: Path) -> Path:
    """``<output>.job.json``, where a job writes its settings (only ``resume.py`` and
    ``merge`` write it); readers take ``existing(output, SETTINGS)``."""
    return sidecar(output, SETTINGS)


def lock_path(output: Path) -> Path:
    """``<output>.lock``: held by the one job writing the output (``outputs.hold_output``)."""
    return sidecar(output, LOCK)


def legacy(output: Path, kind: Kind) -> Path | None:
    """The name an earlier version gave this file, where it differs from today's."""
    return Path(f"{output}{kind}") if in_dataset(output) else None


def existing(output: Path, kind: Kind) -> Path:
    """The file to read: today's name, or the earlier version's if only that one exists."""
    current = sidecar(output, kind)
    old = legacy(output, kind)
    if old is not None and not current.exists() and old.exists():
        return old
    return current


# -- a push's files ---------------------------------------------------------------------------


def push_file(output: Path, target: str, kind: PushKind) -> Path:
    """The ledger or progress file of a push of ``output`` to ``target`` (the project, and a
    tag of the API: ``commands/push/ledger.push_target``)."""
    return output.parent / f"{_name(output)}{_PUSH}{target}{kind}"


def push_progress_files(output: Path) -> list[Path]:
    """The progress files of every push of ``output`` (any project, any API), by name."""
    prefix = _name(output) + _PUSH
    try:
        names = os.listdir(output.parent)
    except OSError:
        return []
    return sorted(
        output.parent / name
        for name in names
        if name.startswith(prefix) and name.endswith(PUSH_PROGRESS)
    )


def _name(output: Path) -> str:
    # "." has no name: its folder's.
    return output.name or output.resolve().name


# -- the shards of a `run --processes` job --------------------------------------------------

_SIDECAR_RE = "|".join(re.escape(kind) for kind in KINDS)
#: A name ``run --processes`` writes in its folder: a shard output, or one of its own files.
_LAYOUT_FILE_RE = rf"^_?(shard-\d+-of-\d+\.(?:parquet|jsonl))(?:{_SIDECAR_RE})?$"


def find_shards(output: Path) -> list[Path]:
    """The shard outputs of the ``run --processes`` job whose ``--output`` is ``output``, by
    index (started or not); empty if there is none. Shards of another split (another P) in
    the same folder are left out: the split written most recently is the job."""
    for output_format in ("parquet", "jsonl"):
        folder = layout_folder(output, output_format)
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        splits: dict[int, float] = {}
        for name in names:
            match = re.match(_LAYOUT_FILE_RE, name)
            found = layout_shard(match.group(1)) if match else None
            if found is not None and found[1] == output_format:
                count = found[0].count
                splits[count] = max(splits.get(count, 0.0), _mtime(folder / name))
        if splits:
            count = max(splits, key=lambda p: splits[p])
            suffix = f".{output_format}"
            return [folder / f"shard-{i}-of-{count}{suffix}" for i in range(count)]
    return []


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
