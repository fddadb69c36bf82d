"""The count ahead of the job (``counting.py``) is the job's own walk, keeping nothing: for
every tree the walk has a rule for, the count equals the items the walk yields.

Before, ``counting.py`` had a copy of the folder walk. Among the differences: a file without
an extension (or a name ending in a dot) when the extensions include the empty one, which
the walk yields and the copy did not count.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from batchclassify.inputs.counting import count_items
from batchclassify.inputs.sources import iter_items

from .conftest import png


def _walked(folder: Path, extensions: frozenset[str]) -> int:
    return len(list(iter_items([str(folder)], extensions=extensions)))


def tricky_tree(root: Path) -> Path:
    """Every entry the walk has a rule for."""
    top = root / "tree"
    for name in ("a.jpg", "B.PNG", "c.Jpg", "sub/d.png", "sub/deeper/e.jpg", "other/f.png"):
        (top / name).parent.mkdir(parents=True, exist_ok=True)
        (top / name).write_bytes(png("red"))
    for name in (".hidden.jpg", ".cache/g.jpg", "notes.txt", "noext", "photo.", "x.tar.JPG"):
        (top / name).parent.mkdir(parents=True, exist_ok=True)
        (top / name).write_bytes(b"x")
    (top / "folder.jpg").mkdir()  # a folder with an image's name: walked, not an item
    (top / "folder.jpg" / "inner.jpg").write_bytes(png("red"))
    (top / "sub" / "loop").symlink_to(top)  # back up the current path: not entered
    (top / "other" / "again").symlink_to(top / "sub" / "deeper")  # entered: a second copy
    (top / "dangling.jpg").symlink_to(top / "gone.jpg")  # a problem row
    (top / "ring1.jpg").symlink_to(top / "ring2.jpg")  # a symlink chain that loops (ELOOP)
    (top / "ring2.jpg").symlink_to(top / "ring1.jpg")
    (top / "file-link.png").symlink_to(top / "a.jpg")  # a symlink to a file is that file
    os.mkfifo(top / "pipe.jpg")  # not a regular file: a problem row
    (top / os.fsdecode(b"caf\xe9.jpg")).write_bytes(png("red"))  # a name that is not UTF-8
    (top / "empty").mkdir()
    exported = top / "exported"  # an export's DEST: the walk leaves it out
    (exported / "cat").mkdir(parents=True)
    (exported / "cat" / "a.jpg").symlink_to(top / "a.jpg")
    (exported / ".batchclassify-export").write_text("{}")
    return top


@pytest.mark.parametrize(
    "extensions",
    [
        frozenset({"jpg", "png"}),
        frozenset({".JPG", "Png"}),  # a leading dot and case, as the job takes them
        frozenset({"jpg", ""}),  # files without an extension, and names ending in a dot
        frozenset({"."}),
        frozenset({"gif"}),  # nothing matches
    ],
    ids=["plain", "dot-and-case", "empty-extension", "only-dot", "none-match"],
)
def test_count_equals_the_walk_over_a_tricky_tree(
    tmp_path: Path, extensions: frozenset[str]
) -> None:
    top = tricky_tree(tmp_path)
    assert count_items([str(top)], extensions=extensions) == _walked(top, extensions)


def test_the_tricky_tree_holds_what_the_walk_yields(tmp_path: Path) -> None:
    """The tree is tricky: the walk yields the odd entries as items of their own."""
    top = tricky_tree(tmp_path)
    names = sorted(
        os.path.relpath(item.id, top.resolve())
        for item in iter_items([str(top)], extensions=frozenset({"jpg", "png"}))
    )
    assert names.count("sub/deeper/e.jpg") == 2  # again via other/again (ids: resolved path)
    assert "dangling.jpg" in names and "pipe.jpg" in names
    assert "ring1.jpg" in names and "folder.jpg/inner.jpg" in names
    assert not any("loop" in name or name.startswith((".", "exported")) for name in names)
    with_empty = frozenset({"jpg", ""})
    assert _walked(top, with_empty) > _walked(top, frozenset({"jpg"}))  # noext, photo.


def test_count_over_several_sources_is_the_sum(tmp_path: Path) -> None:
    top = tricky_tree(tmp_path)
    sources = [str(top), str(top / "sub"), str(top / "empty")]
    extensions = frozenset({"jpg", "png"})
    assert count_items(sources, extensions=extensions) == len(
        list(iter_items(sources, extensions=extensions))
    )


class _StopsAfter(threading.Event):
    """A stop flag that turns set after ``looks`` looks at it (a job ending mid-count)."""

    def __init__(self, looks: int) -> None:
        super().__init__()
        self._left = looks

    def is_set(self) -> bool:
        self._left -= 1
        return self._left < 0


def test_a_count_stopped_between_folders_is_unknown_not_short(tmp_path: Path) -> None:
    top = tricky_tree(tmp_path)
    extensions = frozenset({"jpg", "png"})
    assert count_items([str(top)], extensions=extensions, stop=_StopsAfter(3)) is None
    assert count_items([str(top)], extensions=extensions, stop=_StopsAfter(10_000)) == _walked(
        top, extensions
    )
