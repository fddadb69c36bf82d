"""A ``run --processes`` output is one output to its user: ``status`` on the ``--output`` sums
the shards, and the Parquet folder is read plainly by pyarrow, pandas, polars and DuckDB (the
shards' settings, progress and lock files start with ``_``, which readers skip)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchclassify.commands.status import KILLED
from batchclassify.errors import OutputError
from batchclassify.output.outputs import adopt_legacy_files
from batchclassify.server import BackgroundServer

from .conftest import (
    PYTHON,
    Cli,
    MakeServer,
    make_images,
    run_args,
    start_cli,
    subprocess_env,
    wait_for_job,
)


def _progress_files(output: Path) -> dict[str, dict[str, Any]]:
    """The shards' progress files, by shard output name."""
    found = {}
    for path in output.glob("_shard-*.parquet.progress.json"):
        try:
            found[path.name[1 : -len(".progress.json")]] = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError:
            continue  # never: the file is replaced whole; but a test must not flake on it
    return found


def _status(cli: Cli, output: Path) -> dict[str, Any]:
    result = cli("status", output, "--json")
    assert result.code == 0, result.err
    found = json.loads(result.out)
    assert isinstance(found, dict)
    return found


def _plain_reads(output: Path) -> dict[str, int]:
    """Rows each reader finds in the folder, called the plain way."""
    import duckdb
    import pandas as pd
    import polars as pl
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    glob = f"{output}/**/*.parquet"
    duck = duckdb.sql(f"select count(*) from read_parquet('{glob}')").fetchall()  # type: ignore[union-attr]
    return {
        "pyarrow": pq.read_table(output).num_rows,
        "pyarrow.dataset": ds.dataset(output, format="parquet").count_rows(),
        "pandas": len(pd.read_parquet(output)),
        "polars": pl.read_parquet(glob).height,
        "duckdb": duck[0][0],
    }


