"""A push's progress file, ``OUTPUT.push-TARGET.progress.json`` beside its ledger, kept
current for ``batchclassify status`` by the same writer as a run's (``output/progressfile.py``:
atomic rewrites, only over a file of this tool, rates over the last 30 s, ETA)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...api.redaction import redact
from ...output.progressfile import WRITE_INTERVAL, ProgressWriter
from ...output.sidecars import PUSH_PROGRESS, push_file
from .ledger import push_target
from .summary import PushSummary


def push_progress_path(output: Path, project: str, api_url: str) -> Path:
    """The progress file of a push of ``output`` to ``project`` at ``api_url``: beside the
    default ledger, named as it is (and there too with ``--ledger``, where ``status`` looks)."""
    return push_file(output, push_target(project, api_url), PUSH_PROGRESS)


class PushProgressFile(ProgressWriter):
    """Writes a push's progress file from its ``PushSummary``: a ``ProgressListener``."""

    command = "push"

    def __init__(
        self,
        output: Path,
        summary: PushSummary,
        *,
        project: str,
        api_url: str,
        ledger: Path,
        secret: str | None,
        live: Callable[[], dict[str, Any]],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        interval: float = WRITE_INTERVAL,
    ) -> None:
        super().__init__(
            push_progress_path(output, project, api_url),
            output,
            live=live,
            clock=clock,
            wall=wall,
            interval=interval,
        )
        self._summary = summary
        self._project = project
        self._api_url = api_url
        self._ledger = ledger
        self._secret = secret

    def outcome(self) -> str:
        summary = self._summary
        if summary.stopped_by is not None:
            return f"stopped: {summary.stopped_by}"
        return "interrupted" if summary.interrupted else "finished"

    def requests(self) -> int:
        return self._summary.requests

    def counts(self) -> dict[str, Any]:
        summary = self._summary
        return {
            "project": self._project,
            "api_url": self._api_url,
            "ledger": str(self._ledger),
            "selected": summary.selected,
            "pushed": summary.pushed,
            "uploaded": summary.uploaded,
            "annotated": summary.annotated,
            "duplicates": summary.duplicates,
            "already_annotated": summary.already_annotated,
            "unlabelled": summary.unlabelled,
            "failed": summary.failed,
            "errors": dict(summary.errors.most_common(5)),
            "retries": summary.retries,
            "bytes_sent": summary.bytes_sent,
        }

    def encode(self, snapshot: dict[str, Any]) -> bytes:
        # The key rides in the query of every request: whatever message brings it here
        # (an error, a note, a URL), it is cut out of what is written.
        return redact(super().encode(snapshot).decode(), self._secret).encode()
