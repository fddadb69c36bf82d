"""``batchclassify push``: an output's images into a Roboflow project, each with the model's
classification saved as a prediction awaiting review.

``options.py`` the flags, ``selection.py`` which rows, ``ledger.py`` what was done (resume),
``pushing.py`` the workers, ``summary.py`` their counts, ``progressfile.py`` the progress
file ``status`` reads; the HTTP is ``api/dataset.py``. See docs/push.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ...api.dataset import DEFAULT_DATASET_API
from ...api.redaction import redact
from ...config import HttpConfig, OutageConfig, RateConfig, RetryConfig
from ...cost import RULES, Billing
from ...exit_codes import ExitCode
from .ledger import Ledger, ledger_path
from .options import DEFAULT_CONCURRENCY, SELECTIONS, PushOptions
from .pushing import is_done
from .selection import Selection, select_items
from .summary import PushSummary

_EPILOG = """\
Each selected image is uploaded (a URL item by its URL: Roboflow fetches it), then its
classes are saved as a prediction (a multi-label image's classes as a JSON list), which
Roboflow shows for review instead of as a label. A ledger beside OUTPUT
(OUTPUT.push-PROJECT.jsonl) records each step: rerunning the same command after Ctrl-C,
kill -9 or failures sends only what is missing, never an image or an annotation twice.
Error rows and files that are not images are never uploaded. See docs/push.md.

examples:
  batchclassify push results.jsonl --project pets --dry-run
  batchclassify push results.jsonl --project pets --select review --min-confidence 0.6
  batchclassify push results.jsonl --project pets --per-class 50 --split train=0.8,valid=0.2
  batchclassify push results.jsonl --project pets --only next.jsonl --tag round-2
"""


def register(commands: Any) -> None:
    """Add ``push`` to the CLI's subcommands."""
    parser = commands.add_parser(
        "push",
        help="upload images to a Roboflow project with the model's classes as predictions",
        description="Upload the classified images of OUTPUT to a Roboflow project, saving "
        "each one's classification as a prediction awaiting review.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG,
    )
    parser.add_argument("output", type=Path, metavar="OUTPUT", help="the --output of a run")
    parser.add_argument(
        "--project",
        required=True,
        help="the project's URL slug, without the workspace (the key names the workspace)",
    )
    which = parser.add_argument_group("which images")
    which.add_argument(
        "--select",
        choices=SELECTIONS,
        default="all",
        help="all: every classified row (default); review: those a person should check "
        "(no class, or top confidence under --min-confidence), least sure first",
    )
    which.add_argument(
        "--min-confidence",
        type=float,
        default=PushOptions.min_confidence,
        metavar="F",
        help="--select review: below this top confidence a row needs review (default %(default)g)",
    )
    which.add_argument(
        "--per-class",
        type=int,
        metavar="N",
        help="at most N images of each class (its top class); with --limit the classes take "
        "turns, so each gets its share before any gets more",
    )
    which.add_argument("--limit", type=int, metavar="N", help="at most N images in all")
    which.add_argument(
        "--only",
        type=Path,
        metavar="MANIFEST",
        help="only the images of this manifest (what 'batchclassify select' writes)",
    )
    where = parser.add_argument_group("where they go")
    where.add_argument(
        "--split",
        default="train",
        metavar="SPLIT|NAME=FRACTION,...",
        help="train, valid or test for all (default train), or fractions split by a stable "
        "hash of each image's bytes, as export does: train=0.8,valid=0.1,test=0.1",
    )
    where.add_argument("--seed", default="0", help="seed of a fractional --split (default 0)")
    where.add_argument(
        "--batch",
        metavar="NAME",
        help="the upload batch (and annotation job) name (default: 'batchclassify MODEL')",
    )
    where.add_argument(
        "--tag", action="append", default=[], metavar="TAG", help="tag every image (repeatable)"
    )
    where.add_argument(
        "--overwrite-annotations",
        action="store_true",
        help="replace an annotation the image already has in the project (default: an image "
        "already annotated keeps its annotation)",
    )
    where.add_argument(
        "--ledger", type=Path, metavar="PATH", help="the ledger (default: beside OUTPUT)"
    )
    where.add_argument(
        "--dry-run",
        action="store_true",
        help="say how many images, bytes and upload credits the push takes; send nothing",
    )
    api = parser.add_argument_group("API")
    api.add_argument(
        "--api-url",
        default=DEFAULT_DATASET_API,
        help="Roboflow's API (default %(default)s); 'local' for the embedded test server, to "
        "rehearse a push",
    )
    api.add_argument(
        "--api-key", default=None, help="Roboflow API key (default: $ROBOFLOW_API_KEY)"
    )
    api.add_argument(
        "--concurrency",
        "-c",
        type=int,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help="images in flight (default %(default)s, as Roboflow's own uploader)",
    )
    api.add_argument(
        "--rate-limit",
        type=float,
        default=None,
        metavar="N",
        help="at most N requests per second (default: adapt to the API's 429s)",
    )
    api.add_argument(
        "--retries",
        type=int,
        default=RetryConfig.retries,
        metavar="N",
        help="extra attempts per request after its own failures (default %(default)s)",
    )
    api.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="seconds per request (default %(default)g: an upload is a whole file)",
    )
    api.add_argument(
        "--max-outage",
        type=float,
        default=OutageConfig.max_outage,
        metavar="SECONDS",
        help="how long to wait for an API that stopped answering (default %(default)g)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress or summary")
    parser.add_argument("--verbose", "-v", action="store_true", help="tracebacks on errors")
    parser.set_defaults(handler=_command)


