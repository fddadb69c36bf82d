"""Admission control shared by all workers: a fixed rate, an adaptive one, and pauses.

Every request calls ``acquire()`` before it starts, so limits apply before work is spawned
(as aiometer and aiolimiter do) rather than by reacting to failures after the fact.

* A rate (``--rate-limit R``, or one learned from 429s): GCRA. Each caller reserves the next
  slot, ``1/rate`` after the previous one, so starts are evenly spaced and no one-second window
  holds more than the rate.
* A limit not to exceed (``--rate-limit``, a fixed rate) also has to hold where the server
  counts: a request reaches it some time after it starts (a fresh connection, a busy event
  loop on either side), so the R-th previous request, seen late, can share a second of the
  server's with this one. ``SentWindow`` starts a request only once R requests fit in no
  second of the server's, however late each reached it: a request was seen by the server
  before its answer came back, so the answer time bounds when.
* Adaptive: AIMD in the spirit of TCP CUBIC. On a 429, cut to ``beta`` times the rate that
  succeeded when the limit was hit, climb back quickly to just under it, then probe slowly
  above it. Few 429s, most of the capacity used. Without ``--rate-limit`` the job starts
  unlimited; with it, ``R`` is a ceiling: the job starts at R, backs off below it on 429 like
  the adaptive mode, and never probes above it (a ceiling set above the server's real limit
  used to meet 429 on a third of its requests). ``adaptive=False`` keeps a rate fixed.
  The first limit is measured once the pause is over, from the requests that *started* in the
  second before the 429 and succeeded: a 429 comes back at once while the successes sent with
  it are still in flight, so counting completions at that moment would find almost none.
* Pauses: a ``Retry-After`` (or an outage) holds back *new* requests until a moment, without
  freezing requests already in flight.

Time comes from an injectable clock and sleep, so tests drive it without sleeping.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

import anyio

from ..config import RateConfig

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


def server_window(rate: float) -> tuple[float, int]:
    """A sliding window for ``rate``: its length in seconds (a second for rates of 1/s and
    over), and how many requests it holds (rounded up: the slots' spacing is what keeps a
    rate of 6.5/s, say a share of 20/s over three processes, at 6.5/s)."""
    window = max(1.0, 1.0 / rate)
    return window, max(1, math.ceil(rate * window - 1e-9))


#: How late a caller of a fixed rate may be and still take its slot: timer rounding, not a
#: stalled loop.
TIMER_LAG = 0.005


class RateController:
    """Decides when the next request may start."""

    #: Multiplicative decrease on a 429.
    beta = 0.85
    #: Below the cruise level, close this fraction of the gap to it every second.
    recovery_per_second = 1.0
    #: At the cruise level, probe upward by this fraction of the limit every second (rising
    #: the longer no 429 comes).
    probe_per_second = 0.001
    #: Recovery aims at this fraction of the rate that last met a 429, then probing starts.
    cruise = 0.95
    #: Never throttle below this many requests per second.
    min_rate = 0.5

    def __init__(
        self,
        *,
        rate: float | None = None,
        adaptive: bool = True,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        self._ceiling = rate
        self._adaptive = adaptive
        self._clock = clock
        self._sleep = sleep
        self._rate: float | None = rate
        self._next_slot = 0.0
        self._held = False  # the sent window held a caller back since the last start
        # A limit not to exceed: where the server may count the requests sent (SentWindow).
        self._sent = SentWindow()
        self._paused_until = 0.0
        self._limit_seen: float | None = None
        self._last_cut = -1e18
        self._last_update = clock()
        # Start times of recent successes: the rate that really got through.
        self._successes: deque[float] = deque()
        # While the first limit is measured: the refused request's start, when its 429 came,
        # the successes started in the second before it, and whether one started after it.
        self._measuring: float | None = None
        self._refused_at = 0.0
        self._measured = 0
        self._contradicted = False
        # Last time the ceiling held a request back; it grows only while it does.
        self._last_bound = -1e18
        self.rate_limited_count = 0

    @classmethod
    def from_config(
        cls, config: RateConfig, *, share: int = 1, clock: Clock = time.monotonic
    ) -> RateController:
        """The controller a ``RateConfig`` means, for one of ``share`` equal users of it (a
        Ray job's actors): the job's and every Ray actor's rate, built by one rule."""
        ceiling = config.requests_per_second
        return cls(
            rate=None if ceiling is None else ceiling / share,
            adaptive=config.adaptive,
            clock=clock,
        )

    @property
    def rate(self) -> float | None:
        """The current rate in requests per second, ``None`` when unlimited."""
        return self._rate

    @property
    def ceiling(self) -> float | None:
        """``--rate-limit``: the rate is never above it; ``None`` when there is none."""
        return self._ceiling

    @property
    def paused_until(self) -> float:
        return self._paused_until

    async def acquire(self) -> None:
        """Wait until one more request may start, then claim the slot."""
        while (wait := self.try_acquire()) > 0:
            await self._sleep(wait)
            # Loop: a pause or a rate cut may have arrived while this caller slept.

    def try_acquire(self) -> float:
        """Claim a slot if one is free now and return 0; else return the seconds to wait."""
        now = self._clock()
        if self._measuring is not None and now >= self._paused_until:
            self._set_first_limit(now)
        self._grow(now)
        start = max(now, self._paused_until)
        if self._rate is not None and self._next_slot > now:
            start = max(start, self._next_slot)
            self._last_bound = now
        exact = self._rate is not None and self._exact
        if exact and start <= now:
            assert self._rate is not None
            window, capacity = server_window(self._rate)
            free = self._sent.free_at(now, window, capacity)
            if free > now:
                start = free
                self._last_bound = now  # the limit holds requests back
                self._held = True
        if start > now:
            return start - now
        if self._rate is not None:
            # Slots are never banked: an idle spell does not allow a burst after it.
            # (0.1% slack keeps float rounding from fitting R+1 starts in a second.)
            interval = 1.001 / self._rate
            # A caller woken after its slot takes it, so the slots after it stay where they
            # were: timer lag is systematic (asyncio rounds each wait up to the
            # millisecond), and slots counted from each late start lost ~1 ms of every
            # 50 ms slot at 20/s, 2% of the rate. Adaptive: up to half a slot late (429s
            # remain the referee).
            if not exact:
                self._next_slot = max(self._next_slot, now - interval / 2) + interval
            elif self._held:
                # A limit not to exceed. A caller the sent window held back keeps the
                # schedule (up to a slot behind): the window, not the spacing, then keeps
                # the limit where the server counts.
                self._next_slot = max(self._next_slot, now - interval) + interval
            elif now - self._next_slot <= TIMER_LAG:
                # Timer lag: the schedule holds.
                self._next_slot = max(self._next_slot, now - TIMER_LAG) + interval
            else:
                # Later than timer lag (the loop was held up, or an idle spell): from now.
                # Catching up a whole slot here sent late starts back to back, and on a
                # loaded machine they reached the server bunched: 429s (a clean-clone CI
                # run). The ceiling is a promise.
                self._next_slot = now + interval
            self._held = False
            if exact:
                self._sent.started(now, server_window(self._rate)[0])
        return 0.0

    @property
    def _exact(self) -> bool:
        """A limit not to exceed (``--rate-limit``, a fixed rate), not one learned."""
        return self._ceiling is not None or not self._adaptive

    def on_answer(self, started: float) -> None:
        """A request that started at ``started`` was answered with an error (a 4xx about
        the image, a 5xx): it counts for nothing but when the server saw it."""
        if self._exact:
            self._sent.answered(started, self._clock())

    def pause_until(self, moment: float) -> None:
        """Start no new request before ``moment`` (clock time)."""
        self._paused_until = max(self._paused_until, moment)

    def on_success(self, started: float | None = None) -> None:
        """A request that started at ``started`` (clock time; default now) succeeded."""
        now = self._clock()
        started = now if started is None else started
        if self._exact:
            self._sent.answered(started, now)
        if self._measuring is not None:
            if self._measuring - 1.0 < started < self._measuring:
                self._measured += 1
            elif self._measuring < started <= self._refused_at:
                self._contradicted = True
        self._successes.append(started)
        while self._successes and self._successes[0] < now - 2.0:
            self._successes.popleft()

    def on_rate_limited(self, retry_after: float | None, started: float | None = None) -> None:
        """A 429 for a request that started at ``started``: pause as told, and (adaptive) cut
        the rate once per congestion event."""
        self.rate_limited_count += 1
        now = self._clock()
        if started is not None and self._exact:
            self._sent.answered(started, now)
        wait = retry_after if retry_after is not None else 1.0
        self.pause_until(now + wait)
        if not self._adaptive or self._measuring is not None:
            return
        # Requests started before the previous cut answer 429 too; they carry no new news.
        if now - self._last_cut < max(wait, 1.0):
            return
        self._last_cut = now
        if self._limit_seen is None:
            # No limit known yet: count the successes that started in the second before this
            # request, as their answers come in; ``acquire`` sets the limit after the pause.
            # (With a --rate-limit too: cutting 15% at a time from a ceiling far above the
            # server's limit would take many rounds of 429s.)
            moment = now if started is None else started
            self._measuring, self._refused_at = moment, now
            self._measured = sum(1 for s in self._successes if moment - 1.0 < s < moment)
            self._contradicted = any(moment < s <= now for s in self._successes)
            return
        assert self._rate is not None  # a known limit always came with a rate
        self._cut(now, self._rate)

    def _set_first_limit(self, now: float) -> None:
        """End of the first pause: the successes started in the second before the 429'd
        request. A full sliding window admits requests in the order they arrive, so that is
        the server's limit, and no request sent after the refused one gets through."""
        self._measuring = None
        # None before it, or one after it: the window was not full of ours (another client, a
        # run just stopped, a glitch). A ceiling from that would throttle the job for good.
        if self._measured and not self._contradicted:
            self._cut(now, float(self._measured))

    def _cut(self, now: float, base: float) -> None:
        """Multiplicative decrease from ``base``, the rate that met the limit."""
        self._limit_seen = base
        self._rate = max(self.min_rate, base * self.beta)
        if self._ceiling is not None and self._rate > self._ceiling:
            self._rate = self._ceiling
        self._last_update = now

    def _grow(self, now: float) -> None:
        """Additive increase while no 429 arrives: fast below the known limit, slow above it.

        Only while the ceiling is what holds requests back: a client held back by something
        else (concurrency, slow answers, an outage) learns nothing about the server's limit,
        and a ceiling grown meanwhile would let a burst of 429s through when it binds again.
        """
        if not self._adaptive or self._rate is None or self._limit_seen is None:
            self._last_update = now
            return
        elapsed = now - self._last_update
        if elapsed <= 0:
            return
        self._last_update = now
        limit = self._limit_seen
        target = limit * self.cruise
        if self._rate < target * 0.99:
            self._rate += (target - self._rate) * min(1.0, self.recovery_per_second * elapsed)
        elif now - self._last_bound <= 1.0:
            # Probe faster the longer no 429 has come, as CUBIC does: near the last limit
            # it creeps, yet a raised limit is found within a few minutes.
            calm = now - self._last_cut
            self._rate += limit * self.probe_per_second * (1.0 + calm / 40.0) * elapsed
        if self._ceiling is not None and self._rate > self._ceiling:
            self._rate = self._ceiling


class SentWindow:
    """When the server may have counted the requests sent, so that no second of its own
    holds more than the limit (a sliding window: at most R requests in any one second).

    The server counts a request somewhere between its start and its answer. Starts 1/R
    apart are not enough: a request that reaches the server late (the first ones, on fresh
    connections, 5–90 ms after they started on the benchmark machine; one meeting a busy
    event loop on either side, 5–30 ms) shares a second of the server's with the R-th
    request after it, which is refused, and a 429 cuts the rate below the ceiling for the
    rest of the job. A request's arrival is bounded by its answer, so the latest it may have
    been counted is its start plus its latency, and a request starts only once fewer than
    R of these bounds fall within the last second. Against a server answering in a few ms
    that costs those few ms per second.

    Slow answers are mostly the model's time, not a late arrival: a latency typical of the
    recent ones counts for at most ``answer_cap``, an unusually long one (over
    ``unusual`` times the median: a late arrival shows as that) for up to ``late_cap``.
    Each second then costs at most ``answer_cap``, plus ``late_cap`` for each unusual one:
    against hosted-like latencies (median 180 ms, p99 5.6 s) 98.2% of the rate, as before
    (98.4%: tests/test_rate_pacing.py). A stall longer than ``late_cap`` (a server stopped
    for 125 ms on a loaded machine) is not covered: covering it would cost hosted-like
    latencies 5% of the rate, as nothing tells a late arrival from a slow model.
    """

    #: At most this of a typical latency counts as a late arrival.
    answer_cap = 0.010
    #: At most this of an unusually long one (and of one not answered yet).
    late_cap = 0.050
    #: Unusually long: over this many times the median of the recent latencies.
    unusual = 5.0
    #: The job's first second, while connections are being opened: up to this.
    first_answer_cap = 0.25

    def __init__(self) -> None:
        # [start, latest arrival counted, cap in the first second or 0], in start order;
        # until the answer comes, the start plus the most any latency may count for.
        self._sent: deque[list[float]] = deque()
        self._first_start: float | None = None
        self._latencies: deque[float] = deque(maxlen=63)
        self._median = 0.0

    def started(self, now: float, window: float) -> None:
        """A request starts now."""
        if self._first_start is None:
            self._first_start = now
        if now < self._first_start + window:
            self._sent.append([now, now + self.first_answer_cap, self.first_answer_cap])
        else:
            self._sent.append([now, now + self.late_cap, 0.0])

    def answered(self, started: float, now: float) -> None:
        """The request that started at ``started`` has its answer (at ``now``)."""
        latency = now - started
        latencies = self._latencies
        latencies.append(latency)
        if len(latencies) % 8 == 1:  # often enough for a median of the last 63
            self._median = sorted(latencies)[len(latencies) // 2]
        sent = self._sent
        # The latest start at or before ``started``: a caller reads its start just after
        # its slot was claimed, with no other claim in between.
        i = bisect.bisect_right(sent, [started, math.inf]) - 1
        if i < 0:
            return
        entry = sent[i]
        cap = self.late_cap if latency > self.unusual * self._median else self.answer_cap
        entry[1] = min(entry[1], entry[0] + min(latency, entry[2] or cap))

    def free_at(self, now: float, window: float, capacity: int) -> float:
        """The earliest time one more request may start: ``now``, unless ``capacity``
        requests may have reached the server within the last ``window`` seconds."""
        sent = self._sent
        horizon = now - window
        while sent and sent[0][1] <= horizon:
            sent.popleft()  # counted more than a window ago: never counts again
        if len(sent) < capacity:
            return now
        counted = sorted(entry[1] for entry in sent if entry[1] > horizon)
        if len(counted) < capacity:
            return now
        # Once the capacity-th latest of them is a window old, one more fits.
        return counted[-capacity] + window
