"""The ``diff --html`` page: one self-contained file, in the report's style (no script)."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from ...output.reading import image_file
from ..report.html import GENERATOR
from ..report.style import CSS
from ..report.thumbnails import make_thumbnails
from ..report.truthhtml import confusion_heatmap
from .join import Flip

MAX_CLASSES = 24


def _card(label: str, value: str, note: str = "") -> str:
    small = f'<span class="note">{escape(note)}</span>' if note else ""
    return (
        f'<div class="card"><span class="k">{escape(label)}</span>'
        f'<span class="v" title="{escape(value)}">{escape(value)}</span>{small}</div>'
    )


def _share(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "–"


def _cards(figures: dict[str, Any]) -> str:
    compared = figures["compared"]
    shift = figures["mean_confidence_shift"]
    cards = [
        _card("Compared", f"{compared:,}", f"in both: {figures['in_both']:,}"),
        _card(
            "Agree", _share(compared - figures["flips"], compared), f"{figures['flips']:,} flips"
        ),
        _card("Confidence B − A", "–" if shift is None else f"{shift:+.4f}", "mean over compared"),
        _card(
            "Only in one",
            f"{figures['only_in_a'] + figures['only_in_b']:,}",
            f"A {figures['only_in_a']:,} · B {figures['only_in_b']:,}",
        ),
    ]
    truth = figures.get("truth")
    if truth is not None:
        flips = truth["flips"]
        cards.append(
            _card(
                "Right on flips",
                f"A {flips['a_right']:,} · B {flips['b_right']:,}",
                f"neither {flips['neither']:,} · no truth {flips['no_truth']:,}",
            )
        )
        for side in ("a", "b"):
            value = truth[f"{side}_accuracy"]
            cards.append(
                _card(
                    f"Accuracy {side.upper()}",
                    "–" if value is None else f"{100 * value:.1f}%",
                    f"on {truth['scored']:,}",
                )
            )
    return f'<section class="cards">{"".join(cards)}</section>'


def _table(figures: dict[str, Any]) -> str:
    totals: dict[str, int] = {}
    for pair in figures["pairs"]:
        totals[pair["a"]] = totals.get(pair["a"], 0) + pair["count"]
        totals[pair["b"]] = totals.get(pair["b"], 0) + pair["count"]
    names = sorted(sorted(totals, key=lambda n: -totals[n])[:MAX_CLASSES])
    if not names:
        return ""
    counts = {(p["a"], p["b"]): p["count"] for p in figures["pairs"]}
    matrix = [[counts.get((a, b), 0) for b in names] for a in names]
    chart = confusion_heatmap(names, names, matrix)
    lede = (
        "Rows: A's answer; columns: B's. Green: the same answer; blue: a flip, darker for a "
        "larger share of A's row."
    )
    return (
        f'<section id="table"><h2>A × B</h2><p class="lede">{lede}</p>'
        f'<div class="figure">{chart}</div></section>'
    )


def _classes(figures: dict[str, Any]) -> str:
    per_class = figures["per_class"]
    if not per_class:
        return ""
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td class='n'>{c['lost']:,}</td>"
        f"<td class='n'>{c['gained']:,}</td><td class='n'>{c['net']:+,}</td></tr>"
        for name, c in sorted(per_class.items(), key=lambda p: (-abs(p[1]["net"]), p[0]))
    )
    table = (
        "<table class='errors'><thead><tr><th>class</th><th class='n'>lost (A said it)</th>"
        "<th class='n'>gained (B says it)</th><th class='n'>net</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )
    return f'<section id="classes"><h2>Flips per class</h2>{table}</section>'


def _flip_card(flip: Flip, thumbs: dict[str, str | None]) -> str:
    uri = thumbs.get(flip.id)
    if uri:
        image = f'<img class="thumb" alt="" src="{uri}">'
    elif flip.url:
        image = (
            '<img class="thumb remote" alt="image at its URL" loading="lazy" '
            f'referrerpolicy="no-referrer" src="{escape(flip.url)}">'
        )
    else:
        image = '<div class="ph">image not found</div>'
    where = flip.path or flip.url or flip.id
    name = where.rstrip("/").rsplit("/", 1)[-1] or where
    truth = ""
    if flip.truth is not None:
        text = " + ".join(sorted(flip.truth)) or "none"
        truth = f'<div class="margin">truth: {escape(text)}</div>'
    return (
        f'<figure class="review">{image}<figcaption>'
        f'<div class="fn" title="{escape(where)}">{escape(name)}</div>'
        f"<div>A <b>{escape(flip.a)}</b> {flip.a_confidence:.2f}</div>"
        f"<div>B <b>{escape(flip.b)}</b> {flip.b_confidence:.2f}</div>{truth}"
        "</figcaption></figure>"
    )


def _gallery(flips: list[Flip], base: Path) -> str:
    if not flips:
        return ""
    thumbs = make_thumbnails(
        (f.id, found) for f in flips if (found := image_file(f.id, f.path, base=base)) is not None
    )
    cards = "".join(_flip_card(flip, thumbs) for flip in flips)
    lede = "The flips both sides were surest of (A's confidence plus B's), surest first."
    return (
        f'<section id="flips"><h2>Flips</h2><p class="lede">{lede}</p>'
        f'<div class="grid">{cards}</div></section>'
    )


def render_page(figures: dict[str, Any], flips: list[Flip], a: Path, b: Path, *, base: Path) -> str:
    """The whole page; ``base``: where B's relative image paths are tried."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = f"{a.name} vs {b.name}"
    body = _cards(figures) + _table(figures) + _classes(figures) + _gallery(flips, base)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="color-scheme" content="light">'
        f'<meta name="generator" content="{GENERATOR}">'
        f"<title>Diff · {escape(title)}</title><style>{CSS}</style></head><body><main>"
        '<header><p class="eyebrow">batchclassify diff</p>'
        f"<h1>{escape(title)}</h1>"
        f'<p class="sub">A {escape(str(a))} · B {escape(str(b))}</p></header>'
        f"{body}<footer>Made by batchclassify diff on {now}.</footer>"
        "</main></body></html>\n"
    )
