"""The HTML report in a real browser: headless Chromium (Debian's ``chromium``) opens it.

A copy of the page gets two tiny scripts (the report itself has none): one first in
``<head>`` that records errors, one at the end that writes what the page drew into the DOM
on ``load``; ``--dump-dom`` hands it back. Chromium's own log (``--enable-logging``) must
hold no console message either. A screenshot is kept as the test's artifact.

Skipped when Chromium is absent, except in CI (``CI`` set), where it must be installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batchclassify.server import BackgroundServer

from .conftest import Cli
from .test_report import make_job

_RECORD_ERRORS = """<script>
window.__errors = [];
addEventListener("error", (e) => __errors.push(String(e.message || (e.target && e.target.src)
  || e.type)), true);
addEventListener("unhandledrejection", (e) => __errors.push(String(e.reason)));
for (const level of ["error", "warn"]) {
  const original = console[level];
  console[level] = (...args) => { __errors.push(level + ": " + args.join(" "));
    original.apply(console, args); };
}
</script>"""

_REPORT_DRAWN = """<script>
addEventListener("load", () => {
  const box = (el) => { const r = el.getBoundingClientRect(); return [r.width, r.height]; };
  const result = {
    errors: window.__errors,
    charts: [...document.querySelectorAll("svg.chart")].map(box),
    images: [...document.images].map((img) => ({
      src: img.getAttribute("src"), complete: img.complete, width: img.naturalWidth})),
    resources: performance.getEntriesByType("resource").map((r) => r.name),
    width: document.documentElement.scrollWidth,
  };
  const out = document.createElement("pre");
  out.id = "browser-check";
  out.textContent = JSON.stringify(result);
  document.body.append(out);
});
</script>"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def run_chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.glob('chromium-profile-*')))}"
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--hide-scrollbars",
        "--window-size=1280,2400",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def inspect(tmp_path: Path, page: Path) -> tuple[dict[str, Any], list[str]]:
    """What the page drew, from the DOM, and the console lines of Chromium's log."""
    probe = page.with_name("probe.html")
    html = page.read_text()
    html = html.replace("<head>", "<head>" + _RECORD_ERRORS, 1)
    probe.write_text(html.replace("</body>", _REPORT_DRAWN + "</body>", 1))
    done = run_chromium(
        tmp_path,
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",
        "--dump-dom",
        probe.as_uri(),
    )
    found = re.search(r'<pre id="browser-check">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the page never finished loading; chromium said:\n{done.stderr[-2000:]}"
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return json.loads(found.group(1).replace("&amp;", "&").replace("&lt;", "<")), console


def screenshot(tmp_path: Path, page: Path) -> Path:
    shot = tmp_path / f"{page.stem}.png"
    done = run_chromium(tmp_path, f"--screenshot={shot}", page.as_uri())
    assert shot.is_file(), done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot of the HTML report: {shot}")
    return shot


@pytest.mark.slow
@pytest.mark.parametrize("model", ["colors/1", "colors-multilabel/1"])
def test_chromium_draws_every_chart_and_thumbnail_without_errors(
    tmp_path: Path, make_server: Callable[..., BackgroundServer], cli: Cli, model: str
) -> None:
    output, server = make_job(tmp_path, make_server, cli, model=model)
    (tmp_path / "images" / "07-green.png").unlink()  # a placeholder, not an error
    page = tmp_path / "report.html"
    result = cli("report", output, "--html", page, "--by", "split")
    assert result.code == 0, result.err

    drawn, console = inspect(tmp_path, page)

    assert "image not found" in page.read_text()
    assert drawn["errors"] == []
    assert console == []
    sections = 5 if model == "colors/1" else 6  # classes, overall, by, ... heatmap
    assert len(drawn["charts"]) >= sections
    assert all(width > 0 and height > 0 for width, height in drawn["charts"]), drawn["charts"]
    embedded = [img for img in drawn["images"] if img["src"].startswith("data:image/jpeg")]
    assert embedded and page.read_text().count("data:image/jpeg") == len(embedded)
    assert all(img["complete"] and img["width"] > 0 for img in embedded)
    remote = [img for img in drawn["images"] if not img["src"].startswith("data:")]
    assert remote and all(img["src"].startswith(server.url + "/_files/") for img in remote)
    # Self-contained: the only fetches are the URL items' own images.
    assert all(name.startswith(server.url + "/_files/") for name in drawn["resources"])
    assert drawn["width"] <= 1280, "the page scrolls sideways on a laptop"
    screenshot(tmp_path, page)
