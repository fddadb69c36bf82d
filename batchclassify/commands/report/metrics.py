"""How right the model was, against a truth: counted in one streaming pass, computed at the end.

Memory is bounded by the classes, not the rows: a confusion ``Counter`` of (truth, predicted)
pairs (single-label) or per-label true/false positive counts (multi-label), top-k hit counts,
the calibration bins and per-class threshold histograms (``calibration.py``), and bounded
heaps of the most confident mistakes. The figures are scikit-learn's, on the same rows:
``classification_report`` (zero_division=0), ``confusion_matrix``, ``top_k_accuracy_score``,
``accuracy_score`` and ``hamming_loss`` on the multi-label indicator matrix.

Single-label rows where no class passed the model's threshold are predicted ``(no class)``:
wrong for accuracy, a miss for their true class's recall, and not a class of the averages
(scikit-learn's ``labels=`` without it). Failed rows are counted apart, never scored.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ...models import row_is_ok
from .calibration import Reliability, Sweep
from .stats import NO_CLASS, _scores
from .truth import Labels, Truth

TOP_K = (1, 3, 5)


@dataclass(frozen=True, slots=True)
class Mistake:
    """A wrong answer worth a look: the label the model gave, its score, the truth."""

    id: str
    path: str | None
    url: str | None
    label: str
    score: float
    truth: Labels


@dataclass
class Counts:
    """Per label: true positives, predicted, true (support)."""

    tp: Counter[str] = field(default_factory=Counter)
    predicted: Counter[str] = field(default_factory=Counter)
    support: Counter[str] = field(default_factory=Counter)


class Evaluation:
    """Feed rows with ``add``; ``figures()`` gives the metrics as plain data (JSON-ready)."""

    def __init__(self, truth: Truth, *, per_class: int = 0, target_precision: float = 0.95):
        self.truth = truth
        self.per_class = per_class
        self.target_precision = target_precision
        self.rows = 0
        self.scored = 0
        self.no_truth = 0
        self.failed = 0
        """Rows with a truth whose request failed: not scored."""
        self.several = 0
        """Single-label rows whose truth holds several labels (or none): not scored."""
        self.multilabel: bool | None = None
        self.correct = 0
        self.confusion: Counter[tuple[str, str]] = Counter()
        self.counts = Counts()
        self.top_k_hits = dict.fromkeys(TOP_K, 0)
        self.top_k_unknown = dict.fromkeys(TOP_K, 0)
        self.labels_seen: dict[str, None] = {}
        """Every class the model scored or the truth named (multi-label: the label set)."""
        self.mismatched = 0
        """Multi-label: symmetric-difference sizes summed (Hamming loss's numerator)."""
        self.reliability = Reliability()
        self.sweep = Sweep()
        self._mistakes: dict[str, list[tuple[float, int, Mistake]]] = {}
        self._seq = 0

    def add(self, row: dict[str, Any]) -> None:
        self.rows += 1
        truth = self.truth.of(row)
        if truth is None:
            self.no_truth += 1
            return
        if not row_is_ok(row):
            self.failed += 1
            return
        if self.multilabel is None:
            self.multilabel = bool(row.get("multilabel"))
        if self.multilabel:
            self._add_multi(row, truth)
        elif len(truth) != 1:
            self.several += 1
        else:
            self._add_single(row, truth[0])

    def _add_single(self, row: dict[str, Any], truth: str) -> None:
        self.scored += 1
        top = row.get("top")
        predicted = top if isinstance(top, str) and top else NO_CLASS
        self.confusion[truth, predicted] += 1
        self.counts.support[truth] += 1
        self.labels_seen.setdefault(truth)
        scores = _scores(row.get("predictions"))
        for name in scores:
            self.labels_seen.setdefault(name)
        if predicted == NO_CLASS:
            self._top_k(truth, scores)
            return
        self.labels_seen.setdefault(predicted)
        self.counts.predicted[predicted] += 1
        right = predicted == truth
        if right:
            self.correct += 1
            self.counts.tp[predicted] += 1
        confidence = _number(row.get("confidence"))
        if confidence is None:
            confidence = scores.get(predicted, 0.0)
        self.reliability.add(confidence, right)
        self.sweep.add(predicted, confidence, right)
        if not right:
            self._mistake(row, predicted, confidence, (truth,))
        self._top_k(truth, scores)

    def _top_k(self, truth: str, scores: dict[str, float]) -> None:
        """Whether ``truth`` is among the first k classes, ties ranked as scikit-learn ranks
        them (the later name first); a class not listed (below the job's threshold) ranks
        below every listed one, so a row is undecided only when fewer than k are listed."""
        score = scores.get(truth)
        if score is None:
            for k in TOP_K:
                if len(scores) < k:
                    self.top_k_unknown[k] += 1
            return
        rank = sum(1 for name, s in scores.items() if s > score or (s == score and name > truth))
        for k in TOP_K:
            self.top_k_hits[k] += rank < k

    def _add_multi(self, row: dict[str, Any], truth: Labels) -> None:
        self.scored += 1
        scores = _scores(row.get("predictions"))
        predicted = {c for c in row.get("predicted_classes") or () if isinstance(c, str)}
        wanted = set(truth)
        for name in (*scores, *truth, *predicted):
            self.labels_seen.setdefault(name)
        self.correct += predicted == wanted
        self.mismatched += len(predicted ^ wanted)
        self.counts.support.update(wanted)
        self.counts.predicted.update(predicted)
        self.counts.tp.update(predicted & wanted)
        for name, score in scores.items():
            self.reliability.add(score, name in wanted)
        for name in predicted:
            score = scores.get(name, 0.0)
            right = name in wanted
            self.sweep.add(name, score, right)
            if not right:
                self._mistake(row, name, score, truth)

    def _mistake(self, row: dict[str, Any], label: str, score: float, truth: Labels) -> None:
        if self.per_class <= 0:
            return
        heap = self._mistakes.setdefault(label, [])
        if len(heap) >= self.per_class and score <= heap[0][0]:
            return
        self._seq += 1
        item = Mistake(row["id"], row.get("path"), row.get("url"), label, score, truth)
        # A min-heap on (score, -seq): the least confident, then the latest, is dropped first.
        entry = (score, -self._seq, item)
        if len(heap) < self.per_class:
            heapq.heappush(heap, entry)
        else:
            heapq.heapreplace(heap, entry)

    def mistakes(self) -> dict[str, list[Mistake]]:
        """Per predicted label, its wrong answers, most confident first."""
        return {
            label: [entry[2] for entry in sorted(heap, key=lambda e: (-e[0], -e[1]))]
            for label, heap in sorted(self._mistakes.items())
        }

    # -- the figures -------------------------------------------------------------------

    def labels(self) -> list[str]:
        """The classes the figures are about, sorted as scikit-learn sorts them."""
        if self.multilabel:
            return sorted(self.labels_seen)
        named = {truth for truth, _ in self.confusion}
        named |= {predicted for _, predicted in self.confusion if predicted != NO_CLASS}
        return sorted(named)

    def figures(self) -> dict[str, Any]:
        """Every metric, as plain data: what ``--json`` prints and the pages show."""
        labels = self.labels()
        per_class = {name: self._class_figures(name) for name in labels}
        figures: dict[str, Any] = {
            "truth": self.truth.description,
            "kind": "multi-label" if self.multilabel else "single-label",
            "rows": self.rows,
            "scored": self.scored,
            "without_truth": self.no_truth,
            "failed_with_truth": self.failed,
            "ambiguous_truth_keys": self.truth.ambiguous_keys,
            "without_truth_shared_name": self.truth.shared_names,
        }
        if not self.multilabel:
            figures["several_truths"] = self.several
        if self.multilabel:
            figures["subset_accuracy"] = _ratio(self.correct, self.scored)
            cells = self.scored * len(labels)
            figures["hamming_loss"] = _ratio(self.mismatched, cells)
        else:
            figures["accuracy"] = _ratio(self.correct, self.scored)
            figures["no_class"] = sum(n for (_, p), n in self.confusion.items() if p == NO_CLASS)
        figures["classes"] = per_class
        figures["averages"] = self._averages(labels, per_class)
        if not self.multilabel:
            figures["confusion"] = self._confusion(labels)
            classes = len(set(labels) | set(self.labels_seen))
            figures["top_k_accuracy"] = self._top_k_figures(classes)
        figures["calibration"] = self.reliability.figures()
        figures["thresholds"] = self.sweep.figures(
            self.counts.support, target=self.target_precision
        )
        return figures

    def _class_figures(self, name: str) -> dict[str, Any]:
        tp = self.counts.tp[name]
        precision = _ratio(tp, self.counts.predicted[name])
        recall = _ratio(tp, self.counts.support[name])
        return {
            "precision": precision,
            "recall": recall,
            "f1": _f1(tp, self.counts.predicted[name], self.counts.support[name]),
            "support": self.counts.support[name],
            "predicted": self.counts.predicted[name],
        }

    def _averages(self, labels: list[str], per_class: dict[str, Any]) -> dict[str, Any]:
        averages: dict[str, Any] = {}
        if self.multilabel:
            tp = sum(self.counts.tp[n] for n in labels)
            predicted = sum(self.counts.predicted[n] for n in labels)
            support = sum(self.counts.support[n] for n in labels)
            averages["micro"] = {
                "precision": _ratio(tp, predicted),
                "recall": _ratio(tp, support),
                "f1": _f1(tp, predicted, support),
                "support": support,
            }
        count = len(labels)
        total = sum(per_class[n]["support"] for n in labels)
        averages["macro"] = {
            key: (sum(per_class[n][key] for n in labels) / count if count else 0.0)
            for key in ("precision", "recall", "f1")
        } | {"support": total}
        averages["weighted"] = {
            key: (
                sum(per_class[n][key] * per_class[n]["support"] for n in labels) / total
                if total
                else 0.0
            )
            for key in ("precision", "recall", "f1")
        } | {"support": total}
        return averages

    def _confusion(self, labels: list[str]) -> dict[str, Any]:
        """Rows are the truth, columns the prediction (``(no class)`` last when any)."""
        columns = labels + ([NO_CLASS] if any(p == NO_CLASS for _, p in self.confusion) else [])
        counts = [[self.confusion[truth, predicted] for predicted in columns] for truth in labels]
        normalized = [[_ratio(n, sum(row)) for n in row] for row in counts]
        return {"labels": labels, "columns": columns, "counts": counts, "normalized": normalized}

    def _top_k_figures(self, classes: int) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for k in TOP_K:
            if k > 1 and k >= classes:
                continue  # every class is in the first k: always 1.0, says nothing
            if self.top_k_unknown[k]:
                found[str(k)] = None  # the output lists too few classes (a --confidence cut)
            else:
                found[str(k)] = _ratio(self.top_k_hits[k], self.scored)
        return found


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def _f1(tp: int, predicted: int, support: int) -> float:
    """F1 as scikit-learn computes it: 2·tp / (predicted + support), 0 when both are 0."""
    return _ratio(2 * tp, predicted + support)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
