"""The answer cache: a SQLite file of answers keyed by the bytes sent and the settings.

A key is a 128-bit hash of what decides an answer: the model (id and version), the
confidence threshold, the ``--max-size``/``--jpeg-quality`` settings when downscaling, and
the *request body itself* (the base64 the worker sends, after any downscale); for an item
the server fetches by URL, the URL as written. Never a path, a name or an mtime: a copy of an
image anywhere hits, an image edited in place misses. The body is hashed with XXH3-128
(~3 µs for a 50 KB image, against ~75 µs for BLAKE2b; benchmarks/RESULTS.md), seeded with
a BLAKE2b digest of the settings. Only answers are stored, never images: about
300 bytes an entry.

Safe for concurrent jobs and shards: WAL journal (readers never wait for the writer; a
kill -9 loses at most the uncommitted batch), a busy timeout for the writers, and
``INSERT OR IGNORE`` (two jobs answering the same image store it once). A ``meta`` table
marks the file as ours with a schema version; any other file is refused, never changed.
"""

from __future__ import annotations

import hashlib
import os
import time
from array import array
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import xxhash

from ..errors import UsageError
from ..models import ANSWER_FIELDS, Item

if TYPE_CHECKING:
    import sqlite3  # imported where a cache file is opened: a job without --cache never is

TOOL = "batchclassify-answer-cache"
SCHEMA_VERSION = 1
#: What ``--cache default`` names: ``$XDG_CACHE_HOME/batchclassify/answers.sqlite``.
DEFAULT_WORD = "default"
#: How long a writer waits for another job's transaction before giving up on this commit.
BUSY_TIMEOUT_MS = 10_000

_SCHEMA = (
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # A rowid table with a unique index, not WITHOUT ROWID keyed by the hash: rows are
    # appended and only the 16-byte keys land at random places in a B-tree, which makes an
    # insert 3-4x cheaper (benchmarks/RESULTS.md).
    "CREATE TABLE answers (key BLOB NOT NULL UNIQUE, model TEXT NOT NULL,"
    " source_id TEXT NOT NULL, answer BLOB NOT NULL, credits REAL, created REAL NOT NULL)",
)


