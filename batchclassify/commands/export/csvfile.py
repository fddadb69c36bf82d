"""``csv``: one flat CSV file, a line per classified image (URL items included).

Columns: id, path, url, split, top, confidence, predicted_classes (a JSON list, so a class
holding ``;`` or ``,`` reads back as itself: ``json.loads``), needs_review (1 below
--min-confidence or with no class), then the manifest's metadata columns.

Formula injection: a spreadsheet runs a cell that starts with ``=``, ``+``, ``-``, ``@`` (or a
tab or carriage return) as a formula. Such a text cell (a class name, an id, metadata) gets a
leading ``'``, which spreadsheets show as text (OWASP's advice); numbers (``-3.5``) are left
as they are. ``--no-formula-guard`` (``ExportOptions.formula_guard``) writes every cell as is.

Written to a temporary file (``.DEST.tmp``, made new: an existing one is refused, never
written over) renamed over DEST at the end, so DEST is never half written.
"""

from __future__ import annotations

import csv
import os
import re
from typing import Any, TextIO

import orjson

from ...errors import OutputError, UsageError
from .options import ExportOptions
from .records import Record, Survey

COLUMNS = ("id", "path", "url", "split", "top", "confidence", "predicted_classes", "needs_review")
HEADER_START = ",".join(COLUMNS)
_FORMULA_START = frozenset("=+-@\t\r")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def prepare_file(options: ExportOptions) -> None:
    """DEST must be a new file, or with --overwrite a CSV this command wrote."""
    dest = options.dest
    if dest.is_dir():
        raise UsageError(f"{dest} is a folder; --to csv writes one file: name a file, e.g. out.csv")
    if not dest.exists() or dest.stat().st_size == 0:
        return
    if not options.overwrite:
        raise UsageError(f"{dest} exists; choose a new file, or pass --overwrite to replace it")
    try:
        with open(dest, encoding="utf-8", errors="replace") as handle:
            first = handle.readline()
    except OSError as exc:
        raise UsageError(f"cannot read {dest}: {exc.strerror}") from None
    if not first.startswith(HEADER_START):
        raise UsageError(
            f"--overwrite: {dest} was not written by batchclassify export (its header differs); "
            "refusing to replace it. Choose another file"
        )


class CsvFormat:
    """A flat CSV of the rows."""

    names_unique_across_folders = False

    def __init__(self, options: ExportOptions) -> None:
        self._options = options
        self._tmp = options.dest.with_name(f".{options.dest.name}.tmp")
        self._metadata: list[str] = []
        self._handle: TextIO | None = None
        self._writer: Any = None
        self._count = 0

    def rename_class(self, name: str) -> str:
        return name

    def placement(self, record: Record) -> tuple[str, str] | None:
        return None

    def own_files(self, survey: Survey) -> list[str]:
        return []

    def begin(self, survey: Survey, classes: dict[str, str]) -> None:
        self._metadata = list(survey.metadata)
        try:
            self._options.dest.parent.mkdir(parents=True, exist_ok=True)
            # "x": a file of that name that is not ours (a user's, or one left by an export
            # that was killed) is never written over, nor removed on abort.
            self._handle = open(self._tmp, "x", encoding="utf-8", newline="")  # noqa: SIM115
        except FileExistsError:
            raise OutputError(
                f"{self._tmp} exists (left by an export that was killed, or not batchclassify's)"
                "; the CSV is written there first: remove or move it, then rerun"
            ) from None
        except OSError as exc:
            raise OutputError(f"cannot write {self._tmp}: {exc.strerror}") from None
        self._writer = csv.writer(self._handle)
        # A metadata column named like one of ours (a manifest's own "split") keeps a prefix.
        header = [f"meta_{key}" if key in COLUMNS else key for key in self._metadata]
        self._writer.writerow([*COLUMNS, *header])

    def add(self, record: Record, exported: str | None) -> None:
        row = record.row
        cells = [
            record.id,
            record.path or "",
            record.url or "",
            record.split,
            record.top or "",
            "" if record.confidence is None else record.confidence,
            orjson.dumps(record.classes).decode(),
            int(record.review),
            *(_cell(row.get(key)) for key in self._metadata),
        ]
        if self._options.formula_guard:
            cells = [guard_formula(cell) for cell in cells]
        self._writer.writerow(cells)
        self._count += 1

    def end(self) -> list[str]:
        if self._handle is not None:
            self._handle.close()
            os.replace(self._tmp, self._options.dest)
        return [f"  {self._options.dest}: {self._count:,} lines"]

    def abort(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._tmp.unlink(missing_ok=True)


def _cell(value: Any) -> Any:
    return "" if value is None else value


def guard_formula(cell: Any) -> Any:
    """A text cell a spreadsheet would run as a formula, with a ``'`` before it."""
    if isinstance(cell, str) and cell and cell[0] in _FORMULA_START and not _NUMBER.fullmatch(cell):
        return "'" + cell
    return cell
