"""Everything a report shows, gathered in one streaming pass over an output's rows.

Memory is bounded whatever the job size: counters per class, per error type and per ``--by``
value, fixed-bin confidence histograms (quantiles come from them, to within half a bin), and
the review gallery's bounded heaps (``gallery.py``). No row is kept.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ...models import ROW_FIELDS, row_is_ok
from .gallery import Gallery

BINS = 1000
"""Fine confidence bins: quantiles are exact to within 0.0005."""

NO_CLASS = "(no class)"
"""Single-label rows where no class passed the model's threshold; multi-label rows with none."""

FAILED = "(failed)"
"""The ``--by`` breakdown's column for failed rows."""

OTHER = "(other)"
"""The ``--by`` values past ``MAX_BY_VALUES``, lumped together."""

NONE_VALUE = "(none)"
"""A ``--by`` column missing or empty in a row."""

MAX_BY_VALUES = 200
MAX_ERROR_EXAMPLES = 3
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
QUANTILE_METHOD = "nearest rank, to within 0.0005"
"""How the report's quantiles are computed, as the report and the README name it: the
nearest-rank method (the smallest confidence with at least q of them at or below it; no
interpolation), read from ``BINS`` bins, so to within half a bin."""


@dataclass
class ClassStats:
    """One class: images labelled with it, their confidences, how many were unsure."""

    count: int = 0
    below: int = 0
    histogram: list[int] = field(default_factory=lambda: [0] * BINS)

    def add(self, confidence: float | None, low: float) -> None:
        self.count += 1
        if confidence is None:
            return
        self.histogram[_bin(confidence)] += 1
        if confidence < low:
            self.below += 1

    def quantile(self, q: float) -> float | None:
        """Nearest-rank quantile, as the middle of its bin; ``None`` without confidences."""
        return histogram_quantile(self.histogram, q)


@dataclass
class ErrorStats:
    """One ``error_type``: how many, a few example items, and the first message seen."""

    count: int = 0
    examples: list[str] = field(default_factory=list)
    message: str = ""


