"""The report's charts draw their labels inside the chart (issue 18): the histogram's top
y-axis label of a large count (``138,035``) was cut at the left edge and read ``3,035``; the
numbers right of the class bars were cut at the right edge for counts in the millions.

Measured by the browser that draws it: headless Chromium (see ``test_report_browser.py``)
gives each label's box (``getBBox``, in the chart's own units), which must lie within the
viewBox. Skipped when Chromium is absent, except in CI.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from batchclassify.commands.report.charts import class_bars, histogram, stacked_shares
from batchclassify.commands.report.style import CSS

from .test_report_browser import run_chromium

_MEASURE = """<script>
addEventListener("load", () => {
  const charts = [...document.querySelectorAll("svg.chart")].map((svg) => ({
    width: svg.viewBox.baseVal.width,
    labels: [...svg.querySelectorAll("text")].map((text) => {
      const box = text.getBBox();
      return {text: text.textContent, left: box.x, right: box.x + box.width};
    }),
  }));
  const out = document.createElement("pre");
  out.id = "measured";
  out.textContent = JSON.stringify(charts);
  document.body.append(out);
});
</script>"""


@pytest.mark.slow
def test_histogram_axis_labels_fit_inside_the_chart(tmp_path: Path) -> None:
    peaks = (7, 1_380, 138_035, 12_345_678)
    charts = "".join(histogram([peak, peak // 2, 3] + [0] * 17, low=0.5) for peak in peaks)
    # The numbers right of the bars, for the largest counts.
    charts += class_bars([("cat", peaks[-1], 5), ("dog", 3, 0)], peaks[-1] + 3, low=0.5)
    charts += stacked_shares([("train", peaks[-1], [("cat", peaks[-1])])], {"cat": "#38d"})
    page = tmp_path / "charts.html"
    page.write_text(
        f'<!doctype html><html><head><meta charset="utf-8"><style>{CSS}</style></head>'
        f"<body><main>{charts}</main>{_MEASURE}</body></html>"
    )
    done = run_chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    found = re.search(r'<pre id="measured">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the page never finished loading; chromium said:\n{done.stderr[-2000:]}"
    measured = json.loads(found.group(1).replace("&amp;", "&"))

    assert len(measured) == len(peaks) + 2
    for peak, chart in zip(peaks, measured, strict=False):
        texts = [label["text"] for label in chart["labels"]]
        assert f"{peak:,}" in texts  # the top of the y axis names the peak count
    for chart in measured:
        for label in chart["labels"]:
            assert label["left"] >= 0, f"{label['text']!r} cut off at the left: {label}"
            assert label["right"] <= chart["width"], f"{label['text']!r} cut off at the right"
