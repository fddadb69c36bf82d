"""``batchclassify report`` (issue 12): the numbers it prints equal the rows of the output.

Each job runs the real CLI against the local server: local files and URL items, a missing
file and a file that is not an image (error rows), single- and multi-label, JSONL and Parquet.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batchclassify.commands.report.gallery import Gallery
from batchclassify.commands.report.stats import histogram_quantile
from batchclassify.server import BackgroundServer

from .conftest import KEY, Cli, make_image, read_rows, run_args

SHADES = ["red", "green", "blue", "yellow", "white", "black"]


def make_job(
    tmp_path: Path,
    make_server: Callable[..., BackgroundServer],
    cli: Cli,
    *,
    model: str = "colors/1",
    suffix: str = ".jsonl",
) -> tuple[Path, BackgroundServer]:
    """Run a job over 24 local images, 4 URL items, a missing file and a text file."""
    images = tmp_path / "images"
    for n in range(24):
        # Two-colour images make the model unsure: a spread of confidences and margins.
        color, other = SHADES[n % 6], SHADES[(n + 1 + n // 6) % 6]
        path = make_image(images / f"{n:02d}-{color}.png", color, size=(40, 30))
        if n % 3 == 0:
            make_image(images / "_tmp.png", other, size=(18 + n // 2, 30))
            from PIL import Image

            with Image.open(path) as base, Image.open(images / "_tmp.png") as patch:
                base.paste(patch, (0, 0))
                base.save(path)
    (images / "_tmp.png").unlink()
    (images / "notes.png").write_text("not an image")
    server = make_server(files_dir=images)
    lines = ["path,split"]
    lines += [
        f"{p},{'train' if i % 4 else 'valid'}" for i, p in enumerate(sorted(images.iterdir()))
    ]
    lines += [f"{server.url}/_files/{n:02d}-{SHADES[n % 6]}.png,web" for n in range(4)]
    lines += [f"{images / 'gone.png'},train"]
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    output = tmp_path / f"out{suffix}"
    result = cli(*run_args(server, output, manifest, model=model), "-q")
    assert result.code == 1, result.err  # the two bad items failed
    return output, server


def expected_classes(rows: list[dict[str, Any]]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for row in rows:
        if row["status"] == "ok":
            counts.update(row["predicted_classes"] or ["(no class)"])
    return counts


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def class_confidences(row: dict[str, Any], name: str) -> float:
    if not row["multilabel"]:
        return float(row["confidence"])
    return float(next(p["confidence"] for p in row["predictions"] if p["class"] == name))


def parse_class_lines(text: str) -> dict[str, list[str]]:
    """The class table of the text report: name -> its cells."""
    block = text.split("\nclasses (", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    cells = [re.split(r"\s{2,}", line.strip()) for line in block]
    return {row[0]: row[1:] for row in cells}


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
@pytest.mark.parametrize("model", ["colors/1", "colors-multilabel/1"])
def test_text_report_numbers_equal_the_rows(
    tmp_path: Path, make_server: Callable[..., BackgroundServer], cli: Cli, model: str, suffix: str
) -> None:
    output, _ = make_job(tmp_path, make_server, cli, model=model, suffix=suffix)
    rows = read_rows(output)
    ok = [row for row in rows if row["status"] == "ok"]

    result = cli("report", output, "--low-confidence", "0.9")

    assert result.code == 0, result.err
    text = result.out
    assert f"images {len(rows)}: ok {len(ok)} " in text
    assert f"failed {len(rows) - len(ok)} " in text
    below = sum(row["confidence"] is not None and row["confidence"] < 0.9 for row in ok)
    assert f"below 0.9 confidence {below} " in text
    assert f"model {model}" in text
    table = parse_class_lines(text)
    counts = expected_classes(rows)
    assert {name: int(cells[0]) for name, cells in table.items()} == dict(counts)
    for name, cells in table.items():
        if name == "(no class)":  # nothing passed the threshold: no confidence to show
            assert cells[2:] == ["-"] * 6
            continue
        values = [class_confidences(r, name) for r in ok if name in r["predicted_classes"]]
        quantiles = [float(cell) for cell in cells[2:7]]
        wanted = [nearest_rank(values, q) for q in (0.05, 0.25, 0.5, 0.75, 0.95)]
        assert quantiles == pytest.approx(wanted, abs=0.0051), name
        assert cells[7].split()[0] == str(sum(v < 0.9 for v in values)), name
    errors = Counter(row["error_type"] for row in rows if row["status"] != "ok")
    assert errors == {"missing_file": 1, "bad_image": 1}
    for kind, count in errors.items():
        assert re.search(rf"^  {kind}\s+{count}  e\.g\. ", text, re.M), kind
    assert KEY not in text


def html_of(cli: Cli, output: Path, *flags: str) -> str:
    page = output.parent / "report.html"
    result = cli("report", output, "--html", page, *flags)
    assert result.code == 0, result.err
    assert f"wrote {page}" in result.err
    return page.read_text()


def test_html_counts_gallery_and_errors_match_the_rows(
    tmp_path: Path, make_server: Callable[..., BackgroundServer], cli: Cli
) -> None:
    output, _ = make_job(tmp_path, make_server, cli)
    rows = read_rows(output)
    (tmp_path / "images" / "01-green.png").unlink()  # gone since the run: a placeholder

    page = html_of(cli, output, "--per-class", "2", "--by", "split")

    cards = fact_cards(page)
    assert cards["Images"] == str(len(rows))
    assert cards["Failed"] == f"2|{100 * 2 / len(rows):.1f}%"
    for name, count in expected_classes(rows).items():
        assert re.search(rf"<title>{re.escape(name)}: {count} \(", page), name
    assert "<td><code>missing_file</code></td><td class='n'>1</td>" in page
    assert "<td><code>bad_image</code></td><td class='n'>1</td>" in page
    # The gallery: per class the 2 rows with the smallest margin between the first two.
    shown = re.findall(r'<div class="fn" title="([^"]+)">', page)
    wanted = []
    for name in expected_classes(rows):
        ranked = sorted(
            (r for r in rows if r["status"] == "ok" and r["top"] == name),
            key=lambda r: margin(r),
        )
        wanted += [r["path"] or r["url"] for r in ranked[:2]]
    assert sorted(shown) == sorted(wanted)
    local = [w for w in wanted if not w.startswith("http") and Path(w).exists()]
    assert page.count('src="data:image/jpeg;base64,') == len(local)
    urls = [w for w in wanted if w.startswith("http")]
    assert all(f'src="{url}"' in page for url in urls)
    missing = [w for w in wanted if not w.startswith("http") and not Path(w).exists()]
    assert page.count("image not found") == len(missing)
    assert KEY not in page
    # --by split: the images of each split.
    splits = Counter(r.get("split") or "(none)" for r in rows)
    assert "web" in splits
    for value, count in splits.items():
        assert re.search(rf'class="num">{count}</text>', page), value


def fact_cards(page: str) -> dict[str, str]:
    """The page's fact cards: label -> value (and its note, if any, after a |)."""
    found = re.findall(
        r'<span class="k">([^<]+)</span><span class="v"[^>]*>([^<]+)</span>'
        r'(?:<span class="note">([^<]*)</span>)?',
        page,
    )
    return {label: value + (f"|{note}" if note else "") for label, value, note in found}


