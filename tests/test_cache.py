"""The answer cache (--cache), identical images sharing a request, and cost in rows and summary.

Everything against the local server: what it was asked (``stats.requests``) is what a user
would have paid for.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from batchclassify.server import BackgroundServer

from .conftest import (
    PYTHON,
    Cli,
    MakeServer,
    make_images,
    png,
    read_rows,
    rows_by_id,
    run_args,
    subprocess_env,
)


def test_duplicates_across_folders_cost_one_request_each(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    expected = make_images(tmp_path / "a", 6)
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # the same pictures, other paths
    shutil.copytree(tmp_path / "a", tmp_path / "c" / "deeper")
    output = tmp_path / "out.jsonl"
    cache = tmp_path / "answers.sqlite"

    result = cli(
        *run_args(server, output, tmp_path / "a", tmp_path / "b", tmp_path / "c"), "--cache", cache
    )

    assert result.code == 0, result.err
    assert server.stats.requests == 6
    rows = rows_by_id(output)
    assert len(rows) == 18 and all(row["status"] == "ok" for row in rows.values())
    sent = {row["id"] for row in rows.values() if not row["cached"]}
    assert len(sent) == 6
    for row in rows.values():
        original = expected[str(tmp_path / "a" / Path(row["id"]).name)]
        assert row["top"] == original  # every copy got its picture's answer
        if row["cached"]:
            assert row["attempts"] == 0 and row["credits"] is None
            assert row["cached_from"] in sent
            assert Path(row["cached_from"]).name == Path(row["id"]).name
    assert "requests saved: 12" in result.err


def test_identical_images_in_flight_share_one_request_without_a_cache_file(
    tmp_path: Path, make_server: MakeServer, cli: Cli
) -> None:
    server = make_server(latency=0.5)  # the first is still in flight when the others come
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(4):
        (folder / f"copy-{n}.png").write_bytes(png("green"))
    output = tmp_path / "out.jsonl"

    result = cli(*run_args(server, output, folder), "--concurrency", "8")

    assert result.code == 0, result.err
    assert server.stats.requests == 1
    rows = rows_by_id(output)
    assert {row["top"] for row in rows.values()} == {"green"}
    leader = [row for row in rows.values() if not row["cached"]]
    assert len(leader) == 1
    assert all(row["cached_from"] == leader[0]["id"] for row in rows.values() if row["cached"])
    assert "3 shared an identical image's request" in result.err
    assert not (tmp_path / "answers.sqlite").exists()


def test_images_of_the_same_length_in_flight_are_not_taken_for_each_other(
    tmp_path: Path, make_server: MakeServer, cli: Cli
) -> None:
    """Without a cache file the in-flight table is keyed by the body's length: bodies of
    the same length but other bytes each get their own request and their own answer."""
    server = make_server(latency=0.5)  # all in flight at once
    folder = tmp_path / "in"
    folder.mkdir()
    colors = ("red", "green", "blue", "yellow", "black")
    assert len({len(png(color)) for color in colors}) == 1  # same length, other bytes
    for color in colors:
        (folder / f"{color}.png").write_bytes(png(color))
    (folder / "green-again.png").write_bytes(png("green"))
    output = tmp_path / "out.jsonl"

    result = cli(*run_args(server, output, folder), "--concurrency", "8")

    assert result.code == 0, result.err
    assert server.stats.requests == 5
    rows = rows_by_id(output)
    assert {Path(row["id"]).stem: row["top"] for row in rows.values()} == {
        **{color: color for color in colors},
        "green-again": "green",
    }
    shared = [row for row in rows.values() if row["cached"]]
    assert len(shared) == 1 and Path(shared[0]["cached_from"]).stem in ("green", "green-again")


def test_a_shared_request_that_fails_gives_each_image_an_error_row(
    tmp_path: Path, make_server: MakeServer, cli: Cli
) -> None:
    server = make_server(latency=0.5)
    server.fail_image(png("blue"), 400)
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(3):
        (folder / f"copy-{n}.png").write_bytes(png("blue"))
    output = tmp_path / "out.jsonl"

    result = cli(*run_args(server, output, folder), "--concurrency", "8")

    assert result.code == 1
    assert server.stats.requests == 1
    rows = read_rows(output)
    assert len(rows) == 3 and all(row["status"] == "error" for row in rows)
    sent = [row for row in rows if row["attempts"] == 1]
    assert len(sent) == 1
    for row in rows:
        assert row["error_type"] == "bad_image" and row["http_status"] == 400
        if row is not sent[0]:
            assert f"the identical image {sent[0]['id']} was sent for it" in row["error"]
    # Failures are never cached: --retry-failed sends them again.
    server.clear_faults()
    again = cli(*run_args(server, output, folder), "--retry-failed", "--concurrency", "8")
    assert again.code == 0, again.err
    assert {row["status"] for row in rows_by_id(output).values()} == {"ok"}


def test_second_job_with_the_same_cache_sends_nothing_for_images_it_has_seen(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_images(tmp_path / "first", 6)
    cache = tmp_path / "answers.sqlite"
    assert (
        cli(*run_args(server, tmp_path / "one.jsonl", tmp_path / "first"), "--cache", cache).code
        == 0
    )
    assert server.stats.requests == 6
    first_ids = {row["id"] for row in read_rows(tmp_path / "one.jsonl")}

    # Next month: the same pictures, moved and touched, plus two new ones.
    moved = tmp_path / "archive" / "moved"
    shutil.copytree(tmp_path / "first", moved)
    for path in moved.iterdir():
        os.utime(path, (1, 1))
    make_images(tmp_path / "new", 2)
    output = tmp_path / "two.jsonl"
    result = cli(*run_args(server, output, moved, tmp_path / "new"), "--cache", cache)

    assert result.code == 0, result.err
    assert server.stats.requests == 6 + 2  # only the new ones
    rows = rows_by_id(output)
    for path in moved.iterdir():
        row = rows[str(path)]
        assert row["cached"] is True and row["cached_from"] in first_ids
        assert row["top"] and row["attempts"] == 0
    assert all(not row["cached"] for row in rows.values() if "/new/" in row["id"])
    assert "6 answered from the cache" in result.err


@pytest.mark.parametrize(
    "change",
    [["--model", "colors/2"], ["--confidence", "0.9"], ["--max-size", "16"]],
    ids=["model", "confidence", "max-size"],
)
def test_other_model_confidence_or_size_misses_the_cache(
    tmp_path: Path, server: BackgroundServer, cli: Cli, change: list[str]
) -> None:
    make_images(tmp_path / "in", 4)
    cache = tmp_path / "answers.sqlite"
    args = run_args(server, tmp_path / "one.jsonl", tmp_path / "in")
    assert cli(*args, "--cache", cache).code == 0
    assert server.stats.requests == 4

    args = run_args(server, tmp_path / "two.jsonl", tmp_path / "in")
    if change[0] == "--model":
        args[args.index("--model") + 1] = change[1]
    else:
        args += change
    result = cli(*args, "--cache", cache)

    assert result.code == 0, result.err
    assert server.stats.requests == 8
    assert not any(row["cached"] for row in read_rows(tmp_path / "two.jsonl"))
    # ...and the same settings again hit: both answers are kept.
    assert cli(*[*args[:-2], "--output", str(tmp_path / "three.jsonl")], "--cache", cache).code == 0
    assert server.stats.requests == 8


def test_a_downscaled_hit_reports_the_users_image_size(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    from .conftest import make_image

    make_image(tmp_path / "in" / "big.jpg", "red", size=(400, 300))
    shutil.copy(tmp_path / "in" / "big.jpg", tmp_path / "in" / "copy.jpg")
    cache = tmp_path / "answers.sqlite"
    for name in ("one", "two"):
        args = run_args(server, tmp_path / f"{name}.jsonl", tmp_path / "in")
        assert cli(*args, "--max-size", "64", "--cache", cache, "--concurrency", "1").code == 0
    assert server.stats.requests == 1
    for name in ("one", "two"):
        for row in read_rows(tmp_path / f"{name}.jsonl"):
            assert (row["image_width"], row["image_height"], row["top"]) == (400, 300, "red")


def test_cost_headers_are_recorded_per_row_and_summed(
    tmp_path: Path, make_server: MakeServer, cli: Cli
) -> None:
    server = make_server(billing_headers="serverless")
    make_images(tmp_path / "in", 12)
    output = tmp_path / "out.jsonl"

    # A server on 127.0.0.1 is billed as a self-hosted one unless told (docs/cost.md).
    result = cli(*run_args(server, output, tmp_path / "in"), "--billing", "serverless")

    assert result.code == 0, result.err
    rows = read_rows(output)
    assert all(row["server_ms"] is not None and row["server_ms"] >= 0 for row in rows)
    # The local model answers in well under 100 ms: each request bills the minimum.
    assert all(row["credits"] == pytest.approx(0.0002) for row in rows)
    assert sum(row["cold_start"] for row in rows) == 1  # the model's first request
    assert "cost: 0.0024 credits for 12 requests" in result.err
    status = cli("status", output)
    assert "cost: 0.0024 credits for 12 requests" in status.out
    assert orjson.loads(cli("status", output, "--json").out)["credits"] == pytest.approx(0.0024)

    # No cost header: the published price of the endpoint's kind, said to be an estimate.
    plain = make_server()
    other = tmp_path / "plain.jsonl"
    result = cli(*run_args(plain, other, tmp_path / "in"))
    assert all(
        row["credits"] == pytest.approx(1 / 3000) and row["server_ms"] is None
        for row in read_rows(other)
    )
    assert "cost: 0.0040 credits for 12 requests, an estimate" in result.err
    assert "self-hosted billing" in result.err


def test_cost_columns_are_typed_in_parquet(
    tmp_path: Path, make_server: MakeServer, cli: Cli
) -> None:
    import pyarrow.parquet as pq

    server = make_server(billing_headers="serverless")
    make_images(tmp_path / "in", 3)
    shutil.copytree(tmp_path / "in", tmp_path / "again")
    output = tmp_path / "out.parquet"
    cache = tmp_path / "answers.sqlite"
    assert (
        cli(*run_args(server, output, tmp_path / "in", tmp_path / "again"), "--cache", cache).code
        == 0
    )
    schema = pq.read_table(output).schema
    assert str(schema.field("cached").type) == "bool"
    assert str(schema.field("cached_from").type) == "string"
    assert str(schema.field("credits").type) == "double"
    rows = read_rows(output)
    assert sum(row["cached"] for row in rows) == 3


def _bytes_and_stat(path: Path) -> tuple[bytes, float]:
    return path.read_bytes(), path.stat().st_mtime


@pytest.mark.parametrize("kind", ["garbage", "foreign-sqlite", "folder"])
def test_a_corrupt_or_foreign_cache_file_is_refused_and_left_alone(
    tmp_path: Path, server: BackgroundServer, cli: Cli, kind: str
) -> None:
    make_images(tmp_path / "in", 2)
    cache = tmp_path / "mine.sqlite"
    if kind == "garbage":
        cache.write_bytes(b"my notes, not a database\n" * 100)
    elif kind == "foreign-sqlite":
        with sqlite3.connect(cache) as db:
            db.execute("CREATE TABLE answers (key TEXT, value TEXT)")
            db.execute("INSERT INTO answers VALUES ('a', 'b')")
        db.close()
    else:
        cache.mkdir()
    before = None if kind == "folder" else _bytes_and_stat(cache)
    output = tmp_path / "out.jsonl"

    result = cli(*run_args(server, output, tmp_path / "in"), "--cache", cache)

    assert result.code == 2
    assert str(cache) in result.err and "left as it is" in result.err
    assert server.stats.requests == 0 and not output.exists()
    if before is not None:
        assert _bytes_and_stat(cache) == before
    stats = cli("cache", "stats", cache)
    assert stats.code == 2 and str(cache) in stats.err
    assert cli("cache", "clear", cache).code == 2
    if before is not None:
        assert _bytes_and_stat(cache) == before


def test_cache_stats_and_clear(tmp_path: Path, server: BackgroundServer, cli: Cli) -> None:
    make_images(tmp_path / "in", 5)
    cache = tmp_path / "answers.sqlite"
    assert cli(*run_args(server, tmp_path / "a.jsonl", tmp_path / "in"), "--cache", cache).code == 0
    args = run_args(server, tmp_path / "b.jsonl", tmp_path / "in", model="colors-multilabel/1")
    assert cli(*args, "--cache", cache).code == 0

    stats = cli("cache", "stats", cache, "--json")
    found = orjson.loads(stats.out)
    assert found["answers"] == 10
    assert found["models"] == {"colors/1": 5, "colors-multilabel/1": 5}
    assert "answers: 10" in cli("cache", "stats", cache).out

    cleared = cli("cache", "clear", cache, "--model", "colors/1")
    assert cleared.code == 0 and "deleted 5 answers of colors/1" in cleared.out
    assert orjson.loads(cli("cache", "stats", cache, "--json").out)["answers"] == 5
    assert cli("cache", "clear", cache).code == 0
    assert orjson.loads(cli("cache", "stats", cache, "--json").out)["answers"] == 0
    missing = cli("cache", "stats", tmp_path / "nope.sqlite")
    assert missing.code == 2 and "no such cache file" in missing.err
    assert not (tmp_path / "nope.sqlite").exists()


def test_default_cache_location_honours_xdg_cache_home(
    tmp_path: Path, server: BackgroundServer, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    make_images(tmp_path / "in", 2)
    assert (
        cli(*run_args(server, tmp_path / "a.jsonl", tmp_path / "in"), "--cache", "default").code
        == 0
    )
    assert (tmp_path / "xdg" / "batchclassify" / "answers.sqlite").is_file()
    # $BATCHCLASSIFY_CACHE turns it on for every job; --no-cache turns it off again.
    monkeypatch.setenv("BATCHCLASSIFY_CACHE", "default")
    assert cli(*run_args(server, tmp_path / "b.jsonl", tmp_path / "in")).code == 0
    assert server.stats.requests == 2
    assert cli(*run_args(server, tmp_path / "c.jsonl", tmp_path / "in"), "--no-cache").code == 0
    assert server.stats.requests == 4


def _start(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [PYTHON, "-m", "batchclassify", *args, "-q"],
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_concurrent_jobs_share_one_cache(tmp_path: Path, make_server: MakeServer, cli: Cli) -> None:
    server = make_server(latency=0.02)
    make_images(tmp_path / "in", 60)
    cache = tmp_path / "answers.sqlite"
    jobs = [
        _start(
            [*run_args(server, tmp_path / f"job{n}.jsonl", tmp_path / "in"), "--cache", str(cache)]
        )
        for n in range(2)
    ]
    for job in jobs:
        _, err = job.communicate(timeout=60)
        assert job.returncode == 0, err.decode()
    for n in range(2):
        assert len(rows_by_id(tmp_path / f"job{n}.jsonl")) == 60
    # Each image was asked at most twice (once per job), and stored once.
    assert 60 <= server.stats.requests <= 120
    assert orjson.loads(cli("cache", "stats", cache, "--json").out)["answers"] == 60
    before = server.stats.requests
    assert (
        cli(*run_args(server, tmp_path / "job3.jsonl", tmp_path / "in"), "--cache", cache).code == 0
    )
    assert server.stats.requests == before


def test_kill_9_mid_write_leaves_a_usable_cache(
    tmp_path: Path, make_server: MakeServer, cli: Cli
) -> None:
    server = make_server(latency=0.05)
    make_images(tmp_path / "in", 300)
    cache = tmp_path / "answers.sqlite"
    job = _start(
        [
            *run_args(server, tmp_path / "one.jsonl", tmp_path / "in"),
            "--cache",
            str(cache),
            "--concurrency",
            "4",
        ]
    )

    def committed() -> int:
        """Answers a flush has committed (WAL: reading never waits for the writer)."""
        if not cache.exists():
            return 0
        with contextlib.closing(sqlite3.connect(f"file:{cache}?mode=ro", uri=True)) as db:
            try:
                return int(db.execute("SELECT count(*) FROM answers").fetchone()[0])
            except sqlite3.OperationalError:
                return 0  # not created yet

    deadline = time.monotonic() + 30
    # Killed once 60 requests were sent and a flush has committed answers (rather than
    # "0.7 s later", which a loaded machine may reach before its first flush).
    while (server.stats.requests < 60 or not committed()) and job.poll() is None:
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    job.send_signal(signal.SIGKILL)
    job.wait(timeout=10)
    sent_before = server.stats.requests
    assert sent_before < 300, "the job finished before it could be killed"

    with sqlite3.connect(cache) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    stored = orjson.loads(cli("cache", "stats", cache, "--json").out)["answers"]
    assert 0 < stored <= sent_before

    output = tmp_path / "two.jsonl"
    # A server of its own: requests the killed job had sent can reach a loaded machine's
    # server after the kill, and would be counted as the rerun's.
    again = make_server()
    result = cli(*run_args(again, output, tmp_path / "in"), "--cache", cache)
    assert result.code == 0, result.err
    rows = rows_by_id(output)
    assert len(rows) == 300 and all(row["status"] == "ok" for row in rows.values())
    assert sum(row["cached"] for row in rows.values()) == stored
    assert again.stats.requests == 300 - stored


def test_a_parquet_output_from_before_the_cost_columns_resumes(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    import pyarrow.parquet as pq

    make_images(tmp_path / "in", 4)
    output = tmp_path / "out.parquet"
    assert cli(*run_args(server, output, tmp_path / "in")).code == 0
    new = ["cached", "cached_from", "server_ms", "cold_start", "credits"]
    for part in output.glob("part-*.parquet"):  # as an older version wrote it
        pq.write_table(pq.read_table(part).drop_columns(new), part)
    make_images(tmp_path / "more", 3)

    result = cli(*run_args(server, output, tmp_path / "in", tmp_path / "more"))

    assert result.code == 0, result.err
    assert "4 already done" in result.err
    rows = read_rows(output)  # one table: every part has every column again
    assert len(rows) == 7
    assert sum(row["cached"] is None for row in rows) == 4
    assert sum(row["cached"] is False for row in rows) == 3