def default_cache_path() -> Path:
    """``$XDG_CACHE_HOME/batchclassify/answers.sqlite`` (``~/.cache/...`` without it)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "batchclassify" / "answers.sqlite"


def resolve_cache_path(text: str) -> Path:
    """``--cache`` as a path: the word ``default`` names the per-user cache file."""
    return default_cache_path() if text == DEFAULT_WORD else Path(text).expanduser()


@dataclass(frozen=True, slots=True)
class KeySettings:
    """The job settings an answer depends on, besides the image."""

    model: str
    confidence: float | None = None
    max_size: int | None = None
    jpeg_quality: int = 90

    def prefix(self) -> bytes:
        # The server's default threshold is 0.4 and a missing one means that; quality only
        # matters to a downscaled copy.
        confidence = "server" if self.confidence is None else repr(float(self.confidence))
        scale = "as-is" if self.max_size is None else f"{self.max_size}@{self.jpeg_quality}"
        return f"v{SCHEMA_VERSION}\0{self.model}\0{confidence}\0{scale}\0".encode()


class Keys:
    """Turns an item (and the body the worker holds for it) into its cache key.

    One XXH3-128 pass over the body, seeded from the settings (BLAKE2b of them, once): other
    settings give unrelated keys for the same bytes at no cost per image. Bodies and URLs
    use different seeds, so a URL can never share a key with a body.
    """

    def __init__(self, settings: KeySettings) -> None:
        self.settings = settings
        prefix = settings.prefix()
        self._body_seed = _seed(prefix + b"body")
        self._url_seed = _seed(prefix + b"url")

    def for_body(self, body: bytes) -> bytes:
        return xxhash.xxh3_128_digest(body, self._body_seed)

    def for_url(self, url: str) -> bytes:
        return xxhash.xxh3_128_digest(url.encode("utf-8", "surrogateescape"), self._url_seed)

    def for_item(self, item: Item, body: bytes | None) -> bytes:
        return self.for_body(body) if body is not None else self.for_url(item.url or "")


def _seed(text: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


class _KeySet:
    """The first 8 bytes of every stored key, in an open-addressing ``array('Q')`` (~11 bytes
    a key): a miss is answered here without a query. SQLite hands the GIL back and forth on
    every query, which on a busy event loop costs several times the query itself."""

    def __init__(self) -> None:
        self._slots = array("Q", bytes(8 * 1024))
        self._count = 0

    def _find(self, value: int) -> int:
        slots, mask = self._slots, len(self._slots) - 1
        slot = value & mask
        while slots[slot] != value and slots[slot] != 0:
            slot = (slot + 1) & mask
        return slot

    def __contains__(self, key: bytes) -> bool:
        value = int.from_bytes(key[:8], "little") or 1
        return self._slots[self._find(value)] == value

    def add(self, key: bytes) -> None:
        value = int.from_bytes(key[:8], "little") or 1
        slot = self._find(value)
        if self._slots[slot] == 0:
            self._slots[slot] = value
            self._count += 1
            if self._count * 10 > len(self._slots) * 7:
                old = self._slots
                self._slots = array("Q", bytes(16 * len(old)))
                for value in old:
                    if value:
                        self._slots[self._find(value)] = value


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    answer: dict[str, Any]
    """The answer columns of the row that was stored (``models.ANSWER_FIELDS``)."""
    source_id: str
    """The id of the item whose request brought this answer."""


def refused(path: Path, why: str) -> UsageError:
    return UsageError(
        f"--cache {path}: {why}; it is left as it is. Name another file, or use --cache default"
    )


class AnswerCache:
    """One open cache file. Writes are buffered and committed by ``commit()`` in one
    transaction (the job calls it with each output flush); ``get`` sees buffered ones too."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        self._pending: dict[bytes, tuple[str, str, bytes, float | None]] = {}
        self._db = _open(path, create=create)
        # Loaded on the first lookup (``cache stats`` needs none); refreshed at each commit
        # with the rows appended since, by this job or any other.
        self._known: _KeySet | None = None
        self._seen_rowid = 0

    def _refresh_known(self) -> _KeySet:
        known = self._known if self._known is not None else _KeySet()
        rows = self._db.execute(
            "SELECT rowid, key FROM answers WHERE rowid > ? ORDER BY rowid", (self._seen_rowid,)
        )
        for rowid, key in rows:
            known.add(key)
            self._seen_rowid = rowid
        self._known = known
        return known

    # -- lookups and stores ---------------------------------------------------------------

    def get(self, key: bytes) -> CachedAnswer | None:
        pending = self._pending.get(key)
        if pending is not None:
            return CachedAnswer(orjson.loads(pending[2]), pending[1])
        known = self._known if self._known is not None else self._refresh_known()
        if key not in known:
            return None  # a miss, the common case of a first run: no query
        found = self._db.execute(
            "SELECT answer, source_id FROM answers WHERE key = ?", (key,)
        ).fetchone()
        if found is None:
            return None
        return CachedAnswer(orjson.loads(found[0]), found[1])

    def contains(self, keys: list[bytes]) -> set[bytes]:
        """Which of ``keys`` are stored: one query for a batch (``plan``)."""
        found = {key for key in keys if key in self._pending}
        rest = [key for key in keys if key not in found]
        for start in range(0, len(rest), 500):  # SQLite's limit on parameters is 999+
            chunk = rest[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT key FROM answers WHERE key IN ({marks})", chunk)
            found.update(row[0] for row in rows)
        return found

    def put(self, key: bytes, row: dict[str, Any], *, model: str) -> None:
        """Remember the answer of ``row`` (an ok row) under ``key``, until ``commit()``."""
        answer = orjson.dumps({name: row.get(name) for name in ANSWER_FIELDS})
        self._pending[key] = (model, row["id"], answer, row.get("credits"))

    def commit(self) -> None:
        """Write what ``put`` buffered, in one transaction. ``sqlite3.Error`` leaves it
        buffered for the next call (another job held the file longer than the timeout)."""
        if not self._pending:
            return
        now = time.time()
        # Sorted: neighbouring keys share index pages, so a batch touches fewer of them.
        rows = sorted((k, m, s, a, c, now) for k, (m, s, a, c) in self._pending.items())
        with self._transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO answers (key, model, source_id, answer, credits, created)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
        self._pending.clear()
        if self._known is not None:
            self._refresh_known()

    def close(self) -> None:
        try:
            self.commit()
        finally:
            self._db.close()

    def close_quietly(self) -> None:
        """Close without storing what is still buffered (a commit just failed)."""
        self._pending.clear()
        self._db.close()

    # -- the `cache` command --------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        count, credits, first, last = self._db.execute(
            "SELECT count(*), sum(credits), min(created), max(created) FROM answers"
        ).fetchone()
        models = self._db.execute(
            "SELECT model, count(*) FROM answers GROUP BY model ORDER BY 2 DESC"
        ).fetchall()
        return {
            "path": str(self.path),
            "answers": count,
            "models": {model: n for model, n in models},
            "credits_stored": round(credits or 0.0, 6),
            "oldest": first,
            "newest": last,
            "bytes": _size_on_disk(self.path),
        }

    def clear(self, *, model: str | None = None) -> int:
        """Delete the stored answers (of one model); the file stays a valid, empty cache."""
        with self._transaction():
            if model is None:
                deleted = self._db.execute("DELETE FROM answers").rowcount
            else:
                deleted = self._db.execute("DELETE FROM answers WHERE model = ?", (model,)).rowcount
        self._known, self._seen_rowid = None, 0
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.execute("VACUUM")
        return int(deleted)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")


