"""When a request counts as stuck, and how many copies of stuck requests may be sent.

A hung request (the server took it and never answers) used to hold its worker for the whole
``--timeout``: with 1% of requests hanging, a fast job spent most of its time waiting on them.
Now a request without an answer goes through two steps, both learned from recent latencies:

* past ``slow_after`` (the 99th percentile of recent answers, at least ``floor``), it stops
  holding its worker's place: a spare worker takes the next items. Free, so early: a hang
  costs throughput only until then (with 1% hanging and a mean latency L, about 1% ×
  ``slow_after`` / L);
* past ``deadline`` (``factor`` × that), it is stuck: a copy of it is sent; the first answer
  wins and the other request is cancelled (the "hedged request" of Dean & Barroso, *The Tail
  at Scale*). Late enough that a slow answer seldom costs a copy. ``floor`` keeps an
  event-loop hiccup from passing for a hang; nothing happens before enough answers are seen.

A copy is a paid request, so copies come out of a budget: each request sent earns
``budget_ratio`` of a copy, so copies stay under that share of the requests, plus a small
allowance at the start. Past the budget, a stuck request waits until the requests sent since
have earned it a copy, or for its ``--timeout`` as before. The budget is for the rare
straggler of a working server: with several servers, a request stuck on one that is out or
has gone silent while the others answer (``fleet.py``) is sent again elsewhere outside it
(``copy_for_server``), or one hung server would spend it all in its first seconds.

A request answered by a copy has no latency, only a lower bound (the deadline). Leaving it out
would lower the quantile, hence the deadline, hence call more requests stuck, spiralling down;
counting its time up to the copy's answer would feed the deadline on its own value, spiralling
up. So it is kept as "longer than anything": while fewer than 1% of the window are such, the
99th percentile is an answered request's, as it should be. Once they are more, the quantile
is unknown and the longest answered request stands in for it: with 1% of requests hanging it
is the natural tail's far end, so the deadline stays close above it; after a deadline set too
low (a long tail not yet seen), requests answered just under it raise it, refresh by refresh.

``slow_after`` is capped at ``slow_cap`` × the median of the window: a moment when the machine
was busy delays a few answers by seconds, which is the 99th percentile, yet the median hardly
moves. Under such a spike ``slow_after`` rose to ~3 s and each hung request held its worker
that long. The cap only frees a worker's place earlier (free, and bounded by
``extra_requests``); the deadline of a paid copy stays on the uncapped quantile.

Spare workers and copies are requests beyond ``--concurrency``: ``extra_requests`` bounds
them together (``sending.py`` keeps the count), so a server sized for N sees at most N plus
an eighth, hung requests included. A stuck request that gets no copy is cut and sent again,
from the same budget (``try_resend``): at the deadline when no place is free for a copy,
``retry_factor`` × the deadline after its latest copy when both copies are stuck too. A
retry replaces the stuck request instead of adding to it, and the image does not wait for
``--timeout`` while the deadline is known and the budget lasts.
"""

from __future__ import annotations

import bisect
import math


