"""``run --processes P``: one job as P local processes, each one shard (``--shard i/P``).

The parent builds each shard's ``JobConfig`` (its output inside one folder, its share of
``--rate-limit``) and starts ``python -m batchclassify.commands.processes`` children, each in
its own session (so a terminal's Ctrl-C reaches the parent only, which forwards it once: a child
stops gently on the first signal and at once on the second, as a lone job does; a SIGHUP, a
closed terminal, is forwarded as SIGTERM). A child reads its pickled config on stdin (the API
key never appears on a command line) and keeps stdin open: when the parent dies, even by
``kill -9``, the pipe reaches end-of-file and the child stops gently (``job/running.py``),
writing its rows. It leaves its ``JobSummary`` in a file. The parent shows one progress
display (``ProgressBar``) from the children's ``<output>.progress.json`` files, prints one
summary (their sum, naming any shard that died without one) and exits with the worst child's
code (``ExitCode.worst``). For JSONL the shard files are merged into ``--output`` when every
child finished. A rerun while an earlier run's children still hold their outputs is refused
once, before anything starts.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from types import FrameType

import orjson

from ..config import JobConfig
from ..errors import BatchClassifyError, OutputError, UsageError
from ..exit_codes import ExitCode
from ..inputs.sources import STDIN
from ..names import printable
from ..output.outputs import lock_holder
from ..output.progressfile import progress_path
from ..output.reading import read_settings
from ..shards import PLACEHOLDER, Shard, layout_folder, layout_name, layout_shard, shard_output
from ..summary import JobSummary, Progress, ProgressListener
from .progress import ProgressBar
from .progresscalls import Tee

_POLL = 0.5


@dataclass(frozen=True)
class Layout:
    """Where the shards write: their outputs, and the merged output (JSONL) if any."""

    folder: Path
    outputs: tuple[Path, ...]
    merged: Path | None


def plan_layout(config: JobConfig, processes: int) -> Layout:
    """The shards' outputs: ``--output`` with ``{shard}``, else one folder of shard outputs.

    Parquet: ``--output`` is that folder (``results.parquet/shard-0-of-2.parquet/`` ...), one
    dataset. JSONL: the shards go to ``<output>.shards/`` and are merged into ``--output``.
    """
    shards = [Shard(i, processes) for i in range(processes)]
    output = config.output
    if PLACEHOLDER in str(output):
        outputs = tuple(shard_output(output, shard) for shard in shards)
        return Layout(outputs[0].parent, outputs, None)
    suffix = ".parquet" if config.format == "parquet" else ".jsonl"
    folder = layout_folder(output, config.format)
    if config.format == "parquet":
        merged = None
        if read_settings(output) is not None:
            raise OutputError(
                f"{output} is the output of a job run without --processes; give --processes "
                "another --output (or name shard outputs with {shard})"
            )
    else:
        merged = output
    names = (folder / layout_name(s, suffix) for s in shards)
    return Layout(folder, tuple(names), merged)


def shard_configs(config: JobConfig, layout: Layout) -> list[JobConfig]:
    """One config per shard: its shard, output and share of ``--rate-limit``."""
    count = len(layout.outputs)
    rate = config.rate
    if rate.requests_per_second is not None:
        rate = replace(rate, requests_per_second=rate.requests_per_second / count)
    # --max-credits too: each shard may spend its share, so the job as a whole cannot pass it.
    cap = None if config.max_credits is None else config.max_credits / count
    return [
        replace(config, shard=Shard(i, count), output=out, rate=rate, max_credits=cap)
        for i, out in enumerate(layout.outputs)
    ]


def run_processes(
    config: JobConfig,
    processes: int,
    *,
    quiet: bool,
    on_end: Callable[[JobSummary, int], None] | None = None,
    listener: ProgressListener | None = None,
) -> int:
    """Run the job as ``processes`` shard children; returns the exit code. ``on_end`` hears
    the combined summary and the exit code (``--notify``); ``listener`` the summed progress
    the display is shown (``--notify-every``)."""
    if STDIN in config.sources:
        raise UsageError(
            "--processes cannot share stdin (-) among its processes: save the list to a "
            "file and name it as a manifest"
        )
    layout = plan_layout(config, processes)
    _refuse_if_running(layout)
    layout.folder.mkdir(parents=True, exist_ok=True)
    configs = shard_configs(config, layout)
    received: list[int] = []
    with tempfile.TemporaryDirectory(prefix="batchclassify-processes-") as scratch:
        children = [_start(cfg, Path(scratch) / f"summary-{i}") for i, cfg in enumerate(configs)]

        def forward(signum: int, frame: FrameType | None) -> None:
            received.append(signum)
            # A closed terminal: the children (in sessions of their own) stop as on SIGTERM.
            sent = signal.SIGTERM if signum == _SIGHUP else signum
            for child in children:
                if child.process.poll() is None:
                    child.process.send_signal(sent)

        handled = [signal.SIGINT, signal.SIGTERM] + ([_SIGHUP] if _SIGHUP is not None else [])
        previous = {s: signal.signal(s, forward) for s in handled}
        bar = ProgressBar(enabled=False if quiet else None)
        progress: ProgressListener = bar if listener is None else Tee(bar, listener)
        try:
            _watch(children, layout, progress, hung_up=lambda: _SIGHUP in received)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for child in children:
                child.let_go()
        codes = [child.process.wait() for child in children]
        summaries = [_load(child.summary_path) for child in children]
    summary = combine([s for s in summaries if s is not None], config.output)
    unfinished = [
        _unfinished(child.shard, code)
        for child, code, found in zip(children, codes, summaries, strict=True)
        if found is None
    ]
    if unfinished:
        said = "; ".join([*unfinished, *([summary.fatal] if summary.fatal else [])])
        kept = "the rows written so far are kept; rerun the same command to finish"
        summary.fatal = f"{said} — {kept}"
    code = ExitCode.worst(codes)
    if layout.merged is not None and code <= ExitCode.FAILED_ITEMS and not received:
        from .merge import merge_outputs

        merge_outputs(layout.outputs, layout.merged, output_format=config.format)
        summary.notes.append(f"shard outputs in {layout.folder}, merged into {layout.merged}")
    from ..api.redaction import redact

    if not quiet and len(unfinished) < len(children):  # no summary of jobs that never ran
        from .progress import format_summary

        _say(redact(format_summary(summary), config.http.api_key))
    elif quiet and unfinished:  # --quiet hides the summary, never a shard that died
        _say(f"batchclassify: stopped: {redact(summary.fatal or '', config.http.api_key)}")
    if received and summary.fatal is None:
        code = ExitCode.for_signal(received[0])
    if on_end is not None:
        on_end(summary, code)
    return code


_SIGHUP: int | None = getattr(signal, "SIGHUP", None)  # not on Windows


@dataclass
class _Child:
    """A shard's process, the file its summary goes to, and the pipe whose end it watches."""

    shard: Shard
    process: subprocess.Popen[bytes]
    summary_path: Path

    def let_go(self) -> None:
        """Close our end of its pipe (if it still runs, it stops as on SIGTERM)."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()


def _refuse_if_running(layout: Layout) -> None:
    """Say once, before anything starts, that shards are still being written: by an earlier
    run's processes that have not stopped yet (or another job on the same outputs)."""
    held = []
    for output in layout.outputs:
        holder = lock_holder(output)
        if holder is not None:
            found = layout_shard(output.name)
            held.append(f"{output.name if found is None else f'shard {found[0]}'} ({holder})")
    if held:
        raise OutputError(
            f"this job is still running: {', '.join(held)} still being written by an earlier "
            "run's processes; wait for them to end (or stop them), then rerun the same command"
        )


