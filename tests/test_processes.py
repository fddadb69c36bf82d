"""run --processes P: one job as P shard processes, one summary, one output folder."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from batchclassify.commands.processes import plan_layout, shard_configs
from batchclassify.config import JobConfig, RateConfig
from batchclassify.exit_codes import ExitCode
from batchclassify.server import BackgroundServer

from .conftest import (
    PYTHON,
    Cli,
    MakeServer,
    make_images,
    read_rows,
    rows_by_id,
    run_args,
    subprocess_env,
)


def test_two_processes_classify_everything_once_with_one_summary(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    expected = make_images(tmp_path / "images", 40)
    output = tmp_path / "results.jsonl"
    result = cli(*run_args(server, output, tmp_path / "images"), "--processes", "2")

    assert result.code == 0, result.err
    assert result.err.count("40 ok, 0 failed") == 1  # one summary, the children's sum
    assert server.stats.requests == 40
    rows = rows_by_id(output)  # merged: one row per id
    assert {item_id: row["top"] for item_id, row in rows.items()} == expected
    shards = sorted(p.name for p in (tmp_path / "results.jsonl.shards").glob("*.jsonl"))
    assert shards == ["shard-0-of-2.jsonl", "shard-1-of-2.jsonl"]

    again = cli(*run_args(server, output, tmp_path / "images"), "--processes", "2")
    assert again.code == 0, again.err
    assert "0 ok, 0 failed, 40 already done" in again.err
    assert server.stats.requests == 40


def test_parquet_shards_are_one_dataset_and_a_failed_item_sets_the_exit_code(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    expected = make_images(tmp_path / "images", 30)
    (tmp_path / "images" / "broken.png").write_bytes(b"not an image")
    output = tmp_path / "results.parquet"
    result = cli(*run_args(server, output, tmp_path / "images"), "--processes", "2")

    assert result.code == 1, result.err  # the worst child's: one failed item
    assert "30 ok, 1 failed" in result.err
    import duckdb
    import polars as pl
    import pyarrow.dataset as ds

    table = ds.dataset(output, format="parquet").to_table()  # the shards' own files skipped
    ids = table.column("id").to_pylist()
    assert sorted(ids) == sorted([*expected, str(tmp_path / "images" / "broken.png")])
    assert pl.read_parquet(f"{output}/**/*.parquet").height == 31
    query = f"select count(distinct id) from read_parquet('{output}/**/*.parquet')"
    assert duckdb.sql(query).fetchall() == [(31,)]  # type: ignore[union-attr]
    assert (output / "_shard-0-of-2.parquet.job.json").exists()


def test_an_unsharded_output_is_not_taken_over_by_processes(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_images(tmp_path / "images", 4)
    output = tmp_path / "results.parquet"
    assert cli(*run_args(server, output, tmp_path / "images")).code == 0
    result = cli(*run_args(server, output, tmp_path / "images"), "--processes", "2")
    assert result.code == 2
    assert "without --processes" in result.err
    assert [p.name for p in output.iterdir()] == ["part-000000.parquet"]


def test_the_rate_limit_is_divided_among_the_processes(tmp_path: Path) -> None:
    config = JobConfig(
        sources=tmp_path,
        model="colors/1",
        output=tmp_path / "out.parquet",
        rate=RateConfig(requests_per_second=30),
    )
    configs = shard_configs(config, plan_layout(config, 3))
    assert [c.rate.requests_per_second for c in configs] == [10, 10, 10]
    assert [str(c.shard) for c in configs] == ["0/3", "1/3", "2/3"]
    assert len({c.output for c in configs}) == 3


def test_the_exit_code_is_the_worst_childs() -> None:
    worst = ExitCode.worst
    assert worst([0, 0]) == 0
    assert worst([0, 1]) == 1
    assert worst([1, 130]) == 130
    assert worst([130, 2]) == 2
    assert worst([2, 3, 1]) == 3
    assert worst([0, -9]) == 3  # a child killed by a signal: stopped early, fatal


def _children(output: Path) -> list[int]:
    pids = []
    for progress in output.glob("*.progress.json"):
        pids.append(orjson.loads(progress.read_bytes())["pid"])
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_ctrl_c_stops_every_child_and_a_rerun_resumes(
    tmp_path: Path, make_server: MakeServer
) -> None:
    server = make_server(latency=0.2)
    make_images(tmp_path / "images", 60)
    output = tmp_path / "results.parquet"
    args = [*run_args(server, output, tmp_path / "images"), "--processes", "2", "-c", "4"]
    process = subprocess.Popen(
        [PYTHON, "-m", "batchclassify", *args],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while server.stats.requests < 10 or len(_children(output)) < 2:
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
    pids = _children(output)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)

    assert process.returncode == 130, err
    assert "interrupted" in err
    assert not any(_alive(pid) for pid in pids)
    done = len(read_rows(output / "shard-0-of-2.parquet")) + len(
        read_rows(output / "shard-1-of-2.parquet")
    )
    assert 0 < done < 60

    rerun = subprocess.run(
        [PYTHON, "-m", "batchclassify", *args],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert f"{60 - done} ok, 0 failed, {done} already done" in rerun.stderr
    assert server.stats.requests == 60


@pytest.mark.parametrize(
    ("source", "flags"),
    [
        ("images", ["--processes", "0"]),
        ("images", ["--processes", "2", "--shard", "0/2"]),
        ("-", ["-p", "2"]),  # stdin can be read by one process only
    ],
)
def test_bad_process_flags_are_refused(
    tmp_path: Path, server: BackgroundServer, cli: Cli, source: str, flags: list[str]
) -> None:
    make_images(tmp_path / "images", 2)
    source_arg = source if source == "-" else str(tmp_path / source)
    result = cli(*run_args(server, tmp_path / "out.jsonl", source_arg), *flags)
    assert result.code == 2
    assert "--processes" in result.err
    assert server.stats.requests == 0
