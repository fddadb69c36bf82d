"""The command line: parse flags into a JobConfig, run the job, show progress and the summary.

Exit codes:
  0    every item is classified
  1    the job finished, but some items failed (their rows say why)
  2    usage or input error: bad flags, unreadable manifest, output of another job (or one
       another job is writing); nothing sent
  3    stopped early: the API refused the job (bad key, unknown model, no credits), could not
       be reached at all (unknown host, connection refused), stayed unreachable for
       --max-outage, --max-failures was reached, or the output could not be written (disk
       full); rerun to resume
  130  interrupted by Ctrl-C (143 for SIGTERM); rerun the same command to resume
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

from . import __version__
from .client import redact
from .config import (
    DEFAULT_API_URL,
    DEFAULT_EXTENSIONS,
    HttpConfig,
    JobConfig,
    RateConfig,
    RetryConfig,
)
from .errors import BatchClassifyError, OutputError, OutputWriteError, UsageError
from .progress import ProgressBar, format_summary
from .runner import Job, JobSummary

EXIT_OK, EXIT_FAILED_ITEMS, EXIT_USAGE, EXIT_FATAL = 0, 1, 2, 3

_EPILOG = """\
exit codes:
  0    every item is classified
  1    finished, but some items failed (see the 'error' column)
  2    usage or input error, or the output is another job's; nothing was sent
  3    stopped early: the API refused the job (key, model, credits), could not be reached
       at all (unknown host, refused), stayed down for --max-outage, --max-failures
       was reached, or the disk is full; fix it, rerun to resume
  130  interrupted (Ctrl-C); rerun the same command to resume

examples:
  batchclassify run photos/ --model my-model/3 --output results.jsonl
  batchclassify run list.csv --model my-model/3 --output results.parquet --rate-limit 20
  batchclassify run sample_manifests/images --model colors/1 --api-url local --output out.jsonl
