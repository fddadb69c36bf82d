"""A fixed rate (``--rate-limit``) against a server that allows exactly that many requests in
any one second, on a simulated clock: timer lag must not add up, and requests that reach the
server late must not make it see one more than the limit in any second (issue 11)."""

from __future__ import annotations

import bisect
import heapq
import random
from collections.abc import Callable

import anyio

from batchclassify.job.ratelimit import RateController
from batchclassify.server.faults import longtail_latency


class Simulation:
    """A clock whose sleeps oversleep (timer lag) and a server that counts each request
    ``delay`` after it starts and answers ``answer`` after that, delivering the answers to
    the controller at their time."""

    def __init__(
        self,
        *,
        lag: Callable[[], float],
        delay: Callable[[int], float],
        answer: float | Callable[[], float] = 0.002,
        errors: bool = False,
    ) -> None:
        self.now = 1000.0
        self.lag = lag
        self.delay = delay
        self.answer = answer
        self.errors = errors  # every answer a 4xx/5xx about the image
        self.controller = RateController(rate=20, clock=self, sleep=self.sleep)
        self.starts: list[float] = []
        self.arrivals: list[float] = []
        self._answers: list[tuple[float, float]] = []  # (answered at, started at)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self._advance(self.now + seconds + self.lag())

    def _advance(self, until: float) -> None:
        while self._answers and self._answers[0][0] <= until:
            answered, started = heapq.heappop(self._answers)
            self.now = max(self.now, answered)
            if self.errors:
                self.controller.on_answer(started)
            else:
                self.controller.on_success(started)
        self.now = max(self.now, until)

    def run(self, count: int) -> None:
        async def main() -> None:
            for n in range(count):
                await self.controller.acquire()
                started = self.now
                self.starts.append(started)
                arrival = started + self.delay(n)
                self.arrivals.append(arrival)
                answer = self.answer() if callable(self.answer) else self.answer
                heapq.heappush(self._answers, (arrival + answer, started))
                self._advance(self.now + 0.0001)  # the worker's own work before the next

        anyio.run(main)

    def refused(self, limit: int = 20) -> int:
        """429s of a sliding-window server: a request refused when ``limit`` accepted ones
        arrived in the second before it (refusals do not count)."""
        accepted: list[float] = []
        refused = 0
        for arrival in sorted(self.arrivals):
            if len(accepted) - bisect.bisect_right(accepted, arrival - 1.0) >= limit:
                refused += 1
            else:
                accepted.append(arrival)
        return refused

    def rate(self) -> float:
        return (len(self.starts) - 1) / (self.starts[-1] - self.starts[0])


def most_in_one_second(times: list[float]) -> int:
    times = sorted(times)
    return max(i + 1 - bisect.bisect_right(times, t - 1.0) for i, t in enumerate(times))


def test_timer_lag_does_not_add_up() -> None:
    """Each wake-up 0-1.5 ms late (asyncio rounds a wait up to the millisecond): 2,000
    requests still come at 99% of the rate, never more than 20 in a second."""
    rng = random.Random(7)
    sim = Simulation(lag=lambda: rng.uniform(0.0, 0.0015), delay=lambda _: 0.001)
    sim.run(2000)
    assert sim.rate() >= 0.99 * 20, sim.rate()
    assert most_in_one_second(sim.starts) <= 20
    assert sim.refused() == 0


def test_requests_reaching_the_server_late_are_not_refused() -> None:
    """The first requests reach the server 90 ms after they start (fresh connections), and
    one in 20 later on 30 ms late (a busy event loop): the server sees at most 20 in any
    second, and the rate stays at 99%."""
    rng = random.Random(11)

    def delay(n: int) -> float:
        if n < 3:
            return 0.090
        return 0.030 if rng.random() < 0.05 else rng.uniform(0.0005, 0.002)

    sim = Simulation(lag=lambda: rng.uniform(0.0, 0.0015), delay=delay)
    sim.run(2000)
    assert sim.refused() == 0
    assert most_in_one_second(sim.arrivals) <= 20
    assert sim.rate() >= 0.99 * 20, sim.rate()


def test_slow_answers_cost_at_most_the_cap() -> None:
    """Answers 300 ms after arrival (a hosted model's inference) prove nothing about the
    arrival; they must not slow the job to 20 per 1.3 s. (The job's first second waits for
    its answers, up to 0.25 s, once: fresh connections.)"""
    rng = random.Random(3)
    sim = Simulation(lag=lambda: rng.uniform(0.0, 0.0015), delay=lambda _: 0.001, answer=0.3)
    sim.run(1000)
    steady = [t for t in sim.starts if t > sim.starts[0] + 3.0]
    assert (len(steady) - 1) / (steady[-1] - steady[0]) >= 0.98 * 20
    assert sim.starts[-1] - sim.starts[0] <= 999 / 20 / 0.98 + 0.25
    assert sim.refused() == 0


def test_hosted_like_latencies_keep_the_rate() -> None:
    """The local server's long-tail latencies (median 180 ms, p99 5.6 s, like the hosted
    API): 98% of the rate after the first seconds, as the controller without the sent
    window reached (98.4%, its timer lag)."""
    rng = random.Random(1)
    sim = Simulation(
        lag=lambda: rng.uniform(0.0, 0.0015),
        delay=lambda _: 0.001,
        answer=lambda: longtail_latency(rng),
    )
    sim.run(3000)
    steady = [t for t in sim.starts if t > sim.starts[0] + 3.0]
    assert (len(steady) - 1) / (steady[-1] - steady[0]) >= 0.98 * 20
    assert sim.refused() == 0


def test_requests_never_answered_still_leave_room() -> None:
    """Requests whose answer never comes (timeouts) count as arriving at most 50 ms late:
    the job goes on at 95% of the rate."""
    clock = Simulation(lag=lambda: 0.0, delay=lambda _: 0.001)
    controller = clock.controller

    async def main() -> None:
        for _ in range(400):
            await controller.acquire()
            clock.starts.append(clock.now)

    anyio.run(main)
    assert most_in_one_second(clock.starts) <= 20
    late = [t for t in clock.starts if t > clock.starts[0] + 3.0]
    assert (len(late) - 1) / (late[-1] - late[0]) >= 0.95 * 20


def test_error_answers_count_as_answers() -> None:
    """A 4xx about the image or a 5xx is an answer too: it bounds the arrival as a success
    does, so a job of failing images keeps the rate."""
    rng = random.Random(5)
    sim = Simulation(lag=lambda: rng.uniform(0.0, 0.0015), delay=lambda _: 0.001, errors=True)
    sim.run(1000)
    assert sim.rate() >= 0.99 * 20, sim.rate()
    assert sim.refused() == 0
