"""``ExitCode``: what the process's exit status says, for the CLI and every command.

The ``--help`` epilog's table is generated from it and a test checks docs/errors.md's table
against it, so the three cannot drift apart. It also holds the rules that pick a code: for an
error (``for_error``), a signal (``for_signal``), a child process's status (``of_process``)
and several at once (``worst``, for ``run --processes``).
"""

from __future__ import annotations

import signal
import textwrap
from collections.abc import Iterable
from enum import IntEnum

from .documented import documented_member
from .errors import (
    BatchClassifyError,
    JobStopped,
    OutputError,
    OutputWriteError,
    StopCause,
    UsageError,
)


class ExitCode(IntEnum):
    """The exit status of ``batchclassify``; ``doc`` says what it means."""

    doc: str

    def __new__(cls, value: int, doc: str) -> ExitCode:
        return documented_member(cls, int.__new__, value, doc)

    OK = 0, "every item is classified"
    FAILED_ITEMS = 1, (
        "finished, but some items failed (see the 'error' column); export: no image was "
        "exported; report --html: no image of the review gallery could be read"
    )
    USAGE = 2, (
        "usage or input error, nothing to classify, or an output this job may not write "
        "(another job's, or one another job is writing); nothing was sent"
    )
    STOPPED = 3, (
        "stopped early: the API refused the job (key, model, paused), could not be reached "
        "at all (unknown host, refused), stayed down for --max-outage, --max-failures was "
        "reached, the disk is full, or a --processes process was killed; fix it, rerun to "
        "resume"
    )
    OUT_OF_CREDITS = 4, (
        "stopped: the API answered 402, not enough credits (the workspace's credit cap or "
        "balance; the message shows the server's words); every row so far is kept: add "
        "credits or raise the cap in Roboflow, then rerun to resume"
    )
    BUDGET_REACHED = 5, (
        "stopped at --max-credits: the next request could have taken this run's spend past "
        "it; requests in flight finished and every row is kept: rerun with a higher "
        "--max-credits to go on"
    )
    HANGUP = 129, (
        "stopped by SIGHUP (the terminal closed, an ssh connection dropped); rerun the same "
        "command to resume"
    )
    INTERRUPTED = 130, "interrupted (Ctrl-C); rerun the same command to resume"
    BROKEN_PIPE = 141, (
        "stdout or stderr was closed before everything was printed (e.g. piped into head): "
        "the command stopped there, quietly, as cat does"
    )
    TERMINATED = 143, "stopped by SIGTERM (kill); rerun the same command to resume"

    @classmethod
    def for_error(cls, error: BatchClassifyError) -> ExitCode:
        """The code for an error that ended a command: a write failure stopped a started job
        (resumable); other output or usage errors come before any request."""
        if isinstance(error, OutputWriteError):
            return cls.STOPPED
        if isinstance(error, UsageError | OutputError):
            return cls.USAGE
        if isinstance(error, JobStopped):
            return cls.for_stop(error.cause)
        return cls.STOPPED

    @classmethod
    def for_stop(cls, cause: StopCause) -> ExitCode:
        """The code of a job stopped early by ``cause``: money has codes of its own (a script
        can tell "add credits" from "fix something"), anything else is ``STOPPED``."""
        return _BY_STOP_CAUSE.get(cause, cls.STOPPED)

    @classmethod
    def for_signal(cls, signum: int) -> ExitCode:
        """The code of a job stopped by a signal (the shell's 128 + its number)."""
        return _BY_SIGNAL.get(signum, cls.INTERRUPTED)

    @classmethod
    def of_process(cls, returncode: int) -> ExitCode:
        """What a child process's status says: one of these codes as itself; killed by a
        signal (negative) or an unknown code, the job did not finish: ``STOPPED``."""
        return next((code for code in cls if code == returncode), cls.STOPPED)

    @classmethod
    def worst(cls, codes: Iterable[int]) -> ExitCode:
        """The worst of several processes' codes: stopped, then a usage error, then
        interrupted (by any signal), then failed items, then ok (also for no codes)."""
        found = [cls.of_process(code) for code in codes]
        return max(found, key=lambda code: _SEVERITY[code], default=cls.OK)


_BY_SIGNAL: dict[int, ExitCode] = {
    signal.SIGINT: ExitCode.INTERRUPTED,
    signal.SIGTERM: ExitCode.TERMINATED,
}
if hasattr(signal, "SIGHUP"):  # not on Windows
    _BY_SIGNAL[signal.SIGHUP] = ExitCode.HANGUP
_BY_STOP_CAUSE: dict[StopCause, ExitCode] = {
    StopCause.CREDITS: ExitCode.OUT_OF_CREDITS,
    StopCause.BUDGET: ExitCode.BUDGET_REACHED,
}
#: From the mildest to the worst: what ``ExitCode.worst`` ranks by.
_SEVERITY = {
    ExitCode.OK: 0,
    ExitCode.FAILED_ITEMS: 1,
    ExitCode.HANGUP: 2,
    ExitCode.INTERRUPTED: 2,
    ExitCode.TERMINATED: 2,
    ExitCode.BUDGET_REACHED: 3,
    ExitCode.USAGE: 4,
    ExitCode.OUT_OF_CREDITS: 5,
    ExitCode.STOPPED: 5,
}


def epilog_table() -> str:
    """The exit codes as the ``--help`` epilog shows them: code, then its wrapped meaning."""
    lines = ["exit codes:"]
    for code in ExitCode:
        wrapped = textwrap.wrap(code.doc, width=72)
        lines.append(f"  {code.value:<4} {wrapped[0]}")
        lines.extend(f"       {rest}" for rest in wrapped[1:])
    return "\n".join(lines) + "\n"
