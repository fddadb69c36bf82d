"""``batchclassify.read_results``: an output's rows as a user means them, one per image, the
latest (what ``report`` and ``export`` read), for a JSONL file, a Parquet folder and a
``run --processes`` folder. Before, users re-implemented it (docs/resume.md told them to
``drop_duplicates("id", keep="last")``).

The state a ``--retry-failed`` run killed before its end leaves is made as its sink leaves
it: the new row of a failed id written after the old one (a JSONL line, a Parquet journal).
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pandas as pd
import pytest

import batchclassify
from batchclassify import UsageError, read_results
from batchclassify.server import BackgroundServer

from .conftest import Cli, make_images, png, run_args, sample_ok_row


def _failed_run(tmp_path: Path, cli: Cli, server: BackgroundServer, output: Path) -> str:
    """A run in which the blue images failed; returns one of their ids."""
    expected = make_images(tmp_path / "images", 12)
    server.fail_image(png("blue"), 400)
    assert cli(*run_args(server, output, tmp_path / "images")).code == 1
    return next(item_id for item_id, color in expected.items() if color == "blue")


def test_a_jsonl_output_reads_as_each_ids_latest_row(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    output = tmp_path / "out.jsonl"
    retried = _failed_run(tmp_path, cli, server, output)
    with open(output, "ab") as handle:  # the retried row, after its old one
        handle.write(orjson.dumps(sample_ok_row(retried)) + b"\n")

    rows = list(read_results(output))

    # The reference: pandas, as docs/resume.md told users to do it themselves.
    reference = pd.read_json(output, lines=True).drop_duplicates("id", keep="last")
    assert len(rows) == len(reference) == 12
    assert {row["id"]: row["status"] for row in rows} == dict(
        zip(reference["id"], reference["status"], strict=True)
    )
    assert next(row for row in rows if row["id"] == retried)["top"] == "red"


def test_a_parquet_output_with_a_journal_left_by_a_kill(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    output = tmp_path / "out.parquet"
    retried = _failed_run(tmp_path, cli, server, output)
    parts = sorted(output.glob("part-*.parquet"))
    journal = output / f"_journal-{len(parts):06d}.jsonl"  # the part a killed run was writing
    journal.write_bytes(orjson.dumps(sample_ok_row(retried)) + b"\n")

    rows = list(read_results(output))

    written = pd.read_parquet(output)  # the finished parts: the old row
    assert len(rows) == len(written) == 12 and written["id"].is_unique
    latest = {row["id"]: row for row in rows}
    assert latest[retried]["status"] == "ok" and latest[retried]["top"] == "red"
    assert written.set_index("id").loc[retried, "status"] == "error"


def test_a_processes_folder_reads_as_one_output(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    expected = make_images(tmp_path / "images", 10)
    output = tmp_path / "out.parquet"
    args = run_args(server, output, tmp_path / "images")
    assert cli(*args, "--processes", "2", "-q").code == 0

    rows = list(read_results(str(output)))

    assert {row["id"]: row["top"] for row in rows} == expected
    assert len(rows) == len(expected)


def test_a_missing_or_foreign_output_is_refused_before_any_row(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such output"):
        read_results(tmp_path / "nothing.jsonl")
    notes = tmp_path / "notes.csv"
    notes.write_text("a,b\n1,2\n")
    with pytest.raises(UsageError, match="is not a batchclassify output"):
        read_results(notes)


def test_it_is_public() -> None:
    assert "read_results" in batchclassify.__all__
    assert batchclassify.read_results is read_results
