"""The metrics against a truth, as text: a compact table, the confusion matrix, calibration."""

from __future__ import annotations

from typing import Any

from ...names import printable

MAX_MATRIX_CLASSES = 12
"""Confusion-matrix columns shown in a terminal; the rest are in ``--json``."""
CELL = 6


def _pct(value: float | None) -> str:
    return "   -" if value is None else f"{100 * value:5.1f}%"


def _short(name: str, width: int) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def _header(figures: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"against the truth ({figures['truth']}, {figures['kind']})",
        f"  scored {figures['scored']:,} of {figures['rows']:,} images; "
        f"without a truth {figures['without_truth']:,}; "
        f"failed (not scored) {figures['failed_with_truth']:,}"
        + (
            f"; several or no true labels (not scored) {figures['several_truths']:,}"
            if figures.get("several_truths")
            else ""
        ),
    ]
    if figures.get("without_truth_shared_name"):
        lines.append(
            f"  no truth for {figures['without_truth_shared_name']:,} images whose file name "
            "another image shares (the truth is keyed by file name: use a path or id key)"
        )
    if figures.get("ambiguous_truth_keys"):
        lines.append(
            f"  {figures['ambiguous_truth_keys']:,} keys of the truth file have different "
            "labels on different lines: their images have no truth"
        )
    if figures["kind"] == "multi-label":
        lines.append(
            f"  subset accuracy {_pct(figures['subset_accuracy']).strip()}   "
            f"Hamming loss {figures['hamming_loss']:.4f}"
        )
        return lines
    top_k = "   ".join(
        f"top-{k} {_pct(v).strip()}" for k, v in figures["top_k_accuracy"].items() if k != "1"
    )
    missing = [k for k, v in figures["top_k_accuracy"].items() if v is None]
    lines.append(f"  accuracy {_pct(figures['accuracy']).strip()}   {top_k}".rstrip())
    if missing:
        lines.append(
            "  (top-k: the output lists only classes above the job's --confidence; "
            "run with --confidence 0 for the full class vector)"
        )
    if figures["no_class"]:
        lines.append(f"  no class passed the model's threshold: {figures['no_class']:,} (wrong)")
    return lines


def _table(figures: dict[str, Any]) -> list[str]:
    classes = figures["classes"]
    width = max([len(name) for name in classes] + [12])
    width = min(width, 32)
    lines = ["", f"  {'class':<{width}}  precision  recall      f1   support  predicted"]
    for name, cls in classes.items():
        lines.append(
            f"  {_short(name, width):<{width}}  {_pct(cls['precision']):>9}  "
            f"{_pct(cls['recall']):>6}  {_pct(cls['f1']):>6}  {cls['support']:>8,}  "
            f"{cls['predicted']:>9,}"
        )
    for kind, avg in figures["averages"].items():
        lines.append(
            f"  {kind + ' avg':<{width}}  {_pct(avg['precision']):>9}  {_pct(avg['recall']):>6}  "
            f"{_pct(avg['f1']):>6}  {avg['support']:>8,}"
        )
    return lines


def _matrix(figures: dict[str, Any]) -> list[str]:
    confusion = figures.get("confusion")
    if not confusion or not confusion["labels"]:
        return []
    labels, columns = confusion["labels"], confusion["columns"]
    shown = columns[:MAX_MATRIX_CLASSES]
    rows = labels[:MAX_MATRIX_CLASSES]
    width = min(max(len(name) for name in rows), 20)
    head = " ".join(f"{_short(name, CELL):>{CELL}}" for name in shown)
    lines = ["", "  confusion matrix (rows: truth, columns: predicted; counts)"]
    lines.append(f"  {'':<{width}}  {head}")
    for i, name in enumerate(rows):
        cells = " ".join(f"{_count(n):>{CELL}}" for n in confusion["counts"][i][: len(shown)])
        lines.append(f"  {_short(name, width):<{width}}  {cells}")
    if len(columns) > len(shown) or len(labels) > len(rows):
        lines.append(
            f"  ({len(shown)} of {len(columns)} columns, {len(rows)} of {len(labels)} rows shown; "
            "--json has them all)"
        )
    return lines


def _count(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    if n >= 100_000:
        return f"{n / 1e3:.0f}k"
    return str(n)


def _calibration(figures: dict[str, Any]) -> list[str]:
    calibration = figures["calibration"]
    if not calibration["answers"]:
        return []
    what = "each answer's top confidence" if figures["kind"] == "single-label" else "every score"
    lines = [
        "",
        f"  calibration ({what}): expected calibration error {calibration['ece']:.4f}",
        "    confidence      answers   mean conf   accuracy",
    ]
    for b in calibration["bins"]:
        lines.append(
            f"    {b['low']:.1f}–{b['high']:.1f}   {b['count']:>12,}   {b['confidence']:>9.3f}   "
            f"{b['accuracy']:>8.3f}"
        )
    return lines


def _thresholds(figures: dict[str, Any]) -> list[str]:
    thresholds = figures["thresholds"]
    if not thresholds["classes"]:
        return []
    target = thresholds["target_precision"]
    width = min(max(len(name) for name in thresholds["classes"]), 32)
    width = max(width, 5)
    lines = [
        "",
        f"  thresholds for precision >= {target:g} (per predicted class; recall kept)",
    ]
    for name, cls in thresholds["classes"].items():
        if cls["threshold"] is None:
            text = f"never reaches it ({cls['answers']:,} answers): all to review"
        else:
            text = (
                f"{cls['threshold']:.3f}  precision {_pct(cls['precision']).strip()}  "
                f"recall {_pct(cls['recall']).strip()}  keeps {cls['kept']:,} of "
                f"{cls['answers']:,}"
            )
        lines.append(f"    {_short(name, width):<{width}}  {text}")
    return lines


def render_truth_text(figures: dict[str, Any]) -> str:
    """The metrics section of the text report, ending with a newline."""
    lines = _header(figures)
    if figures["scored"]:
        lines += _table(figures) + _matrix(figures) + _calibration(figures)
        lines += _thresholds(figures)
    return "\n".join(map(printable, lines)) + "\n"
