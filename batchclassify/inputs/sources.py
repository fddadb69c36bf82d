"""Turn the user's sources (folders, manifests, ``-`` for stdin) into a lazy stream of ``Item``s.

Everything streams: a folder is walked one directory at a time with ``os.scandir``, each
file yielded as the listing reads it (only subfolder names are held, to walk them in order),
a manifest is read a line at a time, a Parquet file a record batch at a time (pyarrow
decodes one row group at a time, so its writer's row-group size bounds the memory), so
memory does not grow with the job.
The functions block on I/O; the runner calls them from a worker thread, in batches.

Conventions a reader of the output relies on:

- Ids (``ID_SCHEME``): the id of a local file is its absolute path with every symlink in its
  folder resolved (``names.LocalIds``), whichever way the source was spelled and from whichever
  working directory: ``photos``, ``./photos`` and ``/abs/photos`` give the same ids, and two
  different files never share one. Bytes of a name that are not UTF-8 and literal ``\\x``
  are escaped injectively (``names.as_id``). A URL's id is the URL as written.
- Folder items: ``path`` is ``os.path.join(given_folder, relative_path)``, the path as the user
  spelled it, exactly what ``open()`` needs. A directory's matching files are yielded in the
  order the file system lists them (not sorted, so the first request goes out at once however
  big the folder; stable for an unchanged folder on common file systems), then its
  subfolders are walked sorted by name. Resume goes by id, so it does not depend on order.
  Hidden names (starting with ``.``) are skipped, and so are files whose
  extension is not wanted; both are counted in the ``InputReport``. A subfolder that a
  ``batchclassify export`` wrote (``is_export_folder``) is not entered: its images are links
  to images classified already, which would be sent again under new ids; the report names it.
  Symlinks are followed (a symlinked folder's files get ids under its resolved path); a
  symlinked folder that leads back to a folder on the current path (a loop) is not entered
  again, since its files are already being walked.
- Object-storage sources (``s3://bucket/prefix/``): listed page by page (``objectstore``);
  an object's id and path are its URL, ``s3://bucket/key``.
- Manifest items: a value starting with ``http://`` or ``https://`` is a URL, ``file://`` a
  local path, anything else a path; a relative path is joined to the manifest's folder (stdin:
  the current folder). ``~`` is not expanded. An object-storage URL (``s3://``, ``gs://``,
  any fsspec scheme) in the path or url column is read by the workers like a file
  (``objectstore``); without fsspec and the scheme's backend such rows are bad rows naming
  the extra to install. ``id`` is the row's ``id`` if non-empty, else the file's id as
  above, or the URL as written. A row with both a path and a URL keeps both: the file is
  read (no download by the server) and the URL is carried into the output row; the id
  defaults to the file's. Column names (``path``, ``url``, ``id``) are matched
  case-insensitively.
- A line of a ``.txt`` manifest that is not UTF-8 is taken as a raw file name (as ``find``
  writes them) wherever it is in the file; in CSV and JSONL such a line is a bad row.
- A faulty row never stops the stream: it becomes an ``Item`` with ``problem`` set and the id
  ``"line N of <manifest>"`` (Parquet: ``"row N of <manifest>"``, counted from 1), with the
  manifest's absolute path: it cannot be a file's id, which is absolute.

``problem_kind`` values: ``bad_manifest_row`` (malformed or empty row), ``missing_file``
(broken symlink in a folder), ``unreadable`` (folder that cannot be listed, special file).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import TextIO

from ..error_types import ErrorType
from ..errors import UsageError
from ..models import Item, Keep, keep_all
from ..names import LocalIds, as_id, as_text, object_scheme
from ..summary import InputReport

# The readers of the other kinds of source (manifests, Parquet, object storage) are imported
# when a source of their kind is met: a job over folders loads none of them (nor csv, pyarrow).

STDIN = "-"
#: What ``batchclassify export`` writes at the top of its DEST (``commands/export/dest.py``),
#: and the name earlier versions gave it.
EXPORT_MARKER = ".batchclassify-export"
LEGACY_EXPORT_MARKER = "batchclassify-export.json"
_MANIFEST_KINDS = {
    ".txt": "txt",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}

# -- public API ----------------------------------------------------------------------------


def check_sources(sources: Sequence[str]) -> None:
    """Raise ``UsageError`` for the first source that cannot be read, before any request.

    Cheap: a folder is opened but not walked, a manifest's first 64 KB (Parquet: its footer)
    is read. Rows are checked as they stream; a bad row becomes a problem item, not an error.
    """
    # stdin ('-') is not checked: that would consume it.
    if sum(1 for source in sources if source == STDIN) > 1:
        raise UsageError("'-' (stdin) is given more than once: stdin can be read only once")
    for source in sources:
        if source == STDIN:
            continue
        kind = source_kind(source)
        if kind == "object":
            from .objectstore import check_source

            check_source(source)
        elif kind == "dir":
            _check_folder(source)
        elif kind == "parquet":
            from .manifest_parquet import parquet_columns

            parquet_columns(source)
        else:
            from .manifests import check_text_manifest

            check_text_manifest(source, kind)


def iter_items(
    sources: Sequence[str],
    *,
    extensions: frozenset[str],
    stdin: TextIO | None = None,
    report: InputReport | None = None,
) -> Iterator[Item]:
    """Yield the items of every source, in the order given. Lazy and blocking.

    ``report``, if given, is filled in as the sources are read: files passed over, and the
    sources that held nothing.
    """
    for item in iter_entries(sources, extensions=extensions, stdin=stdin, report=report):
        if item is not None:
            yield item


def iter_entries(
    sources: Sequence[str],
    *,
    extensions: frozenset[str],
    stdin: TextIO | None = None,
    report: InputReport | None = None,
    keep: Keep = keep_all,
    stop: Callable[[], bool] | None = None,
) -> Iterator[Item | None]:
    """Every item of the sources, screened by ``keep``: ``None`` in the place of an item it
    did not keep (nothing but its id was made). The one walk: the job's producer, ``plan``
    and the count (``counting.py``, which keeps nothing) all go through it.

    ``stop``, asked at each folder a folder walk enters, ends that walk early when true (the
    count's way out; the caller knows it asked)."""
    wanted = frozenset(ext.lower().lstrip(".") for ext in extensions)
    report = report if report is not None else InputReport()
    ids = LocalIds()
    for source in sources:
        items = _source_items(source, wanted, stdin, report, ids, keep, stop)
        for first in items:  # a source whose entries were all screened out is not empty
            yield first
            yield from items
            break
        else:
            report.empty_sources.append("<stdin>" if source == STDIN else as_text(source))


def _source_items(
    source: str,
    wanted: frozenset[str],
    stdin: TextIO | None,
    report: InputReport,
    ids: LocalIds,
    keep: Keep,
    stop: Callable[[], bool] | None,
) -> Iterator[Item | None]:
    kind = "stdin" if source == STDIN else source_kind(source)
    if kind == "dir":
        return _walk_folder(source, wanted, report, ids, keep, stop)
    if kind == "object":
        from .objectstore import iter_objects

        return _screened(iter_objects(source, wanted, report), keep)
    if kind == "parquet":
        from .manifest_parquet import parquet_items

        return parquet_items(source, ids, keep)
    from . import manifests

    if kind == "stdin":
        return manifests.stdin_items(stdin, ids, keep)
    if kind == "txt":
        return manifests.txt_items(source, ids, keep)
    if kind == "csv":
        return manifests.csv_items(source, ids, keep)
    return manifests.jsonl_items(source, ids, keep)


def _screened(items: Iterator[Item], keep: Keep) -> Iterator[Item | None]:
    """``keep`` applied to items already made (object listings: a network page at a time)."""
    for item in items:
        yield item if keep(item.id) else None


def iter_item_batches(
    sources: Sequence[str],
    *,
    extensions: frozenset[str],
    stdin: TextIO | None = None,
    batch_size: int = 512,
    report: InputReport | None = None,
    keep: Keep = keep_all,
) -> Iterator[list[Item]]:
    """``iter_items`` in lists of up to ``batch_size``: one worker-thread hop per batch.

    ``keep`` screens each id before its item is made (the producer's resume and duplicate
    check): only kept items are listed. A batch also ends after ``batch_size * 32`` entries
    screened out, so a long run of them (a finished job) still hands control back often.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    entries = iter_entries(sources, extensions=extensions, stdin=stdin, report=report, keep=keep)
    seen_limit = batch_size * 32
    while True:
        batch: list[Item] = []
        seen = 0
        for entry in entries:
            if entry is not None:
                batch.append(entry)
                if len(batch) >= batch_size:
                    break
            else:
                seen += 1
                if seen >= seen_limit:
                    break
        else:
            if batch or seen:  # the producer counts what was screened out, too
                yield batch
            return
        yield batch


# -- kinds of source -----------------------------------------------------------------------


def source_kind(source: str) -> str:
    """``"dir"``, ``"object"`` (an object-storage prefix such as ``s3://bucket/photos/``) or
    a manifest kind; ``UsageError`` for anything else."""
    if object_scheme(source) is not None:
        return "object"
    if os.path.isdir(source):
        return "dir"
    name = as_text(source)
    if not os.path.lexists(source):
        raise UsageError(f"{name}: no such file or folder; {_missing_source_hint(source)}")
    kind = _MANIFEST_KINDS.get(os.path.splitext(source)[1].lower())
    if kind is None:
        raise UsageError(
            f"{name} is not a folder or a manifest (.txt, .csv, .jsonl, .parquet); to classify "
            "single images, pass their folder or list them in a .txt manifest"
        )
    return kind


def _missing_source_hint(source: str) -> str:
    """What to do about a source that does not exist, for the forms people try."""
    if source.startswith("~"):
        return (
            f"~ is not expanded here: write the full path ({as_text(os.path.expanduser(source))})"
        )
    scheme, sep, _ = source.partition("://")
    if sep and scheme.isalpha():
        return (
            "a source is a folder, a manifest, '-' or an object-storage prefix (s3://, gs://): "
            "list http(s) URLs in a manifest (.txt, one per line) for the server to download"
        )
    return "check the path (relative paths start from the current folder)"


# -- folders -------------------------------------------------------------------------------


def is_export_folder(folder: str) -> bool:
    """Whether ``folder`` is the DEST of a ``batchclassify export`` (it holds the marker).

    The folder walk and the count's walk (``counting.py``) leave such a subfolder out.
    """
    return any(
        os.path.lexists(os.path.join(folder, name))
        for name in (EXPORT_MARKER, LEGACY_EXPORT_MARKER)
    )


def _check_folder(folder: str) -> None:
    try:
        with os.scandir(folder):
            pass
    except OSError as exc:
        raise UsageError(
            f"{as_text(folder)}: cannot read this folder ({exc.strerror}); check its permissions"
        ) from None


def _walk_folder(
    top: str,
    extensions: frozenset[str],
    report: InputReport,
    ids: LocalIds,
    keep: Keep,
    stop: Callable[[], bool] | None = None,
) -> Iterator[Item | None]:
    """Depth first, one directory listing in memory at a time (plus pending subfolder names)."""
    try:
        stat = os.stat(top)
    except OSError as exc:
        raise UsageError(f"{as_text(top)}: cannot open this folder ({exc.strerror})") from None
    # Each frame: a folder's (st_dev, st_ino), its path, its id, its subfolders not yet walked.
    # The keys of the frames are ``on_path``: a folder met again among them is a symlink loop.
    key = (stat.st_dev, stat.st_ino)
    ident = ids.folder(top)
    subfolders = yield from _folder_files(top, ident, extensions, report, keep)
    stack = [(key, top, ident, iter(subfolders))]
    on_path = {key}
    while stack:
        if stop is not None and stop():
            return
        key, path, ident, pending = stack[-1]
        name, is_link = next(pending, (None, False))
        if name is None:
            stack.pop()
            on_path.discard(key)
            continue
        child = os.path.join(path, name)
        # Below a symlink the files belong to the folder it leads to: ids name that folder,
        # so the same file listed by its real path (in a manifest, say) gets the same id.
        child_id = ids.folder(child) if is_link else os.path.join(ident, as_id(name))
        try:
            stat = os.stat(child)
        except OSError as exc:
            yield _unreadable(child, child_id, exc) if keep(child_id) else None
            continue
        key = (stat.st_dev, stat.st_ino)
        if key in on_path:
            continue  # a loop: this folder's files are already being walked
        if is_export_folder(child):
            report.skipped_exports.append(as_text(child))
            continue
        on_path.add(key)
        subfolders = yield from _folder_files(child, child_id, extensions, report, keep)
        stack.append((key, child, child_id, iter(subfolders)))


def walk_folder(
    top: str, extensions: frozenset[str], report: InputReport, ids: LocalIds, keep: Keep
) -> Iterator[Item | None]:
    """One folder walked by the rules of a source's walk (``run --watch``: a folder that
    appeared under a followed one); ``UsageError`` if it cannot be opened."""
    return _walk_folder(top, extensions, report, ids, keep)


def list_folder(
    path: str, ident: str, extensions: frozenset[str], report: InputReport, keep: Keep
) -> Generator[Item | None, None, list[tuple[str, bool]]]:
    """One folder's files by the walk's rules; returns its subfolders (``run --watch``'s
    polling lists a folder again when its mtime changes)."""
    return _folder_files(path, ident, extensions, report, keep)


def _unreadable(path: str, ident: str, exc: OSError) -> Item:
    return Item(
        id=ident,
        path=path,
        problem=f"cannot read folder {as_text(path)}: {exc.strerror or exc}; check its permissions",
        problem_kind=ErrorType.UNREADABLE,
    )


def _folder_files(
    path: str, ident: str, extensions: frozenset[str], report: InputReport, keep: Keep
) -> Generator[Item | None, None, list[tuple[str, bool]]]:
    """Yield one folder's matching files as the listing reads them; return its subfolders,
    sorted, each with whether it is a symlink.

    Files come in the order the file system lists them, not sorted: sorting would mean
    listing the whole folder (seconds and megabytes at a million files) before the first
    request. Resume goes by id, so the order does not matter to it.
    """
    subfolders: list[tuple[str, bool]] = []
    file_prefix = os.path.join(path, "")
    id_prefix = os.path.join(ident, "")
    skipped = report.skipped_extensions
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                name = entry.name
                if name[0] == ".":
                    report.skipped_hidden += 1
                    continue
                error: OSError | None = None
                try:
                    # Both follow symlinks; no system call for plain entries. A file first:
                    # nearly every entry is one.
                    is_file = entry.is_file()
                    if not is_file and entry.is_dir():
                        subfolders.append((name, entry.is_symlink()))
                        continue
                except OSError as exc:  # e.g. a chain of symlinks that loops (ELOOP)
                    is_file, error = False, exc
                dot = name.rfind(".")
                extension = name[dot + 1 :].lower() if dot > 0 else ""
                if extension not in extensions:
                    skipped[as_text(extension)] += 1
                    continue
                # as_id's own test first, inline: most names are kept as they are.
                plain = name.isascii() and "\\x" not in name
                item_id = id_prefix + (name if plain else as_id(name))
                if not keep(item_id):
                    yield None
                elif is_file:
                    yield Item(id=item_id, path=file_prefix + name)
                else:
                    yield _odd_entry(entry, item_id, error)
    except OSError as exc:
        yield _unreadable(path, ident, exc) if keep(ident) else None
        return []
    subfolders.sort()
    return subfolders


def _odd_entry(entry: os.DirEntry[str], ident: str, error: OSError | None) -> Item:
    """An entry with an image's name that is neither a file nor a folder."""
    shown = as_text(entry.path)
    if entry.is_symlink():
        try:
            target = as_text(os.readlink(entry.path))
        except OSError:
            target = "?"
        reason = f"{error.strerror}" if error is not None else "target does not exist"
        return Item(
            id=ident,
            path=entry.path,
            problem=f"broken symlink: {shown} -> {target} ({reason})",
            problem_kind=ErrorType.MISSING_FILE,
        )
    return Item(
        id=ident,
        path=entry.path,
        problem=f"not a regular file (a device, pipe or socket): {shown}",
        problem_kind=ErrorType.UNREADABLE,
    )
