"""The producer's items on their way to the workers: a deque refilled in runs.

Workers take the next item with a plain ``popleft`` (no await, no call into a stream); the
producer appends and waits only when the queue is full, and is woken once it is down to a
quarter, not for every item. (A bounded anyio memory stream, used before, cost the producer
two task steps per item once its buffer was full, and each worker a Python-level
``receive_nowait``: ~200 bytecodes per image, 3% of a fast job's CPU.)

Single event loop, no locks: every method runs on the loop that runs the job.
"""

from __future__ import annotations

from collections import deque

import anyio

from ..models import Item


class ItemQueue:
    """Bounded: ``capacity`` items at most; ``close()`` once the producer is done."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.items: deque[Item] = deque()
        """Workers pop from the left while it holds items, then call ``wait_for_item``."""
        self.capacity = capacity
        self.low = max(1, capacity // 4)
        """Down to this many items, a producer waiting for room is woken."""
        self.closed = False
        """The producer is done: no item will come after those in ``items``."""
        self.consumers = 0
        """Workers taking items (spares included); the producer stops once none is left."""
        self.producer_waiting = False
        self._room: anyio.Event | None = None
        self._more: anyio.Event | None = None

    # -- the producer ---------------------------------------------------------------------

    def put_nowait(self, item: Item) -> bool:
        """Append ``item`` if there is room; ``False``: full (``wait_for_room`` first)."""
        if len(self.items) >= self.capacity:
            return False
        self.items.append(item)
        if self._more is not None:
            self._more.set()
            self._more = None
        return True

    async def wait_for_room(self) -> bool:
        """Wait until the queue is down to ``low`` items; ``False``: no worker is left to
        take any (they stopped), so the producer should stop too."""
        while self.consumers and len(self.items) > self.low:
            self.producer_waiting = True
            room = self._room = anyio.Event()
            try:
                await room.wait()
            finally:
                self.producer_waiting = False
                self._room = None
        return self.consumers > 0

    def close(self) -> None:
        """No more items: workers finish those left, then stop."""
        self.closed = True
        if self._more is not None:
            self._more.set()
            self._more = None

    # -- the workers ----------------------------------------------------------------------

    def took(self) -> None:
        """Called by a worker after a ``popleft`` when ``producer_waiting`` is set."""
        if len(self.items) <= self.low and self._room is not None:
            self._room.set()

    async def wait_for_item(self) -> Item | None:
        """The next item, once there is one; ``None``: the producer is done and every item
        has been taken."""
        items = self.items
        while not items:
            if self.closed:
                return None
            if self._room is not None:
                self._room.set()  # (cannot wait with an empty queue, but never leave it so)
            more = self._more
            if more is None:
                more = self._more = anyio.Event()
            await more.wait()
        item = items.popleft()
        if self.producer_waiting:
            self.took()
        return item

    def join(self) -> None:
        """A worker will take items: called by whoever starts it, before it runs (so the
        producer never finds the queue without consumers while workers are starting)."""
        self.consumers += 1

    def leave(self) -> None:
        """A worker stops taking items; the last one wakes a producer waiting for room."""
        self.consumers -= 1
        if not self.consumers and self._room is not None:
            self._room.set()
