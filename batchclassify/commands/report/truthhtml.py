"""The HTML report's sections against a truth: metrics, confusion heatmap, reliability diagram,
and the most confident mistakes per predicted class (the images most worth a look)."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from ...output.reading import image_file
from .charts import INK, MUTED, _blend, _clip, _compact, _rect, _svg, _text
from .metrics import Mistake
from .thumbnails import make_thumbnails

MAX_MATRIX = 24
"""Confusion heatmap classes (the most frequent truths); the rest are in --json."""
MAX_MISTAKE_CARDS = 300

Section = tuple[str, str, str]
"""(anchor, title in the navigation, the section's HTML)."""


def _section(anchor: str, title: str, body: str, lede: str) -> str:
    return (
        f'<section id="{anchor}"><h2>{escape(title)}</h2><p class="lede">{lede}</p>{body}</section>'
    )


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _metrics(figures: dict[str, Any]) -> str:
    head = (
        "<tr><th>class</th><th class='n'>precision</th><th class='n'>recall</th>"
        "<th class='n'>F1</th><th class='n'>support</th><th class='n'>predicted</th></tr>"
    )
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td class='n'>{_pct(c['precision'])}</td>"
        f"<td class='n'>{_pct(c['recall'])}</td><td class='n'>{_pct(c['f1'])}</td>"
        f"<td class='n'>{c['support']:,}</td><td class='n'>{c['predicted']:,}</td></tr>"
        for name, c in figures["classes"].items()
    )
    rows += "".join(
        f"<tr class='avg'><td>{escape(kind)} avg</td><td class='n'>{_pct(a['precision'])}</td>"
        f"<td class='n'>{_pct(a['recall'])}</td><td class='n'>{_pct(a['f1'])}</td>"
        f"<td class='n'>{a['support']:,}</td><td></td></tr>"
        for kind, a in figures["averages"].items()
    )
    if figures["kind"] == "multi-label":
        headline = (
            f"subset accuracy <b>{_pct(figures['subset_accuracy'])}</b>, Hamming loss "
            f"<b>{figures['hamming_loss']:.4f}</b>"
        )
    else:
        top = ", ".join(
            f"top-{k} <b>{_pct(v)}</b>" for k, v in figures["top_k_accuracy"].items() if k != "1"
        )
        headline = f"accuracy <b>{_pct(figures['accuracy'])}</b>" + (f", {top}" if top else "")
    lede = (
        f"Against {escape(figures['truth'])}: {headline} on {figures['scored']:,} images; "
        f"{figures['without_truth']:,} without a truth and {figures['failed_with_truth']:,} "
        "failed were not scored."
        + (
            f" {figures['without_truth_shared_name']:,} of those without a truth share their "
            "file name with another image (the truth is keyed by file name)."
            if figures.get("without_truth_shared_name")
            else ""
        )
        + (
            f" {figures['ambiguous_truth_keys']:,} keys of the truth file have different labels "
            "on different lines: their images have no truth."
            if figures.get("ambiguous_truth_keys")
            else ""
        )
    )
    table = f'<table class="errors metrics"><thead>{head}</thead><tbody>{rows}</tbody></table>'
    return _section("truth", "Against the truth", table, lede)


def confusion_heatmap(labels: list[str], columns: list[str], counts: list[list[int]]) -> str:
    """Rows the truth, columns the prediction; each cell shaded by its share of its row."""
    cell = 34.0
    label_w = min(max((len(n) for n in labels + columns), default=4) * 7.5 + 14, 170)
    top = label_w
    parts = []
    for j, name in enumerate(columns):
        x = label_w + j * cell + cell / 2
        parts.append(
            f'<text x="{x:.1f}" y="{top - 8:.1f}" class="lbl" '
            f'transform="rotate(-45 {x:.1f} {top - 8:.1f})">{escape(_clip(name, 22))}</text>'
        )
    for i, truth in enumerate(labels):
        y = top + i * cell
        parts.append(_text(label_w - 8, y + cell / 2 + 4, _clip(truth, 22), anchor="end"))
        total = sum(counts[i]) or 1
        for j, predicted in enumerate(columns):
            count = counts[i][j]
            share = count / total
            right = truth == predicted
            fill = (
                ("#2f9e6e" if right else _blend(share))
                if count
                else ("#eef7f2" if right else "#f3f5f8")
            )
            tip = f"truth {truth}, predicted {predicted}: {count:,} ({100 * share:.1f}% of row)"
            x = label_w + j * cell
            parts.append(_rect(x + 1, y + 1, cell - 2, cell - 2, fill, tip))
            if count:
                ink = "#fff" if right or share > 0.55 else INK
                parts.append(
                    f'<text x="{x + cell / 2:.1f}" y="{y + cell / 2 + 4:.1f}" '
                    f'text-anchor="middle" class="cell" fill="{ink}">{_compact(count)}</text>'
                )
    width = label_w + len(columns) * cell + 8
    return _svg(width, top + len(labels) * cell + 4, "".join(parts), "confusion matrix")


