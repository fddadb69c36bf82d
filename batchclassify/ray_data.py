"""Ray Data: classify a ``Dataset`` with ``map_batches``, rows in the schema ``run`` writes.

::

    import ray
    from batchclassify import HttpConfig, RateConfig
    from batchclassify.ray_data import Classifier

    actors = 4
    ds = ray.data.read_binary_files("s3://bucket/photos/", include_paths=True)
    rows = ds.map_batches(
        Classifier,
        fn_constructor_kwargs={
            "model": "my-model/3",
            "rate": RateConfig(requests_per_second=40.0),  # the whole job's ceiling
            "http": HttpConfig(concurrency=16),  # requests in flight per actor
            "actors": actors,
        },
        compute=ray.data.ActorPoolStrategy(size=actors),
        batch_size=256,
    )
    rows.write_parquet("results/")

Each actor runs the job's own request loop (``job/requesting.py``: the attempt policy,
the outage pause, the rate controller) over one HTTP client, and takes the job's config
objects with the same meanings: ``HttpConfig.concurrency`` requests in flight per actor,
``RateConfig`` a ceiling that backs off on 429 (split evenly over ``actors``), ``RetryConfig``
and ``OutageConfig`` as ``run`` reads them. ``__call__`` is a coroutine, so Ray runs it on
the actor's event loop and several batches of one actor share its connections and its rate.
The key is read on the actor, when it is made, from ``$ROBOFLOW_API_KEY`` (unless
``http.api_key`` is given): set it in the environment the Ray workers start in, not in
``runtime_env``, which Ray writes to its logs (docs/ray.md).

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
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import replace
from typing import Any

import anyio

from .api.client import ClassificationClient
from .api.redaction import redact
from .api.transport import Transport
from .config import MAX_UPLOAD_BYTES, HttpConfig, OutageConfig, RateConfig, RetryConfig
from .error_types import ErrorType
from .errors import FatalApiError, ItemError, UsageError
from .inputs.encoding import EncodedImage, encode_data, read_and_encode
from .inputs.objectstore import read_encoded_object
from .job.attempts import AttemptPolicy
from .job.health import HealthMonitor
from .job.ratelimit import RateController
from .job.requesting import NOT_HEDGED, GivenUp, Hedged, ItemRequests, Stop
from .job.sending import post
from .job.stopping import StopSignal
from .models import ROW_FIELDS, Item, Prediction, check_row, error_row
from .names import object_scheme

#: Input columns that say what the image is; every other column is carried as metadata.
INPUT_COLUMNS = ("bytes", "path", "url", "id")
#: ``error_type`` of a row that met, or came after, a fatal answer (bad key, unknown model).
FATAL = ErrorType.FATAL


class Classifier:
    """A callable class for ``Dataset.map_batches``: a batch of images in, a batch of rows out.

    The configs mean what they mean to ``run``: ``rate`` is the whole job's (a ceiling that
    backs off on 429, or a fixed rate with ``adaptive=False``), split evenly over ``actors``
    (pass the size of the actor pool); ``http.concurrency`` bounds each actor's requests in
    flight. ``http.api_key`` defaults to ``$ROBOFLOW_API_KEY`` in the actor's environment,
    read when the actor is made. ``transport`` sends the HTTP requests (``client.py``), for
    tests or an HTTP stack of your own. ``clock`` (for tests; leave it) is the time the rate,
    the outage pause and the retry budget are judged on, as the job's parts take it: a test
    on a virtual clock passes its event loop's ``time``, which the waits already follow.
    """

    def __init__(
        self,
        *,
        model: str,
        http: HttpConfig | None = None,
        retry: RetryConfig | None = None,
        rate: RateConfig | None = None,
        outage: OutageConfig | None = None,
        actors: int = 1,
        confidence: float | None = None,
        max_size: int | None = None,
        jpeg_quality: int = 90,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if actors < 1:
            raise UsageError("actors: must be at least 1 (the size of the actor pool)")
        http = http or HttpConfig()
        if len(http.servers) > 1 or http.api_url == "local":
            raise UsageError(
                "http.api_url: give one server's http(s) URL (several servers, and 'local', "
                "are for batchclassify run)"
            )
        if http.api_key is None and os.environ.get("ROBOFLOW_API_KEY"):
            http = replace(http, api_key=os.environ["ROBOFLOW_API_KEY"])
        self._http = http
        self._model = model
        self._confidence = confidence
        self._max_size = max_size
        self._jpeg_quality = jpeg_quality
        self._max_upload_bytes = max_upload_bytes
        self._transport = transport
        outage = outage or OutageConfig()
        # The job's own rules, built as the job builds them: the rate (RateConfig's meaning,
        # this actor's share), the outage pause and probes, the attempt policy, the loop.
        health = HealthMonitor(
            max_outage=outage.max_outage,
            outage_after=outage.outage_after,
            probe_initial=outage.probe_initial,
            probe_max=outage.probe_max,
            servers=http.servers,
            clock=clock,
        )
        policy = AttemptPolicy(
            retry or RetryConfig(),
            health=health,
            rate=RateController.from_config(rate or RateConfig(), share=actors, clock=clock),
            clock=clock,
        )
        # Nothing stops an actor: past max_outage the loop hands back a Stop, made a row here.
        self._requests = ItemRequests(policy=policy, stop=StopSignal(), clock=clock)
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
                self._http,
                model=self._model,
                confidence=self._confidence,
                transport=self._transport,
            )
            self._client = client
            self._slots = asyncio.Semaphore(self._http.concurrency)
            self._loop = asyncio.get_running_loop()
            await client.__aenter__()
        rows = await asyncio.gather(*(self._row(item, data) for item, data in items))
        return _table(rows, [name for name in columns if name not in INPUT_COLUMNS])

    async def aclose(self) -> None:
        """Close the connection pool, on the loop that ran the batches: when this callable is
        used without Ray (Ray deletes its instance instead, see ``__del__``)."""
        client, self._client = self._client, None
        if client is not None:
            await client.__aexit__(None, None, None)

    def __del__(self) -> None:
        """Close the connection pool on the actor's loop (Ray deletes the instance when the
        dataset is done); best effort, as the loop may be gone already."""
        client, loop = getattr(self, "_client", None), getattr(self, "_loop", None)
        if client is None or loop is None or loop.is_closed() or not loop.is_running():
            return
        self._client = None
        with suppress(Exception):
            closing = asyncio.run_coroutine_threadsafe(client.__aexit__(None, None, None), loop)
            if not _running_on(loop):
                closing.result(timeout=5)  # on the loop's own thread it runs after we return

    async def _row(self, item: Item, data: bytes | None) -> dict[str, Any]:
        assert self._slots is not None
        async with self._slots:
            try:
                row = await self._classify(item, data)
            except Exception as error:  # one image's surprise must not cost the block
                message = redact(f"{type(error).__name__}: {error}", self._http.api_key)
                row = error_row(item, error=message, error_type=ErrorType.INTERNAL, attempts=0)
        # Outside the try: a row that contradicts itself fails the block loudly, as the sinks
        # refuse it, instead of passing for an answer (or a mere internal error).
        check_row(row)
        return row

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
        outcome = await self._requests.request(item, encoded, self._send)
        if isinstance(outcome, GivenUp):
            return outcome.row
        if isinstance(outcome, Stop):
            return self._stopped(item, outcome)
        assert outcome is not None  # an actor is never asked to stop
        return outcome

    async def _send(
        self, item: Item, encoded: EncodedImage | None, _started: float
    ) -> tuple[Prediction, Hedged]:
        """One request, alone: an actor runs no watchdog and sends no copies."""
        assert self._client is not None
        return await post(item, encoded, self._client), NOT_HEDGED

    def _stopped(self, item: Item, stop: Stop) -> dict[str, Any]:
        """Where the job would stop, an actor writes the item's row: a refused job is this
        row's and every later row's ``fatal``; an API gone past ``max_outage`` (or never
        reached) a ``connection`` row that says so, which a rerun of the failed rows sends
        again."""
        error = stop.error
        message = redact(str(error), self._http.api_key)
        if isinstance(error, FatalApiError):
            self._fatal = message
            return error_row(
                item,
                error=message,
                error_type=FATAL,
                attempts=stop.requests,
                http_status=error.http_status,
            )
        return error_row(
            item, error=message, error_type=ErrorType.CONNECTION, attempts=stop.requests
        )

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


def _running_on(loop: asyncio.AbstractEventLoop) -> bool:
    """Is this thread the one running ``loop`` (public API: no ``loop._thread_id``)?"""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
