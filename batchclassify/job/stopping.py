"""A job's stop request, as the workers see it: no new items, and waits end at once.

A stop request lets requests on the wire finish (the runner cuts them after a grace
period), but a wait for a turn (an outage, a rate-limit pause, a backoff, a process out of
file descriptors) ends at once: each such wait runs under ``unless_stopping()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import anyio


class StopSignal:
    """Set once by ``request()``; cancels the waits in progress and every later one."""

    def __init__(self) -> None:
        self.requested = False
        self._waits: set[anyio.CancelScope] = set()

    def __call__(self) -> bool:
        """Whether a stop was requested (the signal is its own predicate)."""
        return self.requested

    def request(self) -> None:
        """Stop: end every wait in progress. Call on the event loop's thread."""
        self.requested = True
        for scope in list(self._waits):
            scope.cancel()

    @contextmanager
    def unless_stopping(self) -> Iterator[None]:
        """A wait for a turn that a stop request ends at once (or skips, if already made)."""
        scope = anyio.CancelScope()
        if self.requested:
            scope.cancel()
        self._waits.add(scope)
        try:
            with scope:
                yield
        finally:
            self._waits.discard(scope)

    async def wait(self) -> None:
        """Until a stop request (at once if one was made)."""
        with self.unless_stopping():
            await anyio.sleep_forever()

    async def pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or until a stop request."""
        with self.unless_stopping():
            await anyio.sleep(seconds)
