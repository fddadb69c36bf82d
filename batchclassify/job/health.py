"""Outage detection: pause the whole job while the API is down, probe, resume when it is back.

Without this, an API that is down for ten minutes turns thousands of queued images into error
rows in seconds, each burning its retries against a dead endpoint. Instead, once only failures
(connection errors, timeouts, 5xx), for more than one item, have come back for ``outage_after``
seconds, new requests wait; one probe goes out on a growing interval; the first success
releases everyone. Attempts made during an outage do not count against an item's retry budget,
and an item whose budget runs out gives up only on evidence that the API works for others: a
request sent after its first failure was answered, or no other item is failing. One item
failing alone is that item's problem (an image the server chokes on), not an outage.

A job that has never had an answer is different: a host name that does not resolve, a
port that refuses connections or one that never accepts them (the connect timeout), for
``first_contact_grace`` seconds from the first such failure, is a typo'd ``--api-url`` or a
server not running, not an outage to sit out for ``max_outage``. The job stops
(``gave_up``) and ``stop_reason`` names the URL to check. Once any answer has come, the
same failures are an outage like any other.

``Watchdog`` keeps the requests in flight: it tells the runner when one has gone without an
answer past the stuck-request deadline (``hedging.py``), and it is the last line against a job
that stops moving: if requests are in flight but none has completed for ``stall_after``
seconds (each should have timed out long before), it says so and cancels them, so they are
retried instead of holding their workers for ever.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import anyio

from ..errors import ApiUnreachableError, OutageTimeoutError, RetryableError

if TYPE_CHECKING:
    from .ratelimit import RateController


class HealthMonitor:
    def __init__(
        self,
        *,
        max_outage: float,
        outage_after: float = 5.0,
        probe_initial: float = 1.0,
        probe_max: float = 60.0,
        first_contact_grace: float = 3.0,
        servers: tuple[str, ...] = (),
        clock: Callable[[], float] = time.monotonic,
        notify: Callable[[str | None], None] = lambda _text: None,
    ) -> None:
        self._max_outage = max_outage
        self._first_contact_grace = first_contact_grace
        # Several servers (fleet.py): the job only stops once every one is unreachable.
        self._servers = servers
        self._answered = False  # any answer at all, ever, in this job
        # The first failure to reach the host at all (no DNS name, refused, a connection never
        # accepted), while nothing has been answered.
        self._unreachable_since: float | None = None
        self._outage_after = outage_after
        self._probe_initial = probe_initial
        self._probe_max = probe_max
        self._clock = clock
        self._notify = notify
        self._last_success = clock()
        self.calm = False
        """An answer came, and no failure since: not down, never unreachable, nothing for
        ``success`` to reset (the usual case, checked on every request)."""
        self._failures_since_success = 0
        self._failing: set[object] = set()  # items failed since the last success (up to 2)
        self._answered_started = -1e18  # start of the latest request the server answered
        self._latest_failures: dict[object, float] = {}  # the two items that failed last
        self._down_since: float | None = None
        # Declared outages, from their lead-in (the latest answer before only failures came)
        # to their end (None: still down): failures in them say nothing about an item.
        self._outages: deque[list[float | None]] = deque(maxlen=16)
        self._probe_interval = probe_initial
        self._next_probe = 0.0
        self._probing = False
        # Created on first use: an anyio Event needs a running event loop.
        self._recovered: anyio.Event | None = None
        self.last_error: str | None = None

    @property
    def is_down(self) -> bool:
        return self._down_since is not None

    def others_fine_since(
        self, item: object, moment: float, last_sent: float | None = None
    ) -> bool:
        """Whether the API works for others: no item but ``item`` has failed since the
        latest answered request was sent; or a request that started after ``moment`` was
        answered *and* an answer came after ``last_sent`` (the item's latest request went
        out; default ``moment``), so the API answers now, not only before an outage began.
        (Answers to requests
        sent earlier prove little: they may have been on their way as the API went down.)"""
        if self._unreachable_since is not None:
            return False  # never reached at all: no evidence that anything works
        answered = self._answered_started
        others = (t for key, t in self._latest_failures.items() if key != item)
        if max(others, default=-1e18) <= answered:
            return True  # it fails alone
        since = moment if last_sent is None else last_sent
        return answered >= moment and self._last_success >= since

    def in_outage(self, moment: float) -> bool:
        """Whether a failure at ``moment`` (clock time) belongs to a declared outage, its
        lead-in included: the seconds of failures before it was declared count as the
        outage's, not as the item's (judged after the fact)."""
        for start, end in self._outages:
            assert start is not None
            if start <= moment and (end is None or moment <= end):
                return True
        return False

    @property
    def gave_up(self) -> bool:
        """Down for longer than ``max_outage``, or never reached (see the module's docstring):
        the job should stop, resumable."""
        return self._never_reached or (
            self._down_since is not None and self._clock() - self._down_since >= self._max_outage
        )

    @property
    def _never_reached(self) -> bool:
        since = self._unreachable_since
        return since is not None and self._clock() - since >= self._first_contact_grace

    def stop_error(self) -> ApiUnreachableError | OutageTimeoutError:
        """Why ``gave_up``, as the error the job stops with."""
        if self._never_reached:
            return ApiUnreachableError(self.stop_reason())
        return OutageTimeoutError(self.stop_reason())

    def stop_reason(self) -> str:
        """Why ``gave_up``: the message the job stops with."""
        if self._never_reached:
            return (
                f"cannot reach the API at {', '.join(map(_shown_url, self._servers))} "
                f"({self.last_error}); "
                "no request has been answered: check --api-url (the host name, the port, "
                "http or https), that the server is running, and the network; then rerun "
                "the same command to resume"
            )
        return (
            f"the API has been unavailable for {self._max_outage:g} s "
            f"({self.last_error}); rerun the same command to resume"
        )

    def success(self, started: float | None = None) -> None:
        """Any answer from the server that is not a retryable failure, to a request that
        started at ``started`` (default: now)."""
        now = self._last_success = self._clock()
        moment = now if started is None else started
        if moment > self._answered_started:
            self._answered_started = moment
        if self.calm:
            return  # nothing failed since the last answer: nothing to reset
        self.calm = True
        self._answered = True
        self._unreachable_since = None
        self._failures_since_success = 0
        self._failing.clear()
        self._probing = False
        if self._down_since is not None:
            self._down_since = None
            self._outages[-1][1] = now
            self._probe_interval = self._probe_initial
            self._notify(None)
            if self._recovered is not None:
                self._recovered.set()
                self._recovered = None

    def failure(self, error: RetryableError, item: object = None) -> None:
        """A retryable failure of ``item`` (any key; ``None``: count it as another item)."""
        if error.http_status == 429:
            return  # the server is up and talking: rate control's business, not an outage
        now = self._clock()
        self.calm = False
        self._failures_since_success += 1
        key = object() if item is None else item
        if len(self._failing) < 2:
            self._failing.add(key)
        self._latest_failures.pop(key, None)
        self._latest_failures[key] = now
        if len(self._latest_failures) > 2:
            del self._latest_failures[next(iter(self._latest_failures))]
        self.last_error = str(error)
        if error.unreachable and not self._answered and self._unreachable_since is None:
            self._unreachable_since = now
        if self._down_since is not None:
            if self._probing:
                self._probing = False
                self._probe_interval = min(self._probe_interval * 2, self._probe_max)
                self._next_probe = now + self._probe_interval
                self._announce(now)
            return
        if (
            self._failures_since_success >= 3
            and len(self._failing) >= 2
            and now - self._last_success >= self._outage_after
        ):
            self._down_since = now
            self._outages.append([self._last_success, None])
            self._next_probe = now + self._probe_interval
            self._announce(now)

    def _announce(self, now: float) -> None:
        wait = max(0.0, self._next_probe - now)
        assert self._down_since is not None
        left = self._down_since + self._max_outage - now
        stop_at = datetime.datetime.now().astimezone() + datetime.timedelta(seconds=left)
        self._notify(
            f"API unavailable, retrying in {wait:.0f} s ({self.last_error}); "
            f"stopping at {stop_at:%H:%M:%S} if still down (--max-outage)"
        )

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


def flow_status(rate: RateController, health: HealthMonitor, now: float) -> dict[str, Any]:
    """Rate control and outage facts for a progress file: a run's and a push's."""
    return {
        "rate_limit_per_s": None if rate.rate is None else round(rate.rate, 2),
        "answered_429": rate.rate_limited_count,
        "paused_for_s": round(max(0.0, rate.paused_until - now), 1),
        "outage": health.is_down,
        "outage_error": health.last_error if health.is_down else None,
    }


def _shown_url(url: str) -> str:
    """``url`` without a query or user:password part, which may hold a secret."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "the --api-url given"
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", "")) or "the --api-url given"


class Watchdog:
    """The registry of requests in flight: calls a request stuck, and cuts a stalled job.

    Wrap each request in ``async with watch(started, on_overdue)``; run ``run()`` as a task for
    the job's lifetime. Two checks, from one timer task (no timer per request):

    * stuck: a request with no answer ``overdue_after()`` seconds after it started gets its
      ``on_overdue`` called (the runner frees the worker's place and sends a copy); again at
      each check while it returns ``False`` (no copy could be sent yet);
    * stall: if requests are in flight but none has completed for ``stall_after`` seconds
      (each should have timed out long before), it says so and cancels them all.

    A request cut (by the stall check, or by ``cut_now`` when a copy answered first) leaves
    ``watch()`` with ``RequestCut``, never quietly: the caller decides what a cut request
    means (a copy's answer, or a timeout). Time with nothing in flight (a ``Retry-After``
    pause, an outage) does not count as a stall.

    A request costs one object and no timer: a cut cancels its task directly, as
    ``asyncio.timeout`` would; an anyio cancel scope per request cost several times more on
    the hot path, an ``asyncio.timeout`` and ``async with`` a few microseconds more.
    (The job runs on asyncio, or uvloop, which is asyncio's loop interface.)
    """

    def __init__(
        self,
        *,
        stall_after: float,
        clock: Callable[[], float] = time.monotonic,
        notify: Callable[[str | None], None] = lambda _text: None,
        overdue_after: Callable[[], float | None] = lambda: None,
    ) -> None:
        self.stall_after = stall_after
        self._clock = clock
        self._notify = notify
        self._overdue_after = overdue_after
        # Insertion-ordered: the oldest request first, so the stuck check stops at the first
        # request that is not overdue.
        self._in_flight: dict[Watched, None] = {}
        self._last_progress = clock()
        self._noted = False

    @property
    def quiet_since(self) -> float | None:
        """Clock time since which requests have been in flight and none has completed;
        ``None`` while nothing is in flight. (For the progress display.)"""
        return self._last_progress if self._in_flight else None

    def watch(self, started: float, on_overdue: Callable[[], bool] | None = None) -> Watched:
        """Run one request, started at ``started`` (clock time), under the watchdog."""
        return Watched(self, started, on_overdue)

    def _started(self, watched: Watched) -> None:
        if not self._in_flight:
            self._last_progress = self._clock()
        self._in_flight[watched] = None

    def _ended(self, watched: Watched, *, cut: bool) -> None:
        self._in_flight.pop(watched, None)
        if not cut:
            self._last_progress = self._clock()
            if self._noted:
                self._noted = False
                self._notify(None)

    async def run(self) -> None:
        """Check the requests in flight a few times per deadline; never returns (cancel it)."""
        while True:
            overdue_after = self._overdue_after()
            # A quarter of the deadline: a stuck request is noticed at most 25% late. Until the
            # deadline is known, often enough to apply it soon after it is.
            tick = min(self.stall_after / 4, max(0.01, (overdue_after or 1.0) / 4))
            asleep = self._clock()
            await anyio.sleep(tick)
            now = self._clock()
            # Woken late, the event loop itself was held up (a long flush, a GC pause): answers
            # may be waiting unread, so requests are not called stuck on this round.
            if overdue_after is not None and now - asleep < 2 * tick:
                self.check_overdue(now, overdue_after)
            self._check_stall(now)

    def check_overdue(self, now: float, overdue_after: float) -> None:
        """Call ``on_overdue`` of each request started ``overdue_after`` seconds ago or more."""
        due = []
        for watched in self._in_flight:
            if watched.started > now - overdue_after:
                break
            if watched.wants_overdue:
                due.append(watched)
        for watched in due:
            if watched.wants_overdue and watched.overdue():
                watched.wants_overdue = False

    def _check_stall(self, now: float) -> None:
        stalled_for = now - self._last_progress
        if not self._in_flight or stalled_for < self.stall_after:
            return
        stuck = list(self._in_flight)
        self._noted = True
        self._notify(
            f"no request has completed for {stalled_for:.0f} s: "
            f"retrying the {len(stuck)} stuck in flight"
        )
        for watched in stuck:
            watched.cut_now()
        self._last_progress = now


class RequestCut(Exception):
    """A request under the watchdog was cut off: it stalled, or a copy answered first."""


class Watched:
    """One request under the watchdog; raises ``RequestCut`` if it was cut.

    On the hot path, without ``async with`` (two coroutines per request):
    ``watched.begin()`` in the task that sends the request, then ``await`` the request in a
    ``try`` whose ``except CancelledError`` asks ``watched.cut_off()`` (``True``: the cut is
    ours, raise ``RequestCut``; else re-raise) and whose ``finally`` calls ``watched.end()``.
    ``async with watched`` does the same. A cut cancels the request's task, as
    ``asyncio.timeout`` does, and tells its own cancellation from anyone else's the same way
    (``Task.cancelling`` / ``uncancel``): a job being stopped is never taken for a cut.

    ``overdue()`` is what the watchdog calls once the request is past the stuck-request
    deadline (``on_overdue``; subclasses may override it instead); ``True``: handled, not
    again.
    """

    # No __slots__: class-level defaults, so a request sets only what differs (one is made
    # per request, and most are never cut or overdue).
    _task: asyncio.Task[object] | None = None
    _cancelling = 0
    _cut = False
    _taken_back = False
    wants_overdue = True
    on_overdue: Callable[[], bool] | None = None

    def __init__(
        self, dog: Watchdog, started: float, on_overdue: Callable[[], bool] | None = None
    ) -> None:
        self._dog = dog
        self.started = started
        if on_overdue is not None:
            self.on_overdue = on_overdue

    @property
    def task(self) -> asyncio.Task[object] | None:
        """The task sending the request, while it is under way."""
        return self._task

    def overdue(self) -> bool:
        """Past the stuck-request deadline: ``True`` once handled (no more calls)."""
        return self.on_overdue is None or self.on_overdue()

    def begin(self) -> None:
        """The request starts now, in the current task."""
        task = asyncio.current_task()
        assert task is not None, "a watched request runs in a task"
        self._task = task
        self._cancelling = task.cancelling()
        self._dog._started(self)

    def cut_now(self) -> None:
        """Cancel the request: it ends with ``RequestCut``."""
        task = self._task
        if task is None or self._cut:
            return  # not started, already over, or already cut
        self._cut = True
        task.cancel()

    def cut_off(self) -> bool:
        """Asked on a ``CancelledError`` from the request: whether it was this watchdog's cut
        alone (then the cancellation is taken back: raise ``RequestCut`` instead)."""
        task = self._task
        if not self._cut or task is None or self._taken_back:
            return False
        self._taken_back = True
        return task.uncancel() <= self._cancelling

    def end(self) -> None:
        """The request is over, however it ended."""
        task = self._task
        if self._cut and not self._taken_back and task is not None:
            # Cut, but it ended another way (an answer raced the cut): the task's count of
            # cancellation requests goes back to what it was, as asyncio.timeout does.
            self._taken_back = True
            task.uncancel()
        self._dog._ended(self, cut=self._cut)
        self._task = None

    async def __aenter__(self) -> Watched:
        self.begin()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is asyncio.CancelledError and self.cut_off():
                raise RequestCut from None
        finally:
            self.end()
