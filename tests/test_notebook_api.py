"""The synchronous Python API where notebooks use it: inside a running event loop, with the
plain ``str`` arguments a notebook user types, and stopped by the kernel's interrupt."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from batchclassify import HttpConfig, JobConfig, JobSummary, UsageError, classify
from batchclassify.server import BackgroundServer
from batchclassify.summary import SilentProgress

from .conftest import KEY, make_images, read_rows, rows_by_id


def _config(
    server: BackgroundServer, sources: str | Path, output: str | Path, concurrency: int = 32
) -> JobConfig:
    http = HttpConfig(api_url=server.url, api_key=KEY, concurrency=concurrency)
    return JobConfig(sources=sources, model="colors/1", output=output, http=http)


def test_classify_works_inside_a_running_event_loop(
    tmp_path: Path, server: BackgroundServer
) -> None:
    """A Jupyter cell runs inside the kernel's event loop; ``classify`` must work there."""
    expected = make_images(tmp_path / "photos", 5)
    output = tmp_path / "results.jsonl"
    config = _config(server, sources=str(tmp_path / "photos"), output=str(output))

    async def notebook_cell() -> tuple[JobSummary, bool]:
        summary = classify(config)  # a plain synchronous call, as a notebook user writes it
        return summary, asyncio.get_running_loop().is_running()

    summary, loop_was_running = asyncio.run(notebook_cell())

    assert loop_was_running
    assert (summary.ok, summary.failed, summary.exit_code) == (5, 0, 0)
    rows = rows_by_id(output)
    assert {row["path"]: row["top"] for row in rows.values()} == expected


def test_classify_with_the_embedded_server_inside_a_running_event_loop(tmp_path: Path) -> None:
    """The README's no-account trial, typed into a notebook."""
    expected = make_images(tmp_path / "photos", 3)
    config = JobConfig(
        sources=str(tmp_path / "photos"),
        model="colors/1",
        output=str(tmp_path / "results.jsonl"),
        http=HttpConfig(api_url="local"),
    )

    async def notebook_cell() -> JobSummary:
        return classify(config)

    assert asyncio.run(notebook_cell()).ok == 3
    assert {row["path"]: row["top"] for row in read_rows(tmp_path / "results.jsonl")} == expected


def test_classify_from_a_running_loop_reports_errors_as_the_script_does(
    tmp_path: Path, server: BackgroundServer
) -> None:
    config = _config(server, sources=str(tmp_path / "nowhere"), output=tmp_path / "o.jsonl")

    async def notebook_cell() -> None:
        classify(config)

    with pytest.raises(UsageError, match="nowhere"):
        asyncio.run(notebook_cell())
    assert server.stats.requests == 0


def test_one_str_or_path_is_one_source(tmp_path: Path) -> None:
    base: dict[str, Any] = {"model": "colors/1"}
    assert JobConfig(sources="photos", output="r.jsonl", **base).sources == ("photos",)
    from_path = JobConfig(sources=tmp_path / "photos", output=tmp_path / "r.jsonl", **base)
    assert from_path.sources == (str(tmp_path / "photos"),)
    mixed = JobConfig(sources=["a.csv", Path("b")], output="r.parquet", **base)
    assert mixed.sources == ("a.csv", "b")
    assert mixed.output == Path("r.parquet") and mixed.format == "parquet"
    with pytest.raises(UsageError, match="sources: 3 is not a source"):
        JobConfig(sources=[3], output="r.jsonl", **base)  # type: ignore[list-item]
    with pytest.raises(UsageError, match="output: None is not a path"):
        JobConfig(sources="a", output=None, **base)  # type: ignore[arg-type]


def test_classify_reads_stdin_like_run_job(tmp_path: Path, server: BackgroundServer) -> None:
    expected = make_images(tmp_path / "photos", 3)
    output = tmp_path / "results.jsonl"
    listing = io.StringIO("".join(f"{path}\n" for path in expected))

    summary = classify(_config(server, sources="-", output=output), stdin=listing)

    assert summary.ok == 3
    assert {row["path"]: row["top"] for row in read_rows(output)} == expected


class _InterruptOnFirstRow(SilentProgress):
    """Sends this process SIGINT when the first row is recorded: the kernel's interrupt."""

    def __init__(self) -> None:
        self.sent = False

    def row(self, row: Mapping[str, Any]) -> None:
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.skipif(os.name != "posix", reason="needs SIGINT delivered to the main thread")
def test_interrupt_stops_the_job_cleanly_then_raises(
    tmp_path: Path, make_server: Callable[..., BackgroundServer]
) -> None:
    assert threading.current_thread() is threading.main_thread()
    server = make_server(latency=0.05)
    expected = make_images(tmp_path / "photos", 20)
    output = tmp_path / "results.jsonl"
    config = _config(server, sources=tmp_path / "photos", output=output, concurrency=1)

    with pytest.raises(KeyboardInterrupt):
        classify(config, progress=_InterruptOnFirstRow())

    # Stopped early, and every row it did write is whole: the file resumes as is.
    written = rows_by_id(output)
    assert 1 <= len(written) < len(expected)
    assert all(row["status"] == "ok" for row in written.values())
    summary = classify(config)
    assert summary.ok == len(expected) - len(written)
    assert {row["path"]: row["top"] for row in rows_by_id(output).values()} == expected
