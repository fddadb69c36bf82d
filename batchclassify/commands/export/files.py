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


def safe_part(name: str, *, also: str = "") -> str:
    """``name`` usable as one path component (and free of the characters in ``also``)."""
    cleaned = "".join("_" if ch in "/\\\0\n\r" or ch in also else ch for ch in name)
    if cleaned in ("", ".", ".."):
        cleaned = "_" + cleaned
    return cleaned


def id_tag(item_id: str) -> str:
    """Eight hex characters from the id: stable across runs and machines."""
    return hashlib.blake2b(item_id.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()


class FileNames:
    """Which (folder, file name) pairs are wanted by more than one image, and the final names."""

    def __init__(self) -> None:
        self._counts = IdIndex()
        self.renamed = 0

    def count(self, folder: str, name: str) -> None:
        key = f"{folder}/{name}"
        self._counts.set(key, min(self._counts.get(key) + 1, 255))

    def final(self, folder: str, name: str, item_id: str) -> str:
        """The name an image gets in ``folder``: its own, or with its id's tag if shared."""
        if self._counts.get(f"{folder}/{name}") <= 1:
            return name
        self.renamed += 1
        stem, dot, suffix = name.rpartition(".")
        if not dot or not stem:
            return f"{name}__{id_tag(item_id)}"
        return f"{stem}__{id_tag(item_id)}.{suffix}"

    @property
    def nbytes(self) -> int:
        return self._counts.nbytes


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
