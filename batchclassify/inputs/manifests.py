"""Manifest readers (.txt, .csv, .jsonl, stdin): rows to ``Item``s as ``sources`` says.

Parquet manifests are read by ``manifest_parquet``, with the same ``Manifest`` rules.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TextIO
from urllib.parse import unquote_to_bytes

import orjson

from ..error_types import ErrorType
from ..errors import UsageError
from ..models import Item, Keep, keep_all
from ..names import LocalIds, as_text, is_text

_STDIN_NAME = "<stdin>"
_URL_PREFIXES = ("http://", "https://", "HTTP://", "HTTPS://")
_HEAD_BYTES = 64 * 1024
_BAD_ROW = ErrorType.BAD_MANIFEST_ROW
_POSIX = os.name == "posix"

# -- rows ----------------------------------------------------------------------------------


def _prefix(manifest: str | None) -> str:
    """What a relative path in ``manifest`` is joined to: its folder's absolute path plus a
    separator (stdin's: the current folder's). Absolute, so that a row's ``path`` names its
    file from any folder and any later day: with its own ``id`` column a manifest's row has
    nothing else to find its file by (``reading.image_file``)."""
    folder = os.path.abspath(os.path.dirname(manifest) if manifest is not None else os.curdir)
    return os.path.join(folder, "")


def _resolve(prefix: str, value: str) -> str:
    """``os.path.join(prefix, value)``, kept cheap: it runs once per manifest row."""
    if not prefix:
        return value
    if _POSIX:
        return value if value[0] == "/" else prefix + value
    return os.path.join(prefix, value)


class Manifest:
    """One manifest being read: its names, and how its rows become items.

    Every item is made here (``item``, ``bad``, ``stored``, ``url``), and ``keep`` (the job's
    screen) is asked about its id first: a row whose id the job does not want (done before, a
    duplicate) gives ``None``, with nothing else built for it.
    """

    def __init__(self, source: str | None, ids: LocalIds, keep: Keep = keep_all) -> None:
        self.name = _STDIN_NAME if source is None else as_text(source)
        self.ident = _STDIN_NAME if source is None else ids.file(source)
        self.prefix = _prefix(source)
        self.ids = ids
        self.keep = keep

    def bad(self, where: str, number: int, message: str, group: str | None = None) -> Item | None:
        """A bad row; ``group`` is the problem without this row's particulars, if they vary."""
        ident = f"{where} {number} of {self.ident}"  # not absolute, so never a file's id
        if not self.keep(ident):
            return None
        return Item(
            id=ident,
            problem=f"{self.name} {where} {number}: {message}",
            problem_kind=_BAD_ROW,
            problem_group=f"{self.name}: {group or message}",
            problem_at=f"{where} {number}",
        )

    def item(
        self,
        where: str,
        number: int,
        path: str,
        url: str,
        ident: str,
        metadata: dict[str, Any] | None,
    ) -> Item | None:
        """One row's item from its stripped ``path``, ``url`` and ``id`` values.

        A path and a URL: both are kept and the runner reads the file. A URL in the path
        column is a URL (the ``url`` column wins if it holds one too); a ``file://`` URL in
        either is a path.
        """
        if "://" in path:
            scheme = _scheme(path)
            if scheme in ("http", "https"):
                url, path = url or path, ""
            elif scheme == "file" and _local_file_url(path):
                path = _from_file_url(path)
            elif scheme is not None:
                return self.stored(where, number, path, url, ident, metadata, scheme)
        if "://" in url:
            scheme = _scheme(url)
            if scheme == "file" and _local_file_url(url):
                path, url = path or _from_file_url(url), ""
            elif scheme not in (None, "http", "https", "file"):
                # An object URL cannot be sent for the server to download: read it here.
                if path:
                    return self.bad(where, number, *_unsupported(url, scheme))
                return self.stored(where, number, url, "", ident, metadata, scheme)
            elif scheme == "file":
                return self.bad(where, number, *_unsupported(url, scheme))
        if path:
            resolved = _resolve(self.prefix, path)
            if path[0] == "~" and not os.path.lexists(resolved):
                return self.bad(
                    where,
                    number,
                    f"~ is not expanded: write the full path ({as_text(os.path.expanduser(path))})",
                    "~ is not expanded: write the full path",
                )
            ident = ident or self.ids.file(resolved)
            if not self.keep(ident):
                return None
            return Item(id=ident, path=resolved, url=url or None, metadata=metadata)
        return self.url(ident or url, url, metadata)

    def url(self, ident: str, url: str, metadata: dict[str, Any] | None = None) -> Item | None:
        """A URL's item, for the server to download."""
        return Item(id=ident, url=url, metadata=metadata) if self.keep(ident) else None

    def stored(
        self,
        where: str,
        number: int,
        path: str,
        url: str,
        ident: str,
        metadata: dict[str, Any] | None,
        scheme: str,
    ) -> Item | None:
        """An object-storage URL's item (id and path: the URL as written), or a bad row
        naming what to install when its backend is missing."""
        if scheme == "file":
            return self.bad(where, number, *_unsupported(path, scheme))
        from .objectstore import support_problem

        problem = support_problem(path)
        if problem is not None:
            return self.bad(where, number, problem)
        ident = ident or path
        if not self.keep(ident):
            return None
        return Item(id=ident, path=path, url=url or None, metadata=metadata)


