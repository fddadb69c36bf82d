"""Reading a worker's image file: inline while reads are fast, else in a thread.

Objects in storage (``s3://...``) are read by ``objectstore.py`` instead.

Small local files read + encode in ~50 µs, cheaper than a thread hop. Slow storage or big
files (most of the recent reads slow: ``readpolicy.ReadPolicy``) send reads to worker threads
until they are fast again; downscaling (``--max-size``) always runs in threads.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio

from ..config import JobConfig
from ..errors import OpenFilesError
from ..names import object_scheme
from .encoding import EncodedImage, OpenFilesExhausted, read_and_encode
from .readpolicy import ReadPolicy


class FileReader:
    """Reads and encodes the workers' files; waits out a process out of file descriptors."""

    def __init__(
        self,
        config: JobConfig,
        *,
        notify: Callable[[str | None], None],
        pause: Callable[[float], Awaitable[None]],
        stopping: Callable[[], bool],
    ) -> None:
        self._config = config
        self._notify = notify
        self._pause = pause  # a sleep that a stop request ends early
        self._stopping = stopping
        self._policy = ReadPolicy()  # inline or in threads, by the recent reads' times

    def _reads_inline(self) -> bool:
        """Whether the next local read runs on the event loop: fast reads, no downscaling
        (which always runs in threads)."""
        return self._config.max_size is None and self._policy.inline()

    def encode_inline(self, path: str) -> EncodedImage | None:
        """Read and encode one file on the event loop, if reads are fast now; ``None``: use
        ``encode`` instead (slow reads, downscaling, an object in storage, or out of file
        descriptors). Raises ``ItemError`` for a file that cannot be used.

        Plain code, not a coroutine: the common case costs no await."""
        if not self._reads_inline():
            return None
        if "://" in path and object_scheme(path) is not None:
            return None
        try:
            encoded, seconds = self._read(path)
        except OpenFilesExhausted:
            return None
        self._policy.record(seconds)
        return encoded

    async def encode(self, path: str) -> EncodedImage | None:
        """Read and encode one file, inline while reads are fast, else in a thread
        (ARCHITECTURE.md, *Flow control*).

        Out of file descriptors (EMFILE/ENFILE) is the process's trouble, not the image's:
        wait for requests to finish and free some, then read again. ``None``: stopping.
        Raises ``ItemError`` for a file that cannot be used.
        """
        config = self._config
        if object_scheme(path) is not None:  # s3://...: read through fsspec (objectstore.py)
            from .objectstore import read_encoded_object

            return await read_encoded_object(
                path,
                max_upload_bytes=config.max_upload_bytes,
                max_size=config.max_size,
                jpeg_quality=config.jpeg_quality,
            )
        waited = 0.0
        delay = 0.05
        while True:
            try:
                if self._reads_inline():
                    encoded, seconds = self._read(path)
                else:
                    encoded, seconds = await anyio.to_thread.run_sync(self._read, path)
            except OpenFilesExhausted as error:
                if waited >= config.retry.max_elapsed:
                    raise OpenFilesError(
                        f"{error}; for {waited:.0f} s: lower --concurrency or raise the "
                        "limit (ulimit -n), then rerun the same command to resume"
                    ) from None
                self._notify(f"{error}: waiting for requests to finish")
                await self._pause(delay)
                if self._stopping():
                    return None
                waited += delay
                delay = min(delay * 2, 1.0)
                continue
            self._policy.record(seconds)
            return encoded

    def _read(self, path: str) -> tuple[EncodedImage, float]:
        """Read and encode one file; also return how long that took."""
        config = self._config
        started = time.perf_counter()
        encoded = read_and_encode(
            path,
            max_upload_bytes=config.max_upload_bytes,
            max_size=config.max_size,
            jpeg_quality=config.jpeg_quality,
        )
        return encoded, time.perf_counter() - started
