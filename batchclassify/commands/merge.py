"""``batchclassify merge``: combine shard outputs (JSONL or Parquet, mixed) into one output.

The inputs must be batchclassify outputs of one job: the same model, confidence, max size
and id scheme (their ``<output>.job.json``). Every row is written, in the order of the inputs,
into a temporary output beside the target through the job's own sink, which then compacts it
(one row per id: the latest, i.e. the one from the input named last); the temporary output
is renamed into place, so a reader never sees half a merge. The target is written only if it
does not exist, is empty, or is itself an earlier merge (``"merged_from"`` in its settings):
merge never replaces what it did not write. Its settings file lets ``report``, ``export``,
``status`` and ``run`` (resume) treat the merged output as any other.

A row is taken as it is, never turned into another: an input row that contradicts itself
(``ok`` without an answer, as an older batchclassify wrote from a failed image's cache entry)
is refused by the sink, and the merge with it, naming the input to repair.

Before writing, merge checks what it is given as a whole (``check_inputs``): each shard's
``I/N`` comes from its settings, and a shard missing from its split, shards of different
splits, an input whose job is still running (its lock is held), one whose job did not finish
(killed, interrupted, stopped) or a partial merge are refused, unless ``partial``: the merged
output's settings then record what it lacks (``"partial"``), and ``status`` and ``report`` say
so. An input named twice (or a shard given twice) is always refused.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from ..config import OUTPUT_SUFFIXES, OutputFormat
from ..errors import OutputError, UsageError
from ..exit_codes import ExitCode
from ..models import ContradictoryRowError
from ..names import printable
from ..output.outputs import foreign_files, is_empty, lock_holder, written_by_batchclassify
from ..output.reading import iter_rows, output_kind, read_job_settings, read_settings
from ..output.resume import write_settings
from ..output.sidecars import PROGRESS, existing, find_shards, settings_path
from ..output.sinks import open_sink
from ..shards import Shard, parse_shard

#: Settings the inputs must share: they change what a row means.
MERGE_KEYS = ("model", "confidence", "max_size", "id_scheme")


def merge_outputs(
    inputs: Sequence[Path],
    output: Path,
    *,
    output_format: OutputFormat | None = None,
    partial: bool = False,
) -> tuple[int, list[str]]:
    """Merge ``inputs`` into ``output``; returns the number of rows it holds (one per id) and
    what it lacks (empty unless ``partial`` let an incomplete set of inputs through)."""
    if not inputs:
        raise UsageError("merge: name at least one output to merge")
    fmt = output_format or OUTPUT_SUFFIXES.get(output.suffix.lower())
    if fmt is None:
        raise UsageError(f"--output {output}: name a .jsonl or .parquet output, or pass --format")
    settings = _common_settings(inputs)
    lacking = check_inputs(inputs, partial=partial)
    _check_target(output, inputs, fmt)
    rows = _write_merged(inputs, output, fmt)
    merged = dict(settings, format=fmt, shard=None, merged_from=[str(p) for p in inputs])
    if lacking:
        merged["partial"] = lacking
    write_settings(settings_path(output), merged)
    return rows, lacking


def check_inputs(inputs: Sequence[Path], *, partial: bool = False) -> list[str]:
    """What the inputs lack as one job's output: shards missing, of another split, still
    running or unfinished. Refused (``UsageError``) unless ``partial``; returned then. An input
    or shard given twice is refused either way."""
    _refuse_repeats(inputs)
    parts = [part for path in inputs for part in _parts(path)]
    splits: dict[int, dict[int, Path]] = {}
    for part, shard in parts:
        if shard is None:
            continue
        taken = splits.setdefault(shard.count, {})
        if shard.index in taken:
            raise UsageError(
                f"merge: shard {shard} is named twice ({taken[shard.index]} and {part}); "
                "name each shard once"
            )
        taken[shard.index] = part
    lacking = []
    if len(splits) > 1:
        said = ", ".join(f"{len(found)} of {count}" for count, found in sorted(splits.items()))
        lacking.append(f"shards of different splits ({said}): merge the shards of one N")
    for count, found in sorted(splits.items()):
        absent = [f"{index}/{count}" for index in range(count) if index not in found]
        if absent:
            lacking.append(f"shard{'s' if len(absent) > 1 else ''} {', '.join(absent)} missing")
    lacking.extend(problem for part, _ in parts if (problem := _unfinished(part)) is not None)
    if lacking and not partial:
        raise UsageError(
            f"merge: {'; '.join(lacking)} — finish the job first (rerun it), or pass --partial "
            "to merge what there is"
        )
    return lacking


def _refuse_repeats(inputs: Sequence[Path]) -> None:
    seen: dict[str, Path] = {}
    for path in inputs:
        real = os.path.realpath(path)
        if real in seen:
            same = "" if str(seen[real]) == str(path) else f" (as {seen[real]})"
            raise UsageError(f"merge: {path} is named twice{same}; name each output once")
        seen[real] = path


def _parts(path: Path) -> list[tuple[Path, Shard | None]]:
    """The outputs an input stands for, each with its shard (from its settings): itself, or
    for the folder of a ``run --processes`` Parquet job, its shards (started or not)."""
    settings = read_settings(path)
    if settings is None and path.is_dir():
        shards = find_shards(path)
        if shards:
            return [(shard, _shard(shard)) for shard in shards if shard.is_dir()]
    return [(path, _shard(path))]


def _shard(output: Path) -> Shard | None:
    text = (read_settings(output) or {}).get("shard")
    return parse_shard(text) if isinstance(text, str) else None


def _unfinished(output: Path) -> str | None:
    """Why ``output`` is not a finished job's output yet, or ``None`` (as far as its files
    tell: an output of a version without progress files passes)."""
    holder = lock_holder(output)
    if holder is not None:
        return f"{output} is still being written (its job, {holder}, is running)"
    lacking = (read_settings(output) or {}).get("partial")
    if lacking:
        return f"{output} is a partial merge ({'; '.join(map(str, lacking))})"
    try:
        state = orjson.loads(existing(output, PROGRESS).read_bytes()).get("state")
    except (OSError, orjson.JSONDecodeError, AttributeError):
        return None
    if state == "running":  # and nobody holds its lock
        return f"{output} is incomplete: its job was killed before it finished"
    if state == "interrupted":
        return f"{output} is incomplete: its job was interrupted before it finished"
    if isinstance(state, str) and state != "finished":
        return f"{output} is incomplete: its job {state}"
    return None


def _common_settings(inputs: Sequence[Path]) -> dict[str, Any]:
    """The inputs' shared settings; a missing settings file or a mismatch is refused."""
    first: dict[str, Any] | None = None
    for path in inputs:
        output_kind(path)  # a UsageError naming it if it does not exist
        settings = read_job_settings(path)  # a --processes folder: its shards' settings
        if settings is None or "batchclassify_version" not in settings:
            raise UsageError(
                f"{path} is not a batchclassify output (no readable {settings_path(path).name})"
            )
        settings.setdefault("id_scheme", 1)
        if first is None:
            first, first_path = settings, path
            continue
        for key in MERGE_KEYS:
            if settings.get(key) != first.get(key):
                raise UsageError(
                    f"merge: {path} was made with {key}={settings.get(key)!r} but {first_path} "
                    f"with {key}={first.get(key)!r}; only outputs of one job can be merged"
                )
    assert first is not None
    return {k: v for k, v in first.items() if k != "merged_from"}


