"""The export driver: survey the output, prepare DEST, stream the rows into one format."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...errors import UsageError
from ...models import row_is_ok
from ...output.reading import check_output, image_file
from .base import ExportFormat
from .csvfile import CsvFormat, prepare_file
from .dest import MAPPING, Mapping, discard, prepare_folder, write_marker
from .files import FileNames, Placer, tagged
from .folders import FoldersFormat
from .labelstudio import LabelStudioFormat
from .multilabel import MultilabelFormat
from .options import ExportOptions
from .records import Record, Splits, Survey, make_record, rows_of, survey

#: The file types the consumers of a tree format read (other images are placed, and counted):
#: roboflow's ``util/folderparser.IMAGE_EXTENSIONS``, torchvision's ``IMG_EXTENSIONS``.
_ROBOFLOW = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tiff", ".tif", ".avif", ".heic"})
_TORCHVISION = frozenset(
    {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}
)
CONSUMERS: dict[str, dict[str, frozenset[str]]] = {
    "folders": {"Roboflow's uploader": _ROBOFLOW, "torchvision ImageFolder": _TORCHVISION},
    "roboflow-multilabel": {"Roboflow's uploader": _ROBOFLOW},
}

_FORMATS: dict[str, Callable[[ExportOptions], ExportFormat]] = {
    "folders": FoldersFormat,
    "roboflow-multilabel": MultilabelFormat,
    "label-studio": LabelStudioFormat,
    "csv": CsvFormat,
}


@dataclass
class ExportResult:
    """What an export wrote and what it left out."""

    exported: int = 0
    review: int = 0
    failed: int = 0
    url_skipped: int = 0
    missing: int = 0
    renamed_files: int = 0
    renamed_classes: dict[str, str] = field(default_factory=dict)
    copied_instead: bool = False
    roboflow_moves: int = 0
    """Images Roboflow's uploader would put in another split than their folder's."""
    suffixes: dict[str, int] = field(default_factory=dict)
    """Images placed in DEST, by lower-case suffix (``.jpg``), for the consumers' notes."""
    lines: list[str] = field(default_factory=list)


def run_export(options: ExportOptions, say: Callable[[str], None]) -> ExportResult:
    """Export ``options.output`` to ``options.dest``; ``say`` gets notes as they happen."""
    check_output(options.output)  # a clear error if it does not exist or is not an output
    fmt = _FORMATS[options.to](options)
    names = FileNames(across_folders=fmt.names_unique_across_folders)
    found = survey(options, fmt.placement if options.is_tree else None, names)
    if options.to == "folders" and found.multilabel:
        fmt.begin(found, {})  # raises: says which format to use instead
    result = ExportResult(renamed_classes=_class_names(fmt, found))
    classes = {name: result.renamed_classes.get(name, name) for name in found.classes}
    if options.is_tree:
        created = prepare_folder(options.dest, overwrite=options.overwrite)
        try:
            _export_tree(options, fmt, found, classes, result, say)
        except BaseException:
            # Never a half-written DEST: what this export wrote goes, nothing else does.
            fmt.end()
            discard(options.dest, created=created)
            raise
    else:
        prepare_file(options)
        fmt.begin(found, classes)
        try:
            for row in rows_of(options):
                if not row_is_ok(row):
                    result.failed += 1
                    continue
                record = make_record(row, options, found.splits)
                fmt.add(record, None)
                result.exported += 1
                result.review += record.review
        except BaseException:
            if isinstance(fmt, CsvFormat):
                fmt.abort()
            raise
        result.lines = fmt.end()
    return result


def _class_names(fmt: ExportFormat, found: Survey) -> dict[str, str]:
    """Classes the format must rename; refuses two classes that would become one."""
    renamed = {name: fmt.rename_class(name) for name in found.classes}
    taken: dict[str, str] = {}
    for name, new in renamed.items():
        if new in taken:
            raise UsageError(
                f"classes {taken[new]!r} and {name!r} would both be written as {new!r} in this "
                "format; export to csv or label-studio, which keep class names as they are"
            )
        taken[new] = name
    return {name: new for name, new in renamed.items() if new != name}


def _export_tree(
    options: ExportOptions,
    fmt: ExportFormat,
    found: Survey,
    classes: dict[str, str],
    result: ExportResult,
    say: Callable[[str], None],
) -> None:
    facts = {"format": options.to, "output": str(options.output.absolute()), "mode": options.mode}
    write_marker(options.dest, files=fmt.own_files(found), complete=False, **facts)
    mapping = Mapping(options.dest)
    placer = Placer(options.dest, options.mode, say)
    try:
        fmt.begin(found, classes)
        for row in rows_of(options):
            _export_row(row, options, found.splits, fmt, found.names, placer, mapping, result)
        result.lines = fmt.end()
    finally:
        mapping.close()
    result.renamed_files = found.names.renamed
    result.copied_instead = placer.fell_back
    counts = {
        "exported": result.exported,
        "needs_review": result.review,
        "failed": result.failed,
        "url_skipped": result.url_skipped,
        "missing": result.missing,
        "renamed_files": result.renamed_files,
    }
    write_marker(options.dest, files=fmt.own_files(found), complete=True, counts=counts, **facts)


