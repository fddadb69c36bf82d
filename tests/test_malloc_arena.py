"""A job's threads share one glibc malloc arena, so big image buffers freed on the event
loop's thread are reused by every reading thread (mallocarena.py).

The arenas are counted from glibc's own ``malloc_info`` (one ``<heap nr=...>`` per arena), in
a fresh child process: the test process has threads and arenas of its own already.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from batchclassify.server import BackgroundServer

from .conftest import PYTHON, make_images, read_rows, run_args, subprocess_env

pytestmark = pytest.mark.skipif(
    not hasattr(os, "confstr") or "CS_GNU_LIBC_VERSION" not in os.confstr_names,
    reason="glibc only",
)

#: Prints the number of malloc arenas the process has, as glibc reports them.
COUNT_ARENAS = textwrap.dedent(
    """
    import ctypes, tempfile
    def arenas():
        libc = ctypes.CDLL(None)
        libc.fopen.restype = ctypes.c_void_p
        libc.fopen.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
        libc.malloc_info.argtypes = (ctypes.c_int, ctypes.c_void_p)
        libc.fclose.argtypes = (ctypes.c_void_p,)
        with tempfile.NamedTemporaryFile(suffix=".xml") as report:
            handle = libc.fopen(report.name.encode(), b"w")
            libc.malloc_info(0, handle)
            libc.fclose(handle)
            return open(report.name).read().count("<heap nr=")
    """
)

THREADS = textwrap.dedent(
    """
    import sys, threading
    from batchclassify.job.mallocarena import limit_malloc_arenas
    applied = limit_malloc_arenas() if sys.argv[1] == "limit" else None
    barrier = threading.Barrier(4)
    def allocate():
        held = [bytes(1000) for _ in range(100)]  # small blocks: from this thread's arena
        barrier.wait()  # all four threads alive at once, so none reuses another's arena
    threads = [threading.Thread(target=allocate) for _ in range(4)]
    for thread in threads: thread.start()
    for thread in threads: thread.join()
    print(applied, arenas())
    """
)


def _child(script: str, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [PYTHON, "-c", COUNT_ARENAS + script, *args],
        capture_output=True,
        text=True,
        env=env or subprocess_env(),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\n")[-2]


def test_threads_allocate_from_one_arena_once_limited() -> None:
    # Without the limit each thread that allocates gets an arena of its own: the count works.
    assert _child(THREADS, "none") == "None 5"
    assert _child(THREADS, "limit") == "True 1"


def test_a_limit_the_user_chose_is_left_alone() -> None:
    env = subprocess_env(MALLOC_ARENA_MAX="3")
    assert _child(THREADS, "limit", env=env).startswith("False ")


def test_a_job_reading_in_threads_keeps_one_arena(server: BackgroundServer, tmp_path: Path) -> None:
    expected = make_images(tmp_path / "in", 24)
    output = tmp_path / "out.jsonl"
    # --max-size reads every file in a worker thread; the CLI runs the loop on the main thread.
    args = [*run_args(server, output, tmp_path / "in"), "-c", "8", "--max-size", "64", "--quiet"]
    job = f"from batchclassify.commands.cli import main\nprint(main({args!r}), arenas())\n"
    assert _child(job) == "0 1"
    assert {row["id"] for row in read_rows(output) if row["status"] == "ok"} == set(expected)
