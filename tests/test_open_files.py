"""Too many open files (issue 9): a low ``ulimit -n`` with a high ``-c`` must not turn images
into ``unreadable`` rows. Each job runs in a child process whose RLIMIT_NOFILE is set low."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from batchclassify.errors import ItemError
from batchclassify.inputs.encoding import read_and_encode

from .conftest import KEY, REPO, MakeServer, make_images, read_rows, run_args

resource = pytest.importorskip("resource")


# Runs the CLI, then prints the soft limit it ended with.
_CHILD = """
import resource, sys
from batchclassify.commands.cli import main
code = main(sys.argv[1:])
print("soft limit", resource.getrlimit(resource.RLIMIT_NOFILE)[0])
sys.exit(code)
"""


def _run_limited(args: list[str], soft: int, hard: int) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    env = {**os.environ, "ROBOFLOW_API_KEY": KEY, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", _CHILD, *args],
        preexec_fn=limit,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_a_hard_limit_too_low_for_the_concurrency_lowers_it_and_says_so(
    tmp_path: Path, make_server: MakeServer
) -> None:
    """``ulimit -n 64`` (hard too, so it cannot be raised) with ``-c 256``: every image is
    classified, none is blamed, and the job says once that it lowered the concurrency."""
    server = make_server(latency=0.02, history_size=10)
    make_images(tmp_path / "in", 300)
    output = tmp_path / "out.jsonl"

    done = _run_limited([*run_args(server, output, tmp_path / "in"), "-c", "256"], 64, 64)

    assert done.returncode == 0, done.stderr
    rows = read_rows(output)
    assert len(rows) == 300 and all(row["status"] == "ok" for row in rows), {
        row["error"] for row in rows if row["status"] != "ok"
    }
    # Said once as it happens (a log line off a terminal) and once in the summary.
    lines = done.stderr.splitlines()
    said = [line for line in lines if "--concurrency 256 lowered to" in line]
    assert len(said) == 2, done.stderr
    assert said[-1].startswith("note: ") and not said[0].startswith("note: ")
    assert "open-file limit (ulimit -n) is 64" in done.stderr


@pytest.mark.slow
def test_a_soft_limit_below_the_hard_limit_is_raised(
    tmp_path: Path, make_server: MakeServer
) -> None:
    server = make_server(latency=0.02, history_size=10)
    make_images(tmp_path / "in", 300)
    output = tmp_path / "out.jsonl"
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"the hard open-file limit here is {hard}")

    done = _run_limited([*run_args(server, output, tmp_path / "in"), "-c", "256"], 64, 2048)

    assert done.returncode == 0, done.stderr
    assert all(row["status"] == "ok" for row in read_rows(output))
    assert "lowered" not in done.stderr
    assert int(done.stdout.split("soft limit")[1]) >= 4 * 256


# The job runs while a thread takes every free file descriptor for a second, once the job has
# written its first rows (all its imports done, connections open), then gives them back.
_HOARDER = """
import os, resource, sys, threading, time
from batchclassify.commands.cli import main
resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
output, image = sys.argv[-1], sys.argv[-2]
hoarded = []

def hoard():
    while not os.path.exists(output) or not os.path.getsize(output):
        time.sleep(0.001)
    with open(output) as handle:
        rows = handle.read().count("\\n")
    try:
        while True:
            hoarded.append(open(image, "rb"))
    except OSError as error:
        print("hoarded", len(hoarded), error.strerror, "; rows then:", rows)
    time.sleep(1.0)
    for handle in hoarded:
        handle.close()

threading.Thread(target=hoard, daemon=True).start()
sys.exit(main(sys.argv[1:-2]))
"""


@pytest.mark.slow
def test_running_out_of_file_descriptors_is_waited_out_not_blamed_on_images(
    tmp_path: Path, make_server: MakeServer
) -> None:
    """EMFILE while reading an image is the process's trouble: the worker waits and reads
    again (before: an ``unreadable`` row for every image read meanwhile)."""
    server = make_server(latency=0.05, history_size=10)
    make_images(tmp_path / "in", 100)
    output = tmp_path / "out.jsonl"
    args = [*run_args(server, output, tmp_path / "in"), "-c", "2"]

    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _HOARDER,
            *args,
            str(tmp_path / "in" / "00000-red.png"),
            str(output),
        ],
        env={**os.environ, "ROBOFLOW_API_KEY": KEY, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    hoarded = done.stdout.split()
    assert hoarded[0] == "hoarded" and "Too many open files" in done.stdout
    assert int(hoarded[-1]) < 50  # the descriptors were gone while most images were to read
    rows = read_rows(output)
    assert len(rows) == 100 and all(row["status"] == "ok" for row in rows), {
        row["error"] for row in rows if row["status"] != "ok"
    }


def test_out_of_file_descriptors_is_transient_other_read_errors_are_the_images(
    tmp_path: Path,
) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    code = f"""
import resource
from batchclassify.inputs.encoding import OpenFilesExhausted, read_and_encode
resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))
held = []
try:
    while True:
        held.append(open({str(image)!r}, "rb"))
except OSError:
    pass
try:
    read_and_encode({str(image)!r}, max_upload_bytes=1 << 20)
except OpenFilesExhausted as error:
    print("transient:", error)
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("transient: too many open files"), done.stdout
    with pytest.raises(ItemError) as raised:
        read_and_encode(str(tmp_path), max_upload_bytes=1 << 20)  # a folder: the item's fault
    assert raised.value.kind == "unreadable"