@dataclass
class ReportStats:
    """The figures of one output. Feed rows with ``add``; read the fields afterwards."""

    low: float
    by: str | None = None
    threshold: float = 0.5
    per_class: int = 24
    rows: int = 0
    ok: int = 0
    failed: int = 0
    multilabel: bool = False
    below: int = 0
    no_class: int = 0
    classes: dict[str, ClassStats] = field(default_factory=dict)
    overall: list[int] = field(default_factory=lambda: [0] * BINS)
    errors: dict[str, ErrorStats] = field(default_factory=dict)
    cooccurrence: Counter[tuple[str, str]] = field(default_factory=Counter)
    by_counts: dict[str, Counter[str]] = field(default_factory=dict)
    by_seen: bool = False
    extra_columns: set[str] = field(default_factory=set)
    elapsed_ms: float = 0.0
    timed: int = 0
    gallery: Gallery = field(init=False)

    def __post_init__(self) -> None:
        self.gallery = Gallery(size=self.per_class, threshold=self.threshold)

    def add(self, row: dict[str, Any]) -> None:
        """Count one row (the latest row of its id)."""
        self.rows += 1
        if self.rows <= 1000:  # enough to name the columns --by can use
            self.extra_columns.update(key for key in row if key not in _KNOWN)
        elapsed = row.get("elapsed_ms")
        if isinstance(elapsed, int | float):
            self.elapsed_ms += elapsed
            self.timed += 1
        if row_is_ok(row):
            labels = self._add_ok(row)
        else:
            self._add_error(row)
            labels = [FAILED]
        if self.by is not None:
            self._add_by(row, labels)

    def _add_ok(self, row: dict[str, Any]) -> list[str]:
        self.ok += 1
        confidence = _confidence(row.get("confidence"))
        if confidence is not None:
            self.overall[_bin(confidence)] += 1
            if confidence < self.low:
                self.below += 1
        if row.get("multilabel"):
            self.multilabel = True
            return self._add_multilabel(row)
        top = row.get("top")
        label = top if isinstance(top, str) and top else NO_CLASS
        if label == NO_CLASS:
            self.no_class += 1
        self._class(label).add(confidence, self.low)
        if label != NO_CLASS:
            self.gallery.add_single(label, row)
        return [label]

    def _add_multilabel(self, row: dict[str, Any]) -> list[str]:
        scores = _scores(row.get("predictions"))
        predicted = [c for c in row.get("predicted_classes") or () if isinstance(c, str)]
        for name in scores.keys() - self.classes.keys():
            self.classes[name] = ClassStats()  # a class seen, even if never chosen
        for name in predicted:
            self._class(name).add(scores.get(name), self.low)
        for i, first in enumerate(predicted):
            for second in predicted[i + 1 :]:
                self.cooccurrence[min(first, second), max(first, second)] += 1
        if not predicted:
            self.no_class += 1
        self.gallery.add_multi(row, scores, predicted)
        return predicted or [NO_CLASS]

    def _add_error(self, row: dict[str, Any]) -> None:
        self.failed += 1
        kind = row.get("error_type") or "unknown"
        stats = self.errors.setdefault(kind, ErrorStats())
        stats.count += 1
        if len(stats.examples) < MAX_ERROR_EXAMPLES:
            stats.examples.append(row.get("path") or row.get("url") or row["id"])
        if not stats.message and isinstance(row.get("error"), str):
            stats.message = row["error"]

    def _add_by(self, row: dict[str, Any], labels: Iterable[str]) -> None:
        value = row.get(self.by) if self.by is not None else None
        if self.by in row:
            self.by_seen = True
        key = NONE_VALUE if value is None or value == "" else str(value)
        if key not in self.by_counts and len(self.by_counts) >= MAX_BY_VALUES:
            key = OTHER
        counts = self.by_counts.setdefault(key, Counter())
        counts["(images)"] += 1
        for label in labels:
            counts[label] += 1

    def _class(self, name: str) -> ClassStats:
        stats = self.classes.get(name)
        if stats is None:
            stats = self.classes[name] = ClassStats()
        return stats

    def ranked_classes(self) -> list[tuple[str, ClassStats]]:
        """Classes by count, most frequent first; ``(no class)`` last; never-chosen dropped."""
        named = [(n, s) for n, s in self.classes.items() if n != NO_CLASS and s.count]
        named.sort(key=lambda pair: (-pair[1].count, pair[0]))
        if self.no_class:
            named.append((NO_CLASS, self.classes.get(NO_CLASS) or ClassStats(count=self.no_class)))
        return named


_KNOWN = frozenset(ROW_FIELDS)


def _bin(confidence: float) -> int:
    return min(max(int(confidence * BINS), 0), BINS - 1)


def _confidence(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _scores(predictions: Any) -> dict[str, float]:
    """``{class: confidence}`` from a row's ``predictions`` list."""
    try:  # the shape every row written by ``run`` has
        return {entry["class"]: float(entry["confidence"]) for entry in predictions or ()}
    except (KeyError, TypeError, ValueError):
        pass
    scores: dict[str, float] = {}
    for entry in predictions or ():
        if isinstance(entry, dict) and isinstance(entry.get("class"), str):
            confidence = _confidence(entry.get("confidence"))
            scores[entry["class"]] = confidence if confidence is not None else 0.0
    return scores


def histogram_quantile(histogram: list[int], q: float) -> float | None:
    """Nearest-rank ``q`` quantile of a fine histogram over 0..1, as its bin's middle."""
    total = sum(histogram)
    if not total:
        return None
    rank = max(1, -(-int(q * total * 1_000_000) // 1_000_000))  # ceil(q * total), float-safe
    seen = 0
    for index, count in enumerate(histogram):
        seen += count
        if seen >= rank:
            return (index + 0.5) / len(histogram)
    return 1.0


def coarse(histogram: list[int], bins: int = 20) -> list[int]:
    """The fine histogram summed into ``bins`` equal bins, for drawing."""
    step = len(histogram) // bins
    return [sum(histogram[i : i + step]) for i in range(0, step * bins, step)]


def collect(
    rows: Iterable[dict[str, Any]],
    *,
    low: float,
    per_class: int,
    threshold: float,
    by: str | None = None,
) -> ReportStats:
    """Stream ``rows`` into a ``ReportStats``."""
    stats = ReportStats(low=low, by=by, threshold=threshold, per_class=per_class)
    for row in rows:
        stats.add(row)
    return stats
