"""Process plumbing for the benchmark: the local server, the clients, and what they cost.

Every client runs as its own process, so its CPU time and peak RSS come from the kernel
(``os.wait4`` returns the child's own rusage: user + system seconds over all its threads, and
``ru_maxrss``). The server runs in another process, pinned to its own core when ``taskset``
exists; its CPU time is read from ``/proc/PID/stat`` before and after each client run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent
PY = sys.executable
_TICKS = os.sysconf("SC_CLK_TCK")
_HAVE_TASKSET = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pinned(cmd: list[str], cpu: str | None) -> list[str]:
    """``cmd`` run on the given CPU list, when pinning is possible and asked for."""
    if cpu is None or not _HAVE_TASKSET:
        return cmd
    return ["taskset", "-c", cpu, *cmd]


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (all its threads)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _proc_status_kb(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(key):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class Server:
    """``python -m batchclassify.server --port 0 KNOBS`` in its own process."""

    module = "batchclassify.server"

    def __init__(self, knobs: list[str], *, cpu: str | None, log: Path) -> None:
        self.knobs = knobs
        self.cpu = cpu
        self.log_path = log
        self.url = ""
        self._proc: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None

    def __enter__(self) -> Server:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w", encoding="utf-8")
        cmd = pinned([PY, "-m", self.module, "--port", "0", *self.knobs], self.cpu)
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self._log, text=True, cwd=ROOT.parent
        )
        assert self._proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self._proc.stdout.readline()
            if not line:
                raise RuntimeError(f"server exited before listening; see {self.log_path}")
            if "listening on" in line:
                self.url = line.split("listening on", 1)[1].strip().split()[0]
                break
        else:
            raise RuntimeError("server did not start within 30 s")
        # Keep draining stdout so a chatty server never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _drain(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            assert self._log is not None
            self._log.write(line)

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._log is not None:
            self._log.close()

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def stats(self) -> dict[str, Any]:
        """The server's counters (``GET /_stats``), or ``{}`` if it has no such route."""
        try:
            with urllib.request.urlopen(f"{self.url}/_stats", timeout=5) as response:
                data = json.loads(response.read())
                return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}


@dataclass
class ProcResult:
    """What one client process cost, measured from outside."""

    wall: float
    cpu: float
    maxrss_mb: float
    exit_code: int
    lines_at: dict[int, float] = field(default_factory=dict)
    """Output rows seen -> seconds since start when first seen (sampled)."""
    rss_at: dict[int, float] = field(default_factory=dict)
    """Milestone rows -> peak RSS (VmHWM, MB) when the milestone was first seen."""
    timeline: list[tuple[float, int]] = field(default_factory=list)
    """(seconds since start, rows in the output) samples, every ``sample`` seconds."""
    polls: list[tuple[float, Any]] = field(default_factory=list)


def run_client(
    cmd: list[str],
    *,
    output: Path | None,
    cpu: str | None,
    milestones: tuple[int, ...] = (),
    sample: float = 0.1,
    log: Path | None = None,
    poll: Callable[[], Any] | None = None,
    poll_every: float = 0.5,
    env: dict[str, str] | None = None,
) -> ProcResult:
    """Run one client to the end; sample its output's growth and its memory while it runs.

    Peak RSS is ``ru_maxrss``, in MiB: the kernel counts in it the peak of this process
    at the time the client was started (forked, then exec'd), so a benchmark that grew to
    more than its client first (building data in-process) reports its own peak instead.

    ``poll`` (e.g. the server's counters) is called every ``poll_every`` seconds meanwhile;
    its answers land in ``ProcResult.polls`` with their time since start. ``env``: the
    client's environment (default: this process's).
    """
    log_handle = open(log, "w", encoding="utf-8") if log else subprocess.DEVNULL  # noqa: SIM115
    started = time.monotonic()
    proc = subprocess.Popen(
        pinned(cmd, cpu), stdout=log_handle, stderr=log_handle, cwd=ROOT.parent, env=env
    )
    # With taskset the child execs the client, so its pid is the client's.
    result = ProcResult(wall=0.0, cpu=0.0, maxrss_mb=0.0, exit_code=-1)
    stop = threading.Event()
    watcher = threading.Thread(
        target=_watch, args=(proc.pid, output, milestones, sample, started, result, stop)
    )
    watcher.start()
    poller = None
    if poll is not None:
        poller = threading.Thread(target=_poll, args=(poll, poll_every, started, result, stop))
        poller.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        stop.set()
        watcher.join()
        if poller is not None:
            poller.join()
        if log_handle is not subprocess.DEVNULL:
            log_handle.close()  # type: ignore[union-attr]
    proc.returncode = os.waitstatus_to_exitcode(status)
    result.wall = time.monotonic() - started
    result.cpu = usage.ru_utime + usage.ru_stime
    result.maxrss_mb = usage.ru_maxrss / 1024
    result.exit_code = proc.returncode
    return result


def _poll(
    poll: Callable[[], Any],
    every: float,
    started: float,
    result: ProcResult,
    stop: threading.Event,
) -> None:
    while True:
        result.polls.append((time.monotonic() - started, poll()))
        if stop.wait(every):
            break


def _watch(
    pid: int,
    output: Path | None,
    milestones: tuple[int, ...],
    sample: float,
    started: float,
    result: ProcResult,
    stop: threading.Event,
) -> None:
    """Count the output's lines as they appear and note peak RSS at the milestones."""
    lines = 0
    handle = None
    pending = sorted(milestones)
    while not stop.wait(sample):
        if output is not None and handle is None and output.exists() and output.is_file():
            handle = open(output, "rb")  # noqa: SIM115
        if handle is not None:
            while chunk := handle.read(1 << 22):
                lines += chunk.count(b"\n")
        now = time.monotonic() - started
        result.timeline.append((now, lines))
        while pending and lines >= pending[0]:
            hwm = _proc_status_kb(pid, "VmHWM:")
            if hwm is not None:
                result.rss_at[pending[0]] = hwm / 1024
            pending.pop(0)
    if handle is not None:
        handle.close()


def steady_rate(timeline: list[tuple[float, int]], total: int) -> float | None:
    """Rows per second between 10% and 90% of ``total`` rows: the rate without start and drain.

    Only meaningful for clients that write rows as they go (not the SDK, which writes at the
    end). The sink flushes every 0.5 s, so the window must span several seconds.
    """
    lo, hi = total * 0.1, total * 0.9
    t_lo = next((t for t, n in timeline if n >= lo), None)
    t_hi = next((t for t, n in timeline if n >= hi), None)
    if t_lo is None or t_hi is None or t_hi - t_lo < 1.0:
        return None
    n_lo = next(n for t, n in timeline if t == t_lo)
    n_hi = next(n for t, n in timeline if t == t_hi)
    return (n_hi - n_lo) / (t_hi - t_lo)
