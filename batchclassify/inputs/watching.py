"""Following folders that keep filling (``run --watch``): new files noticed, held until whole.

Two ways to notice a new file (``Follower.mode`` says which is in use):

- notifications (``watchfiles``: Rust's notify over inotify, FSEvents, kqueue), started before
  the first walk so nothing written during it is missed: a path created, written or renamed
  into place is looked at; a folder created or moved in is walked (a moved-in subtree makes
  one event, for its top; files made before its watch was added make none);
- polling, where notifications do not work (a network file system: another machine's writes
  make no inotify event here; ``watchfiles`` not installed; ``--poll`` given): every ``poll``
  seconds each folder's mtime is read, and a folder whose mtime changed (an entry added,
  removed or renamed) is listed again. Per folder, not per file: a quiet folder of 100k files
  costs one ``stat`` a poll.

Either way a candidate (the walk's rules: a wanted extension, no hidden name on its path, no
export folder; an id the producer would keep) joins ``Settling``; it is handed on once its
size and mtime have stayed the same for ``settle`` seconds, over two looks at least. A file
still being written keeps changing, so no part of it is sent; a hidden or temporary name is
no candidate until it is renamed to an image's name; a file deleted meanwhile leaves the set
silently. Nothing else is held per file: done ids are in the resume index, the rest on disk.
"""

from __future__ import annotations

import os
import stat as stat_mode
import threading
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from ..config import WatchConfig
from ..errors import UsageError
from ..models import Item, Keep
from ..names import LocalIds, as_text, object_scheme
from ..summary import InputReport
from .sources import STDIN, is_export_folder, list_folder, source_kind, walk_folder

if TYPE_CHECKING:
    from .objectwatch import ObjectPrefixes

#: File systems where inotify does not see writes made by other machines: polled instead.
NETWORK_FILE_SYSTEMS = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "lustre", "afs",
        "beegfs", "gpfs", "fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.rclone",
        "fuse.glusterfs", "fuse.cephfs", "fuse.juicefs", "fuse.mountpoint-s3",
    }
)  # fmt: skip
#: A folder whose mtime is this recent is listed again at the next poll too: on a file system
#: with coarse timestamps an entry added in the same tick as a listing leaves the mtime as is.
_RECENT_FOLDER = 2.0
#: Notifications: the watcher thread's look at its stop flag (ms), and the quiet time that
#: ends a burst of changes (ms). Idle, it wakes 10 times a second, for microseconds.
_STEP_MS = 100
_DEBOUNCE_MS = 300
_IDLE_WAIT = 1.0


def check_followable(sources: Sequence[str]) -> None:
    """``UsageError`` for a source ``--watch`` cannot follow: it follows folders and
    object-store prefixes."""
    for source in sources:
        kind = "stdin" if source == STDIN else source_kind(source)
        if kind not in ("dir", "object"):
            shown = "'-' (stdin)" if kind == "stdin" else as_text(source)
            raise UsageError(
                f"--watch follows folders and object-store prefixes: {shown} is a manifest, "
                "read once; run it without --watch, or give the folder its images arrive in"
            )


def check_interval(settle: float) -> float:
    """How often files still settling are looked at again: a quarter of ``settle``, within
    50 ms to 1 s (a file is ripe within that much after its ``settle`` seconds)."""
    return min(1.0, max(0.05, settle / 4))


#: What a look at a file or object finds: its size, what changes when it is written again
#: (a file's mtime in ns, an object's ETag), and when it was last written (wall seconds, if
#: known); ``None``: gone.
Look = tuple[int, object, float | None]