def _scheme(value: str) -> str | None:
    """The scheme of ``value`` if it is written as a URL (``gs://...``), else ``None``."""
    head, sep, _ = value.partition("://")
    if sep and head[:1].isalpha() and all(c.isalnum() or c in "+-." for c in head):
        return head.lower()
    return None


def _local_file_url(value: str) -> bool:
    """A ``file://`` URL naming a file on this machine (no host, or ``localhost``)."""
    return value[7:].partition("/")[0].lower() in ("", "localhost")


def _unsupported(value: str, scheme: str) -> tuple[str, str]:
    """(message, group) for a URL this tool cannot read."""
    if scheme == "file":
        host = value[7:].partition("/")[0]
        message = f"file:// URL with a host ({host}): only local files (file:///path) are read"
        return message, "file:// URL with a host: only local files (file:///path) are read"
    message = (
        f"{scheme}:// in the url column beside a path: the server downloads only http(s) "
        "URLs; put the object URL in the path column alone"
    )
    return message, message


def _from_file_url(path: str) -> str:
    """``file:///a/b%20c.jpg`` -> ``/a/b c.jpg``."""
    rest = path[7:]
    rest = rest[rest.index("/") :] if "/" in rest else "/"
    return os.fsdecode(unquote_to_bytes(rest))


# -- text manifests ------------------------------------------------------------------------


def check_text_manifest(source: str, kind: str) -> None:
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
    # A line that is not UTF-8 is decided on its own, wherever it is (a raw file name in .txt,
    # a bad row in CSV and JSONL): the first 64 KB get no stricter rule than the rest.
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="surrogateescape")
    text = decoder.decode(head, final=False)
    if kind == "csv":
        header = next(csv.reader(io.StringIO(text)), None)
        if header is None:
            raise UsageError(f"{name} is empty: a CSV manifest needs a header row with 'path'")
        csv_columns(name, header)
    elif kind == "jsonl":
        _check_jsonl_keys(name, text, complete=len(head) < _HEAD_BYTES)


def _check_jsonl_keys(name: str, head: str, *, complete: bool) -> None:
    """A first object with neither 'path' nor 'url' means every row would fail the same way."""
    lines = head.split("\n")
    if not complete:
        lines.pop()  # possibly cut off
    first = next((line for line in lines if line.strip()), None)
    try:
        row = orjson.loads(first) if first is not None and is_text(first) else None
    except orjson.JSONDecodeError:
        return  # a bad line is that line's problem, reported in its row
    if type(row) is dict and not {str(key).lower() for key in row} & {"path", "url"}:
        raise UsageError(
            f"{name} has no 'path' or 'url' key on its first line; found: "
            f"{', '.join(map(str, row)) or '(none)'}; name the image's key 'path' or 'url'"
        )


