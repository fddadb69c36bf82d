"""A whole job on virtual time: an event loop whose clock jumps, and an API in memory.

``run_virtual`` runs a coroutine on ``VirtualTimeLoop``, an asyncio loop whose ``time()`` only
moves when every task waits on a timer: then it jumps to the next one (trio's ``MockClock``
with ``autojump_threshold=0``, for asyncio). ``anyio.sleep``, ``fail_after`` and the job's
clock (``Job(clock=loop.time)``) all read it, so a one-second Retry-After, a 0.4 s watchdog
or a 40/s rate limit take no wall-clock time and come out the same on a loaded machine as
on an idle one. While a worker thread runs (the producer reads its batches in one, the count
runs in one) the clock stands still: thread work takes no virtual time, so a busy machine
cannot make a timer fire "early".

``MemoryApi`` is the transport such a job talks to: the local server's knobs (latency, a
sliding-window rate limit, scripted faults, hangs and drops, refusing connections while
down) applied to each request in memory, on the same clock, and every arrival recorded.
Its answers are what ``AiohttpTransport`` makes of the local server's, errors and messages
included. Tests whose subject is the wire stay on real sockets (conftest.py).
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import anyio
import orjson
from yarl import URL

from batchclassify.api.client import Response
from batchclassify.error_types import ErrorType
from batchclassify.errors import RetryableError
from batchclassify.server.faults import Fault, Faults, FaultSpec, SlidingWindowLimiter, as_fault

_T = TypeVar("_T")


class _JumpingSelector(selectors.DefaultSelector):
    """Polls for real; when nothing is ready and no worker thread is busy, moves the loop's
    clock to the next timer instead of sleeping until it."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = super().select(0)
        if events or (timeout is not None and timeout <= 0):
            return events
        while self._loop.threads_busy():
            # A thread is working: its answer comes through the loop's self-pipe. Wait for
            # it in real time, with the virtual clock standing still.
            events = super().select(0.05)
            if events:
                return events
        if timeout is None:
            # Nothing scheduled and no thread busy: only outside I/O can wake the loop (the
            # runner shutting down its executor). Wait for it, a while at a time.
            return super().select(1.0)
        self._loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on virtual time (see the module docstring); starts at ``START``."""

    START = 1000.0

    def __init__(self) -> None:
        super().__init__(selector=_JumpingSelector(self))
        self._now = self.START
        self._threads: anyio.CapacityLimiter | None = None

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def watch_threads(self, limiter: anyio.CapacityLimiter) -> None:
        """Stand still while ``limiter`` (anyio's default: every ``to_thread`` call) is used."""
        self._threads = limiter

    def threads_busy(self) -> bool:
        return self._threads is not None and self._threads.borrowed_tokens > 0


def run_virtual(func: Callable[[], Awaitable[_T]]) -> _T:
    """``anyio.run(func)`` on a ``VirtualTimeLoop``."""

    async def main() -> _T:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualTimeLoop)
        loop.watch_threads(anyio.to_thread.current_default_thread_limiter())
        return await func()

    return anyio.run(main, backend="asyncio", backend_options={"loop_factory": VirtualTimeLoop})


def loop_time() -> float:
    """The running loop's clock: virtual under ``run_virtual``."""
    return asyncio.get_running_loop().time()


@dataclass(frozen=True)
class Arrival:
    """One request as the API saw it: when (loop time), for which image, and its fate: an
    HTTP status, or ``refused``, ``drop``, ``hang``."""

    at: float
    image: str
    outcome: int | str


HOST = "api.example"


