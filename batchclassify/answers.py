"""Pay once per image: answers from the cache, and identical images in flight sharing one.

``CachingClassifier.classify`` wraps the worker's whole request for one item (rate-limit
slot, retries and all): a stored answer becomes the row at once, without a slot; an identical
image already in flight waits for that request's outcome instead of sending its own; anything
else is sent, and an ok answer is stored. It wraps the retrying request rather than the bare
HTTP call so that a follower holds no rate-limit slot while it waits, and shares the leader's
final outcome, not one failed attempt of it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from .cache import AnswerCache, Keys, KeySettings
from .config import JobConfig
from .encoding import EncodedImage
from .models import Item, cached_row, error_row

Row = dict[str, Any]
#: The worker's request for one item: a row, or ``None`` when it is left for a rerun.
Request = Callable[[], Awaitable[Row | None]]


class _Flight:
    """One request others may wait for. The event is made by the first follower: most
    images have no twin in flight, and an event per image is a measurable cost."""

    __slots__ = ("done", "item_id", "row")

    def __init__(self, item_id: str) -> None:
        self.item_id = item_id
        self.done: anyio.Event | None = None
        self.row: Row | None = None


class CachingClassifier:
    """Answers from ``cache`` (``None``: no cache file; in-flight sharing still applies)."""

    def __init__(self, cache: AnswerCache | None, settings: KeySettings) -> None:
        self.cache = cache
        self._keys = Keys(settings)
        self._model = settings.model
        self._in_flight: dict[bytes, _Flight] = {}
        self.hits = 0
        """Rows answered from the cache file."""
        self.shared = 0
        """Rows answered by an identical image's request in flight at the same time."""

    @property
    def saved(self) -> int:
        return self.hits + self.shared

    async def classify(
        self, item: Item, encoded: EncodedImage | None, request: Request
    ) -> Row | None:
        """The row for ``item``: stored, shared, or from ``request()`` (then stored)."""
        key = self._keys.for_item(item, None if encoded is None else encoded.body)
        original_size = None if encoded is None else encoded.original_size
        if self.cache is not None and (found := self.cache.get(key)) is not None:
            self.hits += 1
            return cached_row(
                item, found.answer, cached_from=found.source_id, original_size=original_size
            )
        flight = self._in_flight.get(key)
        if flight is not None:
            if flight.done is None:
                flight.done = anyio.Event()
            await flight.done.wait()
            return self._follow(item, flight, original_size)
        flight = self._in_flight[key] = _Flight(item.id)
        try:
            flight.row = row = await request()
        finally:
            del self._in_flight[key]
            if flight.done is not None:
                flight.done.set()
        if row is not None and row["status"] == "ok" and self.cache is not None:
            self.cache.put(key, row, model=self._model)
        return row

    def _follow(
        self, item: Item, flight: _Flight, original_size: tuple[int, int] | None
    ) -> Row | None:
        """This item's row from the outcome of the identical image's request."""
        row = flight.row
        if row is None:
            return None  # that request was stopped (or cut off): both are left for a rerun
        if row["status"] == "ok":
            self.shared += 1
            return cached_row(item, row, cached_from=flight.item_id, original_size=original_size)
        return error_row(
            item,
            error=f"{row['error']} (the identical image {flight.item_id} was sent for it)",
            error_type=row["error_type"],
            attempts=0,
            http_status=row["http_status"],
        )

    def commit(self) -> str | None:
        """Store the answers gathered so far (called with every output flush); a problem
        comes back as a note for the progress display, and the answers stay for the next
        try: the cache never stops a job, whose rows are what counts."""
        if self.cache is None:
            return None
        import sqlite3  # loaded already by the open cache; not at all by a job without one

        try:
            self.cache.commit()
        except sqlite3.Error as exc:
            return f"answer cache {self.cache.path}: cannot store answers yet ({exc})"
        return None

    def close(self) -> str | None:
        """``commit()``, then close the file."""
        problem = self.commit()
        if self.cache is not None:
            self.cache.close_quietly()
            self.cache = None
        return problem


def open_answers(config: JobConfig) -> CachingClassifier:
    """The job's ``CachingClassifier``: with the ``config.cache`` file, if one is named."""
    settings = KeySettings(
        model=config.model,
        confidence=config.confidence,
        max_size=config.max_size,
        jpeg_quality=config.jpeg_quality,
    )
    cache = None if config.cache is None else AnswerCache(config.cache)
    return CachingClassifier(cache, settings)
