"""``run --watch`` (issue 24): a real job in a child process follows a folder while files
arrive in it, against the local server; the tests assert rows, exit codes and messages.

Each test writes files the way uploaders do (slowly, under a temporary name, in a folder
moved in, deleted before they are whole) once the job is following, waits (generously)
until the rows it expects are there, and ends the job with SIGTERM or lets ``--idle-exit``
end it. Nothing asserts on how long anything took.
"""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from PIL import Image

from batchclassify.server import BackgroundServer

from .conftest import PYTHON, read_rows, run_args, start_cli, subprocess_env, unique_png

pytestmark = pytest.mark.slow

SETTLE = "0.4"
WAIT = 40.0  # seconds: generous, for a loaded 2-core machine


def noisy_png(width: int, height: int, seed: int) -> bytes:
    """A PNG that does not compress (noise): ~3 bytes a pixel, so it is written in pieces."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def start_watch(
    server: BackgroundServer, output: Path, source: Path, *extra: str
) -> subprocess.Popen[str]:
    return start_cli(
        [*run_args(server, output, source), "--watch", "--settle", SETTLE, "-q", *extra]
    )


def progress(output: Path) -> dict[str, Any]:
    try:
        found = orjson.loads(output.with_name(output.name + ".progress.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return found if isinstance(found, dict) else {}


def wait_until(condition: Callable[[], bool], process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert process.poll() is None, f"the job ended early: {process.communicate()}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def wait_following(output: Path, process: subprocess.Popen[str]) -> None:
    """Until the job is past its first walk, following (its progress file says so)."""
    wait_until(lambda: bool((progress(output).get("watching") or {}).get("following")), process)


def rows(output: Path) -> list[dict[str, Any]]:
    try:
        return read_rows(output)
    except (OSError, orjson.JSONDecodeError):
        return []  # not written yet, or a line being written


def wait_rows(output: Path, process: subprocess.Popen[str], names: set[str]) -> None:
    """Until every file named has a row."""
    wait_until(lambda: names <= {Path(row["path"]).name for row in rows(output)}, process)


def stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    """SIGTERM, as a service manager ends the job: every row written, exit 143."""
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=WAIT)
    return process.returncode, err


def by_name(output: Path) -> dict[str, dict[str, Any]]:
    found = rows(output)
    named = {Path(row["path"]).name: row for row in found}
    assert len(named) == len(found), "a file has more than one row"
    return named


def write_slowly(path: Path, data: bytes, *, pieces: int, pause: float) -> None:
    with open(path, "wb") as file:
        step = -(-len(data) // pieces)
        for start in range(0, len(data), step):
            file.write(data[start : start + step])
            file.flush()
            time.sleep(pause)


def test_a_file_written_slowly_is_sent_whole_once_it_settles(
    server: BackgroundServer, tmp_path: Path
) -> None:
    source, output = tmp_path / "in", tmp_path / "out.jsonl"
    source.mkdir()
    # Pauses far shorter than --settle, so that a writer descheduled on a loaded machine
    # still keeps the file changing; that no part is ever sent is proved on a fake clock
    # (test_watch_idle.py), here only that the whole file is.
    settle = 3.0
    job = start_watch(server, output, source, "--settle", str(settle))
    wait_following(output, job)
    started = time.monotonic()
    write_slowly(source / "slow.png", noisy_png(320, 240, 1), pieces=8, pause=0.02)
    if time.monotonic() - started >= settle:
        pytest.skip("the writer was descheduled for longer than --settle: not this test's case")
    (source / "after.png").write_bytes(unique_png("red", "after"))
    wait_rows(output, job, {"slow.png", "after.png"})
    code, err = stop(job)
    assert code == 143, err
    found = by_name(output)
    assert found["slow.png"]["status"] == "ok", found["slow.png"]
    assert (found["slow.png"]["image_width"], found["slow.png"]["image_height"]) == (320, 240)
    assert set(found) == {"slow.png", "after.png"}


def test_a_temporary_name_is_ignored_until_renamed_and_a_deleted_file_is_dropped(
    server: BackgroundServer, tmp_path: Path
) -> None:
    source, output = tmp_path / "in", tmp_path / "out.jsonl"
    source.mkdir()
    job = start_watch(server, output, source)
    wait_following(output, job)
    # Hidden, and not an image's extension: with pauses longer than --settle between the
    # pieces, neither is sent half-written; each is sent once renamed into place.
    data = noisy_png(200, 150, 2)
    write_slowly(source / ".upload-1.png", data, pieces=3, pause=0.6)
    os.rename(source / ".upload-1.png", source / "renamed.png")
    write_slowly(source / "second.png.part", noisy_png(100, 80, 3), pieces=3, pause=0.6)
    os.rename(source / "second.png.part", source / "second.png")
    # Deleted before it settles: no row, no error.
    (source / "gone.png").write_bytes(unique_png("blue", "gone"))
    (source / "gone.png").unlink()
    (source / "last.png").write_bytes(unique_png("green", "last"))
    wait_rows(output, job, {"renamed.png", "second.png", "last.png"})
    code, err = stop(job)
    assert code == 143, err
    found = by_name(output)
    assert set(found) == {"renamed.png", "second.png", "last.png"}
    assert all(row["status"] == "ok" for row in found.values()), found
    assert (found["renamed.png"]["image_width"], found["renamed.png"]["image_height"]) == (200, 150)
    assert (found["second.png"]["image_width"], found["second.png"]["image_height"]) == (100, 80)


@pytest.mark.parametrize("poll", [None, "0.2"], ids=["notifications", "polling"])
def test_a_subtree_moved_in_and_a_folder_made_with_files_are_walked(
    server: BackgroundServer, tmp_path: Path, poll: str | None
) -> None:
    source, output = tmp_path / "in", tmp_path / "out.jsonl"
    source.mkdir()
    (source / "old.png").write_bytes(unique_png("red", "old"))
    os.utime(source / "old.png", (time.time() - 60, time.time() - 60))
    job = start_watch(server, output, source, *(["--poll", poll] if poll else []))
    wait_following(output, job)
    stage = tmp_path / "stage"
    expected = {"old.png"}
    for folder in ("a", "a/b", "a/b/c"):
        for n in range(3):
            name = f"{folder.replace('/', '-')}-{n}.png"
            (stage / folder).mkdir(parents=True, exist_ok=True)
            (stage / folder / name).write_bytes(unique_png("blue", f"{poll}{name}"))
            expected.add(name)
    os.rename(stage / "a", source / "a")  # one event, for the top of the subtree
    made = source / "made"
    made.mkdir()
    for n in range(4):
        (made / f"made-{n}.png").write_bytes(unique_png("green", f"{poll}made{n}"))
        expected.add(f"made-{n}.png")
    wait_rows(output, job, expected)
    code, err = stop(job)
    assert code == 143, err
    found = by_name(output)
    assert set(found) == expected
    assert found["a-b-c-2.png"]["path"] == str(source / "a" / "b" / "c" / "a-b-c-2.png")


def test_hundreds_of_files_arriving_get_one_row_each_the_lock_holds_and_idle_exit_ends_it(
    server: BackgroundServer, tmp_path: Path, cli: Any
) -> None:
    source, output = tmp_path / "in", tmp_path / "out.jsonl"
    source.mkdir()
    # --idle-exit counts from the start of following: room for a slow start of the feeder.
    job = start_watch(server, output, source, "--idle-exit", "6")
    wait_following(output, job)
    names: set[str] = set()

    def arrive() -> None:  # 300 files over about 3 seconds, some in pieces, some renamed
        for n in range(300):
            name = f"{n:04d}.png"
            data = unique_png(("red", "green", "blue")[n % 3], f"many{n}")
            if n % 3 == 0:
                tmp = source / f".{name}.tmp"
                tmp.write_bytes(data)
                os.rename(tmp, source / name)
            elif n % 3 == 1:
                write_slowly(source / name, data, pieces=2, pause=0.005)
            else:
                (source / name).write_bytes(data)
            names.add(name)
            time.sleep(0.01)

    feeder = threading.Thread(target=arrive)
    feeder.start()
    # The lock holds: a second job on the same output is refused while this one follows.
    second = cli(*run_args(server, output, source), "-q")
    assert second.code == 2, second.err
    assert "another batchclassify job" in second.err
    feeder.join()
    _, err = job.communicate(timeout=WAIT * 2)  # --idle-exit ends it by itself
    assert job.returncode == 0, err
    found = by_name(output)
    assert set(found) == names
    assert all(row["status"] == "ok" for row in found.values())


def test_kill_9_then_a_restart_picks_up_what_arrived_meanwhile(
    server: BackgroundServer, tmp_path: Path
) -> None:
    source, output = tmp_path / "in", tmp_path / "out.jsonl"
    source.mkdir()
    job = start_watch(server, output, source)
    wait_following(output, job)
    for n in range(5):
        (source / f"before-{n}.png").write_bytes(unique_png("red", f"before{n}"))
    wait_rows(output, job, {f"before-{n}.png" for n in range(5)})
    job.kill()
    job.wait()
    for n in range(5):  # arriving while no job runs
        (source / f"meanwhile-{n}.png").write_bytes(unique_png("blue", f"meanwhile{n}"))
    # --idle-exit counts from the start of following: room before later.png is written.
    again = start_watch(server, output, source, "--idle-exit", "5")
    wait_following(output, again)
    (source / "later.png").write_bytes(unique_png("green", "later"))
    _, err = again.communicate(timeout=WAIT * 2)
    assert again.returncode == 0, err
    found = by_name(output)  # each file once: the restart sent only what had no row
    expected = {f"before-{n}.png" for n in range(5)} | {f"meanwhile-{n}.png" for n in range(5)}
    assert set(found) == expected | {"later.png"}


def test_status_says_watching_with_the_backlog_and_the_latency(
    server: BackgroundServer, tmp_path: Path
) -> None:
    source, output = tmp_path / "in", tmp_path / "out.jsonl"
    source.mkdir()
    job = start_watch(server, output, source)
    wait_following(output, job)
    for n in range(3):
        (source / f"{n}.png").write_bytes(unique_png("red", f"status{n}"))
    wait_rows(output, job, {f"{n}.png" for n in range(3)})
    wait_until(lambda: (progress(output).get("watching") or {}).get("latency_samples") == 3, job)
    status = subprocess.run(
        [PYTHON, "-m", "batchclassify", "status", str(output)],
        capture_output=True,
        text=True,
        check=True,
        env=subprocess_env(),
    ).stdout
    code, err = stop(job)
    assert code == 143, err
    assert f"{output}: watching" in status
    assert "watching (file-system notifications (inotify)); backlog: 0 settling" in status
    assert "arrival to row: median" in status and "(last 3 files)" in status
