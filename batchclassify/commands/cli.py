"""The command line: parse flags into a JobConfig, run the job, show progress and the summary.

Exit codes: ``ExitCode`` (exit_codes.py), which also writes the ``--help`` epilog's table.
Flag defaults are the configuration classes' defaults, read from them, and a value the
configuration refuses is reported under its flag's name (``FIELD_FLAGS``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..api.redaction import redact
from ..config import (
    DEFAULT_EXTENSIONS,
    Existing,
    HttpConfig,
    JobConfig,
    OutageConfig,
    RateConfig,
    RetryConfig,
)
from ..cost import Billing
from ..errors import BatchClassifyError, UsageError
from ..exit_codes import ExitCode, epilog_table
from ..job.gctuning import prepare_job_process
from ..names import printable
from ..shards import parse_shard, shard_output
from ..summary import JobSummary
from ..version import __version__
from .flags import cache_option, extensions_option
from .notify import Notifier, add_notify_options
from .progresscalls import ProgressCalls, Tee
from .watchflags import add_watch_flags, watch_config

# The job's modules (runner, progress, anyio, aiohttp) are imported by ``run`` when it runs:
# the other commands (status, report, serve...) start without them.

#: The flag that sets each configuration field, to name it in messages about a refused value.
FIELD_FLAGS = {
    "sources": "SOURCE",
    "output": "--output",
    "output_format": "--format",
    "model": "--model",
    "confidence": "--confidence",
    "extensions": "--extensions",
    "max_size": "--max-size",
    "jpeg_quality": "--jpeg-quality",
    "max_failures": "--max-failures",
    "existing": "--overwrite or --retry-failed",
    "http.api_url": "--api-url",
    "http.api_key": "--api-key (or $ROBOFLOW_API_KEY)",
    "http.api_key_in": "--api-key-in",
    "http.concurrency": "--concurrency",
    "http.timeout": "--timeout",
    "retry.retries": "--retries",
    "rate.requests_per_second": "--rate-limit",
    "outage.max_outage": "--max-outage",
    "max_credits": "--max-credits",
    "billing": "--billing",
    "watch.settle": "--settle",
    "watch.poll": "--poll",
    "watch.idle_exit": "--idle-exit",
}

_EPILOG = (
    epilog_table()
    + """
examples:
  batchclassify run photos/ --model my-model/3 --output results.jsonl
  batchclassify run list.csv --model my-model/3 --output results.parquet --rate-limit 20
  batchclassify run sample_manifests/images --model colors/1 --api-url local --output out.jsonl
  batchclassify run photos/ --model my-model/3 --shard 2/8 --output results/part-{shard}.parquet
  batchclassify run photos/ --model my-model/3 --processes 2 --output results.parquet
