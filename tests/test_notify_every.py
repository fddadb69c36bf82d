"""``--notify-every PERCENT``: a signed progress call per threshold passed, then the end call.

End to end against the local server and a local receiver (``test_notify.Receiver``: it checks
each call's HMAC as a real receiver would); the threshold rule and the one-call-in-flight
sender in memory, fed snapshots by hand.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from batchclassify.commands.progresscalls import ProgressCalls, Thresholds
from batchclassify.summary import Progress

from .conftest import KEY, Cli, MakeServer, make_images, read_rows, run_args
from .test_notify import SECRET, Receiver


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    monkeypatch.setenv("BATCHCLASSIFY_NOTIFY_SECRET", SECRET)
    running = Receiver()
    yield running
    running.stop()


def _slow_args(make_server: MakeServer, output: Path, folder: Path) -> list[str]:
    # Some latency and two workers: ten rows take a good while longer than a local POST, so
    # no call waits for the one before it (which would coalesce them).
    server = make_server(latency=0.03)
    return [*run_args(server, output, folder), "-c", "2"]


def test_progress_calls_at_each_threshold_then_the_end_call(
    tmp_path: Path, make_server: MakeServer, cli: Cli, receiver: Receiver
) -> None:
    make_images(tmp_path / "in", 40)
    args = _slow_args(make_server, tmp_path / "out.jsonl", tmp_path / "in")
    result = cli(*args, "--notify", receiver.url, "--notify-every", "25")

    assert result.code == 0, result.err
    events = [call["event"] for call in receiver.calls]
    assert events == ["batchclassify.job.progress"] * 3 + ["batchclassify.job.ended"]
    assert receiver.valid == [True] * 4
    assert all(KEY.encode() not in body for body in receiver.bodies)
    progress = receiver.calls[:3]
    assert [call["threshold"] for call in progress] == [25, 50, 75]
    assert [call["done"] for call in progress] == [10, 20, 30]
    assert [call["percent"] for call in progress] == [25, 50, 75]
    for call in progress:
        assert call["state"] == "running" and call["total"] == 40
        assert call["counts"]["ok"] == call["done"] and call["counts"]["failed"] == 0
        assert call["credits"]["billing"] == "self-hosted"
        assert call["credits"]["spent"] == pytest.approx(call["done"] / 3000, abs=1e-6)
        assert call["images_per_s"] is None or call["images_per_s"] > 0
    end = receiver.calls[3]
    assert end["state"] == "ok" and end["counts"]["ok"] == 40  # the end call, as before
    assert "progress calls could not be sent" not in result.err


def test_a_resumed_run_calls_only_the_thresholds_above_where_it_started(
    tmp_path: Path, make_server: MakeServer, cli: Cli, receiver: Receiver
) -> None:
    """20 of 40 done by an earlier run: 50% at the start, so 25% and 50% are never called."""
    make_images(tmp_path / "in", 20)
    output = tmp_path / "out.jsonl"
    args = _slow_args(make_server, output, tmp_path / "in")
    assert cli(*args).code == 0
    make_images(tmp_path / "in", 40)  # the same 20, and 20 more
    result = cli(*args, "--notify", receiver.url, "--notify-every", "25")

    assert result.code == 0, result.err
    progress = [call for call in receiver.calls if call["event"] == "batchclassify.job.progress"]
    assert [(call["threshold"], call["done"]) for call in progress] == [(75, 30)]
    assert progress[0]["counts"]["already_done"] == 20
    assert receiver.calls[-1]["event"] == "batchclassify.job.ended"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--notify-every", "10"], "--notify-every: needs --notify URL"),
        (["--notify", "http://127.0.0.1:9/hook", "--notify-every", "0"], "between 0 and 100"),
        (["--notify", "http://127.0.0.1:9/hook", "--notify-every", "100"], "between 0 and 100"),
        (["--notify", "http://127.0.0.1:9/hook", "--notify-every", "-5"], "between 0 and 100"),
    ],
)
def test_notify_every_without_notify_or_out_of_range_is_a_usage_error(
    tmp_path: Path, make_server: MakeServer, cli: Cli, flags: list[str], message: str
) -> None:
    server = make_server()
    make_images(tmp_path / "in", 2)
    result = cli(*run_args(server, tmp_path / "out.jsonl", tmp_path / "in"), *flags)
    assert result.code == 2
    assert message in result.err and len(result.err.strip().splitlines()) == 1
    assert server.stats.requests == 0
    assert not (tmp_path / "out.jsonl").exists()


def test_a_receiver_that_is_down_changes_neither_rows_nor_exit_code(
    tmp_path: Path, make_server: MakeServer, cli: Cli, refusing_port: int
) -> None:
    make_images(tmp_path / "in", 40)
    url = f"http://127.0.0.1:{refusing_port}/hook"
    quiet = _slow_args(make_server, tmp_path / "quiet.jsonl", tmp_path / "in")
    told = _slow_args(make_server, tmp_path / "told.jsonl", tmp_path / "in")
    assert cli(*quiet).code == 0
    result = cli(*told, "--notify", url, "--notify-every", "25")

    assert result.code == 0, result.err
    rows = {row["id"]: row["top"] for row in read_rows(tmp_path / "told.jsonl")}
    assert rows == {row["id"]: row["top"] for row in read_rows(tmp_path / "quiet.jsonl")}
    assert len(rows) == 40
    assert result.err.count("progress calls could not be sent to") == 1  # said once
    assert f"notify: could not send the summary to {url}" in result.err


# -- in memory: the threshold rule and the sender --------------------------------------------


def _at(done: int, total: int | None, *, already_done: int = 0) -> Progress:
    return Progress(
        already_done=already_done,
        ok=done - already_done,
        failed=0,
        retries=0,
        total=total,
        total_is_exact=total is not None,
        found=done,
        waiting=None,
    )


def test_several_thresholds_passed_at_once_make_one_call_saying_where_the_job_is() -> None:
    rule = Thresholds(10)
    assert rule.crossed(done=5, total=100, already_done=0) is None
    assert rule.crossed(done=37, total=100, already_done=0) == 30  # 10, 20, 30: one call
    assert rule.crossed(done=39, total=100, already_done=0) is None
    assert rule.crossed(done=40, total=100, already_done=0) == 40


def test_100_percent_is_never_a_progress_call_and_thresholds_end_below_it() -> None:
    rule = Thresholds(30)
    calls = [rule.crossed(done=n, total=10, already_done=0) for n in range(11)]
    assert [call for call in calls if call is not None] == [30, 60, 90]
    rule = Thresholds(25)
    assert rule.crossed(done=10, total=10, already_done=0) is None  # 100%: the end call's


def test_no_call_while_the_total_is_unknown_then_one_for_what_was_passed() -> None:
    rule = Thresholds(25)
    assert rule.crossed(done=60, total=None, already_done=0) is None
    assert rule.crossed(done=61, total=100, already_done=0) == 50
    # The estimate grows (files added): the share falls back; 25 and 50 are not called again.
    assert rule.crossed(done=62, total=200, already_done=0) is None
    assert rule.crossed(done=150, total=200, already_done=0) == 75


def test_a_call_due_while_one_is_being_sent_waits_and_a_later_one_replaces_it() -> None:
    """Coalesced: the receiver hears the newest position, never a backlog; the job's
    listener never waits for the network."""
    sent: list[int] = []
    release = threading.Event()
    first_started, second_sent = threading.Event(), threading.Event()

    def send(body: bytes, closing: threading.Event) -> tuple[bool, str]:
        sent.append(orjson.loads(body)["done"])
        first_started.set()
        release.wait(30)
        if len(sent) == 2:
            second_sent.set()
        return True, "HTTP 200"

    calls = ProgressCalls(every=10, url="http://127.0.0.1:9/hook", output="out.jsonl", send=send)
    calls.progress(_at(0, 100))
    calls.progress(_at(10, 100))  # sent, and held by the receiver
    assert first_started.wait(30)
    calls.progress(_at(20, 100))  # waits
    calls.progress(_at(30, 100))  # replaces it
    release.set()
    assert second_sent.wait(30)
    assert calls.close() == []
    assert sent == [10, 30]


def test_at_the_end_the_waiting_call_is_dropped_and_failures_are_said_once() -> None:
    started = threading.Event()
    bodies: list[bytes] = []

    def send(body: bytes, closing: threading.Event) -> tuple[bool, str]:
        bodies.append(body)
        started.set()
        closing.wait(30)  # a receiver that never answers, until the job ends
        return False, "timed out"

    calls = ProgressCalls(
        every=25, url="http://127.0.0.1:9/hook?token=t0ken", output="o.jsonl", send=send
    )
    calls.progress(_at(0, 40))
    calls.progress(_at(10, 40))
    assert started.wait(30)
    calls.progress(_at(20, 40))  # waiting behind the stuck one: dropped at the end
    said = calls.close()
    assert len(bodies) == 1
    assert said == [
        "notify: 1 of 1 progress calls could not be sent to http://127.0.0.1:9/hook: timed out"
    ]
