"""The ``[fast]`` extra (issue 25): a job's process runs on uvloop when it is installed, and
on the standard loop with ``BATCHCLASSIFY_EVENT_LOOP=asyncio``; a whole run on uvloop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import anyio
import pytest

from batchclassify.job.running import EVENT_LOOP_VARIABLE, loop_options

from .conftest import MakeServer, make_images, read_rows
from .test_robustness import job_config

uvloop = pytest.importorskip("uvloop")


def test_uvloop_is_used_when_installed_unless_asked_not_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(EVENT_LOOP_VARIABLE, raising=False)
    assert loop_options() == {"use_uvloop": True}
    monkeypatch.setenv(EVENT_LOOP_VARIABLE, "asyncio")
    assert loop_options() == {"use_uvloop": False}


def test_a_job_with_a_hung_request_runs_on_uvloop(
    tmp_path: Path, make_server: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watchdog's cuts (Task.cancelling/uncancel), copies and spares on uvloop's loop."""
    from batchclassify.job.runner import Job
    from batchclassify.job.running import run_until_signalled

    monkeypatch.delenv(EVENT_LOOP_VARIABLE, raising=False)
    server = make_server(latency=0.005, hang_rate=0.01, seed=7)
    make_images(tmp_path / "in", 200)
    config = job_config(server, tmp_path / "in", tmp_path / "out.jsonl", http={"timeout": 3600})
    loops: list[str] = []

    async def main() -> tuple[object, int | None]:
        loops.append(type(asyncio.get_running_loop()).__module__)
        return await run_until_signalled(Job(config))

    _summary, signum = anyio.run(main, backend_options=loop_options())

    assert loops == ["uvloop"] and signum is None
    rows = read_rows(tmp_path / "out.jsonl")
    assert len(rows) == 200 and all(row["status"] == "ok" for row in rows)
    assert server.stats.hangs >= 1
