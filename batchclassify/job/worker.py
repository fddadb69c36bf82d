"""The workers: each takes the next item, reads it, sends it, records its row.

One ``Workers`` serves all worker tasks of a job (they share the attempt policy, the sender
and the file reader); the runner starts ``work`` once per ``--concurrency``, and the sender
starts it again for a spare worker standing in for one whose request is stuck. A worker
reads and encodes its image *before* asking for a rate slot, so file I/O never holds one;
the encoded body is kept for its retries. Its requests go through ``requesting.py``, the
loop the Ray actors share: after each request it does what the attempt policy
(``attempts.py``) decides: send, wait, give up with a row, or stop the job.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

import anyio

from ..api.client import ClassificationClient
from ..errors import BudgetReachedError, ItemError, JobStopped, OutputError
from ..inputs.encoding import EncodedImage
from ..inputs.fileread import FileReader
from ..models import Item, error_row
from ..summary import JobSummary
from .answers import CachingClassifier
from .attempts import AttemptPolicy
from .budget import Budget, budgeted
from .health import Watchdog
from .hedging import HedgePolicy
from .itemqueue import ItemQueue
from .requesting import GivenUp, ItemRequests, Row, Send, Stop
from .sending import Sender
from .stopping import StopSignal


class Recorder(Protocol):
    """``Job._record``: hands one finished row to the sink and counts it in the summary."""

    def __call__(
        self, row: dict[str, Any], *, group: str | None = None, at: str | None = None
    ) -> None:
        """``group``: what the summary counts an error under (default: its message);
        ``at``: where in its source the item was (a manifest line)."""


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
        notify: Callable[[str | None], None],
        timeout: float,
        concurrency: int,
        clock: Callable[[], float] = time.monotonic,
        budget: Budget | None = None,
    ) -> None:
        self._budget = budget
        """``--max-credits`` (``budget.py``): asked before every request."""
        self._reader = reader
        self.answers = answers
        """The answer cache and in-flight sharing every item goes through; the job replaces
        it with the one holding its ``--cache`` file when it starts."""
        self._stop = stop
        self._record = record
        self._fail = fail
        self._summary = summary
        self._requests = ItemRequests(
            policy=policy, stop=stop, hedge=hedge, retried=self._retried, clock=clock
        )
        self.sender = Sender(
            policy=policy,
            hedge=hedge,
            watchdog=watchdog,
            timeout=timeout,
            concurrency=concurrency,
            start_spare=self.work,
            stopping=stop,
            notify=notify,
            clock=clock,
            budget=budget,
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
        # This worker's requests go out on its client; a stuck one may start a spare on its
        # queue (sending.py).
        send: Send = partial(self.sender.send, client=client, items_in=queue)
        if self._budget is not None:
            send = budgeted(send, self._budget, self._stop)
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
                    await self._classify(item, send)
                except BudgetReachedError:
                    return  # the budget stopped the job gently; the item is left for a rerun
                except JobStopped as error:
                    self._fail(error)
                    return
        finally:
            queue.leave()
            if until is not None:
                self.sender.spare_done()

    async def _classify(self, item: Item, send: Send) -> None:
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
                outcome: Row | GivenUp | Stop | None = None
                try:
                    outcome = await self._requests.request(item, encoded, send)
                finally:
                    row = outcome.row if isinstance(outcome, GivenUp) else None
                    if isinstance(outcome, dict):
                        row = outcome
                    answers.land(key, flight, row)
                if isinstance(outcome, Stop):
                    # The API refused the job or is gone: the item is left for a rerun.
                    self._fail(outcome.error)
                    return
                if isinstance(outcome, GivenUp):
                    # Counted under its error, not its count of requests.
                    self._record(outcome.row, group=outcome.group)
                    return
        if row is not None:
            self._record(row)

    async def _read(self, item: Item, path: str) -> EncodedImage | None:
        """The item's file, read and encoded; ``None``: recorded as an error row (a file that
        cannot be used), or stopping while waiting for a file descriptor."""
        try:
            return await self._reader.encode(path)
        except ItemError as error:
            self._record(error_row(item, error=str(error), error_type=error.kind, attempts=0))
            return None

    def _retried(self) -> None:
        """A request is to be sent again: the summary counts it (and the display reads it)."""
        self._summary.retries += 1
