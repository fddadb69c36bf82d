"""An asyncio event loop on virtual time, for code that does no real I/O (trio's ``MockClock``
with autojump): when every task is waiting on a timer, the clock jumps to the next one.

Every sleep, timeout and ``loop.time()`` then follows one virtual clock, so rates, outages
and backoff run in no time and the same way on a busy machine as on an idle one; code that
takes a clock (``Classifier(clock=...)``, ``RateController``) is given ``loop.time``. Meant
for in-memory transports: a task waiting on a thread or a socket is not known to the loop as
busy, so the clock may jump past its timers meanwhile.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class _JumpingSelector(selectors.BaseSelector):
    """The loop's selector: real events if any are ready, else the clock jumps by the timeout
    the loop would have slept (to its next timer) instead of sleeping."""

    def __init__(self, loop: VirtualTimeLoop, real: selectors.BaseSelector) -> None:
        self._loop = loop
        self._real = real

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:  # no timer at all: only real I/O can wake the loop
            return self._real.select(None)
        self._loop.now += timeout
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """``time()`` is virtual, starting at 1000 s; it moves only when all tasks wait."""

    def __init__(self) -> None:
        self.now = 1000.0
        super().__init__(_JumpingSelector(self, selectors.DefaultSelector()))

    def time(self) -> float:
        return self.now

    def run(self, main: Coroutine[Any, Any, T]) -> T:
        """Run ``main`` to completion on this loop, then close it."""
        asyncio.set_event_loop(self)
        try:
            return self.run_until_complete(main)
        finally:
            try:
                self.run_until_complete(self.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                self.close()