def _splits(text: str) -> tuple[tuple[str, float], ...]:
    if "=" not in text:
        return ((text.strip(), 1.0),)
    from ..export.options import parse_splits

    return parse_splits(text)


def options_from(args: argparse.Namespace) -> PushOptions:
    """The push's options from its flags (the key from ``--api-key`` or the environment)."""
    http = HttpConfig(
        api_url=args.api_url,
        api_key=args.api_key or os.environ.get("ROBOFLOW_API_KEY") or None,
        concurrency=args.concurrency,
        timeout=args.timeout,
    )
    if not args.dry_run:
        http.check_key()  # run's rule: Roboflow's API needs a key
    retry = RetryConfig(retries=args.retries)
    rate = RateConfig(requests_per_second=args.rate_limit)
    outage = OutageConfig(max_outage=args.max_outage)
    return PushOptions(
        output=args.output,
        project=args.project,
        select=args.select,
        min_confidence=args.min_confidence,
        per_class=args.per_class,
        limit=args.limit,
        splits=_splits(args.split),
        seed=args.seed,
        batch=args.batch,
        tags=tuple(args.tag),
        only=args.only,
        dry_run=args.dry_run,
        overwrite_annotations=args.overwrite_annotations,
        ledger=args.ledger,
        http=http,
        retry=retry,
        rate=rate,
        outage=outage,
    )


def _command(args: argparse.Namespace) -> int:
    options = options_from(args)
    selection = select_items(options)
    path = options.ledger or ledger_path(options.output, options.project, options.http.servers[0])
    say: Callable[[str], None] = lambda text: print(  # noqa: E731
        redact(text, options.http.api_key), file=sys.stderr
    )
    if options.dry_run:
        ledger = Ledger(path, project=options.project, api_url=options.http.servers[0]).read()
        print("\n".join(describe_plan(options, selection, ledger)))
        return ExitCode.OK
    with Ledger(path, project=options.project, api_url=options.http.servers[0]) as ledger:
        summary = _push(options, selection, ledger, quiet=args.quiet)
    if not args.quiet:
        say(format_summary(summary, options, selection, path))
    elif summary.stopped_by is not None:
        say(f"batchclassify: stopped: {summary.stopped_by}")
    return summary.exit_code


def _push(
    options: PushOptions, selection: Selection, ledger: Ledger, *, quiet: bool
) -> PushSummary:
    import anyio

    from ..progress import ProgressBar
    from .pushing import Pusher

    progress = ProgressBar(enabled=False if quiet else None, desc="pushing")

    async def main() -> PushSummary:
        http = options.http
        server = None
        if http.api_url == "local":
            from ...server import ServerConfig, start_server

            server = await start_server(ServerConfig(api_key=http.api_key))
            http = replace(http, api_url=server.url)
        pusher = Pusher(
            options, http, selection.items, ledger, model=selection.model, progress=progress
        )
        try:
            async with anyio.create_task_group() as group:

                async def watch_signals() -> None:
                    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                        async for _ in signals:  # the first stops gently, the next at once
                            (pusher.cancel if pusher.summary.interrupted else pusher.request_stop)()

                group.start_soon(watch_signals)
                summary = await pusher.run()
                group.cancel_scope.cancel()
        finally:
            if server is not None:
                await server.stop()
        return summary

    return anyio.run(main)