def _check_target(output: Path, inputs: Sequence[Path], fmt: OutputFormat) -> None:
    real = os.path.realpath(output)
    if any(os.path.realpath(path) == real for path in inputs):
        raise UsageError(f"--output {output} is one of the inputs; merge into a new output")
    if not os.path.lexists(output) or is_empty(output):
        if written_by_batchclassify(settings_path(output)) is False:
            raise OutputError(f"{settings_path(output)} was not written by batchclassify")
        return
    previous = read_settings(output)
    if previous is None or "merged_from" not in previous:
        raise OutputError(
            f"{output} exists and is not an earlier merge: merge only replaces its own "
            "outputs; move it away or choose another --output"
        )
    if output.is_dir() and not output.is_symlink():
        # The earlier merge's folder is replaced whole: nothing in it but the sink's own files.
        own = open_sink(output, fmt).own_names() or frozenset()
        foreign = foreign_files(output, own)
        if foreign:
            raise UsageError(
                f"{output} holds files batchclassify did not write ({foreign}); merge replaces "
                "an earlier merge whole: move those away or choose another --output"
            )


def _write_merged(inputs: Sequence[Path], output: Path, fmt: OutputFormat) -> int:
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.merging-", dir=output.parent))
    try:
        temporary = staging / output.name
        sink = open_sink(temporary, fmt)
        sink.open()
        try:
            for path in inputs:
                for row in iter_rows(path):
                    try:
                        sink.write(row)
                    except ContradictoryRowError as exc:
                        raise UsageError(
                            f"merge: {path} holds a row that is not what it says ({exc}); "
                            "rerun its job with --retry-failed to classify it again, then merge"
                        ) from None
            sink.flush()
        finally:
            sink.close()
        sink.compact()
        rows = sum(1 for _ in iter_rows(temporary))
        _replace(temporary, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # our own mkdtemp folder, nothing else
    return rows


def _replace(temporary: Path, output: Path) -> None:
    """Move the finished merge into place; an earlier merge (checked) goes first."""
    if output.is_dir() and not output.is_symlink():
        old = temporary.with_name(temporary.name + ".old")
        os.rename(output, old)  # inside our staging folder: removed with it
    os.replace(temporary, output)


def register(commands: Any) -> None:
    """Add the ``merge`` command to the CLI."""
    parser = commands.add_parser(
        "merge",
        help="combine shard outputs (JSONL or Parquet) into one output, one row per id",
        description="Combine the outputs of the shards of one job (--shard I/N, --processes) "
        "into one output. The inputs must share model, confidence and max size; an id in "
        "several inputs keeps the row of the input named last. The output is written "
        "atomically and gets a settings file, so report, export, status and run treat it "
        "as any output; an existing output is replaced only if it is an earlier merge.",
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="OUTPUT", help="shard outputs")
    parser.add_argument("--output", "-o", required=True, type=Path, help="the merged output")
    parser.add_argument("--format", choices=("jsonl", "parquet"), help="default: from suffix")
    parser.add_argument(
        "--partial",
        action="store_true",
        help="merge even if shards are missing, of different splits, unfinished or still "
        "running; the merged output records that it is partial (status and report say so)",
    )
    parser.set_defaults(handler=_command)


def _command(args: argparse.Namespace) -> int:
    rows, lacking = merge_outputs(
        args.inputs, args.output, output_format=args.format, partial=args.partial
    )
    said = f" (partial: {'; '.join(lacking)})" if lacking else ""
    print(
        printable(f"merged {len(args.inputs)} outputs into {args.output}: {rows:,} rows{said}"),
        file=sys.stderr,
    )
    return ExitCode.OK