def margin(row: dict[str, Any]) -> float:
    scores = [p["confidence"] for p in row["predictions"]]
    return round(float(scores[0]) - (float(scores[1]) if len(scores) > 1 else 0.0), 6)


def test_html_multilabel_cooccurrence_equals_the_rows(
    tmp_path: Path, make_server: Callable[..., BackgroundServer], cli: Cli
) -> None:
    output, _ = make_job(tmp_path, make_server, cli, model="colors-multilabel/1", suffix=".parquet")
    rows = [r for r in read_rows(output) if r["status"] == "ok"]

    page = html_of(cli, output, "--per-class", "3")

    # The gallery: per class, labelled images and near misses nearest the threshold (0.4).
    for group in page.split('<div class="group"><h3>')[1:]:
        label = group.split(" <span>", 1)[0]
        shown = re.findall(r'<div class="fn" title="([^"]+)">', group)
        candidates = []
        for row in rows:
            score = next(p["confidence"] for p in row["predictions"] if p["class"] == label)
            if label in row["predicted_classes"] or score >= 0.2:
                candidates.append((round(abs(score - 0.4), 6), row["path"] or row["url"]))
        candidates.sort(key=lambda pair: pair[0])  # stable: file order breaks ties
        assert shown == [where for _, where in candidates[:3]], label

    pairs: Counter[tuple[str, str]] = Counter()
    for row in rows:
        chosen = sorted(row["predicted_classes"])
        pairs.update((a, b) for i, a in enumerate(chosen) for b in chosen[i + 1 :])
    assert pairs, "the job should have images with two labels"
    for (first, second), count in pairs.items():
        assert f"<title>{first} + {second}: {count}</title>" in page
    assert "Labels together" in page
    assert "nearest the threshold (0.4)" in page


