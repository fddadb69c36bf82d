"""The worker's attempt policy (attempts.py) on a fake clock: when an item retries, waits,
gives up with an error row, or stops the job. No sockets, no sleeping."""

from __future__ import annotations

import random

import pytest

from batchclassify.api.retry import Backoff
from batchclassify.config import RetryConfig
from batchclassify.error_types import ErrorType
from batchclassify.errors import RetryableError
from batchclassify.job.attempts import AttemptPolicy, Attempts, GiveUp, Send, StopJob, Wait
from batchclassify.job.health import HealthMonitor
from batchclassify.job.ratelimit import RateController


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _policy(
    clock: FakeClock,
    *,
    attempts: int = 3,
    max_elapsed: float = 600.0,
    max_outage: float = 100.0,
) -> AttemptPolicy:
    retry = RetryConfig(
        retries=attempts - 1, max_elapsed=max_elapsed, backoff_base=0.5, backoff_max=4.0
    )
    health = HealthMonitor(max_outage=max_outage, outage_after=5, probe_initial=2, clock=clock)
    rate = RateController(clock=clock)
    return AttemptPolicy(
        retry, health=health, rate=rate, backoff=Backoff(retry, rng=random.Random(3)), clock=clock
    )


def _server_error() -> RetryableError:
    return RetryableError("HTTP 500: Internal error.", kind=ErrorType.SERVER_ERROR, http_status=500)


def _rate_limited(retry_after: float | None = None) -> RetryableError:
    return RetryableError(
        "HTTP 429: slow down", kind=ErrorType.RATE_LIMITED, http_status=429, retry_after=retry_after
    )


def _connection() -> RetryableError:
    return RetryableError("cannot connect to api: refused", kind=ErrorType.CONNECTION)


def _fail(attempts: Attempts, error: RetryableError, clock: FakeClock) -> Wait | GiveUp:
    assert isinstance(attempts.next_request(), Send)
    started = attempts.sending()
    clock.now += 0.1
    return attempts.failed(error, started)


def test_an_item_failing_alone_retries_with_backoff_then_gives_up_with_its_error() -> None:
    clock = FakeClock()
    attempts = _policy(clock, attempts=3).start("a.jpg")
    first, second = _fail(attempts, _server_error(), clock), _fail(attempts, _server_error(), clock)
    assert isinstance(first, Wait) and 0 <= first.seconds <= 0.5  # backoff_base
    assert isinstance(second, Wait) and 0 <= second.seconds <= 1.0  # doubled ceiling
    decision = _fail(attempts, _server_error(), clock)
    assert isinstance(decision, GiveUp)
    assert decision.requests == 3 == attempts.requests
    assert decision.error.http_status == 500
    assert decision.message == "HTTP 500: Internal error. (gave up after 3 requests)"


def test_one_attempt_gives_up_after_one_request() -> None:
    clock = FakeClock()
    decision = _fail(_policy(clock, attempts=1).start("a.jpg"), _server_error(), clock)
    assert isinstance(decision, GiveUp)
    assert decision.message.endswith("(gave up after 1 request)")


def test_retry_after_is_the_wait_instead_of_backoff() -> None:
    clock = FakeClock()
    error = RetryableError("HTTP 503: loading", kind=ErrorType.SERVER_ERROR, http_status=503)
    error.retry_after = 7.0
    decision = _fail(_policy(clock).start("a.jpg"), error, clock)
    assert decision == Wait(7.0)


def test_429s_do_not_count_against_the_item_and_pause_every_new_request() -> None:
    clock = FakeClock()
    policy = _policy(clock, attempts=2)
    attempts = policy.start("a.jpg")
    for _ in range(10):
        decision = _fail(attempts, _rate_limited(retry_after=3.0), clock)
        assert decision == Wait(3.0)
    # The rate controller heard of each 429: new requests wait for the Retry-After.
    assert policy.rate.rate_limited_count == 10
    assert policy.rate.try_acquire() == pytest.approx(3.0)
    clock.now += 3.0
    assert isinstance(_fail(attempts, _server_error(), clock), Wait)
    decision = _fail(attempts, _server_error(), clock)
    assert isinstance(decision, GiveUp) and decision.requests == 12


def test_no_give_up_while_other_items_fail_too_and_nothing_was_answered() -> None:
    """An outage starting: other items fail and nothing sent since this item first failed was
    answered, so its spent budget does not turn it into an error row yet."""
    clock = FakeClock()
    policy = _policy(clock, attempts=2)
    mine, other = policy.start("a.jpg"), policy.start("b.jpg")
    assert isinstance(_fail(mine, _connection(), clock), Wait)
    assert isinstance(_fail(other, _connection(), clock), Wait)
    # Budget spent, but the API may be going down for everyone: keep waiting.
    assert isinstance(_fail(mine, _connection(), clock), Wait)
    assert isinstance(_fail(mine, _connection(), clock), Wait)
    # A request sent after this item's first failure is answered, and an answer came after
    # its latest request went out: the API works for others.
    policy.health.success(started=clock.now - 0.05)
    decision = _fail(mine, _connection(), clock)
    assert isinstance(decision, GiveUp) and decision.requests == 4 == mine.requests
    assert decision.message == "cannot connect to api: refused (gave up after 4 requests)"


