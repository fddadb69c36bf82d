"""Is a confidence of 0.9 right nine times in ten? Reliability bins, ECE, per-class thresholds.

``Reliability``: the answers in ten equal confidence bins, edged as scikit-learn's
``calibration_curve(strategy="uniform")`` edges them (a value on an edge falls in the bin
below it); the expected calibration error is the bins' ``|accuracy - confidence|`` weighted
by their share of the answers. Single-label: each answer's top confidence, right or wrong;
multi-label: every (image, class) score, against whether the truth holds the class.

``Sweep``: per predicted class, how many of its answers (right ones apart) have each
confidence, in bins of 0.001 whose edges are the thresholds offered. Precision and recall at
a threshold ``t`` count the answers with confidence >= ``t``, exactly as ``export
--thresholds`` keeps them (the bin of a value is fixed by comparing it with the threshold
floats themselves, not by ``int(value * 1000)``, which rounds 0.123 into the wrong bin).
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

RELIABILITY_BINS = 10
STEPS = 1000
"""Thresholds offered: 0.000, 0.001, ..., 0.999 (and 1.0)."""
SWEEP_SHOWN = 20
"""Points of the sweep in ``--json`` (every 0.05); the threshold search uses every step."""

# The edges numpy's linspace(0, 1, 11) makes (i * 0.1 is not i / 10: 3 * 0.1 > 0.3).
_EDGES = [i * (1.0 / RELIABILITY_BINS) for i in range(RELIABILITY_BINS)] + [1.0]
_THRESHOLDS = [i / STEPS for i in range(STEPS + 1)]


@dataclass
class Reliability:
    """Counts, right answers and summed confidence per bin."""

    count: list[int] = field(default_factory=lambda: [0] * RELIABILITY_BINS)
    right: list[int] = field(default_factory=lambda: [0] * RELIABILITY_BINS)
    total: list[float] = field(default_factory=lambda: [0.0] * RELIABILITY_BINS)

    def add(self, confidence: float, right: bool) -> None:
        index = min(bisect.bisect_left(_EDGES, confidence, 1, RELIABILITY_BINS) - 1, 9)
        self.count[index] += 1
        self.right[index] += right
        self.total[index] += confidence

    def figures(self) -> dict[str, Any]:
        answers = sum(self.count)
        bins = []
        ece = 0.0
        for i, count in enumerate(self.count):
            if not count:
                continue
            accuracy = self.right[i] / count
            confidence = self.total[i] / count
            ece += count / answers * abs(accuracy - confidence)
            bins.append(
                {
                    "low": round(_EDGES[i], 2),
                    "high": round(_EDGES[i + 1], 2),
                    "count": count,
                    "confidence": confidence,
                    "accuracy": accuracy,
                }
            )
        return {"answers": answers, "ece": ece, "bins": bins}


def step_of(confidence: float) -> int:
    """The sweep bin of ``confidence``: ``k`` with ``k/1000 <= confidence < (k+1)/1000``."""
    return max(0, min(bisect.bisect_right(_THRESHOLDS, confidence) - 1, STEPS))


@dataclass
class Sweep:
    """Per predicted class: answers and right answers per 0.001 of confidence."""

    answers: dict[str, list[int]] = field(default_factory=dict)
    right: dict[str, list[int]] = field(default_factory=dict)

    def add(self, label: str, confidence: float, right: bool) -> None:
        answers = self.answers.get(label)
        if answers is None:
            answers = self.answers[label] = [0] * (STEPS + 1)
            self.right[label] = [0] * (STEPS + 1)
        step = step_of(confidence)
        answers[step] += 1
        if right:
            self.right[label][step] += 1

    def curve(self, label: str, support: int) -> list[tuple[float, int, int, float, float]]:
        """(threshold, answers kept, right kept, precision, recall) at every step, from the top."""
        kept = right = 0
        points = []
        answers, rights = self.answers[label], self.right[label]
        for step in range(STEPS, -1, -1):
            kept += answers[step]
            right += rights[step]
            precision = right / kept if kept else 1.0
            recall = right / support if support else 0.0
            points.append((_THRESHOLDS[step], kept, right, precision, recall))
        points.reverse()
        return points

    def figures(self, support: Counter[str], *, target: float) -> dict[str, Any]:
        """Per class: the lowest threshold whose kept answers reach ``target`` precision (the
        most recall that precision allows), or ``None`` when no threshold does; and the
        curve every 0.05."""
        classes: dict[str, Any] = {}
        every = STEPS // SWEEP_SHOWN
        for label in sorted(self.answers):
            curve = self.curve(label, support[label])
            chosen = next((p for p in curve if p[1] and p[3] >= target), None)
            classes[label] = {
                "threshold": chosen[0] if chosen else None,
                "precision": chosen[3] if chosen else None,
                "recall": chosen[4] if chosen else 0.0,
                "kept": chosen[1] if chosen else 0,
                "answers": curve[0][1],
                "sweep": [
                    {"threshold": t, "precision": p, "recall": r, "kept": k}
                    for t, k, _, p, r in curve[::every]
                ],
            }
        return {"target_precision": target, "classes": classes}
