"""Output ownership: what a job may write to, the lock that makes it the only writer, and what
``--overwrite`` may remove.

batchclassify never deletes, truncates or replaces anything it did not write. A path is its
output when ``<output>.job.json`` says so (a settings file batchclassify wrote); inside a
Parquet folder only its own part, journal and temporary files are its own, by name. The lock
(``<output>.lock``, an ``flock`` the OS drops when the process dies, so ``kill -9`` never leaves
a stale lock) keeps a second job off the output for the life of the first.
"""

from __future__ import annotations

import os
import socket
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson

from ..config import JobConfig
from ..errors import OutputError
from .progressfile import TOOL
from .sidecars import LOCK, PROGRESS, SETTINGS, legacy, lock_path, settings_path, sidecar

#: Starts every lock file batchclassify writes; anything else there is someone else's file.
_LOCK_MAGIC = b"batchclassify lock"
#: Folders of devices and kernel files: ``/dev/stdout`` may be a regular file (stdout redirected),
#: but ``/dev/stdout.job.json`` must never be created.
_SYSTEM_FOLDERS = (Path("/dev"), Path("/proc"), Path("/sys"))


# -- what the output is ---------------------------------------------------------------------


def check_output_target(config: JobConfig) -> None:
    """Refuse an output batchclassify cannot own: not a regular file or folder, the wrong kind
    for its format, the working directory or a parent of it, or a source of this job."""
    output = config.output
    real = Path(os.path.realpath(output))
    cwd = Path(os.path.realpath(os.getcwd()))
    if cwd == real or cwd.is_relative_to(real):
        raise OutputError(
            f"--output {output} is the working directory or a parent of it; "
            "name a file such as results.jsonl"
        )
    real_parent = Path(os.path.realpath(output.parent))
    if any(real_parent.is_relative_to(folder) for folder in _SYSTEM_FOLDERS):
        raise OutputError(
            f"--output {output} is in a system folder ({real_parent}), not a regular file; "
            "batchclassify writes a file it can resume: name a file such as results.jsonl"
        )
    _check_sources(config, real)
    for path in (output, settings_path(output), lock_path(output)):
        _check_kind(path, config.format if path == output else "file")


