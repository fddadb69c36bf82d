"""``--max-credits``: the budget that admits a request only if it cannot take spend past the cap.

A policy object, as the attempt policy is: each request asks ``admit`` first and hands the
ticket back with what it cost (``Ticket.settle``); ``budgeted`` wraps a worker's send so.
Spend is what the answers cost under the endpoint's billing rule (``cost.py``): the
server's own figure where it reports one, else the rule's price. A request in flight counts
at the dearest of the recent requests' costs (the highest quantile), so a round of
concurrent requests started just under the cap cannot carry spend past it: near the cap
fewer requests are admitted at once, and the last ones one by one. A request whose cost
cannot be read (no answer, or no cost header) counts at that reckoning too.

Before the first cost is known (billing by processing time), one request goes alone: its cost
sets the reckoning for the rest. The job stops once nothing is in flight and the next request
could pass the cap; what is left is then less than one request's cost.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import anyio

from ..cost import BillingRule
from ..errors import BudgetReachedError, ItemError
from ..inputs.encoding import EncodedImage
from ..models import Item, Prediction
from .requesting import Hedged, Send
from .stopping import StopSignal

#: A little slack for float sums (credits are small fractions: 0.0002 a request).
_EPSILON = 1e-12


class Ticket:
    """One admitted request's reservation; ``settle`` it exactly once."""

    __slots__ = ("_budget", "reserved")

    def __init__(self, budget: Budget, reserved: float) -> None:
        self._budget = budget
        self.reserved = reserved

    def settle(self, credits: float | None) -> None:
        """The request is over: it cost ``credits``, or (``None``) an unknown amount, which
        counts at what was reserved for it."""
        self._budget.settle(self, credits)


class Budget:
    """How much a run may still spend, and whether the next request may start."""

    #: Recent costs kept for the reckoning of a request in flight.
    window = 256

    def __init__(
        self,
        *,
        limit: float,
        rule: BillingRule,
        on_reached: Callable[[Budget], None] = lambda budget: None,
    ) -> None:
        self.limit = limit
        self.rule = rule
        self.spent = 0.0
        """Credits settled so far: reported, or reckoned where the cost could not be read."""
        self.reserved = 0.0
        """Credits reserved for the requests in flight."""
        self.in_flight = 0
        self.reached = False
        self._costs: deque[float] = deque(maxlen=self.window)
        self._dearest: float | None = None
        self._on_reached = on_reached
        self._changed: anyio.Event | None = None

    @property
    def left(self) -> float:
        return max(0.0, self.limit - self.spent)

    @property
    def estimate(self) -> float:
        """What a request is reckoned at: the dearest recent one, or the rule's prior."""
        if self.rule.per_unit is not None:
            return self.rule.per_unit  # a fixed price: known exactly
        return self._dearest if self._dearest is not None else self.rule.prior

    def try_admit(self) -> Ticket | None:
        """A ticket if a request may start now; ``None``: wait (``admit``) or, once
        ``reached``, stop."""
        if self.reached:
            return None
        if self.in_flight and self.rule.by_time and self._dearest is None:
            return None  # the first request's cost sets the reckoning: it goes alone
        estimate = self.estimate
        if self.spent + self.reserved + estimate > self.limit + _EPSILON:
            if self.in_flight == 0:
                self.reached = True
                self._wake()
                self._on_reached(self)
            return None
        self.reserved += estimate
        self.in_flight += 1
        return Ticket(self, estimate)

    async def admit(self) -> Ticket | None:
        """A ticket once a request may start; ``None``: the cap is reached. Run it where a
        stop request cancels the wait (``StopSignal.unless_stopping``)."""
        while True:
            ticket = self.try_admit()
            if ticket is not None or self.reached:
                return ticket
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()

    def settle(self, ticket: Ticket, credits: float | None) -> None:
        self.reserved = max(0.0, self.reserved - ticket.reserved)
        self.in_flight -= 1
        if credits is None:
            self.spent += ticket.reserved
        else:
            self.spent += credits
            if len(self._costs) == self._costs.maxlen:
                oldest = self._costs[0]
                self._costs.append(credits)
                if oldest == self._dearest:  # the dearest left the window: look again
                    self._dearest = max(self._costs)
            else:
                self._costs.append(credits)
            if self._dearest is None or credits > self._dearest:
                self._dearest = credits
        self._wake()

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None


def budgeted(send: Send, budget: Budget, stop: StopSignal) -> Send:
    """``send`` under the budget: each request waits for the budget's leave, and settles its
    ticket with what it cost: an answer's price (``None`` when it could not be read), nothing
    for an error the server answered (no inference), the reckoning for a request that got no
    answer, or was cancelled because a copy of it was answered first (each copy takes its
    own ticket: ``Sender``). A request the budget does not admit (the cap, or a stop request) raises
    ``BudgetReachedError``: the item is left for a rerun, and the job is stopping already."""

    async def send_paid(
        item: Item, encoded: EncodedImage | None, started: float
    ) -> tuple[Prediction, Hedged]:
        ticket = budget.try_admit()
        if ticket is None and not budget.reached:
            with stop.unless_stopping():
                ticket = await budget.admit()
        if ticket is not None and stop.requested:
            ticket.settle(0.0)  # admitted as the job stopped: never sent
            ticket = None
        if ticket is None:
            raise BudgetReachedError(
                "not sent: --max-credits", spent=budget.spent, limit=budget.limit
            )
        try:
            prediction, race = await send(item, encoded, started)
        except ItemError as error:
            answered = error.http_status is not None and not error.answered_by_copy
            ticket.settle(0.0 if answered else None)
            raise
        except BaseException:
            ticket.settle(None)
            raise
        # A copy's answer (its own ticket paid for it): this request was cancelled unanswered
        # on a server that may have run it.
        ticket.settle(None if race.answer is not None else prediction.credits)
        return prediction, race

    return send_paid
