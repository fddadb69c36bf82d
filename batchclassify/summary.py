"""What a job reports: the listener a progress display implements, and the final summary."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .errors import JobStopped, StopCause
from .exit_codes import ExitCode


class ProgressListener(Protocol):
    """What the runner tells a progress display. Every method is called on the event loop.

    The producer reports each batch it lists: ``listed`` (items gone through, and how many of
    them an earlier run recorded), then ``add_total`` (how many of them are queued for this
    run); ``listing_finished`` once the sources are exhausted. ``counted`` brings the number
    of items in the sources (skipped ones included) from a separate counting walk, whenever
    it finishes, or never (stdin). ``tick`` comes about once a second, so a display can
    refresh and log while nothing else happens (a long pause).
    """

    def started(self, *, already_done: int) -> None: ...

    def counted(self, total: int) -> None: ...

    def listed(self, *, seen: int, recorded: int) -> None: ...

    def add_total(self, count: int) -> None: ...

    def listing_finished(self) -> None: ...

    def row(self, status: str) -> None: ...

    def retried(self) -> None: ...

    def note(self, text: str | None) -> None: ...

    def waiting(self, text: str | None) -> None: ...

    def tick(self) -> None: ...

    def finished(self) -> None: ...


class SilentProgress:
    """A ProgressListener that shows nothing (the default for the Python API). Subclass it to
    hear only some of the calls: the listener protocol may grow."""

    def started(self, *, already_done: int) -> None:
        pass

    def counted(self, total: int) -> None:
        pass

    def listed(self, *, seen: int, recorded: int) -> None:
        pass

    def add_total(self, count: int) -> None:
        pass

    def listing_finished(self) -> None:
        pass

    def row(self, status: str) -> None:
        pass

    def retried(self) -> None:
        pass

    def note(self, text: str | None) -> None:
        pass

    def waiting(self, text: str | None) -> None:
        pass

    def tick(self) -> None:
        pass

    def finished(self) -> None:
        pass


@dataclass
class InputReport:
    """What the sources held besides their items: files passed over, sources with nothing."""

    skipped_extensions: Counter[str] = field(default_factory=Counter)
    """Files in folders whose extension is not in ``--extensions``: extension -> count
    (lowercase, without the dot; ``""`` for a name without one)."""
    skipped_hidden: int = 0
    """Hidden files and folders (names starting with ``.``) not walked."""
    skipped_exports: list[str] = field(default_factory=list)
    """Subfolders not walked because ``batchclassify export`` wrote them (``is_export_folder``)."""
    empty_sources: list[str] = field(default_factory=list)
    """Sources, as given, that yielded no item at all."""

    @property
    def skipped(self) -> int:
        return sum(self.skipped_extensions.values()) + self.skipped_hidden


@dataclass
class JobSummary:
    """What a finished (or stopped) job did. ``exit_code`` follows the CLI's convention.

    A job that stopped early says why as data: ``stop_cause`` (a ``StopCause``) and
    ``stopped_by`` (the ``JobStopped`` exception, e.g. a ``FatalApiError`` with its
    ``http_status``); ``fatal`` is its message.
    """

    output: Path
    ok: int = 0
    failed: int = 0
    already_done: int = 0
    """Items skipped because an earlier run recorded them."""
    previously_failed: int = 0
    """Items skipped because an earlier run recorded them as failed (see --retry-failed)."""
    duplicates: int = 0
    retries: int = 0
    hedged: int = 0
    """Copies sent of requests stuck with no answer past the deadline (``hedging.py``)."""
    rate_limited: int = 0
    elapsed: float = 0.0
    interrupted: bool = False
    started_over: bool = False
    """The run began with --overwrite (so resuming means rerunning without it)."""
    fatal: str | None = None
    """Why the job stopped early, in words (``None``: it was not stopped by an error)."""
    stopped_by: JobStopped | None = None
    """The error that stopped the job early, if any (``fatal`` is its text)."""
    servers: list[dict[str, Any]] = field(default_factory=list)
    """With several servers (``fleet.py``): each one's counters, latency and state."""
    notes: list[str] = field(default_factory=list)
    """Things the job changed or noticed that the user should know (said once, at the end)."""
    errors: Counter[str] = field(default_factory=Counter)
    error_lines: dict[str, list[str]] = field(default_factory=dict)
    """For grouped manifest errors: the first few line (or row) numbers of each."""
    found: int = 0
    """Items the sources yielded, including those skipped as done or duplicate."""
    inputs: InputReport = field(default_factory=InputReport)
    nothing_found: bool = False
    """Every source was read to the end and none held an item: nothing to classify."""
    cache_hits: int = 0
    """Rows answered from the answer cache (--cache), without a request."""
    shared: int = 0
    """Rows answered by the request of an identical image in flight at the same time."""
    credits: float = 0.0
    """Credits the server's cost headers add up to (see ``cost.py``), over ``costed`` rows."""
    costed: int = 0
    """Rows whose request has a cost under the billing rule (reported, or a fixed price)."""
    uncosted: int = 0
    """Answered requests whose cost could not be read (billed by time, no time reported)."""
    billing: str | None = None
    """The billing rule requests were priced by (a ``cost.Billing`` value)."""
    max_credits: float | None = None
    """``--max-credits``, if given."""
    budget_spent: float | None = None
    """With ``--max-credits``: what the budget counted as spent (``credits``, plus requests
    whose cost could not be read, at their reckoning)."""

    @property
    def requests_saved(self) -> int:
        """Requests not made because the answer was known: cache hits and shared requests."""
        return self.cache_hits + self.shared

    @property
    def processed(self) -> int:
        return self.ok + self.failed

    @property
    def images_per_second(self) -> float:
        return self.processed / self.elapsed if self.elapsed > 0 else 0.0

    def stop(self, error: JobStopped) -> None:
        """Record what stopped the job; the first error wins (the rest are its echoes)."""
        if self.stopped_by is None:
            self.stopped_by = error
            self.fatal = str(error)

    @property
    def stop_cause(self) -> StopCause | None:
        """Why the job stopped early; ``None`` if it went through its sources."""
        if self.stopped_by is not None:
            return self.stopped_by.cause
        return StopCause.INTERRUPTED if self.interrupted else None

    @property
    def exit_code(self) -> ExitCode:
        """The status the CLI exits with for this job: stopped, interrupted, nothing found,
        failed items, or ok, in that order of precedence."""
        if self.fatal is not None:
            cause = self.stop_cause
            return ExitCode.STOPPED if cause is None else ExitCode.for_stop(cause)
        if self.interrupted:
            return ExitCode.INTERRUPTED
        if self.nothing_found:
            return ExitCode.USAGE
        if self.failed or self.previously_failed:
            return ExitCode.FAILED_ITEMS
        return ExitCode.OK


class ItemCount:
    """How many items the job has done and expects in all, from what the runner reports.

    ``base`` items were done before this run (recorded ok, or failed without
    ``--retry-failed``); each ``row`` of this run adds one. The expected total is exact once
    the listing is finished: ``base`` plus every item queued. Before that, with the sources'
    item count known, the items not listed yet are added, less the recorded items not met yet
    (a rerun finds them among the rest of the sources, and skips them). Without the count it
    is unknown. It never drops below what is done, so the bar ends at 100% even if the
    count was off (files added or removed meanwhile).
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
