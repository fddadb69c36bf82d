"""The text report: a short summary for the terminal, printed on stdout."""

from __future__ import annotations

from datetime import datetime

from ...names import printable
from .advice import advice
from .facts import JobFacts
from .stats import QUANTILE_METHOD, QUANTILES, ReportStats

#: The widest a name column gets: longer names (classes, --by values) end in "…".
MAX_NAME_WIDTH = 40


def cell(name: str, limit: int = MAX_NAME_WIDTH) -> str:
    """``name`` as one table cell: control characters escaped (a newline or a terminal escape
    in a class name must not break the table), at most ``limit`` characters."""
    text = printable(name)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def share(part: int, whole: int) -> str:
    """``part`` as a percentage of ``whole``, one decimal: ``12.5%``."""
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "unknown"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def settings_line(facts: JobFacts) -> str:
    threshold = "API default" if facts.confidence is None else f"{facts.confidence:g}"
    parts = [
        f"model {facts.model or 'unknown'}",
        f"server {facts.server or 'unknown'}",
        f"confidence threshold {threshold}",
    ]
    if facts.max_size:
        parts.append(f"max size {facts.max_size} px")
    if facts.version:
        parts.append(f"batchclassify {facts.version}")
    return " · ".join(parts)


def _header(stats: ReportStats, facts: JobFacts) -> list[str]:
    lines = [f"report of {facts.output}", settings_line(facts)]
    timing = f"last written {when(facts.last_written)}"
    if facts.state is not None:
        timing += f" · job {facts.state}"
    if facts.duration_s is not None:
        timing += f" · last run {duration(facts.duration_s)}"
    if facts.images_per_s is not None:
        timing += f" · {facts.images_per_s:.1f} images/s"
    lines.append(timing)
    lines.append(
        f"images {stats.rows:,}: ok {stats.ok:,} ({share(stats.ok, stats.rows)}), "
        f"failed {stats.failed:,} ({share(stats.failed, stats.rows)}); "
        f"below {stats.low:g} confidence {stats.below:,} ({share(stats.below, stats.ok)} of ok)"
    )
    return lines


def _q_name(q: float) -> str:
    return "med" if q == 0.5 else f"p{round(q * 100):02d}"


def _quantile(value: float | None) -> str:
    return "   -" if value is None else f"{value:.2f}"


def _classes(stats: ReportStats) -> list[str]:
    if not stats.ok:
        return []
    kind = "multi-label: images with each label" if stats.multilabel else "single-label"
    names = [cell(name) for name, _ in stats.ranked_classes()]
    width = max([len(name) for name in names] + [5])
    quantiles = "  ".join(f"{_q_name(q):>4}" for q in QUANTILES)
    lines = [
        "",
        f"classes ({kind}; confidence quantiles: {QUANTILE_METHOD})",
        f"  {'class':<{width}}  {'count':>9}  {'share':>6}   {quantiles}   below {stats.low:g}",
    ]
    for name, (_, cls) in zip(names, stats.ranked_classes(), strict=True):
        cells = "  ".join(_quantile(cls.quantile(q)) for q in QUANTILES)
        below = f"{cls.below:,} ({share(cls.below, cls.count)})" if any(cls.histogram) else "-"
        lines.append(
            f"  {name:<{width}}  {cls.count:>9,}  {share(cls.count, stats.ok):>6}   "
            f"{cells}   {below}"
        )
    return lines


def _errors(stats: ReportStats) -> list[str]:
    if not stats.failed:
        return []
    lines = ["", "failed, by error type"]
    ranked = sorted(stats.errors.items(), key=lambda pair: (-pair[1].count, pair[0]))
    width = max(len(cell(kind)) for kind, _ in ranked)
    for kind, error in ranked:
        examples = ", ".join(map(printable, error.examples))  # the last column: whole
        lines.append(f"  {cell(kind):<{width}}  {error.count:>9,}  e.g. {examples}")
        lines.append(f"  {'':<{width}}  {'':>9}  {advice(kind)}")
    return lines


def _by(stats: ReportStats, shown: int = 5) -> list[str]:
    if stats.by is None or not stats.by_counts:
        return []
    values = by_values(stats)
    width = max(len(cell(value)) for value in values)
    lines = ["", f"by {stats.by} (images, then the most frequent classes)"]
    for value in values:
        counts = stats.by_counts[value]
        images = counts["(images)"]
        top = [(n, c) for n, c in counts.most_common() if n != "(images)"][:shown]
        text = ", ".join(f"{cell(name)} {share(count, images)}" for name, count in top)
        lines.append(f"  {cell(value):<{width}}  {images:>9,}  {text}")
    return lines


def by_values(stats: ReportStats) -> list[str]:
    """The ``--by`` values, most images first."""
    return sorted(stats.by_counts, key=lambda v: (-stats.by_counts[v]["(images)"], v))


def render_text(stats: ReportStats, facts: JobFacts) -> str:
    """The whole text report, ending with a newline."""
    lines = _header(stats, facts) + _classes(stats) + _errors(stats)
    lines += _by(stats)
    # Line by line: a newline or terminal escape in a value (the output's name, the model)
    # stays in its line, escaped.
    return "\n".join(map(printable, lines)) + "\n"
