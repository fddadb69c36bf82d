"""What ``report`` and ``status`` say an output is (issue 18): a killed job is not running and
its counts are the output's; a file that is no batchclassify output is named for what it is
(exit 2), not read as "0 images"; a ``merge`` result says it is one.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from batchclassify.commands.status import KILLED
from batchclassify.error_types import ErrorType
from batchclassify.models import Item, error_row
from batchclassify.output.progressfile import progress_path

from .conftest import Cli
from .test_printing import classified, write_output


def _dead_pid() -> int:
    """The pid of a process that has exited (as a job killed with kill -9 leaves it)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_killed_job_is_not_running_and_counts_come_from_its_output(
    tmp_path: Path, cli: Cli
) -> None:
    rows = [classified(f"/data/{n}.png", "red") for n in range(5)]
    rows += [
        error_row(
            Item(id=f"/data/bad{n}.png"), error="x", error_type=ErrorType.BAD_IMAGE, attempts=1
        )
        for n in range(2)
    ]
    output = write_output(tmp_path / "out.jsonl", rows)
    # The job's last rewrite of its progress file, 2 s before kill -9: fewer rows than written.
    progress = {
        "tool": "batchclassify",
        "state": "running",
        "output": str(output),
        "pid": _dead_pid(),
        "host": socket.gethostname(),
        "started": "2026-01-01T00:00:00+00:00",
        "updated": "2026-01-01T00:00:05+00:00",
        "updated_unix": time.time(),
        "elapsed_s": 5.0,
        "already_done": 0,
        "total": 10,
        "total_is_exact": True,
        "found_so_far": 10,
        "ok": 2,
        "failed": 0,
        "remaining": 8,
    }
    progress_path(output).write_bytes(orjson.dumps(progress))

    report = cli("report", output)
    assert report.code == 0, report.err
    assert "job running" not in report.out
    assert "job not running (killed?)" in report.out

    status = json.loads(cli("status", output, "--json").out)
    assert (status["running"], status["summary"]) == (False, KILLED)
    assert (status["ok"], status["failed"], status["remaining"]) == (5, 2, 3)
    assert status["errors"] == {"bad_image": 2}
    text = cli("status", output).out
    assert "5 ok, 2 failed (the output's rows), 3 remaining of 10" in text


def _csv(path: Path) -> Path:
    path.write_text("path,label\nimg/a.jpg,cat\n")
    return path


def _other_jsonl(path: Path) -> Path:
    path.write_text('{"image": "a.jpg", "label": "cat"}\n')
    return path


def _parquet_file(path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ["a"], "status": ["ok"]}), path)
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    (path / "notes.txt").write_text("hello")
    return path


@pytest.mark.parametrize(
    ("make", "name", "said"),
    [
        (_csv, "labels.csv", "its first line is not JSON (a CSV or text file?)"),
        (_other_jsonl, "other.jsonl", "JSON lines without the id and status"),
        (_parquet_file, "table.parquet", "a Parquet file"),
        (_folder, "photos", "a folder without part-NNNNNN.parquet files"),
    ],
)
def test_a_file_that_is_no_output_is_named_for_what_it_is(
    tmp_path: Path, cli: Cli, make: object, name: str, said: str
) -> None:
    path = make(tmp_path / name)  # type: ignore[operator]
    for args in (
        ["report", path],
        ["export", path, "--to", "csv", tmp_path / "x.csv"],
        ["status", path],
    ):
        result = cli(*args)
        assert result.code == 2, (args, result.out)
        assert f"{path} is not a batchclassify output: {said}" in result.err
        assert "0 images" not in result.out
    assert not (tmp_path / "x.csv").exists()


def test_status_of_a_merge_says_it_is_one(tmp_path: Path, cli: Cli) -> None:
    first = write_output(tmp_path / "a.jsonl", [classified("/data/1.png", "red")])
    second = write_output(tmp_path / "b.jsonl", [classified("/data/2.png", "blue")])
    merged = tmp_path / "all.jsonl"
    assert cli("merge", first, second, "--output", merged).code == 0

    result = cli("status", merged)
    assert result.code == 0, result.err
    assert "older version" not in result.out
    assert f"a merged output (batchclassify merge of 2 outputs: {first}, {second})" in result.out
    assert "2 ok, 0 failed" in result.out
