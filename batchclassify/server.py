"""A local Roboflow-compatible classification server: a real colour model plus fault knobs.

It speaks the legacy route ``POST /{slug}/{version}`` as ``PROTOCOL.md`` describes it (base64,
multipart and ``image=`` URL inputs; ``api_key`` query or Bearer header; the real servers'
status codes and ``{"message": ...}`` bodies). The tests start it in-process on port 0,
``--api-url local`` embeds it, ``batchclassify serve`` and ``python -m batchclassify.server``
run it standalone (the latter for benchmarks, with every knob as a flag).

Models: ``colors/N`` (single-label: softmax over the mean colour's distance to each class) and
``colors-multilabel/N`` (per class, the share of thumbnail pixels nearest to it). Slugs
``paused`` and ``no-credits`` always answer 423 and 402; any other slug is a 404.

Faults, all off by default (``ServerConfig``): fixed or long-tailed latency, a rate limit
answering 429 with ``Retry-After``, random 500s, dropped and hung connections (seeded). At
runtime, on a ``RunningServer`` or ``BackgroundServer``:

- ``script(503, "drop", 200, Fault(status=429, headers={"Retry-After": "2"}))``: the next
  inference requests answer these, in order (``200`` = answer normally, ``"drop"`` = close the
  connection unanswered, ``"hang"`` = never answer); ``fail_next(n, status, headers)`` is the
  short form. Scripted answers come before the rate limit and random faults.
  ``Fault(status=200, body=b"<html>...")`` answers that body as is: malformed answers.
- ``fail_image(image_bytes_or_url, status, times=None)``: every request for that image (its
  decoded bytes, or its ``image=`` URL) gets that answer.
- ``set_down(True)`` closes the listening socket and every open connection (clients see
  "connection refused"); ``set_down(False)`` listens again on the same port.

``stats`` counts inference requests per status, routes, peak concurrency and keeps the last
requests' query keys and header names, never the API key itself; ``GET /_stats`` serves it.
"""

from __future__ import annotations

import argparse
import asyncio
import binascii
import contextlib
import hashlib
import hmac
import io
import math
import random
import signal
import threading
import time
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import aiohttp
import orjson
import pybase64
from aiohttp import web

_b64decode: Callable[..., bytes] = pybase64.b64decode
_T = TypeVar("_T")

