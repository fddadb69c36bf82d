"""Names as text: readable for messages and the ``path`` column, injective for ids, safe to print.

``os.scandir`` and ``os.fsdecode`` hand over file-name bytes that are not UTF-8 as surrogate
escapes, which JSON and Parquet cannot hold. ``as_text`` writes them as ``\\xNN``: readable, but
a name that literally contains the text ``\\xff`` reads the same as one holding the byte 0xff.
``as_id`` is the same for almost every name and never maps two names to one text, and
``id_file`` undoes it: an id names its file from any working directory, on any later day.
``printable`` is what every printer passes names through (file names and class names may hold
terminal escapes).
"""

from __future__ import annotations

import os
import sys

_ESCAPE = "\\x"
_POSIX = os.name == "posix"
#: What ``LocalIds.file`` is given as a file name but names no file.
_NOT_NAMES = frozenset(("", os.curdir, os.pardir))

#: How ids are made, recorded in the settings file: an output written under another scheme
#: has other ids for the same images, so resuming into it would classify everything again.
#: 1 (no key): the path as spelled, ``\xNN`` for undecodable bytes. 2: the absolute path with
#: the folder's symlinks resolved, escaped injectively (``as_id``); manifest bad rows
#: ``line N of <absolute manifest path>``.
ID_SCHEME = 2


#: Schemes the tool reads itself or sends to the server: never object storage.
_NOT_OBJECT = frozenset({"http", "https", "file"})


def object_scheme(value: str) -> str | None:
    """The scheme of ``value`` if it is an object-storage URL (``s3://b/k``), else ``None``.

    ``http(s)://`` and ``file://`` are not object storage: the server downloads the first,
    the second is a local path. Cheap: it runs for every item read. Here rather than in
    ``objectstore`` so that a job without object URLs never imports that module.
    """
    head, sep, _ = value.partition("://")
    if not sep or not head[:1].isalpha():
        return None
    if not all(c.isalnum() or c in "+-." for c in head):
        return None
    scheme = head.lower()
    return None if scheme in _NOT_OBJECT else scheme


def as_text(name: str) -> str:
    """``name`` as valid UTF-8 text: undecodable file-name bytes become ``\\xNN``."""
    if name.isascii():
        return name
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    return name


def as_id(name: str) -> str:
    """``name`` as valid text, injectively: two different names never give the same text.

    A name that is valid text and does not contain ``\\x`` is kept as it is (nearly all).
    Any other name is escaped: each ``\\`` is doubled and each byte that is not UTF-8 becomes
    ``\\xNN``. Every escaped form contains ``\\x`` and no kept name does, and the escape can
    be undone left to right, so the mapping is one to one.
    """
    if _ESCAPE not in name and is_text(name):
        return name
    raw = os.fsencode(name).replace(b"\\", b"\\\\")
    return raw.decode("utf-8", "backslashreplace")


def _unescape(part: str) -> bytes:
    """The name ``as_id`` escaped into ``part`` (which contains ``\\x``), as bytes."""
    raw = bytearray()
    index, end = 0, len(part)
    while index < end:
        char = part[index]
        if char != "\\":
            raw += char.encode("utf-8")
            index += 1
        elif part.startswith("\\\\", index):
            raw += b"\\"
            index += 2
        else:  # ``\\xNN``: the only other escape ``as_id`` writes
            raw.append(int(part[index + 2 : index + 4], 16))
            index += 4
    return bytes(raw)


def id_file(ident: str) -> str | None:
    """The file an id names, as ``open`` takes it (bytes that are not UTF-8 as surrogate
    escapes), or ``None`` when the id is not an absolute local path (a URL, a manifest's own
    id, ``line N of ...``). The inverse of ``path_id``, component by component: an escaped
    component always contains ``\\x`` and a kept one never does."""
    if not os.path.isabs(ident):
        return None
    if _ESCAPE not in ident:
        return ident
    try:
        parts = [os.fsdecode(_unescape(p)) if _ESCAPE in p else p for p in ident.split(os.sep)]
    except ValueError:  # not an escape ``as_id`` wrote: an id given by a manifest
        return None
    return os.sep.join(parts)


