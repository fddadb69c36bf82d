"""Outage detection: pause the whole job while the API is down, probe, resume when it is back.

Without this, an API that is down for ten minutes turns thousands of queued images into error
rows in seconds, each burning its retries against a dead endpoint. Instead, once only failures
(connection errors, timeouts, 5xx) have come back for ``outage_after`` seconds, new requests
wait; one probe goes out on a growing interval; the first success releases everyone. Attempts
made during an outage do not count against an item's retry budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio

from .errors import RetryableError


class HealthMonitor:
    def __init__(
        self,
        *,
        max_outage: float,
        outage_after: float = 5.0,
        probe_initial: float = 1.0,
        probe_max: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        notify: Callable[[str | None], None] = lambda _text: None,
    ) -> None:
        self._max_outage = max_outage
        self._outage_after = outage_after
        self._probe_initial = probe_initial
        self._probe_max = probe_max
        self._clock = clock
        self._notify = notify
        self._last_success = clock()
        self._failures_since_success = 0
        self._down_since: float | None = None
        self._probe_interval = probe_initial
        self._next_probe = 0.0
        self._probing = False
        # Created on first use: an anyio Event needs a running event loop.
        self._recovered: anyio.Event | None = None
        self.last_error: str | None = None
        self.outages = 0

    @property
    def is_down(self) -> bool:
        return self._down_since is not None

    @property
    def gave_up(self) -> bool:
        """Down for longer than ``max_outage``: the job should stop, resumable."""
        return self._down_since is not None and self._clock() - self._down_since >= self._max_outage

    def success(self) -> None:
        """Any answer from the server that is not a retryable failure."""
        self._last_success = self._clock()
        self._failures_since_success = 0
        self._probing = False
        if self._down_since is not None:
            self._down_since = None
            self._probe_interval = self._probe_initial
            self._notify(None)
            if self._recovered is not None:
                self._recovered.set()
                self._recovered = None

    def failure(self, error: RetryableError) -> None:
        if error.http_status == 429:
            return  # the server is up and talking: rate control's business, not an outage
        now = self._clock()
        self._failures_since_success += 1
        self.last_error = str(error)
        if self._down_since is not None:
            if self._probing:
                self._probing = False
                self._probe_interval = min(self._probe_interval * 2, self._probe_max)
                self._next_probe = now + self._probe_interval
                self._announce(now)
            return
        if self._failures_since_success >= 3 and now - self._last_success >= self._outage_after:
            self._down_since = now
            self.outages += 1
            self._next_probe = now + self._probe_interval
            self._announce(now)

    def _announce(self, now: float) -> None:
        wait = max(0.0, self._next_probe - now)
        self._notify(f"API unavailable, retrying in {wait:.0f} s ({self.last_error})")

    async def wait_until_available(self) -> None:
        """Return when a request may go out: at once when healthy; as the probe when down."""
        while self._down_since is not None and not self.gave_up:
            now = self._clock()
            if not self._probing and now >= self._next_probe:
                self._probing = True
                return
            if self._recovered is None:
                self._recovered = anyio.Event()
            recovered = self._recovered
            delay = self._next_probe - now if not self._probing else self._probe_max
            with anyio.move_on_after(max(delay, 0.01)):
                await recovered.wait()
