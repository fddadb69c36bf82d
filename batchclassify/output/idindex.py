"""A compact set of item ids with a small tag per id, for resume and de-duplication.

A Python ``set`` of id strings costs 100+ bytes per id: a gigabyte or more for a ten-million
image job. This open-addressing table (linear probing) keeps each id as one 8-byte slot of an
``array('Q')``: 56 bits of the id's 64-bit hash, its 1-byte tag in the low 8 bits. Its size
is any odd number (an id's first slot is its key modulo the size), so ``reserve`` sizes it
for the count the job expects, at 80% load: 10 bytes per id (ten million ids: 100 MB, where
the power-of-two table of 9-byte slots this replaces took 151). Grown by doubling instead, it
costs 11-23 bytes per id. Two different ids share 56 hash bits with odds of about n²/2⁵⁷:
one in 14 million for 100,000 ids, one in 140,000 for a million, one in ~1,400 for ten
million: a risk accepted here, where the cost would be one image skipped as done (or taken
for a duplicate of another). ``wide`` tables keep the whole 64-bit hash (odds n²/2⁶⁵, 256
times smaller) and a separate 4-byte tag: 12 bytes a slot.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence

#: The hash bits a packed slot keeps; the low 8 hold the tag.
_KEY = 0xFFFF_FFFF_FFFF_FF00
_TAG = 0xFF
#: All 64 bits of a hash, as an unsigned number (``hash`` may be negative).
_HASH = 0xFFFF_FFFF_FFFF_FFFF
#: A slot of 0 is empty: an id whose kept bits are all 0 takes this key instead.
_NONZERO = 0x100


def _grown_limit(size: int) -> int:
    """Ids a table grown by doubling holds before it grows again: 70% of its slots (probes
    stay short: ~2 slots for an id present, ~6 for one absent, at the top)."""
    return size * 7 // 10


def _reserved_limit(size: int) -> int:
    """Ids a table sized by ``reserve`` holds before it grows: 85% of its slots. Sized for
    80%, so a count a little above the estimate it was sized for (the scan's, then the
    sources' count) makes no second table; probes run longer at that load (~3 slots for an
    id present, ~13 for one absent at 80%), a price paid only by tables a job sized for
    millions of ids."""
    return size * 17 // 20


def _reserved_size(ids: int) -> int:
    """Slots for ``ids`` ids at 80% load, odd (the probe starts at key % size: an odd size
    uses every bit of a key whose low 8 bits are 0)."""
    return (ids * 5 // 4) | 1


class IdIndex:
    """Maps id -> tag (0..255, unchecked: a larger one would spill into the key bits; with
    ``wide``, 0..2³²-1). ``get`` gives 0 for an absent id.

    ``wide`` tags (4 bytes a slot) let a tag number a row or a label set (``report --truth``,
    ``diff``) instead of holding a small code.
    """

    def __new__(cls, capacity: int = 1 << 12, *, wide: bool = False) -> IdIndex:
        return super().__new__(_WideIdIndex if wide else cls)

    def __init__(self, capacity: int = 1 << 12, *, wide: bool = False) -> None:
        size = max(capacity, 8) | 1
        self._keys = array("Q", [0]) * size
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
        return self._keys.itemsize * self._size

    # get, set and set_all inline the key and the probe (no calls): they run once per row of
    # a resume scan and once per item of the walk, a million times on a big job. The key is
    # Python's string hash, SipHash with a per-process seed: fast, well mixed, and fine here
    # because the index is rebuilt from the output every run and never stored. It is taken
    # unsigned (``& _KEY``): bit operations on negative ints are slower in CPython. A slot
    # is compared by its key bits (``& _KEY``); its tag is the rest.

    def get(self, item_id: str) -> int:
        key = hash(item_id) & _KEY or _NONZERO
        keys = self._keys
        size = self._size
        slot = key % size
        while True:
            found = keys[slot]
            if found & _KEY == key:
                return found & _TAG
            if not found:
                return 0
            slot += 1
            if slot == size:
                slot = 0

    def set(self, item_id: str, tag: int) -> int:
        """Tag ``item_id`` and return its previous tag (0 if it was absent)."""
        key = hash(item_id) & _KEY or _NONZERO
        keys = self._keys
        size = self._size
        slot = key % size
        while True:
            found = keys[slot]
            if found & _KEY == key:
                keys[slot] = key | tag
                return found & _TAG
            if not found:
                break
            slot += 1
            if slot == size:
                slot = 0
        keys[slot] = key | tag
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
        keys, size = self._keys, self._size
        for key, tag in zip(map(hash, ids), tags, strict=True):
            key = key & _KEY or _NONZERO
            slot = key % size
            found = keys[slot]
            while found:
                if found & _KEY == key:
                    previous = found & _TAG
                    replaced[previous] = replaced.get(previous, 0) + 1
                    break
                slot += 1
                if slot == size:
                    slot = 0
                found = keys[slot]
            keys[slot] = key | tag
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
        old_keys = self._keys
        keys = array("Q", [0]) * size
        # The probe inlined, as in set: a growth rehashes every id so far.
        for value in old_keys:
            if value:
                slot = (value & _KEY) % size
                while keys[slot]:
                    slot += 1
                    if slot == size:
                        slot = 0
                keys[slot] = value
        self._keys, self._size, self._limit = keys, size, _grown_limit(size)


class _WideIdIndex(IdIndex):
    """``IdIndex(wide=True)``: the whole 64-bit hash in ``_keys``, 4-byte tags beside it."""

    def __init__(self, capacity: int = 1 << 12, *, wide: bool = True) -> None:
        super().__init__(capacity)
        self._tags = array("I", [0]) * self._size

    @property
    def nbytes(self) -> int:
        return (self._keys.itemsize + self._tags.itemsize) * self._size

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

    def _grow(self, size: int) -> None:
        self.growths += 1
        old_keys, old_tags = self._keys, self._tags
        keys = array("Q", [0]) * size
        tags = array("I", [0]) * size
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
