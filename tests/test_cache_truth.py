"""A failure never turns into `ok`: the answer cache, identical images in flight, `--retry-failed`,
`merge`, and a damaged cache file (issue 18).

Against the local server, whose ``stats.requests`` is what a user would have paid for.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from batchclassify import HttpConfig, JobConfig, run_job
from batchclassify.commands.report.advice import ADVICE
from batchclassify.inputs.encoding import read_and_encode
from batchclassify.models import ANSWER_FIELDS, ContradictoryRowError, Item, error_row
from batchclassify.output.cache import AnswerCache, Keys, KeySettings
from batchclassify.output.parquet_sink import ParquetSink
from batchclassify.output.sinks import JsonlSink
from batchclassify.server import BackgroundServer
from batchclassify.summary import Progress, SilentProgress

from .conftest import (
    KEY,
    Cli,
    MakeServer,
    make_image,
    make_images,
    png,
    read_rows,
    rows_by_id,
    run_args,
    sample_failed_row,
    sample_ok_row,
)

NOT_AN_IMAGE = b"not an image\n"


def _statuses(output: Path) -> dict[str, str]:
    return {item_id: row["status"] for item_id, row in rows_by_id(output).items()}


def _poisoned(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` (a failed one) as a batchclassify before the fix wrote it from the cache."""
    return dict(
        row,
        status="ok",
        http_status=200,
        error_type=None,
        error=None,
        attempts=0,
        elapsed_ms=0.0,
        cached=True,
        cached_from=row["id"],
    )


# -- the cache never stores or serves a failure ------------------------------------------


