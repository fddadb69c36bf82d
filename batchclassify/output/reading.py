"""Read an output back without changing it: for ``report``, ``export`` and ``status``.
The folder of a ``run --processes`` Parquet job reads as its shards' rows, one after another.

Works on a finished output, on one a job is writing right now, and on one left by a killed
job: nothing is repaired, renamed or locked here (the next ``run`` does that). A torn last
line or an unparsable line is skipped; a Parquet folder yields its finished parts, then the
journals of parts not finished yet.

``iter_latest_rows`` yields each id once, with its latest row, as the output will hold it
after the next compaction (a ``--retry-failed`` run appends a new row for an id before the
old one is dropped); ``read_results`` is that for callers of the library. ``image_file``
finds a row's image from any working directory. ``check_output`` refuses, saying what it
is, a file that is no batchclassify output (some other JSONL, a CSV, a Parquet file), which
would otherwise read as an output of 0 images.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import orjson

from ..errors import UsageError
from ..models import ROW_FIELDS
from ..names import as_text, id_file, object_scheme
from .parquet_sink import JOURNAL_RE, PART_RE, load_pyarrow, metadata_text
from .progressfile import read_progress
from .rowlog import count_ids, is_latest
from .sidecars import SETTINGS, WORKDIR, existing, find_shards


def read_settings(output: Path) -> dict[str, Any] | None:
    """The job's settings (``<output>.job.json``, or an earlier version's name if only that
    exists: ``sidecars.existing``), or ``None`` when the output has no readable one."""
    try:
        settings = orjson.loads(existing(output, SETTINGS).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return settings if isinstance(settings, dict) else None


def read_job_settings(output: Path) -> dict[str, Any] | None:
    """``read_settings``; for the folder of a ``run --processes`` Parquet job (which has no
    settings file of its own), its first shard's, without the shard."""
    settings = read_settings(output)
    if settings is None:
        for shard in _shard_outputs(output):
            settings = read_settings(shard)
            if settings is not None:
                return dict(settings, shard=None)
    return settings


def _shard_outputs(output: Path) -> list[Path]:
    """The shard outputs in a ``run --processes`` Parquet folder (none for any other output)."""
    if read_settings(output) is not None or not output.is_dir():
        return []
    return [path for path in find_shards(output) if path.is_dir()]


def _datasets(output: Path) -> list[Path]:
    """The Parquet outputs a folder stands for: its shards' (``--processes``), else itself."""
    return _shard_outputs(output) or [output]


def output_kind(output: Path) -> Literal["jsonl", "parquet"]:
    """``parquet`` for a folder of part files, ``jsonl`` for a file; ``UsageError`` if absent."""
    if output.is_dir():
        return "parquet"
    if output.is_file():
        return "jsonl"
    raise UsageError(
        f"{output}: no such output; name the --output of a batchclassify run "
        "(a .jsonl file or a .parquet folder)"
    )


def check_output(output: Path) -> Literal["jsonl", "parquet"]:
    """``output_kind``, after making sure ``output`` is a batchclassify output: a
    ``UsageError`` saying what it is otherwise (``report``, ``export``, ``status``)."""
    kind = output_kind(output)
    settings = read_job_settings(output)
    if settings is not None and "batchclassify_version" in settings:
        return kind
    if read_progress(output) is not None or find_shards(output):
        return kind  # a job has started on it
    what = _foreign_folder(output) if kind == "parquet" else _foreign_file(output)
    if what is not None:
        raise UsageError(
            f"{output} is not a batchclassify output: {what}; name the --output of a "
            "batchclassify run"
        )
    return kind


def _foreign_folder(folder: Path) -> str | None:
    """What a folder is, if it holds no part or journal file (an output of any version does)."""
    try:
        names = os.listdir(folder)
    except OSError as exc:
        raise UsageError(f"cannot read {folder}: {exc.strerror}") from None
    if not names or any(PART_RE.match(name) or JOURNAL_RE.match(name) for name in names):
        return None
    return "a folder without part-NNNNNN.parquet files (a Parquet output is such a folder)"


#: The first bytes of files people mistake for an output, and what each is.
_MAGIC = {
    b"PAR1": "a Parquet file (a Parquet output is a folder of part files)",
    b"SQLite format 3\0": "an SQLite database (an answer cache?)",
    b"\x1f\x8b": "a gzip file",
    b"PK\x03\x04": "a zip file",
}


