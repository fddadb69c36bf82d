"""What a job reports: progress snapshots to a listener as it runs, and the final summary."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .errors import JobStopped, StopCause
from .exit_codes import ExitCode


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a job stands: what a ``ProgressListener`` is shown when the job starts, when
    its expected total changes, about once a second, and when it ends (``finished``)."""

    already_done: int
    """Items an earlier run recorded (ok, or failed unless ``existing="retry_failed"``)."""
    ok: int
    """Items classified in this run."""
    failed: int
    """Items that failed in this run."""
    retries: int
    """Requests sent again in this run."""
    total: int | None
    """Items expected in all, ``already_done`` included: estimated from the sources' count
    until they are listed to the end, then exact; ``None`` while not known (never below
    ``done``)."""
    total_is_exact: bool
    """The sources have been listed to the end: ``total`` is what they held."""
    found: int
    """Items met so far that are done or to do: what ``total`` will be at least."""
    waiting: str | None
    """What new requests wait for (a rate-limit pause, an outage), in words; ``None``."""
    finished: bool = False
    """The job is over: the last snapshot."""

    @property
    def done(self) -> int:
        """Items done, earlier runs' included."""
        return self.already_done + self.ok + self.failed


class ProgressListener(Protocol):
    """What a job tells its caller as it runs. Every method is called on the job's event loop
    (``classify``: the job's thread).

    ``progress`` brings a ``Progress`` snapshot when the job starts, whenever the expected
    total changes, about once a second (so a display can refresh during a long pause) and
    at the end (``finished``); ``row`` each row as it is recorded (read it, do not change
    it); ``note`` news from the job (an outage, stuck requests, a stop), ``None`` once it
    no longer holds.
    """

    def progress(self, progress: Progress) -> None: ...

    def row(self, row: Mapping[str, Any]) -> None: ...

    def note(self, text: str | None) -> None: ...


class SilentProgress:
    """A ProgressListener that shows nothing (the default for the Python API). Subclass it to
    hear only some of the calls."""

    def progress(self, progress: Progress) -> None:
        pass

    def row(self, row: Mapping[str, Any]) -> None:
        pass

    def note(self, text: str | None) -> None:
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
