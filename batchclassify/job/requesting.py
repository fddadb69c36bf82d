"""One item's requests until it has a row: the loop the job's workers and the Ray actors share.

``ItemRequests.request`` waits for the API (an outage) and a rate slot, sends, and after
each outcome does what the attempt policy (``attempts.py``) decides: send again after a
wait, give up with an error row, or stop. Where its callers differ they pass it what
differs: how a request is sent (the job's ``Sender``, under the watchdog with copies of
stuck requests; a Ray actor's plain ``post``), the stop signal and what a retry tells the
progress display. A ``Stop`` is handed back: the job stops, a Ray actor writes a row.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, Protocol

from ..errors import (
    ApiUnreachableError,
    FatalApiError,
    ItemError,
    OutageTimeoutError,
    RetryableError,
)
from ..inputs.encoding import EncodedImage
from ..models import Item, Prediction, error_row, ok_row
from .attempts import SEND, AttemptPolicy, GiveUp, StopJob
from .hedging import HedgePolicy
from .stopping import StopSignal

Row = dict[str, Any]


class Hedged(Protocol):
    """What a send says besides the answer: the copies sent of a stuck request, and the
    copy's answer if one came first (``sending.Race``)."""

    @property
    def answer(self) -> Prediction | Exception | None: ...

    @property
    def copies(self) -> int: ...


class NotHedged:
    """A request sent alone (no watchdog, no copies): the Ray actors' sends."""

    answer: Prediction | Exception | None = None
    copies = 0


#: The one ``NotHedged`` (it has no data).
NOT_HEDGED = NotHedged()

#: Sends one request for an item, started at the given clock time: the answer, and its race.
Send = Callable[[Item, EncodedImage | None, float], Awaitable[tuple[Prediction, Hedged]]]


class GivenUp(NamedTuple):
    """An item whose retries ran out: its row, and what the summary counts it under."""

    row: Row
    group: str


class Stop(NamedTuple):
    """The job cannot go on, and the item has no row: the API refused the job (a bad key,
    an unknown model) or is gone (``StopJob``). ``requests``: sent for the item so far."""

    error: FatalApiError | ApiUnreachableError | OutageTimeoutError
    requests: int


class ItemRequests:
    """The request loop of one item, shared by every worker of a job (or every batch of a
    Ray actor): the attempt policy with its outage monitor and rate controller, the
    stuck-request deadline's latencies (``hedge``), the stop signal."""

    def __init__(
        self,
        *,
        policy: AttemptPolicy,
        stop: StopSignal,
        hedge: HedgePolicy | None = None,
        retried: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``retried`` is called before each wait for a retry (the job counts it)."""
        self.policy = policy
        self._stop = stop
        self._hedge = hedge
        self._retried = retried
        self._clock = clock

    async def request(
        self, item: Item, encoded: EncodedImage | None, send: Send
    ) -> Row | GivenUp | Stop | None:
        """Send one item until it has a row, doing what the attempt policy decides after each
        request (``attempts.py``). ``None``: stopping, the item is left for a rerun."""
        attempts = self.policy.start(item.id)
        health, rate, stop = self.policy.health, self.policy.rate, self._stop
        while True:
            # Usually a slot is free at once: no wait, no cancel scope, no extra coroutine.
            if health.is_down or rate.try_acquire() > 0:
                await self._wait_for_turn()
            if stop.requested:
                return None
            if not health.calm:  # calm: an answer came and nothing failed since
                decision = attempts.next_request()
                if decision is not SEND:
                    assert isinstance(decision, StopJob)
                    return Stop(decision.error, attempts.requests)
            started = attempts.sending()
            try:
                prediction, race = await send(item, encoded, started)
            except RetryableError as error:
                after = attempts.failed(error, started)
                if isinstance(after, GiveUp):
                    row = self.error_row(
                        item, after.error, started, attempts.requests, message=after.message
                    )
                    return GivenUp(row, str(error))
                if not await self._retry_after(after.seconds):
                    return None
                continue
            except FatalApiError as error:
                return Stop(error, attempts.requests)
            except ItemError as error:
                health.success(started)
                rate.on_answer(started)  # a 4xx about the image: the server saw the request
                return self.error_row(item, error, started, attempts.requests)
            return self._answered(item, encoded, prediction, started, attempts.requests, race)

    async def _wait_for_turn(self) -> None:
        """Wait for the API (an outage) and a rate slot, or until a stop request."""
        health = self.policy.health
        with self._stop.unless_stopping():
            await health.wait_until_available()
            if not health.gave_up:
                await self.policy.rate.acquire()

    async def _retry_after(self, seconds: float) -> bool:
        """Count a retry and wait for it; ``False``: stopping (the item is left for a rerun)."""
        if self._stop():
            return False
        self._retried()
        await self._stop.pause(seconds)
        return True

    def error_row(
        self,
        item: Item,
        error: ItemError | RetryableError,
        started: float,
        requests: int,
        *,
        message: str | None = None,
    ) -> Row:
        """The row of an item that failed after ``requests`` requests, the last at ``started``."""
        return error_row(
            item,
            error=message or str(error),
            error_type=error.kind,
            attempts=requests,
            http_status=error.http_status,
            elapsed_ms=(self._clock() - started) * 1000,
        )

    def _answered(
        self,
        item: Item,
        encoded: EncodedImage | None,
        prediction: Prediction,
        started: float,
        attempts: int,
        race: Hedged,
    ) -> Row:
        """The row of an item the server classified; the answer feeds rate and deadline."""
        now = self._clock()
        self.policy.health.success(started)
        hedge = self._hedge
        if race.answer is None:
            self.policy.rate.on_success(started)
            if hedge is not None:
                hedge.record(now - started)
        elif hedge is not None:
            # A copy answered first and told the rate controller itself; the original's time
            # is only known to be longer than the deadline.
            hedge.record_censored()
        attempts += race.copies
        if encoded is not None and encoded.original_size is not None:
            # The server measured the downscaled copy; report the image the user has.
            prediction = prediction._replace(
                image_width=encoded.original_size[0], image_height=encoded.original_size[1]
            )
        return ok_row(item, prediction, attempts=attempts, elapsed_ms=(now - started) * 1000)
