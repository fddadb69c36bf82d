"""``batchclassify status``: how a job is doing, from another terminal, without disturbing it.

Reads ``<output>.progress.json`` (kept current by the running job, see ``progressfile.py``,
which also says whether the job still runs). For a killed job, and with no progress file (an
output from an older version, or a ``merge`` result), the counts come from the output itself.

The ``--output`` of a ``run --processes P`` job (a Parquet folder of shard outputs, or a JSONL
output with ``<output>.shards/``) is shown whole: the shards' progress files summed, the worst
shard's state, and a line per shard.

A ``push`` of the output keeps a progress file of its own beside it (one per project and API,
``sidecars.push_file``): each is shown after the job, by the same rules (running, ended, or
killed: a ``running`` file whose process is gone).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from ..cost import cost_text
from ..errors import BatchClassifyError, UsageError
from ..exit_codes import ExitCode
from ..models import row_is_ok
from ..names import printable
from ..output.progressfile import TOOL, is_killed, read_progress, read_progress_file
from ..output.reading import check_output, iter_latest_rows, read_settings
from ..output.sidecars import PROGRESS, existing, find_shards, push_progress_files
from ..shards import Shard, layout_shard

KILLED = "not running (killed?) — rerun the same command to resume"
PUSH_KILLED = "not running (killed?) — rerun push to finish"


def register(commands: Any) -> None:
    """Add ``status`` to the CLI's subcommands."""
    parser = commands.add_parser(
        "status",
        help="show how a job is doing: running or not, counts, speed, ETA, rate limits, outages",
        description="Show the state of the job writing OUTPUT, from its OUTPUT.progress.json "
        "(kept current by the running job), or counts from OUTPUT itself for an output "
        "written before progress files existed. For the --output of a run --processes job, "
        "the whole job: its shards summed, the worst shard's state, a line per shard. Then "
        "each push of OUTPUT (running, ended or killed), from its own progress file. "
        "Read-only: never disturbs the job.",
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
    """The job's status as a dict: the progress file plus ``running`` and ``summary``; for a
    ``--processes`` job, the shards' summed (see ``job_status``); under ``pushes``, each push
    of the output that has a progress file (``push_statuses``)."""
    moment = now or time.time()
    found = _from_progress_file(output, moment)
    if found is None:
        shards = find_shards(output)
        found = job_status(output, shards, now=moment) if shards else _status_from_output(output)
    pushes = push_statuses(output, now=moment)
    if pushes:
        found["pushes"] = pushes
    return found


def push_statuses(output: Path, *, now: float | None = None) -> list[dict[str, Any]]:
    """Each push of ``output`` (any project, any API) as its progress file has it, with
    ``running`` and ``summary`` as a job's; a killed push says to rerun it."""
    found = []
    for path in push_progress_files(output):
        push = read_progress_file(path, command="push", now=now)
        if push is None:
            continue
        push["progress_file"] = str(path)
        push["summary"] = PUSH_KILLED if is_killed(push) else push.get("state")
        if is_killed(push):
            push["ledger_counts"] = _ledger_counts(push)
        found.append(push)
    return found


def _ledger_counts(push: dict[str, Any]) -> dict[str, int] | None:
    """A killed push's ledger, counted: its progress file stopped up to 2 s (and any number
    of answers) before the kill; the ledger has every answer but one per worker. Over every
    push of the output to that project (not only the last one's selection)."""
    from .push.ledger import Ledger  # only for a killed push

    path = Path(str(push.get("ledger")))
    if not path.is_file():
        return None  # moved away: the progress file's counts are all there is
    try:
        ledger = Ledger(
            path,
            project=str(push.get("project")),
            api_url=str(push.get("api_url")),
        ).read()
    except BatchClassifyError:
        return None  # unreadable, or another push's now
    entries = ledger.entries.values()
    return {
        "uploaded": sum(entry.image_id is not None for entry in entries),
        "annotated": sum(entry.annotated for entry in entries),
        "failed": sum(entry.failure is not None for entry in entries),
    }


def _from_progress_file(output: Path, now: float) -> dict[str, Any] | None:
    found = read_progress(output, now=now)
    if found is None:
        return None
    if is_killed(found):
        found["summary"] = KILLED
        if os.path.lexists(output):
            _count_from_output(found, output)
    elif found["running"] and (found.get("watching") or {}).get("following"):
        found["summary"] = "watching"  # past its first walk, following the folders (--watch)
    else:
        found["summary"] = found.get("state")
    return found


def _count_from_output(found: dict[str, Any], output: Path) -> None:
    """A killed job's counts, from its output: the progress file stopped up to 2 s (and any
    number of rows) before the kill, and counted only that run's rows."""
    ok, failed, errors = _output_counts(output)
    found.update(ok=ok, failed=failed, errors=dict(errors.most_common()), already_done=0)
    found["counts_from"] = "output"
    if "remaining" in found:
        total = found.get("total")
        whole = found.get("found_so_far") if total is None else total
        found["remaining"] = max((whole or 0) - ok - failed, 0)


def _output_counts(output: Path) -> tuple[int, int, Counter[str]]:
    """ok rows, failed rows and the failures by error type, from the latest row of each id."""
    ok = failed = 0
    errors: Counter[str] = Counter()
    for row in iter_latest_rows(output):  # UsageError if there is no such output
        if row_is_ok(row):
            ok += 1
        else:
            failed += 1
            errors[str(row.get("error_type"))] += 1
    return ok, failed, errors


def _status_from_output(output: Path) -> dict[str, Any]:
    """Counts from the rows, for an output without a progress file."""
    ok, failed, errors = _output_counts(output)
    settings = read_settings(output) or {}
    merged = settings.get("merged_from")
    lacking = settings.get("partial")
    if lacking:
        summary = f"a partial merge ({'; '.join(map(str, lacking))})"
    elif isinstance(merged, list):
        summary = f"a merged output (batchclassify merge of {_merged_from(merged)})"
    else:
        summary = "no progress file (written by an older version, or by a job that has not started)"
    return {
        "tool": TOOL,
        "state": "merged" if isinstance(merged, list) else None,
        "running": None if not isinstance(merged, list) else False,
        "summary": f"{summary}; counts are from the output",
        "partial": lacking or None,
        "output": str(output),
        "model": settings.get("model"),
        "ok": ok,
        "failed": failed,
        "errors": dict(errors.most_common()),
    }


def _merged_from(inputs: list[Any], shown: int = 3) -> str:
    names = ", ".join(str(name) for name in inputs[:shown])
    more = f" and {len(inputs) - shown} more" if len(inputs) > shown else ""
    return f"{len(inputs)} output{'s' if len(inputs) != 1 else ''}: {names}{more}"


# -- a --processes job: its shards summed -----------------------------------------------------

#: Which state of its shards a --processes job shows: the worst (a killed shard first).
_RANK = {"killed": 6, "stopped": 5, "interrupted": 4, "not started": 3, "running": 2}
_SUMMED = (
    "ok", "failed", "already_done", "retries", "cache_hits", "shared", "costed", "credits",
    "answered_429",
)  # fmt: skip


def job_status(output: Path, shards: list[Path], *, now: float | None = None) -> dict[str, Any]:
    """A ``--processes`` job as one: counts and speeds summed over the shards, the worst
    shard's state (``killed``, ``stopped: ...``, ``interrupted``, ``not started``,
    ``running``, ``finished``), and each shard's own status under ``shards``."""
    moment = now or time.time()
    parts = [_shard_status(path, moment) for path in shards]
    running = [part for part in parts if part["running"]]
    status: dict[str, Any] = {
        "tool": TOOL,
        "output": str(output),
        "processes": len(parts),
        "running": bool(running),
        **{name: sum(part.get(name) or 0 for part in parts) for name in _SUMMED},
    }
    with_file = [part for part in parts if part["state"] not in (None, "not started")]
    if with_file and len(with_file) == len(parts):
        totals = [part.get("total") for part in parts]
        status["total"] = None if None in totals else sum(totals)
        status["total_is_exact"] = all(part.get("total_is_exact") for part in parts)
        status["found_so_far"] = sum(part["found_so_far"] for part in parts)
        status["remaining"] = sum(part["remaining"] for part in parts)
    if with_file:
        status["elapsed_s"] = max(part.get("elapsed_s") or 0 for part in with_file)
    if running:
        _sum_speeds(status, running)
    errors: Counter[str] = Counter()
    for part in parts:
        errors.update(part.get("errors") or {})
    if errors:
        status["errors"] = dict(errors.most_common())
    status["state"], status["summary"] = _job_state(output, parts, shards)
    status["shards"] = parts
    return status


def _shard_status(path: Path, now: float) -> dict[str, Any]:
    shard, _ = layout_shard(path.name) or (Shard(0, 1), "")
    found = _from_progress_file(path, now)
    if found is None and path.exists():
        found = _status_from_output(path)
    if found is None:
        found = {"state": "not started", "running": False, "ok": 0, "failed": 0}
    found["shard"] = str(shard)
    found["shard_output"] = str(path)
    return found


def _sum_speeds(status: dict[str, Any], running: list[dict[str, Any]]) -> None:
    """Speeds of the shards still running, summed, and when the last of them ends."""
    for name in ("images_per_s", "requests_per_s"):
        rates = [part[name] for part in running if part.get(name) is not None]
        status[name] = round(sum(rates), 2) if rates else None
    limits = [part.get("rate_limit_per_s") for part in running]
    known = [limit for limit in limits if limit is not None]
    status["rate_limit_per_s"] = round(sum(known), 2) if len(known) == len(limits) else None
    status["paused_for_s"] = max(part.get("paused_for_s") or 0 for part in running)
    down = [part for part in running if part.get("outage")]
    status["outage"] = bool(down)
    status["outage_error"] = down[0].get("outage_error") if down else None
    # The job ends with its slowest shard (a killed shard's rest waits for the rerun).
    etas = [part["eta_s"] for part in running if part.get("eta_s") is not None]
    if etas and len(etas) == len(running):
        status["eta_s"] = max(etas)
        status["eta_is_lower_bound"] = any(part.get("eta_is_lower_bound") for part in running)


def _condition(part: dict[str, Any]) -> str:
    state = part.get("state")
    if state == "running" and not part["running"]:
        return "killed"
    if isinstance(state, str) and state.startswith("stopped"):
        return "stopped"
    return state if isinstance(state, str) else "unknown"


def _job_state(output: Path, parts: list[dict[str, Any]], shards: list[Path]) -> tuple[str, str]:
    """The job's state (its worst shard's) and a sentence saying it."""
    conditions = [_condition(part) for part in parts]
    alive = sum(bool(part["running"]) for part in parts)
    if alive and "not started" in conditions:  # its process is starting: not a failure
        conditions = ["running" if c == "not started" else c for c in conditions]
    worst = max(conditions, key=lambda c: _RANK.get(c, 0))
    names = [part["shard"] for part, c in zip(parts, conditions, strict=True) if c == worst]
    which = f"shard{'s' if len(names) > 1 else ''} {', '.join(names)}"
    of = f"{len(parts)} processes"
    rerun = "rerun the same command to resume"
    if worst == "killed":
        if alive:
            return "killed", (
                f"{which} not running (killed?); {alive} of {of} still running — when they "
                f"end, {rerun}"
            )
        return "killed", f"{which} not running (killed?) — {rerun}"
    if worst == "stopped":
        first = parts[conditions.index("stopped")]
        return str(first["state"]), f"{which} {first['state']}"
    if worst in ("interrupted", "not started"):
        return worst, f"{which} {worst} — {rerun}"
    if worst == "running":
        return "running", f"running ({alive} of {of})"
    if worst == "finished":
        return "finished", f"finished ({of}){_merged(output, shards)}"
    return "unknown", (
        f"no progress files ({of}; written by an older version, or by jobs that have not "
        "started); counts are from the shard outputs"
    )


def _merged(output: Path, shards: list[Path]) -> str:
    """For JSONL shards: whether ``output`` holds their merge yet."""
    if not shards or shards[0].suffix != ".jsonl":
        return ""
    if "merged_from" in (read_settings(output) or {}):
        return f", merged into {output}"
    return f"; not merged into {output} yet: rerun the same command to merge"


def format_status(status: dict[str, Any]) -> str:
    """The status for a person: a few lines."""
    lines = [f"{status['output']}: {status['summary']}"]
    if status.get("pid") is not None:
        lines.append(
            f"  process {status['pid']} on {status['host']}, started {status['started']}, "
            f"updated {status['updated']}"
        )
    done = f"  {status['ok']:,} ok, {status['failed']:,} failed"
    if status.get("counts_from") == "output":
        done += " (the output's rows)"
    if status.get("already_done"):
        done += f" (+{status['already_done']:,} done by earlier runs)"
    if "remaining" in status:
        total = status.get("total")
        so_far = status["found_so_far"]
        found = f"of {total:,}" if total is not None else f"of {so_far:,} found so far"
        done += f", {status['remaining']:,} remaining {found}"
    lines.append(done)
    if any(status.get(name) for name in ("cache_hits", "shared", "costed", "uncosted")):
        lines.append("  " + _saving(status))
    if status.get("errors"):
        lines.append("  errors: " + ", ".join(f"{k} {v:,}" for k, v in status["errors"].items()))
    if status.get("running"):
        lines.append("  " + _speed(status))
    elif status.get("elapsed_s") is not None:
        lines.append(f"  ran for {_duration(status['elapsed_s'])}")
    if status.get("running") and status.get("watching"):
        lines.append("  " + _watching(status["watching"]))
    if status.get("outage"):
        lines.append(f"  API unavailable: {status.get('outage_error')} (waiting, probing)")
    if status.get("servers"):
        from ..api.fleet import (
            server_lines,  # and with it aiohttp: only for a job of several servers
        )

        lines.append(f"  servers ({len(status['servers'])}):")
        lines.extend("  " + line for line in server_lines(status["servers"]))
    if status.get("note") and status.get("running"):
        lines.append(f"  {status['note']}")
    if status.get("shards") and status.get("state") != "finished":
        lines.extend(_shard_line(part) for part in status["shards"])
    for push in status.get("pushes") or ():
        lines.extend(_push_lines(push))
    return "\n".join(lines)


def _push_lines(push: dict[str, Any]) -> list[str]:
    """A push of the output, in a few lines: its state, process, counts, speed or length."""
    lines = [
        f"push to project {push.get('project')} at {push.get('api_url')}: {push['summary']}",
        f"  process {push.get('pid')} on {push.get('host')}, started {push.get('started')}, "
        f"updated {push.get('updated')}",
    ]
    done = (
        f"  {push.get('selected', 0):,} selected: {push.get('pushed', 0):,} pushed "
        f"({push.get('uploaded', 0):,} uploaded, {push.get('annotated', 0):,} predictions "
        f"saved), {push.get('failed', 0):,} failed"
    )
    if push.get("already_done"):
        done += f", {push['already_done']:,} done by an earlier push (ledger)"
    done += f", {push.get('remaining', 0):,} remaining"
    if is_killed(push):
        done += " (as of its last update)"
    lines.append(done)
    if push.get("ledger_counts"):
        counted = push["ledger_counts"]
        lines.append(
            f"  its ledger: {counted['uploaded']:,} uploaded, {counted['annotated']:,} "
            f"annotated, {counted['failed']:,} failed (every push to this project)"
        )
    again = [
        f"{push[name]:,} {said}"
        for name, said in (
            ("duplicates", "already in the project (duplicate)"),
            ("already_annotated", "already annotated"),
            ("unlabelled", "with no class (uploaded, not annotated)"),
        )
        if push.get(name)
    ]
    if again:
        lines.append("  " + ", ".join(again))
    if push.get("errors"):
        lines.append("  errors: " + ", ".join(f"{k} {v:,}" for k, v in push["errors"].items()))
    if push.get("running"):
        lines.append("  " + _speed(push))
        flying = push.get("in_flight") or {}
        lines.append(
            f"  {push.get('stage')}: {flying.get('upload', 0):,} uploads and "
            f"{flying.get('annotate', 0):,} annotations in flight"
        )
        if push.get("outage"):
            lines.append(f"  API unavailable: {push.get('outage_error')} (waiting, probing)")
        if push.get("note"):
            lines.append(f"  {push['note']}")
    elif push.get("elapsed_s") is not None:
        lines.append(f"  ran for {_duration(push['elapsed_s'])}")
    return lines


def _shard_line(part: dict[str, Any]) -> str:
    """One shard of a --processes job, in a line."""
    condition = _condition(part)
    said = {"killed": "not running (killed?)", "unknown": "no progress file"}
    text = f"  shard {part['shard']}: {said.get(condition, part['state'])}"
    if condition != "not started":
        text += f", {part['ok']:,} ok, {part['failed']:,} failed"
    if part.get("remaining") is not None:
        text += f", {part['remaining']:,} remaining"
    if part["running"] and part.get("images_per_s") is not None:
        text += f", {part['images_per_s']:,.1f} images/s"
    if part.get("pid") is not None:
        text += f" (process {part['pid']})"
    return text


def _watching(facts: dict[str, Any]) -> str:
    """``--watch``: how new files are noticed, the backlog, arrival-to-row latency."""
    text = f"watching ({facts.get('how')})" if facts.get("following") else "first walk"
    text += (
        f"; backlog: {facts.get('settling', 0):,} settling, "
        f"{facts.get('queued', 0):,} sent without a row yet"
    )
    if facts.get("latency_p50_s") is not None:
        text += (
            f"; arrival to row: median {facts['latency_p50_s']:g} s, "
            f"p95 {facts['latency_p95_s']:g} s (last {facts.get('latency_samples', 0):,} files)"
        )
    return text


def _saving(status: dict[str, Any]) -> str:
    """Requests the cache and shared requests saved, and what the server said it cost."""
    hits, shared = status.get("cache_hits", 0), status.get("shared", 0)
    text = f"requests saved: {hits + shared:,} ({hits:,} from the cache, {shared:,} shared)"
    said = cost_text(
        credits=status.get("credits") or 0.0,
        costed=status.get("costed") or 0,
        uncosted=status.get("uncosted") or 0,
        billing=status.get("billing"),
        max_credits=status.get("max_credits"),
        spent=status.get("credits_spent"),
    )
    return "; ".join([text, *said])


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
    exists = args.output.exists() or existing(args.output, PROGRESS).exists()
    if not exists and not find_shards(args.output):
        raise UsageError(f"{args.output}: no such output and no progress file beside it")
    if args.output.exists():
        check_output(args.output)  # what it is, if not an output (it would read as 0 rows)
    try:
        while True:
            status = read_status(args.output)
            _show(status, as_json=args.json, clear=args.watch and sys.stdout.isatty())
            pushing = any(push["running"] for push in status.get("pushes") or ())
            if not args.watch or not (status.get("running") or pushing):
                return ExitCode.OK
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return ExitCode.OK


def _show(status: dict[str, Any], *, as_json: bool, clear: bool) -> None:
    if as_json:
        sys.stdout.write(orjson.dumps(status).decode() + "\n")
    else:
        text = printable(format_status(status), keep_lines=True)
        sys.stdout.write(("\x1b[H\x1b[2J" if clear else "") + text + "\n")
    sys.stdout.flush()
