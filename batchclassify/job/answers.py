"""Pay once per image: answers from the cache, and identical images in flight sharing one.

``CachingClassifier`` is taken in steps around the worker's whole request for one item
(rate-limit slot, retries and all; ``Workers._classify`` runs them inline, with no coroutine
per step): ``lookup`` gives a stored answer as the row at once, without a slot; ``in_flight``
and ``follow`` let an identical image wait for the outcome of the request already under way
instead of sending its own; ``take_off`` and ``land`` bracket anything sent, and an answer
is stored. The steps wrap the retrying request rather than the bare HTTP call so that a
follower holds no rate-limit slot while it waits, and shares the leader's final outcome, not
one failed attempt of it.

One item's outcome becomes another's only as a real answer (``models.is_answer``): only an
``ok`` row is stored, and a follower of a failed request gets an error row of its own. A
cache file found damaged mid-job is dropped: the job goes on without it, and says so.
"""

from __future__ import annotations

from typing import Any

import anyio

from ..config import JobConfig
from ..inputs.encoding import EncodedImage
from ..models import Item, cached_row, error_row
from ..output.cache import AnswerCache, CacheDamagedError, Keys, KeySettings

Row = dict[str, Any]


#: What the in-flight table is keyed by: the cache key (with a cache file), else the body's
#: length (bodies of the same length are told apart byte for byte) or the URL.
FlightKey = bytes | int | str


class _Flight:
    """One request others may wait for. The event is made by the first follower: most
    images have no twin in flight, and an event per image is a measurable cost."""

    __slots__ = ("body", "done", "item_id", "next", "row")

    def __init__(self, item_id: str, body: bytes | None) -> None:
        self.item_id = item_id
        self.body = body
        """The body sent, when the table is keyed by length (to compare); else ``None``."""
        self.done: anyio.Event | None = None
        self.row: Row | None = None
        self.next: _Flight | None = None
        """Another request in flight under the same key: a body of the same length."""


class CachingClassifier:
    """Answers from ``cache`` (``None``: no cache file; in-flight sharing still applies).

    Without a cache file no image is hashed: an identical image in flight is found by the
    body's length and then compared byte for byte (a comparison is several times cheaper
    than hashing, and exact); with one, by the cache key, which the lookup needs anyway.
    """

    def __init__(self, cache: AnswerCache | None, settings: KeySettings) -> None:
        self.cache = cache
        self._keys = Keys(settings)
        self._model = settings.model
        self._in_flight: dict[FlightKey, _Flight] = {}
        self.hits = 0
        """Rows answered from the cache file."""
        self.shared = 0
        """Rows answered by an identical image's request in flight at the same time."""
        self._dropped: str | None = None
        """Why the cache file was dropped mid-job, until ``commit`` hands it on."""

    @property
    def saved(self) -> int:
        return self.hits + self.shared

    def lookup(self, item: Item, encoded: EncodedImage | None) -> tuple[FlightKey, Row | None]:
        """The item's key in flight, and its row if the answer is stored."""
        body = None if encoded is None else encoded.body
        if self.cache is None:
            return (len(body) if body is not None else item.url or ""), None
        key = self._keys.for_item(item, body)
        try:
            found = self.cache.get(key)
        except CacheDamagedError as damage:
            self._drop(damage)
            return (len(body) if body is not None else item.url or ""), None
        if found is not None:
            self.hits += 1
            return key, cached_row(
                item,
                found.answer,
                cached_from=found.source_id,
                original_size=None if encoded is None else encoded.original_size,
            )
        return key, None

    def in_flight(self, key: FlightKey, encoded: EncodedImage | None) -> _Flight | None:
        """The request in flight for an identical image, if there is one."""
        flight = self._in_flight.get(key)
        while flight is not None and flight.body is not None:
            if encoded is not None and flight.body == encoded.body:
                break
            flight = flight.next
        return flight

    def take_off(self, key: FlightKey, item_id: str, encoded: EncodedImage | None) -> _Flight:
        """``item_id``'s request goes out under ``key``: identical images wait for it."""
        by_length = type(key) is int
        flight = _Flight(item_id, encoded.body if by_length and encoded is not None else None)
        first = self._in_flight.get(key)
        if first is not None:  # another body of the same length is in flight
            flight.next = first
        self._in_flight[key] = flight
        return flight

    async def follow(self, item: Item, encoded: EncodedImage | None, flight: _Flight) -> Row | None:
        """Wait for the identical image's request in ``flight``; this item's row from it."""
        if flight.done is None:
            flight.done = anyio.Event()
        await flight.done.wait()
        return self._follow(item, flight, None if encoded is None else encoded.original_size)

    def land(self, key: FlightKey, flight: _Flight, row: Row | None) -> None:
        """The request in ``flight`` is over with ``row`` (``None``: stopped, left for a
        rerun): release its followers, and store the answer if the server gave one. A failed
        request stores nothing: the next identical image is sent again, not given an ``ok``."""
        flight.row = row
        first = self._in_flight[key]
        if first is flight:
            if flight.next is None:
                del self._in_flight[key]
            else:
                self._in_flight[key] = flight.next
        else:
            while first.next is not flight:
                assert first.next is not None, "a flight lands once"
                first = first.next
            first.next = flight.next
        flight.next = flight.body = None
        if flight.done is not None:
            flight.done.set()
        # A key that is not bytes: keyed by length, the cache was dropped meanwhile.
        if row is not None and row["status"] == "ok" and self.cache and type(key) is bytes:
            self.cache.put(key, row, model=self._model)

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
        # Its own failure: the same error and status, no request of its own (attempts 0).
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
            dropped, self._dropped = self._dropped, None
            return dropped
        import sqlite3  # loaded already by the open cache; not at all by a job without one

        try:
            self.cache.commit()
        except CacheDamagedError as damage:
            self._drop(damage)
            return self.commit()
        except sqlite3.Error as exc:
            return f"answer cache {self.cache.path}: cannot store answers yet ({exc})"
        return None

    def _drop(self, damage: CacheDamagedError) -> None:
        """Go on without the cache file, which turned out damaged; it is left as it is."""
        assert self.cache is not None
        path = self.cache.path
        self.cache.close_quietly()
        self.cache = None
        self._dropped = (
            f"answer cache {path} is damaged ({damage.detail}): the job goes on "
            "without it (answers are neither looked up nor stored); the file is left as it is"
        )

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
