"""``batchclassify select``: the N images a person should label next, as a manifest.

Most uncertain first by the measure asked for (``uncertainty.py``), with a floor per class
(``--per-class-min K``: each class, by its top class, gets its K least sure images even
when another class's are less sure still), and at most one image of each group of
byte-identical files (the least sure one: copies would crowd uncertainty sampling). The
manifest (``.jsonl`` or ``.csv``, columns ``id``, ``path`` or ``url``, ``top``,
``uncertainty``) is what ``run``, and ``push --only``, read.

Choosing: every ``ok`` row is ranked, most uncertain first (ties: by id). The floors are
filled first, each class from its own ranking, then the rest of the N from the overall
ranking; the chosen are written in ranking order. A file's bytes are hashed only when it
comes up for choosing. Holds one small tuple per ``ok`` row.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..errors import UsageError
from ..exit_codes import ExitCode
from ..models import row_is_ok
from ..output.reading import image_file, iter_latest_rows, read_job_settings, run_folder
from .export.options import content_key
from .uncertainty import MEASURES, measure, threshold_of, truncated

_FORMATS = (".jsonl", ".csv")


@dataclass(frozen=True, slots=True)
class Candidate:
    """One ``ok`` row, as much of it as choosing needs."""

    uncertainty: float
    id: str
    path: str | None
    url: str | None
    top: str | None


@dataclass
class Choice:
    """What ``choose`` picked, and what the output held."""

    chosen: list[Candidate]
    rows: int
    candidates: int
    duplicates: int
    truncated: int
    """Single-label rows holding only the classes above the server's threshold."""
    threshold: float | None


def read_candidates(output: Path, by: str) -> tuple[list[Candidate], int, int, float | None]:
    """The ``ok`` rows ranked by ``by``, most uncertain first; the rows read, the truncated
    rows among them, and the job's threshold (``None``: the server's default)."""
    settings = read_job_settings(output) or {}
    uncertainty = measure(by, threshold=threshold_of(settings))
    found: list[Candidate] = []
    rows = cut = 0
    base = run_folder(output)
    for row in iter_latest_rows(output):
        rows += 1
        if not row_is_ok(row):
            continue
        cut += truncated(row)
        path = image_file(row["id"], row.get("path"), base=base)
        found.append(
            Candidate(
                uncertainty=uncertainty(row),
                id=row["id"],
                path=path,
                url=row.get("url") if path is None else None,
                top=row.get("top") or None,
            )
        )
    found.sort(key=lambda c: (-c.uncertainty, c.id))
    confidence = settings.get("confidence")
    return found, rows, cut, float(confidence) if isinstance(confidence, int | float) else None


def choose(
    ranked: list[Candidate],
    n: int,
    *,
    per_class_min: int = 0,
    content: Callable[[Candidate], object] | None = None,
) -> tuple[list[Candidate], int]:
    """The ``n`` to label from ``ranked`` (most uncertain first): each class's floor first,
    then the most uncertain of the rest; one per ``content`` group. Returns them in ranking
    order, and how many duplicates were passed over."""
    key = content or _content
    seen: dict[object, str] = {}
    duplicates: set[str] = set()
    chosen: set[str] = set()

    def take(candidate: Candidate) -> bool:
        if candidate.id in chosen or candidate.id in duplicates:
            return False
        group = key(candidate)
        if group in seen:
            duplicates.add(candidate.id)
            return False
        seen[group] = candidate.id
        chosen.add(candidate.id)
        return True

    if per_class_min:
        classes = sorted({c.top for c in ranked if c.top is not None})
        if per_class_min * len(classes) > n:
            raise UsageError(
                f"-n {n} cannot hold --per-class-min {per_class_min} for {len(classes)} "
                f"classes (that takes {per_class_min * len(classes)}): raise -n or lower "
                "--per-class-min"
            )
        for name in classes:
            taken = 0
            for candidate in ranked:
                if taken == per_class_min:
                    break
                if candidate.top == name and take(candidate):
                    taken += 1
    for candidate in ranked:
        if len(chosen) >= n:
            break
        take(candidate)
    return [c for c in ranked if c.id in chosen], len(duplicates)


def _content(candidate: Candidate) -> object:
    """What byte-identical files share: a hash of the bytes (a URL: itself; a file that
    cannot be read: its id, so it is no one's duplicate)."""
    if candidate.path is not None:
        return content_key(candidate.path) or candidate.id
    return ("url", candidate.url or candidate.id)


