"""One job per output (a lock the OS drops when the process dies), and a full disk: real
``python -m batchclassify`` processes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from batchclassify.config import HttpConfig, JobConfig
from batchclassify.errors import OutputError
from batchclassify.output.outputs import hold_output
from batchclassify.server import BackgroundServer

from .conftest import (
    KEY,
    PYTHON,
    Cli,
    MakeServer,
    make_images,
    rows_by_id,
    run_args,
    start_cli,
    subprocess_env,
)


def finish(process: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err


def wait_until(condition: Callable[[], bool], process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert process.poll() is None, f"the job ended early: {process.communicate()[1]}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_second_job_on_the_same_output_is_refused_at_once(
    tmp_path: Path, make_server: MakeServer, fmt: str
) -> None:
    expected = make_images(tmp_path / "images", 12)
    output = tmp_path / f"out.{fmt}"
    first_server, other = make_server(), make_server()
    # The first job reads its items from stdin, so it runs (holding the lock) for exactly as
    # long as the test keeps its stdin open: however long the second takes to start on a
    # loaded machine, it meets the first still running. (It used to be "~5 s of work", which
    # a busy machine's imports outlasted: the second then found the job done.)
    first = subprocess.Popen(
        [PYTHON, "-m", "batchclassify", *run_args(first_server, output, "-"), "-c", "1"],
        env=subprocess_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lock = Path(f"{output}.lock")
    try:
        wait_until(lambda: lock.exists() and f"pid={first.pid}" in lock.read_text(), first)

        second = start_cli(run_args(other, output, tmp_path / "images"))
        code, err = finish(second, timeout=60)

        assert code == 2, err
        [line] = err.splitlines()
        assert line == (
            f"batchclassify: error: another batchclassify job (pid {first.pid}) is writing "
            f"{output}; wait for it to finish or stop it, or choose another --output"
        )
        assert other.stats.requests == 0
        assert first.poll() is None  # the first job is untouched and goes on
    finally:
        _, err = first.communicate("".join(f"{path}\n" for path in expected), timeout=60)
    assert first.returncode == 0, err
    assert {item_id: row["top"] for item_id, row in rows_by_id(output).items()} == expected
    assert first_server.stats.requests == 12
    assert not lock.exists()  # a job that ends takes its lock file away


def test_a_job_killed_with_sigkill_leaves_no_lock_behind(
    tmp_path: Path, make_server: MakeServer, cli: Cli
) -> None:
    expected = make_images(tmp_path / "images", 12)
    output = tmp_path / "out.parquet"
    slow = make_server(latency=0.1)
    first = start_cli([*run_args(slow, output, tmp_path / "images"), "-c", "1"])
    journal = output / "_journal-000000.jsonl"
    wait_until(lambda: journal.exists() and journal.stat().st_size > 0, first)  # rows flushed
    first.kill()
    assert first.wait(10) == -signal.SIGKILL
    assert f"pid={first.pid}" in Path(f"{output}.lock").read_text()  # left, but not held

    result = cli(*run_args(make_server(), output, tmp_path / "images"))

    assert result.code == 0, result.err
    assert "already done" in result.err
    assert {item_id: row["top"] for item_id, row in rows_by_id(output).items()} == expected
    assert not Path(f"{output}.lock").exists()


def test_overwrite_is_refused_while_another_job_writes_the_output(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    make_images(tmp_path / "images", 4)
    output = tmp_path / "out.jsonl"
    args = run_args(server, output, tmp_path / "images")
    assert cli(*args, "-q").code == 0
    before = output.read_bytes()
    config = JobConfig(
        sources=(str(tmp_path / "images"),),
        model="colors/1",
        output=output,
        http=HttpConfig(api_url=server.url, api_key=KEY),
    )

    with hold_output(config):  # another job, in this process: the lock is per open file
        result = cli(*args, "--overwrite")
        with pytest.raises(OutputError, match=f"pid {os.getpid()}"), hold_output(config):
            pass

    assert result.code == 2
    assert f"another batchclassify job (pid {os.getpid()}) is writing {output}" in result.err
    assert output.read_bytes() == before
    assert server.stats.requests == 4


# -- a full disk -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_full_disk_stops_the_job_with_one_line_and_exit_3_and_it_resumes(
    tmp_path: Path, make_server: MakeServer, cli: Cli, fmt: str
) -> None:
    expected = make_images(tmp_path / "images", 40)
    output = tmp_path / f"out.{fmt}"
    server = make_server()
    args = [*run_args(server, output, tmp_path / "images"), "-c", "2"]

    code, err = finish(start_cli(args, file_size_limit=6_000))

    assert code == 3, err  # requests were sent: stopped early, resumable (not 2)
    assert "Traceback" not in err
    [line] = [text for text in err.splitlines() if "error" in text]
    assert line.startswith(f"batchclassify: error: cannot write {output}")
    assert "File too large" in line and "rerun the same command to resume" in line
    sent = server.stats.requests
    assert sent > 0

    result = cli(*args)  # room again: the same command resumes

    assert result.code == 0, result.err
    assert "already done" in result.err
    assert {item_id: row["top"] for item_id, row in rows_by_id(output).items()} == expected
    assert server.stats.requests < sent + 40