def _txt_lines(manifest: Manifest, lines: Iterable[str]) -> Iterator[Item | None]:
    keep, file_id, prefix = manifest.keep, manifest.ids.file, manifest.prefix
    for number, line in enumerate(lines, 1):
        value = line.strip()
        if not value or value[0] == "#":
            continue
        if "://" not in value and value[0] != "~":
            # A plain path, nearly every line: ``Manifest.item``'s last case, inlined (one
            # call less per line, and no Item for a line the job skips).
            path = value if not prefix or (_POSIX and value[0] == "/") else _resolve(prefix, value)
            ident = file_id(path)
            yield Item(id=ident, path=path) if keep(ident) else None
        elif value.startswith(_URL_PREFIXES):
            if not is_text(value):
                yield manifest.bad("line", number, "not valid UTF-8; save it as UTF-8")
            else:
                yield manifest.url(value, value)
        else:
            yield manifest.item("line", number, value, "", "", None)


def txt_items(source: str, ids: LocalIds, keep: Keep = keep_all) -> Iterator[Item | None]:
    # surrogateescape: a bad line must not take its 8 KB decoding chunk down with it.
    with open_text(source, newline=None) as handle:
        yield from _txt_lines(Manifest(source, ids, keep), handle)


def stdin_items(
    stdin: TextIO | None, ids: LocalIds, keep: Keep = keep_all
) -> Iterator[Item | None]:
    manifest = Manifest(None, ids, keep)
    if stdin is not None:
        yield from _txt_lines(manifest, stdin)
        return
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:
        yield from _txt_lines(manifest, sys.stdin)
        return
    wrapper = io.TextIOWrapper(buffer, encoding="utf-8-sig", errors="surrogateescape")
    try:
        yield from _txt_lines(manifest, wrapper)
    finally:
        wrapper.detach()  # closing the wrapper would close the process's stdin


def open_text(source: str, *, newline: str | None) -> TextIO:
    try:
        return open(source, encoding="utf-8-sig", errors="surrogateescape", newline=newline)
    except OSError as exc:
        raise UsageError(f"{as_text(source)}: cannot open this manifest ({exc.strerror})") from None


def csv_columns(name: str, header: Sequence[str]) -> tuple[int | None, int | None, int | None]:
    """Indexes of the ``path``, ``url`` and ``id`` columns (any case); ``UsageError`` without
    path or url."""
    cells = [cell.strip() for cell in header]
    if not is_text("".join(cells)):
        raise UsageError(f"{name}: the header row is not UTF-8 text; save the file as UTF-8")
    found: dict[str, int] = {}
    for index, cell in enumerate(cells):
        if cell.lower() in ("path", "url", "id"):
            found.setdefault(cell.lower(), index)
    if "path" not in found and "url" not in found:
        hint = ""
        if len(cells) == 1 and any(sep in cells[0] for sep in ";\t|"):
            hint = "; is it separated by ';' or tabs? save it comma-separated"
        raise UsageError(
            f"{name} has no 'path' or 'url' column; found: {', '.join(cells) or '(none)'}{hint}"
        )
    return found.get("path"), found.get("url"), found.get("id")


