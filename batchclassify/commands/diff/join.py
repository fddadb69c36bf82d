"""Two outputs of the same images joined on id: where their answers agree, where they flip.

A's latest rows are read once into an id index (``IdIndex`` with wide tags: the row's number)
and two arrays (its answer's number, its confidence): ~30–45 bytes an id, 45 MB for a
million. B's latest rows then stream past it. An answer is the top class (single-label) or
the sorted set of predicted classes joined by `` + `` (multi-label); ``(no class)`` when
none passed the model's threshold, ``(failed)`` for a failed row. Only answers of rows
``ok`` on both sides are compared. Memory is bounded by the answers' pairs, not the rows.
"""

from __future__ import annotations

import heapq
from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...models import row_is_ok
from ...output.idindex import IdIndex
from ...output.reading import iter_ids, iter_latest_rows
from ..report.stats import FAILED, NO_CLASS
from ..report.truth import Truth

MAX_EXAMPLES = 5


def answer_of(row: dict[str, Any]) -> tuple[str, float | None]:
    """The row's answer and its confidence (multi-label: the highest predicted score)."""
    if not row_is_ok(row):
        return FAILED, None
    confidence = row.get("confidence")
    score = float(confidence) if isinstance(confidence, int | float) else None
    if row.get("multilabel"):
        predicted = sorted(c for c in row.get("predicted_classes") or () if isinstance(c, str))
        return (" + ".join(predicted) if predicted else NO_CLASS), score
    top = row.get("top")
    return (top if isinstance(top, str) and top else NO_CLASS), score


@dataclass(frozen=True, slots=True)
class Flip:
    """One image whose answer changed from A to B."""

    id: str
    path: str | None
    url: str | None
    a: str
    a_confidence: float
    b: str
    b_confidence: float
    truth: tuple[str, ...] | None


@dataclass
class Diff:
    """What the join found; ``figures()`` is it as plain data."""

    a_rows: int = 0
    b_rows: int = 0
    both: int = 0
    compared: int = 0
    """Ids in both with an ``ok`` row on each side."""
    failed_a: int = 0
    failed_b: int = 0
    only_a: int = 0
    only_b: int = 0
    only_a_examples: list[str] = field(default_factory=list)
    only_b_examples: list[str] = field(default_factory=list)
    pairs: Counter[tuple[str, str]] = field(default_factory=Counter)
    shift_sum: float = 0.0
    shifted: int = 0
    truth_scored: int = 0
    a_right: int = 0
    b_right: int = 0
    flip_outcomes: Counter[str] = field(default_factory=Counter)
    flips_shown: list[tuple[float, int, Flip]] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        flips = sum(n for (a, b), n in self.pairs.items() if a != b)
        lost: Counter[str] = Counter()
        gained: Counter[str] = Counter()
        for (a, b), n in self.pairs.items():
            if a != b:
                lost[a] += n
                gained[b] += n
        classes = sorted(set(lost) | set(gained))
        figures: dict[str, Any] = {
            "a_images": self.a_rows,
            "b_images": self.b_rows,
            "in_both": self.both,
            "compared": self.compared,
            "failed_in_a": self.failed_a,
            "failed_in_b": self.failed_b,
            "only_in_a": self.only_a,
            "only_in_b": self.only_b,
            "only_in_a_examples": self.only_a_examples,
            "only_in_b_examples": self.only_b_examples,
            "agreement": (self.compared - flips) / self.compared if self.compared else None,
            "flips": flips,
            "mean_confidence_shift": self.shift_sum / self.shifted if self.shifted else None,
            "pairs": [
                {"a": a, "b": b, "count": n}
                for (a, b), n in sorted(self.pairs.items(), key=lambda p: (-p[1], p[0]))
            ],
            "per_class": {
                name: {"lost": lost[name], "gained": gained[name], "net": gained[name] - lost[name]}
                for name in classes
            },
        }
        if self.truth_scored or self.flip_outcomes:
            figures["truth"] = {
                "scored": self.truth_scored,
                "a_accuracy": self.a_right / self.truth_scored if self.truth_scored else None,
                "b_accuracy": self.b_right / self.truth_scored if self.truth_scored else None,
                "flips": {
                    key: self.flip_outcomes[key]
                    for key in ("a_right", "b_right", "neither", "no_truth")
                },
            }
        return figures

    def flips(self) -> list[Flip]:
        """The flips kept for the gallery, the surest (A's + B's confidence) first."""
        return [entry[2] for entry in sorted(self.flips_shown, key=lambda e: (-e[0], -e[1]))]


