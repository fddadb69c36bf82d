"""A compact set of item ids with a small tag per id, for resume and de-duplication.

A Python ``set`` of id strings costs 100+ bytes per id: a gigabyte or more for a ten-million
image job. This open-addressing table keeps a 64-bit hash of each id in one ``array('q')`` and
its tag in a ``bytearray``: 9 bytes per slot, 13–26 bytes per id at the usual load. Two
different ids share a 64-bit hash with odds of about n²/2⁶⁵ (one in a few hundred thousand for
ten million ids), a risk accepted here: the cost would be one image skipped as done.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence


class IdIndex:
    """Maps id -> tag (1..255; with ``wide``, 1..2³²-1). Tag 0 means absent.

    ``wide`` tags (4 bytes a slot) let a tag number a row or a label set (``report --truth``,
    ``diff``) instead of holding a small code.
    """

    def __init__(self, capacity: int = 1 << 12, *, wide: bool = False) -> None:
        size = 1
        while size < capacity:
            size <<= 1
        self._wide = wide
        self._keys = array("q", [0]) * size
        self._tags = self._new_tags(size)
        self._mask = size - 1
        self._count = 0
        self.growths = 0
        """Times the table was rebuilt larger (each holds the old table and the new at once:
        ``reserve`` the expected count early to make it once, while it is small)."""

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        tag_bytes = 4 if self._wide else 1
        return self._keys.itemsize * len(self._keys) + tag_bytes * len(self._tags)

    def _new_tags(self, size: int) -> bytearray | array[int]:
        return array("I", [0]) * size if self._wide else bytearray(size)

    # get, set and set_all inline the key and the probe (no calls): they run once per row of
    # a resume scan and once per item of the walk, a million times on a big job. The key is
    # Python's string hash, SipHash with a per-process seed: fast, well mixed, and fine here
    # because the index is rebuilt from the output every run and never stored; negative
    # hashes are kept as they are (``& mask`` takes their low bits all the same). 0 marks an
    # empty slot, so a hash of 0 is taken as 1.

    def get(self, item_id: str) -> int:
        key = hash(item_id) or 1
        keys = self._keys
        mask = self._mask
        slot = key & mask
        while True:
            found = keys[slot]
            if found == key:
                return self._tags[slot]
            if not found:
                return 0
            slot = (slot + 1) & mask

    def set(self, item_id: str, tag: int) -> int:
        """Tag ``item_id`` and return its previous tag (0 if it was absent)."""
        key = hash(item_id) or 1
        keys = self._keys
        mask = self._mask
        slot = key & mask
        while True:
            found = keys[slot]
            if found == key:
                tags = self._tags
                previous = tags[slot]
                tags[slot] = tag
                return previous
            if not found:
                break
            slot = (slot + 1) & mask
        keys[slot] = key
        self._tags[slot] = tag
        self._count += 1
        if self._count * 10 > len(keys) * 7:
            self._grow()
        return 0

    def set_all(self, ids: Sequence[str], tags: Iterable[int]) -> dict[int, int]:
        """``set`` for each id and the tag beside it, in order (a later tag of an id wins).

        Returns how many ids had each previous tag (absent ids not counted). One loop for a
        whole chunk of a resume scan: room for every id made first, so the loop never grows
        the table; hashes taken by ``map``; an empty first slot, the usual case, costs one
        test.
        """
        self.reserve(self._count + len(ids))
        replaced: dict[int, int] = {}
        keys, stored, mask = self._keys, self._tags, self._mask
        for key, tag in zip(map(hash, ids), tags, strict=True):
            key = key or 1
            slot = key & mask
            found = keys[slot]
            while found:
                if found == key:
                    previous = stored[slot]
                    replaced[previous] = replaced.get(previous, 0) + 1
                    break
                slot = (slot + 1) & mask
                found = keys[slot]
            else:
                keys[slot] = key
            stored[slot] = tag
        self._count += len(ids) - sum(replaced.values())
        return replaced

    def reserve(self, ids: int) -> None:
        """Make room for ``ids`` ids in all, so that adding them rehashes nothing (a growth
        rehashes every id so far: ~1.5 rehashes per id over the doublings to a million)."""
        size = len(self._keys)
        while ids * 10 > size * 7:
            size *= 2
        if size > len(self._keys):
            self._grow(size)

    def _grow(self, size: int = 0) -> None:
        self.growths += 1
        old_keys, old_tags = self._keys, self._tags
        size = size or len(old_keys) * 2
        keys = array("q", [0]) * size
        tags = self._new_tags(size)
        mask = size - 1
        # The probe inlined, as in set: a growth rehashes every id so far.
        for slot, key in enumerate(old_keys):
            if key:
                new_slot = key & mask
                while keys[new_slot]:
                    new_slot = (new_slot + 1) & mask
                keys[new_slot] = key
                tags[new_slot] = old_tags[slot]
        self._keys, self._tags, self._mask = keys, tags, mask
