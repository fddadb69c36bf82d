"""Putting images into DEST: safe names, name collisions, and symlink / hardlink / copy.

Two images with the same file name bound for the same folder must not overwrite each other.
Which names collide is counted in a first pass (``FileNames.count``), so the renaming depends
only on the rows, not on their order: every image of a colliding name gets ``__<hash of its
id>`` before its suffix, a unique name is kept as it is. The counts live in an ``IdIndex`` (64-bit
hashes, ~14 bytes a name), not a dict of strings: a million rows cost ~14 MB, not ~150.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from ...errors import OutputError
from ...output.idindex import IdIndex

#: errnos after which a link cannot be made here but a copy can.
_LINK_UNSUPPORTED = {errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}


#: The longest file or folder name common filesystems hold (ext4, XFS, btrfs: 255 bytes).
NAME_MAX = 255
#: Characters kept from a name's end as its suffix when a long name is cut (".jpeg").
_SUFFIX_MAX = 16


def safe_part(name: str, *, also: str = "") -> str:
    """``name`` usable as one path component (and free of the characters in ``also``): no
    separator, NUL or line break, not ``.``/``..``, and short enough (``fit_name``)."""
    cleaned = "".join("_" if ch in "/\\\0\n\r" or ch in also else ch for ch in name)
    if cleaned in ("", ".", ".."):
        cleaned = "_" + cleaned
    return fit_name(cleaned)


def fit_name(name: str) -> str:
    """``name`` if a filesystem can hold it (``NAME_MAX`` bytes), else cut short, keeping its
    suffix, with ``~`` and a hash of the whole name: two long names stay two names."""
    if len(os.fsencode(name)) <= NAME_MAX:
        return name
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem or len(suffix) > _SUFFIX_MAX:
        stem, suffix = name, ""
    tag = "~" + hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
    end = tag + (f".{suffix}" if suffix else "")
    budget = NAME_MAX - len(os.fsencode(end))
    cut = stem[:budget]
    while len(os.fsencode(cut)) > budget:  # multi-byte characters: drop one at a time
        cut = cut[:-1]
    return cut + end


def id_tag(item_id: str) -> str:
    """Eight hex characters from the id: stable across runs and machines."""
    return hashlib.blake2b(item_id.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()


class FileNames:
    """Which file names are wanted by more than one image, and the final names.

    A name is shared within its folder, or (``across_folders``) anywhere in the export: a
    format whose consumer looks images up by file name alone (Roboflow's multi-label
    ``_classes.csv``, read across every split) needs names unique in the whole export.
    """

    def __init__(self, *, across_folders: bool = False) -> None:
        self._counts = IdIndex()
        self._across = across_folders
        self.renamed = 0

    def _key(self, folder: str, name: str) -> str:
        return name if self._across else f"{folder}/{name}"

    def count(self, folder: str, name: str) -> None:
        key = self._key(folder, name)
        self._counts.set(key, min(self._counts.get(key) + 1, 255))

    def final(self, folder: str, name: str, item_id: str) -> str:
        """The name an image gets in ``folder``: its own, or with its id's tag if shared."""
        if self._counts.get(self._key(folder, name)) <= 1:
            return name
        self.renamed += 1
        return tagged(name, item_id)

    @property
    def nbytes(self) -> int:
        return self._counts.nbytes


def tagged(name: str, item_id: str) -> str:
    """``name`` with the id's tag before its suffix (``img__1a2b3c4d.jpg``), cut to fit."""
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem:
        return fit_name(f"{name}__{id_tag(item_id)}")
    return fit_name(f"{stem}__{id_tag(item_id)}.{suffix}")


class Placer:
    """Makes DEST/<relative> point at a source image, by symlink, hard link or copy."""

    def __init__(self, dest: Path, mode: str, say: Callable[[str], None]) -> None:
        self._dest = dest
        self._mode = mode
        self._say = say
        self._made: set[str] = set()
        self.fell_back = False

    def place(self, source: str, relative: str) -> None:
        target = self._dest / relative
        folder = os.path.dirname(relative)
        if folder not in self._made:  # one mkdir per folder, not per image
            target.parent.mkdir(parents=True, exist_ok=True)
            self._made.add(folder)
        try:
            if self._mode == "symlink":
                os.symlink(os.path.abspath(source), target)
            elif self._mode == "hardlink":
                os.link(source, target)
            else:
                shutil.copyfile(source, target)
            return
        except FileExistsError:
            raise OutputError(f"{target} already exists; export into an empty folder") from None
        except OSError as exc:
            if self._mode == "copy" or exc.errno not in _LINK_UNSUPPORTED:
                raise OutputError(f"cannot write {target}: {exc.strerror}") from None
            self._fall_back(exc)
        try:
            shutil.copyfile(source, target)
        except OSError as exc:
            raise OutputError(f"cannot write {target}: {exc.strerror}") from None

    def _fall_back(self, exc: OSError) -> None:
        """The first time a link cannot be made: say why, then copy from now on."""
        if self._mode == "hardlink" and exc.errno == errno.EXDEV:
            why = "hard links cannot cross filesystems and the images are on another one than DEST"
        else:
            why = f"DEST's filesystem refused a {self._mode} ({exc.strerror})"
        self._say(f"note: {why}: copying the images instead (--mode copy)")
        self._mode = "copy"
        self.fell_back = True
