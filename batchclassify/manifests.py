"""Manifest readers (.txt, .csv, .jsonl, .parquet, stdin): rows to ``Item``s as ``sources`` says."""

from __future__ import annotations

import codecs
import csv
import datetime
import io
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TextIO

import orjson

from .errors import UsageError
from .models import Item
from .names import as_text, is_text

_STDIN_NAME = "<stdin>"
_URL_PREFIXES = ("http://", "https://", "HTTP://", "HTTPS://")
_HEAD_BYTES = 64 * 1024
_PARQUET_BATCH_ROWS = 8192
_BAD_ROW = "bad_manifest_row"
_POSIX = os.name == "posix"

# -- rows ----------------------------------------------------------------------------------


def _prefix(manifest: str) -> str:
    """What a relative path in ``manifest`` is joined to: its folder plus a separator."""
    folder = os.path.dirname(manifest)
    return os.path.join(folder, "") if folder else ""


def _resolve(prefix: str, value: str) -> str:
    """``os.path.join(prefix, value)``, kept cheap: it runs once per manifest row."""
    if not prefix:
        return value
    if _POSIX:
        return value if value[0] == "/" else prefix + value
    return os.path.join(prefix, value)


def _bad_row(manifest: str, where: str, number: int, message: str) -> Item:
    return Item(
        id=f"{manifest}:{number}",
        problem=f"{manifest} {where} {number}: {message}",
        problem_kind=_BAD_ROW,
    )


def _item(prefix: str, path: str, url: str, ident: str, metadata: dict[str, Any] | None) -> Item:
    """One manifest row's item from its stripped ``path``, ``url`` and ``id`` values.

    A path and a URL: both are kept and the runner reads the file. A URL in the path column
    is a URL (the ``url`` column wins if it holds one too).
    """
    if path and not path.startswith(_URL_PREFIXES):
        return Item(
            id=ident or as_text(path),
            path=_resolve(prefix, path),
            url=url or None,
            metadata=metadata,
        )
    url = url or path
    return Item(id=ident or url, url=url, metadata=metadata)


# -- text manifests ------------------------------------------------------------------------


