"""How unsure the model was about a row: what ``select`` ranks by and ``push --select review``
orders by. Higher is less sure.

Single-label, from the row's class scores ``p`` (best first):

- ``least-confidence``: ``1 - p[0]``;
- ``margin``: ``1 - (p[0] - p[1])`` (a 0.51 / 0.49 call is less sure than 0.51 / 0.10);
- ``entropy``: ``-sum(p * ln p)``.

Multi-label: every class is a yes/no call of its own at the job's threshold ``t``:
``least-confidence`` is ``1 - min(max(p, 1 - p))`` over the classes, ``margin``
``1 - min(|p - t|)`` (the call nearest the threshold), ``entropy`` the sum of each call's
binary entropy.

A row with no class at all (nothing passed the threshold) is the least sure of all
(``inf``): the model did not say what it is. Margin and entropy need every class's score;
a single-label row holds only the classes above the server's threshold (``--confidence``,
0.4 by default), which ``truncated`` tells.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

MEASURES = ("margin", "entropy", "least-confidence")
#: The server's class threshold when the job set none (``--confidence``).
SERVER_THRESHOLD = 0.4


def scores(row: dict[str, Any]) -> list[float]:
    """The row's class scores, best first."""
    found = [
        float(entry["confidence"])
        for entry in row.get("predictions") or ()
        if isinstance(entry, dict) and isinstance(entry.get("confidence"), int | float)
    ]
    found.sort(reverse=True)
    return found


def has_class(row: dict[str, Any]) -> bool:
    """Whether the model gave the row a class (a top class, or a predicted one)."""
    return bool(row.get("predicted_classes")) or (
        not row.get("multilabel") and bool(row.get("top"))
    )


def truncated(row: dict[str, Any]) -> bool:
    """A single-label row missing classes' scores: the server left out those under its
    threshold, so the scores it holds add up to visibly less than 1."""
    return not row.get("multilabel") and has_class(row) and sum(scores(row)) < 0.95


def _binary_entropy(p: float) -> float:
    return -sum(q * math.log(q) for q in (p, 1.0 - p) if q > 0)


def measure(name: str, *, threshold: float) -> Callable[[dict[str, Any]], float]:
    """The function giving a row's uncertainty by ``name`` (one of ``MEASURES``);
    ``threshold``: the job's, for multi-label margins."""
    if name not in MEASURES:
        raise ValueError(f"unknown measure {name!r}: use one of {', '.join(MEASURES)}")

    def uncertainty(row: dict[str, Any]) -> float:
        if not has_class(row):
            return math.inf
        p = scores(row)
        if not p:
            return math.inf
        if row.get("multilabel"):
            if name == "least-confidence":
                return 1.0 - min(max(q, 1.0 - q) for q in p)
            if name == "margin":
                return 1.0 - min(abs(q - threshold) for q in p)
            return sum(_binary_entropy(q) for q in p)
        if name == "least-confidence":
            return 1.0 - p[0]
        if name == "margin":
            return 1.0 - (p[0] - (p[1] if len(p) > 1 else 0.0))
        return -sum(q * math.log(q) for q in p if q > 0)

    return uncertainty


def threshold_of(settings: dict[str, Any] | None) -> float:
    """The class threshold the job ran with (its settings' ``confidence``), else the
    server's default."""
    value = (settings or {}).get("confidence")
    return float(value) if isinstance(value, int | float) else SERVER_THRESHOLD
