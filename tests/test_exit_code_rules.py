"""ExitCode decides every exit status: for an error, a signal, a child process, and the worst
of several (run --processes); the commands ask it rather than re-deriving numbers."""

from __future__ import annotations

import ast
import signal
from pathlib import Path

import pytest

import batchclassify.commands.cli as cli
import batchclassify.commands.processes as processes
from batchclassify.errors import (
    FatalApiError,
    OutputError,
    OutputWriteError,
    TooManyFailuresError,
    UsageError,
)
from batchclassify.exit_codes import ExitCode


def test_the_worst_code_wins_and_a_killed_process_means_stopped() -> None:
    worst = ExitCode.worst
    assert worst([]) is ExitCode.OK
    assert worst([0, 1, 0]) is ExitCode.FAILED_ITEMS
    assert worst([1, 130]) is ExitCode.INTERRUPTED
    assert worst([143, 1]) is ExitCode.TERMINATED
    assert worst([129, 0]) is ExitCode.HANGUP
    assert worst([130, 2, 1]) is ExitCode.USAGE
    assert worst([2, 3, 130]) is ExitCode.STOPPED
    # Killed by a signal (a negative status) or an unknown code: the job did not finish.
    assert worst([0, -signal.SIGKILL]) is ExitCode.STOPPED
    assert worst([0, 77]) is ExitCode.STOPPED
    assert ExitCode.of_process(-signal.SIGKILL) is ExitCode.STOPPED
    assert ExitCode.of_process(1) is ExitCode.FAILED_ITEMS


@pytest.mark.parametrize(
    ("signum", "code"),
    [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)],
)
def test_a_signal_exits_with_128_plus_its_number(signum: int, code: int) -> None:
    assert ExitCode.for_signal(signum) == code == 128 + signum


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (UsageError("bad flag"), ExitCode.USAGE),
        (OutputError("another job is writing it"), ExitCode.USAGE),
        (OutputWriteError("disk full"), ExitCode.STOPPED),  # a started job: resumable
        (FatalApiError("bad key", http_status=401), ExitCode.STOPPED),
        (TooManyFailuresError("too many"), ExitCode.STOPPED),
    ],
)
def test_an_error_has_one_exit_code(error: Exception, code: ExitCode) -> None:
    assert isinstance(error, UsageError | OutputError | FatalApiError | TooManyFailuresError)
    assert ExitCode.for_error(error) is code


def _imports(module: object) -> set[str]:
    """The modules a module imports, at any depth of its code, as written (``.cli``...)."""
    source = Path(str(getattr(module, "__file__", ""))).read_text()
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_processes_does_not_import_the_cli() -> None:
    # The run-until-signalled loop lives with the job; both the CLI and the children use it.
    assert ".cli" not in _imports(processes)
    assert "..job.running" in _imports(processes) and "..job.running" in _imports(cli)
