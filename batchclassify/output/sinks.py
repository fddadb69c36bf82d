"""Where rows go: the output file, written only by the sink, crash-safe and resumable.

A sink appends rows as they arrive and makes them durable against the process dying at least
every ``flush_interval`` seconds. It can also read back what an earlier run wrote (``scan``),
so the job resumes, and rewrite itself so that each id keeps only its latest row (``compact``).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from io import FileIO
from pathlib import Path
from typing import Any, Protocol

import orjson

from ..errors import OutputError, OutputWriteError
from ..models import check_row, row_is_ok
from .idindex import IdIndex
from .rowlog import (
    ScanReport,
    ScanTarget,
    count_ids,
    is_latest,
    remove_output,
    write_all,
    write_failed,
)

#: A kill tears at most one row; a longer unterminated tail is not a torn row of ours.
MAX_TORN_TAIL = 1 << 20


class Sink(Protocol):
    """What the runner needs from an output format."""

    path: Path

    def scan(self, target: ScanTarget) -> ScanReport:
        """Hand ``target`` every row already recorded, oldest first, after repairing what a
        killed run left; return what was found."""
        ...

    def open(self) -> None: ...

    def write(self, row: dict[str, Any]) -> None:
        """Append ``row``; a row that contradicts itself is refused (``models.check_row``):
        every row of every output passes here, whoever made it."""
        ...

    def flush(self) -> None:
        """Make every row written so far survive the death of this process."""
        ...

    def close(self) -> None: ...

    def compact(self) -> int:
        """Drop superseded rows, so each id keeps its latest row. Returns rows dropped."""
        ...

    def own_names(self) -> frozenset[str] | None:
        """For a folder output, the names in it this sink writes (``None`` for a file)."""
        ...

    def remove(self) -> None:
        """Delete the output, for ``--overwrite``: only files this sink writes, by name."""
        ...


def _dumps(row: dict[str, Any]) -> bytes:
    return orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY)


class JsonlSink:
    """One JSON object per line, appended; a torn last line is cut off before appending."""

    def __init__(self, path: Path, *, buffer_bytes: int = 1 << 18) -> None:
        self.path = path
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._buffer_limit = buffer_bytes
        self._fd: int | None = None

    # -- reading what an earlier run left -------------------------------------------------

    def scan(self, target: ScanTarget) -> ScanReport:
        report = ScanReport()
        if not self.path.exists():
            return report
        try:
            report.repaired_bytes = self._repair_tail()
        except OSError as exc:  # read-only file, say: before any request, so exit 2
            raise OutputError(f"cannot resume {self.path}: {exc.strerror or exc}") from None
        with open(self.path, "rb", buffering=0) as handle:
            _scan_lines(handle, os.fstat(handle.fileno()).st_size, target, report)
        return report

    def _repair_tail(self) -> int:
        """Cut a partial last line left by a process killed mid-write.

        Only what a torn write of ours can be is cut: an unterminated tail that starts a JSON
        object and is at most ``MAX_TORN_TAIL`` bytes. Anything else is someone's data.
        Returns the number of bytes cut.
        """
        with open(self.path, "rb+") as handle:
            end = handle.seek(0, os.SEEK_END)
            start = max(0, end - MAX_TORN_TAIL - 1)
            handle.seek(start)
            data = handle.read(end - start)
            newline = data.rfind(b"\n")
            if newline == len(data) - 1 or not data:
                return 0
            too_long = newline == -1 and start > 0
            if too_long or not data[newline + 1 :].startswith(b"{"):
                raise OutputError(
                    f"{self.path} ends with a line batchclassify did not write (no newline "
                    "after it, not a row torn by a kill); move the file away, or end that line "
                    "with a newline, to resume"
                )
            cut = start + newline + 1
            handle.truncate(cut)
            return end - cut

    # -- appending ------------------------------------------------------------------------

    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror}") from None

    def write(self, row: dict[str, Any]) -> None:
        check_row(row)
        data = _dumps(row)
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered >= self._buffer_limit:
            self.flush()

    def flush(self) -> None:
        if not self._buffer or self._fd is None:
            return
        data = b"".join(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        try:
            # One write of whole lines: a kill can tear at most the tail, which scan repairs.
            write_all(self._fd, data)
        except OSError as exc:
            raise write_failed(self.path, exc) from None

    def close(self) -> None:
        if self._fd is None:
            return
        try:
            self.flush()
            os.fsync(self._fd)
        except OSError as exc:
            raise write_failed(self.path, exc) from None
        finally:
            os.close(self._fd)
            self._fd = None

    # -- rewriting ------------------------------------------------------------------------

    def compact(self) -> int:
        """Rewrite the file keeping, for every id, only its last row (and no unparsable line).

        Written to a temporary file, fsynced, then renamed over the output: a kill during
        compaction leaves the previous file whole, and the next run compacts again.
        """
        if not self.path.exists():
            return 0
        with open(self.path, "rb") as handle:
            remaining = count_ids(i for i in map(_line_id, handle) if i is not None)
        try:
            return self._rewrite_latest(remaining)
        except OSError as exc:
            raise OutputWriteError(
                f"cannot compact {self.path}: {exc.strerror or exc}; the file is whole and "
                "readers take each id's last row: free some space and rerun to compact it"
            ) from None

    def _rewrite_latest(self, remaining: IdIndex) -> int:
        # A temporary name no one else uses (never a fixed name that may be someone's file),
        # with the output's permissions, renamed over the output only when complete; over
        # the file a symlink points to, so the user's link stays a link.
        target_path = Path(os.path.realpath(self.path))
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target_path.name}.", suffix=".compact.tmp", dir=target_path.parent
        )
        tmp = Path(tmp_name)
        dropped = 0
        try:
            with open(self.path, "rb") as source, os.fdopen(fd, "wb") as target:
                os.fchmod(target.fileno(), os.fstat(source.fileno()).st_mode & 0o7777)
                for line in source:
                    item_id = _line_id(line)
                    if item_id is not None and is_latest(remaining, item_id):
                        target.write(line)
                    else:
                        dropped += 1
                target.flush()
                os.fsync(target.fileno())
            if dropped:
                os.replace(tmp, target_path)
        finally:
            tmp.unlink(missing_ok=True)
        return dropped

    def own_names(self) -> frozenset[str] | None:
        return None

    def remove(self) -> None:
        remove_output(self.path, self.own_names())


#: After each newline: the head of a row as ``JsonlSink`` writes them (``_dumps`` of a row
#: made from ``ROW_FIELDS``: id, path, url and status first), the id and the status JSON
#: strings without escapes, path and url strings or null; or else nothing. So one ``findall``
#: gives a tuple per line: (id, status, '"') for a row, three empty values for any other line.
_ROW_HEAD = re.compile(
    # Possessive (*+): a string's characters are never given back, nothing to backtrack.
    # "\1": the path is most often the id itself, compared at once rather than scanned.
    rb'\n(?:\{"id":"([^"\\\x00-\x1f]*+)","path":(?:"\1"|null|"[^"\\\x00-\x1f]*+"),'
    rb'"url":(?:null|"[^"\\\x00-\x1f]*+"),"status":"([^"\\\x00-\x1f]*+)(")'
    # ...and the line ends as a row does: a line cut short goes to the full parse.
    # (~0.1 s per million lines.)
    rb"[^\n]*\}(?=\n|\Z)|)"
)
_NOT_A_ROW = (b"", b"", b"")
#: What only a row marked ``ok`` with empty answer columns holds (``ok_row`` always writes a
#: list of predictions): one an older batchclassify wrote from a failed image's cache entry.
#: A chunk holding it is parsed in full, where such a row counts as failed
#: (``models.row_is_ok``): the pattern is only a pre-filter, the rule is that function.
_OK_WITHOUT_ANSWER = (
    b'"status":"ok","top":null,"confidence":null,"predicted_classes":null,"predictions":null'
)
#: Bytes read at a time by the scan (grown for a longer line).
_SCAN_CHUNK = 1 << 20


def _scan_lines(handle: FileIO, size: int, target: ScanTarget, report: ScanReport) -> None:
    """Read the rows of a JSONL output into ``target``, a chunk of whole lines at a time.

    A chunk in which every line starts with a row's head (``_ROW_HEAD``) and that holds no
    NUL byte (a block lost in a crash reads as zeros) has its ids and statuses taken by one
    regular-expression pass, with no JSON parse and no Python loop over lines; any other chunk
    is read line by line with ``orjson`` (a line that is not a row counted in
    ``unparsable_lines``). The file is read into one buffer whose byte 0 is the newline
    before the chunk's first line, so every line follows a newline and the one pattern finds
    them all.

    A line is taken as a row from its head and its closing brace: the rest of it is not
    parsed. A line cut short (no closing brace) is parsed in full, as before. This sink
    writes whole lines (one ``write`` each, under the output lock, a torn tail cut by
    ``_repair_tail``), so only a file changed by something else could hold a line that ends
    like a row yet is not one (a byte changed after the status; a cut line run into a whole
    one): taken here as its head's row, where a full parse would have dropped it and
    classified that image again.
    """
    buffer = bytearray(_SCAN_CHUNK + 1)
    buffer[0] = 10  # the newline "before" the file's first line
    filled = 1
    expected = False
    while True:
        got = handle.readinto(memoryview(buffer)[filled:])
        if not got:
            if filled > 1:  # an unterminated last line (scan repairs torn rows before)
                _scan_slowly(bytes(buffer[1:filled]), target, report)
            return
        filled += got
        last = buffer.rfind(b"\n", 1, filled)
        if last < 0:  # no line ends in the buffer: one line longer than it
            if filled == len(buffer):
                buffer.extend(bytes(len(buffer)))
            continue
        heads = _ROW_HEAD.findall(buffer, 0, last)  # one per line: [0, last) holds its "\n"s
        if not expected:  # room in the index for the whole file's rows, at this chunk's rate
            target.expect(size * len(heads) // last)
            expected = True
        ids: list[str] = []
        if (
            _NOT_A_ROW not in heads
            and buffer.find(0, 0, last) < 0
            and buffer.find(_OK_WITHOUT_ANSWER, 0, last) < 0
        ):
            with contextlib.suppress(UnicodeDecodeError):  # bytes orjson would refuse
                ids = b"\n".join([head[0] for head in heads]).decode("utf-8").split("\n")
        if len(ids) == len(heads):
            report.rows += len(ids)
            target.record(ids, [head[1] == b"ok" for head in heads])
        else:
            _scan_slowly(bytes(buffer[1:last]), target, report)
        # The rest (a partial line) moves to the front, after the newline that ends this chunk.
        rest = filled - last
        buffer[0:rest] = buffer[last:filled]
        filled = rest


def _scan_slowly(lines: bytes, target: ScanTarget, report: ScanReport) -> None:
    """Each line parsed in full: a row is an object with a string ``id`` and ``status``; an
    ``ok`` one without a real answer counts as failed (``models.row_is_ok``)."""
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    ids: list[str] = []
    oks: list[bool] = []
    bad = 0
    for line in lines.split(b"\n"):
        try:
            row = loads(line)
            item_id, status = row["id"], row["status"]
        except (decode_error, KeyError, TypeError):
            bad += 1
            continue
        if type(item_id) is str and type(status) is str:
            ids.append(item_id)
            oks.append(row_is_ok(row))
    report.rows += len(ids)
    report.unparsable_lines += bad
    if ids:
        target.record(ids, oks)


def _line_id(line: bytes) -> str | None:
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    item_id = row.get("id") if isinstance(row, dict) else None
    return item_id if isinstance(item_id, str) else None


def open_sink(path: Path, output_format: str) -> Sink:
    if output_format == "parquet":
        from .parquet_sink import ParquetSink

        return ParquetSink(path)
    return JsonlSink(path)
