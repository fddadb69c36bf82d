"""Hung requests (issue 9): a request the server never answers stops holding its worker's place
and is sent again within a budget; the policy on a fake clock, the job against the server
(the job's exact copies and deadlines on virtual time: test_flow_on_virtual_time.py)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from PIL import Image

from batchclassify.job.health import Watchdog
from batchclassify.job.hedging import HedgePolicy
from batchclassify.server.faults import Fault

from .conftest import COLORS, CliResult, MakeServer, make_images, read_rows, run_args
from .test_flow_control import FakeClock

# -- the policy -----------------------------------------------------------------------------


def test_no_deadline_until_enough_answers_then_a_multiple_of_a_high_quantile() -> None:
    policy = HedgePolicy(timeout=60)
    for _ in range(HedgePolicy.min_samples - 1):
        policy.record(0.4)
    assert policy.deadline is None  # too few answers to tell a hang from a slow server
    policy.record(0.4)
    assert policy.deadline == pytest.approx(HedgePolicy.factor * 0.4)
    # Slower answers raise it at the next refresh: 1% of them at 2 s set the 99th percentile.
    for n in range(5 * HedgePolicy.window):
        policy.record(2.0 if n % 50 == 0 else 0.4)
    assert policy.deadline == pytest.approx(HedgePolicy.factor * 2.0)


def test_requests_answered_by_copies_neither_lower_nor_raise_the_deadline() -> None:
    """A request answered by its copy has no latency of its own. Dropping it would lower the
    quantile (more copies, lower still); counting its wait would raise it (fewer, higher)."""
    policy = HedgePolicy(timeout=60)
    for n in range(HedgePolicy.window):
        policy.record(4.0 if n % 200 == 0 else 1.0)  # 0.5% stragglers at 4 s
    steady = policy.deadline
    assert steady == pytest.approx(HedgePolicy.factor * 1.0)
    # Stragglers past the deadline now answered by copies: the same deadline, not a lower one.
    for n in range(5 * HedgePolicy.window):
        if n % 200 == 0:
            policy.record_censored()
        else:
            policy.record(1.0)
    assert policy.deadline == steady
    # 1% of requests hanging, answered by copies: the quantile is unknown; the deadline stays.
    for n in range(5 * HedgePolicy.window):
        if n % 50 == 0:
            policy.record_censored()
        else:
            policy.record(1.0)
    assert policy.deadline == steady


def test_deadline_has_a_floor_and_is_dropped_when_not_shorter_than_the_timeout() -> None:
    fast = HedgePolicy(timeout=60)
    for _ in range(100):
        fast.record(0.01)
    assert fast.deadline == HedgePolicy.floor  # a 30 ms hiccup of the event loop is no hang
    slow = HedgePolicy(timeout=10)
    for _ in range(100):
        slow.record(5.0)
    assert slow.deadline is None  # 10 s: the 10 s timeout comes first anyway
    assert slow.slow_after == 5.0  # yet a slow request still stops holding its place


def test_copies_stay_within_two_percent_of_requests() -> None:
    policy = HedgePolicy(timeout=60)
    granted = 0
    for _ in range(10_000):
        policy.sent()
        granted += policy.try_copy()  # every request stuck: the worst case
    assert granted <= 0.02 * 10_000 + HedgePolicy.budget_initial
    assert granted >= 0.02 * 10_000 - 1
    assert policy.copies == granted and policy.refused == 10_000 - granted


def test_watchdog_calls_overdue_requests_oldest_first_until_they_are_handled() -> None:
    """On a fake clock: a request past the deadline is reported; one whose handler says "not
    yet" (no budget) is reported again at the next check; younger ones are not."""
    clock = FakeClock()
    dog = Watchdog(stall_after=100, clock=clock, overdue_after=lambda: 1.0)
    calls: list[str] = []
    answers = {"old": [False, True], "mid": [True]}

    def handler(name: str) -> Callable[[], bool]:
        def overdue() -> bool:
            calls.append(name)
            return answers[name].pop(0)

        return overdue

    async def main() -> None:
        now = clock.now
        async with (
            dog.watch(now - 5, handler("old")),
            dog.watch(now - 2, handler("mid")),
            dog.watch(now - 0.5, handler("young")),
        ):
            for _ in range(3):
                dog.check_overdue(clock.now, 1.0)

    anyio.run(main)
    assert calls == ["old", "mid", "old"]


# -- the job against the server -------------------------------------------------------------


def _odd_image(path: Path) -> bytes:
    """An image whose bytes differ from ``make_images``' ones, so a fault can target it."""
    buffer = io.BytesIO()
    Image.new("RGB", (9, 7), COLORS["blue"]).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def test_a_hung_request_is_sent_again_and_the_job_does_not_wait_for_the_timeout(
    tmp_path: Path, make_server: MakeServer, cli: Callable[..., CliResult]
) -> None:
    server = make_server(latency=0.02, history_size=1000)
    make_images(tmp_path / "in", 60)
    hung = _odd_image(tmp_path / "in" / "00030-odd.png")
    server.fail_image(hung, Fault(action="hang"), times=1)  # only the first request for it
    output = tmp_path / "out.jsonl"

    result = cli(*run_args(server, output, tmp_path / "in"), "-c", "4", "--timeout", "30")

    assert result.code == 0, result.err
    rows = {row["id"]: row for row in read_rows(output)}
    assert len(rows) == 61 and all(row["status"] == "ok" for row in rows.values())
    odd = next(row for row in rows.values() if row["path"].endswith("00030-odd.png"))
    assert odd["top"] == "blue" and odd["attempts"] >= 2  # the original and its copy
    assert server.stats.hangs == 1
    # A busy machine may make another request look stuck too: at least the one copy, and
    # the summary counts what the server saw. (Exactly one copy: on virtual time.)
    hedged = int(result.err.split(" hedged")[0].rsplit(" ", 1)[1])
    assert hedged >= 1 and server.stats.requests == 61 + hedged
    elapsed = float(result.err.split(" images in ")[1].split(" s")[0])
    assert elapsed < 30  # before: the hung request held the job for its whole --timeout
