"""Admission control shared by all workers: a fixed rate, an adaptive one, and pauses.

Every request calls ``acquire()`` before it starts, so limits apply before work is spawned
(as aiometer and aiolimiter do) rather than by reacting to failures after the fact.

* Fixed rate (``--rate-limit R``): GCRA. Each caller reserves the next slot, ``1/R`` after the
  previous one, so starts are evenly spaced and no one-second window holds more than R.
* Adaptive (no ``--rate-limit``): unlimited until the first 429. Then AIMD in the spirit of
  TCP CUBIC: cut to ``beta`` times the rate that succeeded when the limit was hit, climb back
  quickly to just under it, then probe slowly above it. Few 429s, most of the capacity used.
* Pauses: a ``Retry-After`` (or an outage) holds back *new* requests until a moment, without
  freezing requests already in flight.

Time comes from an injectable clock and sleep, so tests drive it without sleeping.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable

import anyio

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class RateController:
    """Decides when the next request may start."""

    #: Multiplicative decrease on a 429.
    beta = 0.85
    #: While below the last known limit, close this fraction of the gap every second.
    recovery_per_second = 0.5
    #: Above it, probe upward by this fraction of the limit every second.
    probe_per_second = 0.01
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
        self._fixed = rate
        self._adaptive = adaptive and rate is None
        self._clock = clock
        self._sleep = sleep
        self._rate: float | None = rate
        self._next_slot = 0.0
        self._paused_until = 0.0
        self._limit_seen: float | None = None
        self._last_cut = -1e18
        self._last_update = clock()
        # Completion times of recent successes: the rate that really got through.
        self._successes: deque[float] = deque()
        self.rate_limited_count = 0

    @property
    def rate(self) -> float | None:
        """The current ceiling in requests per second, ``None`` when unlimited."""
        return self._rate

    @property
    def paused_until(self) -> float:
        return self._paused_until

    async def acquire(self) -> None:
        """Wait until one more request may start, then claim the slot."""
        while True:
            now = self._clock()
            self._grow(now)
            start = max(now, self._paused_until)
            if self._rate is not None:
                start = max(start, self._next_slot)
            if start <= now:
                if self._rate is not None:
                    # Slots are never banked: an idle spell does not allow a burst after it.
                    self._next_slot = max(self._next_slot, now) + 1.0 / self._rate
                return
            await self._sleep(start - now)
            # Loop: a pause or a rate cut may have arrived while this caller slept.

    def pause_until(self, moment: float) -> None:
        """Start no new request before ``moment`` (clock time)."""
        self._paused_until = max(self._paused_until, moment)

    def on_success(self) -> None:
        now = self._clock()
        self._successes.append(now)
        while self._successes and self._successes[0] < now - 2.0:
            self._successes.popleft()

    def on_rate_limited(self, retry_after: float | None) -> None:
        """A 429: pause as told, and (adaptive) cut the rate once per congestion event."""
        self.rate_limited_count += 1
        now = self._clock()
        wait = retry_after if retry_after is not None else 1.0
        self.pause_until(now + wait)
        if not self._adaptive:
            return
        # Requests started before the previous cut answer 429 too; they carry no new news.
        if now - self._last_cut < max(wait, 1.0):
            return
        self._last_cut = now
        achieved = self._achieved_rate(now)
        base = min(x for x in (achieved, self._rate) if x is not None) if achieved else self._rate
        if base is None:
            base = self.min_rate * 2
        self._limit_seen = base
        self._rate = max(self.min_rate, base * self.beta)
        self._last_update = now

    def _achieved_rate(self, now: float) -> float | None:
        while self._successes and self._successes[0] < now - 2.0:
            self._successes.popleft()
        if len(self._successes) < 2:
            return None
        return len(self._successes) / 2.0

    def _grow(self, now: float) -> None:
        """Additive increase while no 429 arrives: fast below the known limit, slow above it."""
        if not self._adaptive or self._rate is None or self._limit_seen is None:
            self._last_update = now
            return
        elapsed = now - self._last_update
        if elapsed <= 0:
            return
        self._last_update = now
        limit = self._limit_seen
        if self._rate < limit * 0.97:
            self._rate += (limit - self._rate) * min(1.0, self.recovery_per_second * elapsed)
        else:
            self._rate += limit * self.probe_per_second * elapsed