#: Class name and prototype colour; the order gives ``class_id``.
CLASSES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (200, 30, 30)),
    ("green", (40, 160, 50)),
    ("blue", (35, 60, 200)),
    ("yellow", (230, 210, 40)),
    ("white", (240, 240, 240)),
    ("black", (15, 15, 15)),
    ("gray", (128, 128, 128)),
)
MODELS: Mapping[str, Literal["single", "multi"]] = {
    "colors": "single",
    "colors-multilabel": "multi",
}
#: Slugs standing for a workspace in a fatal state, so clients can test stopping the job.
_FATAL_SLUGS = {"paused": 423, "no-credits": 402}
_MESSAGES = {
    400: "Bad request.",
    401: "Unauthorized access to roboflow API - check API key.",
    402: "Not enough credits to perform this request.",
    403: "Forbidden",
    404: "Requested Roboflow resource not found. Make sure that workspace, project or model "
    "you referred in request exists.",
    413: "Request payload too large.",
    423: "Usage of this workspace is paused.",
    429: "Too many requests: rate limit exceeded.",
    500: "Internal error.",
    502: "Internal error. Request to Roboflow API failed.",
    503: "Model is temporarily not ready - retry request.",
    504: "Timeout when attempting to connect to Roboflow API.",
    507: "Model loading is restricted on this server.",
}
_MISSING_KEY = (
    "Required Roboflow API key is missing. Visit "
    "https://docs.roboflow.com/api-reference/authentication#retrieve-an-api-key to learn how "
    "to retrieve one."
)
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"RIFF", b"BM", b"II*\x00", b"MM\x00*")
#: Bodies above this are decoded in a worker thread so the event loop keeps answering.
_OFFLOAD_BYTES = 256 * 1024
_THUMB = 12  # pixels per side the model looks at: a mean colour needs no more


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """How the server behaves. Every fault knob is off by default; random ones use ``seed``.

    Latency per request is ``(latency + sample) * latency_scale`` where ``sample`` is 0 for
    ``"fixed"`` and, for ``"longtail"``, drawn from a mixture shaped like the hosted API
    (p50 ≈ 0.18 s, p90 ≈ 0.63 s, p99 ≈ 5.6 s). ``rate_limit`` R allows at most R requests in
    any sliding one-second window (for R < 1, one per 1/R seconds); beyond it 429 with
    ``Retry-After`` in whole seconds (at least 1), or ``retry_after`` verbatim when set.
    """

    api_key: str | None = None
    files_dir: Path | None = None
    latency: float = 0.0
    latency_distribution: Literal["fixed", "longtail"] = "fixed"
    latency_scale: float = 1.0
    rate_limit: float | None = None
    retry_after: float | None = None
    error_rate: float = 0.0
    drop_rate: float = 0.0
    hang_rate: float = 0.0
    hang_seconds: float = 3600.0
    max_body_bytes: int = 20 * 1024 * 1024
    fetch_timeout: float = 10.0
    url_cache_size: int = 64
    history_size: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("latency", "latency_scale", "hang_seconds", "fetch_timeout"):
            if getattr(self, name) < 0:
                raise ValueError(f"ServerConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("error_rate", "drop_rate", "hang_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"ServerConfig.{name} must be within 0..1")
        if self.latency_distribution not in ("fixed", "longtail"):
            raise ValueError("ServerConfig.latency_distribution must be 'fixed' or 'longtail'")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ValueError("ServerConfig.rate_limit must be > 0 (None for no limit)")
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError("ServerConfig.retry_after must be >= 0")
        if self.max_body_bytes < 1 or self.url_cache_size < 0 or self.history_size < 0:
            raise ValueError("ServerConfig sizes must be positive")


@dataclass(frozen=True, kw_only=True)
class Fault:
    """One scripted answer. ``headers=None`` means the real server's defaults for ``status``
    (``Retry-After`` on 429 and 503); ``{}`` sends none."""

    status: int = 200
    action: Literal["answer", "drop", "hang"] = "answer"
    headers: Mapping[str, str] | None = None
    message: str | None = None
    delay: float = 0.0
    body: bytes | None = None
    """Sent as is instead of the ``{"message": ...}`` JSON (with any status, 200 too): an HTML
    error page, a truncated or non-JSON body. Content type from ``headers``, else guessed."""


FaultSpec = int | Literal["drop", "hang"] | Fault


def _as_fault(spec: FaultSpec) -> Fault:
    if isinstance(spec, Fault):
        return spec
    if spec == "drop" or spec == "hang":
        return Fault(action=spec)
    if isinstance(spec, int) and 100 <= spec <= 599:
        return Fault(status=spec)
    raise ValueError(f"not a fault: {spec!r} (use a status, 'drop', 'hang' or a Fault)")


def image_key(data: bytes) -> str:
    """The key ``fail_image`` files an image's bytes under."""
    return hashlib.sha256(data).hexdigest()


@dataclass(kw_only=True)
class RequestRecord:
    """What a test may check about one inference request; the key's value is never kept."""

    path: str
    query_keys: tuple[str, ...]
    header_names: tuple[str, ...]  # lower-case
    api_key_in: Literal["query", "header", "both"] | None
    confidence: str | None
    image_url: str | None
    content_type: str | None
    content_length: int | None
    status: int | None = None  # None: dropped, hung or cancelled
    received: float = field(default_factory=time.monotonic)
    """``time.monotonic()`` when the request arrived: what a rate limit is judged on."""