#: Characters that are not controls but reorder or hide what a terminal shows.
_INVISIBLE = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: str, *, keep_lines: bool = False) -> str:
    """``text`` safe to print: control characters (terminal escapes, carriage returns, tabs,
    newlines unless ``keep_lines``), bidirectional overrides and file-name bytes that are not
    UTF-8 written as ``\\xNN`` / ``\\uNNNN``. Every printer of names passes them through it."""
    if text.isprintable():
        return text
    if keep_lines:
        return "\n".join(printable(line) for line in text.split("\n"))
    return "".join(map(_printable_char, as_text(text)))


def _printable_char(char: str) -> str:
    code = ord(char)
    if code < 0x20 or 0x7F <= code < 0xA0:
        return f"\\x{code:02x}"
    if char in _INVISIBLE or code in (0x2028, 0x2029):
        return f"\\u{code:04x}"
    return char


def is_text(value: str) -> bool:
    """False when ``value`` holds surrogate escapes, i.e. bytes that were not UTF-8."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def path_id(path: str) -> str:
    """A whole path as an id: ``as_id`` of each component, so a folder's id prefixes its files'."""
    if _ESCAPE not in path and is_text(path):
        return path
    return os.sep.join(as_id(part) for part in path.split(os.sep))


def _real_folder(path: str) -> str:
    """``os.path.realpath``; on macOS also the folder's true letter case, as stored on disk.

    macOS file systems ignore case, so ``Photos`` and ``photos`` are one folder, but realpath
    keeps the case it was given. F_GETPATH on an open folder gives the stored spelling (on
    Windows, realpath already does). A folder that cannot be opened keeps realpath's answer.
    """
    real = os.path.realpath(path)
    if sys.platform != "darwin":
        return real
    import fcntl

    try:
        # Never block: the "folder" of a bad row may be a pipe.
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | os.O_NONBLOCK)
    except OSError:
        return real
    try:
        stored = fcntl.fcntl(fd, fcntl.F_GETPATH, bytes(1024))
    except OSError:
        return real
    finally:
        os.close(fd)
    return os.fsdecode(stored.rstrip(b"\0")) or real


class LocalIds:
    """The ids of local files: the absolute path, with every symlink in its folder resolved.

    The folder part goes through ``os.path.realpath`` once per distinct folder (a small cache),
    not once per file: a manifest of a million files in a few folders costs a few system calls.
    The file's own name is kept (a symlinked image is its own item), so an id needs no system
    call per file. ``photos/a.jpg``, ``./photos/a.jpg``, ``/abs/photos/a.jpg`` and
    ``../x/photos/a.jpg`` from another working directory all give ``/abs/photos/a.jpg``.
    """

    _MAX_FOLDERS = 4096

    def __init__(self) -> None:
        self._folders: dict[str, str] = {}
        # A folder (as ``file`` splits it off a path) -> its id with the separator after it,
        # what a file name in it is appended to.
        self._prefixes: dict[str, str] = {}

    def folder(self, path: str) -> str:
        """The id of a folder (``""`` is the working directory)."""
        ident = self._folders.get(path)
        if ident is None:
            if len(self._folders) >= self._MAX_FOLDERS:
                self._folders.clear()  # bounded memory; a miss only costs one realpath
                self._prefixes.clear()
            ident = path_id(_real_folder(path or os.curdir))
            self._folders[path] = ident
        return ident

    def file(self, path: str) -> str:
        """The id of the file at ``path`` (relative to the working directory, or absolute)."""
        # Once per manifest row: os.path.split's work at a third of its cost on POSIX, and
        # the folder's id, separator included, from one dictionary look-up.
        if _POSIX:
            folder, sep, name = path.rpartition("/")
            folder = folder or sep
        else:
            folder, name = os.path.split(path)
        prefix = self._prefixes.get(folder)
        if prefix is None or name in _NOT_NAMES:
            return self._file(path, folder, name)
        if name.isascii() and _ESCAPE not in name:
            return prefix + name
        return prefix + as_id(name)

    def _file(self, path: str, folder: str, name: str) -> str:
        if name in _NOT_NAMES:
            return path_id(os.path.realpath(path))  # not a file name: resolve it whole
        ident = self.folder(folder)
        # A root folder's id ends with the separator; every other folder's does not.
        prefix = ident if ident[-1] == os.sep else ident + os.sep
        self._prefixes[folder] = prefix
        return prefix + as_id(name)
