"""Inline SVG charts for the HTML report: bars, histograms, a heatmap, stacked shares.

Each function returns one ``<svg class="chart">`` with an explicit size and viewBox, so it is
drawn without any script or stylesheet from outside the page. Colours come from the page's
palette below; text is escaped here.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

ACCENT = "#3867d6"
UNSURE = "#f5a524"
MUTED = "#6b7785"
GRID = "#e6e9ee"
INK = "#1d2430"
PALETTE = (
    "#3867d6",
    "#f08c2e",
    "#20a39e",
    "#e0525d",
    "#7b61c9",
    "#8bb33a",
    "#d4a017",
    "#c05fa0",
    "#5b8fb9",
    "#9a7b5f",
)
"""Categorical colours for classes in the --by breakdown; past ten they repeat."""


#: The widest a character of a tick label (11 px) is drawn, with a margin; other text is
#: 12.5 px (``_text_width``'s default).
TICK_CHAR_W = 7.0


def _svg(width: float, height: float, body: str, label: str) -> str:
    return (
        f'<svg class="chart" role="img" aria-label="{escape(label)}" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'xmlns="http://www.w3.org/2000/svg">{body}</svg>'
    )


def _text(x: float, y: float, text: str, *, anchor: str = "start", cls: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{klass}>{escape(text)}</text>'


def _rect(x: float, y: float, w: float, h: float, fill: str, title: str = "") -> str:
    tip = f"<title>{escape(title)}</title>" if title else ""
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{h:.1f}" '
        f'fill="{fill}">{tip}</rect>'
    )


def class_bars(rows: Sequence[tuple[str, int, int]], total: int, *, low: float) -> str:
    """Horizontal bars: one per class with count and share; the unsure part in amber.

    ``rows`` are ``(class, count, below low)``; ``total`` is what the shares are of.
    """
    label_w = min(max((len(name) for name, _, _ in rows), default=4) * 7.5 + 12, 220)
    shares = [100.0 * count / total if total else 0.0 for _, count, _ in rows]
    numbers = [
        f"{count:,} · {share:.1f}%" for (_, count, _), share in zip(rows, shares, strict=True)
    ]
    # Right of the longest bar: room for the widest number, or a large count is cut off.
    bar_w, row_h = 760.0, 26.0
    width = label_w + bar_w + max(130.0, _text_width(numbers) + 12)
    peak = max((count for _, count, _ in rows), default=1) or 1
    parts = []
    for i, (name, count, below) in enumerate(rows):
        y = i * row_h
        w = bar_w * count / peak
        sure_w = w * (count - below) / count if count else 0.0
        tip = f"{name}: {count:,} ({shares[i]:.1f}%), {below:,} below {low:g}"
        parts.append(_text(label_w - 10, y + 17, _clip(name, 28), anchor="end", cls="lbl"))
        parts.append(_rect(label_w, y + 5, sure_w, row_h - 10, ACCENT, tip))
        parts.append(_rect(label_w + sure_w, y + 5, w - sure_w, row_h - 10, UNSURE, tip))
        parts.append(_text(label_w + w + 8, y + 17, numbers[i], cls="num"))
    height = max(len(rows), 1) * row_h
    return _svg(width, height, "".join(parts), "class distribution")


def histogram(
    bins: Sequence[int], *, low: float, width: float = 1000, height: float = 200, axis: bool = True
) -> str:
    """Confidence histogram over 0..1, with the --low-confidence line dashed."""
    peak = max(bins, default=0) or 1
    # The y axis's label sits left of the plot, right-aligned: the margin grows with it, or
    # a large count ("138,035") is cut off at the chart's left edge.
    label_w = _text_width([f"{peak:,}"], TICK_CHAR_W)
    pad_l, pad_b, pad_t = (max(34.0, label_w + 12), 22.0, 8.0) if axis else (2.0, 14.0, 4.0)
    plot_w, plot_h = width - pad_l - 6, height - pad_b - pad_t
    step = plot_w / max(len(bins), 1)
    parts = [
        f'<line x1="{pad_l}" x2="{pad_l + plot_w}" y1="{pad_t + plot_h}" '
        f'y2="{pad_t + plot_h}" stroke="{GRID}"/>'
    ]
    if axis:
        parts.append(_text(pad_l - 6, pad_t + 8, f"{peak:,}", anchor="end", cls="tick"))
    for i, count in enumerate(bins):
        h = plot_h * count / peak
        lo = i / len(bins)
        fill = UNSURE if lo + 1e-9 < low else ACCENT
        tip = f"{lo:.2f}–{lo + 1 / len(bins):.2f}: {count:,}"
        parts.append(_rect(pad_l + i * step + 1, pad_t + plot_h - h, step - 2, h, fill, tip))
    x_low = pad_l + plot_w * low
    parts.append(
        f'<line class="cut" x1="{x_low:.1f}" x2="{x_low:.1f}" y1="{pad_t}" '
        f'y2="{pad_t + plot_h}" stroke="{INK}" stroke-dasharray="3 3"/>'
    )
    for tick in (0.0, 0.5, 1.0) if axis else (0.0, 1.0):
        anchor = "start" if tick == 0 else "end" if tick == 1 else "middle"
        parts.append(
            _text(pad_l + plot_w * tick, height - 5, f"{tick:g}", anchor=anchor, cls="tick")
        )
    return _svg(width, height, "".join(parts), "confidence histogram")


def heatmap(names: Sequence[str], pairs: dict[tuple[str, str], int], freq: dict[str, int]) -> str:
    """Co-occurrence: cell (a, b) counts images labelled both; the diagonal, a alone + both."""
    cell, label_w = 34.0, min(max((len(n) for n in names), default=4) * 7.5 + 14, 180)
    top = label_w
    size = len(names) * cell
    peak = max([*pairs.values(), 1])
    parts = []
    for i, row in enumerate(names):
        parts.append(
            _text(
                label_w - 8, top + i * cell + cell / 2 + 4, _clip(row, 22), anchor="end", cls="lbl"
            )
        )
        x_col = label_w + i * cell + cell / 2
        parts.append(
            f'<text x="{x_col:.1f}" y="{top - 8:.1f}" class="lbl" '
            f'transform="rotate(-45 {x_col:.1f} {top - 8:.1f})">'
            f"{escape(_clip(row, 22))}</text>"
        )
        for j, col in enumerate(names):
            count = freq.get(row, 0) if i == j else pairs.get((min(row, col), max(row, col)), 0)
            shade = 1.0 if i == j else count / peak
            fill = "#dfe3ea" if i == j else _blend(shade) if count else "#f3f5f8"
            x, y = label_w + j * cell, top + i * cell
            tip = f"{row}: {count:,}" if i == j else f"{row} + {col}: {count:,}"
            parts.append(_rect(x + 1, y + 1, cell - 2, cell - 2, fill, tip))
            if count:
                ink = "#fff" if i != j and shade > 0.55 else INK
                parts.append(
                    f'<text x="{x + cell / 2:.1f}" y="{y + cell / 2 + 4:.1f}" '
                    f'text-anchor="middle" class="cell" fill="{ink}">'
                    f"{_compact(count)}</text>"
                )
    return _svg(label_w + size + 8, top + size + 4, "".join(parts), "label co-occurrence")


def stacked_shares(
    rows: Sequence[tuple[str, int, Sequence[tuple[str, int]]]], colors: dict[str, str]
) -> str:
    """One 100% bar per ``--by`` value: the share of each class within it."""
    label_w = min(max((len(v) for v, _, _ in rows), default=4) * 7.5 + 12, 200)
    bar_w, row_h = 760.0, 28.0
    parts = []
    for i, (value, images, segments) in enumerate(rows):
        y = i * row_h
        parts.append(_text(label_w - 10, y + 18, _clip(value, 26), anchor="end", cls="lbl"))
        total = sum(count for _, count in segments) or 1
        x = label_w
        for name, count in segments:
            w = bar_w * count / total
            tip = f"{value} · {name}: {count:,} ({100 * count / images:.1f}% of images)"
            parts.append(_rect(x, y + 5, w, row_h - 10, colors.get(name, MUTED), tip))
            x += w
        parts.append(_text(label_w + bar_w + 8, y + 18, f"{images:,}", cls="num"))
    width = label_w + bar_w + max(80.0, _text_width([f"{images:,}" for _, images, _ in rows]) + 12)
    return _svg(width, max(len(rows), 1) * row_h, "".join(parts), "classes by column")


def _text_width(texts: Sequence[str], char_w: float = 7.5) -> float:
    """How wide the longest of ``texts`` is drawn at 12.5 px, with a margin (an estimate: the
    page has no script to measure with)."""
    return max((len(text) for text in texts), default=0) * char_w


def _blend(shade: float) -> str:
    """White to the accent colour."""
    base = (0x38, 0x67, 0xD6)
    rgb = (round(255 + (c - 255) * (0.12 + 0.88 * shade)) for c in base)
    return "#" + "".join(f"{c:02x}" for c in rgb)


def _compact(count: int) -> str:
    if count >= 1_000_000:
        return f"{count / 1e6:.1f}M"
    if count >= 10_000:
        return f"{count / 1e3:.0f}k"
    if count >= 1_000:
        return f"{count / 1e3:.1f}k"
    return str(count)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
