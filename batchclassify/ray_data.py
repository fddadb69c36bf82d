"""Ray Data: classify a ``Dataset`` with ``map_batches``, rows in the schema ``run`` writes.

::

    import ray
    from batchclassify.ray_data import Classifier

    ds = ray.data.read_binary_files("s3://bucket/photos/", include_paths=True)
    rows = ds.map_batches(
        Classifier,
        fn_constructor_kwargs={"model": "my-model/3", "rate_limit": 40.0, "actors": 4},
        concurrency=4,  # actors: the same number as ``actors`` above
        batch_size=256,
    )
    rows.write_parquet("results/")

Each actor holds one HTTP client (one connection pool), one rate controller and its retries,
as one ``run`` job does; the key's request budget (``rate_limit``, requests per second for
the whole job) is split evenly over ``actors``. ``__call__`` is a coroutine, so Ray runs it on
the actor's event loop and several batches of one actor share its connections and its rate.

An input row is one image, given by the first of these columns that holds a value:
``bytes`` (the image itself, as ``read_binary_files`` gives it), ``path`` (a local file, or an
object URL such as ``s3://bucket/key`` read through fsspec), ``url`` (sent for the server to
download). ``id`` is the row's ``id`` column, else its path, else its URL, else
``sha256:<hex>`` of its bytes. Every other column is carried into the output as a string, as
``run`` does with a manifest's columns (Parquet). The output is a ``pyarrow.Table`` with the
columns ``run`` writes (``models.ROW_FIELDS``) in the same types.

Errors are rows: a bad image, a missing file, an item out of retries, even an unexpected
error, becomes a row with ``status`` ``error``; ``__call__`` never raises for one item, so a
block is never lost to one image. A fatal answer (bad key, unknown model) is the ``fatal``
error type on the row that met it and on every later row of that actor, without requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import replace
from typing import Any

import anyio

from .api.client import ClassificationClient
from .api.redaction import redact
from .api.retry import Backoff
from .config import DEFAULT_API_URL, MAX_UPLOAD_BYTES, HttpConfig, OutageConfig, RetryConfig
from .error_types import ErrorType
from .errors import FatalApiError, ItemError, RetryableError, UsageError
from .inputs.encoding import EncodedImage, encode_data, read_and_encode
from .inputs.objectstore import read_encoded_object
from .job.attempts import AttemptPolicy, GiveUp, StopJob
from .job.health import HealthMonitor
from .job.ratelimit import RateController
from .job.sending import post
from .models import ROW_FIELDS, Item, error_row, ok_row
from .names import object_scheme

#: Input columns that say what the image is; every other column is carried as metadata.
INPUT_COLUMNS = ("bytes", "path", "url", "id")
#: ``error_type`` of a row that met, or came after, a fatal answer (bad key, unknown model).
FATAL = ErrorType.FATAL


class Classifier:
    """A callable class for ``Dataset.map_batches``: a batch of images in, a batch of rows out.

    ``rate_limit`` is the whole job's ceiling in requests per second, split over ``actors``
    (pass the same number as ``map_batches(concurrency=...)``); ``None`` lets each actor adapt
    to the server's 429s. ``http.api_key`` defaults to ``$ROBOFLOW_API_KEY`` on the actor:
    prefer the variable (Ray's ``runtime_env={"env_vars": ...}``), which stays out of the
    task's arguments. ``concurrency`` bounds each actor's requests in flight.
    """

    def __init__(
        self,
        *,
        model: str,
        http: HttpConfig | None = None,
        api_url: str | None = None,
        retry: RetryConfig | None = None,
        outage: OutageConfig | None = None,
        rate_limit: float | None = None,
        actors: int = 1,
        concurrency: int = 16,
        confidence: float | None = None,
        max_size: int | None = None,
        jpeg_quality: int = 90,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
    ) -> None:
        if actors < 1:
            raise UsageError("actors: must be at least 1 (the number of map_batches actors)")
        if rate_limit is not None and rate_limit <= 0:
            raise UsageError("rate_limit: must be a positive number of requests per second")
        http = http or HttpConfig(api_url=api_url or DEFAULT_API_URL)
        if api_url is not None and http.api_url != api_url:
            http = replace(http, api_url=api_url)
        if http.api_key is None and os.environ.get("ROBOFLOW_API_KEY"):
            http = replace(http, api_key=os.environ["ROBOFLOW_API_KEY"])
        self._http = replace(http, concurrency=concurrency)
        self._model = model
        self._confidence = confidence
        self._retry = retry or RetryConfig()
        self._rate_per_actor = None if rate_limit is None else rate_limit / actors
        self._max_size = max_size
        self._jpeg_quality = jpeg_quality
        self._max_upload_bytes = max_upload_bytes
        self._backoff = Backoff(self._retry)
        self._rate = RateController(rate=self._rate_per_actor, adaptive=rate_limit is None)
        outage = outage or OutageConfig()
        # The job's own rule (attempts.py): an outage pauses new requests and is probed, and
        # requests during it do not count against an image's retries; past max_outage the
        # remaining images of this actor become error rows saying so.
        self._health = HealthMonitor(
            max_outage=outage.max_outage,
            outage_after=outage.outage_after,
            probe_initial=outage.probe_initial,
            probe_max=outage.probe_max,
            api_url=self._http.api_url,
        )
        self._policy = AttemptPolicy(
            self._retry, health=self._health, rate=self._rate, backoff=self._backoff
        )
        self._fatal: str | None = None
        # Made on the actor's event loop at the first batch: aiohttp sessions and asyncio
        # semaphores belong to the loop they were made on.
        self._client: ClassificationClient | None = None
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, batch: Any) -> Any:
        """Classify one batch (a dict of columns, a pandas DataFrame or a pyarrow Table)."""
        columns = _as_columns(batch)
        items = _items(columns)
        if self._client is None:
            # No await between the check and the assignment: Ray may run several batches of
            # this actor at once, and they must share one client.
            client = ClassificationClient(
                self._http, model=self._model, confidence=self._confidence
            )
            self._client = client
            self._slots = asyncio.Semaphore(self._http.concurrency)
            self._loop = asyncio.get_running_loop()
            await client.__aenter__()
        rows = await asyncio.gather(*(self._row(item, data) for item, data in items))
        return _table(rows, [name for name in columns if name not in INPUT_COLUMNS])

    def __del__(self) -> None:
        """Close the connection pool on the actor's loop (Ray deletes the instance when the
        dataset is done); best effort, as the loop may be gone already."""
        client, loop = getattr(self, "_client", None), getattr(self, "_loop", None)
        if client is None or loop is None or loop.is_closed() or not loop.is_running():
            return
        self._client = None
        with suppress(Exception):
            closing = asyncio.run_coroutine_threadsafe(client.__aexit__(None, None, None), loop)
            if threading.get_ident() != getattr(loop, "_thread_id", None):
                closing.result(timeout=5)  # on the loop's own thread it runs after we return

    async def _row(self, item: Item, data: bytes | None) -> dict[str, Any]:
        assert self._slots is not None
        async with self._slots:
            try:
                return await self._classify(item, data)
            except Exception as error:  # one image's surprise must not cost the block
                message = redact(f"{type(error).__name__}: {error}", self._http.api_key)
                return error_row(item, error=message, error_type=ErrorType.INTERNAL, attempts=0)

    async def _classify(self, item: Item, data: bytes | None) -> dict[str, Any]:
        if item.problem is not None:
            return error_row(item, error=item.problem, error_type=item.problem_kind, attempts=0)
        if self._fatal is not None:
            return error_row(item, error=self._fatal, error_type=FATAL, attempts=0)
        encoded: EncodedImage | None = None
        try:
            if data is not None or item.path is not None:
                encoded = await self._encode(item, data)
        except ItemError as error:
            return error_row(item, error=str(error), error_type=error.kind, attempts=0)
        return await self._send_with_retries(item, encoded)

    async def _encode(self, item: Item, data: bytes | None) -> EncodedImage:
        options: dict[str, Any] = {
            "max_upload_bytes": self._max_upload_bytes,
            "max_size": self._max_size,
            "jpeg_quality": self._jpeg_quality,
        }
        if data is not None:
            return await anyio.to_thread.run_sync(
                lambda: encode_data(data, original_bytes=len(data), **options)
            )
        assert item.path is not None
        if object_scheme(item.path) is not None:
            return await read_encoded_object(item.path, **options)
        path = item.path
        return await anyio.to_thread.run_sync(lambda: read_and_encode(path, **options))

    async def _send_with_retries(self, item: Item, encoded: EncodedImage | None) -> dict[str, Any]:
        """POST until an answer, a non-retryable error, or the attempt policy gives up
        (``attempts.py``, as a job's worker does: outages are waited out, not counted)."""
        assert self._client is not None
        attempts = self._policy.start(item.id)
        health = self._health
        while True:
            await health.wait_until_available()
            decision = attempts.next_request()
            if isinstance(decision, StopJob):
                # Down past max_outage (or never reached): this image is left as a row that
                # says so; a rerun of the failed rows sends it again.
                return error_row(
                    item,
                    error=self._redact(decision.reason),
                    error_type=ErrorType.CONNECTION,
                    attempts=attempts.requests,
                )
            await self._rate.acquire()
            started = attempts.sending()
            try:
                prediction = await post(item, encoded, self._client)
            except RetryableError as error:
                after = attempts.failed(error, started)
                if isinstance(after, GiveUp):
                    return _failed(item, after.error, attempts.requests, started)
                await anyio.sleep(after.seconds)
                continue
            except FatalApiError as error:
                self._fatal = str(error)
                return error_row(
                    item,
                    error=str(error),
                    error_type=FATAL,
                    attempts=attempts.requests,
                    http_status=error.http_status,
                )
            except ItemError as error:
                health.success(started)
                self._rate.on_answer(started)  # a 4xx about the image: the server saw it
                return _failed(item, error, attempts.requests, started)
            health.success(started)
            self._rate.on_success(started)
            if encoded is not None and encoded.original_size is not None:
                width, height = encoded.original_size
                prediction = prediction._replace(image_width=width, image_height=height)
            elapsed = (time.monotonic() - started) * 1000
            return ok_row(item, prediction, attempts=attempts.requests, elapsed_ms=elapsed)

    def _redact(self, text: str) -> str:
        return redact(text, self._http.api_key)


def _failed(item: Item, error: ItemError, attempts: int, started: float) -> dict[str, Any]:
    gave_up = f" (gave up after {attempts} attempts)" if isinstance(error, RetryableError) else ""
    return error_row(
        item,
        error=f"{error}{gave_up}",
        error_type=error.kind,
        attempts=attempts,
        http_status=error.http_status,
        elapsed_ms=(time.monotonic() - started) * 1000,
    )


# -- batches in and out --------------------------------------------------------------------


def _as_columns(batch: Any) -> dict[str, list[Any]]:
    """A batch in any of Ray's formats as plain Python lists per column."""
    if hasattr(batch, "to_pydict"):  # pyarrow.Table
        return dict(batch.to_pydict())
    if hasattr(batch, "to_dict") and hasattr(batch, "columns"):  # pandas.DataFrame
        return {str(name): list(batch[name].tolist()) for name in batch.columns}
    if isinstance(batch, Mapping):  # Ray's default: a dict of numpy arrays
        return {
            str(name): list(values.tolist()) if hasattr(values, "tolist") else list(values)
            for name, values in batch.items()
        }
    raise TypeError(f"unsupported batch type {type(batch).__name__}")


def _items(columns: dict[str, list[Any]]) -> list[tuple[Item, bytes | None]]:
    """Each row's ``Item`` and, when given, its image bytes."""
    count = len(next(iter(columns.values()), []))
    metadata_names = [name for name in columns if name not in INPUT_COLUMNS]
    out: list[tuple[Item, bytes | None]] = []
    for index in range(count):
        data = _value(columns, "bytes", index)
        path = _value(columns, "path", index)
        url = _value(columns, "url", index)
        given_id = _value(columns, "id", index)
        if data is not None and not isinstance(data, bytes | bytearray | memoryview):
            problem = f"the bytes column holds a {type(data).__name__} value, not image bytes"
            item = Item(id=str(given_id or path or url or f"row {index} of a batch"))
            out.append((replace(item, problem=problem, problem_kind=ErrorType.BAD_INPUT), None))
            continue
        data = bytes(data) if data is not None else None
        path = str(path) if path is not None else None
        url = str(url) if url is not None else None
        ident = str(given_id) if given_id is not None else path or url
        if ident is None:
            ident = "sha256:" + hashlib.sha256(data or b"").hexdigest()
        metadata = {name: columns[name][index] for name in metadata_names} or None
        item = Item(id=ident, path=path, url=url, metadata=metadata)
        if data is None and path is None and url is None:
            item = replace(
                item,
                problem="the row has no image: give a bytes, path or url column",
                problem_kind=ErrorType.BAD_INPUT,
            )
        out.append((item, data))
    return out


def _value(columns: dict[str, list[Any]], name: str, index: int) -> Any:
    values = columns.get(name)
    if values is None:
        return None
    value = values[index]
    return None if value is None or value == "" else value


def _table(rows: list[dict[str, Any]], metadata_names: list[str]) -> Any:
    """The rows as a ``pyarrow.Table`` in the Parquet sink's schema."""
    import pyarrow as pa

    from .output.parquet_sink import core_schema, metadata_text

    schema = core_schema()
    data: dict[str, list[Any]] = {name: [row.get(name) for row in rows] for name in ROW_FIELDS}
    for name in metadata_names:
        key = f"meta_{name}" if name in ROW_FIELDS else name
        data[key] = [metadata_text(row.get(key)) for row in rows]
        schema = schema.append(pa.field(key, pa.string()))
    return pa.Table.from_pydict(data, schema=schema)
