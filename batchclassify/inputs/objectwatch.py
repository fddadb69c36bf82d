"""Following object-store prefixes (``run --watch s3://bucket/prefix/``): a listing per poll.

Object stores send no notifications a job can wait on, so each prefix is listed again every
``every`` seconds (``--poll``; 30 s by default: a listing is one request per 1,000 keys, and
requests are billed), page by page as the first walk lists it (``objectstore.list_objects``:
the same hidden, extension and folder-marker rules). A key is a candidate when the producer
would keep its URL (not done, not queued); its size, ETag and LastModified as of the latest
listing are what ``Settling`` looks at, so an object settles by the rule a file does
(unchanged for ``--settle`` seconds, LastModified counting as an mtime). A key missing from
a complete listing was deleted: it leaves the settling set unsent. Only the candidates'
entries are held, never the listing.

A listing that fails (throttled, access revoked, the bucket gone) ends nothing: the keys of
the last complete listing are kept, the failure is noted once, and the next poll lists again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..errors import UsageError
from ..models import Item, Keep
from .objectstore import list_objects

#: An object as ``Settling`` looks at it (``watching.Look``, spelled out here: ``watching``
#: imports this module): its size, ETag, and LastModified (``time.time()`` seconds).
Look = tuple[int, object, float | None]


class ObjectPrefixes:
    """The followed prefixes, and what the latest listing of each showed of its new keys."""

    def __init__(
        self, prefixes: Sequence[str], *, extensions: frozenset[str], keep: Keep, every: float
    ) -> None:
        self.prefixes = tuple(prefixes)
        self.every = every
        shown = ", ".join(self.prefixes)
        self.why = (
            f"listing {shown} every {every:g} s (object storage sends no notifications; a "
            "listing is a request per 1,000 keys: --poll to choose the interval)"
        )
        self._extensions = extensions
        self._keep = keep
        self._seen: dict[str, dict[str, Look]] = {prefix: {} for prefix in self.prefixes}
        """Each prefix -> its new keys' URLs -> (size, ETag, LastModified) when last listed."""
        self._failing: dict[str, str] = {}
        """Prefixes whose latest listing failed -> the message noted."""

    def look(self, url: str) -> Look | None:
        """What the latest listing showed of ``url``; ``None``: not listed (deleted)."""
        for seen in self._seen.values():
            found = seen.get(url)
            if found is not None:
                return found
        return None

    def list_all(self, arrived: Callable[[Item], None]) -> list[str]:
        """List every prefix (blocking: in a worker thread); each new key is passed to
        ``arrived``. Returns what to tell the user: a failure (once, until it changes or the
        listing works again) and a recovery."""
        notes: list[str] = []
        for prefix in self.prefixes:
            seen: dict[str, Look] = {}
            try:
                for listed in list_objects(prefix, self._extensions):
                    if self._keep(listed.url):
                        seen[listed.url] = (listed.size, listed.stamp, listed.modified)
            except UsageError as error:
                # A partial listing says nothing of the keys it did not reach: the last
                # complete one stands until the next poll lists again.
                message = f"listing {error}; trying again in {self.every:g} s"
                if self._failing.get(prefix) != message:
                    notes.append(message)
                self._failing[prefix] = message
                continue
            if self._failing.pop(prefix, None) is not None:
                notes.append(f"listing {prefix} works again")
            self._seen[prefix] = seen
            for url in seen:
                arrived(Item(id=url, path=url))
        return notes
