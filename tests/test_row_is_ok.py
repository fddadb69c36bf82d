"""One rule for an ok row (``models.row_is_ok``): ``ok`` with a real answer. An ``ok`` row
without one, as an older version's cache bug wrote it, is failed for resume and for every
reader alike: report, export, diff and status count it failed, never ok."""

from __future__ import annotations

import json
from pathlib import Path

import orjson

from batchclassify.server import BackgroundServer

from .conftest import Cli, make_images, read_rows, run_args


def _poisoned_output(tmp_path: Path, server: BackgroundServer, cli: Cli) -> Path:
    folder = tmp_path / "in"
    make_images(folder, 2)
    (folder / "x.jpg").write_bytes(b"not an image\n")
    output = tmp_path / "old.jsonl"
    assert cli(*run_args(server, output, folder), "-q").code == 1
    rows = []
    for row in read_rows(output):
        if Path(row["id"]).name == "x.jpg":  # the failure, as the old bug rewrote it
            row.update(status="ok", http_status=200, error_type=None, error=None, cached=True)
        rows.append(orjson.dumps(row) + b"\n")
    output.write_bytes(b"".join(rows))
    Path(f"{output}.progress.json").unlink()  # an older version's output: counts from rows
    return output


def test_an_ok_row_without_answer_is_failed_for_every_reader(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    output = _poisoned_output(tmp_path, server, cli)

    report = cli("report", output, "--json")
    assert report.code == 0, report.err
    figures = json.loads(report.out)
    assert (figures["ok"], figures["failed"]) == (2, 1)

    dest = tmp_path / "dataset"
    export = cli("export", output, "--to", "folders", dest)
    assert export.code == 0, export.err
    assert "exported 2 images" in export.out and "1 failed row" in export.out
    assert sum(1 for _ in (dest / "train").rglob("*.png")) == 2

    diff = cli("diff", output, output, "--json")
    assert diff.code == 0, diff.err
    compared = json.loads(diff.out)
    assert (compared["compared"], compared["failed_in_a"], compared["failed_in_b"]) == (2, 1, 1)

    status = cli("status", output, "--json")
    assert status.code == 0, status.err
    counts = json.loads(status.out)
    assert (counts["ok"], counts["failed"]) == (2, 1)

    # ... as resume counts it: a rerun with --retry-failed sends that image again.
    before = server.stats.requests
    assert cli(*run_args(server, output, tmp_path / "in"), "--retry-failed", "-q").code == 1
    assert server.stats.requests == before + 1
