"""Resumable, crash-safe jobs (issue 3): rerun to resume, kill -9, Ctrl-C and SIGTERM,
``--retry-failed``, ``--overwrite``, refusal to mix jobs, duplicate ids.

Tests that need a real process (signals, kill -9) start ``python -m batchclassify`` against a
``BackgroundServer`` in this process; the others run the CLI in-process. Every check reads the
output back from disk. Parquet output is read back in ``test_parquet_output.py``.
"""

from __future__ import annotations

import io
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import orjson
import pyarrow.parquet as pq
import pytest

from batchclassify import HttpConfig, JobConfig, OutageConfig, RetryConfig, classify
from batchclassify.commands.progress import ProgressBar, format_summary
from batchclassify.job.runner import STOP_GRACE, Job, JobSummary
from batchclassify.server import BackgroundServer, Fault

from .conftest import (
    KEY,
    PYTHON,
    Cli,
    MakeServer,
    make_images,
    png,
    rows_by_id,
    run_args,
    subprocess_env,
)

Row = dict[str, Any]

INTERRUPTED = "interrupted — rerun the same command to resume"


def start(args: list[str]) -> subprocess.Popen[str]:
    """``batchclassify ARGS`` in a child process (the key comes from ROBOFLOW_API_KEY)."""
    return subprocess.Popen(
        [PYTHON, "-m", "batchclassify", *args],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err


def wait_until(condition: Callable[[], bool], process: subprocess.Popen[str] | None = None) -> None:
    """Poll ``condition`` (server counters live on another thread) while the job runs."""
    deadline = time.monotonic() + 30
    while not condition():
        if process is not None:
            assert process.poll() is None, f"the job ended early: {process.communicate()[1]}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def run_and_stop(job: Job, when: Callable[[], bool]) -> tuple[JobSummary, float]:
    """Run ``job`` in-process and call ``request_stop()`` once ``when()`` holds; returns the
    summary and when the stop was requested."""
    stopped: list[float] = []

    async def main() -> JobSummary:
        async with anyio.create_task_group() as group:

            async def stop() -> None:
                await anyio.to_thread.run_sync(wait_until, when)
                job.request_stop()
                stopped.append(time.monotonic())

            group.start_soon(stop)
            summary = await job.run()
        return summary

    summary = anyio.run(main)
    return summary, stopped[0]


# -- reading the output as a crash left it ----------------------------------------------------


def jsonl_on_disk(output: Path) -> list[Row]:
    """Every complete line must be a whole row; only a last line without newline may be torn."""
    if not output.exists():
        return []
    lines = output.read_bytes().split(b"\n")
    lines.pop()  # b"" when the file ends with a newline, else the torn tail
    return [orjson.loads(line) for line in lines]


def parquet_on_disk(output: Path) -> list[Row]:
    """Rows of the finished parts plus the whole lines of journals whose part is unfinished
    (what the next run turns into a part). Readers must see the parts, and only them."""
    if not output.exists():
        return []
    parts = sorted(output.glob("part-*.parquet"))
    rows = [row for part in parts for row in pq.read_table(part).to_pylist()]
    assert pq.read_table(output).num_rows == len(rows)  # readers skip journals and .tmp files
    for journal in sorted(output.glob("_journal-*.jsonl")):
        number = journal.name.removeprefix("_journal-").removesuffix(".jsonl")
        if (output / f"part-{number}.parquet").exists():
            continue  # stale: its part was finished just before the kill
        lines = journal.read_bytes().split(b"\n")
        lines.pop()
        rows.extend(orjson.loads(line) for line in lines)
    return rows


def on_disk(output: Path) -> list[Row]:
    return parquet_on_disk(output) if output.suffix == ".parquet" else jsonl_on_disk(output)


def by_id(rows: list[Row]) -> dict[str, Row]:
    found = {row["id"]: row for row in rows}
    assert len(found) == len(rows), "an id has two rows"
    return found


def check_rows(rows: list[Row], expected: dict[str, str]) -> None:
    """One row per id, each a correct classification of that image."""
    for row in by_id(rows).values():
        assert row["status"] == "ok", row
        assert row["top"] == expected[row["id"]], row
        assert row["predicted_classes"] == [row["top"]]
        assert row["predictions"][0]["class"] == row["top"]


def check_final(output: Path, expected: dict[str, str]) -> None:
    """The invariant: exactly one correct row per input item, and a clean output."""
    if output.suffix == ".parquet":
        assert sorted(p.name for p in output.iterdir() if not p.name.startswith("part-")) == []
        rows = pq.read_table(output).to_pylist()
    else:
        data = output.read_bytes()
        assert data.endswith(b"\n")
        rows = [orjson.loads(line) for line in data.splitlines()]
    check_rows(rows, expected)
    assert {row["id"] for row in rows} == set(expected)


# -- kill -9 ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(240)  # a hang guard: six process starts take a while on a loaded machine
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_kill_9_at_random_points_then_resume_until_done(
    tmp_path: Path, make_server: MakeServer, fmt: str
) -> None:
    """Killed three times at random instants (while starting and recovering from the
    previous kill, or up to 1.5 s into the work), resumed each time: nothing written is lost
    or changed, recorded items are never requested again, and the end result is one correct
    row per image. (How much a kill can lose, at most the rows of the last flush interval, is
    judged on virtual time: test_flow_on_virtual_time.py; here the clock is a loaded
    machine's.)"""
    expected = make_images(tmp_path / "images", 1600)
    output = tmp_path / f"results.{fmt}"
    rng = random.Random(f"kill-9-{fmt}")

    def run_against(server: BackgroundServer) -> subprocess.Popen[str]:
        # A server of its own for each run: requests a killed run had already sent can reach
        # a loaded machine's server after the kill, and would be counted as the next run's.
        return start([*run_args(server, output, tmp_path / "images"), "--concurrency", "16"])

    for round_number in range(3):
        before = by_id(on_disk(output))
        left = len(expected) - len(before)
        server = make_server(latency=0.03)
        # Kill 2 lands while starting (imports, scan, recovery from the previous kill), kill 3
        # well into the work, kill 1 anywhere.
        starting = round_number == 1
        low, high = [(0.1, 1.5), (0.1, 0.6), (0.8, 1.5)][round_number]
        delay = rng.uniform(low, high)
        kill_at = time.monotonic() + delay if starting else float("inf")
        process = run_against(server)
        while True:
            now = time.monotonic()
            requests = server.stats.requests
            if requests and kill_at == float("inf"):
                kill_at = now + delay  # counted from the first request
            if now >= kill_at or requests >= left * 0.4:
                break
            assert process.poll() is None, "the job ended before it could be killed"
            time.sleep(0.005)
        process.kill()
        assert process.wait(10) == -signal.SIGKILL

        after = by_id(on_disk(output))
        check_rows(list(after.values()), expected)
        assert all(after[item_id] == row for item_id, row in before.items())
        assert server.stats.requests <= left  # recorded ids were skipped

    before = by_id(on_disk(output))
    assert 0 < len(before) < len(expected)
    server = make_server(latency=0.03)
    code, err = finish(run_against(server))
    assert code == 0, err
    assert server.stats.requests == len(expected) - len(before)
    assert f"{len(expected) - len(before):,} ok, 0 failed, {len(before):,} already done" in err
    check_final(output, expected)


def test_retry_failed_killed_midway_still_ends_with_one_row_per_id(
    tmp_path: Path, server: BackgroundServer, make_server: MakeServer, cli: Cli
) -> None:
    """A kill between appending a retried row and compacting leaves two rows for an id on
    disk; the next run keeps only the newer one."""
    expected = make_images(tmp_path / "images", 60)
    server.fail_image(png("blue"), 400)
    server.fail_image(png("green"), 400)
    output = tmp_path / "out.jsonl"
    assert cli(*run_args(server, output, tmp_path / "images"), "-q").code == 1
    failed = {row["id"] for row in on_disk(output) if row["status"] == "error"}
    assert len(failed) == 20

    slow = make_server(latency=0.25)
    process = start(
        [*run_args(slow, output, tmp_path / "images"), "--retry-failed", "--concurrency", "2"]
    )
    # Killed once six retried rows are on disk (a flush happened): no fixed sleep to outlast.
    wait_until(lambda: retried_on_disk(output, failed) >= 6, process)
    process.kill()
    process.wait(10)
    rows = on_disk(output)
    assert 60 < len(rows) < 80  # superseded error rows are still there
    retried = {row["id"] for row in rows if row["id"] in failed and row["status"] == "ok"}
    assert 6 <= len(retried) == len(rows) - 60

    server.clear_faults()
    result = cli(*run_args(server, output, tmp_path / "images"), "--retry-failed")
    assert result.code == 0, result.err
    check_final(output, expected)
    assert server.stats.requests == 60 + 20 - len(retried)
    assert f"{20 - len(retried)} ok, 0 failed, {40 + len(retried)} already done" in result.err


def retried_on_disk(output: Path, failed: set[str]) -> int:
    """How many of the ``failed`` ids have an ``ok`` row in the file (whole lines only)."""
    return sum(1 for row in jsonl_on_disk(output) if row["id"] in failed and row["status"] == "ok")


# -- SIGINT and SIGTERM -----------------------------------------------------------------------

#: "At once", for a stop in a child process: well under the 30 s the slow path would take
#: (the stop grace period, a 30 s Retry-After or probe interval), with room for a machine
#: running two test suites on two cores.
AT_ONCE = STOP_GRACE / 2


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "fmt"), [(signal.SIGINT, "jsonl"), (signal.SIGTERM, "parquet")])
def test_signal_finishes_requests_in_flight_then_resume_completes(
    tmp_path: Path, make_server: MakeServer, signum: int, fmt: str
) -> None:
    server = make_server(latency=0.3)
    expected = make_images(tmp_path / "images", 40)
    output = tmp_path / f"results.{fmt}"
    args = [*run_args(server, output, tmp_path / "images"), "--concurrency", "8"]

    process = start(args)
    wait_until(lambda: server.stats.requests >= 12, process)  # the second wave is in flight
    process.send_signal(signum)
    sent = time.monotonic()
    code, err = finish(process, timeout=20)

    assert code == 128 + signum  # 130 for SIGINT, 143 for SIGTERM
    assert time.monotonic() - sent < AT_ONCE  # not held for the stop grace period
    assert INTERRUPTED in err
    rows = on_disk(output)
    check_rows(rows, expected)
    # Every request made was let finish and its row written; nothing more was taken.
    assert len(rows) == server.stats.requests == server.stats.statuses[200]
    assert 12 <= len(rows) < 40
    assert f"{len(rows)} ok, 0 failed" in err
    if fmt == "parquet":
        assert [p.name for p in output.iterdir()] == ["part-000000.parquet"]
    else:
        assert output.read_bytes().endswith(b"\n")

    code, err = finish(start(args))
    assert code == 0, err
    assert f"{40 - len(rows)} ok, 0 failed, {len(rows)} already done" in err
    assert server.stats.requests == 40
    check_final(output, expected)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_second_ctrl_c_quits_at_once_and_leaves_a_clean_output(
    tmp_path: Path, server: BackgroundServer, fmt: str
) -> None:
    expected = make_images(tmp_path / "images", 40)
    output = tmp_path / f"results.{fmt}"
    args = [*run_args(server, output, tmp_path / "images"), "--concurrency", "8"]
    server.script(*[200] * 16, *[Fault(action="hang")] * 8)  # then requests in flight never end

    process = start(args)
    wait_until(lambda: server.stats.hangs == 8, process)
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    time.sleep(1.0)
    assert process.poll() is None  # the first Ctrl-C waits for the requests in flight
    process.send_signal(signal.SIGINT)
    sent = time.monotonic()
    code, err = finish(process, timeout=20)

    assert code == 130
    assert time.monotonic() - sent < AT_ONCE  # the hung requests are not waited for
    assert INTERRUPTED in err
    rows = on_disk(output)
    check_rows(rows, expected)
    assert len(rows) == 16
    if fmt == "parquet":
        assert [p.name for p in output.iterdir()] == ["part-000000.parquet"]
    else:
        assert output.read_bytes().endswith(b"\n")

    code, err = finish(start(args))
    assert code == 0, err
    assert "24 ok, 0 failed, 16 already done" in err
    check_final(output, expected)


