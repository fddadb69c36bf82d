"""``batchclassify status``: how a job is doing, from another terminal, without disturbing it.

Reads ``<output>.progress.json`` (kept current by the running job, see ``progressfile.py``).
A ``running`` file whose process is gone (same host: no such pid, or one that is not
batchclassify) or that has not been updated for ``STALE_AFTER`` seconds (another host, or no
/proc to ask) belonged to a job that was killed. With no progress
file (an output from an older version), the counts come from the output itself.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from .errors import UsageError
from .exit_codes import ExitCode
from .progressfile import TOOL, progress_path
from .reading import iter_latest_rows, read_settings

#: A running job rewrites its file every 2 s; this much silence means it is gone.
STALE_AFTER = 60.0
KILLED = "not running (killed?) — rerun the same command to resume"


def register(commands: Any) -> None:
    """Add ``status`` to the CLI's subcommands."""
    parser = commands.add_parser(
        "status",
        help="show how a job is doing: running or not, counts, speed, ETA, rate limits, outages",
        description="Show the state of the job writing OUTPUT, from its OUTPUT.progress.json "
        "(kept current by the running job), or counts from OUTPUT itself for an output "
        "written before progress files existed. Read-only: never disturbs the job.",
    )
    parser.add_argument("output", type=Path, metavar="OUTPUT", help="the --output of a run")
    parser.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    parser.add_argument(
        "--watch",
        action="store_true",
        help="refresh until the job ends (Ctrl-C to stop watching; with --json: a line each time)",
    )
    parser.add_argument(
        "--interval", type=float, default=2.0, help="seconds between refreshes (default 2)"
    )
    parser.set_defaults(handler=_command)


def read_status(output: Path, *, now: float | None = None) -> dict[str, Any]:
    """The job's status as a dict: the progress file plus ``running`` and ``summary``."""
    found = _read_progress(progress_path(output))
    if found is None:
        return _status_from_output(output)
    found["running"] = found.get("state") == "running" and _alive(found, now or time.time())
    if found.get("state") == "running" and not found["running"]:
        found["summary"] = KILLED
    else:
        found["summary"] = found.get("state")
    return found


def _read_progress(path: Path) -> dict[str, Any] | None:
    try:
        found = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return found if isinstance(found, dict) and found.get("tool") == TOOL else None


def _alive(found: dict[str, Any], now: float) -> bool:
    """Is the job that wrote ``found`` still running?"""
    pid = found.get("pid")
    if found.get("host") == socket.gethostname() and isinstance(pid, int):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # alive, owned by someone else
        # A live batchclassify process is the job even when silent (compacting at the end);
        # any other process has the pid by reuse. Where that cannot be read, staleness decides.
        command = _command_line(pid)
        if command is not None:
            return b"batchclassify" in command
    updated = found.get("updated_unix")
    return isinstance(updated, int | float) and now - updated <= STALE_AFTER


def _command_line(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


def _status_from_output(output: Path) -> dict[str, Any]:
    """Counts from the rows, for an output without a progress file."""
    ok = failed = 0
    errors: Counter[str] = Counter()
    for row in iter_latest_rows(output):  # UsageError if there is no such output
        if row.get("status") == "ok":
            ok += 1
        else:
            failed += 1
            errors[str(row.get("error_type"))] += 1
    settings = read_settings(output) or {}
    return {
        "tool": TOOL,
        "state": None,
        "running": None,
        "summary": "no progress file (written by an older version, or by a job that has not "
        "started); counts are from the output",
        "output": str(output),
        "model": settings.get("model"),
        "ok": ok,
        "failed": failed,
        "errors": dict(errors.most_common()),
    }


def format_status(status: dict[str, Any]) -> str:
    """The status for a person: a few lines."""
    lines = [f"{status['output']}: {status['summary']}"]
    if status.get("pid") is not None:
        lines.append(
            f"  process {status['pid']} on {status['host']}, started {status['started']}, "
            f"updated {status['updated']}"
        )
    done = f"  {status['ok']:,} ok, {status['failed']:,} failed"
    if status.get("already_done"):
        done += f" (+{status['already_done']:,} done by earlier runs)"
    if "remaining" in status:
        total = status.get("total")
        so_far = status["found_so_far"]
        found = f"of {total:,}" if total is not None else f"of {so_far:,} found so far"
        done += f", {status['remaining']:,} remaining {found}"
    lines.append(done)
    if status.get("cache_hits") or status.get("shared") or status.get("costed"):
        lines.append("  " + _saving(status))
    if status.get("errors"):
        lines.append("  errors: " + ", ".join(f"{k} {v:,}" for k, v in status["errors"].items()))
    if status.get("running"):
        lines.append("  " + _speed(status))
    elif status.get("elapsed_s") is not None:
        lines.append(f"  ran for {_duration(status['elapsed_s'])}")
    if status.get("outage"):
        lines.append(f"  API unavailable: {status.get('outage_error')} (waiting, probing)")
    if status.get("servers"):
        from .fleet import server_lines  # and with it aiohttp: only for a job of several servers

        lines.append(f"  servers ({len(status['servers'])}):")
        lines.extend("  " + line for line in server_lines(status["servers"]))
    if status.get("note") and status.get("running"):
        lines.append(f"  {status['note']}")
    return "\n".join(lines)


def _saving(status: dict[str, Any]) -> str:
    """Requests the cache and shared requests saved, and what the server said it cost."""
    hits, shared = status.get("cache_hits", 0), status.get("shared", 0)
    text = f"requests saved: {hits + shared:,} ({hits:,} from the cache, {shared:,} shared)"
    if status.get("costed"):
        text += f"; cost: {status['credits']:,.4f} credits for {status['costed']:,} requests"
    return text


def _speed(status: dict[str, Any]) -> str:
    rate = status.get("images_per_s")
    text = "speed: measuring" if rate is None else f"{rate:,.1f} images/s"
    eta = status.get("eta_s")
    if eta is not None:
        floor = " at least" if status.get("eta_is_lower_bound") else ""
        text += f", ETA{floor} {_duration(eta)}"
    requests = status.get("requests_per_s")
    if requests is not None:
        text += f"; {requests:,.1f} requests/s"
    limit = status.get("rate_limit_per_s")
    text += f", limit {limit:g}/s" if limit is not None else ", no rate limit"
    text += f", {status.get('answered_429', 0):,} answered 429"
    if status.get("paused_for_s"):
        text += f" (paused {status['paused_for_s']:g} s more)"
    return text


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _command(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        raise UsageError(f"--interval {args.interval:g}: must be positive")
    if not args.output.exists() and not progress_path(args.output).exists():
        raise UsageError(f"{args.output}: no such output and no progress file beside it")
    try:
        while True:
            status = read_status(args.output)
            _show(status, as_json=args.json, clear=args.watch and sys.stdout.isatty())
            if not args.watch or not status.get("running"):
                return ExitCode.OK
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return ExitCode.OK


def _show(status: dict[str, Any], *, as_json: bool, clear: bool) -> None:
    if as_json:
        sys.stdout.write(orjson.dumps(status).decode() + "\n")
    else:
        sys.stdout.write(("\x1b[H\x1b[2J" if clear else "") + format_status(status) + "\n")
    sys.stdout.flush()