class MemoryApi:
    """The local server's behaviour in memory, as a ``Transport`` (see the module docstring).

    Each request: refused while ``down``; else the next scripted fault, then the rate limit
    (429 with Retry-After in whole seconds, at least 1), then ``latency``, then a per-image
    fault, then the answer. ``timeout`` cuts a request as aiohttp's total timeout does.
    The answer's class is the image URL's last ``-``-separated word (``07-blue.jpg``: blue).
    On virtual time each request costs the client ``send_cost`` (0.1 ms, about what the real
    client spends on one), so requests sent together reach the API in an order, not at once.
    """

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        latency: float = 0.0,
        rate_limit: float | None = None,
        send_cost: float = 0.0001,
        clock: Callable[[], float] = loop_time,
    ) -> None:
        self.timeout = timeout
        self.latency = latency
        self.send_cost = send_cost
        self.down = False
        self.arrivals: list[Arrival] = []
        self._clock = clock
        self._faults = Faults()
        self._limiter = SlidingWindowLimiter(rate_limit, clock=clock) if rate_limit else None

    # -- knobs, as BackgroundServer has them -----------------------------------------------

    def script(self, *responses: FaultSpec) -> None:
        """The next requests answer these, in order, then normally again."""
        self._faults.push([as_fault(r) for r in responses])

    def fail_next(self, n: int, status: int) -> None:
        self.script(*[Fault(status=status)] * n)

    def fail_image(self, image: str, fault: FaultSpec, *, times: int | None = None) -> None:
        """Requests for ``image`` (its URL) answer ``fault``; ``times=None``: for ever."""
        self._faults.add_image(image, as_fault(fault), times)

    def clear_faults(self) -> None:
        self._faults.clear()

    # -- what was asked ----------------------------------------------------------------------

    def count(self, outcome: int | str) -> int:
        return sum(1 for arrival in self.arrivals if arrival.outcome == outcome)

    def times(self, outcome: int | str | None = None) -> list[float]:
        return [a.at for a in self.arrivals if outcome is None or a.outcome == outcome]

    # -- the transport -----------------------------------------------------------------------

    async def send(self, url: URL, body: bytes, headers: Mapping[str, str]) -> Response:
        image = url.query.get("image", "")
        loop = asyncio.get_running_loop()
        if isinstance(loop, VirtualTimeLoop):
            loop.advance(self.send_cost)  # requests leave one after another, not at one instant
        arrival = len(self.arrivals)
        self.arrivals.append(Arrival(self._clock(), image, 200))
        await anyio.lowlevel.checkpoint()  # a real request yields to the event loop
        try:
            with anyio.fail_after(self.timeout):
                return await self._answer(image, arrival)
        except _Answer as answer:
            return answer.response
        except TimeoutError:
            raise RetryableError(
                f"no answer from {HOST} within {self.timeout:g} s "
                "(raise --timeout if the server is just slow)",
                kind=ErrorType.TIMEOUT,
            ) from None

    async def aclose(self) -> None:
        pass

    def _mark(self, arrival: int, outcome: int | str) -> None:
        self.arrivals[arrival] = Arrival(self.arrivals[arrival].at, self.arrivals[arrival].image,
                                         outcome)  # fmt: skip

    async def _answer(self, image: str, arrival: int) -> Response:
        if self.down:
            self._mark(arrival, "refused")
            error = RetryableError(
                f"cannot connect to {HOST}: [Errno 111] Connection refused",
                kind=ErrorType.CONNECTION,
            )
            error.unreachable = True
            raise error
        fault = self._faults.next()
        if fault is not None:
            await self._apply(fault, arrival)
        if self._limiter is not None and (wait := self._limiter.acquire()) is not None:
            return self._status(arrival, 429, {"Retry-After": str(max(1, -int(-wait // 1)))})
        if self.latency > 0:
            await anyio.sleep(self.latency)
        if self._faults.has_images and (for_image := self._faults.for_image(image)):
            await self._apply(for_image, arrival)
        top = image.rsplit("/", 1)[-1].rsplit(".", 1)[0].rsplit("-", 1)[-1] or "red"
        answer = {"top": top, "confidence": 0.9, "predictions": [{"class": top,
                                                                  "confidence": 0.9}]}  # fmt: skip
        return Response(200, {}, orjson.dumps(answer))

    async def _apply(self, fault: Fault, arrival: int) -> None:
        """Carry out a fault: wait, hang or drop; a status other than 200 is raised as
        ``_Answer``, which ``send`` returns."""
        if fault.delay > 0:
            await anyio.sleep(fault.delay)
        if fault.action == "hang":
            self._mark(arrival, "hang")
            await anyio.sleep_forever()
        if fault.action == "drop":
            self._mark(arrival, "drop")
            raise RetryableError(
                f"{HOST} closed the connection before answering", kind=ErrorType.CONNECTION
            )
        if fault.status != 200:
            headers = fault.headers
            if headers is None:
                headers = {"Retry-After": "1"} if fault.status in (429, 503) else {}
            raise _Answer(self._status(arrival, fault.status, headers, fault.message))

    def _status(
        self, arrival: int, status: int, headers: Mapping[str, str], message: str | None = None
    ) -> Response:
        self._mark(arrival, status)
        text = message or {429: "Too Many Requests", 500: "Internal error."}.get(status, "Error.")
        return Response(status, dict(headers), orjson.dumps({"message": text}))


class _Answer(Exception):
    """Not an error: a fault's answer on its way out of ``_apply``."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def most_in_one_second(times: list[float], window: float = 1.0) -> int:
    """The most of ``times`` in any half-open window ``[t, t + window)``."""
    times = sorted(times)
    return max((sum(1 for t in times[i:] if t < start + window) for i, start in enumerate(times)),
               default=0)  # fmt: skip
