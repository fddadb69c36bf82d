"""Object storage (``s3://``, ``gs://``, any fsspec URL with a listing) as sources and paths.

A source ``s3://bucket/prefix/`` is listed lazily, one page of keys at a time (S3: one
``ListObjectsV2`` page, 1,000 keys), so a bucket of ten million objects never sits in memory;
each object becomes an ``Item`` whose id *and* path are its URL (``s3://bucket/key``), so
resume goes by that URL. A manifest may name objects the same way. Objects are read by the
workers (``read_object``) through fsspec's async API on fsspec's own event loop (s3fs, gcsfs),
or in a thread for a filesystem without one; one GET per object, never more bytes than can be
sent.

fsspec and its backends are optional (``batchclassify[s3]``, ``batchclassify[gcs]``): without
them an object URL is a clear error naming the extra. Credentials come from the backend's
standard places (environment, ``~/.aws`` profiles, instance roles; gcloud's application
default credentials), and an endpoint from ``AWS_ENDPOINT_URL`` or fsspec's configuration
(``FSSPEC_S3_ENDPOINT_URL``); batchclassify never reads or prints them, and every message it
builds from a backend's error has the credentials found in the environment cut out.

Listing order: S3 and GCS list keys in lexicographic (UTF-8 byte) order; other filesystems are
walked one folder at a time (``fs.walk``), files sorted by name. Keys ending in ``/`` (folder
markers) are passed over; a key with a path segment starting with ``.`` below the source's
prefix is hidden, as in a folder walk.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio

from ..error_types import ErrorType
from ..errors import ItemError, UsageError
from ..models import Item
from ..names import object_scheme
from ..summary import InputReport
from .encoding import EncodedImage, encode_data, max_raw_bytes

#: Objects asked for per listing call: S3's page size, so one call is one request.
PAGE_SIZE = 1000
#: With ``--max-size`` an object is downscaled before sending; read at most this much of it.
MAX_DOWNSCALE_SOURCE = 256 * 2**20
#: Objects up to this size are base64-encoded on the event loop; bigger ones in a thread.
INLINE_ENCODE_BYTES = 1 * 2**20
#: The extra that installs each known scheme's backend.
_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}
#: Environment variables whose values are secrets: cut out of every message.
_SECRET_VARIABLES = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "FSSPEC_S3_SECRET",
    "FSSPEC_S3_KEY",
    "FSSPEC_S3_TOKEN",
)
_filesystems: dict[tuple[str, str], Any] = {}
_problems: dict[tuple[str, str], str | None] = {}
_lock = threading.Lock()


# -- URLs ----------------------------------------------------------------------------------


def redact_credentials(text: str) -> str:
    """``text`` with the values of the credential variables in the environment replaced."""
    for name in _SECRET_VARIABLES:
        secret = os.environ.get(name)
        if secret and len(secret) >= 4 and secret in text:
            text = text.replace(secret, "***")
    return text


def support_problem(url: str) -> str | None:
    """Why ``url`` (an object URL) cannot be read here (the extra to install), or ``None``.

    Remembered per scheme and host (bucket): a manifest asks for every row."""
    key = _key(url)
    if key not in _problems:
        try:
            _filesystem(url)
            _problems[key] = None
        except UsageError as error:
            _problems[key] = str(error)
    return _problems[key]


def _key(url: str) -> tuple[str, str]:
    """What a filesystem depends on: the scheme, and the host (for s3://, the bucket)."""
    scheme, _, rest = url.partition("://")
    return scheme.lower(), rest.partition("/")[0]


def _filesystem(url: str) -> Any:
    """The fsspec filesystem for ``url``, one per scheme and host (they are thread-safe).

    fsspec takes what the URL holds (an FTP or HDFS host, say) as the filesystem's options;
    for S3 and GCS there are none, and every bucket shares fsspec's one cached instance.
    """
    key = _key(url)
    with _lock:
        if key in _filesystems:
            return _filesystems[key]
        scheme = key[0]
        extra = _EXTRAS.get(scheme)
        install = (
            f"pip install 'batchclassify[{extra}]'"
            if extra
            else f"pip install fsspec and the fsspec package for {scheme}://"
        )
        try:
            import fsspec.core
        except ImportError:
            raise UsageError(
                f"{scheme}:// URLs need fsspec, which is not installed: {install}"
            ) from None
        try:
            fs, _ = fsspec.core.url_to_fs(f"{scheme}://{url.partition('://')[2]}")
        except ImportError:
            raise UsageError(
                f"{scheme}:// URLs need a package that is not installed: {install}"
            ) from None
        except ValueError:
            raise UsageError(
                f"{scheme}:// is not a storage fsspec knows; sources are folders, manifests, "
                "'-', or object-storage URLs such as s3://bucket/prefix/"
            ) from None
        except Exception as exc:  # the backend's own checks of its options
            raise UsageError(f"cannot open {scheme}:// storage: {_backend_message(exc)}") from None
        _filesystems[key] = fs
        return fs


# -- listing -------------------------------------------------------------------------------


def check_source(source: str) -> None:
    """Raise ``UsageError`` if ``source`` cannot be listed (missing bucket, no access, no
    backend): one listing request for one key, before any request to the API."""
    scheme = object_scheme(source)
    assert scheme is not None
    try:
        fs = _filesystem(source)
    except UsageError as error:
        raise UsageError(f"{source}: {error}") from None
    pages = _pages(fs, source, limit=1)
    try:
        next(pages, None)
    except Exception as exc:  # the backend's errors, translated here, once
        raise UsageError(f"{source}: {_describe_listing_error(exc)}") from None
    finally:
        pages.close()


def iter_objects(source: str, extensions: frozenset[str], report: InputReport) -> Iterator[Item]:
    """The objects under ``source`` whose extension is wanted, as items; lazy, page by page.

    A listing that fails midway (after the backend's own retries) ends in one problem item;
    a rerun lists again and skips what was done.
    """
    try:
        for listed in _listed(source, extensions, report):
            yield Item(id=listed.url, path=listed.url)
    except UsageError:
        raise  # no backend for the scheme: the job's error, not a listing's
    except Exception as exc:  # the backend's errors, translated here, once
        yield Item(
            id=f"listing of {source}",
            problem=f"listing {source} failed midway: {_describe_listing_error(exc)}; "
            "rerun to list again (done objects are skipped)",
            problem_kind=ErrorType.UNREADABLE,
        )
    finally:
        _forget_listings(source)


def _forget_listings(source: str) -> None:
    """Drop what the backend keeps of its listings: gcsfs, adlfs and ftp keep every page
    listed, for the life of the (shared) filesystem, which for a prefix of millions of
    objects is a job's largest holding (a walk lists each page once; nothing reads it
    again)."""
    with _lock:
        fs = _filesystems.get(_key(source))
    if fs is not None:
        fs.invalidate_cache()


@dataclass(frozen=True, slots=True)
class Listed:
    """One object as a listing shows it."""

    url: str
    size: int
    stamp: str
    """What changes when the object is written again: its ETag (or the store's version)."""
    modified: float | None
    """When it was last written (``time.time()`` seconds; S3's LastModified), if known."""


def list_objects(source: str, extensions: frozenset[str]) -> Iterator[Listed]:
    """The wanted objects under ``source`` with their size, ETag and time, page by page, by
    the rules of ``iter_objects`` (``run --watch`` lists a prefix again every poll).

    ``UsageError`` naming the source when the listing fails (the store's answer described as
    ``check_source`` describes it)."""
    try:
        # Each listing asks the store: gcsfs, adlfs and ftp answer a listing from their own
        # cache (one per shared instance, never expiring), which would hide every new key.
        _filesystem(source).invalidate_cache()
        yield from _listed(source, extensions, InputReport())
    except UsageError as error:
        raise UsageError(f"{source}: {error}") from None
    except Exception as exc:  # the backend's errors, translated here, once
        raise UsageError(f"{source}: {_describe_listing_error(exc)}") from None
    finally:
        _forget_listings(source)


def _listed(source: str, extensions: frozenset[str], report: InputReport) -> Iterator[Listed]:
    """The listing's rule, for both callers: folder markers, hidden keys and unwanted
    extensions passed over (and counted). The backend's errors go through."""
    scheme = object_scheme(source)
    assert scheme is not None
    fs = _filesystem(source)
    prefix_length = len(_root(fs, source))
    # Objects' URLs are the source's plus the key below it: the host (an FTP server's, say)
    # stays in, which the filesystem's own names leave out.
    base = f"{scheme}://{source.partition('://')[2].rstrip('/')}/"
    skipped = report.skipped_extensions
    for page in _pages(fs, source, limit=None):
        for entry in page:
            relative = entry["name"][prefix_length:]
            if not relative or relative[-1] == "/":
                continue  # a folder marker, not an object
            if relative[0] == "." or "/." in relative:
                report.skipped_hidden += 1
                continue
            leaf = relative.rpartition("/")[2]
            dot = leaf.rfind(".")
            extension = leaf[dot + 1 :].lower() if dot > 0 else ""
            if extension not in extensions:
                skipped[extension] += 1
                continue
            yield Listed(
                url=base + relative,
                size=int(entry.get("size") or 0),
                stamp=_stamp(entry),
                modified=_modified(entry),
            )


#: Where backends keep what changes with each write (S3: ETag; GCS: md5Hash, generation;
#: local and memory filesystems: mtime), and when it was written, in order of preference.
_STAMP_FIELDS = (
    "ETag", "etag", "generation", "md5Hash", "mtime", "LastModified", "updated", "created"
)  # fmt: skip
_TIME_FIELDS = ("LastModified", "mtime", "updated", "last_modified", "created")


def _stamp(entry: dict[str, Any]) -> str:
    for field in _STAMP_FIELDS:
        if entry.get(field) is not None:
            return str(entry[field])
    return ""


def _modified(entry: dict[str, Any]) -> float | None:
    for field in _TIME_FIELDS:
        value = entry.get(field)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


def _root(fs: Any, source: str) -> str:
    """``bucket/prefix/`` of a source: a prefix names a folder, so ``photos`` is not
    ``photos2``. A bare bucket is ``bucket/``."""
    return _fs_path(fs, source).rstrip("/") + "/"


def _fs_path(fs: Any, url: str) -> str:
    """The filesystem's name for ``url`` (``bucket/key`` for S3), whatever the scheme's case."""
    scheme, _, rest = url.partition("://")
    return str(fs._strip_protocol(f"{scheme.lower()}://{rest}"))


def _pages(
    fs: Any, source: str, *, limit: int | None
) -> Generator[list[dict[str, Any]], None, None]:
    """The objects under ``source`` as the backend describes them (``name``: ``bucket/key``,
    ``size``, ``ETag``...), a page at a time."""
    root = _root(fs, source)
    if hasattr(fs, "_iterdir") and getattr(fs, "async_impl", False):
        # s3fs: ``find``/``walk`` gather the whole listing before returning anything;
        # ``_iterdir`` follows the continuation tokens one ListObjectsV2 page at a time. It is
        # private: pyproject.toml bounds s3fs to the releases the tests ran it on.
        from fsspec.asyn import sync

        bucket, _, key = root.partition("/")
        pages = fs._iterdir(bucket, delimiter="", prefix=key)
        try:
            while True:
                page = sync(fs.loop, _take, pages, limit or PAGE_SIZE)
                if not page:
                    return
                yield page
                if limit is not None:
                    return
        finally:
            sync(fs.loop, pages.aclose)
    else:
        # Other filesystems: one folder's listing at a time.
        if limit is not None and not fs.exists(root):
            raise FileNotFoundError(root)
        for folder, _, files in fs.walk(root, detail=True):
            entries = [
                {**files[name], "name": f"{folder.rstrip('/')}/{name}"} for name in sorted(files)
            ]
            if entries:
                yield entries[:limit] if limit is not None else entries
                if limit is not None:
                    return


async def _take(entries: AsyncIterator[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    names: list[dict[str, Any]] = []
    async for entry in entries:
        if entry.get("type") != "directory":
            names.append(entry)
        if len(names) >= count:
            break
    return names


#: What a store's error code says, where it says more than "not found" or "access denied"
#: (S3's codes; s3fs turns each into FileNotFoundError or PermissionError, keeping the
#: store's answer as the cause).
_NO_SUCH_BUCKET = (
    "no such bucket (check its name, and the endpoint: AWS_ENDPOINT_URL for MinIO and other "
    "S3-compatible stores)"
)
_CODES = {
    "NoSuchBucket": _NO_SUCH_BUCKET,
    "InvalidAccessKeyId": (
        "the store does not know the access key id (InvalidAccessKeyId): check "
        "AWS_ACCESS_KEY_ID or AWS_PROFILE, and that AWS_ENDPOINT_URL is the store it belongs to"
    ),
    "SlowDown": (
        "the store asks for fewer requests (SlowDown), after the backend's own retries: "
        "wait, or list less often (--poll)"
    ),
    "SignatureDoesNotMatch": (
        "the secret key does not match the access key id (SignatureDoesNotMatch): check "
        "AWS_SECRET_ACCESS_KEY, or the profile's aws_secret_access_key"
    ),
}


def _store_code(exc: BaseException) -> str | None:
    """The store's error code behind a backend's exception (S3: ``NoSuchBucket``...), if any."""
    seen: BaseException | None = exc
    for _ in range(4):  # the translated error, its cause, and a wrapper or two
        if seen is None:
            return None
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            return code if isinstance(code, str) else None
        seen = seen.__cause__ or seen.__context__
    return None


def _describe_listing_error(exc: Exception) -> str:
    known = _CODES.get(_store_code(exc) or "")
    if known is not None:
        return known
    if isinstance(exc, FileNotFoundError):
        return _NO_SUCH_BUCKET
    if isinstance(exc, PermissionError):
        return (
            "access denied listing it: check the credentials (AWS_PROFILE, "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or the machine's role) and that they "
            "may list this bucket"
        )
    message = _backend_message(exc)
    if "credentials" in message.lower():
        return (
            f"cannot list it: {message}; set AWS_PROFILE or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or FSSPEC_S3_ANON=true for a public bucket)"
        )
    return f"cannot list it: {message}"


def _backend_message(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return redact_credentials(text)[:300]


# -- reading -------------------------------------------------------------------------------


async def read_encoded_object(
    url: str, *, max_upload_bytes: int, max_size: int | None, jpeg_quality: int
) -> EncodedImage:
    """Read the object at ``url`` and make it the request body, as ``read_and_encode`` does
    for a file: ``ItemError`` when it is missing, unreadable, empty or too large."""
    limit = MAX_DOWNSCALE_SOURCE if max_size is not None else max_raw_bytes(max_upload_bytes)
    data = await read_object(url, limit=limit)
    if len(data) > limit:
        raise ItemError(
            f"object is over {limit / 2**20:.1f} MiB, the most that can be sent"
            + ("" if max_size is not None else "; use --max-size to downscale it"),
            kind=ErrorType.TOO_LARGE,
        )

    def encode() -> EncodedImage:
        return encode_data(
            data,
            original_bytes=len(data),
            max_upload_bytes=max_upload_bytes,
            max_size=max_size,
            jpeg_quality=jpeg_quality,
        )

    if max_size is None and len(data) <= INLINE_ENCODE_BYTES:
        return encode()  # base64 of a small image: cheaper than a thread hop
    return await anyio.to_thread.run_sync(encode)


async def read_object(url: str, *, limit: int) -> bytes:
    """The bytes of the object at ``url``, at most ``limit + 1`` of them (a caller sees an
    object over ``limit`` without reading all of it). ``ItemError`` for any failure."""
    scheme = object_scheme(url)
    assert scheme is not None
    try:
        fs = _filesystem(url)
    except UsageError as error:
        raise ItemError(str(error), kind=ErrorType.UNREADABLE) from None
    path = _fs_path(fs, url)
    try:
        if getattr(fs, "async_impl", False) and _on_asyncio():
            # The read runs on fsspec's loop (its thread); this loop only awaits it.
            future = asyncio.run_coroutine_threadsafe(
                fs._cat_file(path, start=0, end=limit + 1), fs.loop
            )
            return bytes(await asyncio.wrap_future(future))
        return bytes(await anyio.to_thread.run_sync(_read_sync, fs, path, limit))
    except (FileNotFoundError, PermissionError) as exc:
        raise _read_error(exc) from None
    except Exception as exc:  # the backend's errors, translated here, once
        raise ItemError(
            f"cannot read the object: {_backend_message(exc)}", kind=ErrorType.UNREADABLE
        ) from None


def _read_error(exc: FileNotFoundError | PermissionError) -> ItemError:
    """A failed read as the row's error: what the store said, where it said something."""
    code = _store_code(exc)
    if code == "NoSuchBucket":
        return ItemError(_NO_SUCH_BUCKET, kind=ErrorType.MISSING_FILE)
    if isinstance(exc, FileNotFoundError):
        return ItemError("object not found (no such key)", kind=ErrorType.MISSING_FILE)
    known = _CODES.get(code or "")
    if known is not None:
        return ItemError(f"cannot read the object: {known}", kind=ErrorType.UNREADABLE)
    return ItemError(
        "access denied reading the object: these credentials may not read it (s3:GetObject, "
        "or the bucket's policy)",
        kind=ErrorType.UNREADABLE,
    )


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # another event loop (trio)
        return False
    return True


def _read_sync(fs: Any, path: str, limit: int) -> bytes:
    with fs.open(path, "rb") as handle:
        data: bytes = handle.read(limit + 1)
    return data


def clear_cache() -> None:
    """Forget the filesystems made so far, so the next use reads the credentials and endpoint
    again (a long-lived process whose environment changed; tests with a new server)."""
    with _lock:
        _filesystems.clear()
        _problems.clear()
    try:
        from fsspec.spec import AbstractFileSystem
    except ImportError:
        return
    for cls in _subclasses(AbstractFileSystem):
        cls.clear_instance_cache()


def _subclasses(cls: type) -> Iterator[Any]:
    sub: type
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)
