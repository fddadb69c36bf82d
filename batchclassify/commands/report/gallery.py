"""The review gallery: for each class, the N images the model was least sure about.

Single-label: the smallest *margin* between the first and second class (a 0.51 / 0.49 call
is worth a look; a 0.51 / 0.10 one less so). Multi-label: for each class, the images whose
confidence for it lies nearest the threshold, on either side: the yes/no calls that could
have gone the other way. Candidates are the images labelled with the class and the near
misses (at least half the threshold); a confident "no" is never shown. One bounded heap per
class keeps memory flat.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

MAX_SHOWN_SCORES = 3


@dataclass(frozen=True, slots=True)
class ReviewItem:
    """One gallery card: where the image is, why it is here, and what the model said."""

    id: str
    path: str | None
    url: str | None
    score: float
    """Single-label: the margin between the first two classes; multi-label: the distance of
    the class's confidence from the threshold. Smaller is less sure."""
    scores: tuple[tuple[str, float], ...]
    """The classes to show with their confidences (the top ones, or those nearest the
    threshold)."""
    predicted: tuple[str, ...]


class Gallery:
    """Per class, the ``size`` rows with the lowest score, in bounded max-heaps."""

    def __init__(self, *, size: int, threshold: float) -> None:
        self.size = size
        self.threshold = threshold
        self._heaps: dict[str, list[tuple[float, int, ReviewItem]]] = {}
        self._seq = 0

    def _wants(self, label: str, score: float) -> bool:
        heap = self._heaps.get(label)
        return heap is None or len(heap) < self.size or score < -heap[0][0]

    def _push(self, label: str, item: ReviewItem) -> None:
        heap = self._heaps.setdefault(label, [])
        self._seq += 1
        # Ties go to the row seen first: -seq makes later rows the larger ones to drop.
        entry = (-item.score, -self._seq, item)
        if len(heap) < self.size:
            heapq.heappush(heap, entry)
        else:
            heapq.heappushpop(heap, entry)

    def add_single(self, label: str, row: dict[str, Any]) -> None:
        """A single-label row whose top class is ``label``."""
        if self.size <= 0:
            return
        # Rows list predictions highest first: the margin needs only the first two, and the
        # full list is only parsed for the few rows that make it into the heap.
        predictions = row.get("predictions") or ()
        first = _confidence_at(predictions, 0)
        if first is None:
            first = float(row.get("confidence") or 0.0)
        second = _confidence_at(predictions, 1) or 0.0
        margin = round(first - second, 6)
        if self._wants(label, margin):
            ranked = _ranked(predictions)
            shown = tuple(ranked[:MAX_SHOWN_SCORES]) or ((label, first),)
            self._push(label, _item(row, margin, shown, (label,)))

    def add_multi(
        self, row: dict[str, Any], scores: dict[str, float], predicted: list[str]
    ) -> None:
        """A multi-label row: a candidate for every class it has a confidence for."""
        if self.size <= 0:
            return
        chosen = set(predicted)
        for label, confidence in scores.items():
            if label not in chosen and confidence < self.threshold / 2:
                continue  # a confident "no": not worth a reviewer's look
            distance = round(abs(confidence - self.threshold), 6)
            if self._wants(label, distance):
                shown = self._nearest(scores, label)
                self._push(label, _item(row, distance, shown, tuple(predicted)))

    def _nearest(self, scores: dict[str, float], label: str) -> tuple[tuple[str, float], ...]:
        others = sorted(
            (pair for pair in scores.items() if pair[0] != label),
            key=lambda pair: abs(pair[1] - self.threshold),
        )
        return ((label, scores[label]), *others[: MAX_SHOWN_SCORES - 1])

    def items(self, label: str) -> list[ReviewItem]:
        """The class's cards, least sure first."""
        heap = self._heaps.get(label, [])
        return [entry[2] for entry in sorted(heap, key=lambda e: (-e[0], -e[1]))]

    def labels(self) -> list[str]:
        return list(self._heaps)


def _confidence_at(predictions: Any, index: int) -> float | None:
    try:
        value = predictions[index]["confidence"]
    except (IndexError, KeyError, TypeError):
        return None
    return float(value) if isinstance(value, int | float) else None


def _ranked(predictions: Any) -> list[tuple[str, float]]:
    pairs = [
        (entry["class"], float(entry.get("confidence") or 0.0))
        for entry in predictions or ()
        if isinstance(entry, dict) and isinstance(entry.get("class"), str)
    ]
    pairs.sort(key=lambda pair: -pair[1])
    return pairs


def _item(
    row: dict[str, Any],
    score: float,
    shown: tuple[tuple[str, float], ...],
    predicted: tuple[str, ...],
) -> ReviewItem:
    return ReviewItem(
        id=row["id"],
        path=row.get("path"),
        url=row.get("url"),
        score=score,
        scores=shown,
        predicted=predicted,
    )
