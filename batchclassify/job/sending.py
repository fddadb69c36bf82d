"""One item's request under the watchdog, and copies of it once it is stuck (hedging).

``Sender.send`` runs the request inside ``Watchdog.watch``. Past ``slow_after``
(``hedging.py``) the watchdog calls ``Sender._overdue``, and again on each check until the
item's request is over: a spare worker takes the slow worker's place (the request no longer
counts against ``--concurrency``); past the deadline, counted from the latest request sent
for the item, and if the budget allows, a copy goes out as a task in the worker group; the
first answer wins. With several servers (``fleet.py``), a request on a server that is out or
silent while others answer (``server_failing``) is copied to another server once it is slow,
without waiting for the deadline and outside the budget of copies: the server failed, not
the request. Under ``--max-credits`` such a copy is a request like any other: it takes its
own ticket from the money budget (``budget.py``) and is not sent while the budget refuses
one; the original it cuts off is settled at its reservation, since the silent server may
have run it.

THE bound on requests in flight is kept here: spare workers and copies take one of the
``extra_requests(--concurrency)`` places beyond ``--concurrency`` (a spare for its life, a
copy for its request), and nothing is started without one. A stuck item that gets no copy
is cut and retried like a timeout, within the copies' budget: at its deadline when no place
is free, ``retry_factor`` deadlines after its latest copy when both copies are stuck too.
The retry replaces the stuck request, never adds to it.
A request the watchdog cuts (``RequestCut``) is either the loser of a race, which takes the
copy's answer, cut for that retry, or stalled, which is a timeout the worker retries.
"""

from __future__ import annotations

import asyncio
import time
from asyncio import CancelledError
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import Any

import anyio
from anyio.abc import TaskGroup

from ..api.client import ClassificationClient
from ..error_types import ErrorType
from ..errors import FatalApiError, ItemError, RetryableError
from ..inputs.encoding import EncodedImage
from ..models import Item, Prediction
from .attempts import AttemptPolicy
from .budget import Budget, Ticket
from .health import RequestCut, Watchdog, Watched
from .hedging import HedgePolicy, extra_requests
from .itemqueue import ItemQueue

#: Starts a spare worker on the item queue until the event is set.
SpareStarter = Callable[
    [ItemQueue, ClassificationClient, anyio.Event],
    Coroutine[Any, Any, None],
]


class Race(Watched):
    """One item's request (watched as itself) and the copies sent once it was stuck: the
    first answer wins. One object per request: the watchdog's entry is the race."""

    # Class-level defaults (see ``Watched``): a request that is never stuck sets only these
    # six, and its start.
    answer: Prediction | Exception | None = None
    copies = 0
    scopes: list[anyio.CancelScope] | None = None
    spare: anyio.Event | None = None
    stuck = False
    refused = False
    done = False
    retry = False  # cut to be sent again: no copy could be sent
    rerouted: list[Watched] | None = None  # requests copied for their server's failure

    def __init__(
        self,
        sender: Sender,
        item: Item,
        encoded: EncodedImage | None,
        client: ClassificationClient,
        items_in: ItemQueue,
        started: float,
    ) -> None:
        self._dog = sender._watchdog
        self.started = self.last_sent = started  # last_sent: the latest request for the item
        self.sender = sender
        self.item = item
        self.encoded = encoded
        self.client = client
        self.items_in = items_in

    def overdue(self) -> bool:
        return self.sender._overdue(self, self)


