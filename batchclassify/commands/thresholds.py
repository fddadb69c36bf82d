"""The per-class thresholds file: written by ``report --write-thresholds``, read by ``export
--thresholds``.

``{"made_by": "batchclassify report", "target_precision": 0.95, "thresholds": {class: t}}``:
an answer of a class counts as sure when its confidence is at least ``t``; ``null`` means no
threshold reached the target on the rows it was derived from, so every answer of that class
needs review. A class not in the file has no threshold of its own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from ..errors import UsageError

MADE_BY = "batchclassify report"

Thresholds = dict[str, float | None]


def write_thresholds(path: Path, thresholds: Thresholds, about: dict[str, Any]) -> None:
    """Write the file (via a temporary one); never over a file that is not ours."""
    if path.is_dir():
        raise UsageError(f"--write-thresholds {path}: is a folder; name a .json file")
    if path.exists():
        try:
            ours = orjson.loads(path.read_bytes()).get("made_by") == MADE_BY
        except (OSError, orjson.JSONDecodeError, AttributeError):
            ours = False
        if not ours:
            raise UsageError(
                f"--write-thresholds {path}: exists and is not a thresholds file batchclassify "
                "wrote; remove it or choose another name"
            )
    data = {"made_by": MADE_BY, **about, "thresholds": thresholds}
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise UsageError(f"--write-thresholds {path}: cannot write it ({exc.strerror})") from None


def read_thresholds(path: Path) -> Thresholds:
    """The ``{class: threshold or None}`` of a file; ``UsageError`` naming what is wrong."""
    try:
        data = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise UsageError(f"--thresholds {path}: cannot read it ({exc.strerror})") from None
    except orjson.JSONDecodeError:
        raise UsageError(
            f"--thresholds {path}: not JSON (write it with report --write-thresholds)"
        ) from None
    found = data.get("thresholds") if isinstance(data, dict) else None
    if not isinstance(found, dict):
        raise UsageError(f'--thresholds {path}: no "thresholds" object of class: number')
    thresholds: Thresholds = {}
    for name, value in found.items():
        if value is None:
            thresholds[name] = None
        elif isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
            thresholds[name] = float(value)
        else:
            raise UsageError(f"--thresholds {path}: {name!r}: {value!r} is not a number in 0..1")
    return thresholds


def sure(label: str, score: float | None, thresholds: Thresholds) -> bool:
    """Whether an answer of ``label`` with ``score`` passes its class's threshold."""
    if label not in thresholds:
        return True
    threshold = thresholds[label]
    return threshold is not None and score is not None and score >= threshold