def csv_items(source: str, ids: LocalIds, keep: Keep = keep_all) -> Iterator[Item | None]:
    manifest = Manifest(source, ids, keep)
    with open_text(source, newline="") as handle:
        # strict: a stray quote is an error for its row, not silently merged into the value.
        reader = csv.reader(handle, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise UsageError(
                f"{manifest.name} is empty: a CSV manifest needs a header row"
            ) from None
        except csv.Error as exc:
            raise UsageError(f"{manifest.name}: unreadable CSV header ({exc})") from None
        columns = csv_columns(manifest.name, header)
        meta = [
            (index, cell.strip())
            for index, cell in enumerate(header)
            if cell.strip() and index not in columns
        ]
        end = reader.line_num
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield manifest.bad(
                    "line", end + 1, f"malformed CSV ({exc}); fix the quoting", "malformed CSV"
                )
                end = reader.line_num
                continue
            number, end = end + 1, reader.line_num
            if row:  # else a blank line
                yield _csv_row(manifest, number, end, row, len(header), columns, meta)


def _csv_row(
    manifest: Manifest,
    number: int,
    end: int,
    row: list[str],
    width: int,
    columns: tuple[int | None, int | None, int | None],
    meta: list[tuple[int, str]],
) -> Item | None:
    """One CSV row (lines ``number`` to ``end``) as an item or a bad row."""
    if len(row) != width:
        if len(row) > width:
            return manifest.bad(
                "line",
                number,
                f"{len(row)} fields but the header has {width}; quote values that contain commas",
                f"more fields than the header's {width}; quote values that contain commas",
            )
        row += [""] * (width - len(row))
    if not is_text("".join(row)):
        return manifest.bad("line", number, "not valid UTF-8; save it as UTF-8")
    path_col, url_col, id_col = columns
    path = row[path_col].strip() if path_col is not None else ""
    url = row[url_col].strip() if url_col is not None else ""
    if not path and not url:
        return manifest.bad("line", number, "empty path/url cell; fill it or drop the row")
    if "\n" in url or "\r" in url:
        return manifest.bad(
            "line",
            number,
            f"the url cell holds a line break (a quoted value from line {number} to {end}); "
            "a stray '\"'? fix the quoting",
            "a url cell holds a line break; a stray '\"'? fix the quoting",
        )
    if ("\n" in path or "\r" in path) and not os.path.lexists(_resolve(manifest.prefix, path)):
        # A file name may hold a line break (quoted, that is valid CSV); if no such file
        # exists, a stray quote more likely merged the lines that follow into this cell.
        return manifest.bad(
            "line",
            number,
            f"the path cell holds a line break (a quoted value from line {number} to {end}) "
            "and no such file exists: a stray '\"'? fix the quoting",
            "a path cell holds a line break and no such file exists: a stray '\"'? fix the quoting",
        )
    ident = row[id_col].strip() if id_col is not None else ""
    if not url and "://" not in path and path[0] != "~":
        # A plain path, the usual row: ``Manifest.item``'s last case, with the metadata made
        # only for a row the job keeps.
        path = _resolve(manifest.prefix, path)
        ident = ident or manifest.ids.file(path)
        if not manifest.keep(ident):
            return None
        metadata = {key: row[index] for index, key in meta} if meta else None
        return Item(id=ident, path=path, metadata=metadata)
    metadata = {key: row[index] for index, key in meta} if meta else None
    return manifest.item("line", number, path, url, ident, metadata)


def _take(row: dict[str, Any], key: str) -> Any:
    """Pop ``key`` from a JSON object, matching its name in any case."""
    if key in row:
        return row.pop(key)
    for name in row:
        if name.lower() == key:
            return row.pop(name)
    return None


def jsonl_items(source: str, ids: LocalIds, keep: Keep = keep_all) -> Iterator[Item | None]:
    manifest = Manifest(source, ids, keep)
    try:
        handle = open(source, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise UsageError(f"{manifest.name}: cannot open this manifest ({exc.strerror})") from None
    with handle:
        for number, raw in enumerate(handle, 1):
            line = raw.strip()
            if not line:
                continue
            if number == 1 and line.startswith(codecs.BOM_UTF8):
                line = line[3:]
            yield _jsonl_row(manifest, number, line)


def _jsonl_row(manifest: Manifest, number: int, line: bytes) -> Item | None:
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        if not _is_utf8(line):
            return manifest.bad("line", number, "not valid UTF-8; save it as UTF-8")
        return manifest.bad("line", number, f"not valid JSON ({exc})", "not valid JSON")
    if type(row) is dict and len(row) == 1:  # {"path": ...}: ``item``'s last case, inlined
        path = row.get("path")
        if type(path) is str and (path := path.strip()) and "://" not in path and path[0] != "~":
            path = _resolve(manifest.prefix, path)
            ident = manifest.ids.file(path)
            return Item(id=ident, path=path) if manifest.keep(ident) else None
    if type(row) is not dict:
        kind = type(row).__name__
        return manifest.bad(
            "line", number, f"a JSON {kind}, not an object", "a JSON value that is not an object"
        )
    values = []
    for key in ("path", "url", "id"):
        value = _take(row, key)
        if type(value) is not str:
            if value is None:
                value = ""
            elif key == "id" and type(value) is int:
                value = str(value)
            else:
                kind = type(value).__name__
                return manifest.bad("line", number, f"'{key}' is a {kind}, not a string")
        values.append(value.strip())
    path, url, ident = values
    if not path and not url:
        return manifest.bad("line", number, "no 'path' or 'url' value; add one or drop the line")
    return manifest.item("line", number, path, url, ident, row or None)


def _is_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
