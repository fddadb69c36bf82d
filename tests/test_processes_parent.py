"""run --processes when a process dies: the parent's death (kill -9, a closed terminal) ends
the job, a rerun while the children still hold their shards is refused once, and a killed
child is named in the summary. Real processes against the local server."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from batchclassify.config import JobConfig
from batchclassify.output.outputs import hold_output
from batchclassify.server import BackgroundServer

from .conftest import (
    PYTHON,
    Cli,
    MakeServer,
    make_images,
    read_rows,
    rows_by_id,
    run_args,
    start_cli,
    subprocess_env,
    wait_for_job,
)

#: How long the children may take to notice and stop: an outcome, not a speed (a gentle stop
#: lets the requests in flight, here 1 s each, finish).
STOP_BOUND = 20.0


def _children(folder: Path) -> dict[str, int]:
    """The children's pids, by shard output name, from their progress files."""
    found = {}
    for progress in folder.glob("*shard-*.progress.json"):
        try:
            found[progress.name] = orjson.loads(progress.read_bytes())["pid"]
        except (orjson.JSONDecodeError, KeyError):
            continue
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan is reaped by whoever adopts it, perhaps late)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def _wait_gone(pids: list[int]) -> list[int]:
    """The pids still running after ``STOP_BOUND`` seconds (none, if they all stopped)."""
    deadline = time.monotonic() + STOP_BOUND
    while time.monotonic() < deadline and any(_running(pid) for pid in pids):
        time.sleep(0.1)
    return [pid for pid in pids if _running(pid)]


def _kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["kill -9", "SIGHUP"])
def test_the_parents_death_stops_every_child_and_a_rerun_finishes_exactly_once(
    tmp_path: Path, make_server: MakeServer, how: str
) -> None:
    # 200 images at 1 s each, 2 at a time per child: ~50 s of work, far past STOP_BOUND, so
    # children left running on their own would be caught.
    slow = make_server(latency=1.0)
    expected = make_images(tmp_path / "images", 200)
    output = tmp_path / "results.jsonl"
    shards = tmp_path / "results.jsonl.shards"
    args = [*run_args(slow, output, tmp_path / "images"), "--processes", "2", "-c", "2", "-q"]
    parent = start_cli(args)
    pids: list[int] = []
    try:
        wait_for_job(lambda: len(_children(shards)) == 2 and slow.stats.requests >= 4, parent)
        pids = list(_children(shards).values())
        parent.send_signal(signal.SIGKILL if how == "kill -9" else signal.SIGHUP)
        code = parent.wait(timeout=STOP_BOUND)
        assert _wait_gone(pids) == [], f"children still running after the parent's {how}"
    finally:
        _kill_all(pids)
        parent.kill()
        _, err = parent.communicate()

    if how == "SIGHUP":  # handled like Ctrl-C: the children stopped, the parent says how
        assert code == 129, err
    # Stopped gently: the requests in flight finished (job/runner.py gives them STOP_GRACE,
    # 30 s, for 1 s answers) and every request the server got is an attempt of a row
    # written, none answered and lost. Counted through the rows' ``attempts``, which also
    # count a retry or a stuck request's copy, so a busy machine's extra request is no
    # failure here (rows == requests held only while there were none).
    on_disk = [row for shard in sorted(shards.glob("shard-*.jsonl")) for row in read_rows(shard)]
    assert 4 <= len(on_disk) < 200
    assert {row["status"] for row in on_disk} == {"ok"}
    assert slow.stats.requests <= sum(row["attempts"] for row in on_disk)
    assert not output.exists()  # not merged: the job did not finish

    fast = make_server()
    rerun = subprocess.run(
        [PYTHON, "-m", "batchclassify", *run_args(fast, output, tmp_path / "images"),
         "--processes", "2"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    assert f"{200 - len(on_disk)} ok, 0 failed, {len(on_disk)} already done" in rerun.stderr
    rows = rows_by_id(output)  # every image exactly once: no duplicate, none lost
    assert {item_id: row["top"] for item_id, row in rows.items()} == expected
    # One request per image left, bar the copies of stragglers a busy machine makes (each
    # counted in its row's attempts): every request the server got is an attempt of a row.
    done_before = {row["id"] for row in on_disk}
    new_rows = [row for item_id, row in rows.items() if item_id not in done_before]
    assert len(new_rows) == 200 - len(on_disk)
    assert fast.stats.requests == sum(row["attempts"] for row in new_rows)


def test_a_rerun_while_shards_are_still_written_says_so_once(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_images(tmp_path / "images", 6)
    output = tmp_path / "p.jsonl"
    shards = [tmp_path / "p.jsonl.shards" / f"shard-{i}-of-2.jsonl" for i in range(2)]
    base = JobConfig(sources=str(tmp_path / "images"), model="colors/1", output=output)
    # The earlier run's children, still alive: each holds its shard's lock.
    with hold_output(replace(base, output=shards[0])), hold_output(replace(base, output=shards[1])):
        result = cli(*run_args(server, output, tmp_path / "images"), "--processes", "2")

    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err  # said once, not per shard
    assert "still running" in lines[0]
    assert f"shard 0/2 (pid {os.getpid()})" in lines[0] and "shard 1/2" in lines[0]
    assert "0 ok" not in result.err and "results:" not in result.err
    assert server.stats.requests == 0
    assert not output.exists()


@pytest.mark.slow
def test_a_killed_child_is_named_in_the_summary_and_the_job_did_not_finish(
    tmp_path: Path, make_server: MakeServer, cli: Cli
) -> None:
    server = make_server(latency=0.2)
    make_images(tmp_path / "images", 60)
    output = tmp_path / "results.parquet"
    args = [*run_args(server, output, tmp_path / "images"), "--processes", "2", "-c", "2"]
    parent = start_cli(args)
    try:
        wait_for_job(lambda: len(_children(output)) == 2 and server.stats.requests >= 4, parent)
        os.kill(_children(output)["_shard-1-of-2.parquet.progress.json"], signal.SIGKILL)
        _, err = parent.communicate(timeout=60)
    finally:
        parent.kill()

    assert parent.returncode == 3, err
    assert "stopped: shard 1/2 was killed by SIGKILL before it finished" in err
    assert "rerun the same command to finish" in err
    rerun = cli(*args)
    assert rerun.code == 0, rerun.err
    assert len(rows_by_id(output)) == 60