def _check_text_manifest(source: str, kind: str) -> None:
    name = as_text(source)
    try:
        with open(source, "rb") as handle:
            head = handle.read(_HEAD_BYTES)
    except OSError as exc:
        raise UsageError(
            f"{name}: cannot open this manifest ({exc.strerror}); check its permissions"
        ) from None
    if b"\x00" in head:
        raise UsageError(f"{name} contains NUL bytes (UTF-16 or binary?); save it as UTF-8 text")
    try:
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{name} is not UTF-8 text (byte 0x{head[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8"
        ) from None
    if kind == "csv":
        header = next(csv.reader(io.StringIO(text)), None)
        if header is None:
            raise UsageError(f"{name} is empty: a CSV manifest needs a header row with 'path'")
        _csv_columns(name, header)
    elif kind == "jsonl":
        _check_jsonl_keys(name, text, complete=len(head) < _HEAD_BYTES)


def _check_jsonl_keys(name: str, head: str, *, complete: bool) -> None:
    """A first object with neither 'path' nor 'url' means every row would fail the same way."""
    lines = head.split("\n")
    if not complete:
        lines.pop()  # possibly cut off
    first = next((line for line in lines if line.strip()), None)
    try:
        row = orjson.loads(first) if first is not None else None
    except orjson.JSONDecodeError:
        return  # a bad line is that line's problem, reported in its row
    if type(row) is dict and "path" not in row and "url" not in row:
        raise UsageError(
            f"{name} has no 'path' or 'url' key on its first line; found: "
            f"{', '.join(map(str, row)) or '(none)'}; name the image's key 'path' or 'url'"
        )


def _txt_lines(manifest: str, prefix: str, lines: Iterable[str]) -> Iterator[Item]:
    for number, line in enumerate(lines, 1):
        value = line.strip()
        if not value or value[0] == "#":
            continue
        if value.startswith(_URL_PREFIXES):
            if not is_text(value):
                yield _bad_row(manifest, "line", number, "not valid UTF-8; save it as UTF-8")
            else:
                yield Item(id=value, url=value)
        elif value.isascii():
            yield Item(id=value, path=_resolve(prefix, value))
        else:
            yield Item(id=as_text(value), path=_resolve(prefix, value))


def _txt_items(source: str) -> Iterator[Item]:
    # surrogateescape: a bad line must not take its 8 KB decoding chunk down with it.
    with _open_text(source, newline=None) as handle:
        yield from _txt_lines(as_text(source), _prefix(source), handle)


def _stdin_items(stdin: TextIO | None) -> Iterator[Item]:
    if stdin is not None:
        yield from _txt_lines(_STDIN_NAME, "", stdin)
        return
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:
        yield from _txt_lines(_STDIN_NAME, "", sys.stdin)
        return
    wrapper = io.TextIOWrapper(buffer, encoding="utf-8-sig", errors="surrogateescape")
    try:
        yield from _txt_lines(_STDIN_NAME, "", wrapper)
    finally:
        wrapper.detach()  # closing the wrapper would close the process's stdin


def _open_text(source: str, *, newline: str | None) -> TextIO:
    try:
        return open(source, encoding="utf-8-sig", errors="surrogateescape", newline=newline)
    except OSError as exc:
        raise UsageError(f"{as_text(source)}: cannot open this manifest ({exc.strerror})") from None


def _csv_columns(name: str, header: Sequence[str]) -> tuple[int | None, int | None, int | None]:
    """Indexes of the ``path``, ``url`` and ``id`` columns; ``UsageError`` without path or url."""
    cells = [cell.strip() for cell in header]
    found: dict[str, int] = {}
    for index, cell in enumerate(cells):
        if cell in ("path", "url", "id"):
            found.setdefault(cell, index)
    if "path" not in found and "url" not in found:
        hint = ""
        if len(cells) == 1 and any(sep in cells[0] for sep in ";\t|"):
            hint = "; is it separated by ';' or tabs? save it comma-separated"
        raise UsageError(
            f"{name} has no 'path' or 'url' column; found: {', '.join(cells) or '(none)'}{hint}"
        )
    return found.get("path"), found.get("url"), found.get("id")


def _csv_items(source: str) -> Iterator[Item]:
    manifest, prefix = as_text(source), _prefix(source)
    with _open_text(source, newline="") as handle:
        # strict: a stray quote is an error for its row, not silently merged into the value.
        reader = csv.reader(handle, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise UsageError(f"{manifest} is empty: a CSV manifest needs a header row") from None
        except csv.Error as exc:
            raise UsageError(f"{manifest}: unreadable CSV header ({exc})") from None
        path_col, url_col, id_col = _csv_columns(manifest, header)
        width = len(header)
        meta = [
            (index, cell.strip())
            for index, cell in enumerate(header)
            if cell.strip() and index not in (path_col, url_col, id_col)
        ]
        end = reader.line_num
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield _bad_row(manifest, "line", end + 1, f"malformed CSV ({exc}); fix the quoting")
                end = reader.line_num
                continue
            number, end = end + 1, reader.line_num
            if not row:
                continue  # a blank line
            if len(row) != width:
                if len(row) > width:
                    yield _bad_row(
                        manifest,
                        "line",
                        number,
                        f"{len(row)} fields but the header has {width}; "
                        "quote values that contain commas",
                    )
                    continue
                row += [""] * (width - len(row))
            if not is_text("".join(row)):
                yield _bad_row(manifest, "line", number, "not valid UTF-8; save it as UTF-8")
                continue
            path = row[path_col].strip() if path_col is not None else ""
            url = row[url_col].strip() if url_col is not None else ""
            if not path and not url:
                yield _bad_row(
                    manifest, "line", number, "empty path/url cell; fill it or drop the row"
                )
                continue
            if "\n" in path or "\n" in url:
                yield _bad_row(
                    manifest,
                    "line",
                    number,
                    f"a quoted value runs on to line {end}: a stray '\"'? fix the quoting",
                )
                continue
            ident = row[id_col].strip() if id_col is not None else ""
            metadata = {key: row[index] for index, key in meta} if meta else None
            yield _item(prefix, path, url, ident, metadata)


def _jsonl_items(source: str) -> Iterator[Item]:
    manifest, prefix = as_text(source), _prefix(source)
    try:
        handle = open(source, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise UsageError(f"{manifest}: cannot open this manifest ({exc.strerror})") from None
    with handle:
        for number, raw in enumerate(handle, 1):
            line = raw.strip()
            if not line:
                continue
            if number == 1 and line.startswith(codecs.BOM_UTF8):
                line = line[3:]
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield _bad_row(manifest, "line", number, f"not valid JSON ({exc})")
                continue
            if type(row) is not dict:
                kind = type(row).__name__
                yield _bad_row(manifest, "line", number, f"a JSON {kind}, not an object")
                continue
            values = []
            for key in ("path", "url", "id"):
                value = row.pop(key, None)
                if type(value) is not str:
                    if value is None:
                        value = ""
                    elif key == "id" and type(value) is int:
                        value = str(value)
                    else:
                        kind = type(value).__name__
                        yield _bad_row(
                            manifest, "line", number, f"'{key}' is a {kind}, not a string"
                        )
                        break
                values.append(value.strip())
            else:
                path, url, ident = values
                if not path and not url:
                    yield _bad_row(
                        manifest,
                        "line",
                        number,
                        "no 'path' or 'url' value; add one or drop the line",
                    )
                    continue
                yield _item(prefix, path, url, ident, row or None)


# -- Parquet -------------------------------------------------------------------------------


def _import_parquet(name: str) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError(
            f"{name}: reading Parquet manifests needs pyarrow: pip install 'batchclassify[parquet]'"
        ) from None
    return pq


def _parquet_columns(source: str) -> tuple[int | None, int | None, int | None]:
    """Open only the footer; ``UsageError`` if unreadable or without a path/url column."""
    name = as_text(source)
    pq = _import_parquet(name)
    import pyarrow as pa

    try:
        with open(source, "rb") as handle:
            names = pq.ParquetFile(handle).schema_arrow.names
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise UsageError(
            f"{name}: cannot read this Parquet file ({exc}); check it was written completely"
        ) from None
    return _csv_columns(name, names)


def _parquet_items(source: str) -> Iterator[Item]:
    manifest, prefix = as_text(source), _prefix(source)
    pq = _import_parquet(manifest)
    path_col, url_col, id_col = _parquet_columns(source)
    import pyarrow as pa

    number = 0
    with open(source, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        names = parquet.schema_arrow.names
        meta_cols = [i for i, n in enumerate(names) if n and i not in (path_col, url_col, id_col)]
        batches = parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (OSError, ValueError, pa.ArrowException) as exc:
                raise UsageError(
                    f"{manifest}: cannot read past row {number} ({exc}); check the file is whole"
                ) from None
            rows = batch.num_rows
            paths = _column(batch, path_col, rows)
            urls = _column(batch, url_col, rows)
            ids = _column(batch, id_col, rows)
            meta = [(names[i], _meta_values(batch.column(i))) for i in meta_cols]
            for row in range(rows):
                number += 1
                try:
                    path, url, ident = _cell(paths[row]), _cell(urls[row]), _cell(ids[row])
                except TypeError as exc:
                    yield _bad_row(manifest, "row", number, str(exc))
                    continue
                if not path and not url:
                    yield _bad_row(
                        manifest, "row", number, "empty path/url value; fill it or drop the row"
                    )
                    continue
                metadata = {key: values[row] for key, values in meta} if meta else None
                yield _item(prefix, path, url, ident, metadata)


def _column(batch: Any, index: int | None, rows: int) -> list[Any]:
    return [None] * rows if index is None else list(batch.column(index).to_pylist())


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if type(value) is str:
        return value.strip()
    if type(value) is int:
        return str(value)
    if type(value) is bytes:
        return os.fsdecode(value).strip()
    raise TypeError(f"a {type(value).__name__} where text was expected")


def _meta_values(column: Any) -> list[Any]:
    """A metadata column as JSON-ready Python values (the sinks serialise with orjson)."""
    import pyarrow as pa

    values = column.to_pylist()
    kind = column.type
    plain = (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_null(kind)
    )
    return list(values) if plain else [_jsonable(value) for value in values]


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return str(value)
