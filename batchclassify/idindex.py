"""A compact set of item ids with a small tag per id, for resume and de-duplication.

A Python ``set`` of id strings costs 100+ bytes per id: a gigabyte or more for a ten-million
image job. This open-addressing table keeps a 64-bit hash of each id in one ``array('Q')`` and
its tag in a ``bytearray``: about 14 bytes per id at the usual load. Two different ids share a
64-bit hash with odds of about n²/2⁶⁵ (one in a few hundred thousand for ten million ids),
a risk accepted here: the cost would be one image skipped as done.
"""

from __future__ import annotations

from array import array

_MASK = (1 << 64) - 1


def _key(item_id: str) -> int:
    # Python's string hash is SipHash with a per-process seed: fast, well mixed, and fine here
    # because the index is rebuilt from the output every run and never stored.
    return (hash(item_id) & _MASK) or 1


class IdIndex:
    """Maps id -> tag (1..255). Tag 0 means absent."""

    def __init__(self, capacity: int = 1 << 12) -> None:
        size = 1
        while size < capacity:
            size <<= 1
        self._keys = array("Q", [0]) * size
        self._tags = bytearray(size)
        self._mask = size - 1
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        return self._keys.itemsize * len(self._keys) + len(self._tags)

    def _find(self, key: int) -> int:
        keys = self._keys
        mask = self._mask
        slot = key & mask
        while True:
            found = keys[slot]
            if found == key or found == 0:
                return slot
            slot = (slot + 1) & mask

    def get(self, item_id: str) -> int:
        key = _key(item_id)
        slot = self._find(key)
        return self._tags[slot] if self._keys[slot] == key else 0

    def set(self, item_id: str, tag: int) -> int:
        """Tag ``item_id`` and return its previous tag (0 if it was absent)."""
        key = _key(item_id)
        slot = self._find(key)
        if self._keys[slot] == key:
            previous = self._tags[slot]
            self._tags[slot] = tag
            return previous
        self._keys[slot] = key
        self._tags[slot] = tag
        self._count += 1
        if self._count * 10 > len(self._keys) * 7:
            self._grow()
        return 0

    def _grow(self) -> None:
        old_keys, old_tags = self._keys, self._tags
        size = len(old_keys) * 2
        self._keys = array("Q", [0]) * size
        self._tags = bytearray(size)
        self._mask = size - 1
        for slot, key in enumerate(old_keys):
            if key:
                new_slot = self._find(key)
                self._keys[new_slot] = key
                self._tags[new_slot] = old_tags[slot]
