"""``batchclassify diff A B`` (issue 22): two outputs with known differences report exactly them.

A is a real job's output (the local server, a labelled folder); B is A with rows edited by
the test (answers changed, confidences moved, rows dropped, added, failed), written as JSONL
or as a Parquet folder, or a second real job over the same images at another --confidence.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchclassify.server import BackgroundServer

from .conftest import Cli, read_rows, run_args
from .test_report_browser import inspect
from .test_report_truth import labelled_folder


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path.mkdir()
        pq.write_table(pa.Table.from_pylist(rows), path / "part-000000.parquet")
    else:
        path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))


@pytest.fixture
def job(
    tmp_path: Path, make_server: Callable[..., BackgroundServer], cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Path, list[dict[str, Any]]]:  # fmt: skip
    """A's output, run from ``tmp_path`` over a relative folder (rows hold relative paths)."""
    server = make_server()
    labelled_folder(tmp_path / "dataset")
    monkeypatch.chdir(tmp_path)
    output = tmp_path / "a.jsonl"
    result = cli(*run_args(server, output, Path("dataset")), "-q")
    assert result.code == 0, result.err
    monkeypatch.chdir(tmp_path.parent)  # diff runs from anywhere else
    return output, read_rows(output)


def edited(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """B: A's rows with known edits, and what diff must find."""
    b = [dict(row) for row in rows]
    flips = {}
    for row in b[:3]:  # three answers changed
        new = "gray" if row["top"] != "gray" else "red"
        flips[row["id"]] = (row["top"], new)
        row["top"], row["predicted_classes"] = new, [new]
    for n, row in enumerate(b[3:9]):  # confidences moved
        row["confidence"] = round(row["confidence"] - 0.01 * (n + 1), 4)
    b[9]["status"], b[9]["error_type"], b[9]["top"] = "failed", "bad_image", None
    dropped = [b.pop(10)["id"], b.pop(10)["id"]]  # only in A
    b.append(dict(b[0], id="extra/new.png", path="extra/new.png"))  # only in B
    return b, {"flips": flips, "dropped": dropped, "failed_id": b[9]["id"]}


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_diff_reports_exactly_the_edits(
    tmp_path: Path, job: tuple[Path, list[dict[str, Any]]], cli: Cli, suffix: str
) -> None:
    a_path, rows = job
    b_rows, known = edited(rows)
    b_path = tmp_path / f"b{suffix}"
    write_rows(b_path, b_rows)

    result = cli("diff", a_path, b_path, "--json")

    assert result.code == 0, result.err
    figures = json.loads(result.out)
    a_by_id = {row["id"]: row for row in rows}
    both_ok = [
        (a_by_id[row["id"]], row)
        for row in b_rows
        if row["id"] in a_by_id and row["status"] == "ok" and a_by_id[row["id"]]["status"] == "ok"
    ]
    assert figures["in_both"] == len(rows) - 2
    assert figures["compared"] == len(both_ok) == len(rows) - 3
    assert figures["failed_in_b"] == 1 and figures["failed_in_a"] == 0
    assert figures["flips"] == 3
    assert figures["agreement"] == (len(both_ok) - 3) / len(both_ok)
    assert figures["only_in_a"] == 2 and sorted(figures["only_in_a_examples"]) == sorted(
        known["dropped"]
    )
    assert figures["only_in_b"] == 1 and figures["only_in_b_examples"] == ["extra/new.png"]
    pairs = Counter((a["top"], b["top"]) for a, b in both_ok)
    assert {(p["a"], p["b"]): p["count"] for p in figures["pairs"]} == dict(pairs)
    lost = Counter(old for old, new in known["flips"].values())
    gained = Counter(new for old, new in known["flips"].values())
    assert {k: v["lost"] for k, v in figures["per_class"].items() if v["lost"]} == dict(lost)
    assert {k: v["gained"] for k, v in figures["per_class"].items() if v["gained"]} == dict(gained)
    shift = sum(b["confidence"] - a["confidence"] for a, b in both_ok) / len(both_ok)
    assert figures["mean_confidence_shift"] == pytest.approx(shift, abs=1e-12)
    assert shift < 0

    text = cli("diff", a_path, b_path)
    assert text.code == 0, text.err
    assert "flipped 3" in text.out and "only in A 2" in text.out
    assert f"mean confidence shift B - A {shift:+.4f}" in text.out


def test_diff_with_truth_says_which_side_was_right_on_the_flips(
    tmp_path: Path, job: tuple[Path, list[dict[str, Any]]], cli: Cli
) -> None:
    a_path, rows = job
    b_rows = [dict(row) for row in rows]
    # B answers the folder's class where A was wrong, and breaks two that A had right.
    expected: Counter[str] = Counter()
    broken = 0
    for row, a in zip(b_rows, rows, strict=True):
        truth = Path(a["path"]).parent.name
        if a["top"] != truth:
            row["top"] = truth
            expected["b_right"] += 1
        elif broken < 2:
            row["top"] = "gray"
            broken += 1
            expected["a_right"] += 1
    assert expected["b_right"], "the job needs mistakes"
    b_path = tmp_path / "b.jsonl"
    write_rows(b_path, b_rows)

    figures = json.loads(cli("diff", a_path, b_path, "--truth", "folder", "--json").out)

    assert figures["truth"]["flips"] == {
        "a_right": 2, "b_right": expected["b_right"], "neither": 0, "no_truth": 0,
    }  # fmt: skip
    right_a = sum(Path(r["path"]).parent.name == r["top"] for r in rows)
    assert figures["truth"]["a_accuracy"] == right_a / len(rows)
    assert figures["truth"]["b_accuracy"] == (len(rows) - 2) / len(rows)


def test_diff_of_two_real_runs_and_its_page_in_chromium(
    tmp_path: Path,
    make_server: Callable[..., BackgroundServer],
    job: tuple[Path, list[dict[str, Any]]],
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a_path, rows = job
    server = make_server()
    monkeypatch.chdir(tmp_path)
    b_path = tmp_path / "b.parquet"
    result = cli(*run_args(server, b_path, Path("dataset")), "--confidence", "0.5", "-q")
    assert result.code == 0, result.err
    b_rows = read_rows(b_path)
    monkeypatch.chdir(tmp_path.parent)
    page = tmp_path / "diff.html"

    result = cli("diff", a_path, b_path, "--html", page, "--truth", "folder", "--json")

    assert result.code == 0, result.err
    figures = json.loads(result.out)
    b_by_id = {row["id"]: row for row in b_rows}
    flips = [r for r in rows if (r["top"] or "") != (b_by_id[r["id"]]["top"] or "")]
    assert flips, "a 0.5 threshold should leave some images without a class"
    assert figures["flips"] == len(flips) and figures["only_in_a"] == figures["only_in_b"] == 0
    html = page.read_text()
    assert html.count('<figure class="review">') == len(flips)
    drawn, console = inspect(tmp_path, page)
    assert drawn["errors"] == [] and console == []
    assert drawn["charts"] and all(w > 0 and h > 0 for w, h in drawn["charts"])
    embedded = [img for img in drawn["images"] if img["src"].startswith("data:image/jpeg")]
    assert len(embedded) == len(flips), "thumbnails found from another working folder"
    assert all(img["complete"] and img["width"] > 0 for img in embedded)
    assert drawn["width"] <= 1280