def write_manifest(path: Path, chosen: list[Candidate], *, overwrite: bool) -> None:
    """``chosen`` as a ``.jsonl`` or ``.csv`` manifest, written whole (a temporary file
    renamed into place); an existing file is replaced only with ``overwrite`` and only if it
    is a manifest this command could have written."""
    suffix = path.suffix.lower()
    if suffix not in _FORMATS:
        raise UsageError(f"-o {path}: name a .jsonl or .csv manifest")
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise UsageError(f"-o {path}: the file exists; pass --overwrite to replace it")
        if not _is_manifest(path):
            raise UsageError(f"-o {path}: not a manifest 'select' writes; it is left alone")
    records = [_record(c) for c in chosen]
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            if suffix == ".jsonl":
                for record in records:
                    handle.write(orjson.dumps(record).decode() + "\n")
            else:
                writer = csv.DictWriter(handle, ["id", "path", "url", "top", "uncertainty"])
                writer.writeheader()
                writer.writerows(records)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _record(candidate: Candidate) -> dict[str, Any]:
    where = {"path": candidate.path} if candidate.path is not None else {"url": candidate.url}
    score = candidate.uncertainty
    return {
        "id": candidate.id,
        **where,
        "top": candidate.top,
        "uncertainty": None if score == float("inf") else round(score, 6),
    }


def _is_manifest(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.readline()
    except OSError:
        return False
    if path.suffix.lower() == ".csv":
        return head.startswith(b"id,path,url,top,uncertainty")
    try:
        first = orjson.loads(head) if head.strip() else {"id": ""}
    except orjson.JSONDecodeError:
        return False
    return isinstance(first, dict) and "id" in first and "uncertainty" in first


def manifest_ids(manifest: Path, *, flag: str) -> frozenset[str]:
    """The ids of a manifest's rows, for ``push --only`` and ``export --only``: its ``id``
    column (what ``select`` writes), else the ids ``run`` gives its paths and URLs."""
    from ..config import DEFAULT_EXTENSIONS
    from ..inputs.sources import check_sources, iter_items

    if not manifest.is_file():
        raise UsageError(f"{flag} {manifest}: no such manifest")
    check_sources([str(manifest)])
    items = iter_items([str(manifest)], extensions=DEFAULT_EXTENSIONS)
    return frozenset(item.id for item in items if item.problem is None)


def register(commands: Any) -> None:
    """Add ``select`` to the CLI's subcommands."""
    parser = commands.add_parser(
        "select",
        help="choose the N images a person should label next (most uncertain first)",
        description="Write a manifest of the N images of OUTPUT a person should label next: "
        "most uncertain first, a floor per class, one of each group of identical files.",
        epilog="examples:\n"
        "  batchclassify select results.jsonl -n 500 --by margin -o next.jsonl\n"
        "  batchclassify select results.jsonl -n 500 --by entropy --per-class-min 20 "
        "-o next.csv\n"
        "  batchclassify push results.jsonl --project pets --only next.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("output", type=Path, metavar="OUTPUT", help="the --output of a run")
    parser.add_argument("-n", type=int, required=True, metavar="N", help="how many to choose")
    parser.add_argument(
        "--by",
        choices=MEASURES,
        default="margin",
        help="the uncertainty measure (default %(default)s; see docs/push.md)",
    )
    parser.add_argument(
        "--per-class-min",
        type=int,
        default=0,
        metavar="K",
        help="each class gets at least its K least sure images (by top class)",
    )
    parser.add_argument(
        "-o",
        "--output-manifest",
        dest="manifest",
        type=Path,
        required=True,
        metavar="MANIFEST",
        help="the manifest to write: .jsonl or .csv",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace MANIFEST if a select wrote it"
    )
    parser.set_defaults(handler=_command)


def _command(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise UsageError(f"-n {args.n}: choose at least 1")
    if args.per_class_min < 0:
        raise UsageError(f"--per-class-min {args.per_class_min}: must be 0 or more")
    ranked, rows, cut, threshold = read_candidates(args.output, args.by)
    chosen, duplicates = choose(ranked, args.n, per_class_min=args.per_class_min)
    write_manifest(args.manifest, chosen, overwrite=args.overwrite)

    def say(text: str) -> None:
        print(text, file=sys.stderr)

    classes = Counter(c.top or "(no class)" for c in chosen)
    say(
        f"{len(chosen):,} of {len(ranked):,} classified images chosen by {args.by} "
        f"({rows:,} rows) -> {args.manifest}"
    )
    say("  by class: " + ", ".join(f"{name} {count}" for name, count in classes.most_common()))
    if duplicates:
        say(f"  {duplicates:,} byte-identical copies passed over (one of each kept)")
    if cut and args.by in ("margin", "entropy"):
        said = "--confidence " + f"{threshold:g}" if threshold is not None else "no --confidence"
        say(
            f"  note: {cut:,} rows hold only the classes above the server's threshold (the job "
            f"ran with {said}; the server's default is 0.4): {args.by} is computed over those. "
            "For every class's score, classify again with --confidence 0 (into a new output)"
        )
    return ExitCode.OK