def look_at_file(path: str) -> Look | None:
    """A regular file's size and mtime; ``None`` if it is gone or not a file."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    if not stat_mode.S_ISREG(found.st_mode):
        return None
    return found.st_size, found.st_mtime_ns, found.st_mtime


@dataclass(slots=True)
class _Pending:
    item: Item
    size: int
    stamp: object
    since: float
    """(clock) Unchanged since then, as far as is known."""
    arrived: float
    """(clock) First seen."""
    looks: int


class Settling:
    """The files (or objects) seen but not yet whole: handed on once unchanged for
    ``settle`` seconds.

    ``look`` says what a file is now (``look_at_file``: ``os.stat``; an object: its entry in
    the latest listing). A file first seen with an mtime older than ``settle`` (moved in with
    its times kept, or there before the job; an object PUT that long ago) has been unchanged
    that long already. Once its size or stamp changes under our eyes, only our own looks
    count.
    """

    def __init__(
        self,
        settle: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        look: Callable[[str], Look | None] = look_at_file,
    ) -> None:
        self._settle = settle
        self._clock = clock
        self._wall = wall
        self._look = look
        self._files: dict[str, _Pending] = {}

    def __len__(self) -> int:
        return len(self._files)

    def __contains__(self, path: str) -> bool:
        return path in self._files

    def add(self, item: Item, *, arrived: float | None = None) -> None:
        """Start watching ``item``'s file (nothing if it is watched already, or gone)."""
        path = item.path
        if path is None or path in self._files:
            return
        found = self._look(path)
        if found is None:
            return  # gone already (or never a file): nothing to send, nothing to say
        size, stamp, modified = found
        now = self._clock()
        age = 0.0 if modified is None else max(0.0, self._wall() - modified)
        self._files[path] = _Pending(
            item,
            size,
            stamp,
            since=now - age,
            arrived=now if arrived is None else arrived,
            looks=1,
        )

    def discard(self, path: str) -> None:
        self._files.pop(path, None)

    def ripe(self) -> list[tuple[Item, float]]:
        """Look at every file again; those unchanged for ``settle`` seconds leave the set,
        with the time each arrived. Files deleted meanwhile leave it silently."""
        now = self._clock()
        done: list[tuple[Item, float]] = []
        for path, pending in list(self._files.items()):
            found = self._look(path)
            if found is None:
                del self._files[path]  # deleted (or moved away) before it was read
                continue
            size, stamp, _ = found
            if size != pending.size or stamp != pending.stamp:
                pending.size, pending.stamp = size, stamp
                pending.since, pending.looks = now, 1
                continue
            pending.looks += 1
            if now - pending.since >= self._settle:
                del self._files[path]
                done.append((pending.item, pending.arrived))
        return done


class _Roots:
    """The followed folders: an absolute path seen by the watcher -> the path as the user
    spelled it (the walk's ``path``), or ``None`` outside them or under a hidden name."""

    def __init__(self, sources: Sequence[str]) -> None:
        self.folders = [(os.path.abspath(source), source) for source in sources]

    def spelled(self, path: str) -> str | None:
        for top, given in self.folders:
            if path.startswith(top) and path[len(top) : len(top) + 1] == os.sep:
                relative = path[len(top) + 1 :]
                if any(part.startswith(".") for part in relative.split(os.sep)):
                    return None  # hidden (a temporary name, a dot-folder): as the walk does
                # A folder an export wrote, on the way down, is left out as by the walk.
                folder = top
                for part in relative.split(os.sep)[:-1]:
                    folder = os.path.join(folder, part)
                    if is_export_folder(folder):
                        return None
                return os.path.join(given, relative)
        return None


