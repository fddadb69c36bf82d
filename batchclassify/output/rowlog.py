"""What every output format shares: the scan report, "each id's latest row", whole writes and
the error for one that failed, metadata-column discovery and removing an output by its own names.

Both sinks (``sinks.py``, ``parquet_sink.py``) and the read-only readers (``reading.py``) use
these, so the rules (which row of an id wins, which names a sink may delete) are said once.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..errors import OutputError, OutputWriteError
from ..models import ROW_FIELDS
from .idindex import IdIndex


@dataclass
class ScanReport:
    """What a sink's ``scan`` found in the output an earlier run left."""

    rows: int = 0
    """Rows read back (every row, superseded ones included)."""
    unparsable_lines: int = 0
    """Lines that are not rows (compaction drops them)."""
    repaired_bytes: int = 0
    """Bytes of a row torn by a kill, cut off the end of the output."""
    metadata_columns: list[str] = field(default_factory=list)
    """Columns beyond the row fields (manifest metadata), in the order first seen."""


class ScanTarget(Protocol):
    """What a sink's ``scan`` hands the rows it reads back to (``resume.PriorState``)."""

    def expect(self, rows: int) -> None:
        """About ``rows`` rows will follow (an estimate): make room for them at once."""
        ...

    def record(self, ids: list[str], ok: list[bool]) -> None:
        """The next rows, in file order: each one's id and whether its status is ``ok``."""
        ...


def count_ids(ids: Iterable[str]) -> IdIndex:
    """How many rows each id has (capped at 255): the first pass of "keep the latest row"."""
    counts = IdIndex()
    for item_id in ids:
        counts.set(item_id, min(counts.get(item_id) + 1, 255))
    return counts


def is_latest(counts: IdIndex, item_id: str) -> bool:
    """The second pass: call once per row, in the order ``count_ids`` saw them; true for the
    last row of each id. A row ``count_ids`` never saw (appended by a running job meanwhile)
    is the latest of its id."""
    left = counts.get(item_id) - 1
    counts.set(item_id, max(left, 0))
    return left <= 0


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_failed(path: Path, exc: OSError) -> OutputWriteError:
    """The one-line error for a write that failed mid-job (disk full, file size limit)."""
    # pyarrow's OSError text is long ("Error writing bytes to file. Detail: ..."): use errno.
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return OutputWriteError(
        f"cannot write {path}: {reason}; the rows written so far are kept: free some space "
        "(or fix the cause) and rerun the same command to resume"
    )


def add_metadata_columns(columns: list[str], names: Iterable[str]) -> None:
    """Append to ``columns`` each name in ``names`` that is neither a row field nor in it."""
    for name in names:
        if name not in ROW_FIELDS and name not in columns:
            columns.append(name)


def remove_output(path: Path, own_names: frozenset[str] | None) -> None:
    """Delete an output for ``--overwrite``: a file output (``own_names`` is ``None``), or the
    sink's own names in a folder output and then the folder if that left it empty.

    Only what the sink writes is deleted; ``outputs.check_overwrite`` has refused anything
    else before this runs, so the refusals here are a second guard.
    """
    if own_names is None:
        if path.is_dir():
            raise OutputError(f"{path} is a folder, not a JSONL output; not removed")
        if os.path.lexists(path):
            path.unlink()
        return
    if not path.is_dir():
        if os.path.lexists(path):
            raise OutputError(f"{path} is not a Parquet output folder; not removed")
        return
    for name in own_names:
        (path / name).unlink()
    try:
        path.rmdir()
    except OSError:
        raise OutputError(
            f"{path} holds files batchclassify did not write; its own part and journal "
            "files were removed, the rest left in place"
        ) from None
