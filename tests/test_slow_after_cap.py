"""``slow_after`` is capped at a multiple of the median answer (issue 25): a moment when the
machine was busy delays a few answers by seconds, which sets the 99th percentile, yet a hung
request must not hold its worker that long. The policy fed latencies, the watchdog on a fake
clock."""

from __future__ import annotations

import anyio
import pytest

from batchclassify.job.health import Watchdog
from batchclassify.job.hedging import HedgePolicy

from .test_flow_control import FakeClock


def _spiked(policy: HedgePolicy) -> None:
    """A window of 50 ms answers, 2% of them held 3 s by a busy machine."""
    for n in range(HedgePolicy.window):
        policy.record(3.0 if n % 50 == 0 else 0.05)


def test_a_load_spike_does_not_raise_slow_after_past_a_multiple_of_the_median() -> None:
    policy = HedgePolicy(timeout=60)
    _spiked(policy)
    assert policy.slow_after == pytest.approx(HedgePolicy.slow_cap * 0.05)  # 0.4 s, not 3 s
    # A paid copy still waits on the quantile itself: the spike's answers did come.
    assert policy.deadline == pytest.approx(HedgePolicy.factor * 3.0)


def test_the_cap_leaves_a_normal_tail_and_the_floor_alone() -> None:
    tail = HedgePolicy(timeout=60)
    for n in range(HedgePolicy.window):
        tail.record(1.0 if n % 100 == 0 else 0.3)  # p99 1 s: under 8 × the median
    assert tail.slow_after == pytest.approx(1.0)
    fast = HedgePolicy(timeout=60)
    for _ in range(HedgePolicy.window):
        fast.record(0.001)
    assert fast.slow_after == HedgePolicy.floor


def test_a_hung_request_frees_its_place_at_the_capped_slow_after() -> None:
    """On a fake clock: after the spike, a request hung for 0.5 s is reported to its handler
    (a spare worker takes its place), not at 3 s."""
    clock = FakeClock()
    policy = HedgePolicy(timeout=60)
    _spiked(policy)
    dog = Watchdog(stall_after=180, clock=clock, overdue_after=lambda: policy.slow_after)
    freed: list[float] = []

    def overdue() -> bool:
        freed.append(clock.now - started)
        return True

    async def main() -> None:
        async with dog.watch(started, overdue):
            for _ in range(30):
                clock.now += 0.1
                slow_after = policy.slow_after
                assert slow_after is not None
                dog.check_overdue(clock.now, slow_after)

    started = clock.now
    anyio.run(main)
    assert len(freed) == 1 and freed[0] == pytest.approx(0.4, abs=0.11)

