"""The exception tree of batchclassify.

    BatchClassifyError            base of everything this package raises
    ├── UsageError                bad flags or unreadable input, found before any request (exit 2)
    ├── OutputError               the output cannot be used or belongs to another job (exit 2)
    │   └── OutputWriteError      writing failed mid-job (disk full): stopped early (exit 3)
    ├── FatalApiError             the API refused the job: bad key, no credits, no model (exit 3)
    └── ItemError                 one item failed; recorded in that item's row, the job goes on
        ├── RetryableError        worth another attempt: timeouts, dropped connections, 429, 5xx
        └── (ItemError itself)    not worth retrying: bad image, 400, 413, missing file

aiohttp exceptions never leave ``client.py``: they are translated there, once, into these
classes, with the API key scrubbed from their text.
"""

from __future__ import annotations


class BatchClassifyError(Exception):
    """Base class for every error batchclassify raises on purpose."""


class UsageError(BatchClassifyError):
    """The command line or an input is unusable; nothing was sent."""


class OutputError(BatchClassifyError):
    """The output file cannot be used (unwritable, or written by an incompatible job)."""


class OutputWriteError(OutputError):
    """Writing the output failed once the job had started (disk full, quota): rows written so
    far are kept, and rerunning the same command resumes."""


class FatalApiError(BatchClassifyError):
    """An answer that means every further request would fail the same way."""

    def __init__(self, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status


class ItemError(BatchClassifyError):
    """One item failed. ``kind`` is a short machine-readable tag stored as ``error_type``."""

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.http_status = http_status
        self.retry_after = retry_after


class RetryableError(ItemError):
    """A failure that a later attempt may not meet (timeouts, 429, 5xx, dropped connections)."""

    unreachable: bool = False
    """The host name did not resolve or the connection was refused: nothing listens there."""
    server_out: bool = False
    """Several servers (``fleet.py``): the server that failed is out now, while another is
    in; the item is retried at once, elsewhere, and the attempt does not count."""
