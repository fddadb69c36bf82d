"""Flags mean one thing, bad values are a one-line error (exit 2, nothing sent), and
``--retries`` counts what its help says it counts."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchclassify import (
    HttpConfig,
    JobConfig,
    OutageConfig,
    RateConfig,
    RetryConfig,
    UsageError,
    classify,
)
from batchclassify.commands.cli import _job_config, build_parser, main
from batchclassify.server import BackgroundServer, Fault

from .conftest import KEY, REPO, Cli, make_image, png, read_rows, run_args


def _parse_error(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Exit code and stderr of a command argparse refuses (it exits instead of returning)."""
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    code = exited.value.code
    return (code if isinstance(code, int) else 1), capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--confidence", "50"),  # a percent: the help says 0..1
        ("--confidence", "1.5"),
        ("--confidence", "-0.1"),
        ("--confidence", "nan"),
        ("--rate-limit", "0"),
        ("--rate-limit", "-5"),
        ("--rate-limit", "inf"),
        ("--concurrency", "-3"),
        ("--concurrency", "0"),
        ("--timeout", "0"),
        ("--timeout", "inf"),
        ("--timeout", "nan"),
        ("--max-outage", "0"),
        ("--max-failures", "0"),
        ("--max-size", "-5"),
    ],
)
def test_bad_values_are_one_line_naming_the_flag(
    tmp_path: Path, server: BackgroundServer, cli: Cli, flag: str, value: str
) -> None:
    make_image(tmp_path / "in" / "x.jpg")
    output = tmp_path / "o.jsonl"

    result = cli(*run_args(server, output, tmp_path / "in"), f"{flag}={value}")

    assert result.code == 2
    assert "Traceback" not in result.err
    [line] = result.err.splitlines()
    assert line.startswith("batchclassify: error: ") and flag in line
    assert server.stats.requests == 0
    assert not output.exists()


@pytest.mark.parametrize(("flag", "value"), [("--retries", "-1"), ("--concurrency", "many")])
def test_unparsable_values_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    code, err = _parse_error(
        capsys, "run", str(tmp_path), "-m", "colors/1", "-o", "o.jsonl", f"{flag}={value}"
    )
    assert code == 2
    assert "Traceback" not in err and f"argument {flag}" in err


def test_confidence_is_a_fraction_in_the_library_too() -> None:
    """The library's messages name the field a Python caller set; the CLI names the flag."""
    for bad in (50.0, 1.5, -0.01):
        with pytest.raises(UsageError, match=r"^confidence: .* not between 0 and 1"):
            JobConfig(sources="p", model="colors/1", output="o.jsonl", confidence=bad)
    with pytest.raises(UsageError, match=r"^http\.timeout: ") as timeout:
        HttpConfig(timeout=float("inf"))
    assert timeout.value.field == "http.timeout"
    with pytest.raises(UsageError, match=r"^rate\.requests_per_second: "):
        RateConfig(requests_per_second=0)
    with pytest.raises(UsageError, match=r"^outage\.max_outage: "):
        OutageConfig(max_outage=0)


@pytest.mark.parametrize(("value", "sent"), [("0.5", "0.5"), ("0", "0.0"), ("1", "100")])
def test_confidence_reaches_the_server_in_its_unit(
    tmp_path: Path, server: BackgroundServer, cli: Cli, value: str, sent: str
) -> None:
    """Servers read a value >= 1 as a percent, so 1 (100%) must not travel as "1.0" (1%)."""
    make_image(tmp_path / "in" / "x.jpg", "red")

    result = cli(*run_args(server, tmp_path / "o.jsonl", tmp_path / "in"), "--confidence", value)

    assert result.code == 0, result.err
    assert [record.confidence for record in server.stats.recent] == [sent]


