"""merge checks what it merges: a missing shard, a killed shard, shards of different splits, a
shard still being written and an input named twice are refused (exit 2, naming them), unless
--partial, whose output says it is partial (in its settings, to status and to report)."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import orjson
import pytest

from batchclassify.output.progressfile import progress_path
from batchclassify.server import BackgroundServer

from .conftest import Cli, MakeServer, make_images, rows_by_id, run_args, start_cli, wait_for_job


def _shards(
    cli: Cli, server: BackgroundServer, images: Path, folder: Path, *shards: str
) -> list[Path]:
    """Run each ``--shard I/N`` into ``folder/part-I-of-N.jsonl``; their outputs."""
    outputs = []
    for shard in shards:
        index, count = shard.split("/")
        output = folder / f"part-{index}-of-{count}.jsonl"
        result = cli(*run_args(server, output, images), "--shard", shard)
        assert result.code == 0, result.err
        outputs.append(output)
    return outputs


def _started_shard(
    server: BackgroundServer, images: Path, output: Path, shard: str
) -> subprocess.Popen[str]:
    """A shard job in its own process, once it has written rows and its progress file."""
    job = start_cli([*run_args(server, output, images), "--shard", shard, "-c", "2", "-q"])
    wait_for_job(
        lambda: progress_path(output).exists() and output.exists() and output.stat().st_size > 0,
        job,
    )
    return job


def test_a_missing_shard_is_refused_and_a_partial_merge_says_so(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_images(tmp_path / "images", 30)
    zero, two = _shards(cli, server, tmp_path / "images", tmp_path, "0/3", "2/3")
    merged = tmp_path / "all.jsonl"

    refused = cli("merge", zero, two, "--output", merged)
    assert refused.code == 2
    assert "shard 1/3 missing" in refused.err and "--partial" in refused.err
    assert not merged.exists()

    partial = cli("merge", zero, two, "--output", merged, "--partial")
    assert partial.code == 0, partial.err
    assert "partial: shard 1/3 missing" in partial.err
    assert len(rows_by_id(merged)) == len(rows_by_id(zero)) + len(rows_by_id(two)) < 30
    settings = orjson.loads(Path(f"{merged}.job.json").read_bytes())
    assert settings["partial"] == ["shard 1/3 missing"]
    status = json.loads(cli("status", merged, "--json").out)
    assert status["partial"] == ["shard 1/3 missing"]
    assert "a partial merge (shard 1/3 missing)" in cli("status", merged).out
    assert "partial merge (shard 1/3 missing)" in cli("report", merged).out
    # A partial merge is itself incomplete: merging it on is refused too.
    again = cli("merge", merged, "--output", tmp_path / "again.jsonl")
    assert again.code == 2 and "is a partial merge (shard 1/3 missing)" in again.err


@pytest.mark.slow
def test_a_killed_shard_is_refused(
    tmp_path: Path, server: BackgroundServer, make_server: MakeServer, cli: Cli
) -> None:
    make_images(tmp_path / "images", 40)
    (zero,) = _shards(cli, server, tmp_path / "images", tmp_path, "0/2")
    one = tmp_path / "part-1-of-2.jsonl"
    job = _started_shard(make_server(latency=0.5), tmp_path / "images", one, "1/2")
    job.send_signal(signal.SIGKILL)
    job.communicate(timeout=30)

    merged = tmp_path / "all.jsonl"
    result = cli("merge", zero, one, "--output", merged)
    assert result.code == 2
    assert f"{one} is incomplete: its job was killed before it finished" in result.err
    assert str(zero) not in result.err  # the finished shard is not blamed
    assert not merged.exists()


def test_shards_of_different_splits_are_refused(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_images(tmp_path / "images", 12)
    outputs = _shards(cli, server, tmp_path / "images", tmp_path, "0/3", "1/4", "2/4", "3/4")
    merged = tmp_path / "all.jsonl"
    result = cli("merge", *outputs, "--output", merged)
    assert result.code == 2
    assert "shards of different splits (1 of 3, 3 of 4)" in result.err
    assert not merged.exists()


@pytest.mark.slow
def test_a_shard_still_running_is_refused(
    tmp_path: Path, server: BackgroundServer, make_server: MakeServer, cli: Cli
) -> None:
    make_images(tmp_path / "images", 40)
    (zero,) = _shards(cli, server, tmp_path / "images", tmp_path, "0/2")
    one = tmp_path / "part-1-of-2.jsonl"
    job = _started_shard(make_server(latency=0.5), tmp_path / "images", one, "1/2")
    try:
        merged = tmp_path / "all.jsonl"
        result = cli("merge", zero, one, "--output", merged)
        assert job.poll() is None  # it was running all along
    finally:
        job.kill()
        job.communicate()
    assert result.code == 2
    assert f"{one} is still being written (its job, pid {job.pid}, is running)" in result.err
    assert not merged.exists()


def test_an_input_named_twice_is_refused(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_images(tmp_path / "images", 6)
    (output,) = _shards(cli, server, tmp_path / "images", tmp_path, "0/1")
    merged = tmp_path / "all.jsonl"
    for flags in ([], ["--partial"]):  # --partial admits missing parts, not a repeated one
        result = cli("merge", output, tmp_path / "." / output.name, "--output", merged, *flags)
        assert result.code == 2
        assert "is named twice" in result.err and "name each output once" in result.err
    assert not merged.exists()