def _export_row(
    row: dict[str, Any],
    options: ExportOptions,
    splits: Splits,
    fmt: ExportFormat,
    names: FileNames,
    placer: Placer,
    mapping: Mapping,
    result: ExportResult,
) -> None:
    source = str(row.get("path") or row.get("url") or "")
    if not row_is_ok(row):
        result.failed += 1
        mapping.add(str(row["id"]), source, "", "", "failed", False)
        return
    record: Record = make_record(row, options, splits)
    classes = record.classes
    target = fmt.placement(record)
    exported: str | None = None
    if target is None:
        if options.to != "label-studio":  # the one tree format that can reference a URL
            result.url_skipped += 1
            mapping.add(record.id, source, "", record.split, "url_skipped", record.review, classes)
            return
        mapping.add(record.id, source, "", record.split, "exported", record.review, classes)
    elif (image := _source_file(record, options)) is None or not os.path.isfile(image):
        result.missing += 1
        mapping.add(record.id, source, "", record.split, "file_not_found", record.review, classes)
        return
    else:
        folder, name = target
        exported = f"{folder}/{names.final(folder, name, record.id)}"
        if os.path.lexists(options.dest / exported):  # a row the survey did not see
            exported = f"{folder}/{tagged(name, record.id)}"
        mapping.add(record.id, source, exported, record.split, "exported", record.review, classes)
        placer.place(image, exported)
        suffix = os.path.splitext(name)[1].lower()
        result.suffixes[suffix] = result.suffixes.get(suffix, 0) + 1
        if not record.review and roboflow_split(exported) != record.split:
            result.roboflow_moves += 1
    fmt.add(record, exported)
    result.exported += 1
    result.review += record.review


def roboflow_split(exported: str) -> str:
    """The split Roboflow's uploader gives DEST/``exported``: the first of 'valid', 'train',
    'test' anywhere in its lower-cased path without suffix, else train
    (``roboflow.util.folderparser._decide_split``)."""
    key = os.path.splitext(f"/{exported}")[0].lower()
    return next((word for word in ("valid", "train", "test") if word in key), "train")


def _source_file(record: Record, options: ExportOptions) -> str | None:
    """The image file of a record, found from any working directory (``image_file``)."""
    return image_file(record.id, record.path, base=options.run_folder)


def describe(options: ExportOptions, result: ExportResult) -> list[str]:
    """What the export wrote and left out, for a person."""
    plural = {"symlink": "symlinks", "hardlink": "hard links", "copy": "copies"}
    how = f", {plural[options.mode]}" if options.is_tree else ""
    if result.copied_instead:
        how = ", copies (links were not possible)"
    lines = [f"exported {_count(result.exported, 'image')} to {options.dest} ({options.to}{how})"]
    lines += result.lines
    left = []
    if result.failed:
        left.append(_count(result.failed, "failed row"))
    if result.url_skipped:
        left.append(
            f"{_count(result.url_skipped, 'URL item')} ({options.to} holds local files only)"
        )
    if result.missing:
        left.append(f"{_count(result.missing, 'image')} whose file was not found")
    if left:
        lines.append("left out: " + ", ".join(left))
    if options.min_confidence is not None or result.review:
        where = {
            "folders": f"in {options.dest}/_review/",
            "label-studio": "flagged needs_review in the tasks",
            "csv": "flagged needs_review=1",
            "roboflow-multilabel": f"flagged needs_review=1 in {MAPPING}",
        }[options.to]
        below = "" if options.min_confidence is None else f" or below {options.min_confidence:g}"
        below += "" if options.thresholds is None else " or below its class's threshold"
        lines.append(f"{result.review:,} to review (no class{below}): {where}")
    for old, new in result.renamed_classes.items():
        lines.append(f"class {old!r} written as {new!r} ({options.to} cannot hold it as is)")
    if result.renamed_files:
        lines.append(
            f"{result.renamed_files:,} files renamed because their names collided "
            f"(name__<id hash>.ext): see {options.dest / MAPPING}"
        )
    if options.is_tree:
        lines.append(f"mapping of every row: {options.dest / MAPPING}")
    lines += _consumer_notes(options, result)
    return lines


def _consumer_notes(options: ExportOptions, result: ExportResult) -> list[str]:
    """What the tools a format is made for will not read of this export."""
    notes = []
    for consumer, readable in CONSUMERS.get(options.to, {}).items():
        skipped = {s: n for s, n in sorted(result.suffixes.items()) if s not in readable}
        if skipped:
            count = sum(skipped.values())
            kinds = ", ".join(f"{n:,} {s or 'without a suffix'}" for s, n in skipped.items())
            notes.append(
                f"note: {consumer} skips {_count(count, 'image')} of this export ({kinds}): "
                f"it reads only {' '.join(sorted(readable))}"
            )
    if options.to in CONSUMERS and result.roboflow_moves:
        notes.append(
            f"note: Roboflow's uploader puts {_count(result.roboflow_moves, 'image')} in another "
            "split than their folder's: it looks for 'valid', 'train', 'test' anywhere in an "
            "image's path (here in a class or file name, or a split named otherwise)"
        )
    if options.to == "folders" and result.review:
        notes.append(
            f"note: Roboflow's uploader reads {options.dest}/_review/ too (as train images "
            "labelled by folder): sort or remove it before uploading DEST"
        )
    return notes


def nothing_exported(options: ExportOptions, result: ExportResult) -> str:
    """Why an export wrote no image, for a person (``result.exported`` is 0)."""
    if result.missing:
        return (
            f"nothing exported: not one of the {_count(result.missing, 'image')} to export "
            "was found (moved, deleted, or on another machine?); "
            f"{options.dest / MAPPING} lists them"
        )
    if result.failed or result.url_skipped:
        return f"nothing exported: {options.output} holds no image {options.to} can hold"
    return f"nothing exported: {options.output} holds no rows"


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"
