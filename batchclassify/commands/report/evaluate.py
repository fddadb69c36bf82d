"""``report --truth``, ``--json``, ``--write-thresholds``: their flags; the figures as JSON."""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from ...errors import UsageError
from ..thresholds import write_thresholds
from .facts import JobFacts
from .metrics import Evaluation
from .stats import QUANTILES, ReportStats
from .truth import open_truth

DEFAULT_TARGET_PRECISION = 0.95


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The truth flags of ``report``."""
    group = parser.add_argument_group("against a truth (is the model good enough?)")
    group.add_argument(
        "--truth",
        metavar="SOURCE",
        help="score the answers against true labels: folder (the image's parent folder's "
        "name), column:NAME (a metadata column, e.g. a manifest's label), or a CSV/JSONL of "
        "id,label (or path,label / filename,label), or a _classes.csv (one-hot)",
    )
    group.add_argument(
        "--json", action="store_true", help="print the figures (and metrics) as JSON instead"
    )
    group.add_argument(
        "--target-precision",
        type=float,
        default=DEFAULT_TARGET_PRECISION,
        metavar="P",
        help=f"per-class thresholds reaching this precision (default {DEFAULT_TARGET_PRECISION})",
    )
    group.add_argument(
        "--write-thresholds",
        type=Path,
        metavar="FILE",
        help="with --truth: write those per-class thresholds as JSON, for export --thresholds",
    )


def start(args: argparse.Namespace) -> Evaluation | None:
    """The evaluation the flags ask for (the truth file read now: a bad one fails first)."""
    if not 0.0 < args.target_precision <= 1.0:
        raise UsageError(f"--target-precision {args.target_precision}: give a number in (0, 1]")
    if args.truth is None:
        if args.write_thresholds is not None:
            raise UsageError("--write-thresholds needs --truth: thresholds come from true labels")
        return None
    per_class = args.per_class if args.html is not None else 0
    return Evaluation(
        open_truth(args.truth), per_class=per_class, target_precision=args.target_precision
    )


def tap(rows: Iterable[dict[str, Any]], evaluation: Evaluation | None) -> Iterator[dict[str, Any]]:
    """``rows``, each also counted by ``evaluation``: one pass feeds both."""
    for row in rows:
        if evaluation is not None:
            evaluation.add(row)
        yield row


def finish(evaluation: Evaluation, args: argparse.Namespace) -> dict[str, Any]:
    """The metrics; the thresholds file written when asked."""
    evaluation.truth.check(evaluation.rows)
    figures = evaluation.figures()
    if args.write_thresholds is not None:
        classes = figures["thresholds"]["classes"]
        write_thresholds(
            args.write_thresholds,
            {name: cls["threshold"] for name, cls in classes.items()},
            {
                "output": str(args.output),
                "truth": figures["truth"],
                "target_precision": args.target_precision,
                "rows": figures["scored"],
            },
        )
    return figures


def report_figures(stats: ReportStats, facts: JobFacts) -> dict[str, Any]:
    """The text report's figures as plain data, for ``--json``."""
    return {
        "output": facts.output,
        "model": facts.model,
        "server": facts.server,
        "confidence_threshold": facts.confidence,
        "images": stats.rows,
        "ok": stats.ok,
        "failed": stats.failed,
        "multilabel": stats.multilabel,
        "low_confidence": stats.low,
        "below_low_confidence": stats.below,
        "no_class": stats.no_class,
        "classes": {
            name: {
                "count": cls.count,
                "below_low_confidence": cls.below,
                "quantiles": {str(q): cls.quantile(q) for q in QUANTILES},
            }
            for name, cls in stats.ranked_classes()
        },
        "errors": {
            kind: {"count": error.count, "examples": error.examples, "message": error.message}
            for kind, error in sorted(stats.errors.items(), key=lambda p: (-p[1].count, p[0]))
        },
        "by": None
        if stats.by is None
        else {"column": stats.by, "values": {k: dict(v) for k, v in stats.by_counts.items()}},
    }


def dumps(data: dict[str, Any]) -> str:
    """JSON for scripts: NaN never appears (it is not JSON)."""
    return orjson.dumps(data, option=orjson.OPT_INDENT_2, default=_finite).decode() + "\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError
