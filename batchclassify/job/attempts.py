"""The worker's attempt policy: when an item's failed request is tried again, and when not.

The rule, in one place:

* a retryable failure (timeout, connection error, 5xx, 429) is tried again after a wait:
  the server's ``Retry-After`` if it sent one, else exponential backoff with full jitter;
* an item gives up, with an error row, once its budget is spent (``--retries`` + 1 attempts
  that count, or ``RetryConfig.max_elapsed`` seconds since it was taken up: 10 minutes by
  default, no flag), and only while the API works for others
  (``HealthMonitor.others_fine_since``): when other items fail too and nothing sent since
  this one first failed was answered, an outage is starting, and the item waits it out
  instead of becoming an error row;
* attempts made while the API is down (an outage) and 429 answers do not count against the
  budget: neither says anything about the item;
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
    """One item's requests: how many were sent, how many count, since when it fails."""

    __slots__ = ("_counted", "_first_failure", "_policy", "_taken_up", "item_id", "requests")

    def __init__(self, policy: AttemptPolicy, item_id: str) -> None:
        self._policy = policy
        self.item_id = item_id
        self._taken_up = policy.clock()
        self._first_failure: float | None = None
        self._counted = 0  # requests that count against the budget
        self.requests = 0
        """Requests sent for the item so far (the row's ``attempts``)."""

    def next_request(self) -> Send | StopJob:
        """Asked after waiting for the API and a rate slot: send, or stop the job."""
        health = self._policy.health
        if health.gave_up:
            return StopJob(health.stop_error())
        return SEND

    def sending(self) -> float:
        """A request goes out now: count it and return its start (clock time)."""
        self.requests += 1
        return self._policy.clock()

    def failed(self, error: RetryableError, started: float) -> Wait | GiveUp:
        """The request sent at ``started`` failed with ``error``: wait and retry, or give up."""
        policy = self._policy
        health = policy.health
        if self._first_failure is None:
            self._first_failure = policy.clock()
        policy.note_failure(error, self.item_id, started)
        if error.server_out and policy.clock() - self._taken_up < policy.retry.max_elapsed:
            return Wait(0.0)  # the server's failure: at once, elsewhere, not counted
        if error.http_status != 429 and not health.is_down:
            self._counted += 1
        # Give up only while the API works for others: if other items fail too and nothing
        # sent since this one first failed was answered, an outage is starting.
        if (
            self._spent()
            and not health.is_down
            and health.others_fine_since(self.item_id, self._first_failure)
        ):
            return GiveUp(error, self.requests)
        delay = error.retry_after
        if delay is None:
            delay = policy.backoff.delay(max(self._counted, 1))
        return Wait(delay)

    def _spent(self) -> bool:
        """The budget: attempts that count, and time since the item was taken up."""
        retry = self._policy.retry
        return (
            self._counted >= retry.attempts
            or self._policy.clock() - self._taken_up >= retry.max_elapsed
        )

