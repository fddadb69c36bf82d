"""Count a job's items ahead of the walk, cheaply, so the progress bar can show % and ETA.

The producer's walk is lazy: it knows only the items found so far. This module counts the
same items by the same rules (``sources`` is the reference), without building them:

- a folder: the same depth-first walk over ``os.scandir`` (hidden names skipped, the same
  extensions, symlinks followed, a symlinked folder that loops back not entered again; a
  folder that cannot be listed and an entry with an image's name that is not a file count as
  one item each, as they become one row each); nothing is sorted or kept but the pending
  subfolder names of the folders on the current path;
- a ``.txt`` manifest: its lines that are neither blank nor ``#`` comments;
- a ``.csv`` manifest: its records after the header, blank lines aside;
- a ``.jsonl`` manifest: its non-blank lines;
- a ``.parquet`` manifest: the row count in its footer (no row is read);
- stdin: unknown (``None``): it can be read only once, by the job;
- an object-storage prefix: a listing of its own, page by page (``objectstore``).

Counting is blocking; the runner runs it in a worker thread beside the job, never before it.
``stop`` (a ``threading.Event``) ends it early: it is checked for every folder and every few
thousand lines. Any error makes the count unknown rather than wrong: the job itself reports
unreadable sources.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence

from ..errors import BatchClassifyError
from ..shards import Shard
from .sources import STDIN, is_export_folder, source_kind

#: Lines read between two looks at the stop flag.
_CHECK_EVERY = 4096


class Stopped(Exception):
    """The count was stopped before it finished."""


def count_items(
    sources: Sequence[str],
    *,
    extensions: frozenset[str],
    stop: threading.Event | None = None,
) -> int | None:
    """How many items ``iter_items(sources, extensions=extensions)`` yields, or ``None`` when
    that cannot be known without reading it (stdin), a source cannot be read, or ``stop`` was
    set. Skipped items (already done, duplicates) are included: they are the job's to skip."""
    stop = stop or threading.Event()
    wanted = frozenset(ext.lower().lstrip(".") for ext in extensions)
    total = 0
    try:
        for source in sources:
            if source == STDIN:
                return None
            count = _count_source(source, wanted, stop)
            if count is None:
                return None
            total += count
    # A count is a hint: whatever stops it leaves the total unknown, never the job stopped.
    # (pyarrow's errors are ValueError, OSError or TypeError subclasses.)
    except (OSError, ValueError, TypeError, ImportError, BatchClassifyError, Stopped):
        return None
    return total


def expected_share(total: int, shard: Shard | None) -> int:
    """A shard's expected part of the sources' ``total``: the count has no ids to hash, and
    the hash spreads ids evenly, so ``total / N`` (rounded up). The progress total becomes
    exact when the walk ends, as it does for any job."""
    if shard is None:
        return total
    return -(-total // shard.count)


def _count_source(source: str, wanted: frozenset[str], stop: threading.Event) -> int | None:
    kind = source_kind(source)
    if kind == "object":
        from .objectstore import count_objects

        return count_objects(source, wanted, stop)
    if kind == "dir":
        return count_folder(source, wanted, stop)
    if kind == "parquet":
        return _count_parquet(source)
    if kind == "csv":
        return _count_csv(source, stop)
    if kind == "jsonl":
        return _count_lines(source, stop, comments=False)
    return _count_lines(source, stop, comments=True)


# -- folders -------------------------------------------------------------------------------


def is_candidate(name: str, extensions: frozenset[str]) -> bool:
    """Whether a folder entry named ``name`` is an item when it is a file: not hidden, and its
    extension (lower-cased, without the dot) is one of ``extensions``. The rule of
    ``sources._folder_files``, kept beside the count that must agree with it."""
    if name[0] == ".":
        return False
    dot = name.rfind(".")
    return dot >= 0 and name[dot + 1 :].lower() in extensions


def count_folder(top: str, extensions: frozenset[str], stop: threading.Event) -> int:
    """The items of a folder walk: matching entries, plus one per folder that cannot be read."""
    stat = os.stat(top)
    key = (stat.st_dev, stat.st_ino)
    found, subfolders = _count_entries(top, extensions, stop)
    stack: list[tuple[tuple[int, int], str, Iterator[str]]] = [(key, top, iter(subfolders))]
    on_path = {key}
    while stack:
        if stop.is_set():
            raise Stopped
        key, path, pending = stack[-1]
        name = next(pending, None)
        if name is None:
            stack.pop()
            on_path.discard(key)
            continue
        child = os.path.join(path, name)
        try:
            stat = os.stat(child)
        except OSError:
            found += 1  # an unreadable subfolder is one problem row
            continue
        key = (stat.st_dev, stat.st_ino)
        if key in on_path or is_export_folder(child):
            continue  # a symlink loop, an export's DEST: the walk does not enter it either
        on_path.add(key)
        count, subfolders = _count_entries(child, extensions, stop)
        found += count
        stack.append((key, child, iter(subfolders)))
    return found


def _count_entries(
    path: str, extensions: frozenset[str], stop: threading.Event
) -> tuple[int, list[str]]:
    """One folder's matching entries, and its subfolder names (one row if unreadable)."""
    count = 0
    subfolders: list[str] = []
    try:
        with os.scandir(path) as entries:
            for number, entry in enumerate(entries):
                if number % _CHECK_EVERY == 0 and stop.is_set():
                    raise Stopped  # a folder of a million files takes a while
                name = entry.name
                if name[0] == ".":
                    continue
                try:
                    if entry.is_dir():
                        subfolders.append(name)
                        continue
                except OSError:
                    pass  # the walk makes a problem row of it, if its name matches
                if is_candidate(name, extensions):
                    count += 1
    except OSError:
        return 1, []
    return count, subfolders


# -- manifests -----------------------------------------------------------------------------


def _count_lines(source: str, stop: threading.Event, *, comments: bool) -> int:
    """Non-blank lines (and, for .txt, not ``#`` comments), split as the readers split them:
    ``.txt`` in text mode with universal newlines, ``.jsonl`` in binary on ``\\n``."""
    count = 0
    if comments:
        from .manifests import open_text

        with open_text(source, newline=None) as handle:
            for number, line in enumerate(handle):
                value = line.strip()
                if value and value[0] != "#":
                    count += 1
                if number % _CHECK_EVERY == 0 and stop.is_set():
                    raise Stopped
        return count
    with open(source, "rb") as raw:
        for number, data in enumerate(raw):
            if data.strip():
                count += 1
            if number % _CHECK_EVERY == 0 and stop.is_set():
                raise Stopped
    return count


def _count_csv(source: str, stop: threading.Event) -> int | None:
    """Records after the header, blank ones aside; a malformed record is one (bad) row.
    ``None`` for a header that is not CSV (the job refuses that manifest)."""
    import csv  # here: a job without a CSV manifest never loads it

    from .manifests import open_text

    count = 0
    with open_text(source, newline="") as handle:
        reader = csv.reader(handle, strict=True)
        try:
            next(reader, None)
        except csv.Error:
            return None
        number = 0
        while True:
            number += 1
            if number % _CHECK_EVERY == 0 and stop.is_set():
                raise Stopped
            try:
                row = next(reader)
            except StopIteration:
                return count
            except csv.Error:
                count += 1
                continue
            if row:
                count += 1


def _count_parquet(source: str) -> int:
    import pyarrow.parquet as pq

    with open(source, "rb") as handle:
        return int(pq.ParquetFile(handle).metadata.num_rows)