def _size_on_disk(path: Path) -> int:
    total = 0
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        with suppress(OSError):
            total += name.stat().st_size
    return total


def _open(path: Path, *, create: bool) -> sqlite3.Connection:
    """Open ``path`` as a cache, creating it if absent (and ``create``); refuse anything that
    is not one. A file is only written to once it is known to be ours (or empty)."""
    import sqlite3

    if path.is_dir():
        raise refused(path, "is a folder, not a cache file")
    if not path.exists():
        if not create:
            raise UsageError(f"{path}: no such cache file")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise refused(path, f"cannot create its folder ({exc.strerror or exc})") from None
    try:
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    except sqlite3.Error as exc:
        raise refused(path, f"cannot be opened ({exc})") from None
    try:
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        _check_or_create(db, path)
        db.execute("PRAGMA journal_mode = WAL")
        # WAL with synchronous=NORMAL: a commit survives a kill -9 of the process (not a power
        # cut, which may lose the last commits but never corrupts the file).
        db.execute("PRAGMA synchronous = NORMAL")
    except BaseException:
        db.close()
        raise
    return db


def _check_or_create(db: sqlite3.Connection, path: Path) -> None:
    import sqlite3

    try:
        db.execute("BEGIN IMMEDIATE")  # reads the header: a non-database fails here
        try:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            if not tables:  # a new (or empty) file, or another job is just creating it
                for statement in _SCHEMA:
                    db.execute(statement)
                db.executemany(
                    "INSERT INTO meta (name, value) VALUES (?, ?)",
                    [("tool", TOOL), ("schema", str(SCHEMA_VERSION))],
                )
            else:
                _check_ours(db, path, tables)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        raise refused(path, f"is not a batchclassify answer cache ({exc})") from None


def _check_ours(db: sqlite3.Connection, path: Path, tables: set[str]) -> None:
    if "meta" not in tables or "answers" not in tables:
        raise refused(path, "is an SQLite database, but not a batchclassify answer cache")
    meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
    if meta.get("tool") != TOOL:
        raise refused(path, "is an SQLite database, but not a batchclassify answer cache")
    version = meta.get("schema", "")
    if not version.isdigit() or int(version) > SCHEMA_VERSION:
        raise refused(
            path, f"was written by a newer batchclassify (cache schema {version}); upgrade"
        )


def open_cache(text: str, *, create: bool = True) -> AnswerCache:
    """The cache ``--cache TEXT`` names (``default``: the per-user one)."""
    return AnswerCache(resolve_cache_path(text), create=create)


def peek(path: Path) -> dict[str, Any]:
    """``stats`` of a cache file, opened and closed again."""
    with closing(AnswerCache(path, create=False)) as cache:
        return cache.stats()