def test_report_reads_the_journal_of_a_running_parquet_job(
    tmp_path: Path, make_server: Callable[..., BackgroundServer], cli: Cli
) -> None:
    output, _ = make_job(tmp_path, make_server, cli, suffix=".parquet")
    part = output / "part-000000.parquet"
    import pyarrow.parquet as pq

    # As a killed job leaves it: rows in a journal, no part file yet.
    rows = pq.read_table(part).to_pylist()
    import orjson

    (output / "_journal-000000.jsonl").write_bytes(
        b"".join(orjson.dumps(row) + b"\n" for row in rows) + b'{"id": "torn'
    )
    part.unlink()

    result = cli("report", output)

    assert result.code == 0, result.err
    assert f"images {len(rows)}: ok {len(rows) - 2} " in result.out


def test_bad_flags_and_missing_output_exit_2_with_a_clear_message(
    tmp_path: Path, make_server: Callable[..., BackgroundServer], cli: Cli
) -> None:
    missing = cli("report", tmp_path / "nope.jsonl")
    assert missing.code == 2 and "nope.jsonl: no such output" in missing.err

    output, _ = make_job(tmp_path, make_server, cli)
    by = cli("report", output, "--by", "splitt")
    assert by.code == 2
    assert "--by splitt: no such column" in by.err and "split" in by.err.split("columns:")[1]

    low = cli("report", output, "--low-confidence", "1.5")
    assert low.code == 2 and "--low-confidence 1.5" in low.err

    precious = tmp_path / "notes.html"
    precious.write_text("<p>my notes</p>")
    refused = cli("report", output, "--html", precious)
    assert refused.code == 2 and "not a batchclassify report" in refused.err
    assert precious.read_text() == "<p>my notes</p>"
    # Its own earlier page is replaced: rerunning the report each morning just works.
    page = tmp_path / "report.html"
    assert cli("report", output, "--html", page).code == 0
    assert cli("report", output, "--html", page).code == 0


def test_report_without_settings_or_rows(tmp_path: Path, cli: Cli) -> None:
    output = tmp_path / "empty.jsonl"
    output.write_bytes(b"")

    result = cli("report", output, "--html", tmp_path / "r.html")

    assert result.code == 0, result.err
    assert "images 0: ok 0 (-), failed 0 (-)" in result.out
    assert "model unknown" in result.out
    page = (tmp_path / "r.html").read_text()
    assert fact_cards(page)["Images"] == "0"


def test_quantile_of_the_fine_histogram_is_the_nearest_rank() -> None:
    values = [0.031, 0.5, 0.5, 0.77, 0.999, 0.2, 0.64]
    histogram = [0] * 1000
    for value in values:
        histogram[int(value * 1000)] += 1
    for q in (0.05, 0.25, 0.5, 0.75, 0.95, 1.0):
        assert histogram_quantile(histogram, q) == pytest.approx(
            nearest_rank(values, q), abs=0.00051
        )
    assert histogram_quantile([0] * 1000, 0.5) is None


