"""Why a job stopped, as data a Python caller can branch on; the enumerations of exit codes and
error types, and the tables of them in docs/."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import pytest

from batchclassify import (
    ApiUnreachableError,
    ErrorType,
    ExitCode,
    FatalApiError,
    HttpConfig,
    Job,
    JobConfig,
    OutageTimeoutError,
    StopCause,
    TooManyFailuresError,
    classify,
)
from batchclassify.commands.cli import build_parser
from batchclassify.commands.report.advice import ADVICE, FALLBACK, advice
from batchclassify.errors import RetryableError
from batchclassify.job.health import HealthMonitor
from batchclassify.server import BackgroundServer

from .conftest import KEY, REPO, Cli, make_image, png, read_rows, run_args


def _doc_table(page: str, heading: str) -> list[str]:
    """The first cell of each row of the first table under ``heading`` in ``docs/<page>``."""
    text = (REPO / "docs" / page).read_text(encoding="utf-8")
    section = text.split(f"\n{heading}\n", 1)[1]
    rows = []
    for line in section.splitlines():
        if line.startswith("|"):
            rows.append(line.split("|")[1].strip().strip("`"))
        elif rows:
            break
    return rows[2:]  # past the header and the |---| line


def test_documented_exit_codes_are_exactly_the_enum() -> None:
    assert _doc_table("errors.md", "## Exit codes") == [str(code.value) for code in ExitCode]


def test_help_lists_every_exit_code_with_its_meaning() -> None:
    help_text = " ".join(build_parser().format_help().split())
    for code in ExitCode:
        assert f"{code.value} {code.doc}" in help_text


def test_documented_error_types_are_exactly_the_enum() -> None:
    assert _doc_table("output.md", "## Error types") == [kind.value for kind in ErrorType]


def test_the_report_has_advice_for_every_error_type() -> None:
    assert set(ADVICE) == {kind.value for kind in ErrorType}
    assert advice(ErrorType.HTTP_ERROR) != FALLBACK


def _config(
    server: BackgroundServer, tmp_path: Path, *, key: str = KEY, max_failures: int | None = None
) -> JobConfig:
    return JobConfig(
        sources=str(tmp_path / "in"),
        model="colors/1",
        output=tmp_path / "out.jsonl",
        http=HttpConfig(api_url=server.url, api_key=key, concurrency=2),
        max_failures=max_failures,
    )


def test_a_refused_job_says_why_as_data(tmp_path: Path, server: BackgroundServer) -> None:
    make_image(tmp_path / "in" / "a.png")

    summary = classify(_config(server, tmp_path, key="wrong-key"))

    assert summary.stop_cause is StopCause.API_REFUSED
    assert isinstance(summary.stopped_by, FatalApiError)
    assert summary.stopped_by.http_status == 403
    assert summary.fatal == str(summary.stopped_by)
    assert summary.exit_code is ExitCode.STOPPED


def test_max_failures_is_its_own_stop_cause(tmp_path: Path, server: BackgroundServer) -> None:
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / name).write_bytes(b"")

    summary = classify(_config(server, tmp_path, max_failures=2))

    assert summary.stop_cause is StopCause.MAX_FAILURES
    assert isinstance(summary.stopped_by, TooManyFailuresError)
    assert summary.exit_code is ExitCode.STOPPED
    rows = read_rows(tmp_path / "out.jsonl")
    assert len(rows) >= 2
    assert {row["error_type"] for row in rows} == {ErrorType.EMPTY_FILE}


def test_a_finished_job_has_no_stop_cause(tmp_path: Path, server: BackgroundServer) -> None:
    make_image(tmp_path / "in" / "a.png")

    summary = classify(_config(server, tmp_path))

    assert summary.stop_cause is None and summary.stopped_by is None
    assert summary.exit_code is ExitCode.OK


def test_an_interrupted_job_says_so(tmp_path: Path, server: BackgroundServer) -> None:
    make_image(tmp_path / "in" / "a.png")

    async def stopped_at_once() -> Job:
        job = Job(_config(server, tmp_path))
        job.request_stop()
        await job.run()
        return job

    summary = anyio.run(stopped_at_once)._summary

    assert summary.stop_cause is StopCause.INTERRUPTED
    assert summary.exit_code is ExitCode.INTERRUPTED


def _refused(unreachable: bool) -> RetryableError:
    error = RetryableError("cannot connect", kind=ErrorType.CONNECTION)
    error.unreachable = unreachable
    return error


def test_never_reached_and_outage_are_told_apart() -> None:
    now = [0.0]
    never = HealthMonitor(max_outage=60, first_contact_grace=3.0, clock=lambda: now[0])
    never.failure(_refused(True), "a")
    now[0] = 3.0
    assert never.gave_up and isinstance(never.stop_error(), ApiUnreachableError)
    assert ApiUnreachableError.cause is StopCause.UNREACHABLE

    now[0] = 0.0
    down = HealthMonitor(max_outage=60, outage_after=5, clock=lambda: now[0])
    down.success()
    for moment in range(1, 80, 2):
        now[0] = float(moment)
        down.failure(_refused(False), moment % 3)
    assert down.gave_up and isinstance(down.stop_error(), OutageTimeoutError)
    assert OutageTimeoutError.cause is StopCause.OUTAGE


def test_another_4xx_is_an_http_error_row(tmp_path: Path, server: BackgroundServer) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(png("red"))
    server.fail_image(png("red"), 418)

    summary = classify(_config(server, tmp_path))

    [row] = read_rows(tmp_path / "out.jsonl")
    assert row["error_type"] == ErrorType.HTTP_ERROR and row["http_status"] == 418
    assert summary.exit_code is ExitCode.FAILED_ITEMS


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (("--overwrite", "--retry-failed"), "--overwrite and --retry-failed: pick one"),
        (("--timeout", "0"), "--timeout: must be a positive number of seconds"),
        (("--max-outage", "-1"), "--max-outage: must be a positive number of seconds"),
    ],
)
def test_the_cli_names_flags_where_the_library_names_fields(
    tmp_path: Path, server: BackgroundServer, cli: Cli, flags: tuple[str, ...], expected: str
) -> None:
    make_image(tmp_path / "in" / "a.png")

    result = cli(*run_args(server, tmp_path / "out.jsonl", tmp_path / "in"), *flags)

    assert result.code == ExitCode.USAGE
    assert result.err.startswith(f"batchclassify: error: {expected}")
    assert not re.search(r"\b(http|outage|retry)\.|retry_failed", result.err)
