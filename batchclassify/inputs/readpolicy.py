"""Where a worker reads + encodes a file: inline on the event loop, or in a thread.

Small local files read and encode in ~50 µs, cheaper than a thread hop; slow storage or big
files would stall every request on the loop, so they go to threads. The decision follows
the majority of the last few reads (their median), not a moving average: one stalled read
(a scheduler hiccup of 30 ms) moved an average past the budget and sent hundreds of reads
to threads, flipping back and forth. A median needs a sustained slowdown (over half of the
window) to flip.

Hysteresis: going to threads takes a median over the budget, coming back a median under half
of it. A read timed in a thread also counts the wait for the GIL, so thread-mode medians run
high; the lower bar still lets fast storage come back once the loop is quiet.
"""

from __future__ import annotations

from collections import deque

#: Reads + base64 whose median takes longer than this move off the event loop.
INLINE_READ_BUDGET = 0.002
#: How many recent reads the median is taken over (odd: a true middle).
WINDOW = 15


class ReadPolicy:
    """Decide inline vs thread reads from the last ``window`` read times.

    Reads go to threads once more than half of the window took over the budget, and come back
    once more than half took under half of it. Until then nothing changes, so a window not yet
    full needs as many slow reads as a full one.
    """

    def __init__(self, *, budget: float = INLINE_READ_BUDGET, window: int = WINDOW) -> None:
        if budget <= 0 or window < 1:
            raise ValueError("budget must be positive and window at least 1")
        self._budget = budget
        self._bar = budget / 2
        self._window = window
        self._majority = window // 2 + 1
        self._recent: deque[float] = deque()
        self._slow = 0  # reads in the window over the budget
        self._fast = 0  # reads in the window under half of it
        self._inline = True

    def inline(self) -> bool:
        """Whether the next read should run on the event loop."""
        return self._inline

    def record(self, seconds: float) -> None:
        """Note how long one read + encode took, wherever it ran."""
        recent = self._recent
        if self._inline and not self._slow:
            if seconds <= self._budget:
                # The usual case: inline, nothing slow in the window, this read fast. Only
                # slow reads move an inline policy, so nothing needs keeping.
                return
            # The first slow read: the window restarts here. The reads not kept were all
            # fast, so the slow ones among the last ``window`` reads are counted exactly;
            # the fast ones (for coming back) at most undercounted: back a little later.
            recent.clear()
            self._fast = 0
        recent.append(seconds)
        if seconds > self._budget:
            self._slow += 1
        elif seconds < self._bar:
            self._fast += 1
        if len(recent) > self._window:
            gone = recent.popleft()
            if gone > self._budget:
                self._slow -= 1
            elif gone < self._bar:
                self._fast -= 1
        if self._inline:
            self._inline = self._slow < self._majority
        else:
            self._inline = self._fast >= self._majority
