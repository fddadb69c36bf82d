"""What a job is waiting for, in words, for the progress display: long silences explained.

The runner asks once a second. Two waits are worth a line of their own (an outage, and the
watchdog cutting stuck requests, are announced by ``health.py`` itself):

- a rate-limit pause longer than ``SHOWN_PAUSE``: until when, and that a ``Retry-After`` is
  honoured for at most ``MAX_RETRY_AFTER``;
- requests in flight with none answered for ``SHOWN_SILENCE`` seconds: since when.

A wait's text is made once, when it is first seen, and kept while it lasts: off a terminal,
each text is a log line, so one wait must not become a line a second.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable

from ..api.retry import MAX_RETRY_AFTER
from .health import HealthMonitor, Watchdog
from .ratelimit import RateController

#: A rate-limit pause longer than this (seconds) is shown.
SHOWN_PAUSE = 2.0
#: Requests in flight with none answered for this long (seconds) is shown.
SHOWN_SILENCE = 15.0


class WaitDescriber:
    """Describes the current waits of one job, from its rate controller, watchdog, health."""

    def __init__(
        self,
        *,
        rate: RateController,
        watchdog: Watchdog,
        health: HealthMonitor,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now().astimezone(),
    ) -> None:
        self._rate = rate
        self._watchdog = watchdog
        self._health = health
        self._timeout = timeout
        self._clock = clock
        self._wall_clock = wall_clock
        self._texts: dict[tuple[str, float], str] = {}  # by (kind, clock time of its moment)

    def describe(self) -> str | None:
        """What new requests wait for now, or ``None``."""
        now = self._clock()
        current: dict[tuple[str, float], str] = {}
        until = self._rate.paused_until
        if until - now >= SHOWN_PAUSE:
            key = ("pause", until)
            current[key] = self._texts.get(key) or self._pause_text(now, until)
        quiet = self._watchdog.quiet_since
        if quiet is not None and now - quiet >= SHOWN_SILENCE and not self._health.is_down:
            key = ("quiet", quiet)
            current[key] = self._texts.get(key) or self._silence_text(now, quiet)
        self._texts = current
        return "; ".join(current.values()) or None

    def _wall(self, now: float, moment: float) -> str:
        wall = self._wall_clock() + datetime.timedelta(seconds=moment - now)
        return f"{wall:%H:%M:%S}"

    def _pause_text(self, now: float, until: float) -> str:
        seconds = until - now
        text = f"HTTP 429: no new requests until {self._wall(now, until)} ({seconds:.0f} s)"
        # Near the cap (seen up to a few ticks late): the server may have asked for a day.
        if seconds >= MAX_RETRY_AFTER - 10.0:
            text += (
                f"; a Retry-After is honoured for at most {MAX_RETRY_AFTER / 60:g} min, "
                "then the server is asked again"
            )
        return text

    def _silence_text(self, now: float, since: float) -> str:
        return (
            f"no answer since {self._wall(now, since)} to the requests in flight "
            f"(each gives up after --timeout {self._timeout:g} s)"
        )