def describe_plan(options: PushOptions, selection: Selection, ledger: Ledger) -> list[str]:
    """``--dry-run``: what the push would send, and what it would cost."""
    overwrite = options.overwrite_annotations
    todo = [item for item in selection.items if not is_done(item, ledger, overwrite=overwrite)]
    pending_upload = [
        item
        for item in todo
        if (entry := ledger.entries.get(item.id)) is None or not entry.image_id
    ]
    size = missing = 0
    for item in pending_upload:
        if item.path is None:
            continue
        try:
            size += os.stat(item.path).st_size
        except OSError:
            missing += 1
    urls = sum(1 for item in pending_upload if item.path is None)
    splits: dict[str, int] = {}
    for item in pending_upload:
        splits[item.split] = splits.get(item.split, 0) + 1
    upload = RULES[Billing.UPLOAD]
    assert upload.per_unit is not None  # a price per image
    credits = len(pending_upload) * upload.per_unit
    lines = [
        f"push to project {options.project} at {options.http.servers[0]} (dry run: nothing sent)",
        f"  {selection.rows:,} rows in {options.output}: {len(selection.items):,} selected, "
        f"{selection.failed_rows:,} failed rows never pushed",
        f"  {len(selection.items) - len(todo):,} already pushed (ledger {ledger.path})",
        f"  {len(pending_upload):,} images to upload: {len(pending_upload) - urls:,} files, "
        f"{size:,} bytes ({_bytes(size)})"
        + (f", and {urls:,} by URL" if urls else "")
        + (f"; {missing:,} files not found" if missing else ""),
        f"  {len(todo):,} predictions to save",
        "  splits: " + (", ".join(f"{n} {k}" for k, n in sorted(splits.items())) or "none"),
        f"  upload credits: {credits:g} (Roboflow bills {upload.endpoint}: {upload.billed})",
    ]
    for reason, count in selection.left_out.items():
        lines.append(f"  not selected: {count:,} ({reason})")
    return lines


def _bytes(size: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:,} {unit}" if unit == "bytes" else f"{size:,.1f} {unit}"
        size /= 1000  # type: ignore[assignment]
    return f"{size} bytes"


def format_summary(
    summary: PushSummary, options: PushOptions, selection: Selection, ledger: Path
) -> str:
    rate = (summary.uploaded / summary.elapsed) if summary.elapsed > 0 else 0.0
    lines = [
        f"pushed to project {options.project} in {summary.elapsed:.1f} s: "
        f"{summary.uploaded:,} uploaded ({rate:.1f}/s, {_bytes(summary.bytes_sent)}), "
        f"{summary.annotated:,} predictions saved",
    ]
    if summary.duplicates:
        lines.append(
            f"  {summary.duplicates:,} already in the project (duplicate): not stored again"
        )
    if summary.already_annotated:
        lines.append(
            f"  {summary.already_annotated:,} already annotated in the project: left as they were"
            " (--overwrite-annotations replaces them)"
        )
    if summary.unlabelled:
        lines.append(f"  {summary.unlabelled:,} with no class: uploaded without an annotation")
    if summary.done_before:
        lines.append(f"  {summary.done_before:,} done by an earlier push: nothing sent")
    if selection.failed_rows:
        lines.append(f"  {selection.failed_rows:,} failed rows in the output: never pushed")
    if summary.retries:
        lines.append(f"  {summary.retries:,} requests retried")
    if summary.failed:
        lines.append(f"  {summary.failed:,} failed (each a line in {ledger}); rerun to retry:")
        for error, count in summary.errors.most_common(5):
            lines.append(f"    {count:,} × {error}")
    if summary.stopped_by is not None:
        reason = str(summary.stopped_by)
        rerun = "" if "rerun" in reason else "; rerun the same command to resume"
        lines.append(f"stopped: {reason}{rerun}")
    elif summary.interrupted:
        lines.append("interrupted; rerun the same command to resume")
    return "\n".join(lines)


__all__ = ["PushOptions", "register"]