"""
)


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message}\n")


def _zero_or_more(text: str) -> int:
    """A whole number, 0 or more (``--retries 0``: none), for argparse: a message of its own
    (argparse's own names the function: "invalid _positive_int value")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative: give 0 or more")
    return value


def _port(text: str) -> int:
    """A TCP port for ``serve``: argparse turns the ValueError into a one-line usage error."""
    from ..server import check_port

    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    try:
        check_port(port)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return port


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with ``command``, of that one alone (the others' modules
    are not imported: a parser holding only ``run`` parses ``run ...`` the same)."""
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
        help="classify folders, manifests and S3 prefixes, writing one row per image",
        description="Classify every image in the given folders, manifests and object-storage "
        "prefixes. Rerunning the "
        "same command resumes where the last run stopped.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG,
    )
    run.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="a folder (walked recursively), a manifest (.txt, .csv, .jsonl, .parquet) of paths "
        "or URLs, - for a list of paths on stdin, or an object-storage prefix "
        "(s3://bucket/photos/, gs://...; needs the s3/gcs extra; endpoint: AWS_ENDPOINT_URL)",
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
        help=f"base URL of the API (default {HttpConfig.api_url}); e.g. "
        "https://classify.roboflow.com for the legacy hosted v1 (the default until this release: "
        "see docs/cost.md), http://localhost:9001 for a self-hosted server, or "
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
        default=HttpConfig.api_key_in,
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
        default=HttpConfig.concurrency,
        metavar="N",
        help="requests in flight, 1 to 4096 (default %(default)s): the server sees at most "
        "N + max(2, N/8), the extra for spare workers and copies standing in for hung "
        "requests (see docs/errors.md: hung requests); lowered to what the open-file limit "
        "(ulimit -n) allows, with a note",
    )
    speed.add_argument(
        "--rate-limit",
        type=float,
        default=RateConfig.requests_per_second,
        metavar="N",
        help="a ceiling of N requests per second (N > 0): the job starts at N and still backs "
        "off below it on 429; without it the rate adapts to the server's 429s from the start. "
        "Per process: --processes P gives each N/P; shards run by hand need their share",
    )
    speed.add_argument(
        "--retries",
        type=_zero_or_more,
        default=RetryConfig.retries,
        metavar="N",
        help="extra attempts per image after failures of its own (timeout, dropped connection, "
        f"5xx); after N of them (or {RetryConfig.max_elapsed / 60:g} minutes) it gets an error "
        "row (default %(default)s; 0: none). "
        "Not counted: 429 answers (the job slows down and the image waits its turn), and "
        "failures while other images fail too: an outage is likely starting, and the job "
        "waits for the API instead, up to --max-outage. The 'attempts' column counts every "
        "request made",
    )
    speed.add_argument(
        "--timeout",
        type=float,
        default=HttpConfig.timeout,
        metavar="SECONDS",
        help="seconds per request, connect included (default %(default)g)",
    )
    speed.add_argument(
        "--max-outage",
        type=float,
        default=OutageConfig.max_outage,
        metavar="SECONDS",
        help="how long to wait for an API that stopped answering before stopping (default "
        "%(default)g); an API never reached (unknown host, connection refused) stops the job after "
        "about 3 s",
    )
    speed.add_argument(
        "--max-failures",
        type=int,
        default=JobConfig.max_failures,
        metavar="N",
        help="stop the job once N images have failed",
    )
    speed.add_argument(
        "--max-size",
        type=int,
        default=JobConfig.max_size,
        metavar="PX",
        help="downscale images whose longer side exceeds PX before upload (JPEG re-encode)",
    )
    speed.add_argument(
        "--jpeg-quality",
        type=int,
        default=JobConfig.jpeg_quality,
        help="for --max-size (default %(default)s)",
    )
    money = run.add_argument_group("money (docs/cost.md)")
    money.add_argument(
        "--max-credits",
        type=float,
        default=JobConfig.max_credits,
        metavar="X",
        help="a hard cap on this run's spend: no request starts that could take it past X "
        "credits (requests in flight count at the dearest recent cost); at the cap the job "
        "stops as on Ctrl-C, every row written (exit 5): rerun with a higher --max-credits "
        "to go on. Cache hits cost nothing",
    )
    money.add_argument(
        "--billing",
        choices=[str(kind) for kind in Billing if kind is not Billing.UPLOAD],
        default=JobConfig.billing,
        help="the billing rule to price requests by (default: the --api-url's: "
        "serverless.roboflow.com is serverless, classify.roboflow.com hosted-v1, any other "
        "server self-hosted)",
    )
    add_notify_options(money)
    inputs = run.add_argument_group("input and output")
    inputs.add_argument(
        "--extensions",
        default=",".join(sorted(DEFAULT_EXTENSIONS)),
        help="image extensions to pick up in folders, comma-separated (default: %(default)s)",
    )
    inputs.add_argument(
        "--cache",
        metavar="PATH",
        default=None,
        help="answer cache (an SQLite file, shared safely by concurrent jobs): an image whose "
        "answer is there (same bytes sent, model, --confidence, --max-size) is not sent again, "
        "and every answer is stored. 'default' is $XDG_CACHE_HOME/batchclassify/answers.sqlite "
        "(~/.cache/...). Default: $BATCHCLASSIFY_CACHE if set, else none. Identical images in "
        "flight at once share one request either way",
    )
    inputs.add_argument(
        "--no-cache", action="store_true", help="use no cache file, even $BATCHCLASSIFY_CACHE"
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
        "--shard",
        metavar="I/N",
        help="classify only shard I of N (0-based): the items whose id hashes to I, the same "
        "on every machine, so N processes or machines (a job array) split one job; each "
        "shard needs its own output (put {shard} in --output) and resumes on its own. "
        "--rate-limit is per process: give each shard its part of the key's budget",
    )
    inputs.add_argument(
        "--processes",
        "-p",
        type=int,
        default=1,
        metavar="P",
        help="run the job as P local processes, shards 0/P to P-1/P (default 1), with one "
        "progress bar and summary; --rate-limit is divided among them. Outputs: a .parquet "
        "--output is a folder of shard outputs (one dataset); a .jsonl one gets its shards "
        "in OUTPUT.shards/, merged into OUTPUT when all finished",
    )
    inputs.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="no progress bar, log lines or summary (off a terminal, progress is a "
        "timestamped log line a minute, plus one whenever the job starts or stops waiting)",
    )
    inputs.add_argument("--verbose", "-v", action="store_true", help="tracebacks on errors")
    add_watch_flags(run)

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
    # and sets ``handler`` (a function of the parsed args returning the exit code). Only the
    # command being run is imported: a plain ``run`` loads none of them.
    for name, module in COMMAND_MODULES.items():
        if command is None or command == name:
            register: Callable[[Any], None] = importlib.import_module(module).register
            register(commands)
    return parser


#: The commands defined outside this module, in ``--help``'s order, and their modules.
COMMAND_MODULES = {
    "report": "batchclassify.commands.report",
    "export": "batchclassify.commands.export",
    "status": "batchclassify.commands.status",
    "plan": "batchclassify.commands.plan",
    "cache": "batchclassify.commands.cache",
    "merge": "batchclassify.commands.merge",
    "diff": "batchclassify.commands.diff",
    "push": "batchclassify.commands.push",
    "select": "batchclassify.commands.select",
}


def _command_named(argv: Sequence[str]) -> str | None:
    """The command when it is the first argument (``run ...``), for a parser of it alone;
    ``None`` (every command) for anything else: ``--help``, ``--version``, a typo."""
    first = argv[0] if argv else None
    return first if first in COMMAND_MODULES or first in ("run", "serve") else None


def _job_config(args: argparse.Namespace) -> JobConfig:
    api_key = args.api_key or os.environ.get("ROBOFLOW_API_KEY") or None
    extensions = extensions_option(args.extensions)
    shard = None if args.shard is None else parse_shard(args.shard)
    if args.processes > 1 and shard is not None:
        raise UsageError("--shard and --processes: pick one (--processes runs every shard)")
    config = JobConfig(
        sources=tuple(args.sources),
        model=args.model,
        output=args.output if args.processes > 1 else shard_output(args.output, shard),
        shard=shard,
        output_format=args.format,
        confidence=args.confidence,
        extensions=extensions,
        max_size=args.max_size,
        jpeg_quality=args.jpeg_quality,
        existing=_existing(args),
        max_failures=args.max_failures,
        cache=cache_option(args),
        max_credits=args.max_credits,
        billing=args.billing,
        watch=watch_config(args),
        http=HttpConfig(
            api_url=args.api_url or HttpConfig.api_url,  # --api-url given more than once: a list
            api_key=api_key,
            api_key_in=args.api_key_in,
            concurrency=args.concurrency,
            timeout=args.timeout,
        ),
        retry=RetryConfig(retries=args.retries),
        rate=RateConfig(requests_per_second=args.rate_limit),
        outage=OutageConfig(max_outage=args.max_outage),
    )
    config.http.check_key()  # the library's rule, here before --processes starts children
    return config


def _existing(args: argparse.Namespace) -> Existing:
    """``--overwrite`` or ``--retry-failed`` (or neither: resume) as ``JobConfig.existing``."""
    if args.overwrite and args.retry_failed:
        raise UsageError(
            "--overwrite and --retry-failed: pick one (--overwrite starts over, "
            "--retry-failed resumes and classifies the failed images again)"
        )
    return "overwrite" if args.overwrite else "retry_failed" if args.retry_failed else "resume"


def _command_run(args: argparse.Namespace) -> int:
    if args.processes < 1:
        raise UsageError("--processes: must be at least 1")
    config = _job_config(args)
    notifier = Notifier.from_args(args, api_key=config.http.api_key)
    calls = ProgressCalls.wanted_by(notifier, config.output)  # --notify-every

    def tell(summary: JobSummary, code: int) -> None:
        # The progress calls end first: none may reach the receiver after the end call.
        _say_all([*(calls.close() if calls is not None else []), *notifier.tell(summary, code)])

    if args.processes > 1:
        from .processes import run_processes

        return run_processes(config, args.processes, quiet=args.quiet, on_end=tell, listener=calls)
    import anyio

    from ..job.runner import Job
    from ..job.running import loop_options, run_until_signalled
    from .progress import ProgressBar, format_summary

    progress = ProgressBar(enabled=False if args.quiet else None)
    job = Job(config, progress=progress if calls is None else Tee(progress, calls), stdin=sys.stdin)
    if calls is not None:
        calls.follow(job.summary)
    prepare_job_process()  # this process runs one job (gctuning.py)
    try:
        summary, signum = anyio.run(run_until_signalled, job, backend_options=loop_options())
    except BatchClassifyError as error:  # e.g. the disk filled up: the job ended all the same
        if notifier.wanted:
            tell(JobSummary(output=config.output, fatal=str(error)), ExitCode.for_error(error))
        raise
    code = (
        ExitCode.for_signal(signum)
        if signum is not None and summary.fatal is None
        else summary.exit_code
    )
    if not args.quiet:
        summary_text = redact(format_summary(summary), config.http.api_key)
        print(printable(summary_text, keep_lines=True), file=sys.stderr)
    elif summary.fatal is not None:  # --quiet hides the summary, never why the job stopped
        fatal = redact(summary.fatal, config.http.api_key)
        print(printable(f"batchclassify: stopped: {fatal}"), file=sys.stderr)
    tell(summary, code)  # after the summary: a slow receiver hides nothing
    return code


def _say_all(lines: list[str]) -> None:
    for line in lines:
        print(printable(line), file=sys.stderr)


def _command_serve(args: argparse.Namespace) -> int:
    from ..server import ListenError, ServerConfig, flag_message, serve_forever

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
    return ExitCode.OK


def _traceback_if_verbose(args: argparse.Namespace, secret: str | None) -> None:
    if getattr(args, "verbose", False):
        print(redact(traceback.format_exc(), secret), file=sys.stderr, end="")


def in_flag_terms(error: UsageError) -> str:
    """The error's message as the command line says it: ``http.timeout`` is ``--timeout``."""
    flag = FIELD_FLAGS.get(error.field or "")
    if flag is None or error.problem is None:
        return str(error)
    problem = error.problem
    for field_name, other in FIELD_FLAGS.items():
        if "_" in field_name or "." in field_name:  # plain words ("output") stay words
            problem = re.sub(rf"(?<![\w.-]){re.escape(field_name)}(?!\w)", other, problem)
    return f"{flag}: {problem}"


def main(argv: Sequence[str] | None = None) -> int:
    """``batchclassify ARGV``: the exit code. A reader that went away (``| head``) ends any
    command quietly with ``BROKEN_PIPE``, as ``cat`` ends, not with a traceback."""
    try:
        try:
            return _main(argv)
        finally:
            # Here rather than at interpreter exit, where a closed pipe is a printed error.
            sys.stdout.flush()
    except BrokenPipeError:
        if not _silence_closed_streams():
            raise  # not stdout or stderr: a bug to show, not a reader gone
        return ExitCode.BROKEN_PIPE


def _silence_closed_streams() -> bool:
    """Point a closed stdout or stderr at /dev/null, so that nothing more is written to it
    (Python flushes stdout again at exit); whether either was closed."""
    closed = False
    for stream in (sys.stdout, sys.stderr):
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):
            continue
        if _pipe_closed(fd):
            closed = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
    return closed


def _pipe_closed(fd: int) -> bool:
    """Whether no one reads ``fd`` any more (a pipe whose reader exited)."""
    import select

    if not hasattr(select, "poll"):
        return True  # Windows: no poll on pipes; a BrokenPipeError there is the pipe's
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0))


def _main(argv: Sequence[str] | None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    args = build_parser(_command_named(argv)).parse_args(argv)
    secret = getattr(args, "api_key", None) or os.environ.get("ROBOFLOW_API_KEY")
    try:
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except BatchClassifyError as error:
        text = in_flag_terms(error) if isinstance(error, UsageError) else str(error)
        print(printable(f"batchclassify: error: {redact(text, secret)}"), file=sys.stderr)
        _traceback_if_verbose(args, secret)
        return ExitCode.for_error(error)
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