"""


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def _port(text: str) -> int:
    """A TCP port for ``serve``: argparse turns the ValueError into a one-line usage error."""
    from .server import check_port

    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    try:
        check_port(port)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="batchclassify",
        description="Classify very large image collections through Roboflow's classification API.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"batchclassify {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="classify folders and manifests, writing one row per image",
        description="Classify every image in the given folders and manifests. Rerunning the "
        "same command resumes where the last run stopped.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG,
    )
    run.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="a folder (walked recursively), a manifest (.txt, .csv, .jsonl, .parquet) of paths "
        "or URLs, or - for a list of paths on stdin",
    )
    run.add_argument("--model", "-m", required=True, help="model id as SLUG/VERSION, e.g. cats/3")
    run.add_argument(
        "--output",
        "-o",
        required=True,
        type=Path,
        help="results file: .jsonl (or .ndjson), or .parquet (a folder of part files); "
        "another suffix needs --format. One job at a time per output (a second is refused)",
    )
    run.add_argument(
        "--format",
        choices=("jsonl", "parquet"),
        help="default: from --output's suffix (.jsonl, .ndjson, .parquet)",
    )
    api = run.add_argument_group("API")
    api.add_argument(
        "--api-url",
        action="append",
        default=None,
        help=f"base URL of the API (default {DEFAULT_API_URL}); e.g. "
        "https://serverless.roboflow.com, http://localhost:9001 for a self-hosted server, or "
        "'local' for the embedded test server. Give it several times for several servers of "
        "one model: requests go to the least busy; a failing server is taken out, probed, "
        "and put back when it answers (--rate-limit stays one budget for the whole job)",
    )
    api.add_argument(
        "--api-key",
        default=None,
        help="Roboflow API key (default: $ROBOFLOW_API_KEY); prefer the variable, which stays "
        "out of your shell history",
    )
    api.add_argument(
        "--api-key-in",
        choices=("query", "header"),
        default="query",
        help="send the key as ?api_key= (default, works everywhere) or as an "
        "'Authorization: Bearer' header, which keeps it out of URLs and proxy logs "
        "(inference servers 1.5.0 and later)",
    )
    api.add_argument(
        "--confidence",
        type=float,
        metavar="F",
        help="threshold for predicted classes, a fraction from 0 to 1 (0.5 means 50%%; "
        "default: the server's, 0.4)",
    )
    speed = run.add_argument_group("speed and limits")
    speed.add_argument(
        "--concurrency",
        "-c",
        type=int,
        default=32,
        metavar="N",
        help="requests in flight, 1 to 4096, not counting ones stuck with no answer (default "
        "32); lowered to what the open-file limit (ulimit -n) allows, with a note",
    )
    speed.add_argument(
        "--rate-limit",
        type=float,
        default=None,
        metavar="N",
        help="a ceiling of N requests per second (N > 0): the job starts at N and still backs "
        "off below it on 429; without it the rate adapts to the server's 429s from the start",
    )
    speed.add_argument(
        "--retries",
        type=_positive_int,
        default=5,
        metavar="N",
        help="extra attempts per image after failures of its own (timeout, dropped connection, "
        "5xx); after N of them (or 10 minutes) it gets an error row (default 5; 0: none). "
        "Not counted: 429 answers (the job slows down and the image waits its turn), and "
        "failures while other images fail too: an outage is likely starting, and the job "
        "waits for the API instead, up to --max-outage. The 'attempts' column counts every "
        "request made",
    )
    speed.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="seconds per request, connect included (default 60)",
    )
    speed.add_argument(
        "--max-outage",
        type=float,
        default=1800.0,
        metavar="SECONDS",
        help="how long to wait for an API that stopped answering before stopping (default "
        "1800); an API never reached (unknown host, connection refused) stops the job after "
        "about 3 s",
    )
    speed.add_argument(
        "--max-failures",
        type=int,
        default=None,
        metavar="N",
        help="stop the job once N images have failed",
    )
    speed.add_argument(
        "--max-size",
        type=int,
        default=None,
        metavar="PX",
        help="downscale images whose longer side exceeds PX before upload (JPEG re-encode)",
    )
    speed.add_argument("--jpeg-quality", type=int, default=90, help="for --max-size (default 90)")
    inputs = run.add_argument_group("input and output")
    inputs.add_argument(
        "--extensions",
        default=",".join(sorted(DEFAULT_EXTENSIONS)),
        help="image extensions to pick up in folders, comma-separated (default: %(default)s)",
    )
    inputs.add_argument(
        "--overwrite",
        action="store_true",
        help="start over: delete the output first. Only a batchclassify output is deleted (the "
        "file, or the folder's own part and journal files, and its .job.json); anything else, "
        "a source or the working directory is refused",
    )
    inputs.add_argument(
        "--retry-failed",
        action="store_true",
        help="on resume, classify again the images an earlier run recorded as failed",
    )
    inputs.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="no progress bar, log lines or summary (off a terminal, progress is a "
        "timestamped log line a minute, plus one whenever the job starts or stops waiting)",
    )
    inputs.add_argument("--verbose", "-v", action="store_true", help="tracebacks on errors")

    serve = commands.add_parser(
        "serve",
        help="run a local Roboflow-compatible classification server (for tests and trials)",
        description="Serve the classification protocol locally with a small built-in colour "
        "model: models colors/N (single-label) and colors-multilabel/N. Both the legacy route "
        "(POST /MODEL/VERSION) and the v1 routes Roboflow's inference_sdk uses by default "
        "(/model/registry, /model/add, /infer/classification) are served.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument(
        "--port", type=_port, default=9001, help="port to listen on (default 9001; 0: any free)"
    )
    serve.add_argument("--api-key", default=None, help="require this key (default: accept any)")
    serve.add_argument("--files-dir", type=Path, default=None, help="serve these files at /_files/")
    serve.add_argument(
        "--latency", type=float, default=0.0, metavar="SECONDS", help="added to each answer"
    )
    serve.add_argument(
        "--rate-limit", type=float, default=None, metavar="N", help="answer 429 above N req/s"
    )
    run.set_defaults(handler=_command_run)
    serve.set_defaults(handler=_command_serve)
    # Commands that live in their own modules: each ``register(commands)`` adds its parser
    # and sets ``handler`` (a function of the parsed args returning the exit code).
    for register in _command_registrars():
        register(commands)
    return parser


def _command_registrars() -> list[Callable[[Any], None]]:
    """The ``register`` functions of the commands defined outside this module."""
    from . import export, status
    from .report import register as register_report

    return [register_report, export.register, status.register]


def _job_config(args: argparse.Namespace) -> JobConfig:
    api_key = args.api_key or os.environ.get("ROBOFLOW_API_KEY") or None
    api_urls: list[str] = args.api_url or [DEFAULT_API_URL]
    if api_key is None and any("roboflow.com" in url for url in api_urls):
        raise UsageError(
            "no API key: pass --api-key or set ROBOFLOW_API_KEY "
            "(find it in your Roboflow workspace settings)"
        )
    extensions = frozenset(
        part.strip().lower().lstrip(".") for part in args.extensions.split(",") if part.strip()
    )
    return JobConfig(
        sources=tuple(args.sources),
        model=args.model,
        output=args.output,
        output_format=args.format,
        confidence=args.confidence,
        extensions=extensions,
        max_size=args.max_size,
        jpeg_quality=args.jpeg_quality,
        overwrite=args.overwrite,
        retry_failed=args.retry_failed,
        max_failures=args.max_failures,
        http=HttpConfig(
            api_url=api_urls[0],
            api_urls=tuple(api_urls) if len(api_urls) > 1 else (),
            api_key=api_key,
            api_key_in=args.api_key_in,
            concurrency=args.concurrency,
            timeout=args.timeout,
            connect_timeout=min(10.0, args.timeout),
        ),
        retry=RetryConfig(attempts=args.retries + 1),
        rate=RateConfig(requests_per_second=args.rate_limit, max_outage=args.max_outage),
    )


async def _run(job: Job) -> tuple[JobSummary, int | None]:
    """Run the job; the first SIGINT/SIGTERM stops it gently, the second at once."""
    received: list[int] = []
    failure: Exception | None = None
    async with anyio.create_task_group() as group:

        async def watch_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    received.append(signum)
                    job.request_stop()

        group.start_soon(watch_signals)
        try:
            summary = await job.run()
        except Exception as exc:  # re-raised below, bare rather than in an ExceptionGroup
            failure = exc
        group.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return summary, (received[0] if received else None)


def _command_run(args: argparse.Namespace) -> int:
    config = _job_config(args)
    progress = ProgressBar(enabled=False if args.quiet else None)
    job = Job(config, progress=progress, stdin=sys.stdin)
    summary, signum = anyio.run(_run, job)
    if not args.quiet:
        print(redact(format_summary(summary), config.http.api_key), file=sys.stderr)
    elif summary.fatal is not None:  # --quiet hides the summary, never why the job stopped
        print(
            f"batchclassify: stopped: {redact(summary.fatal, config.http.api_key)}", file=sys.stderr
        )
    if signum is not None and summary.fatal is None:
        return 128 + signum
    return summary.exit_code


def _command_serve(args: argparse.Namespace) -> int:
    from .server import ListenError, ServerConfig, flag_message, serve_forever

    try:
        config = ServerConfig(
            api_key=args.api_key,
            files_dir=args.files_dir,
            latency=args.latency,
            rate_limit=args.rate_limit,
        )
    except ValueError as error:
        raise UsageError(flag_message(error)) from None
    try:
        serve_forever(config, host=args.host, port=args.port)
    except ListenError as error:
        raise UsageError(str(error)) from None
    return EXIT_OK


def _traceback_if_verbose(args: argparse.Namespace, secret: str | None) -> None:
    if getattr(args, "verbose", False):
        print(redact(traceback.format_exc(), secret), file=sys.stderr, end="")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    secret = getattr(args, "api_key", None) or os.environ.get("ROBOFLOW_API_KEY")
    try:
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except OutputWriteError as error:  # requests were sent: stopped early, resumable
        print(f"batchclassify: error: {redact(str(error), secret)}", file=sys.stderr)
        _traceback_if_verbose(args, secret)
        return EXIT_FATAL
    except (UsageError, OutputError) as error:
        print(f"batchclassify: error: {redact(str(error), secret)}", file=sys.stderr)
        _traceback_if_verbose(args, secret)
        return EXIT_USAGE
    except BatchClassifyError as error:
        print(f"batchclassify: error: {redact(str(error), secret)}", file=sys.stderr)
        _traceback_if_verbose(args, secret)
        return EXIT_FATAL
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