@dataclass(kw_only=True)
class ServerStats:
    """Counters; ``requests`` and ``statuses`` are for the inference route only."""

    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    routes: Counter[str] = field(default_factory=Counter)
    recent: deque[RequestRecord] = field(default_factory=deque)
    in_flight: int = 0
    max_in_flight: int = 0
    drops: int = 0
    hangs: int = 0
    url_fetches: int = 0
    url_cache_hits: int = 0
    bytes_received: int = 0  # request bodies read on the inference route
    cpu_start: float = field(default_factory=time.process_time)

    @property
    def cpu_seconds(self) -> float:
        """CPU time of the whole process since start (client too, when in-process)."""
        return time.process_time() - self.cpu_start

    @property
    def last(self) -> RequestRecord:
        return self.recent[-1]

    def reset(self) -> None:
        """Zero every counter (a benchmark's warm-up should not count)."""
        self.requests = self.in_flight = self.max_in_flight = self.drops = self.hangs = 0
        self.url_fetches = self.url_cache_hits = self.bytes_received = 0
        self.statuses.clear()
        self.routes.clear()
        self.recent.clear()
        self.cpu_start = time.process_time()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for ``GET /_stats``: the counters and the last 20 requests."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["statuses"] = {str(k): v for k, v in sorted(self.statuses.items())}
        data["cpu_seconds"] = round(self.cpu_seconds, 4)
        data["recent"] = [asdict(r) for r in list(self.recent)[-20:]]
        return data


class SlidingWindowLimiter:
    """At most ``capacity`` accepted requests in any ``window`` seconds.

    A sliding log rather than a token bucket so "R requests per second" holds for every
    one-second span, which is what a client-side test can assert. Rejections do not count.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = max(1.0, 1.0 / rate)
        self.capacity = max(1, math.floor(rate * self.window + 1e-9))
        self._clock = clock
        self._accepted: deque[float] = deque()

    def acquire(self) -> float | None:
        """``None`` if a request may go ahead now, else the seconds until one may."""
        now = self._clock()
        while self._accepted and self._accepted[0] <= now - self.window:
            self._accepted.popleft()
        if len(self._accepted) < self.capacity:
            self._accepted.append(now)
            return None
        return self._accepted[0] + self.window - now


class _Faults:
    """Scripted answers; a lock because ``BackgroundServer`` callers live in another thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._script: deque[Fault] = deque()
        self._images: dict[str, tuple[Fault, int | None]] = {}

    def push(self, faults: list[Fault]) -> None:
        with self._lock:
            self._script.extend(faults)

    def next(self) -> Fault | None:
        with self._lock:
            return self._script.popleft() if self._script else None

    def add_image(self, key: str, fault: Fault, times: int | None) -> None:
        with self._lock:
            self._images[key] = (fault, times)

    def for_image(self, key: str) -> Fault | None:
        with self._lock:
            entry = self._images.get(key)
            if entry is None:
                return None
            fault, times = entry
            if times is not None:
                if times <= 1:
                    del self._images[key]
                else:
                    self._images[key] = (fault, times - 1)
            return fault

    @property
    def has_images(self) -> bool:
        return bool(self._images)

    def clear(self) -> None:
        with self._lock:
            self._script.clear()
            self._images.clear()


class _ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.headers, self.body = status, message, headers, body

    def response(self) -> web.Response:
        if self.body is None:
            return _json(self.status, {"message": self.message}, self.headers)
        headers = dict(self.headers or {})
        if not any(name.lower() == "content-type" for name in headers):
            html = self.body.lstrip()[:1] == b"<"
            headers["Content-Type"] = "text/html; charset=utf-8" if html else "application/json"
        return web.Response(status=self.status, body=self.body, headers=headers)


def _json(status: int, payload: object, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(payload),
        content_type="application/json",
        headers=headers,
    )


def _bad_image(cause: str) -> _ApiError:
    return _ApiError(400, f"Could not load input image. Cause: {cause}")


@dataclass(frozen=True)
class _Analysis:
    width: int
    height: int
    mean: tuple[float, float, float]
    pixels: list[tuple[int, int, int]]