def _check_kind(path: Path, kind: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OutputError(f"cannot use {path}: {exc.strerror}") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise OutputError(
            f"{path} is not a regular file (a device, pipe or socket); batchclassify writes a "
            "file it can resume: name a file such as results.jsonl"
        )
    if kind != "parquet" and stat.S_ISDIR(mode):
        raise OutputError(
            f"{path} is a folder, but JSONL output is one file; name a file such as "
            f"{path / 'results.jsonl'}"
        )
    if kind == "parquet" and stat.S_ISREG(mode):
        raise OutputError(
            f"{path} is a file, but Parquet output is a folder of part files; "
            "move the file away or choose another --output"
        )


def _check_sources(config: JobConfig, real_output: Path) -> None:
    """The output must not be a source, nor a folder holding one: rows would be written over
    (or beside, and then classified) the very input being read."""
    for source in config.sources:
        if source == "-" or "://" in source or not os.path.exists(source):
            continue
        real_source = Path(os.path.realpath(source))
        if real_source == real_output:
            raise OutputError(
                f"--output {config.output} is also a source of this job; choose another --output"
            )
        if real_source.is_relative_to(real_output):
            raise OutputError(
                f"--output {config.output} contains {source}, a source of this job; "
                "choose another --output"
            )


# -- who wrote it ---------------------------------------------------------------------------


def written_by_batchclassify(settings_file: Path) -> bool | None:
    """Whether a settings file is one batchclassify wrote; ``None`` if there is none."""
    try:
        recorded = orjson.loads(settings_file.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError):
        return False
    return isinstance(recorded, dict) and "batchclassify_version" in recorded


def check_settings_file_is_ours(output: Path) -> None:
    """Refuse to replace a ``<output>.job.json`` that batchclassify did not write."""
    settings_file = settings_path(output)
    if written_by_batchclassify(settings_file) is False:
        raise OutputError(
            f"{settings_file} exists but was not written by batchclassify; move it away "
            "or choose another --output"
        )


def check_overwrite(output: Path, own_names: frozenset[str] | None) -> None:
    """Refuse ``--overwrite`` of anything but a batchclassify output.

    ``own_names`` is the set of names in a Parquet folder that are the sink's own (``None`` for
    a file). An empty file (or folder) holds nothing to lose, so it needs no settings file.
    """
    check_settings_file_is_ours(output)
    if not os.path.lexists(output) or is_empty(output):
        return
    if written_by_batchclassify(settings_path(output)) is None:
        raise OutputError(
            f"{output} was not written by batchclassify (no {settings_path(output).name}); "
            "--overwrite only replaces batchclassify outputs: move it away or choose another "
            "--output"
        )
    if own_names is not None:
        foreign = foreign_files(output, own_names)
        if foreign:
            raise OutputError(
                f"{output} holds files batchclassify did not write ({foreign}); --overwrite "
                "removes only its own part and journal files: move those away or choose "
                "another --output"
            )


def foreign_files(folder: Path, own_names: frozenset[str]) -> str:
    """The names in a Parquet output ``folder`` that are not the sink's own (``own_names``),
    shown as a message lists them (the first three); empty if there are none."""
    foreign = sorted(set(os.listdir(folder)) - own_names)
    return f"{', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}"


def is_empty(path: Path) -> bool:
    """An empty file or folder: nothing in it to lose."""
    if path.is_dir():
        return not os.listdir(path)
    return path.is_file() and path.stat().st_size == 0


# -- one job per output ---------------------------------------------------------------------


@contextmanager
def hold_output(config: JobConfig) -> Iterator[None]:
    """Check what the output is, then hold its lock until the job ends (or the process dies)."""
    check_output_target(config)
    path = lock_path(config.output)
    fd = _acquire(path, config.output)
    try:
        adopt_legacy_files(config.output)
        yield
    finally:
        _release(fd, path)


def lock_holder(output: Path) -> str | None:
    """``pid N`` of the job writing ``output`` now, or ``None`` if none holds its lock.

    For a reader (``merge``, a ``--processes`` rerun): nothing is created or written. It
    takes a shared lock for an instant, so a job starting at that very instant is refused
    as if another job held the output; rerunning it then succeeds.
    """
    try:
        fd = os.open(lock_path(output), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None  # no lock file: no job (a job creates it before anything else)
    try:
        _lock_fd(fd, shared=True)
    except BlockingIOError:
        return _holder(fd)
    except OSError:
        return None
    else:
        _unlock_fd(fd)
        return None
    finally:
        os.close(fd)


def adopt_legacy_files(output: Path) -> None:
    """Give an earlier version's settings and progress files today's names (a Parquet shard of
    ``--processes``: with a leading ``_``, see ``sidecars.py``), so the output resumes.

    Done under that version's lock as well, so a job of the earlier version still writing the
    output is refused, not raced; taking that lock also clears a lock file its kill left.
    """
    old_lock = legacy(output, LOCK)
    if old_lock is None:
        return
    renames = []
    for kind in (SETTINGS, PROGRESS):
        old = legacy(output, kind)
        if old is not None and os.path.lexists(old):
            renames.append((old, sidecar(output, kind)))
    if not renames and not os.path.lexists(old_lock):
        return
    fd = _acquire(old_lock, output)
    try:
        for old, new in renames:
            _check_legacy_file(old, new)
            try:
                os.rename(old, new)
            except OSError as exc:
                raise OutputError(f"cannot rename {old} to {new.name}: {exc.strerror}") from None
    finally:
        _release(fd, old_lock)


def _check_legacy_file(old: Path, new: Path) -> None:
    if os.path.lexists(new):
        raise OutputError(
            f"both {old} (an earlier batchclassify's name) and {new} exist; move away the one "
            "that is not this job's"
        )
    try:
        found = orjson.loads(old.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        found = None
    ours = isinstance(found, dict) and (
        "batchclassify_version" in found or found.get("tool") == TOOL
    )
    if not ours:
        raise OutputError(
            f"{old} exists but was not written by batchclassify; move it away or choose "
            "another --output"
        )


def _acquire(path: Path, output: Path) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {path.parent}: {exc.strerror}") from None
    # A job that ends deletes its lock file; one that opened the old file just before must
    # not lock that deleted file, so it checks it locked the file still at the path.
    for _ in range(100):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise OutputError(f"cannot create {path}: {exc.strerror}") from None
        try:
            _lock(fd, path, output)
            if _same_file(fd, path):
                _write_holder(fd, path)
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    raise OutputError(f"cannot lock {path}: it keeps being replaced")


def _lock(fd: int, path: Path, output: Path) -> None:
    """Lock the open lock file, or say which job holds it; refuse a file someone else wrote."""
    try:
        _lock_fd(fd)
    except BlockingIOError:
        raise OutputError(
            f"another batchclassify job ({_holder(fd)}) is writing {output}; wait for it to "
            "finish or stop it, or choose another --output"
        ) from None
    except OSError as exc:
        raise OutputError(f"cannot lock {path}: {exc.strerror}") from None
    content = os.pread(fd, 256, 0)
    if content and not content.startswith(_LOCK_MAGIC):
        raise OutputError(
            f"{path} exists but was not written by batchclassify; move it away or choose "
            "another --output"
        )


def _holder(fd: int) -> str:
    """``pid N`` (and the host, if it is another one) of the job holding the lock."""
    try:
        fields = dict(
            part.split("=", 1) for part in os.pread(fd, 256, 0).decode().split() if "=" in part
        )
    except (OSError, UnicodeDecodeError, ValueError):
        fields = {}
    pid = fields.get("pid", "unknown")
    host = fields.get("host")
    if host and host != socket.gethostname():
        return f"pid {pid} on {host}"
    return f"pid {pid}"


def _write_holder(fd: int, path: Path) -> None:
    text = f"{_LOCK_MAGIC.decode()} pid={os.getpid()} host={socket.gethostname()}\n".encode()
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, text, 0)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _release(fd: int, path: Path) -> None:
    try:
        if _same_file(fd, path):
            path.unlink()
    except OSError:
        pass  # a lock file left behind is harmless: the lock itself dies with the descriptor
    finally:
        os.close(fd)


if sys.platform == "win32":
    import msvcrt

    def _lock_fd(fd: int, *, shared: bool = False) -> None:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except PermissionError:
            raise BlockingIOError from None

    def _unlock_fd(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock_fd(fd: int, *, shared: bool = False) -> None:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)

    def _unlock_fd(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
