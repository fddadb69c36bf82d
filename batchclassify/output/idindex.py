"""A compact set of item ids with a small tag per id, for resume and de-duplication.

A Python ``set`` of id strings costs 100+ bytes per id: a gigabyte or more for a ten-million
image job. This open-addressing table (linear probing) keeps each id's 64-bit hash in an
``array('Q')`` and its tag beside it in a ``bytearray`` (``wide``: an ``array('I')``). Its size
is any odd number (an id's first slot is its key modulo the size), so ``reserve`` sizes it for
the count the job expects, at 85% load: 10.6 bytes per id (ten million ids: 106 MB, where the
power-of-two table this replaces took 151 MB). Grown by doubling instead, it costs 13-26
bytes per id. Two different ids share a 64-bit hash with odds of about n²/2⁶⁵: one in ~370,000
jobs of ten million ids, a risk accepted here (the cost would be one image taken as done).
Packing the tag into the key's low byte would save another 12 MB at ten million ids, for odds
256 times worse: not taken.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence

#: All 64 bits of a hash, as an unsigned number (``hash`` may be negative; bit and modulo
#: operations on negative ints are slower in CPython).
_HASH = 0xFFFF_FFFF_FFFF_FFFF


def _grown_limit(size: int) -> int:
    """Ids a table grown by doubling holds before it grows again: 70% of its slots (probes
    stay short: ~2 slots for an id present, ~6 for one absent, at the top)."""
    return size * 7 // 10


def _reserved_limit(size: int) -> int:
    """Ids a table sized by ``reserve`` holds before it grows: 90% of its slots. Sized for
    85%, so a count a little above the estimate it was sized for (the scan's, then the
    sources' count) makes no second table. Probes run longer at that load (at 85%, ~4 slots
    for an id present, ~23 for one absent: 0.5 and 1.6 µs a look-up against 0.4 and 1.0 at
    80%, ``benchmarks/idindex_speed.py``): under a microsecond an image, the price of 6 MB
    less at ten million ids (issue 25: a 10M-item job under 150 MB), paid only by tables a
    job sized for its count."""
    return size * 9 // 10


def _reserved_size(ids: int) -> int:
    """Slots for ``ids`` ids at 85% load; odd, so that key % size uses every bit of a key."""
    return (ids * 20 // 17) | 1


class IdIndex:
    """Maps id -> tag (0..255; with ``wide``, 0..2³²-1). ``get`` gives 0 for an absent id.

    ``wide`` tags (4 bytes a slot) let a tag number a row or a label set (``report --truth``,
    ``diff``) instead of holding a small code.
    """

    def __init__(self, capacity: int = 1 << 12, *, wide: bool = False) -> None:
        size = max(capacity, 8) | 1
        self._wide = wide
        self._keys = array("Q", [0]) * size
        self._tags = self._new_tags(size)
        self._size = size
        self._limit = _grown_limit(size)
        self._count = 0
        self.growths = 0
        """Times the table was rebuilt larger (each holds the old table and the new at once:
        ``reserve`` the expected count early to make it once, while it is small)."""

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        return (self._keys.itemsize + (4 if self._wide else 1)) * self._size

    def _new_tags(self, size: int) -> bytearray | array[int]:
        return array("I", [0]) * size if self._wide else bytearray(size)

    # get, set and set_all inline the key and the probe (no calls): they run once per row of
    # a resume scan and once per item of the walk, a million times on a big job. The key is
    # Python's string hash, SipHash with a per-process seed: fast, well mixed, and fine here
    # because the index is rebuilt from the output every run and never stored. It is taken
    # unsigned (``& _HASH``); 0 marks an empty slot, so a hash of 0 is taken as 1.

    def get(self, item_id: str) -> int:
        key = hash(item_id) & _HASH or 1
        keys = self._keys
        size = self._size
        slot = key % size
        while True:
            found = keys[slot]
            if found == key:
                return self._tags[slot]
            if not found:
                return 0
            slot += 1
            if slot == size:
                slot = 0

    def set(self, item_id: str, tag: int) -> int:
        """Tag ``item_id`` and return its previous tag (0 if it was absent)."""
        key = hash(item_id) & _HASH or 1
        keys = self._keys
        size = self._size
        slot = key % size
        while True:
            found = keys[slot]
            if found == key:
                tags = self._tags
                previous = tags[slot]
                tags[slot] = tag
                return previous
            if not found:
                break
            slot += 1
            if slot == size:
                slot = 0
        keys[slot] = key
        self._tags[slot] = tag
        self._count += 1
        if self._count > self._limit:
            self._grow(2 * size + 1)
        return 0

    def set_all(self, ids: Sequence[str], tags: Iterable[int]) -> dict[int, int]:
        """``set`` for each id and the tag beside it, in order (a later tag of an id wins).

        Returns how many ids had each previous tag (absent ids not counted). One loop for a
        whole chunk of a resume scan: room for every id made first, so the loop never grows
        the table; hashes taken by ``map``; an empty first slot, the usual case, costs one
        test.
        """
        self._make_room(self._count + len(ids))
        replaced: dict[int, int] = {}
        keys, stored, size = self._keys, self._tags, self._size
        for key, tag in zip(map(hash, ids), tags, strict=True):
            key = key & _HASH or 1
            slot = key % size
            found = keys[slot]
            while found:
                if found == key:
                    previous = stored[slot]
                    replaced[previous] = replaced.get(previous, 0) + 1
                    break
                slot += 1
                if slot == size:
                    slot = 0
                found = keys[slot]
            else:
                keys[slot] = key
            stored[slot] = tag
        self._count += len(ids) - sum(replaced.values())
        return replaced

    def reserve(self, ids: int) -> None:
        """Make room for ``ids`` ids in all, so that adding them rehashes nothing (a growth
        rehashes every id so far, and holds the old table beside the new while it does).

        A table that holds ``ids`` within its top load is kept as it is: a count a little
        above the estimate the table was sized for (the scan's, then the sources' count)
        costs no second table.
        """
        if ids > self._limit:
            self._grow(_reserved_size(ids))
            self._limit = _reserved_limit(self._size)

    def _make_room(self, ids: int) -> None:
        """Room for ``ids`` ids: set_all's growth, to twice the slots or the ids at least."""
        if ids > self._limit:
            self._grow(max(2 * self._size, 2 * ids) + 1)

    def _grow(self, size: int) -> None:
        self.growths += 1
        old_keys, old_tags = self._keys, self._tags
        keys = array("Q", [0]) * size
        tags = self._new_tags(size)
        # The probe inlined, as in set: a growth rehashes every id so far.
        for old_slot, key in enumerate(old_keys):
            if key:
                slot = key % size
                while keys[slot]:
                    slot += 1
                    if slot == size:
                        slot = 0
                keys[slot] = key
                tags[slot] = old_tags[old_slot]
        self._keys, self._tags, self._size = keys, tags, size
        self._limit = _grown_limit(size)