@pytest.mark.parametrize("status", [503, 429])
def test_ctrl_c_does_not_wait_out_a_pause_the_server_asked_for(
    tmp_path: Path, server: BackgroundServer, status: int
) -> None:
    """Only requests on the wire are waited for: items waiting out a Retry-After stop at once,
    and nothing more is sent."""
    expected = make_images(tmp_path / "images", 20)
    output = tmp_path / "out.jsonl"
    args = [*run_args(server, output, tmp_path / "images"), "--concurrency", "4"]
    server.fail_next(4, status, {"Retry-After": "30"})

    process = start(args)
    wait_until(lambda: server.stats.statuses[status] >= 4, process)  # all four answered
    process.send_signal(signal.SIGINT)
    sent = time.monotonic()
    code, err = finish(process, timeout=60)

    assert code == 130
    assert time.monotonic() - sent < AT_ONCE  # the 30 s Retry-After is not waited out
    assert INTERRUPTED in err
    assert server.stats.requests == 4
    assert on_disk(output) == []

    code, err = finish(start(args))
    assert code == 0, err
    check_final(output, expected)
    assert server.stats.requests == 24


class OutageSeen(ProgressBar):
    """A silent progress listener that notes when the job declares the API unavailable."""

    def __init__(self) -> None:
        super().__init__(stream=io.StringIO(), enabled=False)
        self.declared = threading.Event()

    def note(self, text: str | None) -> None:
        if text is not None and text.startswith("API unavailable"):
            self.declared.set()
        super().note(text)


