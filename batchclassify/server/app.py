"""The server's state and handlers: the legacy inference route, request checks, faults applied
(``routes.py`` puts them, and ``v1.py``'s, on one aiohttp application)."""

from __future__ import annotations

import asyncio
import binascii
import hmac
import math
import random
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import pybase64
from aiohttp import web

from .config import ServerConfig
from .errors import MESSAGES, MISSING_KEY, ApiError, bad_image, credits_exceeded, json_response
from .faults import Fault, Faults, SlidingWindowLimiter, Uplink, image_key, longtail_latency
from .model import CLASSES, MODELS, analyse, hashed, multi_label, single_label
from .stats import RequestRecord, ServerStats

_b64decode: Callable[..., bytes] = pybase64.b64decode
#: Slugs standing for a workspace in a fatal state, so clients can test stopping the job.
_FATAL_SLUGS = {"paused": 423, "no-credits": 402}
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"RIFF", b"BM", b"II*\x00", b"MM\x00*")
#: Bodies above this are decoded in a worker thread so the event loop keeps answering.
_OFFLOAD_BYTES = 256 * 1024
#: With ``upload_mbps``, bodies are read and paced in pieces of this size.
_UPLINK_CHUNK = 64 * 1024


def _format_seconds(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"



#: What the emulated servers bill, written here from Roboflow's pricing docs (2026) on the
#: server's side, apart from the client's ``cost.RULES``, so a test comparing the rows'
#: credits with ``stats.credits`` checks the client against an independent reckoning.
HOSTED_V1_CREDITS = 1 / 1000  # legacy hosted v1: 1 credit per 1,000 inferences


def serverless_credits(ms: float, *, remote: bool) -> float:
    """Serverless v2: max(processing time, 100 ms) / 500,000 ms; with
    ``X-Remote-Processing-Time``, (100 ms + the remote time) / 500,000 ms."""
    return (100.0 + ms if remote else max(ms, 100.0)) / 500_000.0


class ServerState:
    """Everything one app instance shares between requests."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.stats = ServerStats(recent=deque(maxlen=config.history_size))
        self.faults = Faults()
        self.rng = random.Random(config.seed)
        self.limiter = SlidingWindowLimiter(config.rate_limit) if config.rate_limit else None
        mbps = config.upload_mbps
        self.uplink = Uplink(mbps * 1_000_000 / 8) if mbps is not None else None
        self.own_hosts: set[str] = set()  # "127.0.0.1:PORT", so self-fetches share a cache
        self.url_cache: OrderedDict[str, bytes] = OrderedDict()
        self.session: aiohttp.ClientSession | None = None
        self.warm_models: set[str] = set()  # for X-Model-Cold-Start

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
        return await self.counted(request, self._infer)

    async def counted(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.Response]]
    ) -> web.StreamResponse:
        """Run an inference handler, counting the request and its answer in ``stats``."""
        stats = self.stats
        record = self.record(request)
        stats.requests += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            response = await handler(request)
        except ApiError as error:
            response = error.response()
        finally:
            stats.in_flight -= 1
        record.status = response.status
        stats.statuses[response.status] += 1
        return response

    async def _infer(self, request: web.Request) -> web.Response:
        """The legacy route: ``POST /{slug}/{version}``, parameters in the query."""
        await self.before_inference(request)
        started = time.perf_counter()
        kind, threshold = self._check_request(request)
        self.check_credits()
        data = await self._image_bytes(request)
        orient = request.query.get("disable_preproc_auto_orient", "").lower() not in ("true", "1")
        body = await self.answer(request, data, kind, threshold, orient, started)
        return json_response(200, body, self.billing_headers(request.path, started))

    def check_credits(self) -> None:
        """402, as Roboflow answers it, once the billed credits reach ``credit_cap``."""
        cap = self.config.credit_cap
        if cap is not None and self.stats.credits >= cap - 1e-12:
            raise credits_exceeded("credit_cap_exceeded")

    def billing_headers(self, model: str, started: float) -> dict[str, str] | None:
        """Serverless v2's cost headers (``billing_headers="serverless"``), else none; the
        answer's cost is added to ``stats.credits`` either way."""
        config = self.config
        if config.billing_headers == "off":
            self.stats.credits += HOSTED_V1_CREDITS
            return None
        cold = model not in self.warm_models
        self.warm_models.add(model)
        seconds = time.perf_counter() - started
        if config.processing_time is not None:
            high = config.processing_time_max
            low = config.processing_time
            seconds = low if high is None else self.rng.uniform(low, high)
        if cold:
            seconds *= config.cold_start_factor if config.processing_time is not None else 1.0
        headers = {
            "X-Processing-Time": f"{seconds:.6f}",
            "X-Model-Cold-Start": "true" if cold else "false",
        }
        remote = config.billing_headers == "serverless-remote"
        if remote:
            headers["X-Remote-Processing-Time"] = f"{seconds:.6f}"
        ms = round(seconds * 1000.0, 3)
        self.stats.credits += serverless_credits(ms, remote=remote)
        return headers

    async def before_inference(self, request: web.Request) -> None:
        """Scripted and random faults, the rate limit and latency: what comes before a model
        looks at a request."""
        config = self.config
        fault = self.faults.next() or self._random_fault()
        if fault is not None:
            await self._apply(request, fault)
        if self.limiter is not None and (wait := self.limiter.acquire()) is not None:
            after = (
                config.retry_after if config.retry_after is not None else max(1, math.ceil(wait))
            )
            raise ApiError(429, MESSAGES[429], {"Retry-After": _format_seconds(after)})
        delay = config.latency + (
            longtail_latency(self.rng) if config.latency_distribution == "longtail" else 0.0
        )
        if delay * config.latency_scale > 0:
            await asyncio.sleep(delay * config.latency_scale)

    async def answer(
        self,
        request: web.Request,
        data: bytes,
        kind: Literal["single", "multi"],
        threshold: float,
        orient: bool,
        started: float,
    ) -> dict[str, Any]:
        """The model's answer for one image, as the real servers shape it."""
        if self.faults.has_images and (image_fault := self.faults.for_image(image_key(data))):
            await self._apply(request, image_fault)
        if self.config.model_cost == "hash":
            analysis = hashed(data)
        elif len(data) > _OFFLOAD_BYTES:
            analysis = await asyncio.to_thread(analyse, data, orient)
        else:
            analysis = analyse(data, orient)
        answer = (single_label if kind == "single" else multi_label)(analysis, threshold)
        body: dict[str, Any] = {"inference_id": str(uuid.uuid4())}
        body["time"] = round(time.perf_counter() - started, 6)
        body["image"] = {"width": analysis.width, "height": analysis.height}
        body.update(answer)
        return body

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
            raise ApiError(fault.status, "", fault.headers or {}, body=fault.body)
        if fault.status == 200:
            return
        headers = fault.headers
        if headers is None:
            retry_after = self.config.retry_after
            after = _format_seconds(1 if retry_after is None else retry_after)
            headers = {"Retry-After": after} if fault.status in (429, 503) else {}
        raise ApiError(fault.status, fault.message or MESSAGES.get(fault.status, "Error."), headers)

    def _check_request(self, request: web.Request) -> tuple[Literal["single", "multi"], float]:
        """Model id, key, model and threshold, in the order the real servers check them."""
        model_id = f"{request.match_info['slug']}/{request.match_info['version']}"
        self.check_model_id(model_id)
        self.check_key(request, None)
        return self.model_kind(model_id), self.threshold(request.query.get("confidence", "0.4"))

    @staticmethod
    def check_model_id(model_id: str) -> None:
        """400 unless ``model_id`` is SLUG/VERSION with a positive version number."""
        slug, _, version = model_id.partition("/")
        if not (slug and version.isdigit() and int(version) > 0):
            raise ApiError(400, "Invalid Model ID sent in request.")

    def check_key(self, request: web.Request, in_body: object) -> None:
        """When the server wants a key: the body's (v1 routes), else the query's, else the
        Bearer header's must match it; none is a 400, another key a 403."""
        expected = self.config.api_key
        if expected is None:
            return
        key = in_body if isinstance(in_body, str) and in_body else request.query.get("api_key")
        authorization = request.headers.get("Authorization", "")
        if key is None and authorization[:7].lower() == "bearer ":
            key = authorization[7:].strip()
        if not key:
            raise ApiError(400, MISSING_KEY)
        if not hmac.compare_digest(key.encode(), expected.encode()):
            raise ApiError(403, MESSAGES[403])

    @staticmethod
    def model_kind(model_id: str) -> Literal["single", "multi"]:
        """Which kind of model ``model_id`` names; the fatal slugs' and unknown ones' errors."""
        slug = model_id.partition("/")[0]
        if slug in _FATAL_SLUGS:
            if _FATAL_SLUGS[slug] == 402:
                raise credits_exceeded()
            raise ApiError(_FATAL_SLUGS[slug], MESSAGES[_FATAL_SLUGS[slug]])
        kind = MODELS.get(slug)
        if kind is None:
            raise ApiError(404, MESSAGES[404])
        return kind

    @staticmethod
    def threshold(raw: object) -> float:
        """The class threshold from a query value or a JSON number."""
        try:
            threshold = float(raw)  # type: ignore[arg-type]  # anything else is the 400 below
        except (TypeError, ValueError):
            raise ApiError(400, f"confidence must be a number, got {str(raw)[:20]!r}") from None
        if not math.isfinite(threshold):
            raise ApiError(400, "confidence must be a finite number")
        if threshold >= 1:
            threshold /= 100  # the real server reads 40 as 40%
        return max(threshold, 0.01)  # the real server's floor

    async def _image_bytes(self, request: web.Request) -> bytes:
        url = request.query.get("image")
        if url is not None:
            return await self.image_from_url(request, url)
        if "Content-Type" not in request.headers:
            raise ApiError(400, "Content-Type header not provided with request.")
        if request.content_type == "multipart/form-data":
            self._check_length(request)
            self.stats.bytes_received += request.content_length or 0
            if self.uplink is not None:
                await self._pace(self.uplink, request.content_length or 0)
            try:  # client_max_size caps bodies sent without a Content-Length
                return await self._multipart_file(request)
            except web.HTTPRequestEntityTooLarge:
                raise self._too_large() from None
        return decode_base64(await self.read_body(request))

    async def image_from_url(self, request: web.Request, url: str) -> bytes:
        """An ``image=`` URL's bytes; a fault scripted for that URL applies first."""
        if self.faults.has_images and (fault := self.faults.for_image(url)):
            await self._apply(request, fault)
        return await self._fetch(url)

    def _check_length(self, request: web.Request) -> None:
        if (
            request.content_length is not None
            and request.content_length > self.config.max_body_bytes
        ):
            raise self._too_large()

    def _too_large(self) -> ApiError:
        return ApiError(413, f"Request payload too large: over {self.config.max_body_bytes} bytes.")

    async def read_body(self, request: web.Request) -> bytes:
        """The whole request body, through the uplink when there is one; 413 above the cap."""
        self._check_length(request)
        try:  # client_max_size caps bodies sent without a Content-Length
            if self.uplink is None:
                body = await request.read()
            else:
                body = await self._read_paced(request, self.uplink)
        except web.HTTPRequestEntityTooLarge:
            raise self._too_large() from None
        self.stats.bytes_received += len(body)
        return body

    async def _read_paced(self, request: web.Request, uplink: Uplink) -> bytes:
        """``request.read()`` through the shared uplink: each chunk waits for its turn on it."""
        cap = self.config.max_body_bytes
        body = bytearray()
        while chunk := await request.content.read(_UPLINK_CHUNK):
            body += chunk
            if len(body) > cap:  # the check request.read() makes against client_max_size
                raise web.HTTPRequestEntityTooLarge(max_size=cap, actual_size=len(body))
            if (wait := uplink.reserve(len(chunk))) > 0:
                await asyncio.sleep(wait)
        return bytes(body)

    async def _pace(self, uplink: Uplink, size: int) -> None:
        """Wait out ``size`` bytes on the uplink, chunk by chunk so concurrent uploads share it.

        For multipart bodies, which aiohttp parses from the stream itself: the body is read
        after the wait instead of during it, which delays the answer the same.
        """
        for start in range(0, size, _UPLINK_CHUNK):
            if (wait := uplink.reserve(min(_UPLINK_CHUNK, size - start))) > 0:
                await asyncio.sleep(wait)

    async def _multipart_file(self, request: web.Request) -> bytes:
        form = await request.post()
        part = form.get("file")
        if isinstance(part, web.FileField):
            return part.file.read()
        raise bad_image("the multipart body has no part named 'file'")

    async def _fetch(self, url: str) -> bytes:
        """Download an ``image=`` URL, through a small LRU so repeated URLs are cheap."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise bad_image(f"the image URL is not an http(s) URL: {url[:200]!r}")
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
                    raise bad_image(f"fetching the image URL answered HTTP {response.status}")
                data = await response.content.read(cap + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise bad_image(f"could not fetch the image URL ({type(exc).__name__})") from None
        if len(data) > cap:
            raise bad_image(f"the image at the URL is over {cap} bytes")
        if self.config.url_cache_size and len(data) <= 4 * 1024 * 1024:
            self.url_cache[key] = data
            while len(self.url_cache) > self.config.url_cache_size:
                self.url_cache.popitem(last=False)
        return data

    # -- the other routes ----------------------------------------------------------------

    async def info(self, request: web.Request) -> web.Response:
        return json_response(
            200,
            {
                "name": "batchclassify local classification server",
                "models": {f"{slug}/N": kind + "-label" for slug, kind in MODELS.items()},
                "classes": [name for name, _ in CLASSES],
            },
        )

    async def stats_route(self, request: web.Request) -> web.Response:
        return json_response(200, self.stats.as_dict())

    async def files(self, request: web.Request) -> web.StreamResponse:
        root = self.config.files_dir
        if root is None:
            raise ApiError(404, "no files directory configured (--files-dir)")
        base = root.resolve()
        path = (base / request.match_info["name"]).resolve()
        if not path.is_relative_to(base) or not path.is_file():
            raise ApiError(404, f"no such file: {request.match_info['name'][:200]}")
        return web.FileResponse(path)

    async def close(self, app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()


def decode_base64(body: bytes) -> bytes:
    """An image sent as base64 text (an optional ``data:`` prefix, line breaks tolerated)."""
    if body.startswith(b"data:"):
        body = body.partition(b",")[2]
    if not body.strip():
        raise bad_image("Image not found in request body.")
    try:
        return _b64decode(body, validate=True)
    except binascii.Error:
        pass
    if body.startswith(_IMAGE_MAGIC):
        raise bad_image(
            "the body is raw image bytes; send it base64-encoded or as a multipart 'file' part"
        )
    try:
        return binascii.a2b_base64(body)  # lenient: line breaks and the like, as servers do
    except (binascii.Error, ValueError):
        raise bad_image("the body is not valid base64") from None
