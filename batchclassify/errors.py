"""The exception tree of batchclassify, and ``StopCause``: why a job stopped early.

    BatchClassifyError            base of everything this package raises
    ├── UsageError                bad flags or unreadable input, found before any request (exit 2)
    ├── OutputError               the output cannot be used or belongs to another job (exit 2)
    │   └── OutputWriteError      writing failed mid-job (disk full); also a JobStopped (exit 3)
    ├── JobStopped                stopped early; the rows so far are kept, rerun resumes (exit 3)
    │   ├── FatalApiError         the API refused the job: 401/402/403/404/423/507
    │   │   └── CreditsExhaustedError  402: not enough credits (a cap or an empty balance)
    │   ├── BudgetReachedError    ``--max-credits`` would be passed: stopped like Ctrl-C
    │   ├── ApiUnreachableError   the API was never reached: unknown host, connection refused
    │   ├── OutageTimeoutError    the API stayed unavailable for ``max_outage``
    │   ├── TooManyFailuresError  ``max_failures`` items failed
    │   ├── OpenFilesError        no file descriptor freed up for ``retry.max_elapsed``
    │   └── OutputWriteError      (see above)
    └── ItemError                 one item failed; recorded in that item's row, the job goes on
        ├── RetryableError        worth another attempt: timeouts, dropped connections, 5xx
        │   └── RateLimitedError  429: the job slows down; these attempts do not count
        └── (ItemError itself)    not worth retrying: bad image, 400, 413, missing file

A ``JobStopped`` never escapes ``run_job``/``classify`` except ``OutputWriteError``: the job
returns its ``JobSummary``, whose ``stop_cause`` (a ``StopCause``) and ``stopped_by`` (the
exception) say why. An interrupt (Ctrl-C, ``Job.request_stop``) is ``StopCause.INTERRUPTED``;
``classify`` then raises Python's own ``KeyboardInterrupt``.

A transport's own exceptions (``api/http1.py``'s, aiohttp's) never leave it: they are
translated there, once, into these classes, with no URL or API key in their text.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

from .error_types import ErrorType


class StopCause(StrEnum):
    """Why a job stopped before the end of its sources (``JobSummary.stop_cause``)."""

    API_REFUSED = "api_refused"
    UNREACHABLE = "unreachable"
    OUTAGE = "outage"
    MAX_FAILURES = "max_failures"
    OPEN_FILES = "open_files"
    OUTPUT_WRITE = "output_write"
    INTERRUPTED = "interrupted"
    CREDITS = "credits"
    """The API answered 402: the workspace's credit cap or balance is used up."""
    BUDGET = "budget"
    """``--max-credits``: the next request could have taken this run's spend past it."""


class BatchClassifyError(Exception):
    """Base class for every error batchclassify raises on purpose."""


class UsageError(BatchClassifyError):
    """The command line or an input is unusable; nothing was sent.

    A configuration value refused names its ``field`` (``"http.timeout"``) and what is wrong
    with it (``problem``), so the CLI can name its flag (``--timeout``) instead.
    """

    def __init__(
        self, message: str, *, field: str | None = None, problem: str | None = None
    ) -> None:
        super().__init__(message)
        self.field = field
        self.problem = problem


class OutputError(BatchClassifyError):
    """The output file cannot be used (unwritable, or written by an incompatible job)."""


class JobStopped(BatchClassifyError):
    """The job stopped early; the rows written so far are kept and a rerun resumes.

    ``cause`` tells the subclasses apart as data (the same value as ``JobSummary.stop_cause``).
    """

    cause: ClassVar[StopCause]


class OutputWriteError(OutputError, JobStopped):
    """Writing the output failed once the job had started (disk full, quota): rows written so
    far are kept, and rerunning the same command resumes."""

    cause = StopCause.OUTPUT_WRITE


class FatalApiError(JobStopped):
    """The API refused the job (bad key, no credits, unknown model, paused workspace): every
    further request would fail the same way."""

    cause = StopCause.API_REFUSED

    def __init__(self, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status


class CreditsExhaustedError(FatalApiError):
    """The API answered 402 (``credit_cap_exceeded``, "Not enough credits"): the workspace's
    credit cap or balance is used up. The message carries the server's own words."""

    cause = StopCause.CREDITS


class BudgetReachedError(JobStopped):
    """``--max-credits``: no request may start that could take the run's spend past it. The
    job stops as on Ctrl-C (requests in flight finish, every row is written); rerun with a
    higher cap to go on."""

    cause = StopCause.BUDGET

    def __init__(self, message: str, *, spent: float, limit: float) -> None:
        super().__init__(message)
        self.spent = spent
        self.limit = limit


class ApiUnreachableError(JobStopped):
    """No request was ever answered: the host name does not resolve or the connection is
    refused (a typo in the URL, a server not started)."""

    cause = StopCause.UNREACHABLE


class OutageTimeoutError(JobStopped):
    """The API answered earlier, then stayed unavailable for ``OutageConfig.max_outage``."""

    cause = StopCause.OUTAGE


class TooManyFailuresError(JobStopped):
    """``JobConfig.max_failures`` items failed: the job is going wrong as a whole."""

    cause = StopCause.MAX_FAILURES


class OpenFilesError(JobStopped):
    """The process ran out of file descriptors and none freed up in time."""

    cause = StopCause.OPEN_FILES


class ItemError(BatchClassifyError):
    """One item failed. ``kind`` is the ``ErrorType`` stored as the row's ``error_type``."""

    def __init__(
        self,
        message: str,
        *,
        kind: ErrorType,
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.http_status = http_status
        self.retry_after = retry_after

    answered_by_copy: bool = False
    """The answer of a copy of a stuck request (``sending.py``): the request itself was
    cancelled unanswered, and may have run (``--max-credits`` counts it at its reservation)."""


class RetryableError(ItemError):
    """A failure that a later attempt may not meet (timeouts, 429, 5xx, dropped connections)."""

    unreachable: bool = False
    """The host name did not resolve or the connection was refused: nothing listens there."""
    server_out: bool = False
    """Several servers (``fleet.py``): the server that failed is out now, while another is
    in; the item is retried at once, elsewhere, and the attempt does not count."""


class RateLimitedError(RetryableError):
    """The server answered 429: too many requests; ``retry_after`` is its Retry-After."""