def test_stop_during_an_outage_returns_at_once(tmp_path: Path, server: BackgroundServer) -> None:
    make_images(tmp_path / "images", 20)
    server.set_down(True)
    config = JobConfig(
        sources=(str(tmp_path / "images"),),
        model="colors/1",
        output=tmp_path / "out.jsonl",
        http=HttpConfig(api_url=server.url, api_key=KEY, concurrency=4),
        retry=RetryConfig(retries=999, backoff_base=0.02, backoff_max=0.05),
        outage=OutageConfig(outage_after=0.2, probe_initial=30),
    )
    progress = OutageSeen()
    # Stopped once the outage is declared; the next probe would be 30 s away.
    summary, stopped = run_and_stop(Job(config, progress=progress), progress.declared.is_set)

    assert time.monotonic() - stopped < AT_ONCE
    assert summary.interrupted and summary.exit_code == 130
    assert (summary.ok, summary.failed) == (0, 0)
    assert on_disk(tmp_path / "out.jsonl") == []


def test_requests_in_flight_after_a_stop_are_cut_after_the_grace_period(
    tmp_path: Path, server: BackgroundServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("batchclassify.job.runner.STOP_GRACE", 0.5)
    expected = make_images(tmp_path / "images", 12)
    server.script(*[200] * 4, *[Fault(action="hang")] * 4)
    output = tmp_path / "out.jsonl"
    config = JobConfig(
        sources=(str(tmp_path / "images"),),
        model="colors/1",
        output=output,
        http=HttpConfig(api_url=server.url, api_key=KEY, concurrency=4),
    )
    summary, stopped = run_and_stop(Job(config), lambda: server.stats.hangs == 4)

    assert 0.4 < time.monotonic() - stopped < 2.0
    assert summary.interrupted and (summary.ok, summary.failed) == (4, 0)
    check_rows(on_disk(output), expected)
    assert len(on_disk(output)) == 4


# -- rerunning --------------------------------------------------------------------------------


def test_rerun_skips_everything_recorded_before_any_request(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    expected = make_images(tmp_path / "images", 30)
    output = tmp_path / "out.jsonl"
    args = run_args(server, output, tmp_path / "images")
    # A first run that covered part of the input.
    part = tmp_path / "part.txt"
    part.write_text("".join(f"{item_id}\n" for item_id in sorted(expected)[:12]))
    assert cli(*run_args(server, output, part), "-q").code == 0
    assert server.stats.requests == 12

    result = cli(*args)
    assert result.code == 0, result.err
    assert "18 ok, 0 failed, 12 already done" in result.err
    assert server.stats.requests == 30
    check_final(output, expected)

    result = cli(*args)
    assert result.code == 0, result.err
    assert "0 ok, 0 failed, 30 already done" in result.err
    assert server.stats.requests == 30
    check_final(output, expected)


def test_progress_bar_of_a_resumed_job_starts_from_what_is_done(
    tmp_path: Path, server: BackgroundServer
) -> None:
    expected = make_images(tmp_path / "images", 30)
    part = tmp_path / "part.txt"
    part.write_text("".join(f"{item_id}\n" for item_id in sorted(expected)[:12]))

    def config(source: Path) -> JobConfig:
        http = HttpConfig(api_url=server.url, api_key=KEY)
        return JobConfig(sources=(str(source),), model="colors/1", output=output, http=http)

    output = tmp_path / "out.jsonl"
    assert classify(config(part)).ok == 12
    stream = io.StringIO()
    summary = classify(
        config(tmp_path / "images"), progress=ProgressBar(stream=stream, enabled=True)
    )

    assert (summary.ok, summary.already_done) == (18, 12)
    frames = [frame for frame in stream.getvalue().split("\r") if frame]
    # Drawn at once, before anything else is known: what is done, no made-up total.
    assert frames[0].startswith("classifying: 12img [")
    assert "| 30/30 " in frames[-1] and "100%" in frames[-1] and "ok=18 " in frames[-1]
    assert all(" 0/" not in frame for frame in frames)
    # Once counted, the total is the 30 items, the 12 done before included, in every frame.
    totals = {frame.split("/", 1)[1].split(" ", 1)[0] for frame in frames if "%|" in frame}
    assert totals == {"30"}


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_retry_failed_requests_only_failed_items_and_replaces_their_rows(
    tmp_path: Path, server: BackgroundServer, cli: Cli, fmt: str
) -> None:
    expected = make_images(tmp_path / "images", 30)
    blue = {item_id for item_id, color in expected.items() if color == "blue"}
    server.fail_image(png("blue"), 400)
    output = tmp_path / f"out.{fmt}"
    args = run_args(server, output, tmp_path / "images")

    result = cli(*args)
    assert result.code == 1
    rows = by_id(on_disk(output))
    assert {item_id for item_id, row in rows.items() if row["status"] == "error"} == blue
    assert server.stats.requests == 30

    # Without --retry-failed a rerun sends nothing and still reports the failures.
    server.clear_faults()
    result = cli(*args)
    assert result.code == 1
    assert "0 ok, 0 failed, 25 already done, 5 failed in an earlier run" in result.err
    assert "--retry-failed" in result.err
    assert server.stats.requests == 30

    result = cli(*args, "--retry-failed")
    assert result.code == 0, result.err
    assert "5 ok, 0 failed, 25 already done" in result.err
    assert server.stats.requests == 35
    assert [r.status for r in list(server.stats.recent)[-5:]] == [200] * 5
    check_final(output, expected)  # the error rows were replaced, not added to
    rows = by_id(on_disk(output))
    assert len(rows) == 30
    assert all(rows[item_id]["attempts"] == 1 for item_id in blue)

    result = cli(*args, "--retry-failed")
    assert result.code == 0
    assert server.stats.requests == 35


def test_retry_failed_that_fails_again_keeps_one_row(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_images(tmp_path / "images", 12)
    server.fail_image(png("red"), 400)
    output = tmp_path / "out.parquet"
    args = run_args(server, output, tmp_path / "images")
    assert cli(*args, "-q").code == 1
    first = {row["id"]: row for row in on_disk(output) if row["status"] == "error"}
    assert len(first) == 2

    result = cli(*args, "--retry-failed")
    assert result.code == 1
    assert "0 ok, 2 failed, 10 already done" in result.err
    assert server.stats.requests == 14
    rows = by_id(on_disk(output))
    assert len(rows) == 12
    again = {item_id: row for item_id, row in rows.items() if row["status"] == "error"}
    assert set(again) == set(first)
    assert all(again[i]["inference_id"] is None for i in again)
    assert sorted(p.name for p in output.iterdir())[0].startswith("part-")


def test_overwrite_starts_from_scratch(tmp_path: Path, server: BackgroundServer, cli: Cli) -> None:
    expected = make_images(tmp_path / "images", 10)
    output = tmp_path / "out.jsonl"
    args = run_args(server, output, tmp_path / "images")
    assert cli(*args, "-q").code == 0

    result = cli(*args, "--overwrite")
    assert result.code == 0, result.err
    assert "10 ok, 0 failed" in result.err and "already done" not in result.err
    assert server.stats.requests == 20
    check_final(output, expected)

    # --overwrite also allows another model: the output and its settings are replaced.
    multi = run_args(server, output, tmp_path / "images", model="colors-multilabel/1")
    result = cli(*multi, "--overwrite", "--confidence", "0.3")
    assert result.code == 0, result.err
    assert server.stats.requests == 30
    rows = by_id(on_disk(output))
    assert len(rows) == 10 and all(row["multilabel"] for row in rows.values())
    settings = orjson.loads(Path(f"{output}.job.json").read_bytes())
    assert (settings["model"], settings["confidence"]) == ("colors-multilabel/1", 0.3)


@pytest.mark.parametrize(
    ("fmt", "change", "named"),
    [
        ("jsonl", ["--model", "colors-multilabel/1"], "model"),
        ("jsonl", ["--confidence", "0.5"], "confidence"),
        ("jsonl", ["--max-size", "64"], "max_size"),
        ("parquet", ["--model", "colors/2"], "model"),
    ],
)
def test_rerun_with_other_settings_is_refused(
    tmp_path: Path, server: BackgroundServer, cli: Cli, fmt: str, change: list[str], named: str
) -> None:
    make_images(tmp_path / "images", 6)
    output = tmp_path / f"out.{fmt}"
    args = run_args(server, output, tmp_path / "images")
    assert cli(*args, "-q").code == 0
    settings = Path(f"{output}.job.json")
    settings_before = settings.read_bytes()
    rows_before = on_disk(output)
    if change[0] == "--model":
        args[args.index("colors/1")] = change[1]
        change = []

    result = cli(*args, *change)

    assert result.code == 2
    [line] = result.err.splitlines()  # one line, naming the fix
    assert "--overwrite" in line and named in line
    assert server.stats.requests == 6
    assert on_disk(output) == rows_before
    assert settings.read_bytes() == settings_before


def test_job_settings_are_recorded_without_the_api_key(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_images(tmp_path / "images", 3)
    output = tmp_path / "out.jsonl"
    args = run_args(server, output, tmp_path / "images")
    options = ["--confidence", "0.25", "--max-size", "64"]
    result = cli(*args, "--api-key", KEY, *options)
    assert result.code == 0, result.err
    text = Path(f"{output}.job.json").read_text()
    assert KEY not in text and KEY not in output.read_text()
    settings = orjson.loads(text)
    assert settings["model"] == "colors/1"
    assert settings["confidence"] == 0.25
    assert settings["max_size"] == 64
    assert settings["format"] == "jsonl"
    # Another --api-url (the same model elsewhere) is no reason to refuse.
    other = BackgroundServer()
    try:
        result = cli(*run_args(other, output, tmp_path / "images"), *options)
    finally:
        other.stop()
    assert result.code == 0, result.err
    assert "3 already done" in result.err


# -- damaged output, duplicate input ----------------------------------------------------------


@pytest.mark.parametrize("tail", ["partial", "no-newline"])
def test_torn_last_line_is_repaired_on_resume(
    tmp_path: Path, server: BackgroundServer, cli: Cli, tail: str
) -> None:
    expected = make_images(tmp_path / "images", 10)
    output = tmp_path / "out.jsonl"
    args = run_args(server, output, tmp_path / "images")
    assert cli(*args, "-q").code == 0
    # What kill -9 in the middle of a write leaves: 7 whole lines and the start of another.
    lines = output.read_bytes().splitlines(keepends=True)
    torn = lines[7][:40] if tail == "partial" else lines[7].rstrip(b"\n")
    output.write_bytes(b"".join(lines[:7]) + torn)

    result = cli(*args)

    assert result.code == 0, result.err
    assert "3 ok, 0 failed, 7 already done" in result.err
    assert server.stats.requests == 13
    assert output.read_bytes().startswith(b"".join(lines[:7]))
    assert torn + b"{" not in output.read_bytes()
    check_final(output, expected)


def test_unparsable_line_in_the_middle_is_dropped_and_its_item_redone(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    expected = make_images(tmp_path / "images", 10)
    output = tmp_path / "out.jsonl"
    args = run_args(server, output, tmp_path / "images")
    assert cli(*args, "-q").code == 0
    lines = output.read_bytes().splitlines(keepends=True)
    lines[4] = lines[4][:30] + b"\n"
    output.write_bytes(b"".join(lines))

    result = cli(*args, "-q")

    assert result.code == 0, result.err
    assert server.stats.requests == 11
    check_final(output, expected)


def test_duplicate_ids_in_the_input_are_classified_once(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    expected = make_images(tmp_path / "images", 12)
    ids = sorted(expected)
    # The folder and a manifest naming the same files (same ids), one of them twice.
    listing = tmp_path / "again.txt"
    listing.write_text("".join(f"{item_id}\n" for item_id in [*ids[:5], ids[0]]))
    # A CSV whose id column repeats an id with another file.
    named = tmp_path / "named.csv"
    named.write_text(f"id,path\nmine,{ids[0]}\nmine,{ids[1]}\n")
    expected["mine"] = expected[ids[0]]
    output = tmp_path / "out.jsonl"

    result = cli(*run_args(server, output, tmp_path / "images", listing, named))

    assert result.code == 0, result.err
    assert "13 ok, 0 failed, 7 duplicates skipped" in result.err
    # "mine" is ids[0]'s file: if that request was still in flight, it shared the answer.
    shared = rows_by_id(output)["mine"]["cached_from"] == ids[0]
    assert server.stats.requests == 13 - shared
    check_final(output, expected)


def test_interrupted_overwrite_run_says_to_resume_without_overwrite(
    tmp_path: Path, make_server: MakeServer
) -> None:
    server = make_server(latency=0.2)
    make_images(tmp_path / "images", 20)
    output = tmp_path / "out.jsonl"
    output.write_text("")  # an earlier output that --overwrite replaces
    config = JobConfig(
        sources=(str(tmp_path / "images"),),
        model="colors/1",
        output=output,
        existing="overwrite",
        http=HttpConfig(api_url=server.url, api_key=KEY, concurrency=2),
    )
    summary, _ = run_and_stop(Job(config), lambda: server.stats.requests >= 2)

    # Rerunning the same command would start over again: the hint must not say so.
    assert summary.exit_code == 130
    assert "rerun the same command without --overwrite to resume" in format_summary(summary)