@pytest.mark.slow
def test_status_sums_the_shards_and_names_a_killed_one(
    tmp_path: Path, make_server: MakeServer, cli: Cli
) -> None:
    server = make_server(latency=0.2)
    make_images(tmp_path / "images", 60)
    output = tmp_path / "results.parquet"
    args = [*run_args(server, output, tmp_path / "images"), "--processes", "2", "-c", "2", "-q"]
    job = start_cli(args)
    try:
        wait_for_job(
            lambda: (
                len(found := _progress_files(output)) == 2
                and all(state["ok"] >= 2 for state in found.values())
            ),
            job,
        )
        status = _status(cli, output)
        assert (status["state"], status["running"], status["processes"]) == ("running", True, 2)
        assert [shard["shard"] for shard in status["shards"]] == ["0/2", "1/2"]
        assert all(shard["running"] for shard in status["shards"])
        assert status["ok"] == sum(shard["ok"] for shard in status["shards"]) >= 4
        # While a shard runs, its total is the count's share until its own walk has ended (the
        # count has no ids to hash: README), so "remaining" may be off by a few images here.
        assert status["remaining"] > 0
        assert status["ok"] + status["failed"] <= status["found_so_far"] <= 60
        text = cli("status", output).out
        assert "running (2 of 2 processes)" in text and "shard 1/2: running" in text
        # While the shards write, every name in the folder but a shard output starts with _ or .
        # (journals, locks, progress files, settings): what Parquet readers skip.
        names = [p.name for p in output.iterdir() if not p.name.endswith(".parquet")]
        assert names and all(name[0] in "_." for name in names), names

        victim = _progress_files(output)["shard-1-of-2.parquet"]["pid"]
        os.kill(victim, signal.SIGKILL)
        # The parent has not reaped it yet (a zombie): status must still see it is gone.
        wait_for_job(lambda: _status(cli, output)["state"] == "killed", job)
        status = _status(cli, output)
        assert status["running"] is True  # shard 0 goes on
        assert "shard 1/2 not running (killed?)" in status["summary"]
        assert "1 of 2 processes still running" in status["summary"]
        assert "shard 1/2: not running (killed?)" in cli("status", output).out
        assert job.wait(timeout=60) == 3  # a child killed: the worst exit code
    finally:
        job.kill()
        job.communicate()

    status = _status(cli, output)
    assert (status["state"], status["running"]) == ("killed", False)
    assert status["summary"] == f"shard 1/2 {KILLED}"
    assert [shard["state"] for shard in status["shards"]] == ["finished", "running"]
    done = status["ok"]
    assert 0 < done < 60
    # The killed shard left its journal and lock behind: the plain reads still work, and read
    # the finished shard's rows (the killed one's journal is not a part yet).
    (count,) = set(_plain_reads(output).values())
    assert status["shards"][0]["ok"] <= count <= done

    rerun = subprocess.run(
        [PYTHON, "-m", "batchclassify", *args],  # the same command
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rerun.returncode == 0, rerun.stderr
    status = _status(cli, output)
    assert (status["state"], status["ok"] + status["already_done"]) == ("finished", 60)
    assert cli("status", output).out.startswith(f"{output}: finished (2 processes)")
    assert set(_plain_reads(output).values()) == {60}


def test_the_parquet_folder_is_read_plainly_and_merge_report_status_work(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_images(tmp_path / "images", 30)
    output = tmp_path / "results.parquet"
    assert cli(*run_args(server, output, tmp_path / "images"), "--processes", "2").code == 0

    assert _plain_reads(output) == dict.fromkeys(
        ["pyarrow", "pyarrow.dataset", "pandas", "polars", "duckdb"], 30
    )
    assert sorted(p.name for p in output.iterdir()) == [
        "_shard-0-of-2.parquet.job.json",
        "_shard-0-of-2.parquet.progress.json",
        "_shard-1-of-2.parquet.job.json",
        "_shard-1-of-2.parquet.progress.json",
        "shard-0-of-2.parquet",
        "shard-1-of-2.parquet",
    ]
    shards = sorted(output.glob("shard-*.parquet"))
    merged = cli("merge", *shards, "--output", tmp_path / "merged.parquet")
    assert merged.code == 0, merged.err
    assert "30 rows" in merged.err
    report = cli("report", shards[0])
    assert report.code == 0, report.err
    assert "colors/1" in report.out  # the model, from the shard's settings file
    assert "finished (2 processes)" in cli("status", output).out
    assert cli("status", output, "--watch").out.count("finished (2 processes)") == 1
    # The folder itself is the output to report, export and merge: its shards, read in turn.
    whole = cli("report", output)
    assert whole.code == 0 and "colors/1" in whole.out and "images 30: ok 30" in whole.out
    exported = cli("export", output, "--to", "csv", tmp_path / "csv")
    assert exported.code == 0, exported.err
    assert "exported 30 images" in exported.out
    one = cli("merge", output, "--output", tmp_path / "whole.jsonl")
    assert one.code == 0 and "30 rows" in one.err, one.err
    again = cli(*run_args(server, output, tmp_path / "images"), "--processes", "2")
    assert again.code == 0 and "30 already done" in again.err
    over = cli(*run_args(server, output, tmp_path / "images"), "--processes", "2", "--overwrite")
    assert over.code == 0 and "30 ok" in over.err, over.err
    assert server.stats.requests == 60


def test_status_of_a_jsonl_processes_job_and_of_shards_without_progress_files(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_images(tmp_path / "images", 20)
    (tmp_path / "images" / "broken.png").write_bytes(b"not an image")
    output = tmp_path / "results.jsonl"
    assert cli(*run_args(server, output, tmp_path / "images"), "--processes", "2").code == 1

    status = _status(cli, output)
    assert status["summary"] == f"finished (2 processes), merged into {output}"
    assert (status["ok"], status["failed"], status["remaining"]) == (20, 1, 0)
    for progress in (tmp_path / "results.jsonl.shards").glob("*.progress.json"):
        progress.unlink()  # as an older version left them
    status = _status(cli, output)
    assert status["summary"].startswith("no progress files (2 processes")
    assert (status["ok"], status["failed"], status["errors"]) == (20, 1, {"bad_image": 1})
    text = cli("status", output).out
    assert "20 ok, 1 failed" in text and "shard 0/2: no progress file" in text


def _legacy_layout(output: Path) -> None:
    """What the previous version wrote: the shards' files without the leading _, and the lock
    file a kill -9 left."""
    for path in output.glob("_shard-*"):
        path.rename(path.with_name(path.name[1:]))
    (output / "shard-1-of-2.parquet.lock").write_text("batchclassify lock pid=1 host=gone\n")


def test_an_output_of_the_previous_layout_resumes_and_is_renamed(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_images(tmp_path / "images", 20)
    output = tmp_path / "results.parquet"
    args = [*run_args(server, output, tmp_path / "images"), "--processes", "2"]
    assert cli(*args).code == 0
    _legacy_layout(output)
    assert "finished (2 processes)" in cli("status", output).out  # read under the old names
    make_images(tmp_path / "images" / "more", 5)

    result = cli(*args)
    assert result.code == 0, result.err
    assert "5 ok, 0 failed, 20 already done" in result.err
    assert server.stats.requests == 25
    assert sorted(p.name for p in output.iterdir() if p.name.startswith("_")) == [
        "_shard-0-of-2.parquet.job.json",
        "_shard-0-of-2.parquet.progress.json",
        "_shard-1-of-2.parquet.job.json",
        "_shard-1-of-2.parquet.progress.json",
    ]
    assert all(p.name.endswith(".parquet") for p in output.iterdir() if p.name[0] != "_")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('{"mine": 1}', None, "was not written by batchclassify"),
        ('{"batchclassify_version": "0.1.0"}', '{"batchclassify_version": "0.1.0"}', "both"),
    ],
)
def test_earlier_names_are_adopted_only_when_ours_and_alone(
    tmp_path: Path, old: str, new: str | None, message: str
) -> None:
    output = tmp_path / "results.parquet" / "shard-0-of-2.parquet"
    output.mkdir(parents=True)
    (output.parent / "shard-0-of-2.parquet.job.json").write_text(old)
    if new is not None:
        (output.parent / "_shard-0-of-2.parquet.job.json").write_text(new)
    with pytest.raises(OutputError, match=message):
        adopt_legacy_files(output)
    assert (output.parent / "shard-0-of-2.parquet.job.json").read_text() == old
    assert not (output.parent / "shard-0-of-2.parquet.lock").exists()


def _shard_file(folder: Path, index: int, **fields: Any) -> None:
    state = {"tool": "batchclassify", "host": "elsewhere", "pid": 10 + index, **fields}
    path = folder / f"_shard-{index}-of-3.parquet.progress.json"
    path.write_bytes(orjson.dumps(state))


def test_the_job_sums_its_shards_and_shows_the_worst_state(tmp_path: Path) -> None:
    from batchclassify.commands.status import format_status, read_status

    output = tmp_path / "results.parquet"
    output.mkdir()
    now = 10_000.0
    common = {"updated_unix": now - 5, "total_is_exact": True, "rate_limit_per_s": 5.0}
    running = {"state": "running", **common}
    _shard_file(output, 0, **running, ok=50, failed=1, total=100, found_so_far=100,
                remaining=49, images_per_s=4.0, eta_s=12, answered_429=2)  # fmt: skip
    _shard_file(output, 1, **running, ok=20, failed=0, total=100, found_so_far=100,
                remaining=80, images_per_s=2.0, eta_s=40, answered_429=1)  # fmt: skip
    _shard_file(output, 2, **common, state="finished", ok=90, failed=0, total=90,
                found_so_far=90, remaining=0)  # fmt: skip

    status = read_status(output, now=now)
    assert (status["state"], status["running"], status["summary"]) == (
        "running", True, "running (2 of 3 processes)"
    )  # fmt: skip
    assert (status["ok"], status["failed"], status["remaining"], status["total"]) == (
        160, 1, 129, 290
    )  # fmt: skip
    assert (status["images_per_s"], status["rate_limit_per_s"], status["answered_429"]) == (
        6.0, 10.0, 3
    )  # fmt: skip
    assert status["eta_s"] == 40  # the job ends with its slowest shard
    text = format_status(status)
    assert "6.0 images/s, ETA 0m40s" in text and "shard 2/3: finished, 90 ok" in text

    _shard_file(output, 0, **common, state="interrupted", ok=50, failed=1, total=100,
                found_so_far=100, remaining=49)  # fmt: skip
    status = read_status(output, now=now + 120)  # shard 1's file is stale: killed
    assert (status["state"], status["running"]) == ("killed", False)
    assert status["summary"] == f"shard 1/3 {KILLED}"
    assert "eta_s" not in status and "shard 0/3: interrupted" in format_status(status)

    (output / "_shard-1-of-3.parquet.progress.json").unlink()
    status = read_status(output, now=now + 120)
    assert (status["state"], status["summary"]) == (
        "interrupted", "shard 0/3 interrupted — rerun the same command to resume"
    )  # fmt: skip
    assert status["shards"][1]["state"] == "not started" and "remaining" not in status
