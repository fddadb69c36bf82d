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
                    # (0.1% slack keeps float rounding from fitting R+1 starts in a second.)
                    self._next_slot = max(self._next_slot, now) + 1.001 / self._rate
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
        # The rate that met the limit: the ceiling we were sending at, or on the first 429
        # (no ceiling yet) what got through in the last second.
        base = self._rate if self._rate is not None else self._achieved_rate(now)
        if base is None:
            base = self.min_rate * 2
        self._limit_seen = base
        self._rate = max(self.min_rate, base * self.beta)
        self._last_update = now

    def _achieved_rate(self, now: float) -> float | None:
        recent = sum(1 for moment in self._successes if moment >= now - 1.0)
        return float(recent) if recent >= 2 else None

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
        target = limit * self.cruise
        if self._rate < target * 0.99:
            self._rate += (target - self._rate) * min(1.0, self.recovery_per_second * elapsed)
        else:
            # Probe faster the longer no 429 has come, as CUBIC does: near the last limit
            # it creeps, yet a raised limit is found within a few minutes.
            calm = now - self._last_cut
            self._rate += limit * self.probe_per_second * (1.0 + calm / 40.0) * elapsed