def _foreign_file(path: Path) -> str | None:
    """What a file is, if its first line is not a row of this tool's (an ``id`` and a
    ``status``: what every output, of every version, holds); ``None`` if it looks like one."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(65_536)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    if not head:
        return None  # empty: nothing written yet
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            return what
    line = head.split(b"\n", 1)[0]
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError:
        if len(line) == len(head) == 65_536:
            return None  # a first line longer than this: not judged
        if b"\0" in head:
            return "a binary file, not JSON lines"
        return f"its first line is not JSON (a CSV or text file?): {_shown(line)}"
    if not isinstance(row, dict):
        return f"JSON lines, but its first line is not an object: {_shown(line)}"
    if isinstance(row.get("id"), str) and "status" in row:
        return None
    keys = ", ".join(list(row)[:6]) or "none"
    return f"JSON lines without the id and status of a row of results (first row's keys: {keys})"


def _shown(line: bytes, limit: int = 60) -> str:
    text = line.decode("utf-8", "replace").rstrip("\r")
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def iter_rows(output: Path) -> Iterator[dict[str, Any]]:
    """Every parsable row, in the order it was written (superseded rows included)."""
    if output_kind(output) == "parquet":
        for folder in _datasets(output):
            yield from _parquet_rows(folder)
    else:
        yield from _jsonl_rows(output)


def iter_ids(output: Path) -> Iterator[str]:
    """The id of every parsable row, as ``iter_rows`` orders them; a Parquet part's ``id``
    column is read alone, several times faster than whole rows."""
    if output_kind(output) == "parquet":
        for folder in _datasets(output):
            yield from (row["id"] for row in _parquet_rows(folder, ids_only=True))
    else:
        yield from (row["id"] for row in _jsonl_rows(output))


def iter_latest_rows(output: Path) -> Iterator[dict[str, Any]]:
    """Each id once, with its latest row. Two passes over the output; memory ~14 bytes/id."""
    counts = count_ids(iter_ids(output))
    yield from (row for row in iter_rows(output) if is_latest(counts, row["id"]))


def read_results(output: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The rows of a job's output, one per image: each id's latest row, as ``report`` and
    ``export`` read it (a ``--retry-failed`` run killed before its end leaves an id's old row
    before its new one; this skips the old).

    ``output`` is a run's ``--output``: a ``.jsonl`` file, a ``.parquet`` folder, or the
    folder of a ``run --processes`` job (its shards' rows, one shard after another). Safe
    while a job writes it (rows written so far). Reads the output twice, lazily; memory
    about 14 bytes per id. Raises ``UsageError`` at once, before any row, for a missing
    output or a file that is not one.
    """
    path = Path(output)
    check_output(path)
    return iter_latest_rows(path)


def run_folder(output: Path) -> Path:
    """The folder a row's relative ``path`` is relative to: the one ``run`` started in, as
    the output's settings record it; for an output written before they did, its own folder.
    Never the reader's working folder: another file may have the same relative path there."""
    recorded = (read_job_settings(output) or {}).get(WORKDIR)
    if isinstance(recorded, str) and os.path.isabs(recorded):
        return Path(recorded)
    return output.absolute().parent


def image_file(item_id: str, path: str | None, *, base: Path) -> str | None:
    """The local file of a row (its ``id`` and ``path``), as ``open`` takes it; ``None`` for a
    URL or object-storage item. The one rule ``export`` and ``report`` find images by.

    ``path`` is as ``run`` was given it, relative to the folder ``run`` started in. The id of
    a local file is its absolute path, escaped injectively (``names.as_id``), so the file is
    found from any folder, on any later day, non-UTF-8 names included. An id a manifest gave
    (its file name is not ``path``'s) or an older id scheme's leaves ``path``: a relative one
    is taken against ``base``, the output's ``run_folder``.
    """
    if path is None or object_scheme(path) is not None:
        return None
    named = id_file(item_id)
    if named is not None and as_text(os.path.basename(named)) == os.path.basename(path):
        return named
    if os.path.isabs(path):
        return path
    return str(base / path)


# -- JSONL ---------------------------------------------------------------------------------


def _jsonl_rows(path: Path) -> Iterator[dict[str, Any]]:
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        for line in handle:
            row = _parse_line(line)
            if row is not None:
                yield row


def _parse_line(line: bytes) -> dict[str, Any] | None:
    if not line.endswith(b"\n"):
        return None  # torn by a kill mid-write, or being written right now
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if isinstance(row, dict) and isinstance(row.get("id"), str):
        return row
    return None


# -- Parquet -------------------------------------------------------------------------------


def _numbered(folder: Path, pattern: re.Pattern[str]) -> list[int]:
    try:
        names = os.listdir(folder)
    except OSError as exc:
        raise UsageError(f"cannot read {folder}: {exc.strerror}") from None
    found = (pattern.match(name) for name in names)
    return sorted(int(match.group(1)) for match in found if match)


def _parquet_rows(folder: Path, *, ids_only: bool = False) -> Iterator[dict[str, Any]]:
    pq = load_pyarrow().parquet
    # Journals are listed first: one that a running job finishes meanwhile is a part by the
    # time its journal is missed, and is then read as that part.
    journals = _numbered(folder, JOURNAL_RE)
    parts = _numbered(folder, PART_RE)
    for number in parts:
        yield from _part_rows(pq, folder / f"part-{number:06d}.parquet", ids_only=ids_only)
    done = set(parts)
    for number in journals:
        if number in done:
            continue  # stale journal of a finished part
        try:
            handle = open(folder / f"_journal-{number:06d}.jsonl", "rb")  # noqa: SIM115
        except FileNotFoundError:
            yield from _part_rows(pq, folder / f"part-{number:06d}.parquet", ids_only=ids_only)
            continue
        with handle:
            for line in handle:
                row = _parse_line(line)
                if row is not None:
                    yield _as_parquet_row(row)


def _part_rows(pq: Any, part: Path, *, ids_only: bool = False) -> Iterator[dict[str, Any]]:
    try:
        source = pq.ParquetFile(part)
    except FileNotFoundError:
        return
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
        raise UsageError(f"{part} is not a readable Parquet file ({exc})") from None
    with source:
        if ids_only:
            for batch in source.iter_batches(batch_size=65_536, columns=["id"]):
                yield from ({"id": item_id} for item_id in batch.column(0).to_pylist())
            return
        for batch in source.iter_batches(batch_size=8_192):
            yield from batch.to_pylist()


def _as_parquet_row(row: dict[str, Any]) -> dict[str, Any]:
    """A journal row typed as its part will hold it: metadata values as strings."""
    for key, value in row.items():
        if key not in ROW_FIELDS and not (value is None or isinstance(value, str)):
            row[key] = metadata_text(value)
    return row
