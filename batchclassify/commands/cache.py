"""``batchclassify cache stats|clear PATH``: what an answer cache holds, and emptying it."""

from __future__ import annotations

import argparse
import datetime
import sys
from contextlib import closing
from typing import Any

import orjson

from ..exit_codes import ExitCode
from ..names import printable
from ..output.cache import DEFAULT_WORD, AnswerCache, resolve_cache_path


def register(commands: Any) -> None:
    """Add ``cache`` (with ``stats`` and ``clear``) to the CLI's subcommands."""
    parser = commands.add_parser(
        "cache",
        help="show or clear an answer cache (--cache)",
        description="Inspect or empty an answer cache file written by 'run --cache'. PATH may "
        f"be '{DEFAULT_WORD}' for $XDG_CACHE_HOME/batchclassify/answers.sqlite. A file that "
        "is not a batchclassify cache is refused and left as it is.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    stats = actions.add_parser(
        "stats", help="answers stored, per model; credits; size on disk (real answers only)"
    )
    stats.add_argument("path", metavar="PATH", help="the cache file")
    stats.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    stats.set_defaults(handler=_stats)
    clear = actions.add_parser(
        "clear", help="delete the stored answers (all, or one model's); keeps the file"
    )
    clear.add_argument("path", metavar="PATH", help="the cache file")
    clear.add_argument("--model", "-m", help="only this model's answers (SLUG/VERSION)")
    clear.set_defaults(handler=_clear)


def _stats(args: argparse.Namespace) -> int:
    with closing(AnswerCache(resolve_cache_path(args.path), create=False)) as cache:
        found = cache.stats()
    if args.json:
        sys.stdout.write(orjson.dumps(found).decode() + "\n")
        return ExitCode.OK
    lines = [
        f"cache: {found['path']} ({found['bytes'] / 2**20:,.1f} MiB)",
        f"answers: {found['answers']:,}",
    ]
    for model, count in found["models"].items():
        lines.append(f"  {count:>10,}  {model}")
    if found["not_answers"]:
        lines.append(
            f"not answers: {found['not_answers']:,} entries of failed images, stored by a "
            "batchclassify from before they were refused; never served, deleted by the next "
            "'run --cache' (or by 'cache clear')"
        )
    if found["credits_stored"]:
        lines.append(
            f"credits paid for them (where the server reported it): {found['credits_stored']:,.4f}"
        )
    if found["oldest"] is not None:
        lines.append(f"stored from {_when(found['oldest'])} to {_when(found['newest'])}")
    print(printable("\n".join(lines), keep_lines=True))
    return ExitCode.OK


def _clear(args: argparse.Namespace) -> int:
    with closing(AnswerCache(resolve_cache_path(args.path), create=False)) as cache:
        deleted = cache.clear(model=args.model)
    which = f" of {args.model}" if args.model else ""
    print(printable(f"deleted {deleted:,} answers{which} from {resolve_cache_path(args.path)}"))
    return ExitCode.OK


def _when(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment).isoformat(sep=" ", timespec="seconds")
