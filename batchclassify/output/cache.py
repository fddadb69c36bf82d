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
an insert that keeps an entry already there (two jobs answering the same image store it
once). A ``meta`` table marks the file as ours with a schema version; any other file is
refused, never changed, and so is one of ours that is damaged (SQLite's ``quick_check`` at
open); damage found later turns into ``CacheDamagedError``, which a job outlives.

Only real answers (``models.is_answer``) are stored and served. A cache written before that
rule may hold entries of failed images (their rows' empty answer columns): a lookup takes
such an entry for a miss, a real answer replaces it, and the first job that opens the file
deletes them all (``meta`` then says so, and the file is not scanned again).
"""

from __future__ import annotations

import hashlib
import os
import time
from array import array
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import xxhash

from ..config import JobConfig
from ..errors import UsageError
from ..models import ANSWER_FIELDS, ContradictoryRowError, Item, is_answer

if TYPE_CHECKING:
    import sqlite3  # imported where a cache file is opened: a job without --cache never is

TOOL = "batchclassify-answer-cache"
SCHEMA_VERSION = 1
#: What ``--cache default`` names: ``$XDG_CACHE_HOME/batchclassify/answers.sqlite``.
DEFAULT_WORD = "default"
#: How long a writer waits for another job's transaction before giving up on this commit.
BUSY_TIMEOUT_MS = 10_000
#: The ``meta`` entry saying the file holds nothing but answers (its failed images' entries,
#: stored by a batchclassify from before ``is_answer`` was checked, are deleted).
ANSWERS_ONLY = "answers_only"

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
    jpeg_quality: int = JobConfig.jpeg_quality

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


class CacheDamagedError(UsageError):
    """The cache file is damaged (SQLite: ``database disk image is malformed``). At open, the
    job is refused (exit 2); mid-job, the job goes on without the cache (``answers.py``)."""

    def __init__(self, path: Path, detail: object) -> None:
        super().__init__(
            f"--cache {path}: is damaged ({detail}); it is left as it is. Move it away (its "
            "answers are lost: images are sent again) or name another file, or use "
            "--cache default"
        )
        self.path = path
        self.detail = str(detail)


#: SQLite's primary result code for pages that do not hold what they should.
_SQLITE_CORRUPT = 11


def _is_damage(exc: sqlite3.Error) -> bool:
    """Damage (``database disk image is malformed``), not a passing condition such as a
    busy file or a full disk."""
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == _SQLITE_CORRUPT


def _stored_is_answer(answer: bytes) -> bool:
    """``is_answer`` of a stored entry: the SQL function ``is_answer(answer)``."""
    try:
        return is_answer(orjson.loads(answer))
    except (orjson.JSONDecodeError, AttributeError):  # not JSON, or not an object
        return False


class AnswerCache:
    """One open cache file. Writes are buffered and committed by ``commit()`` in one
    transaction (the job calls it with each output flush); ``get`` sees buffered ones too."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        self._pending: dict[bytes, tuple[str, str, bytes, float | None]] = {}
        self._db = _open(path, create=create)
        import sqlite3  # loaded by _open

        self._sqlite_error = sqlite3.Error
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
        """The answer stored under ``key``; ``None`` for a miss, and for an entry that is not
        a real answer (``is_answer``: written before that was checked). Raises
        ``CacheDamagedError`` if the file turns out damaged."""
        pending = self._pending.get(key)
        if pending is not None:  # checked by put()
            return CachedAnswer(orjson.loads(pending[2]), pending[1])
        # A bare try, not ``_reading()``: free when nothing is raised, and this runs per image.
        try:
            known = self._known if self._known is not None else self._refresh_known()
            if key not in known:
                return None  # a miss, the common case of a first run: no query
            found = self._db.execute(
                "SELECT answer, source_id FROM answers WHERE key = ?", (key,)
            ).fetchone()
        except self._sqlite_error as exc:
            raise self._damaged_or(exc) from None
        if found is None:
            return None
        try:
            answer = orjson.loads(found[0])
        except orjson.JSONDecodeError:
            return None
        if type(answer) is not dict or not is_answer(answer):
            return None
        return CachedAnswer(answer, found[1])

    def contains(self, keys: list[bytes]) -> set[bytes]:
        """Which of ``keys`` hold a real answer: one query for a batch (``plan``)."""
        found = {key for key in keys if key in self._pending}
        rest = [key for key in keys if key not in found]
        with self._reading():
            for start in range(0, len(rest), 500):  # SQLite's limit on parameters is 999+
                chunk = rest[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key FROM answers WHERE key IN ({marks}) AND is_answer(answer)", chunk
                )
                found.update(row[0] for row in rows)
        return found

    def put(self, key: bytes, row: dict[str, Any], *, model: str) -> None:
        """Remember the answer of ``row`` under ``key``, until ``commit()``. Only a real
        answer (``is_answer``) is taken: anything else is a bug, refused loudly."""
        fields = {name: row.get(name) for name in ANSWER_FIELDS}
        if row.get("status") != "ok" or not is_answer(fields):
            raise ContradictoryRowError(
                f"answer cache: the row of {row.get('id')!r} (status {row.get('status')!r}) "
                "holds no answer to store"
            )
        self._pending[key] = (model, row["id"], orjson.dumps(fields), row.get("credits"))

    def commit(self) -> None:
        """Write what ``put`` buffered, in one transaction. ``sqlite3.OperationalError``
        leaves it buffered for the next call (another job held the file longer than the
        timeout); ``CacheDamagedError``: the file is damaged.

        A key already stored keeps its entry (two jobs answering one image store it once),
        unless that entry is not a real answer: then the answer replaces it."""
        if not self._pending:
            return
        now = time.time()
        # Sorted: neighbouring keys share index pages, so a batch touches fewer of them.
        rows = sorted((k, m, s, a, c, now) for k, (m, s, a, c) in self._pending.items())
        with self._reading(), self._transaction():
            self._db.executemany(
                "INSERT INTO answers (key, model, source_id, answer, credits, created)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
                " model = excluded.model, source_id = excluded.source_id,"
                " answer = excluded.answer, credits = excluded.credits,"
                " created = excluded.created WHERE NOT is_answer(answers.answer)",
                rows,
            )
        self._pending.clear()
        if self._known is not None:
            with self._reading():
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
        """Real answers only (``is_answer``); ``not_answers``: entries of failed images a
        batchclassify from before that check stored, which no job serves."""
        with self._reading():
            count, credits, first, last = self._db.execute(
                "SELECT count(*), sum(credits), min(created), max(created) FROM answers"
                " WHERE is_answer(answer)"
            ).fetchone()
            models = self._db.execute(
                "SELECT model, count(*) FROM answers WHERE is_answer(answer)"
                " GROUP BY model ORDER BY 2 DESC"
            ).fetchall()
            (total,) = self._db.execute("SELECT count(*) FROM answers").fetchone()
        return {
            "path": str(self.path),
            "answers": count,
            "not_answers": total - count,
            "models": {model: n for model, n in models},
            "credits_stored": round(credits or 0.0, 6),
            "oldest": first,
            "newest": last,
            "bytes": _size_on_disk(self.path),
        }

    def clear(self, *, model: str | None = None) -> int:
        """Delete the stored answers (of one model); the file stays a valid, empty cache."""
        with self._reading(), self._transaction():
            if model is None:
                deleted = self._db.execute("DELETE FROM answers").rowcount
            else:
                deleted = self._db.execute("DELETE FROM answers WHERE model = ?", (model,)).rowcount
        self._known, self._seen_rowid = None, 0
        with self._reading():
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.execute("VACUUM")
        return int(deleted)

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """Damage found while using the file becomes ``CacheDamagedError``; a busy file's
        error passes unchanged."""
        try:
            yield
        except self._sqlite_error as exc:
            raise self._damaged_or(exc) from None

    def _damaged_or(self, exc: sqlite3.Error) -> Exception:
        """``exc`` as raised by a cache: the one place SQLite's exceptions are told apart."""
        return CacheDamagedError(self.path, exc) if _is_damage(exc) else exc

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
        db.create_function("is_answer", 1, _stored_is_answer, deterministic=True)
        _check_or_create(db, path)
        _check_whole(db, path)
        db.execute("PRAGMA journal_mode = WAL")
        # WAL with synchronous=NORMAL: a commit survives a kill -9 of the process (not a power
        # cut, which may lose the last commits but never corrupts the file).
        db.execute("PRAGMA synchronous = NORMAL")
        if create:
            _delete_non_answers(db, path)
    except BaseException:
        db.close()
        raise
    return db


def _check_whole(db: sqlite3.Connection, path: Path) -> None:
    """Refuse a damaged file before a job relies on it: SQLite's ``quick_check`` reads every
    page (~0.3 s for a million answers held in the OS's cache), outside any write lock."""
    import sqlite3

    try:
        found = db.execute("PRAGMA quick_check(1)").fetchone()
    except sqlite3.Error as exc:
        if _is_damage(exc):
            raise CacheDamagedError(path, exc) from None
        raise
    if found is None or found[0] != "ok":
        # Its first problem, on one line ("*** in database main ***\nOn tree page 9 ...").
        first = str(found and found[0]).splitlines()[-1]
        raise CacheDamagedError(path, f"database disk image is malformed: {first}")


def _delete_non_answers(db: sqlite3.Connection, path: Path) -> None:
    """Once per file: delete the entries of failed images an older batchclassify stored
    (no job serves them; they would only be counted). ``meta`` remembers it was done."""
    import sqlite3

    try:
        if db.execute("SELECT 1 FROM meta WHERE name = ?", (ANSWERS_ONLY,)).fetchone():
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM answers WHERE NOT is_answer(answer)")
            db.execute("INSERT OR IGNORE INTO meta (name, value) VALUES (?, '1')", (ANSWERS_ONLY,))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        if _is_damage(exc):
            raise CacheDamagedError(path, exc) from None
        raise


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
                    [("tool", TOOL), ("schema", str(SCHEMA_VERSION)), (ANSWERS_ONLY, "1")],
                )
            else:
                _check_ours(db, path, tables)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        if _is_damage(exc):  # ours or not, its pages are broken ("file is not a database": foreign)
            raise CacheDamagedError(path, exc) from None
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

