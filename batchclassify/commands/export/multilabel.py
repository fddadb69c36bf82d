"""``roboflow-multilabel``: DEST/{split}/{file} plus DEST/{split}/_classes.csv, one-hot.

Written for Roboflow's folder parser (``roboflow.util.folderparser``), which
- splits each line on plain commas, with no CSV quoting: a comma (or quote, or line break)
  inside a class or file name would shift every column after it; such characters become ``_``;
- strips every field: a class with spaces at either end is written stripped (``' red'`` as
  ``'red'``; two classes that become one are refused), a file name's end spaces become ``_``;
- finds an image's line by its file name alone, in the first ``_classes.csv`` of *any* split
  that has it: file names are unique in the whole export (``FileNames(across_folders=True)``);
- takes a file named like the annotation file (``_classes.png``) for that file's image, and
  then reads no other line: such an image is renamed.
Renamed classes are printed; renamed files are in the mapping file. A row with no predicted
class (none passed the model's threshold) gets no label (all zeros) and needs review;
images below --min-confidence are exported as usual; both are flagged in the mapping file.
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

    names_unique_across_folders = True

    def __init__(self, options: ExportOptions) -> None:
        self._dest = options.dest
        self._split_names = options.split_names
        self._classes: list[str] = []
        self._rename: dict[str, str] = {}
        self._files: dict[str, TextIO] = {}
        self._counts: Counter[str] = Counter()

    def rename_class(self, name: str) -> str:
        cleaned = "".join("_" if ch in _UNSAFE else ch for ch in name).strip()
        return cleaned or "_"

    def placement(self, record: Record) -> tuple[str, str] | None:
        if record.path is None:
            return None
        name = safe_part(record.path.replace("\\", "/").rsplit("/", 1)[-1], also=_UNSAFE)
        # Roboflow strips the file name it reads: spaces at either end would not match.
        core = name.strip()
        start = name.index(core) if core else len(name)
        name = "_" * start + core + "_" * (len(name) - start - len(core))
        if name.rpartition(".")[0].lower() == CLASSES_CSV.rpartition(".")[0]:
            name = "image" + name
        return record.split, name

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
        self._files.clear()
        return [
            f"  {split}/: {count:,} images, {split}/{CLASSES_CSV} ({len(self._classes)} classes)"
            for split, count in sorted(self._counts.items())
        ]
