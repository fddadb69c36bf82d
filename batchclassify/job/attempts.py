"""The worker's attempt policy: when an item's failed request is tried again, and when not.

The rule, in one place:

* a retryable failure (timeout, connection error, 5xx, 429) is tried again after a wait:
  the server's ``Retry-After`` if it sent one, else exponential backoff with full jitter;
* an item gives up, with an error row, once its budget is spent (``--retries`` + 1 attempts
  that count, or ``RetryConfig.max_elapsed`` seconds since it was taken up: 10 minutes by
  default, no flag), and only while the API works for others
  (``HealthMonitor.others_fine_since``): when other items fail too and nothing has been
  answered since this one's latest request went out, an outage may be starting: the item is
  sent again, and judged again at its next failure, by which time
  either answers came or the outage was declared (its failures are counted back, below);
* failures during an outage do not count against the budget, nor those of its lead-in (the
  seconds of nothing but failures before it was declared, ``HealthMonitor.in_outage``):
  they are judged after the fact, so an outage's first seconds cost no image its retries;
  nor do 429 answers: neither says anything about the item;
* with several servers (``fleet.py``), a failure on a server that is then taken out while
  another is in (``RetryableError.server_out``) is the server's: the item is retried at once,
  on another server, and the attempt does not count;
* once the API has been down for longer than ``--max-outage`` (or never answered at all),
  the job stops and the item is left unrecorded for a rerun.

``AttemptPolicy`` is shared by all workers (it feeds every failure to the outage monitor and
the rate controller); ``Attempts`` is one item's count, asked after each outcome. Neither
sleeps or sends: the worker does what the decision says. Time comes from the clock given,
so tests drive the rule on a fake clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from ..api.retry import Backoff
from ..config import RetryConfig
from ..errors import ApiUnreachableError, OutageTimeoutError, RetryableError
from .health import HealthMonitor
from .ratelimit import RateController


class Send(NamedTuple):
    """Send the request now (after the rate controller's turn)."""


class Wait(NamedTuple):
    """Try again after ``seconds``: a ``Retry-After`` or backoff."""

    seconds: float


class GiveUp(NamedTuple):
    """The item is an error row: ``error`` was its last failure, after ``requests`` requests."""

    error: RetryableError
    requests: int

    @property
    def message(self) -> str:
        """The row's ``error``: the failure, and how many requests it took to give up."""
        return f"{self.error} (gave up after {self.requests} request{'s' * (self.requests != 1)})"


#: The one ``Send`` decision (it has no data).
SEND = Send()


class StopJob(NamedTuple):
    """The API is gone (down past ``--max-outage``, or never reached): stop the job; the item
    is left unrecorded for a rerun."""

    error: ApiUnreachableError | OutageTimeoutError

    @property
    def reason(self) -> str:
        """The message the job stops with."""
        return str(self.error)


class AttemptPolicy:
    """The retry rule shared by all workers; ``start(item_id)`` begins one item's count."""

    def __init__(
        self,
        retry: RetryConfig,
        *,
        health: HealthMonitor,
        rate: RateController,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.retry = retry
        self.health = health
        self.rate = rate
        self.backoff = backoff or Backoff(retry)
        self.clock = clock

    def start(self, item_id: str) -> Attempts:
        """An item is taken up now: its time budget starts."""
        return Attempts(self, item_id)

    def note_failure(self, error: RetryableError, item_id: str, started: float) -> None:
        """Tell the outage monitor and (a 429) the rate controller about a failed request,
        sent at ``started``: also for copies of a stuck request, which have no count. A
        failure the fleet routed around (``server_out``: another server is in) is not the
        API's: the outage monitor does not hear of it."""
        if error.server_out:
            return
        self.health.failure(error, item_id)
        if error.http_status == 429:
            self.rate.on_rate_limited(error.retry_after, started)
        elif error.http_status is not None:
            self.rate.on_answer(started)  # a 5xx: the server saw the request


class Attempts:
    """One item's requests: how many were sent, which failures count, since when it fails."""

    __slots__ = (
        "_failures",
        "_first_failure",
        "_last_started",
        "_policy",
        "_taken_up",
        "item_id",
        "requests",
    )

    def __init__(self, policy: AttemptPolicy, item_id: str) -> None:
        self._policy = policy
        self.item_id = item_id
        self._taken_up = policy.clock()
        self._first_failure: float | None = None
        # When each failure that may count came (clock time); judged again at each count,
        # since an outage declared later takes its lead-in's failures back.
        self._failures: list[float] | None = None
        self.requests = 0
        """Requests sent for the item so far (the row's ``attempts``)."""
        self._last_started = 0.0  # when the latest request was sent

    def next_request(self) -> Send | StopJob:
        """Asked after waiting for the API and a rate slot: send, or stop the job."""
        health = self._policy.health
        if health.gave_up:
            return StopJob(health.stop_error())
        return SEND

    def sending(self) -> float:
        """A request goes out now: count it and return its start (clock time)."""
        self.requests += 1
        started = self._last_started = self._policy.clock()
        return started

    def failed(self, error: RetryableError, started: float) -> Wait | GiveUp:
        """The request sent at ``started`` failed with ``error``: wait and retry, or give up."""
        policy = self._policy
        now = policy.clock()
        if self._first_failure is None:
            self._first_failure = now
        policy.note_failure(error, self.item_id, started)
        if error.server_out and now - self._taken_up < policy.retry.max_elapsed:
            return Wait(0.0)  # the server's failure: at once, elsewhere, not counted
        if error.http_status != 429:
            if self._failures is None:
                self._failures = []
            self._failures.append(now)
        if self._gives_up():
            return GiveUp(error, self.requests)
        delay = error.retry_after
        if delay is None:
            delay = policy.backoff.delay(max(self._counted(), 1))
        return Wait(delay)

    def _gives_up(self) -> bool:
        """Budget spent, and the API works for others (if other items fail too and nothing
        was answered since this one's latest request went out, an outage may be starting)."""
        health = self._policy.health
        assert self._first_failure is not None
        return (
            self._spent()
            and not health.is_down
            and health.others_fine_since(self.item_id, self._first_failure, self._last_started)
        )

    def _counted(self) -> int:
        """Failures that count: not 429s, nor in an outage or its lead-in."""
        if self._failures is None:
            return 0
        in_outage = self._policy.health.in_outage
        return sum(1 for moment in self._failures if not in_outage(moment))

    def _spent(self) -> bool:
        """The budget: attempts that count, and time since the item was taken up."""
        retry = self._policy.retry
        return (
            self._counted() >= retry.attempts
            or self._policy.clock() - self._taken_up >= retry.max_elapsed
        )

