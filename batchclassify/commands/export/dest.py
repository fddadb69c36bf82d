"""DEST: refuse to mix an export into someone's folder, and ``--overwrite`` only our own.

A tree export writes ``.batchclassify-export`` (the marker, JSON) first and
``.batchclassify-mapping.tsv`` (every row: where its image went, or why it was left out) as it
goes, each image's line before the image. ``--overwrite`` deletes only what those two name, and
only when nothing else is in DEST: a file the export did not write is never deleted; an export
that fails midway deletes what it wrote the same way (``discard``).

Both names are chosen for the tools DEST is made for: hidden (Hugging Face ``imagefolder``
skips dot-files), files at DEST's top (torchvision ``ImageFolder`` takes only folders as
classes), and with no extension Roboflow's uploader reads (its folder parser takes every
``.json``, ``.csv``, ``.jsonl``, ``.txt`` anywhere under DEST for an annotation file, hidden or
not, and crashes on a JSON that is not one). Exports by earlier versions
(``batchclassify-export.json``, ``batchclassify-mapping.csv``) are still recognised.
"""

from __future__ import annotations

import csv
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from ...errors import UsageError
from ...inputs.sources import EXPORT_MARKER, LEGACY_EXPORT_MARKER
from ...output.idindex import IdIndex
from ...version import __version__

MARKER = EXPORT_MARKER
MAPPING = ".batchclassify-mapping.tsv"
#: Earlier versions' names, recognised by ``--overwrite`` (and by the walk: sources.py).
LEGACY_MARKER = LEGACY_EXPORT_MARKER
LEGACY_MAPPING = "batchclassify-mapping.csv"
MAPPING_COLUMNS = ("id", "source", "exported", "split", "outcome", "needs_review", "classes")
_TOOL = "batchclassify export"


def prepare_folder(dest: Path, *, overwrite: bool) -> bool:
    """Make DEST an empty folder we may write into, or raise ``UsageError`` saying why not.

    Returns whether DEST was created here (``discard`` then removes it too).
    """
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest} is a file; this format writes a folder: name a new folder")
    if not dest.exists():
        try:
            dest.mkdir(parents=True)
        except OSError as exc:
            raise UsageError(f"cannot create {dest}: {exc.strerror}") from None
        return True
    if not any(os.scandir(dest)):
        return False
    if not overwrite:
        raise UsageError(
            f"{dest} is not empty; choose a new folder, or pass --overwrite to replace an "
            "earlier batchclassify export there"
        )
    known = _known_files(dest)
    strangers, ours, folders = _survey_folder(dest, known)
    if strangers:
        shown = ", ".join(strangers[:5]) + (", ..." if len(strangers) > 5 else "")
        raise UsageError(
            f"--overwrite: {dest} holds files this tool did not write ({shown}); nothing was "
            "deleted. Move them away or choose another DEST"
        )
    _remove(ours, folders)
    return False


def discard(dest: Path, *, created: bool) -> None:
    """After a failed export: delete what it wrote (only that), and DEST if it made it.

    The marker and mapping name every file written (each image's line comes before the
    image), so this is ``--overwrite``'s rule: a file the export did not write stays.
    """
    try:
        known = _known_files(dest)
    except UsageError:
        known = IdIndex()  # no marker yet: nothing was written
    _, ours, folders = _survey_folder(dest, known)
    _remove(ours, folders)
    if created and not any(os.scandir(dest)):
        os.rmdir(dest)


def _remove(files: list[str], folders: list[str]) -> None:
    for path in files:
        os.unlink(path)
    for folder in folders:  # deepest first
        if not any(os.scandir(folder)):
            os.rmdir(folder)


def _known_files(dest: Path) -> IdIndex:
    """The DEST-relative paths an earlier export wrote, from its marker and mapping file."""
    marker = _read_marker(dest)
    if marker is None:
        raise UsageError(
            f"--overwrite: {dest} was not written by batchclassify export (no readable {MARKER}); "
            "refusing to delete anything in it. Choose another DEST"
        )
    known = IdIndex()
    for name in (MARKER, MAPPING, LEGACY_MARKER, LEGACY_MAPPING, *marker.get("files", [])):
        known.set(str(name), 1)
    for name, dialect in ((MAPPING, "excel-tab"), (LEGACY_MAPPING, "excel")):
        try:
            with open(dest / name, newline="", encoding="utf-8") as handle:
                for record in csv.DictReader(handle, dialect=dialect):
                    if record.get("exported"):
                        known.set(record["exported"], 1)
        except FileNotFoundError:
            pass
        except (OSError, csv.Error, UnicodeDecodeError) as exc:
            raise UsageError(f"--overwrite: cannot read {dest / name} ({exc})") from None
    return known


def _survey_folder(dest: Path, known: IdIndex) -> tuple[list[str], list[str], list[str]]:
    """(files not ours, files ours, folders deepest first) under DEST."""
    strangers: list[str] = []
    ours: list[str] = []
    folders: list[str] = []
    for top, dirnames, filenames in os.walk(dest, topdown=False):
        relative_top = os.path.relpath(top, dest)
        # A symlink to a folder is listed among dirnames; we only ever make file links.
        entries = filenames + [d for d in dirnames if os.path.islink(os.path.join(top, d))]
        for name in entries:
            relative = name if relative_top == "." else f"{relative_top}/{name}"
            (ours if known.get(relative) else strangers).append(os.path.join(top, name))
        if relative_top != ".":
            folders.append(top)
    return [os.path.relpath(path, dest) for path in strangers], ours, folders


def _read_marker(dest: Path) -> dict[str, Any] | None:
    """The marker's contents (this version's name, else an earlier one's), if it is ours."""
    for name in (MARKER, LEGACY_MARKER):
        try:
            marker = orjson.loads((dest / name).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue
        if isinstance(marker, dict) and marker.get("tool") == _TOOL:
            return marker
    return None


def write_marker(dest: Path, *, files: list[str], **facts: Any) -> None:
    """The marker: what wrote DEST, from which output; rewritten when the export completes."""
    marker = {
        "tool": _TOOL,
        "version": __version__,
        "written": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": files,
        **facts,
    }
    tmp = dest / f"{MARKER}.tmp"
    tmp.write_bytes(orjson.dumps(marker, option=orjson.OPT_INDENT_2) + b"\n")
    os.replace(tmp, dest / MARKER)


class Mapping:
    """``.batchclassify-mapping.tsv``: one line per row of the output, written as we go.

    Tab-separated (Excel's tab dialect: a field holding a tab, quote or line break is quoted);
    ``classes`` is the row's classes as the model named them, a JSON list, so a class a
    format had to rename (a folder name too long, a comma) is found again.
    """

    def __init__(self, dest: Path) -> None:
        self._handle = open(dest / MAPPING, "w", newline="", encoding="utf-8")  # noqa: SIM115
        self._writer = csv.writer(self._handle, dialect="excel-tab")
        self._writer.writerow(MAPPING_COLUMNS)

    def add(
        self,
        item_id: str,
        source: str,
        exported: str,
        split: str,
        outcome: str,
        review: bool,
        classes: list[str] | None = None,
    ) -> None:
        listed = "" if classes is None else orjson.dumps(classes).decode()
        self._writer.writerow((item_id, source, exported, split, outcome, int(review), listed))

    def close(self) -> None:
        self._handle.close()