class Sender:
    """Sends requests under the watchdog; hedges the stuck ones within the budget."""

    def __init__(
        self,
        *,
        policy: AttemptPolicy,
        hedge: HedgePolicy,
        watchdog: Watchdog,
        timeout: float,
        concurrency: int,
        start_spare: SpareStarter,
        stopping: Callable[[], bool],
        notify: Callable[[str | None], None],
        clock: Callable[[], float] = time.monotonic,
        budget: Budget | None = None,
    ) -> None:
        self._policy = policy
        self._budget = budget
        """``--max-credits``: each copy of a stuck request takes its own ticket."""
        self._hedge = hedge
        self._watchdog = watchdog
        self._timeout = timeout
        self.concurrency = concurrency
        """``--concurrency``: spare workers and copies stay within ``extra_requests`` of it."""
        self._start_spare = start_spare
        self._stopping = stopping
        self._notify = notify
        self._clock = clock
        self.group: TaskGroup | None = None
        """The worker group, while workers run: copies and spares are started in it."""
        self.spares = 0
        """Spare workers standing in for ones whose request is stuck."""
        self.copies_out = 0
        """Copies sent and not over yet (with ``spares``: the requests beyond --concurrency)."""
        self.server_failing: Callable[[asyncio.Task[Any] | None], bool] = lambda _task: False
        """Whether the request a task is sending is on a server that is out or silent while
        another answers (``FleetTransport.routed_around``; the job sets it for a fleet)."""
        self._stuck = 0

    async def send(
        self,
        item: Item,
        encoded: EncodedImage | None,
        started: float,
        *,
        client: ClassificationClient,
        items_in: ItemQueue,
    ) -> tuple[Prediction, Race]:
        """One request under the watchdog, and its race: copies sent, whether one won
        (``race.answer`` set).

        A request the watchdog cuts for a stall raises ``RetryableError`` (a timeout).
        """
        # Also before the deadline is known: a request sent in the first burst can hang too.
        race = Race(self, item, encoded, client, items_in, started)
        self._hedge.sent()
        race.begin()
        try:
            # post() hands back the client's own coroutine: no layer of its own.
            return await post(item, encoded, client), race
        except CancelledError:
            if not race.cut_off():
                raise
            if isinstance(race.answer, ItemError):
                race.answer.answered_by_copy = True
            if isinstance(race.answer, Exception):
                raise race.answer from None
            if race.answer is not None:
                return race.answer, race
            if race.retry:
                self._hedge.record_censored()  # no latency of its own: beyond the deadline
                raise RetryableError(
                    f"no answer after {self._clock() - race.started:.1f} s, nor from "
                    f"{race.copies} copy(ies): sent again",
                    kind=ErrorType.TIMEOUT,
                    retry_after=0.0,  # at once, as a copy would go: the request hung, the
                    # server did not ask for time
                ) from None
            raise RetryableError(
                "no answer, and no other request completed either, for "
                f"{self._watchdog.stall_after:g} s: the connection was stuck; cancelled "
                "by the watchdog",
                kind=ErrorType.TIMEOUT,
            ) from None
        finally:
            race.end()
            self._settle(race)

    def _place_free(self) -> bool:
        """Whether one more request beyond ``--concurrency`` may start (a spare or a copy)."""
        return self.spares + self.copies_out < extra_requests(self.concurrency)

    def spare_done(self) -> None:
        """A spare worker has stopped: its place is free."""
        self.spares -= 1

    def _overdue(self, race: Race, request: Watched) -> bool:
        """Called by the watchdog, for the original and each copy (``request``), once past
        ``slow_after`` and again on each check until the item's request is over (``True``):
        frees the worker's place; then sends a copy (at once if ``request`` is on a server
        that is out or silent, outside the budget; else past the deadline if the budget
        allows), or, with no copy to send, cuts the item for a retry (``hedging.py``)."""
        group = self.group
        if race.done or self._stopping() or group is None:
            return True
        if race.spare is None and self._place_free():
            # The slow request no longer counts against --concurrency: a spare worker takes
            # the next items until it settles.
            race.spare = anyio.Event()
            self.spares += 1
            race.items_in.join()
            group.start_soon(self._start_spare, race.items_in, race.client, race.spare)
        hedge = self._hedge
        deadline = hedge.deadline
        server_failed = self.server_failing(request.task) and not (
            race.rerouted is not None and request in race.rerouted
        )
        since = self._clock() - race.last_sent
        if not server_failed and (deadline is None or since < deadline):
            return False
        if not race.stuck:
            race.stuck = True
            self._stuck += 1
        if self._policy.health.is_down:
            return False
        can_copy = race.copies < HedgePolicy.max_copies and self._place_free()
        if server_failed:
            # Outside the budget of copies: the server failed, not the request. With no
            # place for a copy, a retry (which goes elsewhere) takes the stuck one's place.
            if not can_copy:
                return self._resend(race)
            ticket: Ticket | None = None
            if self._budget is not None:
                ticket = self._budget.try_admit()
                if ticket is None:
                    return False  # a paid request the budget does not admit (yet): ask again
            hedge.copy_for_server()
            if race.rerouted is None:
                race.rerouted = []
            race.rerouted.append(request)
            self._copy(race, ticket, server_failed=True)
            return False
        if can_copy:
            if hedge.try_copy(first_try=not race.refused):
                self._copy(race, None, server_failed=False)
            else:
                self._refused(race, deadline)
            return False
        # No place for a copy: sent again now, in the stuck request's own place. Its copies
        # stuck too: once they have had ``retry_factor`` deadlines.
        resend_after = 1.0 if race.copies < HedgePolicy.max_copies else hedge.retry_factor
        if deadline is not None and since >= resend_after * deadline:
            if hedge.try_resend(first_try=not race.refused):
                return self._resend(race)
            self._refused(race, deadline)
        return False

    @staticmethod
    def _resend(race: Race) -> bool:
        """Cut the item's requests: ``send`` raises a timeout, which the worker retries."""
        race.retry = True
        race.cut_now()
        return True

    def _refused(self, race: Race, deadline: float | None) -> None:
        """A stuck request got no copy: the budget is spent (said once per request)."""
        if not race.refused:
            race.refused = True
            self._notify(
                f"{self._stuck} request(s) with no answer after {deadline or 0:.1f} s; copies "
                f"are capped at {HedgePolicy.budget_ratio:.0%} of requests, so waiting (up "
                f"to --timeout {self._timeout:g} s)"
            )

    def _copy(self, race: Race, ticket: Ticket | None, *, server_failed: bool) -> None:
        """Send a copy of the item's request, in one of the places beyond --concurrency
        (``ticket``: its admission under ``--max-credits``)."""
        assert self.group is not None
        race.copies += 1
        race.last_sent = self._clock()
        self.copies_out += 1
        self.group.start_soon(self._send_copy, race, ticket)
        hedge = self._hedge
        if server_failed:
            self._notify(
                f"request(s) stuck on a server that is out or not answering: sent to another "
                f"({hedge.server_copies:,} so far)"
            )
        else:
            self._notify(
                f"{self._stuck} request(s) with no answer after {hedge.deadline or 0:.1f} s: "
                f"sent again ({hedge.copies - hedge.server_copies:,} so far)"
            )

    async def _send_copy(self, race: Race, ticket: Ticket | None) -> None:
        """A copy of a stuck request; if it is answered first, its answer is the item's.
        ``ticket``: its admission under ``--max-credits``, settled as ``budgeted`` settles a
        request: its price, nothing for an error the server answered (or a copy never
        sent), the reservation when it got no answer (the server may have run it)."""
        cost: float | None = 0.0
        scope = anyio.CancelScope()
        if race.scopes is None:
            race.scopes = []
        race.scopes.append(scope)
        try:
            with scope:
                if race.done:
                    return
                rate, health = self._policy.rate, self._policy.health
                if rate.try_acquire() > 0:
                    await rate.acquire()
                started = self._clock()
                watched = self._watchdog.watch(started)
                watched.on_overdue = partial(self._overdue, race, watched)
                answer: Prediction | Exception
                cost = None
                try:
                    async with watched:
                        answer = await post(race.item, race.encoded, race.client)
                except RequestCut:
                    return  # stalled, or the original was answered first
                except RetryableError as error:
                    # The original may still answer, get another copy, or be sent again.
                    self._policy.note_failure(error, race.item.id, started)
                    cost = 0.0 if error.http_status is not None else None
                    return
                except (ItemError, FatalApiError) as error:
                    health.success(started)
                    rate.on_answer(started)
                    cost = 0.0 if error.http_status is not None else None
                    answer = error
                else:
                    health.success(started)
                    rate.on_success(started)
                    self._hedge.record(self._clock() - started)
                    cost = answer.credits
                if not race.done:
                    race.answer = answer
                    race.cut_now()
        finally:
            self.copies_out -= 1  # its place is free
            if ticket is not None:
                ticket.settle(cost)

    def _settle(self, race: Race) -> None:
        """The item's request is over: cancel copies still out, send its spare home."""
        race.done = True
        if race.scopes is not None:
            for scope in race.scopes:
                scope.cancel()
        if race.spare is not None:
            race.spare.set()
        if race.stuck:
            self._stuck -= 1


def post(
    item: Item, encoded: EncodedImage | None, client: ClassificationClient
) -> Awaitable[Prediction]:
    """The item's request: its encoded bytes, or its URL for the server to fetch."""
    if encoded is not None:
        return client.classify_bytes(encoded.body)
    return client.classify_url(item.url or "")
