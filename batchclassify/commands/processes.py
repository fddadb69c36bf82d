"""``run --processes P``: one job as P local processes, each one shard (``--shard i/P``).

The parent builds each shard's ``JobConfig`` (its output inside one folder, its share of
``--rate-limit``) and starts ``python -m batchclassify.commands.processes`` children, each in
its own session (so a terminal's Ctrl-C reaches the parent only, which forwards it once: a child
stops gently on the first signal and at once on the second, as a lone job does). A child
reads its pickled config on stdin (the API key never appears on a command line) and leaves
its ``JobSummary`` in a file. The parent shows one progress line from the children's
``<output>.progress.json`` files, prints one summary (their sum) and exits with the worst
child's code. For JSONL the shard files are merged into ``--output`` when every child finished.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType

import orjson

from ..config import JobConfig
from ..errors import BatchClassifyError, OutputError, OutputWriteError, UsageError
from ..inputs.sources import STDIN
from ..names import printable
from ..output.progressfile import progress_path
from ..output.reading import read_settings
from ..shards import PLACEHOLDER, Shard, layout_folder, layout_name, shard_output
from ..summary import JobSummary

#: Exit codes from the mildest to the worst; the parent's is the worst of its children's.
_SEVERITY = {0: 0, 1: 1, 130: 2, 143: 2, 2: 3, 3: 4}
_POLL = 0.5
_LOG_EVERY = 60.0


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
    return [
        replace(config, shard=Shard(i, count), output=out, rate=rate)
        for i, out in enumerate(layout.outputs)
    ]


def run_processes(config: JobConfig, processes: int, *, quiet: bool) -> int:
    """Run the job as ``processes`` shard children; returns the exit code."""
    if STDIN in config.sources:
        raise UsageError(
            "--processes cannot share stdin (-) among its processes: save the list to a "
            "file and name it as a manifest"
        )
    layout = plan_layout(config, processes)
    layout.folder.mkdir(parents=True, exist_ok=True)
    configs = shard_configs(config, layout)
    received: list[int] = []
    with tempfile.TemporaryDirectory(prefix="batchclassify-processes-") as scratch:
        children = [_start(cfg, Path(scratch) / f"summary-{i}") for i, cfg in enumerate(configs)]

        def forward(signum: int, frame: FrameType | None) -> None:
            received.append(signum)
            for child, _ in children:
                if child.poll() is None:
                    child.send_signal(signum)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            _watch(children, layout, quiet=quiet)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        codes = [child.wait() for child, _ in children]
        summaries = [_load(path) for _, path in children]
    summary = combine([s for s in summaries if s is not None], config.output)
    code = worst(codes)
    if layout.merged is not None and code in (0, 1) and not received:
        from .merge import merge_outputs

        merge_outputs(layout.outputs, layout.merged, output_format=config.format)
        summary.notes.append(f"shard outputs in {layout.folder}, merged into {layout.merged}")
    if not quiet and summaries:
        from ..api.redaction import redact
        from .progress import format_summary

        text = redact(format_summary(summary), config.http.api_key)
        print(printable(text, keep_lines=True), file=sys.stderr)
    if received and summary.fatal is None:
        return 128 + received[0]
    return code


def _start(config: JobConfig, summary_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    # The children import this very batchclassify, installed or not.
    package_root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    child = subprocess.Popen(
        [sys.executable, "-m", "batchclassify.commands.processes"],
        env=env,
        stdin=subprocess.PIPE,
        start_new_session=True,  # Ctrl-C reaches the parent only; it forwards it once
    )
    assert child.stdin is not None
    child.stdin.write(pickle.dumps((config, str(summary_path))))
    child.stdin.close()
    return child, summary_path


def _watch(
    children: list[tuple[subprocess.Popen[bytes], Path]], layout: Layout, *, quiet: bool
) -> None:
    """Wait for the children, showing one progress bar made of their progress files (off a
    terminal: a log line a minute, as a lone job writes)."""
    from tqdm import tqdm

    on_terminal = not quiet and sys.stderr.isatty()
    bar = tqdm(unit="img", dynamic_ncols=True, file=sys.stderr) if on_terminal else None
    last_line = time.monotonic()
    try:
        while any(child.poll() is None for child, _ in children):
            time.sleep(_POLL)
            done, total, exact = _progress(layout)
            if bar is not None:
                bar.total = total or None
                bar.n = done
                bar.set_postfix_str("" if exact else "total estimated", refresh=False)
                bar.refresh()
            elif not quiet and time.monotonic() - last_line >= _LOG_EVERY:
                last_line = time.monotonic()
                said = f"{total:,}" if exact else f"~{total:,}" if total else "?"
                stamp = time.strftime("%H:%M:%S")
                print(f"{stamp} {done:,}/{said} images", file=sys.stderr, flush=True)
    finally:
        if bar is not None:
            bar.close()


def _progress(layout: Layout) -> tuple[int, int, bool]:
    """Items done, expected in all, and whether that total is exact, over every shard."""
    done, total, exact = 0, 0, True
    for output in layout.outputs:
        try:
            state = orjson.loads(progress_path(output).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            exact = False
            continue
        done += int(state.get("already_done") or 0) + state.get("ok", 0) + state.get("failed", 0)
        if state.get("total") is None:
            exact = False
        else:
            total += int(state["total"])
        exact = exact and bool(state.get("total_is_exact"))
    return done, total, exact


def _load(path: Path) -> JobSummary | None:
    try:
        summary = pickle.loads(path.read_bytes())
    except (OSError, pickle.UnpicklingError, EOFError):
        return None
    return summary if isinstance(summary, JobSummary) else None


def worst(codes: list[int]) -> int:
    """The worst exit code (an unknown one, e.g. a child killed, counts as fatal: 3)."""
    code = max(codes, key=lambda code: _SEVERITY.get(code, 5), default=0)
    return code if code in _SEVERITY else 3


_SUMMED = (
    "ok", "failed", "already_done", "previously_failed", "duplicates", "retries", "hedged",
    "rate_limited", "found", "cache_hits", "shared", "costed",
)  # fmt: skip


def combine(summaries: list[JobSummary], output: Path) -> JobSummary:
    """One summary for the whole job: counts summed, the longest elapsed time, the first fatal
    error, notes once each. The inputs' skipped names are the same walk's in every child."""
    total = JobSummary(output=output)
    for summary in summaries:
        for name in _SUMMED:
            setattr(total, name, getattr(total, name) + getattr(summary, name))
        total.credits += summary.credits
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
    """A shard child: the config on stdin, the summary into the file it names."""
    import anyio

    from ..api.redaction import redact
    from ..job.gctuning import prepare_job_process
    from ..job.runner import Job
    from ..summary import SilentProgress
    from .cli import _run

    config, summary_path = pickle.loads(sys.stdin.buffer.read())
    assert isinstance(config, JobConfig)
    prepare_job_process()  # this process runs one job
    try:
        summary, signum = anyio.run(_run, Job(config, progress=SilentProgress()))
    except BatchClassifyError as error:
        message = redact(str(error), config.http.api_key)
        print(printable(f"batchclassify: error: shard {config.shard}: {message}"), file=sys.stderr)
        fatal = isinstance(error, OutputWriteError) or not isinstance(
            error, UsageError | OutputError
        )
        return 3 if fatal else 2
    Path(summary_path).write_bytes(pickle.dumps(summary))
    if summary.fatal is not None:
        message = redact(summary.fatal, config.http.api_key)
        print(printable(f"batchclassify: shard {config.shard} stopped: {message}"), file=sys.stderr)
    if signum is not None and summary.fatal is None:
        return 128 + signum
    return summary.exit_code


if __name__ == "__main__":
    sys.exit(_child())