def test_a_failed_image_is_not_ok_on_the_next_run_with_the_cache(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    """The issue's repro: a text file named .jpg, two runs with one cache."""
    (tmp_path / "cb").mkdir()
    (tmp_path / "cb" / "x.jpg").write_bytes(NOT_AN_IMAGE)
    cache = tmp_path / "cb.sqlite"

    first = cli(*run_args(server, tmp_path / "cb1.jsonl", tmp_path / "cb"), "--cache", cache)
    second = cli(*run_args(server, tmp_path / "cb2.jsonl", tmp_path / "cb"), "--cache", cache)

    assert (first.code, second.code) == (1, 1)
    (row,) = read_rows(tmp_path / "cb2.jsonl")
    assert row["status"] == "error" and row["error_type"] == "bad_image"
    assert row["http_status"] == 400 and row["cached"] is False and row["attempts"] == 1
    assert server.stats.requests == 2  # asked again: a failure is not an answer
    assert "0 ok, 1 failed" in second.err
    stats = orjson.loads(cli("cache", "stats", cache, "--json").out)
    assert (stats["answers"], stats["not_answers"]) == (0, 0)


def test_a_second_identical_failed_image_in_one_run_gets_its_own_error(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):  # byte-identical, one after the other
        (folder / name).write_bytes(NOT_AN_IMAGE)
    output = tmp_path / "out.jsonl"

    result = cli(
        *run_args(server, output, folder), "--cache", tmp_path / "c.sqlite", "--concurrency", "1"
    )

    assert result.code == 1
    rows = read_rows(output)
    assert [row["status"] for row in rows] == ["error"] * 3
    assert all(row["error_type"] == "bad_image" and not row["cached"] for row in rows)
    assert "0 ok, 3 failed" in result.err


def test_retry_failed_with_the_cache_retries_and_keeps_real_failures(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "text.jpg").write_bytes(NOT_AN_IMAGE)
    (folder / "blue.png").write_bytes(png("blue"))
    server.fail_image(png("blue"), 400)  # a refusal that goes away
    output, cache = tmp_path / "out.jsonl", tmp_path / "c.sqlite"
    args = [*run_args(server, output, folder), "--cache", str(cache)]
    assert cli(*args).code == 1
    assert set(_statuses(output).values()) == {"error"}

    server.clear_faults()
    again = cli(*args, "--retry-failed")

    assert again.code == 1
    rows = {Path(row["id"]).name: row for row in rows_by_id(output).values()}
    assert rows["text.jpg"]["status"] == "error" and rows["text.jpg"]["http_status"] == 400
    assert rows["blue.png"]["status"] == "ok" and rows["blue.png"]["top"] == "blue"
    assert not rows["blue.png"]["cached"]  # the earlier 400 was not stored
    assert server.stats.requests == 4


def test_identical_images_in_flight_with_a_cache_file_share_a_failure_as_errors(
    tmp_path: Path, make_server: MakeServer, cli: Cli
) -> None:
    server = make_server(latency=0.5)  # the leader is still in flight when the others come
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(3):
        (folder / f"copy-{n}.jpg").write_bytes(NOT_AN_IMAGE)
    output, cache = tmp_path / "out.jsonl", tmp_path / "c.sqlite"

    result = cli(*run_args(server, output, folder), "--cache", cache, "--concurrency", "8")

    assert result.code == 1
    assert server.stats.requests == 1
    rows = read_rows(output)
    (leader,) = [row for row in rows if row["attempts"] == 1]
    for row in rows:
        assert row["status"] == "error" and row["error_type"] == "bad_image"
        assert row["http_status"] == 400 and row["cached"] is False
        if row is not leader:
            assert row["attempts"] == 0 and row["top"] is None
            assert f"the identical image {leader['id']} was sent for it" in row["error"]
    again = cli(*run_args(server, tmp_path / "two.jsonl", folder), "--cache", cache)
    assert again.code == 1 and set(_statuses(tmp_path / "two.jsonl").values()) == {"error"}


def _older_cache_with_a_failure(cache: Path, image: Path) -> None:
    """A cache file as a batchclassify before the fix left it: ``image``'s failure stored
    under its real key (the answer columns of its error row, all empty)."""
    AnswerCache(cache).close()
    key = Keys(KeySettings(model="colors/1")).for_body(
        read_and_encode(str(image), max_upload_bytes=1 << 30).body
    )
    failed = error_row(Item(str(image)), error="HTTP 400", error_type="bad_image", attempts=1)  # type: ignore[arg-type]
    answer = orjson.dumps({name: failed.get(name) for name in ANSWER_FIELDS})
    with sqlite3.connect(cache) as db:
        db.execute(
            "INSERT INTO answers (key, model, source_id, answer, credits, created)"
            " VALUES (?, 'colors/1', ?, ?, NULL, 0)",
            (key, str(image), answer),
        )
        db.execute("DELETE FROM meta WHERE name = 'answers_only'")  # as an older file has none
    db.close()


def test_a_cache_written_by_an_older_version_is_repaired(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "x.jpg").write_bytes(NOT_AN_IMAGE)
    make_images(folder, 2)
    cache = tmp_path / "old.sqlite"
    _older_cache_with_a_failure(cache, folder / "x.jpg")

    stats = cli("cache", "stats", cache)  # reads only: counts it apart, does not serve it
    assert stats.code == 0 and "answers: 0" in stats.out and "not answers: 1" in stats.out
    output = tmp_path / "out.jsonl"
    result = cli(*run_args(server, output, folder), "--cache", cache)

    assert result.code == 1
    rows = {Path(row["id"]).name: row for row in rows_by_id(output).values()}
    assert rows["x.jpg"]["status"] == "error" and rows["x.jpg"]["cached"] is False
    assert server.stats.requests == 3
    found = orjson.loads(cli("cache", "stats", cache, "--json").out)
    assert (found["answers"], found["not_answers"]) == (2, 0)  # deleted by the run


def test_the_cache_refuses_to_store_or_serve_anything_but_an_answer(tmp_path: Path) -> None:
    cache = AnswerCache(tmp_path / "c.sqlite")
    with pytest.raises(ContradictoryRowError):
        cache.put(b"k" * 16, sample_failed_row("/a.jpg"), model="colors/1")
    with pytest.raises(ContradictoryRowError):
        cache.put(b"k" * 16, _poisoned(sample_failed_row("/a.jpg")), model="colors/1")
    cache.close()

    # An entry an older version (or one still running beside this one) stored: never served,
    # replaced by a real answer to the same key.
    bad = orjson.dumps(dict.fromkeys(ANSWER_FIELDS))
    with sqlite3.connect(tmp_path / "c.sqlite") as db:
        db.execute(
            "INSERT INTO answers VALUES (?, 'colors/1', '/a.jpg', ?, NULL, 0)", (b"k" * 16, bad)
        )
    db.close()
    cache = AnswerCache(tmp_path / "c.sqlite", create=False)  # create=False: no clean-up
    assert cache.get(b"k" * 16) is None
    assert cache.contains([b"k" * 16]) == set()
    assert cache.stats()["not_answers"] == 1
    cache.put(b"k" * 16, sample_ok_row("/b.jpg"), model="colors/1")
    cache.commit()
    cache.close()
    cache = AnswerCache(tmp_path / "c.sqlite", create=False)
    found = cache.get(b"k" * 16)
    assert found is not None and found.answer["top"] == "red" and found.source_id == "/b.jpg"
    assert (cache.stats()["answers"], cache.stats()["not_answers"]) == (1, 0)
    cache.close()


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_the_row_writer_refuses_a_row_that_contradicts_itself(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"out.{kind}"
    sink = JsonlSink(path) if kind == "jsonl" else ParquetSink(path)
    sink.open()
    sink.write(sample_ok_row("/good.jpg"))
    with pytest.raises(ContradictoryRowError, match="'ok' without a prediction"):
        sink.write(_poisoned(sample_failed_row("/bad.jpg")))
    with pytest.raises(ContradictoryRowError, match="no error type"):
        sink.write(dict(sample_failed_row("/bad.jpg"), error_type=None))
    sink.close()
    assert [row["id"] for row in read_rows(path)] == ["/good.jpg"]


# -- outputs an older version wrote: merge refuses them, --retry-failed repairs them -------


def _poison_output(output: Path, name: str) -> None:
    """Rewrite ``name``'s failed row of a JSONL output as the old bug wrote it."""
    rows = read_rows(output)
    output.write_bytes(
        b"".join(
            orjson.dumps(_poisoned(row) if Path(row["id"]).name == name else row) + b"\n"
            for row in rows
        )
    )


def test_merge_refuses_an_ok_row_without_answer_and_retry_failed_repairs_it(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    folder = tmp_path / "in"
    make_images(folder, 2)
    (folder / "x.jpg").write_bytes(NOT_AN_IMAGE)
    output = tmp_path / "old.jsonl"
    args = run_args(server, output, folder)
    assert cli(*args).code == 1
    _poison_output(output, "x.jpg")
    assert server.stats.requests == 3

    merged = cli("merge", output, "--output", tmp_path / "merged.jsonl")
    assert merged.code == 2
    assert f"merge: {output} holds a row that is not what it says" in merged.err
    assert "--retry-failed" in merged.err and "Traceback" not in merged.err
    assert not (tmp_path / "merged.jsonl").exists()

    plain = cli(*args)  # counted as failed, not as done
    assert plain.code == 1 and server.stats.requests == 3
    repaired = cli(*args, "--retry-failed")
    assert repaired.code == 1 and server.stats.requests == 4
    statuses = {Path(i).name: s for i, s in _statuses(output).items()}
    assert statuses.pop("x.jpg") == "error" and set(statuses.values()) == {"ok"}
    assert cli("merge", output, "--output", tmp_path / "merged.jsonl").code == 0


@pytest.mark.parametrize("chunk", [64, 1000, 1 << 20])
def test_the_jsonl_resume_scan_counts_an_ok_row_without_answer_as_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """Wherever the chunks of the scan's fast path end."""
    from batchclassify.output import sinks
    from batchclassify.output.resume import RECORDED_FAILED, RECORDED_OK, PriorState

    monkeypatch.setattr(sinks, "_SCAN_CHUNK", chunk)
    rows = [sample_ok_row(f"/p/{n}.jpg") for n in range(2000)]
    for n in (3, 1000, 1999):
        rows[n] = _poisoned(sample_failed_row(f"/p/{n}.jpg"))
    out = tmp_path / "r.jsonl"
    out.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    state = PriorState()

    state.scan = JsonlSink(out).scan(state)

    assert (state.scan.rows, state.ok, state.failed) == (2000, 1997, 3)
    assert state.index.get("/p/1000.jpg") == RECORDED_FAILED
    assert state.index.get("/p/999.jpg") == RECORDED_OK


def test_an_ok_row_without_answer_in_a_parquet_output_counts_as_failed(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    import pyarrow.parquet as pq

    folder = tmp_path / "in"
    make_images(folder, 2)
    (folder / "x.jpg").write_bytes(NOT_AN_IMAGE)
    output = tmp_path / "old.parquet"
    args = run_args(server, output, folder)
    assert cli(*args).code == 1
    (part,) = output.glob("part-*.parquet")
    table = pq.read_table(part)
    rows = [_poisoned(row) if row["status"] == "error" else row for row in table.to_pylist()]
    pq.write_table(type(table).from_pylist(rows, schema=table.schema), part)

    repaired = cli(*args, "--retry-failed")

    assert repaired.code == 1 and server.stats.requests == 4
    statuses = {Path(i).name: s for i, s in _statuses(output).items()}
    assert statuses.pop("x.jpg") == "error" and set(statuses.values()) == {"ok"}


# -- a damaged cache file -----------------------------------------------------------------


def _damage(cache: Path, *, pages: int = 1) -> bytes:
    """Overwrite ``pages`` pages from the middle of ``cache`` on (the header, page 1, stays
    intact); returns what the file then holds."""
    page = 4096
    data = bytearray(cache.read_bytes())
    middle = (len(data) // page // 2) * page
    assert middle >= page
    end = min(len(data), middle + pages * page)
    data[middle:end] = b"\xa5" * (end - middle)
    cache.write_bytes(bytes(data))
    return bytes(data)


def test_a_damaged_cache_is_refused_at_open_in_one_line_and_left_alone(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_images(tmp_path / "in", 40)
    cache = tmp_path / "c.sqlite"
    first = cli(*run_args(server, tmp_path / "one.jsonl", tmp_path / "in"), "--cache", cache)
    assert first.code == 0
    damaged = _damage(cache)
    output = tmp_path / "two.jsonl"

    for args in (
        [*run_args(server, output, tmp_path / "in"), "--cache", str(cache)],
        ["cache", "stats", str(cache)],
        ["cache", "clear", str(cache)],
        ["plan", str(tmp_path / "in"), "--model", "colors/1", "--cache", str(cache)],
    ):
        result = cli(*args)
        assert result.code == 2, (args, result.err)
        (line,) = result.err.strip().splitlines()
        assert f"--cache {cache}: is damaged (database disk image is malformed" in line
        assert "left as it is" in line
        assert cache.read_bytes() == damaged
    assert server.stats.requests == 40 and not output.exists()


class _DamageOnStart(SilentProgress):
    """Damages the cache file once the job has opened it (and checked it whole)."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.notes: list[str] = []
        self.damaged = b""

    def progress(self, progress: Progress) -> None:
        if not self.damaged:  # the first snapshot: the job has started
            self.damaged = _damage(self.cache, pages=1 << 20)  # the whole second half

    def note(self, text: str | None) -> None:
        if text:
            self.notes.append(text)


def test_a_cache_damaged_mid_job_is_dropped_and_the_job_goes_on(
    tmp_path: Path, server: BackgroundServer
) -> None:
    # Bigger than SQLite's page cache (2 MB), so the job reads the damage back from disk.
    cache = AnswerCache(tmp_path / "c.sqlite")
    answer = sample_ok_row("/elsewhere.jpg")
    for n in range(20_000):
        cache.put(n.to_bytes(16, "big"), answer, model="colors/1")
    cache.close()
    expected = make_images(tmp_path / "in", 6)
    progress = _DamageOnStart(tmp_path / "c.sqlite")
    config = JobConfig(
        sources=(str(tmp_path / "in"),),
        model="colors/1",
        output=tmp_path / "out.jsonl",
        http=HttpConfig(api_url=server.url, api_key=KEY),
        cache=tmp_path / "c.sqlite",
    )

    summary = anyio.run(lambda: run_job(config, progress=progress))

    assert (summary.ok, summary.failed, summary.exit_code) == (6, 0, 0)
    assert {row["id"]: row["top"] for row in read_rows(tmp_path / "out.jsonl")} == expected
    (note,) = [n for n in summary.notes if "answer cache" in n]
    assert f"answer cache {tmp_path / 'c.sqlite'} is damaged" in note
    assert "the job goes on without it" in note and note in progress.notes
    assert (tmp_path / "c.sqlite").read_bytes() == progress.damaged


# -- the advice for too_large rows works --------------------------------------------------


def test_the_too_large_advice_retries_the_failed_rows_downscaled(
    tmp_path: Path, make_server: MakeServer, cli: Cli
) -> None:
    server = make_server(max_body_bytes=10_000)
    make_images(tmp_path / "in", 3)  # a few hundred bytes each
    make_image(tmp_path / "in" / "wide.jpg", "red", size=(4000, 200))  # ~18 KB as base64
    output = tmp_path / "out.jsonl"
    args = run_args(server, output, tmp_path / "in")
    assert cli(*args).code == 1
    wide = str(tmp_path / "in" / "wide.jpg")
    assert rows_by_id(output)[wide]["error_type"] == "too_large"

    advice = re.search(r"rerun with (--retry-failed --max-size \d+)", ADVICE["too_large"])
    assert advice is not None
    result = cli(*args, *advice.group(1).split())

    assert result.code == 0, result.err
    rows = rows_by_id(output)
    assert rows[wide]["status"] == "ok" and rows[wide]["top"] == "red"
    assert (rows[wide]["image_width"], rows[wide]["image_height"]) == (4000, 200)
    assert server.stats.requests == 4 + 1  # only the failed row was sent again
    settings = orjson.loads((tmp_path / "out.jsonl.job.json").read_bytes())
    assert settings["max_size"] is None  # the job's own rows were sent as they are
    assert settings["retried_with_max_size"] == [2048]
    # The job stays resumable as it was made, and --max-size alone says what to add.
    assert cli(*args).code == 0
    refused = cli(*args, "--max-size", "2048")
    assert refused.code == 2 and "add --retry-failed" in refused.err


# -- the "done when" --------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_second_cache_run_reports_exactly_the_failures_of_the_first(
    tmp_path: Path, server: BackgroundServer, cli: Cli, fmt: str
) -> None:
    folder = tmp_path / "in"
    make_images(folder, 6)
    for n in range(3):
        (folder / f"broken-{n}.jpg").write_bytes(b"not an image %d\n" % n)
    (folder / "broken-0-again.jpg").write_bytes(b"not an image 0\n")  # a duplicate failure
    (folder / "empty.jpg").write_bytes(b"")
    shutil.copytree(folder, tmp_path / "dupes")  # every file twice, good and bad
    cache = tmp_path / "c.sqlite"
    one, two = tmp_path / f"one.{fmt}", tmp_path / f"two.{fmt}"
    sources = (folder, tmp_path / "dupes")

    first = cli(*run_args(server, one, *sources), "--cache", cache)
    second = cli(*run_args(server, two, *sources), "--cache", cache)

    assert (first.code, second.code) == (1, 1)
    assert _statuses(two) == _statuses(one)
    assert sorted(_statuses(one).values()) == ["error"] * 2 * 5 + ["ok"] * 2 * 6
    assert all(row["top"] for row in read_rows(two) if row["status"] == "ok")
    assert "12 ok, 10 failed" in first.err and "12 ok, 10 failed" in second.err
    for output in (one, two):  # what the readers of an output count
        report = cli("report", output)
        assert report.code == 0 and "images 22: ok 12 (54.5%), failed 10" in report.out
        status = orjson.loads(cli("status", output, "--json").out)
        assert (status["ok"], status["failed"]) == (12, 10)
        exported = cli("export", output, tmp_path / f"{output.name}.csv", "--to", "csv")
        assert exported.code == 0 and "left out: 10 failed rows" in exported.out
    stats = orjson.loads(cli("cache", "stats", cache, "--json").out)
    assert (stats["answers"], stats["not_answers"]) == (6, 0)
