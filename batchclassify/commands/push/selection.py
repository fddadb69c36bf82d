"""Which rows of an output a push sends, in what order, to which split.

``all``: every ``ok`` row, in the output's order. ``review``: the rows a person should check
(no class, or a top confidence under ``--min-confidence``), least sure first (the margin
between the first two classes, ``uncertainty.py``). ``--per-class N`` takes at most N of
each class (a row's class is its top one), and with ``--limit`` the classes take turns, so
a rare class is not crowded out by a common one. Failed rows are never selected.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...models import ContradictoryRowError, is_answer, row_is_ok
from ...output.reading import image_file, iter_latest_rows, read_job_settings, run_folder
from ..export.options import content_key, split_of
from ..export.records import labels_of
from ..select import manifest_ids
from ..uncertainty import has_class, measure, threshold_of
from .options import PushOptions


@dataclass(frozen=True, slots=True)
class PushItem:
    """One image to push: where it is, its classes, its split, and what to tell Roboflow."""

    id: str
    path: str | None
    """The local file to upload (``reading.image_file``), or ``None`` for a URL item."""
    url: str | None
    classes: tuple[str, ...]
    multilabel: bool
    top: str | None
    confidence: float | None
    split: str


@dataclass
class Selection:
    """The items chosen and what the output held besides."""

    items: list[PushItem] = field(default_factory=list)
    rows: int = 0
    failed_rows: int = 0
    """Error rows in the output: never pushed."""
    model: str | None = None
    left_out: Counter[str] = field(default_factory=Counter)
    """Rows not selected, by reason."""


def select_items(options: PushOptions) -> Selection:
    """The output's rows to push, as ``options`` choose them."""
    settings = read_job_settings(options.output) or {}
    model = settings.get("model") if isinstance(settings.get("model"), str) else None
    found = Selection(model=model)
    wanted = manifest_ids(options.only, flag="--only") if options.only is not None else None
    uncertainty = measure("margin", threshold=threshold_of(settings))
    ranked: list[tuple[float, int, dict[str, Any]]] = []
    for row in iter_latest_rows(options.output):
        found.rows += 1
        if not row_is_ok(row):
            found.failed_rows += 1
            continue
        if wanted is not None and row["id"] not in wanted:
            found.left_out["not in --only"] += 1
            continue
        if options.select == "review" and not _needs_review(row, options.min_confidence):
            found.left_out["confident (--select review)"] += 1
            continue
        order = -uncertainty(row) if options.select == "review" else 0.0
        ranked.append((order, len(ranked), row))
    ranked.sort(key=lambda entry: (entry[0], entry[1]))
    rows = [row for _, _, row in ranked]
    chosen = _take(rows, per_class=options.per_class, limit=options.limit)
    found.left_out["over --per-class or --limit"] += len(rows) - len(chosen)
    base = run_folder(options.output)
    found.items = [_item(row, options, base) for row in chosen]
    found.left_out = +found.left_out  # drop the zero counts
    return found


def _needs_review(row: dict[str, Any], min_confidence: float) -> bool:
    confidence = row.get("confidence")
    return (
        not has_class(row)
        or not isinstance(confidence, int | float)
        or (confidence < min_confidence)
    )


def _take(
    rows: list[dict[str, Any]], *, per_class: int | None, limit: int | None
) -> list[dict[str, Any]]:
    """At most ``per_class`` rows of each class; then at most ``limit``, the classes taking
    turns (each class's first row, then each one's second...) so none crowds out the rest."""
    if per_class is None:
        return rows if limit is None else rows[:limit]
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        group = groups.setdefault(row.get("top") or "", [])
        if len(group) < per_class:
            group.append(row)
    kept = [row for group in groups.values() for row in group]
    if limit is None or len(kept) <= limit:
        position = {id(row): n for n, row in enumerate(rows)}
        return sorted(kept, key=lambda row: position[id(row)])
    turns = [
        row
        for rank in range(per_class)
        for group in groups.values()
        if rank < len(group)
        for row in (group[rank],)
    ]
    return turns[:limit]


def _item(row: dict[str, Any], options: PushOptions, base: Path | None = None) -> PushItem:
    if row.get("status") != "ok" or not is_answer(row):
        # Where rows become uploads: a failed row must never reach Roboflow as a prediction.
        raise ContradictoryRowError(f"row {row['id']!r} is not a classified image: not pushed")
    path = image_file(row["id"], row.get("path"), base=base or run_folder(options.output))
    url = row.get("url") if path is None else None
    key = (content_key(path) if path is not None and len(options.splits) > 1 else None) or row["id"]
    confidence = row.get("confidence")
    return PushItem(
        id=row["id"],
        path=path,
        url=url,
        classes=tuple(labels_of(row)),
        multilabel=bool(row.get("multilabel")),
        top=row.get("top") or None,
        confidence=float(confidence) if isinstance(confidence, int | float) else None,
        split=split_of(key, options.splits, options.seed),
    )
