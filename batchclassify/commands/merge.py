"""``batchclassify merge``: combine shard outputs (JSONL or Parquet, mixed) into one output.

The inputs must be batchclassify outputs of one job: the same model, confidence, max size
and id scheme (their ``<output>.job.json``). Every row is written, in the order of the inputs,
into a temporary output beside the target through the job's own sink, which then compacts it
(one row per id: the latest, i.e. the one from the input named last); the temporary output
is renamed into place, so a reader never sees half a merge. The target is written only if it
does not exist, is empty, or is itself an earlier merge (``"merged_from"`` in its settings):
merge never replaces what it did not write. Its settings file lets ``report``, ``export``,
``status`` and ``run`` (resume) treat the merged output as any other.
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

from ..config import OUTPUT_SUFFIXES, OutputFormat
from ..errors import OutputError, UsageError
from ..names import printable
from ..output.outputs import is_empty, settings_path, written_by_batchclassify
from ..output.reading import iter_rows, output_kind, read_job_settings, read_settings
from ..output.resume import write_settings
from ..output.sinks import open_sink

#: Settings the inputs must share: they change what a row means.
MERGE_KEYS = ("model", "confidence", "max_size", "id_scheme")


def merge_outputs(
    inputs: Sequence[Path], output: Path, *, output_format: OutputFormat | None = None
) -> int:
    """Merge ``inputs`` into ``output``; returns the number of rows it holds (one per id)."""
    if not inputs:
        raise UsageError("merge: name at least one output to merge")
    fmt = output_format or OUTPUT_SUFFIXES.get(output.suffix.lower())
    if fmt is None:
        raise UsageError(f"--output {output}: name a .jsonl or .parquet output, or pass --format")
    settings = _common_settings(inputs)
    _check_target(output, inputs)
    rows = _write_merged(inputs, output, fmt)
    merged = dict(settings, format=fmt, shard=None, merged_from=[str(p) for p in inputs])
    write_settings(settings_path(output), merged)
    return rows


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


def _check_target(output: Path, inputs: Sequence[Path]) -> None:
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
                    sink.write(row)
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
    parser.set_defaults(handler=_command)


def _command(args: argparse.Namespace) -> int:
    rows = merge_outputs(args.inputs, args.output, output_format=args.format)
    said = f"merged {len(args.inputs)} outputs into {args.output}: {rows:,} rows"
    print(printable(said), file=sys.stderr)
    return 0
