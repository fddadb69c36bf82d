"""What is known about the job behind an output: model, server, when, how long.

Read from ``<output>.job.json`` (never holds the key; only the API's host name is shown
anyway), the output's modification time, and ``<output>.progress.json`` when a job left one
(its state, start, last update and counts: ``ok`` and ``failed`` are the
last run's; a ``running`` file left by a killed job reads as ``KILLED``, as ``status`` says).
Anything not recorded is ``None`` and shown as unknown.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ...output.progressfile import is_killed, read_progress
from ...output.reading import read_job_settings

KILLED = "not running (killed?)"
"""The state of a job whose progress file says ``running`` but whose process is gone."""


@dataclass(frozen=True, slots=True)
class JobFacts:
    """The job's settings and timing, as far as the files beside the output tell."""

    output: str
    model: str | None
    server: str | None
    confidence: float | None
    max_size: int | None
    version: str | None
    last_written: datetime | None
    started: datetime | None
    duration_s: float | None
    images_per_s: float | None
    state: str | None
    """From the progress file: ``running``, ``finished``, ``stopped: ...``, ``interrupted``;
    for the output of ``merge --partial``, ``partial merge (what it lacks)``."""


def server_host(api_url: Any) -> str | None:
    """The API's host name only: a URL could carry credentials or a query string."""
    if not isinstance(api_url, str) or not api_url:
        return None
    if api_url == "local":
        return "local test server"
    host = urlsplit(api_url if "//" in api_url else "//" + api_url).hostname
    return host or None


def _mtime(path: Path) -> datetime | None:
    try:
        if path.is_dir():  # a Parquet folder: its newest part or journal
            times = [entry.stat().st_mtime for entry in os.scandir(path) if entry.is_file()]
            stamp = max(times, default=path.stat().st_mtime)
        else:
            stamp = path.stat().st_mtime
    except OSError:
        return None
    return datetime.fromtimestamp(stamp, tz=UTC)


def _when(value: Any) -> datetime | None:
    """A progress-file time: epoch seconds or an ISO 8601 string."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return datetime.fromtimestamp(float(value), tz=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _seconds(value: Any) -> float | None:
    """A non-negative number from the progress file, else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return float(value)


def _partial(settings: dict[str, Any]) -> str | None:
    """A merge of an incomplete set of outputs (``merge --partial``) says what it lacks."""
    lacking = settings.get("partial")
    if not isinstance(lacking, list) or not lacking:
        return None
    return f"partial merge ({'; '.join(map(str, lacking))})"


def _state(progress: dict[str, Any]) -> str | None:
    if is_killed(progress):
        return KILLED
    state = progress.get("state")
    return state if isinstance(state, str) else None


def job_facts(output: Path) -> JobFacts:
    """The facts of the job that wrote ``output``."""
    settings = read_job_settings(output) or {}
    progress = read_progress(output) or {}
    started = _when(progress.get("started"))
    duration = _seconds(progress.get("elapsed_s"))
    if duration is None and started is not None:
        updated = _when(progress.get("updated"))
        duration = (updated - started).total_seconds() if updated else None
    done = [_seconds(progress.get("ok")), _seconds(progress.get("failed"))]
    rate = None
    if duration and None not in done:
        rate = sum(n for n in done if n is not None) / duration
    confidence = settings.get("confidence")
    max_size = settings.get("max_size")
    return JobFacts(
        output=str(output),
        model=settings.get("model") if isinstance(settings.get("model"), str) else None,
        server=server_host(settings.get("api_url")),
        confidence=float(confidence) if isinstance(confidence, int | float) else None,
        max_size=max_size if isinstance(max_size, int) else None,
        version=str(settings["batchclassify_version"])
        if settings.get("batchclassify_version")
        else None,
        last_written=_mtime(output),
        started=started,
        duration_s=duration,
        images_per_s=rate,
        state=_state(progress) or _partial(settings),
    )
