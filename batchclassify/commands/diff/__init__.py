"""``batchclassify diff A B``: two outputs of the same images compared image by image.

``join.py`` streams the two outputs into counts; this module prints them (text or
``--json``); ``page.py`` writes the HTML page with the flips' gallery.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ...errors import UsageError
from ...exit_codes import ExitCode
from ...names import printable
from ...output.reading import iter_latest_rows, output_kind, run_folder

DEFAULT_GALLERY = 60
MAX_TABLE = 10

_EPILOG = """\
examples:
  batchclassify diff old.jsonl new.jsonl
  batchclassify diff v3.parquet v4.parquet --truth folder --html diff.html
  batchclassify diff a.jsonl b.jsonl --json

A is read into an id index first (~30-45 bytes an image), then B streams past it. Exit
codes: 0 done, 2 bad flags or no such output.
"""


def register(commands: Any) -> None:
    """Add the ``diff`` command to the CLI's subparsers."""
    parser = commands.add_parser(
        "diff",
        help="compare two outputs of the same images: agreement, flips, confidence shift",
        description="Join two outputs (a new model version, another confidence, another "
        "server) on image id: how often they agree, the A x B table of answers, which "
        "classes gain or lose images, the mean confidence shift, images only in one of them; "
        "with --truth, which side was right where they differ.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG,
    )
    parser.add_argument("a", type=Path, metavar="A", help="the first output (.jsonl or .parquet)")
    parser.add_argument("b", type=Path, metavar="B", help="the second output")
    parser.add_argument("--html", type=Path, metavar="FILE", help="also write an HTML page")
    parser.add_argument(
        "--truth",
        metavar="SOURCE",
        help="true labels, as for report --truth: folder, column:NAME, or a CSV/JSONL file",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--flips",
        type=int,
        default=DEFAULT_GALLERY,
        metavar="N",
        help=f"HTML gallery: the N flips both sides were surest of (default {DEFAULT_GALLERY})",
    )
    parser.set_defaults(handler=command_diff)


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _short(name: str, width: int) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def render_text(figures: dict[str, Any], a: Path, b: Path) -> str:
    lines = [
        f"diff of A {a} and B {b}",
        f"images: A {figures['a_images']:,}, B {figures['b_images']:,}, in both "
        f"{figures['in_both']:,}; only in A {figures['only_in_a']:,}, only in B "
        f"{figures['only_in_b']:,}; failed in A {figures['failed_in_a']:,}, in B "
        f"{figures['failed_in_b']:,}",
    ]
    for side in ("a", "b"):
        if figures[f"only_in_{side}_examples"]:
            lines.append(
                f"  only in {side.upper()}, e.g. {', '.join(figures[f'only_in_{side}_examples'])}"
            )
    compared = figures["compared"]
    shift = figures["mean_confidence_shift"]
    lines.append(
        f"compared {compared:,}: agree {compared - figures['flips']:,} "
        f"({_share(compared - figures['flips'], compared)}), flipped {figures['flips']:,}"
        + ("" if shift is None else f"; mean confidence shift B - A {shift:+.4f}")
    )
    flips = [p for p in figures["pairs"] if p["a"] != p["b"]]
    if flips:
        width = min(max(len(p["a"]) for p in flips[:MAX_TABLE]), 28)
        lines += ["", "flips (A -> B), most frequent first"]
        for p in flips[:MAX_TABLE]:
            lines.append(f"  {_short(p['a'], width):<{width}} -> {p['b']}  {p['count']:>9,}")
        if len(flips) > MAX_TABLE:
            lines.append(f"  ... {len(flips) - MAX_TABLE:,} more pairs in --json")
        per_class = figures["per_class"]
        width = min(max(len(name) for name in per_class), 28)
        lines += ["", f"  {'class':<{width}}       lost     gained        net"]
        for name, c in sorted(per_class.items(), key=lambda p: -abs(p[1]["net"]))[:MAX_TABLE]:
            lines.append(
                f"  {_short(name, width):<{width}}  {c['lost']:>9,}  {c['gained']:>9,}  "
                f"{c['net']:>+9,}"
            )
    truth = figures.get("truth")
    if truth is not None:
        outcomes = truth["flips"]
        lines += [
            "",
            f"against the truth ({truth['scored']:,} images): accuracy A "
            f"{_pct(truth['a_accuracy'])}, B {_pct(truth['b_accuracy'])}; on the flips: "
            f"A right {outcomes['a_right']:,}, B right {outcomes['b_right']:,}, neither "
            f"{outcomes['neither']:,}, no truth {outcomes['no_truth']:,}",
        ]
        if truth.get("without_truth_shared_name"):
            lines.append(
                f"  no truth for {truth['without_truth_shared_name']:,} images whose file name "
                "another image shares (the truth is keyed by file name)"
            )
        if truth.get("ambiguous_truth_keys"):
            lines.append(
                f"  {truth['ambiguous_truth_keys']:,} keys of the truth file have different "
                "labels on different lines: their images have no truth"
            )
    return "\n".join(map(printable, lines)) + "\n"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def command_diff(args: argparse.Namespace) -> int:
    """Print the comparison; write the page with ``--html``."""
    from ..report.evaluate import dumps
    from ..report.html import check_page_target, write_page
    from ..report.truth import open_truth
    from .join import diff

    for path in (args.a, args.b):
        output_kind(path)
    if args.flips < 0:
        raise UsageError(f"--flips {args.flips}: give 0 or more")
    if args.html is not None:
        for path in (args.a, args.b):
            check_page_target(args.html, path)
    truth = None if args.truth is None else open_truth(args.truth)
    if truth is not None:
        truth.count_names(iter_latest_rows(args.b))  # the truth is looked up on B's rows
    found = diff(args.a, args.b, truth=truth, gallery=args.flips if args.html else 0)
    if truth is not None:
        truth.check(found.b_rows)
    figures = found.figures()
    if truth is not None and "truth" in figures:
        figures["truth"]["ambiguous_truth_keys"] = truth.ambiguous_keys
        figures["truth"]["without_truth_shared_name"] = truth.shared_names
    if args.json:
        sys.stdout.write(dumps(figures))
    else:
        sys.stdout.write(render_text(figures, args.a, args.b))
    if args.html is not None:
        from .page import render_page

        page = render_page(figures, found.flips(), args.a, args.b, base=run_folder(args.b))
        write_page(args.html, page)
        print(printable(f"wrote {args.html} ({len(page.encode()) / 1e6:.1f} MB)"), file=sys.stderr)
    return ExitCode.OK
