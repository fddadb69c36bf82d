"""The producer's last phase under ``run --watch``: new files, once whole, screened and queued.

After the first walk the producer hands the queue to ``Following.run``: the ``Follower``
(``inputs/watching.py``) notices new files and holds each until it is whole; each is then
screened like a walked file (an id recorded or queued before is never sent again) and queued.
``Latency`` times each followed file from its arrival to its row, for ``status``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio

from ..config import JobConfig, WatchConfig
from ..inputs.watching import Follower
from ..models import Item
from .stopping import StopSignal

if TYPE_CHECKING:
    from ..output.resume import Screen

#: Latencies kept for the median and p95: the most recent files' (a bounded reservoir).
LATENCY_SAMPLES = 1000


class Latency:
    """Arrival-to-row times of followed files: the arrival of each one on its way (at most
    the queue plus the workers' items), and the latest ``keep`` latencies."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, keep: int = LATENCY_SAMPLES):
        self._clock = clock
        self._arrived: dict[str, float] = {}
        self._recent: deque[float] = deque(maxlen=keep)

    @property
    def in_flight(self) -> int:
        """Followed files queued or being classified: no row yet."""
        return len(self._arrived)

    def sent(self, item_id: str, arrived: float) -> None:
        self._arrived[item_id] = arrived

    def row(self, item_id: str) -> None:
        """The row of ``item_id`` is written (nothing for an item not followed)."""
        arrived = self._arrived.pop(item_id, None)
        if arrived is not None:
            self._recent.append(self._clock() - arrived)

    def percentiles(self) -> tuple[float, float] | None:
        """(median, p95) in seconds over the latest files; ``None`` before the first."""
        if not self._recent:
            return None
        ordered = sorted(self._recent)
        last = len(ordered) - 1
        return ordered[round(last * 0.5)], ordered[round(last * 0.95)]

    @property
    def samples(self) -> int:
        return len(self._recent)


class Following:
    """``--watch``: the follower, started before the first walk, run after it."""

    def __init__(
        self,
        config: JobConfig,
        watch: WatchConfig,
        *,
        notify: Callable[[str | None], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._watch = watch
        self._notify = notify
        self._clock = clock
        self.latency = Latency(clock=clock)
        self.follower: Follower | None = None
        self.active = False
        """Past the first walk, following."""

    def start(self, screen: Screen) -> None:
        """Before the first walk: notifications collect from now on."""
        config = self._config
        self.follower = Follower(
            config.sources,
            self._watch,
            extensions=config.extensions,
            keep=screen.would_keep,
            clock=self._clock,
            note=self._notify,
        )
        self.follower.start()

    def set_aside(self, batch: list[Item], screen: Screen) -> list[Item]:
        """The first walk's batch without the files that may still be being written."""
        assert self.follower is not None  # started before the walk
        return self.follower.set_aside(batch, screen.release)

    async def run(
        self,
        screen: Screen,
        stop: StopSignal,
        hand_on: Callable[[list[Item]], Awaitable[bool]],
    ) -> str | None:
        """Follow until told to stop, ``--watch-until`` or ``--idle-exit``; each whole new
        file screened and handed on (``hand_on`` returns ``False`` once no worker is left).
        Returns a note on why following ended, for the summary (``None``: a stop request)."""
        follower = self.follower
        assert follower is not None
        self.active = True
        self._notify(f"watching for new images: {follower.why}")
        stopped = anyio.Event()
        try:
            async with anyio.create_task_group() as group:

                async def on_stop() -> None:
                    await stop.wait()
                    stopped.set()

                group.start_soon(on_stop)
                async with aclosing(follower.follow(stopped)) as batches:
                    async for ripe in batches:
                        fresh = []
                        for item, arrived in ripe:
                            if screen.keep(item.id):
                                self.latency.sent(item.id, arrived)
                                fresh.append(item)
                        if not await hand_on(fresh):
                            break
                group.cancel_scope.cancel()
        finally:
            self.active = False
            follower.close()
        return self._ending(follower)

    def _ending(self, follower: Follower) -> str | None:
        left = len(follower.settling)
        rest = (
            f"; {left} file{'s' if left != 1 else ''} still being written left for the next run"
            if left
            else ""
        )
        if follower.ended_by == "until":
            until = datetime.fromtimestamp(self._watch.until or 0).isoformat(timespec="minutes")
            return f"stopped watching at {until} (--watch-until){rest}"
        if follower.ended_by == "idle":
            return f"stopped watching: nothing new for {self._watch.idle_exit:g} s (--idle-exit)"
        return None

    def status(self) -> dict[str, Any]:
        """What ``status`` shows of the following: mode, backlog, arrival-to-row latency."""
        follower = self.follower
        found = self.latency.percentiles()
        return {
            "following": self.active,
            "mode": None if follower is None else follower.mode,
            "how": None if follower is None else follower.why,
            "settle_s": self._watch.settle,
            "settling": 0 if follower is None else len(follower.settling),
            "queued": self.latency.in_flight,
            "latency_p50_s": None if found is None else round(found[0], 3),
            "latency_p95_s": None if found is None else round(found[1], 3),
            "latency_samples": self.latency.samples,
        }
