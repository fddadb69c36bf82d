"""The HTML report: one self-contained page (inline CSS and SVG, embedded thumbnails).

Nothing is loaded from elsewhere except URL items' images, which the browser fetches from
their own URLs; no script runs. Its size is bounded by the number of classes, not of rows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from pathlib import Path

from ...errors import UsageError
from ...output.reading import image_file
from . import charts
from .advice import advice
from .facts import JobFacts
from .gallery import ReviewItem
from .stats import FAILED, NO_CLASS, QUANTILE_METHOD, ReportStats, coarse
from .style import CSS
from .text import by_values, duration, settings_line, share
from .thumbnails import make_thumbnails

GENERATOR = "batchclassify report"
"""Marks a page as ours: an existing --html file without it is never overwritten."""

MAX_BARS = 60
MAX_CARDS = 600
"""Gallery cards in one page (~8 KB each with a photo's thumbnail): 5 MB at most."""
MAX_HEATMAP_CLASSES = 20
MAX_SMALL_MULTIPLES = 30
MAX_BY_ROWS = 30
MAX_BY_CLASSES = 9


def _card(label: str, value: str, note: str = "", tone: str = "") -> str:
    klass = f"card {tone} {'long' if len(value) > 14 else ''}".strip()
    small = f'<span class="note">{escape(note)}</span>' if note else ""
    return (
        f'<div class="{klass}"><span class="k">{escape(label)}</span>'
        f'<span class="v" title="{escape(value)}">{escape(value)}</span>{small}</div>'
    )


def _facts(stats: ReportStats, facts: JobFacts) -> str:
    cards = [
        _card("Images", f"{stats.rows:,}"),
        _card("Classified", f"{stats.ok:,}", share(stats.ok, stats.rows), "good"),
        _card(
            "Failed",
            f"{stats.failed:,}",
            share(stats.failed, stats.rows),
            "bad" if stats.failed else "",
        ),
        _card(
            f"Below {stats.low:g}",
            f"{stats.below:,}",
            share(stats.below, stats.ok) + " of ok",
            "warn" if stats.below else "",
        ),
        _card("Model", facts.model or "unknown", facts.server or ""),
        _card(
            "Classes",
            f"{len(stats.ranked_classes()):,}",
            "multi-label" if stats.multilabel else "single-label",
        ),
        _card("Last written", _day(facts.last_written), _clock(facts.last_written)),
        _timing(stats, facts),
    ]
    return f'<section class="cards" id="facts">{"".join(cards)}</section>'


def _timing(stats: ReportStats, facts: JobFacts) -> str:
    """The job's duration and rate when a progress file tells; else the mean request time."""
    if facts.duration_s is not None:
        rate = "" if facts.images_per_s is None else f"{facts.images_per_s:,.1f} images/s"
        note = " · ".join(part for part in (rate, facts.state or "") if part)
        return _card("Last run", duration(facts.duration_s), note)
    mean = f"{stats.elapsed_ms / stats.timed:,.0f} ms" if stats.timed else "unknown"
    return _card("Per image", mean, "mean request time, retries included")


def _day(moment: datetime | None) -> str:
    return moment.strftime("%b %d, %Y") if moment else "unknown"


def _clock(moment: datetime | None) -> str:
    return moment.strftime("%H:%M UTC") if moment else ""


def _header(facts: JobFacts) -> str:
    name = Path(facts.output).name
    return (
        '<header><p class="eyebrow">batchclassify report</p>'
        f"<h1>{escape(name)}</h1>"
        f'<p class="sub">{escape(settings_line(facts))}</p></header>'
    )


def _section(anchor: str, title: str, body: str, lede: str = "") -> str:
    intro = f'<p class="lede">{lede}</p>' if lede else ""
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{intro}{body}</section>'


def _classes(stats: ReportStats) -> str:
    ranked = stats.ranked_classes()
    rows = [(name, cls.count, cls.below) for name, cls in ranked[:MAX_BARS]]
    what = "images carrying each label" if stats.multilabel else "images by top class"
    if len(ranked) > MAX_BARS:
        what += f" (the {MAX_BARS} most frequent of {len(ranked):,} classes; the text report "
        what += "lists all)"
    lede = (
        f"{escape(what)}, with count and share of the {stats.ok:,} classified; "
        f'<span class="swatch unsure"></span>below {stats.low:g} confidence.'
    )
    chart = f'<div class="figure">{charts.class_bars(rows, stats.ok, low=stats.low)}</div>'
    return _section("classes", "Classes", chart, lede)


def _confidence(stats: ReportStats) -> str:
    overall = charts.histogram(coarse(stats.overall), low=stats.low)
    kind = "the top class's confidence" if not stats.multilabel else "the highest confidence"
    multiples = []
    for name, cls in stats.ranked_classes()[:MAX_SMALL_MULTIPLES]:
        if not any(cls.histogram):
            continue
        chart = charts.histogram(
            coarse(cls.histogram), low=stats.low, width=240, height=84, axis=False
        )
        median = cls.quantile(0.5)
        med = "" if median is None else f" · med {median:.2f}"
        multiples.append(
            f'<div class="multiple"><div class="mt"><b>{escape(name)}</b>'
            f"<span>{cls.count:,}{med} · {share(cls.below, cls.count)} below</span></div>"
            f"{chart}</div>"
        )
    lede = (
        f"Per image, {kind}; the dashed line is --low-confidence {stats.low:g}. "
        "Below: each class on its own scale, with its median confidence (med; quantiles "
        f"here and in the text report: {QUANTILE_METHOD})."
    )
    body = f'<div class="figure">{overall}</div><div class="multiples">{"".join(multiples)}</div>'
    return _section("confidence", "Confidence", body, lede)


def _cooccurrence(stats: ReportStats) -> str:
    if not stats.multilabel:
        return ""
    ranked = [name for name, _ in stats.ranked_classes() if name != NO_CLASS]
    names = ranked[:MAX_HEATMAP_CLASSES]
    freq = {name: stats.classes[name].count for name in names}
    chart = charts.heatmap(names, dict(stats.cooccurrence), freq)
    more = f" (the {len(names)} most frequent of {len(ranked)})" if len(ranked) > len(names) else ""
    lede = (
        f"Images labelled with both classes{more}; the diagonal is each label's frequency. "
        f"{stats.no_class:,} images got no label."
    )
    return _section("labels", "Labels together", f'<div class="figure">{chart}</div>', lede)


def _by(stats: ReportStats) -> str:
    if stats.by is None or not stats.by_counts:
        return ""
    names = [n for n, _ in stats.ranked_classes()][:MAX_BY_CLASSES]
    colors = {name: charts.PALETTE[i % len(charts.PALETTE)] for i, name in enumerate(names)}
    colors[FAILED] = "#c9ced6"
    colors["other classes"] = charts.MUTED
    rows = []
    values = by_values(stats)
    for value in values[:MAX_BY_ROWS]:
        counts = stats.by_counts[value]
        segments = [(name, counts[name]) for name in names if counts[name]]
        rest = sum(c for n, c in counts.items() if n not in colors and n != "(images)")
        segments += [("other classes", rest)] if rest else []
        segments += [(FAILED, counts[FAILED])] if counts[FAILED] else []
        rows.append((value, counts["(images)"], segments))
    drawn = {name for _, _, segments in rows for name, _ in segments}
    legend = "".join(
        f'<span><i style="background:{color}"></i>{escape(name)}</span>'
        for name, color in colors.items()
        if name in drawn
    )
    chart = charts.stacked_shares(rows, colors)
    body = f'<div class="legend">{legend}</div><div class="figure">{chart}</div>'
    lede = f"The class mix within each value of <code>{escape(stats.by)}</code>; images at right"
    more = len(values) - MAX_BY_ROWS
    lede += (
        f" (the {MAX_BY_ROWS} values with most images; {more:,} more in the text report)."
        if more > 0
        else "."
    )
    return _section("by", f"By {stats.by}", body, lede)


def _thumb(item: ReviewItem, thumbs: dict[str, str | None]) -> str:
    if item.id in thumbs:
        uri = thumbs[item.id]
        if uri is None:
            return '<div class="ph">image not found</div>'
        return f'<img class="thumb" alt="" src="{uri}">'
    if item.url:
        return (
            f'<img class="thumb remote" alt="image at its URL (not reachable?)" loading="lazy" '
            f'referrerpolicy="no-referrer" src="{escape(item.url)}">'
        )
    return '<div class="ph">no path</div>'


def _review_card(item: ReviewItem, thumbs: dict[str, str | None], multilabel: bool) -> str:
    where = item.path or item.url or item.id
    name = where.rstrip("/").rsplit("/", 1)[-1] or where
    bars = "".join(
        f'<li class="{"on" if label in item.predicted else ""}"><span>{escape(label)}</span>'
        f'<i class="bar"><i style="width:{100 * min(max(conf, 0.0), 1.0):.0f}%"></i></i>'
        f"<b>{conf:.2f}</b></li>"
        for label, conf in item.scores
    )
    why = f"{item.score:.2f} from the threshold" if multilabel else f"margin {item.score:.2f}"
    return (
        f'<figure class="review">{_thumb(item, thumbs)}<figcaption>'
        f'<div class="fn" title="{escape(where)}">{escape(name)}</div>'
        f'<ul class="scores">{bars}</ul>'
        f'<div class="margin">{why}</div></figcaption></figure>'
    )


def _images(count: int) -> str:
    return "1 image" if count == 1 else f"{count:,} images"


def _shown(stats: ReportStats) -> tuple[int, dict[str, list[ReviewItem]]]:
    """The gallery's cards per class within ``MAX_CARDS``, and the cards of each class shown."""
    labels = [name for name, _ in stats.ranked_classes() if name in stats.gallery.labels()]
    labels += [name for name in stats.gallery.labels() if name not in labels]
    shown, labels = _budget(stats.per_class, labels)
    return shown, {label: stats.gallery.items(label)[:shown] for label in labels}


def gallery_thumbnails(stats: ReportStats, *, base: Path) -> dict[str, str | None]:
    """By id, the thumbnail of every local image the review gallery shows (``None``: the
    file could not be read), found as ``image_file`` finds it from any working directory."""
    _, items = _shown(stats)
    files = (
        (item.id, found)
        for group in items.values()
        for item in group
        if (found := image_file(item.id, item.path, base=base)) is not None
    )
    return make_thumbnails(files)


def _review(stats: ReportStats, thumbs: dict[str, str | None]) -> str:
    shown, items = _shown(stats)
    labels = list(items)
    groups = []
    for label in labels:
        cards = "".join(_review_card(item, thumbs, stats.multilabel) for item in items[label])
        count = stats.classes[label].count if label in stats.classes else 0
        groups.append(
            f'<div class="group"><h3>{escape(label)} <span>{_images(count)} · '
            f"the {len(items[label])} least sure</span></h3>"
            f'<div class="grid">{cards}</div></div>'
        )
    if stats.multilabel:
        lede = (
            "Per class, the images whose confidence for it lies nearest the threshold "
            f"({stats.threshold:g}): labelled ones just above it, near misses just below; "
            "predicted classes in bold."
        )
    else:
        lede = "Per class, the images with the smallest margin between the first two classes."
    if shown < stats.per_class or len(labels) < len(stats.gallery.labels()):
        lede += (
            f" To keep the page a few MB: {shown} per class, for the {len(labels)} most "
            "frequent classes."
        )
    body = "".join(groups) or '<p class="empty">Nothing to review.</p>'
    return _section("review", "Review", body, lede)


def _budget(per_class: int, labels: list[str]) -> tuple[int, list[str]]:
    """Cards per class and the classes shown, within ``MAX_CARDS``."""
    if not labels:
        return per_class, labels
    shown = min(per_class, max(2, MAX_CARDS // len(labels)))
    return shown, labels[: MAX_CARDS // shown]


def _errors(stats: ReportStats) -> str:
    if not stats.failed:
        return ""
    ranked = sorted(stats.errors.items(), key=lambda pair: (-pair[1].count, pair[0]))
    rows = "".join(
        f"<tr><td><code>{escape(kind)}</code></td><td class='n'>{error.count:,}</td>"
        f"<td class='n'>{share(error.count, stats.rows)}</td>"
        f"<td>{'<br>'.join(f'<code>{escape(e)}</code>' for e in error.examples)}"
        f"<div class='msg'>{escape(error.message[:300])}</div></td>"
        f"<td>{escape(advice(kind))}</td></tr>"
        for kind, error in ranked
    )
    table = (
        '<table class="errors"><thead><tr><th>error_type</th><th class="n">rows</th>'
        '<th class="n">share</th><th>examples</th><th>what to do</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )
    return _section("errors", "Failures", table, f"{stats.failed:,} images failed.")


def _nav(stats: ReportStats, first: Sequence[tuple[str, str, str]] = ()) -> str:
    links = [(anchor, title) for anchor, title, _ in first]
    links += [("classes", "Classes"), ("confidence", "Confidence")]
    links += [("labels", "Labels together")] if stats.multilabel else []
    links += [("by", f"By {stats.by}")] if stats.by and stats.by_counts else []
    links += [("review", "Review")] if stats.gallery.labels() else []
    links += [("errors", "Failures")] if stats.failed else []
    return "<nav>" + "".join(f'<a href="#{a}">{escape(t)}</a>' for a, t in links) + "</nav>"


def render_html(
    stats: ReportStats,
    facts: JobFacts,
    *,
    base: Path,
    thumbs: dict[str, str | None] | None = None,
    first: Sequence[tuple[str, str, str]] = (),
) -> str:
    """The whole page. ``base``: where relative image paths start (``reading.run_folder``);
    ``thumbs``: the gallery's thumbnails, if ``gallery_thumbnails`` already made them;
    ``first``: sections (anchor, title, HTML) shown before the rest (``report --truth``'s)."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections = [body for _, _, body in first]
    sections += [_classes(stats), _confidence(stats), _cooccurrence(stats), _by(stats)]
    if stats.gallery.labels():
        if thumbs is None:
            thumbs = gallery_thumbnails(stats, base=base)
        sections.append(_review(stats, thumbs))
    sections.append(_errors(stats))
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="color-scheme" content="light">'
        f'<meta name="generator" content="{GENERATOR}">'
        f"<title>Report · {escape(Path(facts.output).name)}</title>"
        f"<style>{CSS}</style></head><body><main>"
        f"{_header(facts)}{_facts(stats, facts)}{_nav(stats, first)}{''.join(sections)}"
        f"<footer>Made by batchclassify report on {now} from {escape(facts.output)}.</footer>"
        "</main></body></html>\n"
    )


def check_page_target(html: Path, output: Path) -> None:
    """Never write the page over the output, a folder, or a file that is not our report."""
    if html.resolve() == output.resolve() or html.is_dir():
        raise UsageError(f"--html {html}: name a new .html file (this is the output or a folder)")
    if html.exists():
        try:
            with open(html, "rb") as handle:
                head = handle.read(2048)
        except OSError as exc:
            raise UsageError(f"--html {html}: cannot read it ({exc.strerror})") from None
        if GENERATOR.encode() not in head:
            raise UsageError(
                f"--html {html}: exists and is not a batchclassify report; "
                "remove it or choose another name"
            )


def write_page(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file, so a reader never sees half a page."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise UsageError(f"--html {path}: cannot write it ({exc.strerror})") from None
