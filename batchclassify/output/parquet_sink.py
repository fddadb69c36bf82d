"""The Parquet sink: a dataset folder of part files, each complete, plus a journal for safety.

A Parquet file is unreadable until its footer is written, so one growing file cannot survive
kill -9. The output is a folder instead::

    results.parquet/
      part-000000.parquet       finished parts: written as .part-N.parquet.tmp, then renamed
      part-000001.parquet
      _journal-000002.jsonl     rows of the part being built, flushed every half second

Rows go to the current part's writer (in row groups) and to its journal. When the part is
big or old enough, the writer is closed, fsynced and renamed into place, and the journal is
deleted. After a kill, the journal of a part that was never renamed is turned into that part
on the next run; a stale journal beside a finished part is dropped. Readers (pyarrow, pandas,
polars, DuckDB) skip names starting with ``_`` or ``.``, so they only ever see whole parts.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import orjson

from ..errors import OutputError, UsageError
from ..models import CORE_ROW_FIELDS, ROW_FIELDS, check_row
from .rowlog import (
    ScanReport,
    ScanTarget,
    add_metadata_columns,
    count_ids,
    is_latest,
    remove_output,
    write_all,
    write_failed,
)

PART_RE = re.compile(r"^part-(\d{6})\.parquet$")
JOURNAL_RE = re.compile(r"^_journal-(\d{6})\.jsonl$")
_TMP_RE = re.compile(r"^\.part-(\d{6})\.parquet\.tmp$")
#: The only names this sink writes in its folder; nothing else there is ever touched.
_OWN_NAMES = (PART_RE, JOURNAL_RE, _TMP_RE)


def load_pyarrow() -> Any:
    """pyarrow with its parquet module, or a `UsageError` saying how to install it."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise UsageError(
            "Parquet output needs pyarrow: pip install 'batchclassify[parquet]', "
            "or write .jsonl instead"
        ) from None
    return pyarrow


