"""What a push did: its counts as it runs (for the progress file) and at the end (the summary
and the exit code)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ...errors import JobStopped, OutputError
from ...exit_codes import ExitCode


@dataclass
class PushSummary:
    """What a push did; ``exit_code`` follows the CLI's convention."""

    selected: int = 0
    done_before: int = 0
    """Selected items an earlier push finished (the ledger says so): nothing sent."""
    uploaded: int = 0
    duplicates: int = 0
    """Uploads the API answered ``duplicate``: the project held the image already."""
    pushed: int = 0
    """Items this run finished: annotated (or found annotated), or uploaded with no class."""
    annotated: int = 0
    already_annotated: int = 0
    """Annotations refused as "already annotated": the image had one."""
    unlabelled: int = 0
    """Images with no class: uploaded, with nothing to annotate."""
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    requests: int = 0
    """Requests sent (each attempt of an upload or an annotation)."""
    bytes_sent: int = 0
    elapsed: float = 0.0
    interrupted: bool = False
    stopped_by: JobStopped | OutputError | None = None

    @property
    def exit_code(self) -> ExitCode:
        if self.stopped_by is not None:
            return ExitCode.for_error(self.stopped_by)
        if self.interrupted:
            return ExitCode.INTERRUPTED
        return ExitCode.FAILED_ITEMS if self.failed else ExitCode.OK
