"""The runner's progress bookkeeping: what the producer, the count and the tick report,
turned into the ``Progress`` snapshots and notes its listeners are shown.

The producer reports each batch it lists: ``listed`` (items gone through, and how many of
them an earlier run recorded), then ``add_total`` (how many of them are queued for this run);
``listing_finished`` once the sources are exhausted. ``counted`` brings the number of items
in the sources (skipped ones included) from a separate counting walk, whenever it finishes,
or never (stdin). ``ItemCount`` turns these into the expected total; ok, failed and retries
are the summary's. Listeners (``summary.ProgressListener``: the caller's display, the
progress file) see only snapshots, rows and notes.
"""

from __future__ import annotations

from ..summary import JobSummary, Progress, ProgressListener


class ProgressTracker:
    """Keeps the job's ``ItemCount``; shows its listeners a snapshot at the start, whenever
    the expected total may change, on each ``tick`` and at the end, and passes notes on.
    Rows go to the caller's listener straight from the runner (``Job._record``)."""

    def __init__(self, summary: JobSummary, *listeners: ProgressListener) -> None:
        self.count = ItemCount()
        self._summary = summary
        self._listeners = listeners
        self._waiting: str | None = None

    def started(self, *, already_done: int) -> None:
        self.count.base = already_done
        self._show()

    def counted(self, total: int) -> None:
        self.count.counted = total
        self._show()

    def listed(self, *, seen: int, recorded: int) -> None:
        self.count.seen += seen
        self.count.recorded_seen += recorded

    def add_total(self, count: int) -> None:
        self.count.queued += count
        self._show()

    def listing_finished(self) -> None:
        self.count.listing_done = True
        self._show()

    def note(self, text: str | None) -> None:
        for listener in self._listeners:
            listener.note(text)

    def waiting(self, text: str | None) -> None:
        """What new requests wait for; shown with the next snapshot."""
        self._waiting = text

    def tick(self) -> None:
        self._show()

    def finished(self) -> None:
        self._show(finished=True)

    def snapshot(self, *, finished: bool = False) -> Progress:
        summary, count = self._summary, self.count
        count.rows = summary.ok + summary.failed
        return Progress(
            already_done=count.base,
            ok=summary.ok,
            failed=summary.failed,
            retries=summary.retries,
            total=count.total,
            total_is_exact=count.listing_done,
            found=count.base + count.queued,
            waiting=self._waiting,
            finished=finished,
        )

    def _show(self, *, finished: bool = False) -> None:
        progress = self.snapshot(finished=finished)
        for listener in self._listeners:
            listener.progress(progress)


class ItemCount:
    """How many items the job has done and expects in all, from what the runner reports.

    ``base`` items were done before this run (recorded ok, or failed without
    ``--retry-failed``); ``rows`` are this run's (the summary's ok and failed). The expected
    total is exact once the listing is finished: ``base`` plus every item queued. Before that,
    with the sources' item count known, the items not listed yet are added, less the recorded
    items not met yet (a rerun finds them among the rest of the sources, and skips them).
    Without the count it is unknown. It never drops below what is done, so the bar ends at
    100% even if the count was off (files added or removed meanwhile).
    """

    def __init__(self) -> None:
        self.base = 0
        self.rows = 0
        self.counted: int | None = None
        self.seen = 0
        self.recorded_seen = 0
        self.queued = 0
        self.listing_done = False

    @property
    def done(self) -> int:
        return self.base + self.rows

    @property
    def total(self) -> int | None:
        if self.listing_done:
            expected = self.base + self.queued
        elif self.counted is None:
            return None
        else:
            unseen = max(0, self.counted - self.seen)
            recorded_unseen = max(0, self.base - self.recorded_seen)
            expected = self.base + self.queued + max(0, unseen - recorded_unseen)
        return max(expected, self.done)
