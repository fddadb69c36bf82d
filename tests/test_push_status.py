"""``batchclassify status`` on a push: its progress file (``OUTPUT.push-TARGET.progress.json``),
kept current while it runs, and read by the same rules as a run's (running, ended, killed).

Real pushes run in a child process against a slow local server (``latency``) so ``status``
sees them mid-way; nothing is judged by the wall clock: the tests wait for counts."""

from __future__ import annotations

import json
import os
import signal
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchclassify.commands.push.ledger import ledger_path
from batchclassify.commands.push.progressfile import PushProgressFile, push_progress_path
from batchclassify.commands.push.summary import PushSummary
from batchclassify.commands.status import PUSH_KILLED, push_statuses, read_status
from batchclassify.output.progressfile import ProgressFile, progress_path, read_progress
from batchclassify.server import BackgroundServer
from batchclassify.summary import JobSummary, Progress

from .conftest import KEY, Cli, MakeServer, make_images, run_args, start_cli, wait_for_job

IMAGES = 30


@pytest.fixture
def classified(cli: Cli, make_server: MakeServer, tmp_path: Path) -> Path:
    """An output of ``IMAGES`` classified images (a finished run)."""
    make_images(tmp_path / "images", IMAGES)
    output = tmp_path / "out.jsonl"
    made = cli(*run_args(make_server(), output, tmp_path / "images"))
    assert made.code == 0, made.err
    return output


def push_args(output: Path, target: BackgroundServer) -> list[str]:
    return ["push", str(output), "--project", "pets", "--api-url", target.url, "-c", "2", "-q"]


def pushes(output: Path) -> list[dict[str, Any]]:
    """The pushes ``status`` knows of (what ``--json`` shows under ``pushes``)."""
    found: list[dict[str, Any]] = read_status(output).get("pushes", [])
    return found


def pushed_some(output: Path) -> bool:
    found = pushes(output)
    return bool(found) and found[0]["running"] and found[0]["pushed"] >= 2


@pytest.mark.slow
def test_status_shows_a_running_push_with_its_counts_then_its_end(
    classified: Path, make_server: MakeServer, cli: Cli
) -> None:
    output = classified
    before = cli("status", output, "--json")
    assert before.code == 0 and "pushes" not in json.loads(before.out)  # never pushed
    assert "push" not in cli("status", output).out

    target = make_server(latency=0.25)  # 30 images × 2 requests at -c 2: several seconds
    job = start_cli(push_args(output, target))
    try:
        wait_for_job(lambda: pushed_some(output), job)
        result = cli("status", output, "--json")
        assert result.code == 0, result.err
        status = json.loads(result.out)
        assert status["state"] == "finished"  # the run that made the output
        (push,) = status["pushes"]
        assert (push["command"], push["state"], push["running"]) == ("push", "running", True)
        assert push["summary"] == "running" and push["stage"] == "pushing"
        assert (push["pid"], push["host"]) == (job.pid, socket.gethostname())
        assert (push["project"], push["api_url"]) == ("pets", target.url)
        assert push["ledger"] == str(ledger_path(output, "pets", target.url))
        assert push["progress_file"] == str(push_progress_path(output, "pets", target.url))
        assert push["selected"] == push["total"] == IMAGES and push["already_done"] == 0
        assert push["pushed"] + push["failed"] + push["remaining"] == IMAGES
        assert push["uploaded"] >= push["annotated"] >= push["pushed"] >= 2
        assert set(push["in_flight"]) == {"upload", "annotate"}
        assert push["started"] and push["elapsed_s"] >= 0 and push["requests_per_s"] is not None
        text = cli("status", output).out
        assert f"push to project pets at {target.url}: running" in text
        assert f"process {job.pid}" in text and f"{IMAGES} selected" in text
        assert "images/s" in text and "in flight" in text
        assert (
            KEY
            not in result.out + text + push_progress_path(output, "pets", target.url).read_text()
        )
        assert job.wait(timeout=120) == 0
    finally:
        job.kill()
        job.communicate()

    (push,) = pushes(output)
    assert (push["state"], push["running"], push["summary"]) == ("finished", False, "finished")
    assert (push["pushed"], push["annotated"], push["failed"], push["remaining"]) == (
        IMAGES,
        IMAGES,
        0,
        0,
    )
    text = cli("status", output).out
    assert f"push to project pets at {target.url}: finished" in text and "ran for" in text
    assert "in flight" not in text
    assert cli("status", output, "--watch").out.count("push to project") == 1  # ended: once

    # A rerun finds everything done in the ledger: skipped, nothing sent.
    again = cli(*push_args(output, target))
    assert again.code == 0, again.err
    (push,) = pushes(output)
    assert (push["state"], push["already_done"], push["pushed"], push["remaining"]) == (
        "finished",
        IMAGES,
        0,
        0,
    )
    assert f"{IMAGES} done by an earlier push (ledger)" in cli("status", output).out


