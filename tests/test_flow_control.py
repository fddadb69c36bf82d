"""Rate control, backoff, Retry-After and the id index, driven by a fake clock (no sleeping)."""

from __future__ import annotations

import random

import anyio
import pytest

from batchclassify.api.retry import Backoff, parse_retry_after
from batchclassify.config import RetryConfig
from batchclassify.error_types import ErrorType
from batchclassify.errors import RetryableError
from batchclassify.job.health import HealthMonitor
from batchclassify.job.ratelimit import RateController
from batchclassify.output.idindex import IdIndex


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def _acquire_many(controller: RateController, count: int, clock: FakeClock) -> list[float]:
    starts: list[float] = []

    async def main() -> None:
        for _ in range(count):
            await controller.acquire()
            starts.append(clock.now)
            controller.on_success(clock.now)  # a server that answers at once

    anyio.run(main)
    return starts


def test_fixed_rate_never_exceeds_the_limit_in_any_one_second_window() -> None:
    clock = FakeClock()
    controller = RateController(rate=20, clock=clock, sleep=clock.sleep)
    starts = _acquire_many(controller, 200, clock)
    for i, start in enumerate(starts):
        in_window = [s for s in starts[i:] if s < start + 1.0]
        assert len(in_window) <= 20
    # and it is not slower than asked: 200 requests at 20/s take just under 10 s
    assert starts[-1] - starts[0] == pytest.approx(199 / 20, rel=0.002)


def test_idle_time_is_not_banked_into_a_burst() -> None:
    clock = FakeClock()
    controller = RateController(rate=10, clock=clock, sleep=clock.sleep)
    _acquire_many(controller, 1, clock)
    clock.now += 60
    starts = _acquire_many(controller, 5, clock)
    assert starts[-1] - starts[0] == pytest.approx(0.4, rel=0.002)


def test_retry_after_pauses_every_new_request() -> None:
    clock = FakeClock()
    controller = RateController(rate=None, adaptive=False, clock=clock, sleep=clock.sleep)
    controller.on_rate_limited(retry_after=7.0)
    starts = _acquire_many(controller, 3, clock)
    assert starts == [1007.0, 1007.0, 1007.0]


def test_adaptive_rate_settles_near_the_servers_limit_with_few_429s() -> None:
    """Simulate a server allowing 20 req/s (one-second window) and a client with no limit."""
    clock = FakeClock()
    controller = RateController(rate=None, adaptive=True, clock=clock, sleep=clock.sleep)
    accepted: list[float] = []
    rejected = 0
    total = 0

    async def main() -> None:
        nonlocal rejected, total
        end = clock.now + 300
        while clock.now < end:
            await controller.acquire()
            total += 1
            recent = [t for t in accepted[-40:] if t > clock.now - 1.0]
            if len(recent) >= 20:
                rejected += 1
                controller.on_rate_limited(retry_after=1.0)
            else:
                accepted.append(clock.now)
                controller.on_success()
            clock.now += 0.001  # a fast server: the client is the only brake

    anyio.run(main)
    steady = [t for t in accepted if t > accepted[0] + 30]
    achieved = len(steady) / (steady[-1] - steady[0])
    assert achieved >= 0.9 * 20, achieved
    assert rejected / total < 0.05, (rejected, total)


def test_backoff_is_full_jitter_and_capped() -> None:
    backoff = Backoff(RetryConfig(backoff_base=0.5, backoff_max=4.0), rng=random.Random(1))
    delays = [backoff.delay(n) for n in range(1, 12) for _ in range(50)]
    assert all(0 <= d <= 4.0 for d in delays)
    assert max(backoff.delay(1) for _ in range(200)) <= 0.5
    assert max(delays) > 3.0  # grows exponentially up to the cap


def test_retry_after_parsing() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after("999999") == 600.0  # MAX_RETRY_AFTER
    http_date = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert parse_retry_after(http_date, now=lambda: 1445412470.0) == pytest.approx(10.0)


def test_outage_monitor_pauses_then_releases_on_success() -> None:
    clock = FakeClock()
    notes: list[str | None] = []
    monitor = HealthMonitor(
        max_outage=100, outage_after=5, probe_initial=2, clock=clock, notify=notes.append
    )
    failure = RetryableError("cannot connect", kind=ErrorType.CONNECTION)
    for _ in range(3):
        monitor.failure(failure)
    assert not monitor.is_down  # failures alone are not an outage until time has passed
    clock.now += 6
    monitor.failure(failure)
    assert monitor.is_down
    assert notes[-1] is not None and "API unavailable, retrying in 2 s" in notes[-1]
    monitor.failure(RetryableError("slow down", kind=ErrorType.RATE_LIMITED, http_status=429))
    clock.now += 95
    assert not monitor.gave_up
    monitor.success()
    assert not monitor.is_down and notes[-1] is None
    for _ in range(3):
        monitor.failure(failure)
    clock.now += 6
    monitor.failure(failure)
    clock.now += 101
    assert monitor.gave_up


def test_id_index_tags_and_grows() -> None:
    index = IdIndex(capacity=4)
    for n in range(50_000):
        assert index.set(f"images/{n}.jpg", 1 + n % 3) == 0
    assert len(index) == 50_000
    assert index.get("images/7.jpg") == 2
    assert index.get("images/none.jpg") == 0
    assert index.set("images/7.jpg", 4) == 2
    assert index.get("images/7.jpg") == 4
    assert index.nbytes < 50_000 * 30  # compact: a few bytes per id, not a set of strings
