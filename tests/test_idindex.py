"""The id index (``output.idindex.IdIndex``): what resume, de-duplication, ``report --truth``
and ``diff`` rely on, and its size (issue 25: a 10M-item job under 150 MB, the index one
9-byte slot per id, sized once from the count at 85% load)."""

from __future__ import annotations

import pytest

from batchclassify.output.idindex import IdIndex

_IDS = [f"https://images.example/{n % 48}.jpg?n={n}" for n in range(20_000)]


@pytest.mark.parametrize("wide", [False, True])
def test_ids_set_are_found_with_their_tag_and_others_are_absent(wide: bool) -> None:
    index = IdIndex(wide=wide)
    for n, item_id in enumerate(_IDS):
        assert index.set(item_id, n % 200 + 1) == 0
    assert len(index) == len(_IDS)
    assert all(index.get(item_id) == n % 200 + 1 for n, item_id in enumerate(_IDS))
    assert not any(index.get(f"{item_id}#absent") for item_id in _IDS)
    assert index.growths > 0  # grown by doubling from the default size, every id kept


@pytest.mark.parametrize("wide", [False, True])
def test_a_tag_is_updated_in_place_and_the_previous_one_returned(wide: bool) -> None:
    index = IdIndex(wide=wide)
    index.set("a", 1)
    assert index.set("a", 255) == 1 and index.get("a") == 255
    assert index.set("a", 0) == 255 and index.get("a") == 0  # tag 0 reads as absent
    assert index.set("a", 3) == 0 and index.get("a") == 3
    assert len(index) == 1


def test_wide_tags_hold_32_bit_numbers() -> None:
    index = IdIndex(wide=True)
    for n, item_id in enumerate(_IDS):
        index.set(item_id, 2**32 - 1 - n)
    assert [index.get(item_id) for item_id in _IDS[:3]] == [2**32 - 1, 2**32 - 2, 2**32 - 3]
    assert index.get(_IDS[-1]) == 2**32 - len(_IDS)


@pytest.mark.parametrize("wide", [False, True])
def test_set_all_counts_the_previous_tags_and_a_later_tag_wins(wide: bool) -> None:
    index = IdIndex(capacity=4, wide=wide)
    index.set_all(_IDS[:10_000], [1] * 10_000)
    chunk = _IDS[5_000:15_000] + _IDS[:3]
    tags = [2] * 10_000 + [3, 3, 3]
    replaced = index.set_all(chunk, tags)
    assert replaced == {1: 5_003}  # ids 0-2 and 5,000-9,999 were tagged 1
    assert len(index) == 15_000
    assert index.get(_IDS[0]) == 3 and index.get(_IDS[4_999]) == 1
    assert index.get(_IDS[5_000]) == 2 and index.get(_IDS[14_999]) == 2
    # The same id twice in one chunk: the second replaces the first.
    assert index.set_all(["x", "x"], [1, 2]) == {1: 1} and index.get("x") == 2


@pytest.mark.parametrize("wide", [False, True])
def test_a_table_reserved_for_a_count_fills_to_it_without_growing(wide: bool) -> None:
    index = IdIndex(wide=wide)
    index.reserve(len(_IDS))
    grown, size = index.growths, index.nbytes
    index.set_all(_IDS[:10_000], [1] * 10_000)
    for item_id in _IDS[10_000:]:
        index.set(item_id, 2)
    assert (index.growths, index.nbytes, len(index)) == (grown, size, len(_IDS))


def test_a_count_a_little_above_the_estimate_makes_no_second_table() -> None:
    """The scan reserves for its estimate of the output's rows, the count then for the
    sources' items: a count 5% higher must not rebuild a 10M-id table (two held at once)."""
    index = IdIndex()
    index.reserve(20_000)
    grown, size = index.growths, index.nbytes
    index.set_all(_IDS, [1] * len(_IDS))
    index.reserve(21_000)
    for n in range(1_000):
        index.set(f"new-{n}", 3)
    assert (index.growths, index.nbytes, len(index)) == (grown, size, 21_000)
    assert index.get(_IDS[123]) == 1 and index.get("new-999") == 3


def test_ten_million_ids_reserved_take_at_most_10_6_bytes_each() -> None:
    """10M ids at 85% load in 9-byte slots: 106 MB, where 2²⁴ of them took 151 MB.
    Measured on a million (the size is linear in the count: 1.25 slots an id)."""
    index = IdIndex()
    index.reserve(1_000_000)
    assert index.nbytes / 1_000_000 < 10.6  # was 18.9 (2²¹ slots of 9 bytes)
    wide = IdIndex(wide=True)
    wide.reserve(1_000_000)
    assert wide.nbytes / 1_000_000 < 15.01