@pytest.mark.slow
def test_status_after_a_push_is_killed_says_rerun_push(
    classified: Path, make_server: MakeServer, cli: Cli
) -> None:
    output = classified
    target = make_server(latency=0.25)
    job = start_cli(push_args(output, target))
    try:
        wait_for_job(lambda: pushed_some(output), job)
    finally:
        os.kill(job.pid, signal.SIGKILL)
        job.communicate()
    result = cli("status", output)
    assert result.code == 0, result.err
    assert f"push to project pets at {target.url}: {PUSH_KILLED}" in result.out
    assert "(as of its last update)" in result.out
    status = json.loads(cli("status", output, "--json").out)
    (push,) = status["pushes"]
    assert (push["state"], push["running"], push["summary"]) == ("running", False, PUSH_KILLED)
    assert status["summary"] == "finished"  # the run is not what was killed
    # The ledger has what the progress file, up to 2 s behind, may lack; never more than
    # the server received.
    counted, log = push["ledger_counts"], target.stats.dataset
    assert push["annotated"] <= counted["annotated"] <= len(log.annotations)
    assert push["uploaded"] <= counted["uploaded"] <= len(log.uploads)
    assert counted["failed"] == 0
    assert f"its ledger: {counted['uploaded']} uploaded" in result.out
    # `--watch` does not wait for a killed push.
    assert cli("status", output, "--watch").out.count(PUSH_KILLED) == 1

    rerun = cli(*push_args(output, target))
    assert rerun.code == 0, rerun.err
    (push,) = pushes(output)
    assert push["summary"] == "finished" and push["remaining"] == 0
    assert push["already_done"] + push["pushed"] == IMAGES and push["already_done"] >= 2


# -- the file itself, on a fake clock ---------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _writer(output: Path, summary: PushSummary, clock: _Clock) -> PushProgressFile:
    return PushProgressFile(
        output,
        summary,
        project="pets",
        api_url="http://127.0.0.1:1",
        ledger=ledger_path(output, "pets", "http://127.0.0.1:1"),
        secret=KEY,
        live=lambda: {"stage": "pushing", "in_flight": {"upload": 1, "annotate": 0}},
        clock=clock,
        wall=clock,
    )


def _shown(summary: PushSummary, *, finished: bool = False) -> Progress:
    """As the pusher shows it: the whole selection is known from the start."""
    return Progress(
        already_done=summary.done_before, ok=summary.pushed, failed=summary.failed,
        retries=summary.retries, total=summary.selected, total_is_exact=True,
        found=summary.selected, waiting=None, finished=finished,
    )  # fmt: skip


def test_push_progress_file_rates_eta_end_state_and_no_key(tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    summary = PushSummary(selected=100, done_before=20)
    clock = _Clock()
    writer = _writer(output, summary, clock)
    writer.progress(_shown(summary))
    clock.now += 10
    summary.pushed, summary.failed, summary.uploaded, summary.annotated = 16, 4, 20, 16
    summary.requests = 40
    writer.note(f"the API answered 503 for https://api/x?api_key={KEY}")
    writer.progress(_shown(summary))
    text = writer.path.read_text()
    assert KEY not in text and "api_key=***" in text
    found = orjson.loads(text)
    assert (found["selected"], found["already_done"], found["remaining"]) == (100, 20, 60)
    assert found["images_per_s"] == 2.0 and found["eta_s"] == 30
    assert found["requests_per_s"] == 4.0
    assert found["stage"] == "pushing" and found["in_flight"] == {"upload": 1, "annotate": 0}
    summary.interrupted = True
    writer.progress(_shown(summary, finished=True))
    assert orjson.loads(writer.path.read_text())["state"] == "interrupted"
    assert writer.path == push_progress_path(output, "pets", "http://127.0.0.1:1")
    assert writer.path.name.startswith("out.jsonl.push-pets-")
    assert writer.path.name.endswith(".progress.json")


def test_a_push_and_a_run_never_take_each_others_progress_file(tmp_path: Path) -> None:
    """Outputs ``a`` and ``a.push-pets-…``: the run progress file of the second has the name of
    a push progress file of the first. Neither writer replaces the other's, nor reads it."""
    output = tmp_path / "a"
    summary = PushSummary(selected=3)
    clock = _Clock()
    push_file = push_progress_path(output, "pets", "http://127.0.0.1:1")
    other_output = push_file.with_name(push_file.name.removesuffix(".progress.json"))
    assert progress_path(other_output) == push_file

    run = ProgressFile(other_output, JobSummary(output=other_output), live=dict)
    nothing = Progress(
        already_done=0, ok=0, failed=0, retries=0, total=None, total_is_exact=False, found=0,
        waiting=None,
    )  # fmt: skip
    run.progress(nothing)
    run.progress(replace(nothing, finished=True))
    written = push_file.read_bytes()
    writer = _writer(output, summary, clock)
    writer.progress(_shown(summary))
    writer.progress(_shown(summary, finished=True))
    assert push_file.read_bytes() == written  # the run's, untouched
    assert push_statuses(output) == []  # a run's file is no push

    push_file.unlink()
    writer = _writer(output, summary, clock)
    writer.progress(_shown(summary))
    pushed = push_file.read_bytes()
    run = ProgressFile(other_output, JobSummary(output=other_output), live=dict)
    run.progress(nothing)
    assert push_file.read_bytes() == pushed  # the push's, untouched
    assert read_progress(other_output) is None  # and no run's
    assert [found["project"] for found in push_statuses(output)] == ["pets"]


def test_a_file_not_of_this_tool_is_never_replaced(tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    path = push_progress_path(output, "pets", "http://127.0.0.1:1")
    path.write_text('{"mine": true}\n')
    summary = PushSummary(selected=1)
    writer = _writer(output, summary, _Clock())
    writer.progress(_shown(summary))
    writer.progress(_shown(summary, finished=True))
    assert path.read_text() == '{"mine": true}\n'