class _Answers:
    """Answer names, numbered once (an answer is stored as its number)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._numbers: dict[str, int] = {}

    def number(self, name: str) -> int:
        found = self._numbers.get(name)
        if found is None:
            found = self._numbers[name] = len(self.names)
            self.names.append(name)
        return found


def diff(
    a: Path,
    b: Path,
    *,
    truth: Truth | None = None,
    gallery: int = 0,
) -> Diff:
    """Join ``a`` and ``b`` on id; keep the ``gallery`` surest flips for the page."""
    found = Diff()
    answers = _Answers()
    index = IdIndex(wide=True)
    a_answer = array("I")
    a_confidence = array("d")
    for row in iter_latest_rows(a):
        name, confidence = answer_of(row)
        found.a_rows += 1
        index.set(row["id"], found.a_rows)
        a_answer.append(answers.number(name))
        a_confidence.append(float("nan") if confidence is None else confidence)
    seen = bytearray(found.a_rows)
    sequence = 0
    for row in iter_latest_rows(b):
        found.b_rows += 1
        number = index.get(row["id"])
        if not number:
            found.only_b += 1
            if len(found.only_b_examples) < MAX_EXAMPLES:
                found.only_b_examples.append(row["id"])
            continue
        seen[number - 1] = 1
        found.both += 1
        was = answers.names[a_answer[number - 1]]
        now, now_confidence = answer_of(row)
        found.failed_a += was == FAILED
        found.failed_b += now == FAILED
        if FAILED in (was, now):
            continue
        found.compared += 1
        found.pairs[was, now] += 1
        was_confidence = a_confidence[number - 1]
        if now_confidence is not None and was_confidence == was_confidence:  # not NaN
            found.shift_sum += now_confidence - was_confidence
            found.shifted += 1
        labels = truth.of(row) if truth is not None else None
        if truth is not None:
            _score_truth(found, was, now, labels)
        if was != now and gallery > 0:
            sequence += 1
            sureness = (0.0 if was_confidence != was_confidence else was_confidence) + (
                now_confidence or 0.0
            )
            flip = Flip(
                row["id"],
                row.get("path"),
                row.get("url"),
                was,
                0.0 if was_confidence != was_confidence else was_confidence,
                now,
                now_confidence or 0.0,
                labels,
            )
            entry = (sureness, -sequence, flip)
            if len(found.flips_shown) < gallery:
                heapq.heappush(found.flips_shown, entry)
            elif entry > found.flips_shown[0]:
                heapq.heapreplace(found.flips_shown, entry)
    found.only_a = found.a_rows - sum(seen)
    if found.only_a:
        found.only_a_examples = _unseen(iter_ids(a), index, seen)
    return found


def _score_truth(found: Diff, was: str, now: str, labels: tuple[str, ...] | None) -> None:
    if labels is None:
        found.flip_outcomes["no_truth"] += was != now
        return
    truth = " + ".join(sorted(labels)) if labels else NO_CLASS
    found.truth_scored += 1
    found.a_right += was == truth
    found.b_right += now == truth
    if was != now:
        key = "a_right" if was == truth else "b_right" if now == truth else "neither"
        found.flip_outcomes[key] += 1


def _unseen(ids: Iterable[str], index: IdIndex, seen: bytearray) -> list[str]:
    """A few ids of A that B lacks (a third pass over A's ids, stopped when enough)."""
    examples: list[str] = []
    for item_id in ids:
        number = index.get(item_id)
        if number and not seen[number - 1] and item_id not in examples:
            examples.append(item_id)
            if len(examples) == MAX_EXAMPLES:
                break
    return examples