def _unfinished(shard: Shard, code: int) -> str:
    """A shard that left no summary: killed, or stopped by an error it printed."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"shard {shard} was killed by {name} before it finished"
    return f"shard {shard} ended with exit {code} before it finished (its error is above)"


def _say(text: str) -> None:
    """A line for the person at the terminal, which may be gone (SIGHUP): then, nothing.
    Control characters in it (a file or class name's) are escaped (``printable``)."""
    with contextlib.suppress(OSError):
        print(printable(text, keep_lines=True), file=sys.stderr, flush=True)


def _start(config: JobConfig, summary_path: Path) -> _Child:
    # The children import this very batchclassify, installed or not.
    package_root = str(Path(__file__).resolve().parent.parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    child = subprocess.Popen(
        [sys.executable, "-m", "batchclassify.commands.processes"],
        env=env,
        stdin=subprocess.PIPE,
        start_new_session=True,  # Ctrl-C reaches the parent only; it forwards it once
    )
    assert child.stdin is not None and config.shard is not None
    payload = pickle.dumps((config, str(summary_path)))
    # Length first: the child reads the config, then watches the pipe for our end closing.
    with contextlib.suppress(BrokenPipeError):  # it died at once: its exit code says so
        child.stdin.write(len(payload).to_bytes(8, "big") + payload)
        child.stdin.flush()
    return _Child(config.shard, child, summary_path)


def _watch(
    children: list[_Child],
    layout: Layout,
    progress: ProgressListener,
    *,
    hung_up: Callable[[], bool],
) -> None:
    """Wait for the children, showing their progress files summed (a bar on a terminal, a
    log line a minute off one, as a lone job shows its own); nothing once the terminal is
    gone."""
    last = _progress(layout)
    with contextlib.suppress(OSError):  # a display that cannot draw stops no job
        progress.progress(last)
    try:
        while any(child.process.poll() is None for child in children):
            time.sleep(_POLL)
            if hung_up():
                continue
            last = _progress(layout)
            with contextlib.suppress(OSError):
                progress.progress(last)
    finally:
        with contextlib.suppress(OSError):
            progress.progress(replace(last, finished=True))


def _progress(layout: Layout) -> Progress:
    """The shards' progress files summed: items done by earlier runs, ok, failed and retried
    in this one, and expected in all (``None`` until every shard knows its own)."""
    already_done = ok = failed = retries = found = 0
    total: int | None = 0
    exact = True
    for output in layout.outputs:
        try:
            state = orjson.loads(progress_path(output).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            total, exact = None, False
            continue
        already_done += int(state.get("already_done") or 0)
        ok += int(state.get("ok") or 0)
        failed += int(state.get("failed") or 0)
        retries += int(state.get("retries") or 0)
        found += int(state.get("found_so_far") or 0)
        exact = exact and bool(state.get("total_is_exact"))
        shard_total = state.get("total")
        total = None if total is None or shard_total is None else total + int(shard_total)
    if total is not None:
        total = max(total, already_done + ok + failed)
    return Progress(
        already_done=already_done,
        ok=ok,
        failed=failed,
        retries=retries,
        total=total,
        total_is_exact=exact,
        found=found,
        waiting=None,
    )


def _load(path: Path) -> JobSummary | None:
    try:
        summary = pickle.loads(path.read_bytes())
    except (OSError, pickle.UnpicklingError, EOFError):
        return None
    return summary if isinstance(summary, JobSummary) else None


_SUMMED = (
    "ok", "failed", "already_done", "previously_failed", "duplicates", "retries", "hedged",
    "rate_limited", "found", "cache_hits", "shared", "costed", "uncosted",
)  # fmt: skip


def combine(summaries: list[JobSummary], output: Path) -> JobSummary:
    """One summary for the whole job: counts summed, the longest elapsed time, the first fatal
    error, notes once each. The inputs' skipped names are the same walk's in every child."""
    total = JobSummary(output=output)
    for summary in summaries:
        for name in _SUMMED:
            setattr(total, name, getattr(total, name) + getattr(summary, name))
        total.credits += summary.credits
        total.billing = total.billing or summary.billing
        if summary.max_credits is not None:  # each shard's share, summed: the job's cap
            total.max_credits = (total.max_credits or 0.0) + summary.max_credits
            total.budget_spent = (total.budget_spent or 0.0) + (summary.budget_spent or 0.0)
        total.elapsed = max(total.elapsed, summary.elapsed)
        total.interrupted = total.interrupted or summary.interrupted
        total.started_over = total.started_over or summary.started_over
        total.fatal = total.fatal or summary.fatal
        total.notes.extend(note for note in summary.notes if note not in total.notes)
        total.errors += Counter(summary.errors)
        for key, lines in summary.error_lines.items():
            total.error_lines.setdefault(key, []).extend(lines)
    if summaries:
        total.inputs = summaries[0].inputs
        total.nothing_found = all(summary.nothing_found for summary in summaries)
    return total


def _child() -> int:
    """A shard child: the config on stdin, the summary into the file it names. Stdin stays
    open: its end-of-file means the parent is gone, and the job stops gently."""
    import anyio

    from ..api.redaction import redact
    from ..job.gctuning import prepare_job_process
    from ..job.runner import Job
    from ..job.running import loop_options, run_until_signalled
    from ..summary import SilentProgress

    parent = os.getppid()
    size = int.from_bytes(_read_exactly(0, 8), "big")
    config, summary_path = pickle.loads(_read_exactly(0, size))
    assert isinstance(config, JobConfig)
    prepare_job_process()  # this process runs one job
    job = Job(config, progress=SilentProgress())
    try:
        summary, signum = anyio.run(
            partial(run_until_signalled, job, parent_pipe=0), backend_options=loop_options()
        )
    except BatchClassifyError as error:
        message = redact(str(error), config.http.api_key)
        _say(f"batchclassify: error: shard {config.shard}: {message}")
        return ExitCode.for_error(error)
    if os.getppid() != parent:  # orphaned: nobody reads the summary, the folder is the parent's
        with contextlib.suppress(OSError):
            os.rmdir(Path(summary_path).parent)  # only once empty: the last child out
        return summary.exit_code
    Path(summary_path).write_bytes(pickle.dumps(summary))
    if summary.fatal is not None:
        message = redact(summary.fatal, config.http.api_key)
        _say(f"batchclassify: shard {config.shard} stopped: {message}")
    if signum is not None and summary.fatal is None:
        return ExitCode.for_signal(signum)
    return summary.exit_code


def _read_exactly(fd: int, size: int) -> bytes:
    chunks = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            raise SystemExit("batchclassify: the parent process went away before the job began")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


if __name__ == "__main__":
    sys.exit(_child())