def reliability_diagram(bins: list[dict[str, Any]], width: float = 420, height: float = 320) -> str:
    """Accuracy per confidence bin against the diagonal of perfect calibration."""
    pad_l, pad_b, pad_t, pad_r = 40.0, 30.0, 10.0, 10.0
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b
    parts = [
        f'<rect x="{pad_l}" y="{pad_t}" width="{plot_w}" height="{plot_h}" fill="#f6f7f9"/>',
        f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{pad_l + plot_w}" y2="{pad_t}" '
        f'stroke="{MUTED}" stroke-dasharray="4 4"/>',
    ]
    for b in bins:
        x = pad_l + plot_w * b["low"]
        w = plot_w * (b["high"] - b["low"])
        h = plot_h * b["accuracy"]
        gap = plot_h * b["confidence"]
        tip = (
            f"{b['low']:.1f}–{b['high']:.1f}: {b['count']:,} answers, mean confidence "
            f"{b['confidence']:.3f}, accuracy {b['accuracy']:.3f}"
        )
        parts.append(_rect(x + 2, pad_t + plot_h - h, w - 4, h, "#3867d6", tip))
        parts.append(
            f'<line x1="{x + 2:.1f}" x2="{x + w - 2:.1f}" y1="{pad_t + plot_h - gap:.1f}" '
            f'y2="{pad_t + plot_h - gap:.1f}" stroke="#e0525d" stroke-width="2"/>'
        )
    for tick in (0.0, 0.5, 1.0):
        parts.append(
            _text(pad_l + plot_w * tick, height - 10, f"{tick:g}", anchor="middle", cls="tick")
        )
        parts.append(
            _text(pad_l - 6, pad_t + plot_h * (1 - tick) + 4, f"{tick:g}", anchor="end", cls="tick")
        )
    return _svg(width, height, "".join(parts), "reliability diagram")


def _confusion(figures: dict[str, Any]) -> str:
    confusion = figures.get("confusion")
    if not confusion or not confusion["labels"]:
        return ""
    order = sorted(
        range(len(confusion["labels"])),
        key=lambda i: -figures["classes"][confusion["labels"][i]]["support"],
    )[:MAX_MATRIX]
    order.sort()
    labels = [confusion["labels"][i] for i in order]
    keep = [
        j
        for j, name in enumerate(confusion["columns"])
        if name in labels or j >= len(confusion["labels"])
    ]
    columns = [confusion["columns"][j] for j in keep]
    counts = [[confusion["counts"][i][j] for j in keep] for i in order]
    chart = confusion_heatmap(labels, columns, counts)
    more = (
        f" The {len(labels)} classes with most images"
        f" of {len(confusion['labels'])}; --json has all."
        if len(labels) < len(confusion["labels"])
        else ""
    )
    lede = (
        "Rows: the true class; columns: the model's answer. Green: right; blue: wrong, darker "
        f"for a larger share of the row.{more}"
    )
    return _section("confusion", "Confusion", f'<div class="figure">{chart}</div>', lede)


def _calibration(figures: dict[str, Any]) -> str:
    calibration = figures["calibration"]
    if not calibration["answers"]:
        return ""
    what = (
        "each answer's top confidence"
        if figures["kind"] == "single-label"
        else "every image's score for every class"
    )
    lede = (
        f"Bars: how often the model was right in each confidence bin ({what}); red line: "
        "the mean confidence there; dashed: perfect calibration. Expected calibration error "
        f"<b>{calibration['ece']:.4f}</b> over {calibration['answers']:,} answers."
    )
    chart = reliability_diagram(calibration["bins"])
    return _section("calibration", "Calibration", f'<div class="figure">{chart}</div>', lede)


def _card(mistake: Mistake, thumbs: dict[str, str | None]) -> str:
    if mistake.id in thumbs:
        uri = thumbs[mistake.id]
        image = (
            f'<img class="thumb" alt="" src="{uri}">'
            if uri
            else '<div class="ph">image not found</div>'
        )
    elif mistake.url:
        image = (
            f'<img class="thumb remote" alt="image at its URL" loading="lazy" '
            f'referrerpolicy="no-referrer" src="{escape(mistake.url)}">'
        )
    else:
        image = '<div class="ph">no path</div>'
    where = mistake.path or mistake.url or mistake.id
    name = where.rstrip("/").rsplit("/", 1)[-1] or where
    truth = ", ".join(mistake.truth) or "none"
    return (
        f'<figure class="review mistake">{image}<figcaption>'
        f'<div class="fn" title="{escape(where)}">{escape(name)}</div>'
        f"<div>said <b>{escape(mistake.label)}</b> {mistake.score:.2f}</div>"
        f'<div class="margin">truth: {escape(truth)}</div></figcaption></figure>'
    )


def _mistakes(mistakes: dict[str, list[Mistake]], base: Path) -> str:
    if not mistakes:
        return ""
    per_class = max(2, MAX_MISTAKE_CARDS // len(mistakes))
    shown = {label: items[:per_class] for label, items in mistakes.items()}
    files = (
        (m.id, found)
        for items in shown.values()
        for m in items
        if (found := image_file(m.id, m.path, base=base)) is not None
    )
    thumbs = make_thumbnails(files)
    groups = "".join(
        f'<div class="group"><h3>said {escape(label)} <span>the {len(items)} most confident '
        f'mistakes</span></h3><div class="grid">{"".join(_card(m, thumbs) for m in items)}'
        "</div></div>"
        for label, items in shown.items()
    )
    lede = "Per class the model answered, its wrong answers with the highest confidence."
    return _section("mistakes", "Confident mistakes", groups, lede)


def truth_sections(
    figures: dict[str, Any], mistakes: dict[str, list[Mistake]], base: Path
) -> list[Section]:
    """The page's sections about the truth, for ``render_html``."""
    sections = [("truth", "Against the truth", _metrics(figures))]
    if figures["scored"]:
        for anchor, title, body in (
            ("confusion", "Confusion", _confusion(figures)),
            ("calibration", "Calibration", _calibration(figures)),
            ("mistakes", "Mistakes", _mistakes(mistakes, base)),
        ):
            if body:
                sections.append((anchor, title, body))
    return sections
