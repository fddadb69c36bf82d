"""Rows of an output as export records, and the first pass that sizes up the export.

The first pass (``survey``) learns what a streaming writer must know before its first line:
every class (a CSV header, a labeling config), the metadata columns, whether the model was
multi-label, and which file names collide. It keeps only those, never the rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ...models import ROW_FIELDS, row_is_ok
from ...output.idindex import IdIndex
from ...output.reading import iter_latest_rows, iter_rows, read_job_settings
from ..thresholds import sure
from .files import FileNames
from .options import ExportOptions, content_key, split_of

_ROW_FIELDS = frozenset(ROW_FIELDS)


@dataclass(slots=True)
class Record:
    """One classified image, as every export format sees it."""

    id: str
    path: str | None
    url: str | None
    split: str
    top: str | None
    confidence: float | None
    classes: list[str]
    """The labels the row holds (``labels_of``): what every format writes, nothing else."""
    multilabel: bool
    review: bool
    """Below --min-confidence, or no class at all: a person should look at it."""
    row: dict[str, Any]

    @property
    def source(self) -> str:
        return self.path if self.path is not None else (self.url or "")

    @property
    def metadata(self) -> dict[str, Any]:
        """The manifest's own columns carried in the row."""
        return {k: v for k, v in self.row.items() if k not in _ROW_FIELDS}


def labels_of(row: dict[str, Any]) -> list[str]:
    """The labels an ``ok`` row holds: the classes the model predicted, and only those.

    A multi-label row's ``top`` is its best score even when no class passed the model's
    threshold: such a row holds no label (it is exported with none, and needs review).
    """
    predicted = row.get("predicted_classes")
    if predicted or row.get("multilabel"):
        return list(predicted or ())
    top = row.get("top")
    return [top] if top else []


def rows_of(options: ExportOptions, *, latest: bool = True) -> Iterator[dict[str, Any]]:
    """The output's rows (each id's latest, or every row), those of ``--only`` alone."""
    rows = iter_latest_rows(options.output) if latest else iter_rows(options.output)
    only = options.only
    return rows if only is None else (row for row in rows if row["id"] in only)


def make_record(row: dict[str, Any], options: ExportOptions, splits: Splits) -> Record:
    """The record of an ``ok`` row."""
    confidence = row.get("confidence")
    top = row.get("top") or None
    classes = labels_of(row)
    threshold = options.min_confidence
    review = (
        top is None
        or not classes
        or (threshold is not None and (confidence is None or confidence < threshold))
        or (options.thresholds is not None and not _sure(row, classes, options.thresholds))
    )
    return Record(
        id=row["id"],
        path=row.get("path"),
        url=row.get("url"),
        split=splits.of(row),
        top=top,
        confidence=confidence,
        classes=classes,
        multilabel=bool(row.get("multilabel")),
        review=review,
        row=row,
    )


def _sure(row: dict[str, Any], classes: list[str], thresholds: dict[str, float | None]) -> bool:
    """Every label the row holds passes its class's threshold (single-label: the top
    confidence; multi-label: each label's own score)."""
    if not row.get("multilabel"):
        return sure(classes[0], row.get("confidence"), thresholds)
    scores = {p.get("class"): p.get("confidence") for p in row.get("predictions") or ()}
    return all(sure(label, scores.get(label), thresholds) for label in classes)


class Splits:
    """Each image's split, keyed by its bytes: byte-identical images land in one split.

    A file is hashed once (``content_key``, streamed): the survey's pass keeps each id's
    split in an ``IdIndex`` (a byte per id) for the writing pass. An image whose bytes
    cannot be read (a URL item, a file gone) is split by its id.
    """

    def __init__(self, options: ExportOptions) -> None:
        self._splits = options.splits
        self._seed = options.seed
        self._known = IdIndex()

    def of(self, row: dict[str, Any]) -> str:
        if len(self._splits) == 1:
            return self._splits[0][0]
        item_id = row["id"]
        tag = self._known.get(item_id)
        if tag:
            return self._splits[tag - 1][0]
        path = row.get("path")
        key = (content_key(path) if path else None) or item_id
        name = split_of(key, self._splits, self._seed)
        index = next(n for n, (split, _) in enumerate(self._splits) if split == name)
        if index < 255:  # an IdIndex tag is a byte
            self._known.set(item_id, index + 1)
        return name


@dataclass
class Survey:
    """What the first pass learnt: all an export needs to know before writing."""

    splits: Splits
    """Each record's split, kept from this pass for the next."""
    rows: int = 0
    ok: int = 0
    multilabel: bool = False
    classes: dict[str, None] = field(default_factory=dict)
    """Every class seen, in a predicted set or a score (insertion-ordered set)."""
    metadata: dict[str, None] = field(default_factory=dict)
    names: FileNames = field(default_factory=FileNames)
    model: str | None = None


#: (record) -> (folder, file name) it would be exported to, or None if it has no file.
Placement = Callable[[Record], tuple[str, str] | None]


def survey(
    options: ExportOptions, placement: Placement | None, names: FileNames | None = None
) -> Survey:
    """One pass over the output (latest rows when files are placed, so names count once)."""
    found = Survey(splits=Splits(options))
    if names is not None:
        found.names = names
    settings = read_job_settings(options.output) or {}
    found.model = settings.get("model") if isinstance(settings.get("model"), str) else None
    rows = rows_of(options, latest=placement is not None)
    for row in rows:
        found.rows += 1
        for key in row:
            if key not in _ROW_FIELDS and key not in found.metadata:
                found.metadata[key] = None
        if not row_is_ok(row):
            continue
        found.ok += 1
        found.multilabel = found.multilabel or bool(row.get("multilabel"))
        classes = found.classes
        for name in row.get("predicted_classes") or ():
            if name not in classes:
                classes[name] = None
        for prediction in row.get("predictions") or ():
            if prediction["class"] not in classes:
                classes[prediction["class"]] = None
        if placement is not None:
            target = placement(make_record(row, options, found.splits))
            if target is not None:
                found.names.count(*target)
    return found
