"""``<output>.progress.json``: a running job's state, kept current for ``batchclassify status``.

``ProgressFile`` is a ``ProgressListener`` beside the caller's: the job shows it the same
snapshots (at the start, as the total changes, every second, at the end). A push keeps one
of its own the same way (``ProgressWriter`` is the part both share; ``sidecars.push_file``
names the push's). The file is rewritten at the start and the end, and between at most
every ``interval`` seconds, atomically (a temporary file renamed over it), so a reader
never sees half a file. It is written only over a file this tool wrote (``"tool":
"batchclassify"``).

``read_progress`` (``read_progress_file`` for a push's) reads it back for ``status`` and
``report``, and says whether the job is still running: a ``running`` file whose process is
gone (same host: no such pid, or one that is not batchclassify) or that has not been
updated for ``STALE_AFTER`` seconds (another host, or no /proc to ask) belonged to a job
that was killed.
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from ..summary import JobSummary, Progress
from .sidecars import PROGRESS, existing, sidecar

TOOL = "batchclassify"
#: How often the file is rewritten while the job runs.
WRITE_INTERVAL = 2.0
#: The window over which "recent" rates are measured.
RATE_WINDOW = 30.0
#: A running job rewrites its file every 2 s; this much silence means it is gone.
STALE_AFTER = 60.0


def progress_path(output: Path) -> Path:
    """``<output>.progress.json``, beside the output (see ``sidecars.py``)."""
    return sidecar(output, PROGRESS)


def read_progress(output: Path, *, now: float | None = None) -> dict[str, Any] | None:
    """The progress file of ``output`` (``None`` if there is none of this tool's), with
    ``running``: whether the job that wrote it still runs (``False`` once it ended, or when a
    ``running`` file was left by a killed job)."""
    return read_progress_file(existing(output, PROGRESS), now=now)


def read_progress_file(
    path: Path, *, command: str = "run", now: float | None = None
) -> dict[str, Any] | None:
    """``read_progress`` of a progress file by its path, if ``command`` wrote it (a push's
    is named by ``sidecars.push_file``)."""
    try:
        found: dict[str, Any] = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not _written_by(found, command):
        return None
    found["running"] = found.get("state") == "running" and _alive(found, now or time.time())
    return found


def is_killed(progress: dict[str, Any]) -> bool:
    """A ``read_progress`` result whose job was killed: ``running`` in the file, not alive."""
    return progress.get("state") == "running" and not progress.get("running")


def _alive(found: dict[str, Any], now: float) -> bool:
    """Is the job that wrote ``found`` still running?"""
    pid = found.get("pid")
    if found.get("host") == socket.gethostname() and isinstance(pid, int):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # alive, owned by someone else
        # A live batchclassify process is the job even when silent (compacting at the end);
        # any other process has the pid by reuse. Where that cannot be read, staleness decides.
        command = _command_line(pid)
        if command is not None:
            return b"batchclassify" in command
    updated = found.get("updated_unix")
    return isinstance(updated, int | float) and now - updated <= STALE_AFTER


def _command_line(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


class ProgressWriter:
    """Keeps a progress file current: a ``ProgressListener``. What every command's file has
    (state, process, total, remaining, recent speed, ETA) is here; what it counts is the
    subclass's: ``ProgressFile`` a ``run``, ``commands/push``'s ``PushProgressFile`` a push."""

    #: The command that writes the file (``status`` tells a push's from a run's by it).
    command = "run"

    def __init__(
        self,
        path: Path,
        output: Path,
        *,
        live: Callable[[], dict[str, Any]],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        interval: float = WRITE_INTERVAL,
    ) -> None:
        self.path = path
        self._output = output
        self._live = live
        self._clock = clock
        self._wall = wall
        self._interval = interval
        self._enabled: bool | None = None  # decided at the first snapshot
        self._state = "running"
        self._progress: Progress | None = None
        self._note: str | None = None
        self._started = 0.0
        self._last_write = -1e18
        self._samples: deque[tuple[float, int, int]] = deque()

    # -- what a subclass counts -------------------------------------------------------------

    def outcome(self) -> str:
        """The state once the work has ended: ``finished``, ``interrupted``,
        ``stopped: <reason>``."""
        raise NotImplementedError

    def requests(self) -> int:
        """Requests sent so far in this run (for ``requests_per_s``)."""
        raise NotImplementedError

    def counts(self) -> dict[str, Any]:
        """The subclass's own figures, written with the common ones."""
        raise NotImplementedError

    def encode(self, snapshot: dict[str, Any]) -> bytes:
        """The file's bytes."""
        return orjson.dumps(snapshot, option=orjson.OPT_INDENT_2) + b"\n"

    # -- ProgressListener -------------------------------------------------------------------

    def progress(self, progress: Progress) -> None:
        """Written at the first snapshot, at the last, and between when ``interval`` has
        passed."""
        self._progress = progress
        if self._enabled is None:
            self._enabled = _ours_or_absent(self.path, self.command)
            self._started = self._wall()
        elif progress.finished:
            self._state = self.outcome()
        elif self._clock() - self._last_write < self._interval:
            return
        self._write()

    def row(self, row: Mapping[str, Any]) -> None:
        pass  # the ok / failed counts are the summary's

    def note(self, text: str | None) -> None:
        self._note = text

    # -- the file ---------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """What the file holds: state, process, counts, recent speed, and ``live``'s."""
        progress = self._progress
        assert progress is not None  # written from the first snapshot on
        now = self._clock()
        done = progress.ok + progress.failed
        requests = self.requests()
        live = self._live()
        self._samples.append((now, done, requests))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW:
            self._samples.popleft()
        first_time, first_done, first_requests = self._samples[0]
        span = now - first_time
        images_per_s = (done - first_done) / span if span > 0 else None
        total, found = progress.total, progress.found
        # Without a count of the sources, remaining is what was found so far: a floor.
        remaining = max((found if total is None else total) - progress.already_done - done, 0)
        eta = remaining / images_per_s if images_per_s else None
        return {
            "tool": TOOL,
            "command": self.command,
            "state": self._state,
            "output": str(self._output),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": iso(self._started),
            "updated": iso(self._wall()),
            "updated_unix": round(self._wall(), 3),
            "elapsed_s": round(self._wall() - self._started, 1),
            "already_done": progress.already_done,
            "total": total,
            "total_is_exact": progress.total_is_exact,
            "found_so_far": found,
            **self.counts(),
            "remaining": remaining,
            "images_per_s": None if images_per_s is None else round(images_per_s, 2),
            "requests_per_s": round((requests - first_requests) / span, 2) if span > 0 else None,
            "eta_s": None if eta is None else round(eta),
            "eta_is_lower_bound": total is None,
            "note": self._note,
            "waiting_for": progress.waiting,
            **live,
        }

    def _write(self) -> None:
        self._last_write = self._clock()
        if not self._enabled:
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            tmp.write_bytes(self.encode(self.snapshot()))
            os.replace(tmp, self.path)
        except OSError:
            # The progress file is a courtesy: a full disk is the sink's to report, not ours.
            tmp.unlink(missing_ok=True)


class ProgressFile(ProgressWriter):
    """Writes a ``run``'s progress file, ``<output>.progress.json``, from its summary."""

    def __init__(
        self,
        output: Path,
        summary: JobSummary,
        *,
        live: Callable[[], dict[str, Any]],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        interval: float = WRITE_INTERVAL,
    ) -> None:
        super().__init__(
            progress_path(output), output, live=live, clock=clock, wall=wall, interval=interval
        )
        self._summary = summary

    def outcome(self) -> str:
        summary = self._summary
        if summary.fatal is not None:
            return f"stopped: {summary.fatal}"
        return "interrupted" if summary.interrupted else "finished"

    def requests(self) -> int:
        summary = self._summary
        return summary.ok + summary.failed - summary.requests_saved + summary.retries

    def counts(self) -> dict[str, Any]:
        summary = self._summary
        return {
            "ok": summary.ok,
            "failed": summary.failed,
            "retries": summary.retries,
            "cache_hits": summary.cache_hits,
            "shared": summary.shared,
            "credits": round(summary.credits, 6),
            "costed": summary.costed,
        }


def _ours_or_absent(path: Path, command: str) -> bool:
    """May we write ``path``? Only if it is missing or a progress file of this tool's
    ``command`` (a push's never replaces a run's, nor the other way round)."""
    try:
        found = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return True
    except (OSError, orjson.JSONDecodeError):
        return False
    return _written_by(found, command)


def _written_by(found: object, command: str) -> bool:
    """Is ``found`` (a file's JSON) a progress file of this tool's ``command``? Files from
    before push had its own carry no ``command``: a run's."""
    return (
        isinstance(found, dict)
        and found.get("tool") == TOOL
        and found.get("command", "run") == command
    )
