"""Several servers behind one job: ``FleetTransport`` spreads requests and keeps each one's health.

Given ``--api-url`` more than once, the job sends through a ``FleetTransport``: a ``Transport``
(``client.py``) over several base URLs. The client builds each request for the first URL as
usual; the fleet picks a server and swaps the base URL for that server's. The worker, the
attempt policy and the rate controller see one API, with two exceptions spelt out here:

* choice: each request goes to the server with the fewest requests in flight, among those
  that are in, so a slow server gets less (ties: one whose latest outcome was an answer,
  then the one picked least recently);
* health, per server: a server is taken out at once when nothing listens there (connection
  refused, a host that does not resolve) and after ``FAILS_TO_TAKE_OUT`` failures in a row
  (timeouts, dropped connections, 5xx) with no answer in between. While out, it gets no
  user's image: ``FleetTransport.watch`` probes it with a tiny image of its own
  (``PROBE_BODY``) on a growing interval (``probe_initial`` doubling up to ``probe_max``);
  the first answer puts it back in. A probe is an inference: under ``--max-credits`` it
  takes a ticket from the job's budget (``admit_probe``) and is not sent without one. Any
  answer that is not a retryable failure (a 200, a 400 for a bad image, a 429) counts as an
  answer: the server is up;
* silence, per server: a server with requests in flight that has answered none of them for
  the stuck-request deadline (``suspect_after()``, ``hedging.py``) while another server
  answered is *silent*: it gets no new requests while another server is in and answering,
  and every request stuck on it is sent again to another server (``sending.py`` asks
  ``routed_around``), free of the budget of copies, which is meant for the rare straggler
  of a working server; so is every request stuck on a server that is out. Silent for
  ``silent_after()`` seconds (twice the deadline, at least ``SILENCE_FLOOR``), it is taken
  out. These checks run on a timer (``watch``), not only when a request goes out, so they
  also hold at the end of a job, when nothing new goes out;
* a failure on a server that is out once it is recorded, while another server is in, is
  marked ``server_out`` on the error: the attempt policy retries the item at once and does
  not count the attempt against its retries (the failure was the server's, not the image's);
* when every server is out, requests go to the server whose probe is due first, and the job's
  outage logic (``health.py``) pauses the job and probes as it does for one server.

Rate limiting stays per job (one key, one budget), whatever the number of servers.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import anyio
from yarl import URL

from ..config import HttpConfig
from ..error_types import ErrorType
from ..errors import RetryableError
from .client import new_transport
from .retry import RETRYABLE_STATUSES
from .transport import Response, Transport

#: Failures in a row, with no answer in between, that take a server out.
FAILS_TO_TAKE_OUT = 3
#: Latencies kept per server for the p95 (the most recent ones).
LATENCY_WINDOW = 1000
#: The least silence (seconds with requests in flight and no outcome) that takes a server
#: out while others answer: a GPU server may take a while on a batch now and then.
SILENCE_FLOOR = 5.0
#: Statuses that say the server (not the image, not the key) is failing.
SERVER_FAILURES = RETRYABLE_STATUSES - {429}
#: A probe's body: an 8×8 grey PNG, base64 as the client sends images. A server that is out
#: is asked with this, never with a user's image (which a hung server would hold).
PROBE_BODY = (
    b"iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAFUlEQVR42mNsaGhgwAaYGHCAwSkBADAXAZ"
    b"DUexXGAAAAAElFTkSuQmCC"
)
#: Seconds between the checks of ``FleetTransport.watch`` (silence, probes due).
WATCH_EVERY = 0.25


#: Asked before a probe: a function to call with what it cost (``None``: unknown) once it is
#: over, or ``None``: send no probe now.
ProbeAdmission = Callable[[], Callable[[float | None], None] | None]


def _no_cost(_credits: float | None) -> None:
    pass


def _free() -> Callable[[float | None], None]:
    """Without ``--max-credits``: every probe may go."""
    return _no_cost


def shown_host(url: str) -> str:
    """``host:port`` of ``url``, without a user:password part (a secret)."""
    return urlsplit(url).netloc.rpartition("@")[2] or url


class Server:
    """One server of the fleet: where it is, its counters, and whether it is in."""

    def __init__(self, base: str, transport: Transport) -> None:
        # As yarl writes it (lower-case host, no default port), as in the client's URLs.
        self.base = str(URL(base.rstrip("/"))).rstrip("/")
        self.host = shown_host(base)
        self.transport = transport
        self.in_flight = 0
        self.requests = 0
        self.ok = 0
        self.failures = 0
        self.times_out = 0
        self.fails_in_a_row = 0
        self.out_since: float | None = None
        self.next_probe = 0.0
        self.probe_interval = 0.0
        self.probing = False
        self.silent = False
        """Silent past the stuck-request deadline while others answer (``ServerPool``);
        until its next answer."""
        self.last_error: str | None = None
        self.last_answer = -1e18
        """Clock time of its latest answer."""
        self.quiet_since = 0.0
        """Clock time of its latest answer, or of the request that found it idle after an
        answer: with requests in flight, silent since then. Failures and cancelled requests
        (a copy sent elsewhere answered first) are no answer: they do not restart it."""
        self.idle_after_answer = True
        self.picked = 0
        """When it was last picked (a count of picks): ties go to the least recent."""
        self._latency_total = 0.0
        self._answered = 0
        self._recent: deque[float] = deque(maxlen=LATENCY_WINDOW)

    @property
    def is_out(self) -> bool:
        return self.out_since is not None

    def answered(self, seconds: float) -> None:
        """A latency, for the mean and the p95."""
        self._latency_total += seconds
        self._answered += 1
        self._recent.append(seconds)

    def snapshot(self) -> dict[str, Any]:
        """Counters and latency (ms) for the summary and the progress file."""
        recent = sorted(self._recent)
        p95 = recent[min(len(recent) - 1, int(0.95 * len(recent)))] if recent else None
        mean = self._latency_total / self._answered if self._answered else None
        return {
            "server": self.host,
            "state": "out" if self.is_out else "in",
            "requests": self.requests,
            "ok": self.ok,
            "failures": self.failures,
            "in_flight": self.in_flight,
            "times_out": self.times_out,
            "latency_ms_mean": None if mean is None else round(mean * 1000, 1),
            "latency_ms_p95": None if p95 is None else round(p95 * 1000, 1),
            "last_error": self.last_error if self.is_out else None,
        }


class ServerPool:
    """The choice and the health rules, without I/O: tests drive them on a fake clock."""

    def __init__(
        self,
        servers: Sequence[Server],
        *,
        probe_initial: float = 1.0,
        probe_max: float = 60.0,
        silent_after: Callable[[], float] = lambda: 60.0,
        suspect_after: Callable[[], float | None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        notify: Callable[[str | None], None] = lambda _text: None,
    ) -> None:
        """``silent_after``: seconds of silence that take a server out; ``suspect_after``:
        seconds of silence that make it silent (the stuck-request deadline; ``None``: not
        known yet)."""
        if not servers:
            raise ValueError("a fleet needs at least one server")
        self.servers = list(servers)
        self._probe_initial = probe_initial
        self._probe_max = probe_max
        self.silent_after = silent_after
        self._suspect_after = suspect_after
        self._clock = clock
        self._notify = notify
        self._picks = 0

    def pick(self) -> Server:
        """The server for the next request (counted as in flight on it until ``settle``)."""
        now = self._clock()
        self._take_out_silent(now)
        chosen = self._least_busy(now)
        if chosen is None:
            # All out: the one whose probe comes first; the job's outage logic paces these.
            chosen = min(self.servers, key=lambda s: (s.probing, s.next_probe, s.in_flight))
            chosen.probing = True
        if not chosen.in_flight and chosen.idle_after_answer:
            chosen.quiet_since = now
        self._picks += 1
        chosen.picked = self._picks
        chosen.in_flight += 1
        chosen.requests += 1
        return chosen

    def check(self) -> list[Server]:
        """The timer's check (``FleetTransport.watch``): take out the servers silent for
        ``silent_after()``; the servers out whose probe is due now (marked as probing)."""
        now = self._clock()
        self._take_out_silent(now)
        due = []
        for server in self.servers:
            if server.is_out and not server.probing and now >= server.next_probe:
                server.probing = True
                due.append(server)
        return due

    def is_silent(self, server: Server, now: float) -> bool:
        """Requests in flight on ``server``, none answered for the stuck-request deadline,
        while another server answered since: more than one request (one slow request is a
        straggler, the hedging's business), or silent already. Until its next answer."""
        limit = self._suspect_after()
        if (
            limit is None
            or not server.in_flight
            or now - server.quiet_since < limit
            or (server.in_flight < 2 and not server.silent)
        ):
            return False
        quiet_since = server.quiet_since
        silent = any(
            other.last_answer > quiet_since for other in self.servers if other is not server
        )
        if silent and not server.silent:
            server.silent = True
        return silent

    def routed_around(self, server: Server) -> bool:
        """Whether a request stuck on ``server`` is the server's fault, to be sent to another
        one free of the budget of copies: ``server`` is out or silent, and another is in and
        not silent."""
        now = self._clock()
        if not (server.is_out or self.is_silent(server, now)):
            return False
        return any(
            not other.is_out and not self.is_silent(other, now)
            for other in self.servers
            if other is not server
        )

    def _take_out_silent(self, now: float) -> None:
        """Take out a server that stopped answering while others answer."""
        limit = self.silent_after()
        for server in self.servers:
            if server.is_out or not server.in_flight or now - server.quiet_since < limit:
                continue
            if any(
                other.last_answer >= now - limit for other in self.servers if other is not server
            ):
                server.last_error = (
                    f"{server.in_flight} request(s) in flight, none answered for "
                    f"{now - server.quiet_since:.0f} s while other servers answer"
                )
                self._take_out(server, now)

    def _least_busy(self, now: float) -> Server | None:
        """The server in with the fewest requests in flight; a silent one only if all are."""
        up = [server for server in self.servers if not server.is_out]
        answering = [server for server in up if not self.is_silent(server, now)] or up
        return (
            min(answering, key=lambda s: (s.in_flight, s.fails_in_a_row > 0, s.picked))
            if answering
            else None
        )

    def answered(self, server: Server, started: float, *, ok: bool) -> None:
        """``server`` answered (not a retryable failure): it is up."""
        server.in_flight -= 1
        now = self._clock()
        server.answered(now - started)
        server.ok += ok
        self._up(server, now)

    def _up(self, server: Server, now: float) -> None:
        """``server`` answered at ``now``: not silent, back in if it was out."""
        server.last_answer = server.quiet_since = now
        server.idle_after_answer = True
        server.silent = False
        server.fails_in_a_row = 0
        server.probing = False
        if server.out_since is not None:
            server.out_since = None
            self._notify(f"server {server.host} answers again: back in")

    def probed(self, server: Server, failure: str | None) -> None:
        """A probe of ``server`` (out) was answered (``failure`` ``None``), or failed."""
        now = self._clock()
        if failure is None:
            self._up(server, now)
            return
        server.last_error = failure
        self._probe_failed(server, now)

    def _probe_failed(self, server: Server, now: float) -> None:
        """Wait longer before the next probe."""
        server.probing = False
        server.probe_interval = min(server.probe_interval * 2, self._probe_max)
        server.next_probe = now + server.probe_interval

    def failed(self, server: Server, error: RetryableError) -> bool:
        """``server`` failed a request; ``True`` if it is out now while another is in (the
        failure was the server's: retry elsewhere, not counted against the item)."""
        server.in_flight -= 1
        server.failures += 1
        server.fails_in_a_row += 1
        server.last_error = str(error)
        server.idle_after_answer = False
        now = self._clock()
        if server.is_out:
            if server.probing:  # a request sent as a probe (every server out) failed
                self._probe_failed(server, now)
        elif error.unreachable or server.fails_in_a_row >= FAILS_TO_TAKE_OUT:
            self._take_out(server, now)
        return server.is_out and any(not other.is_out for other in self.servers)

    def cancelled(self, server: Server) -> None:
        """The request was cancelled (stopping, the watchdog, a copy answered first): it says
        nothing about the server; a probe cut off is sent again when due."""
        server.in_flight -= 1
        server.idle_after_answer = False
        if server.is_out:
            server.probing = False

    def _take_out(self, server: Server, now: float) -> None:
        server.out_since = now
        server.times_out += 1
        server.probe_interval = self._probe_initial
        server.next_probe = now + server.probe_interval
        others = sum(not other.is_out for other in self.servers)
        self._notify(
            f"server {server.host} taken out ({server.last_error}); probing it, "
            f"{others} of {len(self.servers)} server(s) in"
        )

    def snapshot(self) -> list[dict[str, Any]]:
        return [server.snapshot() for server in self.servers]


class FleetTransport:
    """A ``Transport`` over several servers: picks one per request, swaps the base URL."""

    def __init__(
        self,
        servers: Sequence[tuple[str, Transport]],
        *,
        probe_initial: float = 1.0,
        probe_max: float = 60.0,
        silent_after: Callable[[], float] = lambda: 60.0,
        suspect_after: Callable[[], float | None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        notify: Callable[[str | None], None] = lambda _text: None,
    ) -> None:
        """``servers``: (base URL, transport) pairs; the client's requests are built for the
        first base URL. ``silent_after``, ``suspect_after``: see ``ServerPool``."""
        self.pool = ServerPool(
            [Server(base, transport) for base, transport in servers],
            probe_initial=probe_initial,
            probe_max=probe_max,
            silent_after=silent_after,
            suspect_after=suspect_after,
            clock=clock,
            notify=notify,
        )
        self._primary = self.pool.servers[0].base
        self._clock = clock
        self._on: dict[asyncio.Task[Any], Server] = {}
        """The server each task's request is on, while it is."""
        self.admit_probe: ProbeAdmission = _free
        """Asked before each probe, a real inference: under ``--max-credits`` the job's
        budget (``budget.py``)."""
        self._probe: tuple[URL, dict[str, str]] | None = None
        """A probe's URL (for the first server) and headers: a request's, without an
        ``image=`` URL."""

    @classmethod
    def over(
        cls,
        config: HttpConfig,
        *,
        probe_initial: float = 1.0,
        probe_max: float = 60.0,
        deadline: Callable[[], float | None] = lambda: None,
        notify: Callable[[str | None], None] = lambda _text: None,
    ) -> FleetTransport:
        """One transport (``client.new_transport``) per server of ``config.servers`` (call
        inside the event loop); ``deadline``: the stuck-request deadline
        (``HedgePolicy.deadline``), once known."""
        pairs: list[tuple[str, Transport]] = [
            (url, new_transport(config, host=shown_host(url))) for url in config.servers
        ]
        return cls(
            pairs,
            probe_initial=probe_initial,
            probe_max=probe_max,
            silent_after=lambda: silence_limit(deadline(), config.timeout),
            suspect_after=deadline,
            notify=notify,
        )

    def _rebase(self, url: URL, server: Server) -> URL:
        if server.base == self._primary:
            return url
        text = str(url)
        if not text.startswith(self._primary):
            return url  # not built on the first base URL: sent as it is
        return URL(server.base + text[len(self._primary) :], encoded=True)

    async def send(self, url: URL, body: bytes, headers: Mapping[str, str]) -> Response:
        pool = self.pool
        server = pool.pick()
        if self._probe is None:
            query = {key: value for key, value in url.query.items() if key != "image"}
            self._probe = (url.with_query(query), dict(headers))
        task = asyncio.current_task()
        if task is not None:
            self._on[task] = server
        started = self._clock()
        try:
            response = await server.transport.send(self._rebase(url, server), body, headers)
        except RetryableError as error:
            error.server_out = pool.failed(server, error)
            raise
        except BaseException:
            pool.cancelled(server)
            raise
        finally:
            if task is not None:
                del self._on[task]
        if response.status in SERVER_FAILURES:
            failure = RetryableError(f"HTTP {response.status}", kind=ErrorType.SERVER_ERROR)
            return response._replace(server_out=pool.failed(server, failure))
        pool.answered(server, started, ok=response.status == 200)
        return response

    def routed_around(self, task: asyncio.Task[Any] | None) -> bool:
        """Whether the request ``task`` is sending is on a server that is out or silent while
        another answers (``ServerPool.routed_around``): send it again elsewhere, free of
        the budget of copies (``sending.py``)."""
        server = self._on.get(task) if task is not None else None
        return server is not None and self.pool.routed_around(server)

    async def watch(self) -> None:
        """Every ``WATCH_EVERY`` seconds, take out the servers silent too long and probe
        those out; run it as a task for the job's lifetime (it never returns)."""
        async with anyio.create_task_group() as probes:
            while True:
                for server in self.pool.check():
                    probes.start_soon(self._send_probe, server)
                await anyio.sleep(WATCH_EVERY)

    async def _send_probe(self, server: Server) -> None:
        """Ask ``server`` (out) with ``PROBE_BODY``, within the silence that took it out."""
        pool = self.pool
        if self._probe is None:  # out before any request went out: none to model it on
            pool.probed(server, "no request to model a probe on yet")
            return
        url, headers = self._probe
        settle = self.admit_probe()
        if settle is None:
            pool.probed(server, "no probe: --max-credits leaves no room for one")
            return
        limit = pool.silent_after()
        try:
            with anyio.fail_after(limit):
                response = await server.transport.send(
                    self._rebase(url, server), PROBE_BODY, headers
                )
        except RetryableError as error:
            pool.probed(server, str(error))
        except TimeoutError:
            pool.probed(server, f"no answer to a probe within {limit:g} s")
        else:
            failed = response.status in SERVER_FAILURES
            pool.probed(server, f"HTTP {response.status}" if failed else None)
        finally:
            settle(None)  # a probe's cost is not read: it counts at a request's reckoning

    async def aclose(self) -> None:
        for server in self.pool.servers:
            await server.transport.aclose()

    def snapshot(self) -> list[dict[str, Any]]:
        """Per-server counters, latency and state (``in``/``out``)."""
        return self.pool.snapshot()


def silence_limit(deadline: float | None, timeout: float) -> float:
    """Seconds of silence that take a server out: twice the stuck-request deadline, at least
    ``SILENCE_FLOOR``; until the deadline is learned, the request timeout (which fails the
    requests anyway)."""
    if deadline is None:
        return timeout
    return min(timeout, max(SILENCE_FLOOR, 2 * deadline))


def server_lines(servers: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per server, for the summary and ``batchclassify status``."""
    lines = []
    for server in servers:
        mean, p95 = server.get("latency_ms_mean"), server.get("latency_ms_p95")
        latency = "no answer yet" if mean is None else f"{mean:,.0f} ms mean, {p95:,.0f} ms p95"
        line = (
            f"  {server['server']}: {server['requests']:,} requests, {server['ok']:,} ok, "
            f"{server['failures']:,} failures, {latency}"
        )
        if server.get("times_out"):
            line += f"; taken out {server['times_out']}×"
        if server.get("state") == "out":
            line += f"; OUT ({server.get('last_error')}), probing"
        lines.append(line)
    return lines