def test_help_says_what_confidence_and_retries_mean(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # no line breaks inside --flag-names
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "a fraction from 0 to 1 (0.5 means 50%" in text
    assert "extra attempts per image after failures of its own" in text
    assert "Not counted: 429 answers" in text and "up to --max-outage" in text


def test_flag_defaults_are_the_configuration_defaults() -> None:
    """One source of truth: the parsed defaults, the --help text and the documented options
    table (docs/options.md) all say what the configuration classes say."""
    args = build_parser().parse_args(["run", "p", "-m", "m/1", "-o", "o.jsonl", "--api-key", KEY])
    config = _job_config(args)
    assert config.http.api_url == HttpConfig().api_url
    assert config.http.concurrency == HttpConfig().concurrency
    assert config.http.timeout == HttpConfig().timeout
    assert config.retry == RetryConfig()
    assert config.outage == OutageConfig() and config.rate == RateConfig()
    assert config.jpeg_quality == JobConfig.jpeg_quality
    readme = (REPO / "docs" / "options.md").read_text(encoding="utf-8")
    for flag, default in [
        ("--concurrency N", HttpConfig.concurrency),
        ("--retries N", RetryConfig.retries),
        ("--timeout S", f"{HttpConfig.timeout:g}"),
        ("--max-outage S", f"{OutageConfig.max_outage:g}"),
        ("--jpeg-quality Q", JobConfig.jpeg_quality),
        ("--api-url URL", f"`{HttpConfig.api_url}`"),
    ]:
        assert f"| `{flag}` | {default} |" in readme, flag


def test_retries_0_gives_up_at_an_images_own_first_failure(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    for name, color in [("a.png", "red"), ("b.png", "blue"), ("c.png", "green")]:
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / name).write_bytes(png(color))
    server.fail_image(png("blue"), 500)  # only this image fails; the API works for the others

    result = cli(*run_args(server, tmp_path / "o.jsonl", tmp_path / "in"), "--retries", "0")

    assert result.code == 1, result.err
    rows = {Path(row["path"]).name: row for row in read_rows(tmp_path / "o.jsonl")}
    assert rows["b.png"]["status"] == "error" and rows["b.png"]["attempts"] == 1
    assert rows["a.png"]["status"] == rows["c.png"]["status"] == "ok"
    assert server.stats.statuses == {500: 1, 200: 2}


def test_retries_0_does_not_count_429(tmp_path: Path, server: BackgroundServer, cli: Cli) -> None:
    make_image(tmp_path / "in" / "x.jpg", "green")
    server.script(Fault(status=429, headers={"Retry-After": "0"}))

    result = cli(*run_args(server, tmp_path / "o.jsonl", tmp_path / "in"), "--retries", "0")

    assert result.code == 0, result.err
    [row] = read_rows(tmp_path / "o.jsonl")
    assert row["status"] == "ok" and row["attempts"] == 2


def test_failures_everyone_gets_do_not_use_up_retries(
    tmp_path: Path, server: BackgroundServer
) -> None:
    """While the other images fail too (an outage starting), no image is given up on: the job
    waits for the API instead of turning the queue into error rows."""
    for name, color in [("a.png", "red"), ("b.png", "blue")]:
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / name).write_bytes(png(color))
    server.fail_next(8, 500)
    config = JobConfig(
        sources=tmp_path / "in",
        model="colors/1",
        output=tmp_path / "o.jsonl",
        http=HttpConfig(api_url=server.url, api_key=KEY, concurrency=2),
        retry=RetryConfig(retries=1, backoff_base=0.01, backoff_max=0.02),  # --retries 1
        outage=OutageConfig(outage_after=0.2, probe_initial=0.02, probe_max=0.05),
    )

    summary = classify(config)

    assert (summary.ok, summary.failed) == (2, 0)
    rows = read_rows(tmp_path / "o.jsonl")
    assert sum(row["attempts"] for row in rows) == 10  # more than 2 each, all needed
    assert server.stats.statuses == {500: 8, 200: 2}


# -- serve ----------------------------------------------------------------------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port some other program is listening on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_serve_on_a_port_in_use_is_one_line(busy_port: int, cli: Cli) -> None:
    result = cli("serve", "--port", str(busy_port))

    assert result.code == 2
    assert "Traceback" not in result.err
    [line] = result.err.splitlines()
    assert f"cannot listen on 127.0.0.1:{busy_port}" in line
    assert "in use" in line and "--port" in line


def test_server_module_on_a_port_in_use_is_one_line(
    busy_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    from batchclassify.server.__main__ import main as server_main

    with pytest.raises(SystemExit) as exited:
        server_main(["--port", str(busy_port)])

    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"cannot listen on 127.0.0.1:{busy_port}" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "70000"], "70000 is not a port number"),
        (["--port", "-1"], "-1 is not a port number"),
        (["--port", "http"], "'http' is not a port number"),
    ],
)
def test_serve_port_out_of_range_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, err = _parse_error(capsys, "serve", *args)
    assert code == 2
    assert "Traceback" not in err and message in err


@pytest.mark.parametrize(
    ("args", "flag"), [(["--rate-limit", "0"], "--rate-limit"), (["--latency", "-1"], "--latency")]
)
def test_serve_bad_knobs_name_the_flag(cli: Cli, args: list[str], flag: str) -> None:
    result = cli("serve", *args)
    assert result.code == 2
    [line] = result.err.splitlines()
    assert line.startswith("batchclassify: error: ") and flag in line
