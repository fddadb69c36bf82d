"""The read-mode policy: one stalled read does not send reads to threads; a slowdown does.

Pure logic, fed made-up read times (seconds), no clock.
"""

from __future__ import annotations

import pytest

from batchclassify.inputs.readpolicy import INLINE_READ_BUDGET, WINDOW, ReadPolicy

FAST = 0.00005  # a small local file: ~50 µs
SLOW = 0.010  # slow storage or a big file


def _feed(policy: ReadPolicy, seconds: float, times: int) -> list[bool]:
    """Record ``times`` reads; return the mode after each."""
    modes = []
    for _ in range(times):
        policy.record(seconds)
        modes.append(policy.inline())
    return modes


def test_one_stalled_read_does_not_flip_to_threads() -> None:
    policy = ReadPolicy()
    _feed(policy, FAST, 100)

    policy.record(0.032)  # a scheduler hiccup: 32 ms

    assert policy.inline()
    assert all(_feed(policy, FAST, 100))


def test_a_stall_at_the_very_start_does_not_flip_either() -> None:
    policy = ReadPolicy()
    policy.record(0.032)
    assert policy.inline()
    assert all(_feed(policy, FAST, 10))


def test_scattered_outliers_below_a_majority_never_flip() -> None:
    policy = ReadPolicy()
    modes = []
    for i in range(300):
        policy.record(SLOW if i % 3 == 0 else FAST)  # a third of reads stall
        modes.append(policy.inline())
    assert all(modes)


def test_a_sustained_slowdown_flips_to_threads_and_back() -> None:
    policy = ReadPolicy()
    _feed(policy, FAST, 50)

    slow_modes = _feed(policy, SLOW, WINDOW)
    # Flips once a majority of the window is slow, not on the first slow read.
    assert slow_modes.index(False) == WINDOW // 2
    assert not any(slow_modes[WINDOW // 2 :])

    fast_modes = _feed(policy, FAST, WINDOW)
    assert fast_modes.index(True) == WINDOW // 2
    assert all(fast_modes[WINDOW // 2 :])


def test_reads_just_under_the_budget_stay_in_threads_once_there() -> None:
    # Hysteresis: coming back needs reads well under the budget, so reads near it do not
    # switch modes back and forth.
    policy = ReadPolicy()
    _feed(policy, SLOW, WINDOW)
    assert not policy.inline()
    assert not any(_feed(policy, INLINE_READ_BUDGET * 0.9, 50))


def test_fast_reads_not_kept_while_inline_change_nothing_about_coming_back() -> None:
    """Fast reads while inline are not kept (nothing to count); the window restarts at the
    first slow one, so reads from an earlier spell in threads cannot vote to come back."""
    policy = ReadPolicy()
    _feed(policy, SLOW, WINDOW)  # to threads...
    _feed(policy, FAST, WINDOW)  # ...and back: the window is full of fast reads
    assert policy.inline()
    middling = INLINE_READ_BUDGET * 0.75  # under the budget, over the bar for coming back
    _feed(policy, middling, 100)
    assert _feed(policy, SLOW, WINDOW // 2 + 1)[-1] is False  # to threads again
    # Back once 8 of the last 15 reads are fast: the 8th fast read, not earlier.
    assert _feed(policy, FAST, WINDOW // 2 + 1) == [False] * (WINDOW // 2) + [True]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        ReadPolicy(budget=0)
    with pytest.raises(ValueError):
        ReadPolicy(window=0)