def _outage(policy: AttemptPolicy, clock: FakeClock) -> tuple[Attempts, Attempts]:
    """Two items, each failed twice, then failures only for longer than ``outage_after``:
    the API is down. Returns the two items' attempts."""
    mine, other = policy.start("a.jpg"), policy.start("b.jpg")
    for _ in range(2):
        _fail(mine, _connection(), clock)
        _fail(other, _connection(), clock)
    clock.now += 6
    _fail(other, _connection(), clock)
    assert policy.health.is_down
    return mine, other


def test_attempts_during_an_outage_and_before_it_was_declared_do_not_count() -> None:
    clock = FakeClock()
    policy = _policy(clock, attempts=2)
    mine, _ = _outage(policy, clock)
    for _ in range(20):  # probes failing during the outage: none counts
        assert isinstance(_fail(mine, _connection(), clock), Wait)
    clock.now += 1
    policy.health.success()  # the API is back
    assert not policy.health.is_down
    # The two failures before the outage was declared were its lead-in: counted back too.
    # Its whole budget is left: two failures of its own, after the outage, to give up.
    clock.now += 1
    assert isinstance(_fail(mine, _server_error(), clock), Wait)
    decision = _fail(mine, _server_error(), clock)
    assert isinstance(decision, GiveUp) and decision.requests == 24


def test_an_outages_first_seconds_cost_no_item_its_retries() -> None:
    """Issue 19: a server failing now and then, then down. An item that failed once on its
    own, then spent its budget in the seconds before the outage was declared, neither gives
    up then nor afterwards: those failures were the outage's, judged after the fact."""
    clock = FakeClock()
    policy = _policy(clock, attempts=3)
    health = policy.health
    mine, other = policy.start("a.jpg"), policy.start("b.jpg")
    assert isinstance(_fail(mine, _server_error(), clock), Wait)  # its own failure: counts
    clock.now += 1
    health.success(started=clock.now - 0.1)  # others are answered
    clock.now += 0.5  # the API goes down: only failures from here on
    assert isinstance(_fail(mine, _connection(), clock), Wait)
    assert isinstance(_fail(other, _connection(), clock), Wait)
    clock.now += 1
    # Budget spent (3 failures), but nothing answered since its latest request went out
    # and another item fails too: it is sent again, not given up on.
    assert isinstance(_fail(mine, _connection(), clock), Wait)
    clock.now += 1
    assert isinstance(_fail(mine, _connection(), clock), Wait)
    clock.now += 3
    assert isinstance(_fail(other, _connection(), clock), Wait)
    assert health.is_down  # declared: its lead-in (from the latest answer) is counted back
    for _ in range(5):  # probes during the outage
        assert isinstance(_fail(mine, _connection(), clock), Wait)
        clock.now += 2
    health.success()  # back
    clock.now += 1
    # One failure of its own before the outage; two more allowed, the third gives up.
    assert isinstance(_fail(mine, _server_error(), clock), Wait)
    health.success(started=clock.now)
    decision = _fail(mine, _server_error(), clock)
    assert isinstance(decision, GiveUp) and decision.requests == 11


def test_the_time_budget_gives_up_before_the_attempts_run_out() -> None:
    clock = FakeClock()
    attempts = _policy(clock, attempts=100, max_elapsed=30.0).start("a.jpg")
    assert isinstance(_fail(attempts, _server_error(), clock), Wait)
    clock.now += 30.0
    decision = _fail(attempts, _server_error(), clock)
    assert isinstance(decision, GiveUp) and decision.requests == 2


def test_an_api_down_past_max_outage_stops_the_job_and_leaves_the_item() -> None:
    clock = FakeClock()
    policy = _policy(clock, max_outage=60.0)
    mine, _ = _outage(policy, clock)
    assert isinstance(mine.next_request(), Send)
    clock.now += 61.0
    decision = mine.next_request()
    assert isinstance(decision, StopJob)
    assert "unavailable for 60 s" in decision.reason and "rerun" in decision.reason


def test_a_copy_that_fails_tells_the_monitors_without_counting_for_the_item() -> None:
    clock = FakeClock()
    policy = _policy(clock, attempts=1)
    attempts = policy.start("a.jpg")
    policy.note_failure(_rate_limited(retry_after=5.0), "a.jpg", started=clock.now)
    assert policy.rate.try_acquire() == pytest.approx(5.0)
    assert attempts.requests == 0


def test_a_failure_on_a_server_taken_out_is_retried_at_once_and_does_not_count() -> None:
    # Several servers (fleet.py): the server failed and is out, another is in.
    clock = FakeClock()
    policy = _policy(clock, attempts=1)
    attempts, other = policy.start("a.jpg"), policy.start("b.jpg")
    for _ in range(5):
        for item in (attempts, other):
            moved = _connection()
            moved.server_out = True
            assert _fail(item, moved, clock) == Wait(0.0)
            clock.now += 2
    # Nor is it an outage, however long it goes on: the fleet routed around it.
    assert not policy.health.is_down
    # The item's own budget is untouched: its first counted failure is its one attempt.
    decision = _fail(attempts, _server_error(), clock)
    assert isinstance(decision, GiveUp) and decision.requests == 6


def test_a_server_out_failure_past_the_time_budget_is_not_retried_for_ever() -> None:
    clock = FakeClock()
    attempts = _policy(clock, attempts=1, max_elapsed=10).start("a.jpg")
    clock.now += 20
    moved = _server_error()
    moved.server_out = True
    assert isinstance(_fail(attempts, moved, clock), GiveUp)