class Follower:
    """Notices new files in the folders (and new objects under the object-store prefixes:
    ``objectwatch.py``) and holds them until whole; ``follow`` hands them on.

    ``keep`` is the producer's screen without its counting (``Screen.would_keep``): files
    whose ids were recorded or queued are not even looked at.
    """

    def __init__(
        self,
        sources: Sequence[str],
        config: WatchConfig,
        *,
        extensions: frozenset[str],
        keep: Keep,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        mount_table: str = "/proc/self/mountinfo",
        note: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.config = config
        self._sources = tuple(sources)
        folders = [source for source in sources if object_scheme(source) is None]
        prefixes = [source for source in sources if object_scheme(source) is not None]
        self._roots = _Roots(folders)
        self._note = note
        self._wanted = frozenset(ext.lower().lstrip(".") for ext in extensions)
        self._keep = keep
        self._clock = clock
        self._wall = wall
        self._ids = LocalIds()
        self._report = InputReport()  # the walk's counts of names passed over: not shown again
        self.objects: ObjectPrefixes | None = None
        if prefixes:
            from .objectwatch import ObjectPrefixes

            self.objects = ObjectPrefixes(
                prefixes,
                extensions=self._wanted,
                keep=keep,
                every=config.poll or WatchConfig.DEFAULT_OBJECT_POLL,
            )
        self.settling = Settling(config.settle, clock=clock, wall=wall, look=self._look)
        self.last_news = clock()
        """(clock) When a file last arrived, or following began: ``--idle-exit`` counts
        from here."""
        self.mode, self.poll_every, self.why = _choose_mode(
            config, [top for top, _ in self._roots.folders], mount_table
        )
        if self.objects is not None:
            if not folders:  # nothing but prefixes: they are polled, and that is the news
                self.mode, self.poll_every, self.why = "polling", None, self.objects.why
            else:
                self.why = f"{self.why}; {self.objects.why}"
        self._notify: _Notifications | None = None
        self.ended_by: str | None = None
        """Why ``follow`` ended: ``"until"``, ``"idle"``, or ``None`` (told to stop)."""
        self._folders: dict[str, tuple[int, str]] = {}
        """Polling: each folder met (as spelled) -> (its mtime at its last listing, its id)."""
        self._folder_ids: set[str] = set()

    # -- the first walk -------------------------------------------------------------------

    def start(self) -> None:
        """Start noticing (notifications: before the first walk, so none of its time is
        missed). Polling lists the folders once the walk is over instead."""
        if self.mode == "inotify" and self._roots.folders:
            self._notify = _Notifications([top for top, _ in self._roots.folders])

    def set_aside(self, batch: list[Item], release: Callable[[str], None]) -> list[Item]:
        """The first walk's items minus the files changed within ``settle`` seconds, which
        may still be being written: those are released from the screen (``release``) and
        settle like new files. Blocking (a ``stat`` per item): call it in the walk's thread."""
        now = self._wall()
        settle = self.config.settle
        kept: list[Item] = []
        for item in batch:
            if item.problem is None and item.path is not None and object_scheme(item.path) is None:
                # (An object is whole once listed: a PUT is atomic. Only files settle here.)
                try:
                    found = os.stat(item.path)
                except OSError:
                    found = None  # let the worker say what is wrong with it
                if found is not None and now - found.st_mtime < settle:
                    release(item.id)
                    self.settling.add(item)
                    continue
            kept.append(item)
        return kept

    # -- following ------------------------------------------------------------------------

    async def follow(self, stop: anyio.Event) -> AsyncGenerator[list[tuple[Item, float]], None]:
        """Yield the whole new files, a list at a time, each with the time it arrived, until
        ``stop`` is set, ``--watch-until`` passes, or nothing arrived for ``--idle-exit``.

        ``self.ended_by`` says which (``None``: ``stop``).
        """
        self.ended_by = None
        # Idle from now, not from before the first walk (which may take longer than
        # --idle-exit); and what arrived during the walk is looked at before anything ends.
        self.last_news = self._clock()
        if self.mode == "polling":
            await anyio.to_thread.run_sync(self._poll_folders)
        elif self._notify is not None:
            changes = await self._notify.wait(0, stop)
            if changes:
                await anyio.to_thread.run_sync(self._look_at, changes)
        objects = self.objects
        if objects is not None:
            await self._list_objects(objects)
        next_poll = self._clock() + (self.poll_every or 0)
        next_listing = self._clock() + (0.0 if objects is None else objects.every)
        check_every = check_interval(self.config.settle)
        while not stop.is_set():
            ended = self._over()
            if ended is not None:
                self.ended_by = ended
                return
            now = self._clock()
            wait = _IDLE_WAIT if not self.settling else check_every
            if self.mode == "polling" and self.poll_every is not None:
                wait = min(wait, max(0.0, next_poll - now))
            if objects is not None:
                wait = min(wait, max(0.0, next_listing - now))
            wait = min(wait, self._until_end(now))
            if self._notify is not None:
                changes = await self._notify.wait(wait, stop)
                if changes:
                    await anyio.to_thread.run_sync(self._look_at, changes)
            else:
                with anyio.move_on_after(wait):
                    await stop.wait()
                if stop.is_set():
                    return
                if self.poll_every is not None and self._clock() >= next_poll:
                    await anyio.to_thread.run_sync(self._poll_folders)
                    next_poll = self._clock() + self.poll_every
            if objects is not None and self._clock() >= next_listing:
                await self._list_objects(objects)
                next_listing = self._clock() + objects.every
            if self.settling:
                ripe = await anyio.to_thread.run_sync(self.settling.ripe)
                if ripe:
                    self.last_news = self._clock()
                    yield ripe

    async def _list_objects(self, objects: ObjectPrefixes) -> None:
        """List the prefixes again (in a worker thread); say what failed, once."""
        for note in await anyio.to_thread.run_sync(objects.list_all, self._arrived):
            self._note(note)

    def _look(self, path: str) -> Look | None:
        """What ``Settling`` sees of a file (``os.stat``) or an object (the latest listing)."""
        if self.objects is not None and object_scheme(path) is not None:
            return self.objects.look(path)
        return look_at_file(path)

    def close(self) -> None:
        if self._notify is not None:
            self._notify.close()
            self._notify = None

    def _over(self) -> str | None:
        """Why following ends now, if it does."""
        config = self.config
        if config.until is not None and self._wall() >= config.until:
            return "until"
        idle = config.idle_exit
        if idle is not None and not self.settling and self._clock() - self.last_news >= idle:
            return "idle"
        return None

    def _until_end(self, now: float) -> float:
        """Seconds until ``--watch-until`` or ``--idle-exit`` may end the following."""
        config = self.config
        left = _IDLE_WAIT
        if config.until is not None:
            left = min(left, max(0.0, config.until - self._wall()))
        if config.idle_exit is not None:
            left = min(left, max(0.0, self.last_news + config.idle_exit - now))
        return left

    # -- what was noticed (in a worker thread) --------------------------------------------

    def _candidate(self, path: str) -> Item | None:
        """The item of a file the watcher named, if the walk would list it and it is new."""
        spelled = self._roots.spelled(path)
        if spelled is None:
            return None
        name = os.path.basename(spelled)
        dot = name.rfind(".")
        if dot <= 0 or name[dot + 1 :].lower() not in self._wanted:
            return None
        item_id = self._ids.file(spelled)
        return Item(id=item_id, path=spelled) if self._keep(item_id) else None

    def _arrived(self, item: Item) -> None:
        if item.path is not None and item.path not in self.settling:
            self.settling.add(item)
            self.last_news = self._clock()

    def _look_at(self, changes: set[tuple[int, str]]) -> None:
        """Notifications: a created folder is walked; a file is a candidate; a deleted one
        leaves the settling set (its file is gone: nothing to send)."""
        for kind, path in changes:
            try:
                found = os.stat(path)
            except OSError:
                spelled = self._roots.spelled(path)
                if spelled is not None:
                    self.settling.discard(spelled)
                continue
            if stat_mode.S_ISDIR(found.st_mode):
                if kind == _ADDED:  # created or moved in; not a folder whose entries changed
                    spelled = self._roots.spelled(path)
                    if spelled is not None:
                        self._walk(spelled)
            elif stat_mode.S_ISREG(found.st_mode):
                item = self._candidate(path)
                if item is not None:
                    self._arrived(item)

    def _walk(self, folder: str) -> None:
        try:
            for item in walk_folder(folder, self._wanted, self._report, self._ids, self._keep):
                if item is not None and item.problem is None:
                    self._arrived(item)
        except UsageError:
            pass  # gone again before it could be walked

    def _poll_folders(self) -> None:
        """Polling: list again each folder whose mtime changed since its last listing (all
        of them the first time), and every folder new since."""
        wall = self._wall()
        if not self._folders:
            for _, given in self._roots.folders:
                self._list(given, self._ids.folder(given), wall)
            return
        for folder, (mtime, ident) in list(self._folders.items()):
            try:
                now_mtime = os.stat(folder).st_mtime_ns
            except OSError:
                del self._folders[folder]  # gone; it is listed again if it comes back
                self._folder_ids.discard(ident)
                continue
            if now_mtime != mtime or wall - mtime / 1e9 < _RECENT_FOLDER:
                self._list(folder, ident, wall)

    def _list(self, folder: str, ident: str, wall: float) -> None:
        """List one folder by the walk's rules: its new files are candidates, its subfolders
        not met before are listed too."""
        try:
            mtime = os.stat(folder).st_mtime_ns
        except OSError:
            self._folders.pop(folder, None)
            return
        self._folders[folder] = (mtime, ident)
        self._folder_ids.add(ident)
        listing = list_folder(folder, ident, self._wanted, self._report, self._keep)
        while True:
            try:
                item = next(listing)
            except StopIteration as end:
                subfolders: list[tuple[str, bool]] = end.value
                break
            if item is not None and item.problem is None:
                self._arrived(item)
        for name, is_link in subfolders:
            child = os.path.join(folder, name)
            if child in self._folders or is_export_folder(child):
                continue
            child_id = self._ids.folder(child) if is_link else os.path.join(ident, name)
            if child_id in self._folder_ids:
                continue  # a symlink back to a folder already followed (a loop)
            self._list(child, child_id, wall)


_ADDED = 1  # watchfiles.Change.added: created, or renamed / moved into place


class _Notifications:
    """``watchfiles``' Rust watcher: its thread collects changes from the moment it is made;
    ``wait`` takes them, waiting in a worker thread that ``stop`` (or a cancel) ends."""

    def __init__(self, folders: list[str]) -> None:
        from watchfiles._rust_notify import RustNotify

        self._watcher = RustNotify(folders, False, False, 300, True, True)
        self._stop = threading.Event()

    async def wait(self, seconds: float, stop: anyio.Event) -> set[tuple[int, str]]:
        """Changes seen within ``seconds`` (an empty set if none, or once ``stop`` is set)."""
        timeout_ms = max(1, int(seconds * 1000))
        flag = self._stop
        flag.clear()
        async with anyio.create_task_group() as group:

            async def stop_when_told() -> None:
                await stop.wait()
                flag.set()

            group.start_soon(stop_when_told)
            try:
                # Not abandoned on cancel: the flag ends the thread's wait within _STEP_MS,
                # and the watcher is never used by two threads.
                found = await anyio.to_thread.run_sync(
                    self._watcher.watch, _DEBOUNCE_MS, _STEP_MS, timeout_ms, flag
                )
            finally:
                flag.set()
                group.cancel_scope.cancel()
        return found if isinstance(found, set) else set()

    def close(self) -> None:
        self._watcher.close()


def _choose_mode(
    config: WatchConfig, folders: list[str], mount_table: str
) -> tuple[str, float | None, str]:
    """``("inotify", None, why)`` or ``("polling", seconds, why)``: notifications unless
    ``--poll`` was given, ``watchfiles`` is missing, or a folder is on a network file system."""
    if config.poll is not None:
        return "polling", config.poll, f"polling every {config.poll:g} s (--poll)"
    every = WatchConfig.DEFAULT_POLL
    for folder in folders:
        kind = file_system_of(folder, mount_table)
        if kind in NETWORK_FILE_SYSTEMS:
            return (
                "polling",
                every,
                (
                    f"polling every {every:g} s: {as_text(folder)} is on {kind}, where file-system "
                    "notifications miss other machines' writes (--poll to choose the interval)"
                ),
            )
    try:
        import watchfiles  # noqa: F401
    except ImportError:
        return (
            "polling",
            every,
            (
                f"polling every {every:g} s: file-system notifications need the watch extra "
                "(pip install 'batchclassify[watch]')"
            ),
        )
    return "inotify", None, "file-system notifications (inotify)"


def file_system_of(path: str, mount_table: str = "/proc/self/mountinfo") -> str | None:
    """The type of the file system ``path`` is on (``"ext4"``, ``"nfs4"``...), from the
    mount table (Linux); ``None`` where it cannot be read."""
    try:
        with open(mount_table, encoding="utf-8", errors="surrogateescape") as table:
            lines = table.read().splitlines()
    except OSError:
        return None
    real = os.path.realpath(path)
    best, kind = "", None
    for line in lines:
        fields, sep, rest = line.partition(" - ")
        parts = fields.split()
        if not sep or len(parts) < 5 or not rest:
            continue
        point = parts[4].replace("\\040", " ")
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, rest.split()[0]
    return kind
