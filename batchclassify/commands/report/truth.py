"""Where ``report --truth`` and ``diff --truth`` find each image's true labels.

``folder``: the image's parent folder's name, as Roboflow's and torchvision's folder formats
read it (``train/cat/x.jpg`` is ``cat``; a URL's path is read the same way). ``column:NAME``:
a metadata column the output carries (a manifest's ``label``; a JSON list, or a Parquet
column's JSON text of one, for several labels). Any other value is a file: a CSV or JSONL of
a key and a label (key column ``id``, ``path``, ``url`` or a file name column: ``filename``,
``file``, ``image``; label column ``label``, ``labels``, ``class``, ``classes`` or ``truth``),
or Roboflow's multi-label ``_classes.csv`` (``filename`` then one 0/1 column per class),
matched by file name.

A key is trusted only when it names one image: a key the file lists twice with different
labels is ambiguous, and keyed by file name, output rows that share a name (``day1/IMG_1.jpg``
and ``day2/IMG_1.jpg``: camera folders repeat names) could be either line; both are rows
with no truth, counted (``ambiguous_keys``, ``shared_names``), never given one's label.

A file is read once into an ``IdIndex`` of its keys (a 64-bit hash and a 4-byte label-set
number per key, ~30 bytes a key) and the distinct label sets: a million keys cost ~40 MB,
never the file's text. A row with no truth gets ``None``: it is counted, never guessed.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

from ...errors import UsageError
from ...output.idindex import IdIndex

FOLDER = "folder"
COLUMN = "column:"
KEY_COLUMNS = {
    "id": "id",
    "path": "path",
    "url": "url",
    "filename": "name",
    "file_name": "name",
    "file": "name",
    "image": "name",
}
"""Key column -> what of a row it is matched against (``name``: the file name alone)."""
LABEL_COLUMNS = ("label", "labels", "class", "classes", "truth")

Labels = tuple[str, ...]

AMBIGUOUS = 2**32 - 1
"""The label-set number of a key listed with different labels (a wide tag's largest)."""


class Truth:
    """Each row's true labels: ``of(row)`` is a tuple of labels, or ``None`` if unknown."""

    description: str = ""
    several: bool = False
    """Whether some image has more than one true label (a multi-label truth)."""
    ambiguous_keys: int = 0
    """Keys the truth lists with different labels: their rows have no truth."""
    shared_names: int = 0
    """Rows left without a truth because another row of the output has the same file name."""

    def count_names(self, rows: Iterable[dict[str, Any]]) -> None:
        """Before scoring: a pass over the output's rows when the truth is keyed by file name
        (to know which names more than one row has); otherwise ``rows`` is not read."""

    def of(self, row: dict[str, Any]) -> Labels | None:
        raise NotImplementedError

    def check(self, rows: int) -> None:
        """After the pass over ``rows`` rows: raise ``UsageError`` if the source matched none
        for a reason the user can fix (a misspelt column)."""


def open_truth(spec: str) -> Truth:
    """The truth a ``--truth`` value names; ``UsageError`` naming it if it cannot be read."""
    if spec == FOLDER:
        return FolderTruth()
    if spec.startswith(COLUMN):
        name = spec[len(COLUMN) :]
        if not name:
            raise UsageError(f"--truth {spec}: name the column, e.g. column:label")
        return ColumnTruth(name)
    path = Path(spec)
    if not path.is_file():
        raise UsageError(
            f"--truth {spec}: no such file; give folder, column:NAME, or a CSV/JSONL of "
            "id,label (or a _classes.csv)"
        )
    return FileTruth(path)


def where(row: dict[str, Any]) -> str | None:
    """The row's image location as a path: its ``path``, or its URL's path."""
    path = row.get("path")
    if isinstance(path, str) and path:
        return path.replace("\\", "/")
    url = row.get("url")
    if isinstance(url, str) and url:
        return unquote(urlsplit(url).path)
    return None


def _name(row: dict[str, Any]) -> str | None:
    location = where(row)
    return location.rstrip("/").rsplit("/", 1)[-1] if location else None


class FolderTruth(Truth):
    description = "the parent folder's name"

    def of(self, row: dict[str, Any]) -> Labels | None:
        location = where(row)
        if location is None:
            return None
        parts = location.rstrip("/").split("/")
        return (parts[-2],) if len(parts) >= 2 and parts[-2] not in ("", ".", "..") else None


def labels_in(value: Any) -> Labels | None:
    """A cell or JSON value as labels: a list, a JSON list's text, or one label."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError:
                return (text,)
        else:
            return (text,) if text else None
    if isinstance(value, list | tuple):
        labels = tuple(dict.fromkeys(str(v).strip() for v in value if str(v).strip()))
        return labels
    if value is None or isinstance(value, bool):
        return None
    return (str(value),)


class ColumnTruth(Truth):
    def __init__(self, column: str) -> None:
        self.column = column
        self.description = f"the {column!r} column"
        self._seen = False
        self._columns: set[str] = set()

    def of(self, row: dict[str, Any]) -> Labels | None:
        if self.column not in row:
            if not self._seen and len(self._columns) < 200:
                self._columns.update(row)
            return None
        self._seen = True
        labels = labels_in(row[self.column])
        if labels is not None and len(labels) > 1:
            self.several = True
        return labels

    def check(self, rows: int) -> None:
        if rows and not self._seen:
            from ...models import ROW_FIELDS

            extra = sorted(self._columns - set(ROW_FIELDS))
            columns = ", ".join(extra) or "none (the items came from a folder: try --truth folder)"
            raise UsageError(
                f"--truth column:{self.column}: the output has no such column; its metadata "
                f"columns: {columns}"
            )


class FileTruth(Truth):
    """A CSV or JSONL file of keys and labels, indexed once."""

    def __init__(self, path: Path) -> None:
        self.description = str(path)
        self._index = IdIndex(wide=True)
        self._sets: dict[Labels, int] = {}
        self._labels: list[Labels] = []
        self.key = "id"
        self.keys = 0
        self._names: IdIndex | None = None
        """File name -> 1 (one output row has it) or 2 (several), after ``count_names``."""
        try:
            with open(path, "rb") as handle:
                head = handle.read(1).lstrip()
                handle.seek(0)
                rows = self._jsonl(handle, path) if head == b"{" else self._csv(handle, path)
                for key, labels in rows:
                    self._add(key, labels)
        except OSError as exc:
            raise UsageError(f"--truth {path}: cannot read it ({exc.strerror})") from None
        if not self.keys:
            raise UsageError(f"--truth {path}: holds no labelled rows")

    def _add(self, key: str, labels: Labels | None) -> None:
        if not key or labels is None:
            return
        number = self._sets.get(labels)
        if number is None:
            number = self._sets[labels] = len(self._labels) + 1
            self._labels.append(labels)
            self.several = self.several or len(labels) > 1
        previous = self._index.set(key, number)
        if not previous:
            self.keys += 1
        elif previous == AMBIGUOUS or previous != number:
            # listed again with other labels: neither line can be trusted for this key
            self.ambiguous_keys += previous != AMBIGUOUS
            self._index.set(key, AMBIGUOUS)

    def _csv(self, handle: io.BufferedReader, path: Path) -> Iterator[tuple[str, Labels | None]]:
        text = io.TextIOWrapper(handle, encoding="utf-8-sig", newline="")
        reader = csv.reader(text)
        header = [cell.strip() for cell in next(reader, [])]
        lowered = [cell.lower() for cell in header]
        key_at = next((i for i, name in enumerate(lowered) if name in KEY_COLUMNS), None)
        label_at = next((i for i, name in enumerate(lowered) if name in LABEL_COLUMNS), None)
        if key_at is None:
            raise UsageError(
                f"--truth {path}: no key column; the header needs one of "
                f"{', '.join(KEY_COLUMNS)} (it has {', '.join(header) or 'nothing'})"
            )
        self.key = KEY_COLUMNS[lowered[key_at]]
        if label_at is None:  # Roboflow's _classes.csv: one 0/1 column per class
            classes = [(i, name) for i, name in enumerate(header) if i != key_at]
            if not classes:
                raise UsageError(f"--truth {path}: no label column ({', '.join(LABEL_COLUMNS)})")
            for cells in reader:
                if len(cells) > key_at:
                    on = tuple(n for i, n in classes if i < len(cells) and cells[i].strip() == "1")
                    yield cells[key_at].strip(), on
            self.several = True  # one-hot: a multi-label truth, even where one label is set
            return
        for cells in reader:
            if len(cells) > max(key_at, label_at):
                yield cells[key_at].strip(), labels_in(cells[label_at])

    def _jsonl(self, handle: io.BufferedReader, path: Path) -> Iterator[tuple[str, Labels | None]]:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise UsageError(f"--truth {path}: line {number} is not JSON") from None
            if not isinstance(record, dict):
                continue
            key_name = next((k for k in KEY_COLUMNS if k in record), None)
            label_name = next((k for k in LABEL_COLUMNS if k in record), None)
            if key_name is None or label_name is None:
                raise UsageError(
                    f"--truth {path}: line {number} needs a key ({', '.join(KEY_COLUMNS)}) "
                    f"and a label ({', '.join(LABEL_COLUMNS)})"
                )
            self.key = KEY_COLUMNS[key_name]
            yield str(record[key_name]), labels_in(record[label_name])

    def count_names(self, rows: Iterable[dict[str, Any]]) -> None:
        if self.key != "name":
            return
        seen = IdIndex()  # only names the truth holds: bounded by the truth, not the output
        for row in rows:
            name = _name(row)
            if name is not None and self._index.get(name):
                seen.set(name, min(seen.get(name) + 1, 2))
        self._names = seen

    def of(self, row: dict[str, Any]) -> Labels | None:
        by_name = self.key == "name"
        key = _name(row) if by_name else row.get(self.key)
        if not isinstance(key, str):
            return None
        number = self._index.get(key)
        if not number or number == AMBIGUOUS:
            return None
        if by_name and self._names is not None and self._names.get(key) > 1:
            self.shared_names += 1
            return None
        return self._labels[number - 1]