def test_gallery_keeps_the_smallest_margins_first_seen_on_ties() -> None:
    gallery = Gallery(size=2, threshold=0.5)
    for n, (first, second) in enumerate([(0.9, 0.1), (0.5, 0.4), (0.6, 0.5), (0.7, 0.2)]):
        predictions = [{"class": "a", "confidence": first}, {"class": "b", "confidence": second}]
        gallery.add_single("a", {"id": f"r{n}", "path": None, "predictions": predictions})

    assert [item.id for item in gallery.items("a")] == ["r1", "r2"]
    assert [item.score for item in gallery.items("a")] == [0.1, 0.1]


def test_duration_and_rate_come_from_the_progress_file(
    tmp_path: Path, make_server: Callable[..., BackgroundServer], cli: Cli
) -> None:
    output, _ = make_job(tmp_path, make_server, cli)
    progress = output.with_name(output.name + ".progress.json")
    progress.write_text(
        '{"tool": "batchclassify", "state": "finished", "started": "2026-11-27T01:00:00+00:00",'
        ' "updated": "2026-11-27T01:02:05+00:00", "elapsed_s": 125.0, "ok": 240, "failed": 10}'
    )

    result = cli("report", output, "--html", tmp_path / "r.html")

    assert result.code == 0, result.err
    assert "job finished · last run 2m 05s · 2.0 images/s" in result.out
    page = (tmp_path / "r.html").read_text()
    assert fact_cards(page)["Last run"] == "2m 05s|2.0 images/s · finished"


def test_many_classes_keep_the_page_a_few_mb(tmp_path: Path) -> None:
    from batchclassify.commands.report.facts import job_facts
    from batchclassify.commands.report.html import MAX_BARS, MAX_CARDS, render_html
    from batchclassify.commands.report.stats import collect

    image = make_image(tmp_path / "photo.jpg", "red", size=(640, 480))
    rows = [
        {
            "id": str(n),
            "path": str(image),
            "status": "ok",
            "top": f"class-{n % 300}",
            "confidence": 0.5 + (n % 7) / 20,
            "predicted_classes": [f"class-{n % 300}"],
            "predictions": [{"class": f"class-{n % 300}", "confidence": 0.5 + (n % 7) / 20}],
            "multilabel": False,
        }
        for n in range(30_000)
    ]
    stats = collect(rows, low=0.5, per_class=24, threshold=0.4)

    page = render_html(stats, job_facts(tmp_path / "out.jsonl"), base=tmp_path)

    assert page.count('<figure class="review">') == MAX_CARDS
    assert page.count('src="data:image/jpeg;base64,') == MAX_CARDS
    assert f"the {MAX_BARS} most frequent of 300 classes" in page
    assert "2 per class, for the 300 most frequent classes" in page
    assert len(page.encode()) < 5_000_000


def test_class_names_and_paths_are_escaped_in_the_page(tmp_path: Path) -> None:
    from batchclassify.commands.report.facts import job_facts
    from batchclassify.commands.report.html import render_html
    from batchclassify.commands.report.stats import collect

    evil = '<img src=x onerror="alert(1)">'
    row = {
        "id": "1",
        "path": f'/nowhere/"{evil}.jpg',
        "status": "ok",
        "top": evil,
        "confidence": 0.3,
        "predicted_classes": [evil],
        "predictions": [{"class": evil, "confidence": 0.3}],
        "multilabel": False,
        "split": evil,
    }
    failed = {"id": "2", "path": evil, "status": "error", "error_type": evil, "error": evil}
    stats = collect([row, failed], low=0.5, per_class=5, threshold=0.4, by="split")

    page = render_html(stats, job_facts(tmp_path / "out.jsonl"), base=tmp_path)

    assert evil not in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
