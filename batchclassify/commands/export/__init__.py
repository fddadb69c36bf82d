"""``batchclassify export``: an output's rows as a dataset that training and labelling tools read.

One module per format (``folders``, ``multilabel``, ``labelstudio``, ``csvfile``); ``run.py``
drives them; ``records.py`` turns rows into records and makes the first pass; ``files.py``
places images (links, copies, name collisions); ``dest.py`` guards DEST.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ...exit_codes import ExitCode
from ...names import printable
from ..thresholds import read_thresholds
from .options import FORMATS, MODES, ExportOptions, parse_splits
from .run import ExportResult, describe, nothing_exported, run_export

_EPILOG = """\
formats:
  folders              DEST/{split}/{class}/{file}: Roboflow's single-label folder upload,
                       torchvision ImageFolder, Keras image_dataset_from_directory, Hugging Face
                       imagefolder. Below --min-confidence: DEST/_review/{top}/{file}.
  roboflow-multilabel  DEST/{split}/{file} + DEST/{split}/_classes.csv (filename,<class>,...
                       one-hot 0/1). Commas in class or file names become '_'. Below
                       --min-confidence: flagged needs_review=1 in the mapping file.
  label-studio         DEST/tasks.json (predictions with score = confidence; below
                       --min-confidence: data.needs_review=true), DEST/labeling-config.xml,
                       local images linked in DEST/images/ and referenced as
                       /data/local-files/?d=...; URL items referenced by URL.
  csv                  DEST is one file: id, path, url, split, top, confidence,
                       predicted_classes (a JSON list), needs_review, metadata columns.
                       Includes URL items. Below --min-confidence: needs_review=1.
                       Text cells starting = + - @ get a leading ' (--no-formula-guard).

An export that exports no image at all says why and exits 1.
Failed rows are left out (and counted); URL items are left out of folders and
roboflow-multilabel (counted). Tree formats write DEST/.batchclassify-mapping.tsv: every row,
where its image went (renamed when two images share a file name) or why it was left out.
See docs/export.md.

examples:
  batchclassify export results.jsonl --to folders dataset/ --split train=0.8,valid=0.1,test=0.1
  batchclassify export results.parquet --to roboflow-multilabel upload/ --mode copy
  batchclassify export results.jsonl --to label-studio review/ --min-confidence 0.6
  batchclassify export results.jsonl --to csv results.csv
"""


def register(commands: Any) -> None:
    """Add ``export`` to the CLI's subcommands."""
    parser = commands.add_parser(
        "export",
        help="write an output as a dataset: class folders, Roboflow multi-label, Label Studio, CSV",
        description="Export the classified images of OUTPUT (a run's .jsonl or .parquet, also\n"
        "one still running) to DEST in a format other tools import. The images themselves\n"
        "are never moved or changed: they are linked or copied.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG,
    )
    parser.add_argument("output", type=Path, metavar="OUTPUT", help="the --output of a run")
    parser.add_argument("--to", required=True, choices=FORMATS, help="export format")
    parser.add_argument("dest", type=Path, metavar="DEST", help="folder to create (csv: a file)")
    parser.add_argument(
        "--split",
        default="train=1",
        metavar="NAME=FRACTION,...",
        help="split images by a stable hash of their bytes (identical images together), e.g. "
        "train=0.8,valid=0.1,test=0.1 (default: all in train); the same on every run and "
        "machine for the same --seed",
    )
    parser.add_argument("--seed", default="0", help="seed of the split (default 0)")
    parser.add_argument(
        "--min-confidence",
        type=float,
        default=None,
        metavar="F",
        help="images whose top confidence is below F (or with no class) need review: folders "
        "puts them in DEST/_review/{top}/, label-studio sets data.needs_review, csv and the "
        "mapping file set needs_review=1",
    )
    parser.add_argument(
        "--thresholds",
        type=Path,
        default=None,
        metavar="FILE",
        help="per-class thresholds written by report --write-thresholds: an image whose class "
        "(any of its labels, multi-label) is below its class's threshold needs review, as "
        "below --min-confidence",
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="symlink",
        help="how images get into DEST (default symlink; copies, with a note, where links are "
        "impossible, e.g. hard links across filesystems)",
    )
    parser.add_argument(
        "--document-root",
        type=Path,
        default=None,
        metavar="DIR",
        help="label-studio: Label Studio's LOCAL_FILES_DOCUMENT_ROOT, a folder holding DEST "
        "(default: DEST itself)",
    )
    parser.add_argument(
        "--only",
        type=Path,
        default=None,
        metavar="MANIFEST",
        help="export only the images of this manifest (what 'batchclassify select' writes)",
    )
    parser.add_argument(
        "--no-formula-guard",
        dest="formula_guard",
        action="store_false",
        help="csv: write cells starting with = + - @ as they are (by default they get a leading "
        "' so a spreadsheet does not run them as formulas)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier export in DEST (only one batchclassify export wrote; nothing "
        "else is ever deleted)",
    )
    parser.set_defaults(handler=_command)


def _command(args: argparse.Namespace) -> int:
    from ..select import manifest_ids

    only = None if args.only is None else manifest_ids(args.only, flag="--only")
    options = ExportOptions(
        output=args.output,
        to=args.to,
        dest=args.dest,
        splits=parse_splits(args.split),
        seed=args.seed,
        min_confidence=args.min_confidence,
        thresholds=None if args.thresholds is None else read_thresholds(args.thresholds),
        mode=args.mode,
        overwrite=args.overwrite,
        formula_guard=args.formula_guard,
        document_root=args.document_root,
        only=only,
    )
    result = run_export(options, lambda text: print(printable(text), file=sys.stderr))
    print(printable("\n".join(describe(options, result)), keep_lines=True))
    if result.exported:
        return ExitCode.OK
    print(printable(f"batchclassify: {nothing_exported(options, result)}"), file=sys.stderr)
    return ExitCode.FAILED_ITEMS


__all__ = ["ExportOptions", "ExportResult", "register", "run_export"]