def extra_requests(concurrency: int) -> int:
    """Requests beyond ``--concurrency`` in flight at once, spare workers and copies together:
    an eighth more, at least two (a single hung request must not stop a small job)."""
    return max(2, concurrency // 8)


class HedgePolicy:
    """Learns the stuck-request deadline from latencies; keeps the budget of copies.

    ``record`` and ``sent`` are called once per request, so both are O(1): the quantile is
    recomputed from a fixed window every ``refresh_every`` answers, not on every one.
    """

    #: ``slow_after`` is this quantile of recent latencies, ``deadline`` ``factor`` × it...
    quantile = 0.99
    factor = 2.0
    #: ...but never below this many seconds.
    floor = 0.25
    #: ``slow_after`` is at most this multiple of the median answer (at least ``floor``).
    slow_cap = 8.0
    #: A stuck request whose copies are stuck too is sent again this many deadlines after
    #: the latest copy.
    retry_factor = 2.0
    #: Answers needed before any request is called stuck.
    min_samples = 50
    window = 512
    refresh_every = 64
    #: Copies earned per request sent (2%); how many are given at the start; how many may be
    #: saved up (at least this many, and one per worker: a fast job's hangs surface a deadline
    #: after thousands of requests went out, all at once).
    budget_ratio = 0.02
    budget_initial = 2.0
    budget_cap = 10.0
    #: Requests in flight at once for one item: the original and up to two copies.
    max_copies = 2

    def __init__(self, *, timeout: float, concurrency: int = 1, copies: bool = True) -> None:
        """``copies=False``: no copies of stragglers (under ``--max-credits``). Copies of
        requests stuck on a server that is out or silent (``copy_for_server``) still go out:
        under ``--max-credits`` each takes its own ticket from the money budget first
        (``Sender``)."""
        self._timeout = timeout
        if not copies:
            self.budget_initial = self.budget_ratio = 0.0
        self._cap = max(self.budget_cap, float(concurrency))
        self._samples: list[float] = []
        self._count = 0  # answers so far; once the window is full, count % window is the
        # ring buffer's oldest sample
        self._next_refresh = self.min_samples
        self._deadline: float | None = None
        self._slow_after: float | None = None
        self._credit = self.budget_initial
        self.copies = 0
        """Copies sent so far (both kinds)."""
        self.server_copies = 0
        """Of which, copies of requests stuck on a server out or silent: not from the budget."""
        self.resent = 0
        """Stuck requests cut and sent again (``try_resend``)."""
        self.refused = 0
        """Stuck requests that got no copy because the budget was spent."""

    @property
    def deadline(self) -> float | None:
        """Seconds without an answer after which a copy of a request is sent; ``None``: not
        yet known, or not shorter than the request timeout (nothing to gain)."""
        return self._deadline

    @property
    def slow_after(self) -> float | None:
        """Seconds without an answer after which a request stops holding its worker's place
        (the quantile itself, at least ``floor``): free, so earlier than a copy."""
        return self._slow_after

    def record_censored(self) -> None:
        """A request answered by its copy: its own latency is beyond the deadline, unknown."""
        self.record(math.inf)

    def record(self, seconds: float) -> None:
        """A request answered (by itself), ``seconds`` after it was sent."""
        samples = self._samples
        if self._count < self.window:
            samples.append(seconds)
        else:
            samples[self._count % self.window] = seconds  # the oldest sample's place
        count = self._count = self._count + 1
        if count >= self._next_refresh:
            self._next_refresh = (
                count + self.refresh_every - count % self.refresh_every
                if count >= self.min_samples
                else self.min_samples
            )
            self._refresh()

    def _refresh(self) -> None:
        ordered = sorted(self._samples)
        high = ordered[min(len(ordered) - 1, int(self.quantile * len(ordered)))]
        if high == math.inf:
            # More requests answered by copies than the quantile allows: the longest answered.
            answered = bisect.bisect_left(ordered, math.inf)
            if answered == 0:
                return
            high = ordered[answered - 1]
        deadline = max(self.floor, self.factor * high)
        self._deadline = deadline if deadline < self._timeout else None
        median = ordered[len(ordered) // 2]
        slow_after = max(self.floor, min(high, self.slow_cap * median))
        self._slow_after = slow_after if slow_after < self._timeout else None

    def sent(self) -> None:
        """A request (not a copy) went out: it earns a share of a copy."""
        credit = self._credit + self.budget_ratio
        self._credit = credit if credit < self._cap else self._cap

    def copy_for_server(self) -> None:
        """A copy of a request stuck on a server that is out or silent (``fleet.py``): the
        server's failure, not a straggler's, so it is not taken from the budget."""
        self.copies += 1
        self.server_copies += 1

    def try_copy(self, *, first_try: bool = True) -> bool:
        """Spend one copy from the budget, if there is one. ``first_try=False`` for a stuck
        request asking again, so ``refused`` counts requests, not questions."""
        if self._spend(first_try):
            self.copies += 1
            return True
        return False

    def try_resend(self, *, first_try: bool = True) -> bool:
        """Spend one from the budget to cut a stuck request and send it again (no place or
        copy left for it): a retry may throw away a slow answer's progress, so it is paid
        for like a copy, and a server slow for everyone cannot turn into a retry storm."""
        if self._spend(first_try):
            self.resent += 1
            return True
        return False

    def _spend(self, first_try: bool) -> bool:
        if self._credit >= 1.0:
            self._credit -= 1.0
            return True
        if first_try:
            self.refused += 1
        return False
