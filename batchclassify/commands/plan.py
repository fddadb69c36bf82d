"""``batchclassify plan``: what a run would do, and what it would cost, without sending anything.

Walks and reads the sources as ``run`` does (``sources.iter_item_batches`` screened by the
producer's ``resume.Screen``, then the worker's ``encoding.read_and_encode`` with the same
settings, so cache keys are the run's own), judges ``--output`` as ``run`` does
(``resume.check_resumable``), and counts: items found and skipped, bytes, items an earlier
run recorded in ``--output``, duplicates by id and by content, answers already in the
cache, and the requests left. It streams: memory is two compact hash sets
(``idindex.IdIndex``, ~14 bytes an item), whatever the number of images.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson

from ..config import DEFAULT_API_URL, DEFAULT_EXTENSIONS, HttpConfig, JobConfig
from ..cost import Billing, rule_for_url
from ..errors import ItemError, UsageError
from ..exit_codes import ExitCode
from ..inputs.encoding import EncodedImage, read_and_encode
from ..inputs.sources import check_sources, iter_item_batches
from ..models import Item, row_is_ok
from ..names import printable
from ..output.cache import AnswerCache, Keys, KeySettings
from ..output.idindex import IdIndex
from ..output.reading import iter_rows
from ..output.resume import RECORDED_FAILED, RECORDED_OK, Screen, check_resumable
from ..shards import parse_shard, shard_output
from ..summary import InputReport
from .flags import cache_option, extensions_option
from .planmoney import money, money_lines

#: Roboflow's hosted API serves about this many requests per second ("up to 20").
HOSTED_RATE = 20.0
#: A typical hosted answer time (p50 183 ms measured at 5 req/s; PROTOCOL.md).
DEFAULT_LATENCY = 0.2
_READ_THREADS = 4


@dataclass
class PlanReport:
    """What a run with these sources and settings would do."""

    found: int = 0
    """Items the sources yield (a run's ``found``)."""
    skipped_extensions: dict[str, int] = field(default_factory=dict)
    skipped_hidden: int = 0
    empty_sources: list[str] = field(default_factory=list)
    already_done: int = 0
    """Recorded ok in ``--output``: skipped by resume."""
    previously_failed: int = 0
    """Recorded as failed in ``--output`` (retried only with ``--retry-failed``)."""
    duplicate_ids: int = 0
    """The same id (path or URL) listed again: classified once."""
    unsendable: int = 0
    """Bad manifest rows and files that cannot be read or sent: error rows, no request."""
    bytes_read: int = 0
    """Size of the files to classify, as stored."""
    bytes_sent: int = 0
    """Request bodies a run would upload (base64, after any downscale)."""
    in_cache: int = 0
    """Answers the cache file already holds: no request."""
    duplicate_content: int = 0
    """Identical images (same bytes sent) after the first: they share its request."""
    requests: int = 0
    """Requests a run would make (retries aside); without ``--cache``, at least."""
    requests_max: int = 0
    """Without ``--cache``, at most: identical images share a request only when in flight
    together. With it, ``requests``."""
    bytes_sent_max: int = 0
    """``bytes_sent``'s upper end, as ``requests_max`` is ``requests``'."""
    cache: str | None = None
    rate_limit: float = HOSTED_RATE
    concurrency: int = HttpConfig.concurrency
    latency: float = DEFAULT_LATENCY
    api_url: str = DEFAULT_API_URL
    """Whose billing rule prices the requests (``cost.rule_for_url``), or ``billing``'s."""
    billing: str | None = None
    max_credits: float | None = None

    def money(self) -> dict[str, Any]:
        """Credits as a range under the endpoint's rule, and ``--max-credits``'s reach."""
        return money(
            rule_for_url(self.api_url, self.billing),
            requests=self.requests,
            requests_max=self.requests_max,
            bytes_sent=self.bytes_sent,
            bytes_sent_max=self.bytes_sent_max,
            latency=self.latency,
            max_credits=self.max_credits,
        )

    @property
    def seconds(self) -> float:
        """Time for ``requests`` at the rate limit, or at what concurrency / latency allows."""
        throughput = min(self.rate_limit, self.concurrency / self.latency)
        return self.requests / throughput if throughput > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["seconds"] = round(self.seconds, 1)
        data.update(self.money())
        return data


class Planner:
    """Goes through the sources once and fills a ``PlanReport``."""

    def __init__(
        self,
        config: JobConfig,
        *,
        cache: AnswerCache | None,
        recorded: IdIndex,
        report: PlanReport,
        progress: Callable[[PlanReport], None] = lambda report: None,
    ) -> None:
        self.config = config
        self.cache = cache
        self.report = report
        self._ids = recorded
        self._contents = IdIndex()
        self._keys = Keys(
            KeySettings(
                model=config.model,
                confidence=config.confidence,
                max_size=config.max_size,
                jpeg_quality=config.jpeg_quality,
            )
        )
        self._progress = progress

    def run(self, stdin: TextIO | None) -> PlanReport:
        inputs = InputReport()
        config = self.config
        screen = Screen(
            self._ids, retry_failed=config.existing == "retry_failed", shard=config.shard
        )
        batches = iter_item_batches(
            config.sources,
            extensions=config.extensions,
            stdin=stdin,
            report=inputs,
            keep=screen.keep,  # the run's producer's screen: only fresh items are made
        )
        report = self.report
        with ThreadPoolExecutor(_READ_THREADS) as pool:
            for batch in batches:
                report.found = screen.found
                report.duplicate_ids = screen.duplicates
                report.already_done = screen.done
                report.previously_failed = screen.failed
                self._plan_batch(batch, pool)
                self._progress(report)
        report.skipped_extensions = dict(inputs.skipped_extensions)
        report.skipped_hidden = inputs.skipped_hidden
        report.empty_sources = list(inputs.empty_sources)
        return report

    def _plan_batch(self, items: list[Item], pool: ThreadPoolExecutor) -> None:
        report = self.report
        sendable = [item for item in items if item.problem is None]
        report.unsendable += len(items) - len(sendable)
        bodies = pool.map(self._encode, sendable)
        keys: list[bytes] = []
        sizes: list[int] = []
        for item, encoded in zip(sendable, bodies, strict=True):
            if isinstance(encoded, ItemError):
                report.unsendable += 1
                continue
            if encoded is not None:
                report.bytes_read += encoded.original_bytes
            sizes.append(0 if encoded is None else len(encoded.body))
            keys.append(self._keys.for_item(item, None if encoded is None else encoded.body))
        cached = self.cache.contains(keys) if self.cache is not None else set()
        for key, size in zip(keys, sizes, strict=True):
            text = key.hex()
            # "To upload" counts what would be sent: no cache hit, no identical image's copy
            # (except, without a cache file, at most: see ``requests_max``).
            if key in cached:
                report.in_cache += 1
            elif self._contents.set(text, 1):
                report.duplicate_content += 1
                if self.config.cache is None:  # a cache file (even a new one) makes it exact
                    report.requests_max += 1
                    report.bytes_sent_max += size
            else:
                report.requests += 1
                report.requests_max += 1
                report.bytes_sent += size
                report.bytes_sent_max += size

    def _encode(self, item: Item) -> EncodedImage | ItemError | None:
        if item.path is None:
            return None  # a URL: the server fetches it; keyed by the URL
        config = self.config
        try:
            return read_and_encode(
                item.path,
                max_upload_bytes=config.max_upload_bytes,
                max_size=config.max_size,
                jpeg_quality=config.jpeg_quality,
            )
        except ItemError as error:
            return error


def recorded_ids(config: JobConfig) -> IdIndex:
    """What ``--output`` already holds, read-only: id -> recorded ok / failed (latest row).

    An output ``run`` would refuse (``resume.check_resumable``) is refused with its message.
    """
    index = IdIndex()
    output = config.output
    check_resumable(config)
    if not os.path.lexists(output):
        return index
    for row in iter_rows(output):
        index.set(row["id"], RECORDED_OK if row_is_ok(row) else RECORDED_FAILED)
    return index


def register(commands: Any) -> None:
    """Add ``plan`` to the CLI's subcommands."""
    parser = commands.add_parser(
        "plan",
        help="dry run: what a run would send, and how long it would take; sends nothing",
        description="Walk and read the sources as 'run' would, sending nothing, and print: "
        "images found and skipped, bytes, images already done in --output, duplicates (by "
        "path and by content), answers already in --cache, the requests a run would make, "
        "and how long they take at the rate limit and the given concurrency and latency. "
        "Writes nothing (not even a new cache file). Exit 2 if the sources hold no image.",
    )
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="as for run")
    parser.add_argument("--model", "-m", required=True, help="model id as SLUG/VERSION")
    parser.add_argument("--output", "-o", type=Path, help="the run's --output: count what it holds")
    parser.add_argument("--cache", metavar="PATH", help="as for run (also $BATCHCLASSIFY_CACHE)")
    parser.add_argument("--no-cache", action="store_true", help="as for run")
    parser.add_argument("--confidence", type=float, metavar="F", help="as for run")
    parser.add_argument("--max-size", type=int, metavar="PX", help="as for run")
    parser.add_argument(
        "--jpeg-quality", type=int, default=JobConfig.jpeg_quality, help="as for run"
    )
    parser.add_argument(
        "--extensions", default=",".join(sorted(DEFAULT_EXTENSIONS)), help="as for run"
    )
    parser.add_argument("--retry-failed", action="store_true", help="as for run")
    parser.add_argument("--shard", metavar="I/N", help="as for run: plan shard I of N only")
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=HOSTED_RATE,
        metavar="N",
        help=f"requests per second for the estimate (default {HOSTED_RATE:g}, the hosted API's)",
    )
    parser.add_argument(
        "--concurrency",
        "-c",
        type=int,
        default=HttpConfig.concurrency,
        metavar="N",
        help="as for run (default %(default)s)",
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=DEFAULT_LATENCY,
        metavar="SECONDS",
        help=f"seconds per request for the estimate (default {DEFAULT_LATENCY:g})",
    )
    parser.add_argument(
        "--api-url",
        default=DEFAULT_API_URL,
        metavar="URL",
        help=f"as for run: whose billing rule prices the requests (default {DEFAULT_API_URL})",
    )
    parser.add_argument(
        "--billing",
        choices=[str(kind) for kind in Billing if kind is not Billing.UPLOAD],
        help="as for run: the billing rule (default: the --api-url's)",
    )
    parser.add_argument(
        "--max-credits",
        type=float,
        metavar="X",
        help="as for run: say how far a budget of X credits reaches",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    parser.set_defaults(handler=_command)


def _config(args: argparse.Namespace) -> JobConfig:
    shard = None if args.shard is None else parse_shard(args.shard)
    return JobConfig(
        sources=tuple(args.sources),
        model=args.model,
        output=shard_output(args.output, shard) if args.output else Path("plan.jsonl"),
        confidence=args.confidence,
        extensions=extensions_option(args.extensions),
        max_size=args.max_size,
        jpeg_quality=args.jpeg_quality,
        existing="retry_failed" if args.retry_failed else "resume",
        cache=cache_option(args),
        shard=shard,
        http=HttpConfig(concurrency=args.concurrency),  # refused as run refuses it
    )


def _command(args: argparse.Namespace) -> int:
    if not (args.rate_limit > 0 and args.concurrency >= 1 and args.latency > 0):
        raise UsageError("--rate-limit, --concurrency and --latency must be positive")
    config = _config(args)
    check_sources(config.sources)
    recorded = recorded_ids(config) if args.output is not None else IdIndex()
    report = PlanReport(
        cache=None if config.cache is None else str(config.cache),
        rate_limit=args.rate_limit,
        concurrency=config.http.concurrency,
        latency=args.latency,
        api_url=args.api_url,
        billing=args.billing,
        max_credits=args.max_credits,
    )
    # A plan writes nothing: a cache file that does not exist yet is an empty one.
    exists = config.cache is not None and config.cache.exists()
    opened = AnswerCache(config.cache, create=False) if exists and config.cache else None
    show = _Progress(enabled=not args.quiet)
    with closing(opened) if opened is not None else nullcontext():
        Planner(config, cache=opened, recorded=recorded, report=report, progress=show).run(
            sys.stdin
        )
    show.done()
    if args.json:
        sys.stdout.write(orjson.dumps(report.as_dict()).decode() + "\n")
    else:
        print(printable(format_plan(report), keep_lines=True))
    return ExitCode.OK if report.found else ExitCode.USAGE


class _Progress:
    """A line on stderr: rewritten in place on a terminal, else one every 30 s."""

    def __init__(self, *, enabled: bool) -> None:
        self._enabled = enabled
        self._tty = sys.stderr.isatty()
        self._last = time.monotonic()
        self._wrote = False

    def __call__(self, report: PlanReport) -> None:
        now = time.monotonic()
        if not self._enabled or now - self._last < (1.0 if self._tty else 30.0):
            return
        self._last = now
        line = (
            f"plan: {report.found:,} items, {report.bytes_read / 2**20:,.1f} MiB read, "
            f"{report.requests:,} requests so far"
        )
        sys.stderr.write(f"\r{line}" if self._tty else f"{line}\n")
        sys.stderr.flush()
        self._wrote = True

    def done(self) -> None:
        if self._wrote and self._tty:
            sys.stderr.write("\n")


def format_plan(report: PlanReport) -> str:
    """The plan, for people."""
    lines = [f"images found: {report.found:,}"]
    skipped = sum(report.skipped_extensions.values())
    if skipped or report.skipped_hidden:
        kinds = ", ".join(
            f"{n:,} .{ext}" if ext else f"{n:,} without one"
            for ext, n in sorted(report.skipped_extensions.items(), key=lambda kv: -kv[1])[:5]
        )
        lines.append(
            f"skipped in folders: {skipped:,} with an extension not in --extensions"
            + (f" ({kinds})" if kinds else "")
            + f"; {report.skipped_hidden:,} hidden"
        )
    if report.empty_sources:
        lines.append(f"no images in: {', '.join(report.empty_sources[:3])}")
    lines.extend(_skip_lines(report))
    lines.append(
        f"to read: {report.bytes_read / 2**20:,.1f} MiB; to upload: "
        + _span(report.bytes_sent / 2**20, report.bytes_sent_max / 2**20, "{:,.1f}")
        + " MiB"
    )
    lines.append(
        f"requests a run would make: {_span(report.requests, report.requests_max, '{:,}')}"
        + (
            " (identical images share a request only when in flight together; "
            "--cache makes it exact)"
            if report.requests_max > report.requests
            else ""
        )
    )
    throughput = min(report.rate_limit, report.concurrency / report.latency)
    lines.append(
        f"time at {throughput:,.1f} requests/s: {_duration(report.seconds)} (--rate-limit "
        f"{report.rate_limit:g}, --concurrency {report.concurrency} at {report.latency:g} s a "
        "request; retries aside)"
    )
    lines.extend(money_lines(report.money(), latency=report.latency))
    return "\n".join(lines)


def _span(low: float, high: float, form: str) -> str:
    """``low``, or ``low to high`` when a plan cannot know which."""
    return form.format(low) if high <= low else f"{form.format(low)} to {form.format(high)}"


def _skip_lines(report: PlanReport) -> Iterator[str]:
    rows = (
        (report.already_done, "already done in --output"),
        (report.previously_failed, "failed in an earlier run (--retry-failed retries them)"),
        (report.duplicate_ids, "listed twice (same path or URL)"),
        (report.unsendable, "cannot be sent (bad manifest rows, unreadable files): error rows"),
        (report.duplicate_content, "identical to another image here (same bytes): no request"),
        (report.in_cache, f"answered in the cache {report.cache}: no request"),
    )
    for count, what in rows:
        if count:
            yield f"  {count:>10,}  {what}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:,.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:,.0f} min"
    return f"{seconds / 3600:,.1f} h"
