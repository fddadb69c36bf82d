"""``report --truth --html`` in headless Chromium: the confusion heatmap, the reliability
diagram and the confident-mistakes gallery draw, with no console error (as
tests/test_report_browser.py checks the report itself)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from batchclassify.server import BackgroundServer

from .conftest import Cli
from .test_report_browser import inspect, screenshot
from .test_report_truth import labelled_folder, run_job


@pytest.mark.slow
def test_chromium_draws_the_truth_sections_without_errors(
    tmp_path: Path, make_server: Callable[..., BackgroundServer], cli: Cli
) -> None:
    server = make_server()
    source = labelled_folder(tmp_path / "dataset")
    output = tmp_path / "out.jsonl"
    rows = run_job(cli, server, output, source, "colors/1")
    page = tmp_path / "report.html"

    result = cli("report", output, "--truth", "folder", "--html", page)

    assert result.code == 0, result.err
    html = page.read_text()
    for anchor in ("truth", "confusion", "calibration", "mistakes"):
        assert f'<section id="{anchor}">' in html and f'href="#{anchor}"' in html, anchor
    assert 'aria-label="confusion matrix"' in html and 'aria-label="reliability diagram"' in html
    wrong = [r for r in rows if r["top"] and Path(r["path"]).parent.name != r["top"]]
    assert len(re.findall(r'<figure class="review mistake">', html)) == len(wrong)
    drawn, console = inspect(tmp_path, page)
    assert drawn["errors"] == [] and console == []
    assert all(width > 0 and height > 0 for width, height in drawn["charts"]), drawn["charts"]
    embedded = [img for img in drawn["images"] if img["src"].startswith("data:image/jpeg")]
    assert len(embedded) >= len(wrong)
    assert all(img["complete"] and img["width"] > 0 for img in embedded)
    assert drawn["width"] <= 1280, "the page scrolls sideways on a laptop"
    screenshot(tmp_path, page)
