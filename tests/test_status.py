"""``batchclassify status`` and the progress file a running job keeps current.

Real jobs run in a child process against a slow local server (``make_server(latency=...)``)
so ``status`` sees them mid-way; the progress file's own logic is tested with a fake clock.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchclassify.commands.status import KILLED, read_status
from batchclassify.output.progressfile import ProgressFile, progress_path
from batchclassify.server import BackgroundServer
from batchclassify.summary import JobSummary, Progress

from .conftest import Cli, make_images, run_args, start_cli, wait_for_job


def _progress(output: Path) -> dict[str, Any]:
    try:
        found = orjson.loads(progress_path(output).read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return {}
    assert isinstance(found, dict)
    return found


def _slow_job(
    tmp_path: Path, make_server: Callable[..., BackgroundServer], count: int
) -> tuple[Path, list[str]]:
    server = make_server(latency=0.2)
    make_images(tmp_path / "imgs", count)
    output = tmp_path / "out.jsonl"
    return output, [*run_args(server, output, tmp_path / "imgs"), "--concurrency", "2", "-q"]


@pytest.mark.slow
def test_status_while_running_and_after_a_normal_end(
    tmp_path: Path, make_server: Callable[..., BackgroundServer], cli: Cli
) -> None:
    output, args = _slow_job(tmp_path, make_server, 60)  # ~6 s: long enough to look at
    job = start_cli(args)
    try:
        wait_for_job(lambda: _progress(output).get("ok", 0) >= 4, job)
        result = cli("status", output, "--json")
        assert result.code == 0, result.err
        status = json.loads(result.out)
        assert status["state"] == "running" and status["running"] is True
        assert status["pid"] == job.pid and status["host"] == socket.gethostname()
        assert status["ok"] + status["failed"] + status["remaining"] == status["found_so_far"]
        # The total is known once the producer has read every input (near the end here).
        assert status["total"] in (None, 60) and status["found_so_far"] <= 60
        text = cli("status", output).out
        assert "running" in text and "images/s" in text and "remaining of" in text
        assert job.wait(timeout=60) == 0
    finally:
        job.kill()
        job.communicate()
    status = json.loads(cli("status", output, "--json").out)
    assert status["state"] == "finished" and status["running"] is False
    assert (status["ok"], status["failed"], status["remaining"], status["total"]) == (60, 0, 0, 60)
    assert "finished" in cli("status", output).out
    # --watch on an ended job prints once and returns.
    assert cli("status", output, "--watch").out.count("finished") == 1


@pytest.mark.slow
def test_status_after_kill_9_says_rerun(
    tmp_path: Path, make_server: Callable[..., BackgroundServer], cli: Cli
) -> None:
    output, args = _slow_job(tmp_path, make_server, 40)
    job = start_cli(args)
    try:
        wait_for_job(lambda: _progress(output).get("ok", 0) >= 2, job)
    finally:
        os.kill(job.pid, signal.SIGKILL)
        job.communicate()
    result = cli("status", output)
    assert result.code == 0
    assert KILLED in result.out
    status = json.loads(cli("status", output, "--json").out)
    assert status["state"] == "running" and status["running"] is False
    assert status["summary"] == KILLED


@pytest.mark.slow
def test_status_after_ctrl_c_is_interrupted(
    tmp_path: Path, make_server: Callable[..., BackgroundServer], cli: Cli
) -> None:
    output, args = _slow_job(tmp_path, make_server, 40)
    job = start_cli(args)
    try:
        wait_for_job(lambda: _progress(output).get("ok", 0) >= 2, job)
        job.send_signal(signal.SIGINT)
        assert job.wait(timeout=60) == 130
    finally:
        job.kill()
        job.communicate()
    status = json.loads(cli("status", output, "--json").out)
    assert status["state"] == "interrupted"


def test_status_without_progress_file_counts_the_output(tmp_path: Path, cli: Cli) -> None:
    output = tmp_path / "old.jsonl"
    rows = [
        {"id": "a", "status": "ok", "top": "red"},
        {"id": "b", "status": "error", "error_type": "timeout"},
        {"id": "c", "status": "error", "error_type": "bad_image"},
        {"id": "b", "status": "ok", "top": "red"},  # a --retry-failed row supersedes
    ]
    output.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    result = cli("status", output)
    assert result.code == 0, result.err
    assert "no progress file" in result.out and "2 ok, 1 failed" in result.out
    status = json.loads(cli("status", output, "--json").out)
    assert (status["ok"], status["failed"], status["errors"]) == (2, 1, {"bad_image": 1})


def test_status_of_nothing_is_a_usage_error(tmp_path: Path, cli: Cli) -> None:
    result = cli("status", tmp_path / "missing.jsonl")
    assert result.code == 2 and "no such output" in result.err


def test_stale_file_from_another_host_is_not_running(tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    found = {"tool": "batchclassify", "state": "running", "host": "elsewhere", "pid": 1}
    progress_path(output).write_bytes(orjson.dumps({**found, "updated_unix": 1000.0}))
    assert read_status(output, now=1030.0)["running"] is True
    assert read_status(output, now=1100.0)["summary"] == KILLED


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_file_rates_eta_and_atomic_rewrites(tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    summary = JobSummary(output=output)
    clock = _Clock()
    live = {"rate_limit_per_s": 20.0, "answered_429": 3, "outage": False}
    writer = ProgressFile(output, summary, live=lambda: live, clock=clock, wall=clock)

    def shown(*, finished: bool = False) -> Progress:  # as the job's tracker shows it
        return Progress(
            already_done=10, ok=summary.ok, failed=summary.failed, retries=0, total=110,
            total_is_exact=True, found=110, waiting=None, finished=finished,
        )  # fmt: skip

    writer.progress(shown())
    clock.now += 10
    summary.ok, summary.failed = 18, 2
    writer.progress(shown())
    found = _progress(output)
    assert (found["total"], found["remaining"], found["ok"]) == (110, 80, 18)
    assert found["images_per_s"] == 2.0 and found["eta_s"] == 40
    assert found["answered_429"] == 3 and found["rate_limit_per_s"] == 20.0
    clock.now += 1  # within the interval: not rewritten
    summary.ok = 19
    writer.progress(shown())
    assert _progress(output)["ok"] == 18
    summary.interrupted = True
    writer.progress(shown(finished=True))
    assert _progress(output)["state"] == "interrupted"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl.progress.json"]


def test_progress_file_never_overwrites_a_file_it_did_not_write(tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    progress_path(output).write_text('{"mine": true}\n')
    writer = ProgressFile(output, JobSummary(output=output), live=dict)
    nothing = Progress(
        already_done=0, ok=0, failed=0, retries=0, total=None, total_is_exact=False, found=0,
        waiting=None,
    )  # fmt: skip
    writer.progress(nothing)
    writer.progress(replace(nothing, finished=True))
    assert progress_path(output).read_text() == '{"mine": true}\n'


def test_a_reused_pid_is_not_the_job(tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    # This test's own process is alive, on this host, and is not a batchclassify job.
    found: dict[str, Any] = {
        "tool": "batchclassify",
        "state": "running",
        "host": socket.gethostname(),
    }
    found |= {"pid": os.getpid(), "updated_unix": time.time()}
    progress_path(output).write_bytes(orjson.dumps(found))
    cmdline = Path(f"/proc/{os.getpid()}/cmdline")
    if not cmdline.exists() or b"batchclassify" in cmdline.read_bytes():
        pytest.skip("needs /proc, and a test command line without 'batchclassify'")
    assert read_status(output)["summary"] == KILLED
