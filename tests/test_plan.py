"""``batchclassify plan``: a dry run whose numbers are what ``run`` then does."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchclassify.server import BackgroundServer

from .conftest import Cli, make_images, read_rows, run_args


def _plan(cli: Cli, *args: str | Path) -> dict[str, Any]:
    result = cli("plan", *args, "--json")
    assert result.code == 0, result.err
    found: dict[str, Any] = orjson.loads(result.out)
    return found


def test_plan_numbers_equal_what_run_then_does(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    # Ten pictures; four of them copied into another folder; two of them answered in the
    # cache by an earlier job on other copies; three done in the output already.
    make_images(tmp_path / "a", 10)
    pictures = sorted((tmp_path / "a").iterdir())
    (tmp_path / "b").mkdir()
    for path in pictures[:4]:
        shutil.copy(path, tmp_path / "b" / path.name)
    (tmp_path / "elsewhere").mkdir()
    for path in pictures[8:]:
        shutil.copy(path, tmp_path / "elsewhere" / path.name)
    cache = tmp_path / "answers.sqlite"
    assert (
        cli(
            *run_args(server, tmp_path / "old.jsonl", tmp_path / "elsewhere"), "--cache", cache
        ).code
        == 0
    )
    (tmp_path / "done").mkdir()
    for path in pictures[5:8]:
        shutil.copy(path, tmp_path / "done" / path.name)
    output = tmp_path / "out.jsonl"
    assert cli(*run_args(server, output, tmp_path / "done")).code == 0
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "a" / "empty.png").write_bytes(b"")
    sources = [tmp_path / "done", tmp_path / "a", tmp_path / "b"]
    before = server.stats.requests

    plan = _plan(cli, *sources, "--model", "colors/1", "--cache", cache, "--output", output)

    assert server.stats.requests == before  # a plan sends nothing
    assert plan["found"] == 3 + 11 + 4
    assert plan["skipped_extensions"] == {"txt": 1}
    assert plan["already_done"] == 3
    assert plan["unsendable"] == 1  # the empty file
    assert plan["in_cache"] == 2
    # a/'s copies of the done pictures are other ids, and that run had no --cache: they are
    # sent. b/'s copies share a/'s requests.
    assert plan["duplicate_content"] == 4
    assert plan["requests"] == 10 - 2

    result = cli(*run_args(server, output, *sources), "--cache", cache)

    assert result.code == 1  # the empty file
    assert server.stats.requests - before == plan["requests"]
    rows = read_rows(output)
    cached = [row for row in rows if row["cached"]]
    assert len(cached) == plan["in_cache"] + plan["duplicate_content"]
    assert sum(row["status"] == "error" for row in rows) == plan["unsendable"]
    assert f"{plan['already_done']} already done" in result.err


def test_plan_prints_counts_time_and_cost(tmp_path: Path, cli: Cli) -> None:
    make_images(tmp_path / "in", 40)
    result = cli("plan", tmp_path / "in", "--model", "colors/1", "--rate-limit", "4")
    assert result.code == 0, result.err
    assert "images found: 40" in result.out
    assert "requests a run would make: 40" in result.out
    assert "time at 4.0 requests/s: 10 s" in result.out
    # Serverless (the default endpoint) bills by time: 100 ms a request at least; at most an
    # estimate at --latency (0.2 s) with one cold start (10 calls): 49 x 0.0004.
    assert "cost (serverless billing): 0.0080 to 0.0196 credits" in result.out
    # Concurrency over latency can be the tighter bound.
    slow = _plan(
        cli, tmp_path / "in", "--model", "colors/1", "--concurrency", "2", "--latency", "1"
    )
    assert slow["seconds"] == 20.0


def test_plan_writes_nothing(tmp_path: Path, cli: Cli) -> None:
    make_images(tmp_path / "in", 3)
    cache = tmp_path / "new.sqlite"
    output = tmp_path / "out.jsonl"
    plan = _plan(cli, tmp_path / "in", "--model", "colors/1", "--cache", cache, "--output", output)
    assert plan["requests"] == 3 and plan["in_cache"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_plan_refuses_an_output_written_with_other_settings(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_images(tmp_path / "in", 2)
    output = tmp_path / "out.jsonl"
    assert cli(*run_args(server, output, tmp_path / "in")).code == 0
    result = cli("plan", tmp_path / "in", "--model", "colors/2", "--output", output)
    assert result.code == 2 and "model='colors/1', not 'colors/2'" in result.err


@pytest.mark.parametrize("bad", [["--rate-limit", "0"], ["--latency", "-1"]])
def test_plan_refuses_bad_estimate_settings(tmp_path: Path, cli: Cli, bad: list[str]) -> None:
    make_images(tmp_path / "in", 1)
    result = cli("plan", tmp_path / "in", "--model", "colors/1", *bad)
    assert result.code == 2 and "must be positive" in result.err
