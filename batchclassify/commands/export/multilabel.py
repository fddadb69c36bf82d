"""``roboflow-multilabel``: DEST/{split}/{file} plus DEST/{split}/_classes.csv, one-hot.

Roboflow reads ``_classes.csv`` by splitting each line on plain commas, with no CSV quoting:
a comma (or quote, or line break) inside a class or file name would shift every column after
it. Such characters become ``_`` (said in the printout; file renames are in the mapping file).
Images below --min-confidence are exported as usual and flagged in the mapping file.
"""

from __future__ import annotations

from collections import Counter
from typing import TextIO

from ...errors import OutputError
from .files import safe_part
from .options import ExportOptions
from .records import Record, Survey

CLASSES_CSV = "_classes.csv"
_UNSAFE = ',"\n\r'


class MultilabelFormat:
    """Roboflow's multi-label classification layout."""

    def __init__(self, options: ExportOptions) -> None:
        self._dest = options.dest
        self._split_names = options.split_names
        self._classes: list[str] = []
        self._rename: dict[str, str] = {}
        self._files: dict[str, TextIO] = {}
        self._counts: Counter[str] = Counter()

    def rename_class(self, name: str) -> str:
        cleaned = "".join("_" if ch in _UNSAFE else ch for ch in name)
        return cleaned or "_"

    def placement(self, record: Record) -> tuple[str, str] | None:
        if record.path is None:
            return None
        name = record.path.replace("\\", "/").rsplit("/", 1)[-1]
        return record.split, safe_part(name, also=_UNSAFE)

    def own_files(self, survey: Survey) -> list[str]:
        return [f"{split}/{CLASSES_CSV}" for split in self._split_names]

    def begin(self, survey: Survey, classes: dict[str, str]) -> None:
        self._rename = classes
        self._classes = sorted(set(classes.values()))

    def _csv(self, split: str) -> TextIO:
        handle = self._files.get(split)
        if handle is None:
            path = self._dest / split / CLASSES_CSV
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                handle = open(path, "w", encoding="utf-8", newline="\n")  # noqa: SIM115
            except OSError as exc:
                raise OutputError(f"cannot write {path}: {exc.strerror}") from None
            handle.write(",".join(["filename", *self._classes]) + "\n")
            self._files[split] = handle
        return handle

    def add(self, record: Record, exported: str | None) -> None:
        if exported is None:
            return
        split, _, name = exported.partition("/")
        chosen = {self._rename.get(c, c) for c in record.classes}
        cells = ["1" if name_ in chosen else "0" for name_ in self._classes]
        self._csv(split).write(",".join([name, *cells]) + "\n")
        self._counts[split] += 1

    def end(self) -> list[str]:
        for handle in self._files.values():
            handle.close()
        return [
            f"  {split}/: {count:,} images, {split}/{CLASSES_CSV} ({len(self._classes)} classes)"
            for split, count in sorted(self._counts.items())
        ]
