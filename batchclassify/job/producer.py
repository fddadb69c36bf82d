"""The producer: walks the sources in batches and feeds the workers' bounded item queue.

The walk runs in a worker thread, one batch at a time. Each item is checked against the
resume index: ids already recorded are skipped (failed ones queued again with
``--retry-failed``), a second occurrence of an id is a duplicate; a bad manifest row
(``item.problem``) becomes an error row at once, without a request.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TextIO

import anyio

from ..config import JobConfig
from ..inputs.sources import iter_item_batches
from ..models import Item, error_row
from ..output.resume import PriorState, Screen
from ..summary import JobSummary
from .following import Following
from .itemqueue import ItemQueue
from .stopping import StopSignal
from .tracking import ProgressTracker
from .worker import Recorder


class Producer:
    """Lists the items to classify; counts what it skips in the job's summary."""

    def __init__(
        self,
        config: JobConfig,
        *,
        summary: JobSummary,
        progress: ProgressTracker,
        record: Recorder,
        stopping: StopSignal,
        stdin: TextIO | None = None,
    ) -> None:
        self._config = config
        self._summary = summary
        self._progress = progress
        self._record = record
        self._stopping = stopping
        self._stdin = stdin
        self.requeued = 0
        """Ids recorded as failed before and queued again (``--retry-failed``)."""
        self._seen = 0
        self.found_work = False
        """Whether the walk gave any item to classify (so far)."""
        self.listed_all = False
        """Whether the walk went through every source to the end."""
        self.following = (
            None if config.watch is None else Following(config, config.watch, notify=progress.note)
        )
        """``--watch``: what follows the walk (``following.py``)."""

    async def run(
        self,
        queue: ItemQueue,
        prior: PriorState,
        work: anyio.Event | None = None,
    ) -> None:
        """Walk the sources to the end (or a stop request), sending fresh items on.

        ``work`` is set at the first item to classify (``found_work``), or at the walk's end.
        """
        work = work or anyio.Event()
        summary = self._summary
        config = self._config
        screen = Screen(
            prior.index, retry_failed=config.existing == "retry_failed", shard=config.shard
        )
        batches: Iterator[list[Item]] = iter_item_batches(
            self._config.sources,
            extensions=self._config.extensions,
            stdin=self._stdin,
            report=summary.inputs,  # filled in by the walk, in the worker thread
            keep=screen.keep,  # asked in the worker thread; read here between two batches
        )
        if self.following is not None:
            self.following.start(screen)  # notifications collect during the walk
        try:
            await self._walk(batches, screen, queue, work)
        finally:
            work.set()  # the walk is over (or cut short): the count need not wait any more

    async def _walk(
        self,
        batches: Iterator[list[Item]],
        screen: Screen,
        queue: ItemQueue,
        work: anyio.Event,
    ) -> None:
        summary = self._summary
        following = self.following
        try:
            while not self._stopping():
                batch = await anyio.to_thread.run_sync(
                    self._next_batch, batches, screen, abandon_on_cancel=True
                )
                if batch is None:
                    # A shard may hold none of the sources' items: that is no error.
                    summary.nothing_found = not screen.met
                    self.listed_all = True
                    self._progress.listing_finished()
                    break
                if not await self._fresh(batch, screen, queue, work):
                    return
            if following is not None and not self._stopping():
                ended = await following.run(
                    screen,
                    self._stopping,
                    lambda fresh: self._fresh(fresh, screen, queue, work),
                )
                summary.nothing_found = not screen.met
                if ended is not None:
                    summary.notes.append(ended)
                    self._progress.note(ended)
        finally:
            queue.close()  # the workers finish what is queued, then stop

    def _next_batch(self, batches: Iterator[list[Item]], screen: Screen) -> list[Item] | None:
        """The walk's next batch (in the worker thread); under ``--watch`` without the files
        that may still be being written, which settle first."""
        batch = next(batches, None)
        if batch is not None and self.following is not None:
            batch = self.following.set_aside(batch, screen)
        return batch

    async def _fresh(
        self, batch: list[Item], screen: Screen, queue: ItemQueue, work: anyio.Event
    ) -> bool:
        """Count a batch screened, queue its items; ``False`` once no worker is left."""
        self._count(screen, fresh=len(batch))
        if batch and not work.is_set():
            self.found_work = True
            work.set()
        return await self._hand_out(batch, queue)

    def _count(self, screen: Screen, *, fresh: int) -> None:
        """Move what the screen counted since the last batch into the summary and progress."""
        summary = self._summary
        recorded_before = summary.already_done + summary.previously_failed
        summary.found = screen.found
        summary.duplicates = screen.duplicates
        summary.already_done = screen.done
        summary.previously_failed = screen.failed
        self.requeued = screen.requeued
        seen = screen.found - self._seen
        self._seen = screen.found
        recorded = summary.already_done + summary.previously_failed - recorded_before
        self._progress.listed(seen=seen, recorded=recorded)
        self._progress.add_total(fresh)

    async def _hand_out(self, fresh: list[Item], queue: ItemQueue) -> bool:
        """Queue items for the workers (bad rows straight to the sink); ``False`` once no
        worker is left."""
        for item in fresh:
            if self._stopping():
                break
            if item.problem is not None:
                self._record(_problem_row(item), group=item.problem_group, at=item.problem_at)
                await anyio.lowlevel.checkpoint()
                continue
            if not queue.put_nowait(item):
                if not await queue.wait_for_room():
                    return False  # every worker has stopped (a stop request)
                queue.put_nowait(item)
        return True


def _problem_row(item: Item) -> dict[str, Any]:
    """The error row of an item its source could not make usable (a bad manifest row)."""
    return error_row(
        item,
        error=item.problem or "",
        error_type=item.problem_kind,
        attempts=0,
    )
