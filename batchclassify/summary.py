"""What a job reports: the listener a progress display implements, and the final summary."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class ProgressListener(Protocol):
    """What the runner tells a progress display. Every method is called on the event loop."""

    def started(self, *, already_done: int) -> None: ...

    def add_total(self, count: int) -> None: ...

    def row(self, status: str) -> None: ...

    def retried(self) -> None: ...

    def note(self, text: str | None) -> None: ...

    def finished(self) -> None: ...


class SilentProgress:
    """A ProgressListener that shows nothing (the default for the Python API)."""

    def started(self, *, already_done: int) -> None:
        pass

    def add_total(self, count: int) -> None:
        pass

    def row(self, status: str) -> None:
        pass

    def retried(self) -> None:
        pass

    def note(self, text: str | None) -> None:
        pass

    def finished(self) -> None:
        pass


@dataclass
class JobSummary:
    """What a finished (or stopped) job did. ``exit_code`` follows the CLI's convention."""

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
    notes: list[str] = field(default_factory=list)
    """Things the job changed or noticed that the user should know (said once, at the end)."""
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def processed(self) -> int:
        return self.ok + self.failed

    @property
    def images_per_second(self) -> float:
        return self.processed / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def exit_code(self) -> int:
        if self.fatal is not None:
            return 3
        if self.interrupted:
            return 130
        return 1 if self.failed or self.previously_failed else 0
