"""The folder walk yields its first item before a large folder is listed in full.

Time to first request must not grow with the folder: the walk hands out files as
``os.scandir`` reads them instead of listing and sorting the whole folder first. The
``InputReport`` shows how much of the folder had been listed when the first item came out:
files passed over (here ``.txt``) are counted as the listing meets them.
"""

from __future__ import annotations

from pathlib import Path

from batchclassify.config import DEFAULT_EXTENSIONS
from batchclassify.inputs.sources import iter_item_batches, iter_items
from batchclassify.summary import InputReport

FILES = 4000  # of each kind: far more than one directory read (32 KB) returns


def _big_folder(folder: Path) -> None:
    # Long names so one directory read holds only a few hundred entries.
    stem = "a-rather-long-file-name-so-few-fit-in-one-directory-read"
    for i in range(FILES):
        (folder / f"{stem}-{i:05d}.jpg").write_bytes(b"x")
        (folder / f"{stem}-{i:05d}.txt").write_bytes(b"x")


def test_first_item_arrives_before_the_folder_is_listed(tmp_path: Path) -> None:
    _big_folder(tmp_path)
    report = InputReport()
    items = iter_items([str(tmp_path)], extensions=DEFAULT_EXTENSIONS, report=report)

    first = next(items)

    assert first.path is not None and first.path.endswith(".jpg")
    listed_so_far = report.skipped_extensions["txt"]
    assert listed_so_far < FILES // 2, "the whole folder was listed before the first item"
    rest = list(items)
    # The walk is still complete: every image once, every other file counted.
    assert len({first.id, *(item.id for item in rest)}) == FILES == 1 + len(rest)
    assert report.skipped_extensions["txt"] == FILES


def test_first_batch_is_one_batch_not_the_folder(tmp_path: Path) -> None:
    _big_folder(tmp_path)
    report = InputReport()
    batches = iter_item_batches(
        [str(tmp_path)], extensions=DEFAULT_EXTENSIONS, batch_size=100, report=report
    )

    first = next(batches)

    assert len(first) == 100
    assert report.skipped_extensions["txt"] < FILES // 2