def core_schema() -> Any:
    pa = load_pyarrow()
    prediction = pa.struct([("class", pa.string()), ("confidence", pa.float64())])
    types = {
        "id": pa.string(),
        "path": pa.string(),
        "url": pa.string(),
        "status": pa.string(),
        "top": pa.string(),
        "confidence": pa.float64(),
        "predicted_classes": pa.list_(pa.string()),
        "predictions": pa.list_(prediction),
        "multilabel": pa.bool_(),
        "image_width": pa.int64(),
        "image_height": pa.int64(),
        "inference_id": pa.string(),
        "attempts": pa.int64(),
        "http_status": pa.int64(),
        "error_type": pa.string(),  # an ErrorType value, kept a string for older outputs
        "error": pa.string(),
        "elapsed_ms": pa.float64(),
        "cached": pa.bool_(),
        "cached_from": pa.string(),
        "server_ms": pa.float64(),
        "cold_start": pa.bool_(),
        "credits": pa.float64(),
    }
    assert tuple(types) == ROW_FIELDS
    return pa.schema(list(types.items()))


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _reports_write_errors(
    method: Callable[Concatenate[ParquetSink, _P], _R],
) -> Callable[Concatenate[ParquetSink, _P], _R]:
    """A failed write mid-job (disk full) becomes one line naming the output, not a traceback."""

    def wrapper(self: ParquetSink, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except OSError as exc:
            raise write_failed(self.path, exc) from None

    wrapper.__doc__ = method.__doc__
    return wrapper


def metadata_text(value: Any) -> str | None:
    """Metadata columns are strings in Parquet, so parts always agree on their types."""
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


class ParquetSink:
    """Writes rows to a Parquet dataset folder; see the module docstring for the layout."""

    def __init__(
        self,
        path: Path,
        *,
        rows_per_part: int = 100_000,
        seconds_per_part: float = 600.0,
        rows_per_group: int = 5_000,
    ) -> None:
        self.path = path
        self._rows_per_part = rows_per_part
        self._seconds_per_part = seconds_per_part
        self._rows_per_group = rows_per_group
        self._meta_columns: list[str] = []
        self._part = 0
        self._part_rows = 0
        self._part_started = 0.0
        self._group: list[dict[str, Any]] = []
        self._journal: list[bytes] = []
        self._journal_fd: int | None = None
        self._writer: Any = None
        self._writer_columns: list[str] = []

    # -- files ----------------------------------------------------------------------------

    def _part_path(self, number: int) -> Path:
        return self.path / f"part-{number:06d}.parquet"

    def _tmp_path(self, number: int) -> Path:
        return self.path / f".part-{number:06d}.parquet.tmp"

    def _journal_path(self, number: int) -> Path:
        return self.path / f"_journal-{number:06d}.jsonl"

    def _numbers(self, pattern: re.Pattern[str]) -> list[int]:
        if not self.path.is_dir():
            return []
        found = (pattern.match(name) for name in os.listdir(self.path))
        return sorted(int(match.group(1)) for match in found if match)

    def parts(self) -> list[Path]:
        return [self._part_path(n) for n in self._numbers(PART_RE)]

    # -- reading what an earlier run left -------------------------------------------------

    def scan(self, target: ScanTarget) -> ScanReport:
        if self.path.exists() and not self.path.is_dir():
            raise OutputError(
                f"{self.path} is a file, but Parquet output is a folder of part files; "
                "move the file away or choose another --output"
            )
        self._recover()
        report = ScanReport(metadata_columns=self._meta_columns)
        pq = load_pyarrow().parquet
        for part in self.parts():
            try:
                source = pq.ParquetFile(part)
            except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
                raise OutputError(
                    f"{part} is not a readable Parquet file ({exc}); move it away to resume"
                ) from None
            with source:
                names = source.schema_arrow.names
                if not set(CORE_ROW_FIELDS) <= set(names):
                    raise OutputError(
                        f"{part} is not a part batchclassify wrote (it lacks the row columns); "
                        "move it away to resume"
                    )
                add_metadata_columns(self._meta_columns, names)
                target.expect(report.rows + source.metadata.num_rows)
                # "multilabel" too: an ok row without it holds no answer (``is_answer``), one
                # an older batchclassify wrote from a failed image's cache entry: failed.
                columns = ["id", "status", "multilabel"]
                for batch in source.iter_batches(columns=columns, batch_size=65_536):
                    ids = batch.column(0).to_pylist()
                    report.rows += len(ids)
                    statuses, kinds = batch.column(1).to_pylist(), batch.column(2).to_pylist()
                    target.record(
                        ids,
                        [s == "ok" and k is not None for s, k in zip(statuses, kinds, strict=True)],
                    )
        return report

    def _recover(self) -> None:
        """Turn journals of parts that were never finished into parts; drop leftovers.

        Only this sink's own names are touched: ``.part-N.parquet.tmp`` (a part being
        written when the process died) and journals that hold nothing but rows.
        """
        if not self.path.is_dir():
            return
        try:
            for number in self._numbers(_TMP_RE):
                self._tmp_path(number).unlink()
            finished = set(self._numbers(PART_RE))
            for number in self._numbers(JOURNAL_RE):
                journal = self._journal_path(number)
                rows = list(self._journal_rows(journal))
                if number not in finished and rows:
                    self._write_part(number, rows)
                journal.unlink()
        except OSError as exc:  # before any request: a usage-time error (exit 2), not exit 3
            raise OutputError(
                f"cannot recover {self.path} after the last run: {exc.strerror or exc}; "
                "free some space (or fix the cause) and rerun"
            ) from None

    def _journal_rows(self, journal: Path) -> Iterator[dict[str, Any]]:
        with open(journal, "rb") as handle:
            for line in handle:
                if not line.endswith(b"\n"):
                    break  # torn by a kill mid-write: that row is re-requested on resume
                try:
                    row = orjson.loads(line)
                except orjson.JSONDecodeError:
                    row = None
                if not (isinstance(row, dict) and isinstance(row.get("id"), str)):
                    # A whole line that is not a row: not a journal this sink wrote, so it is
                    # not deleted (recovering it would).
                    raise OutputError(
                        f"{journal} holds lines that are not batchclassify rows; move it away "
                        "to resume"
                    )
                yield row

    # -- appending ------------------------------------------------------------------------

    def open(self) -> None:
        load_pyarrow()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            numbers = self._numbers(PART_RE) + self._numbers(JOURNAL_RE)
            self._part = max(numbers) + 1 if numbers else 0
            self._start_part()
        except OSError as exc:
            raise OutputError(f"cannot write in {self.path}: {exc.strerror}") from None

    def _start_part(self) -> None:
        self._part_rows = 0
        self._part_started = time.monotonic()
        self._journal_fd = os.open(
            self._journal_path(self._part), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
        )

    @_reports_write_errors
    def write(self, row: dict[str, Any]) -> None:
        check_row(row)
        add_metadata_columns(self._meta_columns, row)
        self._journal.append(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
        self._group.append(row)
        self._part_rows += 1
        if len(self._group) >= self._rows_per_group:
            self._write_group()

    @_reports_write_errors
    def flush(self) -> None:
        self._flush_journal()
        if self._part_rows >= self._rows_per_part or (
            self._part_rows and time.monotonic() - self._part_started >= self._seconds_per_part
        ):
            self._finish_part()
            self._start_part()

    @_reports_write_errors
    def close(self) -> None:
        if self._journal_fd is None:
            return
        self.flush()
        if self._part_rows:
            self._finish_part()
        else:
            self._close_journal(delete=True)
        self._unify_schemas()

    # -- parts ----------------------------------------------------------------------------

    def _schema(self, columns: list[str]) -> Any:
        pa = load_pyarrow()
        schema = core_schema()
        for name in columns:
            schema = schema.append(pa.field(name, pa.string()))
        return schema

    def _table(self, rows: list[dict[str, Any]], columns: list[str]) -> Any:
        pa = load_pyarrow()
        data: dict[str, list[Any]] = {name: [row.get(name) for row in rows] for name in ROW_FIELDS}
        for name in columns:
            data[name] = [metadata_text(row.get(name)) for row in rows]
        return pa.Table.from_pydict(data, schema=self._schema(columns))

    def _write_group(self) -> None:
        if not self._group:
            return
        pq = load_pyarrow().parquet
        if self._writer is not None and self._writer_columns != self._meta_columns:
            # A new metadata column appeared: a part's schema is fixed, so start another one,
            # carrying these rows (and their journal lines) over to it.
            carry, self._group = self._group, []
            self._finish_part()
            self._start_part()
            self._group = carry
            self._part_rows = len(carry)
            self._journal.extend(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in carry)
        if self._writer is None:
            self._writer_columns = list(self._meta_columns)
            self._writer = pq.ParquetWriter(
                self._tmp_path(self._part), self._schema(self._writer_columns)
            )
        self._writer.write_table(self._table(self._group, self._writer_columns))
        self._group.clear()

    def _finish_part(self) -> None:
        """Close the current part, fsync it, rename it into place, drop its journal."""
        self._write_group()
        self._flush_journal()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            tmp = self._tmp_path(self._part)
            _fsync(tmp)
            os.replace(tmp, self._part_path(self._part))
            _fsync_dir(self.path)
        self._close_journal(delete=True)
        self._part += 1
        self._part_rows = 0

    def _flush_journal(self) -> None:
        if not self._journal or self._journal_fd is None:
            return
        data = b"".join(self._journal)
        self._journal.clear()
        write_all(self._journal_fd, data)

    def _close_journal(self, *, delete: bool) -> None:
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None
        if delete:
            self._journal_path(self._part).unlink(missing_ok=True)

    def _write_part(self, number: int, rows: list[dict[str, Any]]) -> None:
        pq = load_pyarrow().parquet
        for row in rows:
            add_metadata_columns(self._meta_columns, row)
        columns = list(self._meta_columns)
        tmp = self._tmp_path(number)
        pq.write_table(self._table(rows, columns), tmp)
        _fsync(tmp)
        os.replace(tmp, self._part_path(number))
        _fsync_dir(self.path)

    def _rewrite_part(self, part: Path, keep: Any, columns: list[str]) -> None:
        """Rewrite one part with the rows where ``keep`` is true, in the full schema."""
        pa = load_pyarrow()
        pq = pa.parquet
        table = pq.read_table(part)
        if keep is not None:
            table = table.filter(keep)
        schema = self._schema(columns)
        for name in [*ROW_FIELDS, *columns]:  # a part from before a column existed: nulls
            if name not in table.column_names:
                kind = schema.field(name).type
                table = table.append_column(name, pa.nulls(table.num_rows, kind))
        table = table.select(list(ROW_FIELDS) + columns).cast(self._schema(columns))
        tmp = part.with_name(f".{part.name}.tmp")
        pq.write_table(table, tmp)
        _fsync(tmp)
        os.replace(tmp, part)
        _fsync_dir(self.path)

    def _unify_schemas(self) -> None:
        """Give every part the same columns, so readers that take the first part's schema
        (pyarrow datasets, DuckDB globs) see every metadata column."""
        pq = load_pyarrow().parquet
        parts = self.parts()
        names = {part: pq.read_schema(part).names for part in parts}
        columns = list(self._meta_columns)
        for part_names in names.values():
            add_metadata_columns(columns, part_names)
        wanted = list(ROW_FIELDS) + columns
        for part in parts:
            if names[part] != wanted:
                self._rewrite_part(part, None, columns)

    # -- rewriting ------------------------------------------------------------------------

    @_reports_write_errors
    def compact(self) -> int:
        """Keep only the latest row of each id (later parts win), part by part."""
        pa = load_pyarrow()
        parts = self.parts()
        remaining = count_ids(item_id for part in parts for item_id in _part_ids(part))
        dropped = 0
        for part in parts:
            keep = [is_latest(remaining, item_id) for item_id in _part_ids(part)]
            if not all(keep):
                dropped += keep.count(False)
                self._rewrite_part(part, pa.array(keep), list(self._meta_columns))
        return dropped

    def own_names(self) -> frozenset[str] | None:
        if not self.path.is_dir():
            return frozenset()
        return frozenset(
            name for name in os.listdir(self.path) if any(p.match(name) for p in _OWN_NAMES)
        )

    def remove(self) -> None:
        """Delete this sink's own files by name, then the folder if that left it empty."""
        remove_output(self.path, self.own_names())


def _part_ids(part: Path) -> list[str]:
    ids: list[str] = load_pyarrow().parquet.read_table(part, columns=["id"]).column(0).to_pylist()
    return ids


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Make a rename durable across power loss, not only process death."""
    # Some filesystems refuse fsync on a directory; the rename happened all the same.
    with contextlib.suppress(OSError):
        _fsync(path)
