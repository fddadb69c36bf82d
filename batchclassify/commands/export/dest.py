"""DEST: refuse to mix an export into someone's folder, and ``--overwrite`` only our own.

A tree export writes ``batchclassify-export.json`` (the marker) first and
``batchclassify-mapping.csv`` (every row: where its image went, or why it was left out) as it
goes, each image's line before the image. ``--overwrite`` deletes only what those two name, and
only when nothing else is in DEST: a file the export did not write is never deleted.
"""

from __future__ import annotations

import csv
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from ...errors import UsageError
from ...output.idindex import IdIndex
from ...version import __version__

MARKER = "batchclassify-export.json"
MAPPING = "batchclassify-mapping.csv"
MAPPING_COLUMNS = ("id", "source", "exported", "split", "outcome", "needs_review")
_TOOL = "batchclassify export"


def prepare_folder(dest: Path, *, overwrite: bool) -> None:
    """Make DEST an empty folder we may write into, or raise ``UsageError`` saying why not."""
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest} is a file; this format writes a folder: name a new folder")
    if not dest.exists():
        try:
            dest.mkdir(parents=True)
        except OSError as exc:
            raise UsageError(f"cannot create {dest}: {exc.strerror}") from None
        return
    if not any(os.scandir(dest)):
        return
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
    for path in ours:
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
    for name in (MARKER, MAPPING, *marker.get("files", [])):
        known.set(str(name), 1)
    try:
        with open(dest / MAPPING, newline="", encoding="utf-8") as handle:
            for record in csv.DictReader(handle):
                if record.get("exported"):
                    known.set(record["exported"], 1)
    except FileNotFoundError:
        pass
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise UsageError(f"--overwrite: cannot read {dest / MAPPING} ({exc})") from None
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
    try:
        marker = orjson.loads((dest / MARKER).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
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
    tmp = dest / f".{MARKER}.tmp"
    tmp.write_bytes(orjson.dumps(marker, option=orjson.OPT_INDENT_2) + b"\n")
    os.replace(tmp, dest / MARKER)


class Mapping:
    """``batchclassify-mapping.csv``: one line per row of the output, written as we go."""

    def __init__(self, dest: Path) -> None:
        self._handle = open(dest / MAPPING, "w", newline="", encoding="utf-8")  # noqa: SIM115
        self._writer = csv.writer(self._handle)
        self._writer.writerow(MAPPING_COLUMNS)

    def add(
        self, item_id: str, source: str, exported: str, split: str, outcome: str, review: bool
    ) -> None:
        self._writer.writerow((item_id, source, exported, split, outcome, int(review)))

    def close(self) -> None:
        self._handle.close()
