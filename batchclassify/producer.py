"""The producer: walks the sources in batches and feeds the workers' bounded item stream.

The walk runs in a worker thread, one batch at a time. Each item is checked against the
resume index: ids already recorded are skipped (failed ones queued again with
``--retry-failed``), a second occurrence of an id is a duplicate; a bad manifest row
(``item.problem``) becomes an error row at once, without a request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TextIO

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from .config import JobConfig
from .idindex import IdIndex
from .models import Item, error_row
from .resume import QUEUED, QUEUED_AGAIN, RECORDED_FAILED, RECORDED_OK, PriorState
from .sources import iter_item_batches
from .summary import JobSummary, ProgressListener
from .worker import Recorder


class Producer:
    """Lists the items to classify; counts what it skips in the job's summary."""

    def __init__(
        self,
        config: JobConfig,
        *,
        summary: JobSummary,
        progress: ProgressListener,
        record: Recorder,
        stopping: Callable[[], bool],
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

    async def run(self, items_out: MemoryObjectSendStream[Item], prior: PriorState) -> None:
        """Walk the sources to the end (or a stop request), sending fresh items on."""
        summary = self._summary
        batches: Iterator[list[Item]] = iter_item_batches(
            self._config.sources,
            extensions=self._config.extensions,
            stdin=self._stdin,
            report=summary.inputs,  # filled in by the walk, in the worker thread
        )
        shard = self._config.shard
        listed_any = False  # a shard may hold none of the sources' items: that is no error
        async with items_out:
            while not self._stopping():
                batch = await anyio.to_thread.run_sync(next, batches, None, abandon_on_cancel=True)
                if batch is None:
                    summary.nothing_found = not listed_any
                    self._progress.listing_finished()
                    break
                listed_any = listed_any or bool(batch)
                if shard is not None:  # other shards' items are theirs: not even counted
                    batch = [item for item in batch if shard.holds(item.id)]
                summary.found += len(batch)
                fresh = self._fresh(batch, prior.index)
                if not await self._hand_out(fresh, items_out):
                    return

    def _fresh(self, batch: list[Item], index: IdIndex) -> list[Item]:
        """The batch's items to classify; the others counted as skipped."""
        summary = self._summary
        retry_failed = self._config.retry_failed
        skipped_before = summary.already_done + summary.previously_failed
        fresh: list[Item] = []
        for item in batch:
            tag = index.get(item.id)
            if tag in (QUEUED, QUEUED_AGAIN):
                summary.duplicates += 1
            elif tag == RECORDED_OK:
                summary.already_done += 1
            elif tag == RECORDED_FAILED and not retry_failed:
                summary.previously_failed += 1
            else:
                if tag == RECORDED_FAILED:
                    self.requeued += 1
                index.set(item.id, QUEUED_AGAIN if tag == RECORDED_FAILED else QUEUED)
                fresh.append(item)
        recorded = summary.already_done + summary.previously_failed
        self._progress.listed(seen=len(batch), recorded=recorded - skipped_before)
        self._progress.add_total(len(fresh))
        return fresh

    async def _hand_out(self, fresh: list[Item], items_out: MemoryObjectSendStream[Item]) -> bool:
        """Send items on (bad rows straight to the sink); ``False`` once no worker is left."""
        for item in fresh:
            if self._stopping():
                break
            if item.problem is not None:
                self._record(_problem_row(item), group=item.problem_group, at=item.problem_at)
                await anyio.lowlevel.checkpoint()
                continue
            try:
                try:  # skips send()'s extra event-loop turn while there is room
                    items_out.send_nowait(item)
                except anyio.WouldBlock:
                    await items_out.send(item)
            except anyio.BrokenResourceError:
                return False  # every worker has stopped (a stop request)
        return True


def _problem_row(item: Item) -> dict[str, Any]:
    """The error row of an item its source could not make usable (a bad manifest row)."""
    return error_row(
        item,
        error=item.problem or "",
        error_type=item.problem_kind,
        attempts=0,
    )
