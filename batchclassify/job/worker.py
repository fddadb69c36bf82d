"""The workers: each takes the next item, reads it, sends it, records its row.

One ``Workers`` serves all worker tasks of a job (they share the attempt policy, the sender
and the file reader); the runner starts ``work`` once per ``--concurrency``, and the sender
starts it again for a spare worker standing in for one whose request is stuck. A worker
reads and encodes its image *before* asking for a rate slot, so file I/O never holds one;
the encoded body is kept for its retries. After each request it does what the attempt
policy (``attempts.py``) decides: send, wait, give up with a row, or stop the job.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import anyio

from ..api.client import ClassificationClient
from ..errors import ItemError, JobStopped, OutputError, RetryableError
from ..inputs.encoding import EncodedImage
from ..inputs.fileread import FileReader
from ..models import Item, Prediction, error_row, ok_row
from ..summary import JobSummary, ProgressListener
from .answers import CachingClassifier, Row
from .attempts import SEND, AttemptPolicy, GiveUp, StopJob
from .health import Watchdog
from .hedging import HedgePolicy
from .itemqueue import ItemQueue
from .sending import Race, Sender
from .stopping import StopSignal


class Recorder(Protocol):
    """``Job._record``: hands one finished row to the sink and counts it in the summary."""

    def __call__(
        self, row: dict[str, Any], *, group: str | None = None, at: str | None = None
    ) -> None:
        """``group``: what the summary counts an error under (default: its message);
        ``at``: where in its source the item was (a manifest line)."""


class GivenUp(NamedTuple):
    """An item whose retries ran out: its row, and what the summary counts it under."""

    row: Row
    group: str


class Workers:
    """What the job's worker tasks share; ``work`` is one worker's loop."""

    def __init__(
        self,
        *,
        policy: AttemptPolicy,
        hedge: HedgePolicy,
        watchdog: Watchdog,
        reader: FileReader,
        answers: CachingClassifier,
        stop: StopSignal,
        record: Recorder,
        fail: Callable[[JobStopped | OutputError], None],
        summary: JobSummary,
        progress: ProgressListener,
        timeout: float,
        concurrency: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._policy = policy
        self._hedge = hedge
        self._reader = reader
        self.answers = answers
        """The answer cache and in-flight sharing every item goes through; the job replaces
        it with the one holding its ``--cache`` file when it starts."""
        self._stop = stop
        self._record = record
        self._fail = fail
        self._summary = summary
        self._progress = progress
        self._clock = clock
        self.sender = Sender(
            policy=policy,
            hedge=hedge,
            watchdog=watchdog,
            timeout=timeout,
            concurrency=concurrency,
            start_spare=self.work,
            stopping=stop,
            notify=progress.note,
            clock=clock,
        )
        """Sends each request; its ``group`` must be set to the worker task group."""

    async def work(
        self,
        queue: ItemQueue,
        client: ClassificationClient,
        until: anyio.Event | None = None,
    ) -> None:
        """Classify items until there are none; a spare worker (``until`` given) stops once
        the stuck request it stands in for has settled. Whoever starts a worker has
        ``queue.join()``-ed it."""
        items = queue.items
        try:
            while not self._stop.requested and (until is None or not until.is_set()):
                if items:  # the usual case: an item is waiting, no await
                    item = items.popleft()
                    if queue.producer_waiting:
                        queue.took()
                else:
                    next_item = await queue.wait_for_item()
                    if next_item is None:
                        break
                    item = next_item
                try:
                    await self._classify(item, client, queue)
                except JobStopped as error:
                    self._fail(error)
                    return
        finally:
            queue.leave()
            if until is not None:
                self.sender.spares -= 1

    async def _classify(
        self,
        item: Item,
        client: ClassificationClient,
        items_in: ItemQueue,
    ) -> None:
        """Classify one item and record its row: from the answer cache, an identical image
        in flight, or requests (``answers.py``). Stopping leaves the item for a rerun.

        The ``CachingClassifier`` steps are plain calls here, not a wrapping coroutine: this
        runs once per image, and each coroutine layer costs on every step of every request."""
        encoded: EncodedImage | None = None
        path = item.path
        if path is not None:
            try:
                encoded = self._reader.encode_inline(path)
            except ItemError as error:
                self._record(error_row(item, error=str(error), error_type=error.kind, attempts=0))
                return
            if encoded is None:
                encoded = await self._read(item, path)
                if encoded is None:
                    return
        answers = self.answers
        key, row = answers.lookup(item, encoded)
        if row is None:
            flight = answers.in_flight(key, encoded)
            if flight is not None:
                row = await answers.follow(item, encoded, flight)
            else:
                flight = answers.take_off(key, item.id, encoded)
                outcome: Row | GivenUp | None = None
                try:
                    outcome = await self._request(item, encoded, client, items_in)
                finally:
                    row = outcome.row if isinstance(outcome, GivenUp) else outcome
                    answers.land(key, flight, row)
                if isinstance(outcome, GivenUp):
                    # Counted under its error, not its count of requests.
                    self._record(outcome.row, group=outcome.group)
                    return
        if row is not None:
            self._record(row)

    async def _request(
        self,
        item: Item,
        encoded: EncodedImage | None,
        client: ClassificationClient,
        items_in: ItemQueue,
    ) -> Row | GivenUp | None:
        """Send one item until it has a row, doing what the attempt policy decides after each
        request (``attempts.py``); ``None``: stopping, the item is left for a rerun."""
        attempts = self._policy.start(item.id)
        health, rate, stop = self._policy.health, self._policy.rate, self._stop
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
                    self._fail(decision.error)
                    return None
            started = attempts.sending()
            try:
                prediction, race = await self.sender.send(item, encoded, client, started, items_in)
            except RetryableError as error:
                after = attempts.failed(error, started)
                if isinstance(after, GiveUp):
                    row = self._error_row(
                        item, after.error, started, attempts.requests, message=after.message
                    )
                    return GivenUp(row, str(error))
                if not await self._retry_after(after.seconds):
                    return None
                continue
            except ItemError as error:
                health.success(started)
                rate.on_answer(started)  # a 4xx about the image: the server saw the request
                return self._error_row(item, error, started, attempts.requests)
            return self._answered(item, encoded, prediction, started, attempts.requests, race)

    async def _read(self, item: Item, path: str) -> EncodedImage | None:
        """The item's file, read and encoded; ``None``: recorded as an error row (a file that
        cannot be used), or stopping while waiting for a file descriptor."""
        try:
            return await self._reader.encode(path)
        except ItemError as error:
            self._record(error_row(item, error=str(error), error_type=error.kind, attempts=0))
            return None

    async def _wait_for_turn(self) -> None:
        """Wait for the API (an outage) and a rate slot, or until a stop request."""
        health = self._policy.health
        with self._stop.unless_stopping():
            await health.wait_until_available()
            if not health.gave_up:
                await self._policy.rate.acquire()

    async def _retry_after(self, seconds: float) -> bool:
        """Count a retry and wait for it; ``False``: stopping (the item is left for a rerun)."""
        if self._stop():
            return False
        self._summary.retries += 1
        self._progress.retried()
        await self._stop.pause(seconds)
        return True

    def _error_row(
        self,
        item: Item,
        error: ItemError | RetryableError,
        started: float,
        requests: int,
        *,
        message: str | None = None,
    ) -> dict[str, Any]:
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
        race: Race,
    ) -> Row:
        """The row of an item the server classified; the answer feeds rate and deadline."""
        now = self._clock()
        self._policy.health.success(started)
        if race.answer is None:
            self._policy.rate.on_success(started)
            self._hedge.record(now - started)
        else:
            # A copy answered first and told the rate controller itself; the original's time
            # is only known to be longer than the deadline.
            self._hedge.record_censored()
        attempts += race.copies
        if encoded is not None and encoded.original_size is not None:
            # The server measured the downscaled copy; report the image the user has.
            prediction = prediction._replace(
                image_width=encoded.original_size[0], image_height=encoded.original_size[1]
            )
        return ok_row(item, prediction, attempts=attempts, elapsed_ms=(now - started) * 1000)
