"""The push ledger: what an earlier push of this output to this project did, so a rerun sends
only what is missing.

``<output>.push-<project>.jsonl`` beside the output (``-<tag>`` added for an API other than
Roboflow's, so a rehearsal against a local server never counts as the real push). An
append-only JSONL file: a header line naming the project and API, then one line per event::

    {"id": ..., "uploaded": IMAGE_ID, "duplicate": false, "split": "train"}
    {"id": ..., "annotated": IMAGE_ID, "annotation": "cat", "already": false}
    {"id": ..., "failed": "upload"|"annotate"|"read", "error_type": ..., "error": ..., ...}

Each line is one ``write`` to a file opened for appending, made as soon as the answer is in
(so a kill -9 loses at most the answers in flight; their rerun meets ``duplicate`` and
"already annotated", which are successes), and the file is fsynced at the end. A torn last
line (a kill mid-write) is cut off when the ledger is opened again. The file is locked while
a push writes it: a second push of the same output to the same project is refused. The key
is never written.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from ...errors import OutputError, OutputWriteError, UsageError
from ...output.sidecars import PUSH_LEDGER, push_file

_HEADER_KEY = "batchclassify_push_ledger"
_VERSION = 1
_DEFAULT_API = "https://api.roboflow.com"


def ledger_path(output: Path, project: str, api_url: str) -> Path:
    """The default ledger of a push of ``output`` to ``project`` at ``api_url``."""
    return push_file(output, push_target(project, api_url), PUSH_LEDGER)


def push_target(project: str, api_url: str) -> str:
    """What names a push's files (``sidecars.push_file``): the project, and for an API other
    than Roboflow's a tag of it, so a rehearsal never counts as the real push."""
    base = api_url.rstrip("/")
    if base == _DEFAULT_API:
        tag = ""
    elif base == "local":
        tag = "-local"
    else:
        tag = "-" + hashlib.blake2b(base.encode(), digest_size=4).hexdigest()
    return project + tag


@dataclass(slots=True)
class Entry:
    """What the ledger says about one id."""

    image_id: str | None = None
    annotated: bool = False
    annotation: str | None = None
    """The annotation saved (``annotationFile``), once ``annotated``."""
    failure: str | None = None
    """The latest failure's message, if the id is not done."""


class Ledger:
    """An open ledger: the state of every id, and ``record_*`` to append events."""

    def __init__(self, path: Path, *, project: str, api_url: str) -> None:
        self.path = path
        self._project = project
        self._api_url = api_url.rstrip("/")
        self.entries: dict[str, Entry] = {}
        self._fd: int | None = None

    def __enter__(self) -> Ledger:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise OutputError(f"cannot open the push ledger {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OutputError(
                f"{self.path}: another push of this output to this project is running "
                "(one at a time; rerun once it has finished)"
            ) from None
        self._fd = fd
        try:
            self._load(fd)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.fsync(fd)
            os.close(fd)

    def read(self) -> Ledger:
        """Load the ledger without creating, locking or repairing it (``--dry-run``)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return self
        except OSError as exc:
            raise OutputError(f"cannot read the push ledger {self.path}: {exc.strerror}") from None
        if data:
            self._parse(data)
        return self

    def _load(self, fd: int) -> None:
        with open(fd, "rb", closefd=False) as handle:
            data = handle.read()
        if not data:
            self._write(
                {
                    _HEADER_KEY: _VERSION,
                    "project": self._project,
                    "api_url": self._api_url,
                }
            )
            return
        torn = self._parse(data)
        if torn:  # after the last newline: a line a kill cut short
            os.ftruncate(fd, len(data) - len(torn))

    def _parse(self, data: bytes) -> bytes:
        """Apply every event; returns the torn bytes after the last newline, if any."""
        lines = data.split(b"\n")
        self._check_header(lines[0])
        torn = lines.pop()
        for line in lines[1:]:
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict) and isinstance(event.get("id"), str):
                self._apply(event)
        return torn

    def _check_header(self, line: bytes) -> None:
        try:
            header = orjson.loads(line)
        except orjson.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or _HEADER_KEY not in header:
            raise UsageError(
                f"{self.path} is not a batchclassify push ledger; move it away or name "
                "another with --ledger"
            )
        if header.get("project") != self._project or header.get("api_url") != self._api_url:
            raise UsageError(
                f"{self.path} records a push to project {header.get('project')!r} at "
                f"{header.get('api_url')}, not {self._project!r} at {self._api_url}; name "
                "another with --ledger"
            )

    def _apply(self, event: dict[str, Any]) -> None:
        entry = self.entries.setdefault(event["id"], Entry())
        if isinstance(event.get("uploaded"), str):
            entry.image_id = event["uploaded"]
            entry.failure = None
        elif isinstance(event.get("annotated"), str):
            entry.image_id = event["annotated"]
            entry.annotated = True
            entry.annotation = event.get("annotation")
            entry.failure = None
        elif "failed" in event:
            entry.failure = str(event.get("error"))

    def _write(self, event: dict[str, Any]) -> None:
        assert self._fd is not None, "use the Ledger as a context manager"
        line = orjson.dumps(event) + b"\n"
        try:
            written = os.write(self._fd, line)
        except OSError as exc:
            raise OutputWriteError(
                f"cannot write the push ledger {self.path}: {exc.strerror}"
            ) from None
        if written != len(line):  # a full disk: the line is torn, the next open cuts it
            raise OutputWriteError(f"cannot write the push ledger {self.path}: is the disk full?")

    def record(self, event: dict[str, Any]) -> None:
        """Append one event and apply it."""
        self._write(event)
        self._apply(event)
