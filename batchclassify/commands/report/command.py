"""``batchclassify report``: flags in, text report out, and the HTML page when asked."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ...errors import UsageError
from ...exit_codes import ExitCode
from ...names import printable
from ...output.reading import check_output, iter_latest_rows, read_job_settings, run_folder
from . import evaluate
from .facts import job_facts
from .stats import ReportStats, collect
from .text import render_text

DEFAULT_LOW = 0.5
DEFAULT_PER_CLASS = 24
API_DEFAULT_THRESHOLD = 0.4
"""The hosted API's confidence threshold when a job set none (multi-label yes/no line)."""

_EPILOG = """\
examples:
  batchclassify report results.jsonl
  batchclassify report results.parquet --html report.html
  batchclassify report results.jsonl --html report.html --by split --low-confidence 0.7
  batchclassify report results.jsonl --truth folder --write-thresholds thresholds.json

Works on a finished output and on one a job is still writing (or left when killed); it
only reads. Thumbnails are embedded (local files, at most 160 px); URL items are shown by
URL, fetched by the browser. Images are found by their ids (absolute paths), from any folder.
Exit codes: 0 done, 1 --html could read no image of its gallery, 2 bad flags or not an output.
"""


def register(commands: Any) -> None:
    """Add the ``report`` command to the CLI's subparsers."""
    parser = commands.add_parser(
        "report",
        help="summarise an output: classes, confidences, failures; --html for a review page",
        description="Summarise what a job wrote, on stdout: counts, classes and their share, "
        "confidence quantiles per class, how many were unsure, failures by error type, and the "
        "job's "
        "model and settings. With --html, also write one self-contained page (charts, and a "
        "review gallery of the least confident images per class) that opens offline.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG,
    )
    parser.add_argument("output", type=Path, metavar="OUTPUT", help="a run's .jsonl or .parquet")
    parser.add_argument(
        "--html", type=Path, metavar="FILE", help="also write the report as one HTML page"
    )
    parser.add_argument(
        "--low-confidence",
        type=float,
        default=DEFAULT_LOW,
        metavar="F",
        help=f"count images whose confidence is below F as unsure (default {DEFAULT_LOW})",
    )
    parser.add_argument(
        "--per-class",
        type=int,
        default=DEFAULT_PER_CLASS,
        metavar="N",
        help="review gallery: the N least confident images of each class "
        f"(default {DEFAULT_PER_CLASS}; single-label: smallest margin between the first two "
        "classes; multi-label: confidence nearest the threshold)",
    )
    parser.add_argument(
        "--by",
        metavar="COLUMN",
        help="break the class distribution down by this metadata column (e.g. split)",
    )
    evaluate.add_flags(parser)
    parser.set_defaults(handler=command_report)


def threshold_of(settings: dict[str, Any] | None) -> float:
    """The job's confidence threshold as 0..1 (the API reads 40 as 40%)."""
    value = (settings or {}).get("confidence")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return API_DEFAULT_THRESHOLD
    return value / 100 if value >= 1 else float(value)


def _check_flags(args: argparse.Namespace) -> None:
    if not 0.0 <= args.low_confidence <= 1.0:
        raise UsageError(f"--low-confidence {args.low_confidence}: give a number within 0..1")
    if args.per_class < 0:
        raise UsageError(f"--per-class {args.per_class}: give 0 or more")
    if args.html is not None:
        from .html import check_page_target  # here: a text report never loads the page's code

        check_page_target(args.html, args.output)


def _check_by(stats: ReportStats, output: Path) -> None:
    if stats.by is None or stats.by_seen or not stats.rows:
        return
    columns = ", ".join(sorted(stats.extra_columns)) or "none (items came from a folder)"
    raise UsageError(f"--by {stats.by}: no such column in {output}; metadata columns: {columns}")


def command_report(args: argparse.Namespace) -> int:
    """Print the text report; write the HTML page with ``--html``."""
    output: Path = args.output
    check_output(output)  # a clear error for a missing or foreign output, before anything
    _check_flags(args)
    settings = read_job_settings(output)
    evaluation = evaluate.start(args)
    if evaluation is not None:
        evaluation.truth.count_names(iter_latest_rows(output))
    stats = collect(
        evaluate.tap(iter_latest_rows(output), evaluation),
        low=args.low_confidence,
        per_class=args.per_class if args.html is not None else 0,
        threshold=threshold_of(settings),
        by=args.by,
    )
    _check_by(stats, output)
    facts = job_facts(output)
    figures = None if evaluation is None else evaluate.finish(evaluation, args)
    if args.json:
        data = evaluate.report_figures(stats, facts)
        sys.stdout.write(evaluate.dumps(data if figures is None else dict(data, metrics=figures)))
    else:
        sys.stdout.write(render_text(stats, facts))
        if figures is not None:
            from .truthtext import render_truth_text

            sys.stdout.write(render_truth_text(figures))
    if args.html is None:
        return ExitCode.OK
    from .html import gallery_thumbnails, render_html, write_page

    base = run_folder(output)
    thumbs = gallery_thumbnails(stats, base=base)
    first = []
    if evaluation is not None and figures is not None:
        from .truthhtml import truth_sections

        first = truth_sections(figures, evaluation.mistakes(), base)
    page = render_html(stats, facts, base=base, thumbs=thumbs, first=first)
    write_page(args.html, page)
    size = len(page.encode("utf-8")) / 1e6
    print(printable(f"wrote {args.html} ({size:.1f} MB)"), file=sys.stderr)
    if thumbs and not any(thumbs.values()):
        print(
            printable(
                f"batchclassify: no image could be read: none of the {len(thumbs):,} local "
                f"images of the review gallery was found or readable (moved, deleted, or "
                f"another machine's?); the first: {next(iter(thumbs))}"
            ),
            file=sys.stderr,
        )
        return ExitCode.FAILED_ITEMS
    return ExitCode.OK