def _analyse(data: bytes, auto_orient: bool) -> _Analysis:
    """Decode at reduced scale into a tiny thumbnail; report the upright original size."""
    from PIL import Image, ImageStat, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if auto_orient and image.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                width, height = height, width
            # draft lets libjpeg decode at 1/8 scale: a 12 MP photo costs a few ms, not 100.
            image.draft("RGB", (_THUMB * 2, _THUMB * 2))
            # Via RGBA so palette transparency converts without a warning.
            source = image.convert("RGBA") if "transparency" in image.info else image
            thumb = source.convert("RGB")
            thumb.thumbnail((_THUMB, _THUMB), Image.Resampling.BOX, reducing_gap=None)
    except UnidentifiedImageError:  # its text names a BytesIO object: say what it means
        raise _bad_image("the image data could not be decoded (not a known image format)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise _bad_image(f"the image data could not be decoded ({exc})") from None
    except Image.DecompressionBombError as exc:
        raise _bad_image(f"image too large to decode ({exc})") from None
    mean = ImageStat.Stat(thumb).mean
    raw = thumb.tobytes()  # not getdata(): deprecated in recent Pillow
    pixels = [(raw[i], raw[i + 1], raw[i + 2]) for i in range(0, len(raw), 3)]
    return _Analysis(width, height, (mean[0], mean[1], mean[2]), pixels)


def _distance(a: tuple[float, ...], b: tuple[int, int, int]) -> float:
    """RGB distance scaled to 0..√3."""
    return math.dist(a, b) / 255.0


def _single_label(analysis: _Analysis, threshold: float) -> dict[str, Any]:
    # Softmax over negative distances: the nearest class wins clearly, neighbours share the rest.
    scores = [math.exp(-_distance(analysis.mean, colour) / 0.08) for _, colour in CLASSES]
    total = sum(scores)
    probs = [round(score / total, 4) for score in scores]
    kept = [
        {"class": CLASSES[i][0], "class_id": i, "confidence": probs[i]}
        for i in sorted(range(len(CLASSES)), key=lambda i: -probs[i])
        if probs[i] >= threshold
    ]
    return {
        "predictions": kept,
        "top": kept[0]["class"] if kept else "",
        "confidence": kept[0]["confidence"] if kept else 0.0,
    }


def _multi_label(analysis: _Analysis, threshold: float) -> dict[str, Any]:
    nearest: Counter[int] = Counter()
    for pixel in analysis.pixels:
        nearest[min(range(len(CLASSES)), key=lambda i: _distance(pixel, CLASSES[i][1]))] += 1
    count = max(1, len(analysis.pixels))
    predictions: dict[str, dict[str, Any]] = {}
    for i, (name, _) in enumerate(CLASSES):
        share = nearest[i] / count
        # A class covering a fifth of the picture is a coin toss; half of it is near-certain.
        confidence = round(1.0 / (1.0 + math.exp(-16.0 * (share - 0.2))), 4)
        predictions[name] = {"confidence": confidence, "class_id": i}
    chosen = sorted(
        (n for n, p in predictions.items() if p["confidence"] >= threshold),
        key=lambda n: -float(predictions[n]["confidence"]),
    )
    return {"predictions": predictions, "predicted_classes": chosen}


def longtail_latency(rng: random.Random) -> float:
    """Hosted-API-shaped latency: a lognormal body plus 3% of multi-second stragglers."""
    if rng.random() < 0.03:
        return math.exp(rng.gauss(math.log(4.6), 0.45))
    return math.exp(rng.gauss(math.log(0.17), 0.9))


def _format_seconds(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


class _State:
    """Everything one app instance shares between requests."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.stats = ServerStats(recent=deque(maxlen=config.history_size))
        self.faults = _Faults()
        self.rng = random.Random(config.seed)
        self.limiter = SlidingWindowLimiter(config.rate_limit) if config.rate_limit else None
        self.own_hosts: set[str] = set()  # "127.0.0.1:PORT", so self-fetches share a cache
        self.url_cache: OrderedDict[str, bytes] = OrderedDict()
        self.session: aiohttp.ClientSession | None = None

    def record(self, request: web.Request) -> RequestRecord:
        query = request.query
        bearer = request.headers.get("Authorization", "").lower().startswith("bearer ")
        key_in: Literal["query", "header", "both"] | None = (
            ("both" if bearer else "query")
            if "api_key" in query
            else ("header" if bearer else None)
        )
        record = RequestRecord(
            path=request.path,
            query_keys=tuple(query.keys()),
            header_names=tuple(h.lower() for h in request.headers),
            api_key_in=key_in,
            confidence=query.get("confidence"),
            image_url=query.get("image"),
            content_type=request.headers.get("Content-Type"),
            content_length=request.content_length,
        )
        self.stats.recent.append(record)
        return record

    # -- the inference route -------------------------------------------------------------

    async def infer(self, request: web.Request) -> web.StreamResponse:
        stats = self.stats
        record = self.record(request)
        stats.requests += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            response = await self._infer(request)
        except _ApiError as error:
            response = error.response()
        finally:
            stats.in_flight -= 1
        record.status = response.status
        stats.statuses[response.status] += 1
        return response

    async def _infer(self, request: web.Request) -> web.StreamResponse:
        config = self.config
        fault = self.faults.next() or self._random_fault()
        if fault is not None:
            await self._apply(request, fault)
        if self.limiter is not None and (wait := self.limiter.acquire()) is not None:
            after = (
                config.retry_after if config.retry_after is not None else max(1, math.ceil(wait))
            )
            raise _ApiError(429, _MESSAGES[429], {"Retry-After": _format_seconds(after)})
        delay = config.latency + (
            longtail_latency(self.rng) if config.latency_distribution == "longtail" else 0.0
        )
        if delay * config.latency_scale > 0:
            await asyncio.sleep(delay * config.latency_scale)
        started = time.perf_counter()
        kind, threshold = self._check_request(request)
        data = await self._image_bytes(request)
        if self.faults.has_images and (image_fault := self.faults.for_image(image_key(data))):
            await self._apply(request, image_fault)
        orient = request.query.get("disable_preproc_auto_orient", "").lower() not in ("true", "1")
        if len(data) > _OFFLOAD_BYTES:
            analysis = await asyncio.to_thread(_analyse, data, orient)
        else:
            analysis = _analyse(data, orient)
        answer = (_single_label if kind == "single" else _multi_label)(analysis, threshold)
        body: dict[str, Any] = {"inference_id": str(uuid.uuid4())}
        body["time"] = round(time.perf_counter() - started, 6)
        body["image"] = {"width": analysis.width, "height": analysis.height}
        body.update(answer)
        return _json(200, body)

    def _random_fault(self) -> Fault | None:
        config = self.config
        if config.drop_rate and self.rng.random() < config.drop_rate:
            return Fault(action="drop")
        if config.hang_rate and self.rng.random() < config.hang_rate:
            return Fault(action="hang")
        if config.error_rate and self.rng.random() < config.error_rate:
            return Fault(status=500)
        return None

    async def _apply(self, request: web.Request, fault: Fault) -> None:
        """Carry out a fault: raise its answer, or drop/hang the connection. 200 returns."""
        if fault.delay > 0:
            await asyncio.sleep(fault.delay)
        if fault.action == "hang":
            self.stats.hangs += 1
            await asyncio.sleep(self.config.hang_seconds)
        if fault.action in ("drop", "hang"):
            if fault.action == "drop":
                self.stats.drops += 1
            if request.transport is not None:
                request.transport.close()
            # The peer is gone; cancelling ends the handler without aiohttp writing an answer.
            raise asyncio.CancelledError
        if fault.body is not None:
            raise _ApiError(fault.status, "", fault.headers or {}, body=fault.body)
        if fault.status == 200:
            return
        headers = fault.headers
        if headers is None:
            retry_after = self.config.retry_after
            after = _format_seconds(1 if retry_after is None else retry_after)
            headers = {"Retry-After": after} if fault.status in (429, 503) else {}
        raise _ApiError(
            fault.status, fault.message or _MESSAGES.get(fault.status, "Error."), headers
        )

    def _check_request(self, request: web.Request) -> tuple[Literal["single", "multi"], float]:
        """Model id, key, model and threshold, in the order the real servers check them."""
        slug, version = request.match_info["slug"], request.match_info["version"]
        if not (version.isdigit() and int(version) > 0):
            raise _ApiError(400, "Invalid Model ID sent in request.")
        expected = self.config.api_key
        if expected is not None:
            key = request.query.get("api_key")
            authorization = request.headers.get("Authorization", "")
            if key is None and authorization[:7].lower() == "bearer ":
                key = authorization[7:].strip()
            if not key:
                raise _ApiError(400, _MISSING_KEY)
            if not hmac.compare_digest(key.encode(), expected.encode()):
                raise _ApiError(403, _MESSAGES[403])
        if slug in _FATAL_SLUGS:
            raise _ApiError(_FATAL_SLUGS[slug], _MESSAGES[_FATAL_SLUGS[slug]])
        kind = MODELS.get(slug)
        if kind is None:
            raise _ApiError(404, _MESSAGES[404])
        raw = request.query.get("confidence", "0.4")
        try:
            threshold = float(raw)
        except ValueError:
            raise _ApiError(400, f"confidence must be a number, got {raw[:20]!r}") from None
        if not math.isfinite(threshold):
            raise _ApiError(400, "confidence must be a finite number")
        if threshold >= 1:
            threshold /= 100  # the real server reads 40 as 40%
        return kind, max(threshold, 0.01)  # the real server's floor

    async def _image_bytes(self, request: web.Request) -> bytes:
        url = request.query.get("image")
        if url is not None:
            if self.faults.has_images and (fault := self.faults.for_image(url)):
                await self._apply(request, fault)
            return await self._fetch(url)
        if "Content-Type" not in request.headers:
            raise _ApiError(400, "Content-Type header not provided with request.")
        cap = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > cap:
            raise _ApiError(413, f"Request payload too large: over {cap} bytes.")
        try:  # client_max_size caps bodies sent without a Content-Length
            if request.content_type == "multipart/form-data":
                self.stats.bytes_received += request.content_length or 0
                return await self._multipart_file(request)
            body = await request.read()
            self.stats.bytes_received += len(body)
        except web.HTTPRequestEntityTooLarge:
            raise _ApiError(413, f"Request payload too large: over {cap} bytes.") from None
        if body.startswith(b"data:"):
            body = body.partition(b",")[2]
        if not body.strip():
            raise _bad_image("Image not found in request body.")
        try:
            return _b64decode(body, validate=True)
        except binascii.Error:
            pass
        if body.startswith(_IMAGE_MAGIC):
            raise _bad_image(
                "the body is raw image bytes; send it base64-encoded or as a multipart 'file' part"
            )
        try:
            return binascii.a2b_base64(body)  # lenient: line breaks and the like, as servers do
        except (binascii.Error, ValueError):
            raise _bad_image("the body is not valid base64") from None

    async def _multipart_file(self, request: web.Request) -> bytes:
        form = await request.post()
        part = form.get("file")
        if isinstance(part, web.FileField):
            return part.file.read()
        raise _bad_image("the multipart body has no part named 'file'")

    async def _fetch(self, url: str) -> bytes:
        """Download an ``image=`` URL, through a small LRU so repeated URLs are cheap."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise _bad_image(f"the image URL is not an http(s) URL: {url[:200]!r}")
        # Our own /_files/ route ignores the query, so a query cannot change the bytes.
        own = parts.netloc in self.own_hosts and parts.path.startswith("/_files/")
        key = f"{parts.netloc}{parts.path}" if own else url
        if (cached := self.url_cache.get(key)) is not None:
            self.url_cache.move_to_end(key)
            self.stats.url_cache_hits += 1
            return cached
        if self.session is None:
            self.session = aiohttp.ClientSession()
        self.stats.url_fetches += 1
        cap = self.config.max_body_bytes
        try:
            timeout = aiohttp.ClientTimeout(total=self.config.fetch_timeout)
            async with self.session.get(url, timeout=timeout) as response:
                if response.status != 200:
                    raise _bad_image(f"fetching the image URL answered HTTP {response.status}")
                data = await response.content.read(cap + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _bad_image(f"could not fetch the image URL ({type(exc).__name__})") from None
        if len(data) > cap:
            raise _bad_image(f"the image at the URL is over {cap} bytes")
        if self.config.url_cache_size and len(data) <= 4 * 1024 * 1024:
            self.url_cache[key] = data
            while len(self.url_cache) > self.config.url_cache_size:
                self.url_cache.popitem(last=False)
        return data

    # -- the other routes ----------------------------------------------------------------

    async def info(self, request: web.Request) -> web.Response:
        return _json(
            200,
            {
                "name": "batchclassify local classification server",
                "models": {f"{slug}/N": kind + "-label" for slug, kind in MODELS.items()},
                "classes": [name for name, _ in CLASSES],
            },
        )

    async def stats_route(self, request: web.Request) -> web.Response:
        return _json(200, self.stats.as_dict())

    async def files(self, request: web.Request) -> web.StreamResponse:
        root = self.config.files_dir
        if root is None:
            raise _ApiError(404, "no files directory configured (--files-dir)")
        base = root.resolve()
        path = (base / request.match_info["name"]).resolve()
        if not path.is_relative_to(base) or not path.is_file():
            raise _ApiError(404, f"no such file: {request.match_info['name'][:200]}")
        return web.FileResponse(path)

    async def close(self, app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()


_STATE = web.AppKey("batchclassify_server_state", _State)


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Count routes, and give aiohttp's own errors (404, 405) ``{"message"}`` bodies."""
    state = request.app[_STATE]
    route = request.match_info.route.name or "unmatched"
    state.stats.routes[route] += 1
    try:
        return await handler(request)
    except _ApiError as error:
        return error.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _json(
            exc.status,
            {"message": _MESSAGES[404] if exc.status == 404 else exc.reason},
            {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")},
        )


def create_app(config: ServerConfig) -> web.Application:
    """The aiohttp application, for embedding or for ``aiohttp.test_utils``."""
    state = _State(config)
    app = web.Application(middlewares=[_json_errors], client_max_size=config.max_body_bytes)
    app[_STATE] = state
    app.router.add_get("/", state.info, name="info")
    app.router.add_get("/info", state.info, name="info-alias")
    app.router.add_get("/_stats", state.stats_route, name="stats")
    app.router.add_get("/_files/{name:.+}", state.files, name="files")
    app.router.add_post("/{slug}/{version}", state.infer, name="infer")
    app.on_cleanup.append(state.close)
    return app


class _FaultControls:
    """Scripting faults; shared by ``RunningServer`` and ``BackgroundServer``."""

    _faults: _Faults

    def script(self, *responses: FaultSpec) -> None:
        """The next inference requests answer these, in order, then normally again."""
        self._faults.push([_as_fault(r) for r in responses])

    def fail_next(
        self,
        n: int,
        status: int,
        headers: Mapping[str, str] | None = None,
        *,
        message: str | None = None,
    ) -> None:
        """The next ``n`` inference requests answer ``status`` (with ``headers`` if given)."""
        self.script(*[Fault(status=status, headers=headers, message=message)] * n)

    def fail_image(self, key: bytes | str, fault: FaultSpec, *, times: int | None = None) -> None:
        """Requests for this image (its bytes, or its ``image=`` URL) answer ``fault``;
        ``times=None`` means for ever."""
        name = image_key(key) if isinstance(key, bytes) else key
        self._faults.add_image(name, _as_fault(fault), times)

    def clear_faults(self) -> None:
        self._faults.clear()


class RunningServer(_FaultControls):
    """A started server; see the module docstring for scripting faults."""

    def __init__(self, app: web.Application, runner: web.AppRunner, host: str, port: int) -> None:
        self._state = app[_STATE]
        self._faults = self._state.faults
        self._runner = runner
        self._host, self.port = host, port
        self._site: web.TCPSite | None = None
        self.url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
        self._state.own_hosts.update({f"{host}:{port}", f"localhost:{port}"})

    @property
    def config(self) -> ServerConfig:
        return self._state.config

    @property
    def stats(self) -> ServerStats:
        return self._state.stats

    @property
    def down(self) -> bool:
        return self._site is None

    async def _listen(self) -> None:
        self._site = web.TCPSite(self._runner, self._host, self.port, reuse_address=True)
        await self._site.start()

    async def set_down(self, down: bool) -> None:
        """Down: stop listening and cut every open connection. Up: listen on the same port."""
        if down and self._site is not None:
            site, self._site = self._site, None
            await site.stop()
            for connection in self._runner.server.connections if self._runner.server else []:
                connection.force_close()
        elif not down and self._site is None:
            await self._listen()

    async def stop(self) -> None:
        await self.set_down(True)  # cut hung requests now instead of waiting them out
        await self._runner.cleanup()


async def start_server(
    config: ServerConfig = ServerConfig(), *, host: str = "127.0.0.1", port: int = 0
) -> RunningServer:
    """Start listening (port 0: any free port, see ``.url``) in the running event loop."""
    app = create_app(config)
    # No access log: it would write request lines, api_key query included.
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    bound = runner.addresses[0][1]
    server = RunningServer(app, runner, host, bound)
    server._site = site
    return server


class BackgroundServer(_FaultControls):
    """A server on its own thread and event loop, for synchronous code (and ``inference_sdk``).

    Starts on construction; a context manager that stops on exit. ``script``, ``fail_next``,
    ``fail_image`` and ``set_down`` are safe to call from any thread.
    """

    def __init__(
        self, config: ServerConfig = ServerConfig(), *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="batchclassify-server", daemon=True
        )
        self._thread.start()
        self._server = self._call(start_server(config, host=host, port=port))
        self._faults = self._server._faults  # thread-safe: it takes a lock
        self.url = self._server.url
        self.port = self._server.port

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    @property
    def stats(self) -> ServerStats:
        return self._server.stats

    def set_down(self, down: bool) -> None:
        self._call(self._server.set_down(down))

    def stop(self) -> None:
        if self._loop.is_closed():
            return
        self._call(self._server.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_forever(config: ServerConfig, *, host: str, port: int) -> None:
    """Serve until Ctrl-C or SIGTERM; prints ``listening on URL`` once ready."""

    async def main() -> None:
        server = await start_server(config, host=host, port=port)
        print(f"listening on {server.url}", flush=True)
        stopping = asyncio.Event()
        with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
        try:
            await stopping.wait()
        finally:
            await server.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


def main(argv: list[str] | None = None) -> None:
    """``python -m batchclassify.server``: the server with every knob as a flag."""
    parser = argparse.ArgumentParser(
        prog="python -m batchclassify.server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001, help="0 picks a free port")
    for option in fields(ServerConfig):  # one flag per knob, e.g. --rate-limit 20
        default = option.default
        special: dict[str, Callable[[str], Any]] = {"files_dir": Path, "api_key": str}
        kind = special.get(option.name) or (float if default is None else type(default))
        parser.add_argument(f"--{option.name.replace('_', '-')}", type=kind, default=default)
    args = parser.parse_args(argv)
    options = {k: v for k, v in vars(args).items() if k not in ("host", "port")}
    try:
        config = ServerConfig(**options)
    except ValueError as error:
        parser.error(str(error))
    serve_forever(config, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
