"""``run``'s flags for following growing folders (``--watch`` and its companions), parsed into
a ``WatchConfig`` (docs/watch.md)."""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timedelta
from typing import Any

from ..config import WatchConfig
from ..errors import UsageError


def add_watch_flags(run: Any) -> None:
    """Add the ``--watch`` group to ``run``'s parser."""
    group = run.add_argument_group("following folders that keep filling (docs/watch.md)")
    group.add_argument(
        "--watch",
        action="store_true",
        help="after the first walk, keep following the folders and object-store prefixes: "
        "each new image is classified once it is whole (unchanged for --settle seconds; a hidden "
        "or temporary name only once renamed to an image's name). File-system notifications "
        "(inotify), or polling on network file systems; a prefix's listing every --poll seconds. "
        "Ctrl-C or SIGTERM ends it with every row written",
    )
    group.add_argument(
        "--settle",
        type=float,
        default=WatchConfig.settle,
        metavar="SECONDS",
        help="a new file is sent once its size and mtime (an object: size and ETag, its "
        "LastModified counting as the mtime) stayed the same this long "
        "(default %(default)g)",
    )
    group.add_argument(
        "--poll",
        type=float,
        default=None,
        metavar="SECONDS",
        help="list the folders every SECONDS instead of using notifications (network file "
        f"systems are polled every {WatchConfig.DEFAULT_POLL:g} s unless this is given), and "
        "object-store prefixes every SECONDS (default "
        f"{WatchConfig.DEFAULT_OBJECT_POLL:g}: each listing is a billed request per 1,000 keys)",
    )
    group.add_argument(
        "--watch-until",
        metavar="TIME",
        help="stop following at TIME: HH:MM (the next one, local time) or an ISO date and "
        "time (2026-12-31T18:00, local unless it says its zone); the backlog is sent, then "
        "the job ends",
    )
    group.add_argument(
        "--idle-exit",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop following once nothing new has arrived for SECONDS (for scheduled jobs)",
    )


def watch_config(args: argparse.Namespace) -> WatchConfig | None:
    """The ``WatchConfig`` the flags ask for; ``None`` without ``--watch``."""
    if not args.watch:
        given = [
            flag
            for flag, value in (
                ("--settle", args.settle != WatchConfig.settle),
                ("--poll", args.poll is not None),
                ("--watch-until", args.watch_until is not None),
                ("--idle-exit", args.idle_exit is not None),
            )
            if value
        ]
        if given:
            raise UsageError(f"{given[0]} needs --watch")
        return None
    if args.processes > 1:
        raise UsageError(
            "--watch and --processes: pick one (one process follows the folders; "
            "use --shard I/N to split a watch over several)"
        )
    until = None if args.watch_until is None else parse_until(args.watch_until)
    return WatchConfig(settle=args.settle, poll=args.poll, until=until, idle_exit=args.idle_exit)


def parse_until(text: str, *, now: datetime | None = None) -> float:
    """``--watch-until``'s TIME as ``time.time()`` seconds: ``HH:MM`` is the next such time
    (today, or tomorrow once it has passed); an ISO date and time is taken as it is."""
    current = now or datetime.now().astimezone()
    try:
        clock = datetime.strptime(text, "%H:%M")
    except ValueError:
        pass
    else:
        moment = current.replace(hour=clock.hour, minute=clock.minute, second=0, microsecond=0)
        if moment <= current:
            moment += timedelta(days=1)
        return moment.timestamp()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--watch-until {text!r}: not a time; write HH:MM or an ISO date and time "
            "(2026-12-31T18:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # local time, as HH:MM is
    if moment.timestamp() <= time.time():
        raise UsageError(f"--watch-until {text}: that time has passed")
    return moment.timestamp()
