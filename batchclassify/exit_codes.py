"""``ExitCode``: what the process's exit status says, for the CLI and every command.

The ``--help`` epilog's table is generated from it and a test checks docs/errors.md's table
against it, so the three cannot drift apart.
"""

from __future__ import annotations

import textwrap
from enum import IntEnum

from .documented import documented_member


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
        "stopped early: the API refused the job (key, model, credits), could not be reached "
        "at all (unknown host, refused), stayed down for --max-outage, --max-failures was "
        "reached, or the disk is full; fix it, rerun to resume"
    )
    INTERRUPTED = 130, "interrupted (Ctrl-C); rerun the same command to resume"
    BROKEN_PIPE = 141, (
        "stdout or stderr was closed before everything was printed (e.g. piped into head): "
        "the command stopped there, quietly, as cat does"
    )
    TERMINATED = 143, "stopped by SIGTERM (kill); rerun the same command to resume"


def epilog_table() -> str:
    """The exit codes as the ``--help`` epilog shows them: code, then its wrapped meaning."""
    lines = ["exit codes:"]
    for code in ExitCode:
        wrapped = textwrap.wrap(code.doc, width=72)
        lines.append(f"  {code.value:<4} {wrapped[0]}")
        lines.extend(f"       {rest}" for rest in wrapped[1:])
    return "\n".join(lines) + "\n"
