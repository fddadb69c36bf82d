"""HTTP to the classification API: one request per image, answers mapped to our errors.

Two layers, as httpx has them: ``ClassificationClient`` builds each request and maps the
answer (status, headers, body) to a ``Prediction`` or an error; a ``Transport``
(``transport.py``) sends the request and returns the answer: ``http1.Http1Transport`` by
default, ``aiohttp_transport.AiohttpTransport`` with ``BATCHCLASSIFY_HTTP=aiohttp``. Both say
what went wrong without the URL, whose query holds the API key. Tests pass a transport of
their own to run the job in memory.
"""

from __future__ import annotations

import os
import time
from collections.abc import Coroutine, Mapping
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import orjson
from yarl import URL

from ..config import HttpConfig
from ..cost import BillingRule, read_cost_headers, rule_for_url
from ..error_types import ErrorType
from ..errors import (
    CreditsExhaustedError,
    FatalApiError,
    ItemError,
    RateLimitedError,
    RetryableError,
)
from ..models import Prediction, parse_prediction
from .http1 import Http1Transport
from .redaction import redact
from .retry import RETRYABLE_STATUSES, parse_retry_after
from .transport import HTTP_VARIABLE, Transport
from .transport import Response as Response  # re-exported: what a given transport returns

_FORM = {"Content-Type": "application/x-www-form-urlencoded"}

_FATAL_HINTS = {
    401: "the API key was rejected: check --api-key or ROBOFLOW_API_KEY",
    403: "the API key was refused (403 Forbidden): check --api-key or ROBOFLOW_API_KEY "
    "and that the key belongs to the model's workspace",
    404: "model not found: check --model (SLUG/VERSION) and --api-url",
    423: "usage of this workspace is paused: resume it in Roboflow, then rerun to resume",
    507: "the server may not load this model: check the model and the server's limits",
}


def answer_error(
    status: int,
    message: str,
    retry_after: str | None,
    *,
    fatal: Mapping[int, str],
    too_large: str = "",
) -> Exception:
    """The error a non-200 answer stands for, by the rule every client of Roboflow's APIs here
    follows (classification, dataset uploads): 429 and 5xx are retryable (``Retry-After``
    kept), a status in ``fatal`` stops the job with its hint, as does a 400 asking for a key;
    413 and any other 4xx are the item's. ``message``: the server's, the key already cut out;
    ``too_large``: what a 413's message adds (advice)."""
    if status in RETRYABLE_STATUSES:
        rate_limited = status == 429
        return (RateLimitedError if rate_limited else RetryableError)(
            f"HTTP {status}: {message}",
            kind=ErrorType.RATE_LIMITED if rate_limited else ErrorType.SERVER_ERROR,
            http_status=status,
            retry_after=parse_retry_after(retry_after, now=time.time),
        )
    if status in fatal:
        return FatalApiError(f"{fatal[status]} (HTTP {status}: {message})", http_status=status)
    lowered = message.lower()
    if status == 400 and ("api key" in lowered or "api_key" in lowered):
        return FatalApiError(
            f"the server wants an API key: pass --api-key or set ROBOFLOW_API_KEY "
            f"(HTTP 400: {message})",
            http_status=status,
        )
    if status == 413:
        return ItemError(
            f"HTTP 413: the server refused the upload as too large ({message}){too_large}",
            kind=ErrorType.TOO_LARGE,
            http_status=status,
        )
    kind = ErrorType.BAD_IMAGE if status == 400 else ErrorType.HTTP_ERROR
    return ItemError(f"HTTP {status}: {message}", kind=kind, http_status=status)


def _server_message(body: bytes) -> str:
    """The ``message`` of an error body, or a short excerpt of whatever came instead."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
        return str(parsed["message"])[:500]
    text = body[:200].decode("utf-8", "replace").strip()
    if text.lstrip().lower().startswith(("<!doctype", "<html")):
        return "an HTML page instead of JSON (a proxy or gateway error?)"
    return text or "empty body"


def _credits_message(body: bytes) -> str:
    """What a 402 says, in the server's words: its ``message`` and the code that tells a
    credit cap from an empty balance (``error``/``error_type``/``code``), when it sends one."""
    message = _server_message(body)
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return message
    if not isinstance(parsed, dict):
        return message
    codes = [
        str(parsed[name])[:80]
        for name in ("error", "error_type", "code")
        if isinstance(parsed.get(name), str) and parsed[name] not in message
    ]
    return f"{message} [{', '.join(codes)}]" if codes else message


def new_transport(config: HttpConfig, *, host: str) -> Transport:
    """The transport a client makes for itself: ``Http1Transport``, or ``AiohttpTransport``
    with ``BATCHCLASSIFY_HTTP=aiohttp``. Call it inside the running event loop."""
    if os.environ.get(HTTP_VARIABLE, "").strip().lower() == "aiohttp":
        from .aiohttp_transport import AiohttpTransport  # only when chosen

        return AiohttpTransport(config, host=host)
    return Http1Transport(config, host=host)


class TransportHolder:
    """An async context manager holding one transport for a client's life: the caller's, or
    ``new_transport``'s made on entry (a connection pool belongs to the running event loop),
    closed on exit. ``base_url`` names the host in messages."""

    def __init__(self, config: HttpConfig, base_url: str, transport: Transport | None) -> None:
        self._config = config
        # Named in messages: without a user:password@ part, which is a secret too.
        self._host = urlsplit(base_url).netloc.rpartition("@")[2]
        self._given = transport
        self._transport: Transport | None = None

    async def __aenter__(self) -> Self:
        self._transport = self._given or new_transport(self._config, host=self._host)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._transport is not None:
            await self._transport.aclose()
            self._transport = None


class ClassificationClient(TransportHolder):
    """Sends one image per request to ``{api_url}/{slug}/{version}``.

    Use as an async context manager; one instance holds one transport (by default a pool of
    keep-alive connections) for the job, and closes it at the end.
    """

    def __init__(
        self,
        config: HttpConfig,
        *,
        model: str,
        confidence: float | None,
        transport: Transport | None = None,
        billing: BillingRule | None = None,
    ) -> None:
        """``billing``: the rule each answer is priced by (default: the API URL's)."""
        # Several servers: built for the first; the fleet's transport sends each elsewhere.
        base = config.servers[0]
        super().__init__(config, base, transport)
        self.billing = billing or rule_for_url(base)
        self._endpoint = f"{base.rstrip('/')}/{model}"
        self._params: dict[str, str] = {}
        self._headers: dict[str, str] = dict(_FORM)
        if config.api_key:
            if config.api_key_in == "header":
                self._headers["Authorization"] = f"Bearer {config.api_key}"
            else:
                self._params["api_key"] = config.api_key
        if confidence is not None:
            # Servers read a value >= 1 as a percent (1 -> 1%), so a threshold of exactly 1
            # travels as 100.
            self._params["confidence"] = "100" if confidence >= 1 else repr(confidence)
        # Built once: encoding the query for every request is a measurable share of its cost.
        self._url = URL(self._endpoint).with_query(self._params)

    def redact(self, text: str) -> str:
        return redact(text, self._config.api_key)

    def classify_bytes(self, encoded: bytes) -> Coroutine[Any, Any, Prediction]:
        """Classify one image given as base64 bytes. (Hands back the request's coroutine
        itself: one coroutine frame fewer for every step of every request.)"""
        return self._post(self._url, encoded)

    def classify_url(self, url: str) -> Coroutine[Any, Any, Prediction]:
        """Classify an image the server fetches itself (``image=`` in the query string)."""
        return self._post(self._url.update_query(image=url), b"")

    async def _post(self, url: URL, body: bytes) -> Prediction:
        transport = self._transport
        assert transport is not None, "use ClassificationClient as an async context manager"
        status, headers, payload, server_out = await transport.send(url, body, self._headers)
        if status == 200:
            try:
                parsed: Any = orjson.loads(payload)
            except orjson.JSONDecodeError:
                raise ItemError(
                    "server answered 200 with a non-JSON body: "
                    + self.redact(_server_message(payload)),
                    kind=ErrorType.BAD_RESPONSE,
                    http_status=200,
                ) from None
            cost = read_cost_headers(headers)  # what it spent (cost.py)
            try:
                return parse_prediction(
                    parsed,
                    server_ms=cost.server_ms,
                    cold_start=cost.cold_start,
                    credits=self.billing.credits(cost),
                )
            except ItemError as error:
                error.http_status = 200
                raise
        failure = self._error_for(status, payload, headers.get("Retry-After"))
        if isinstance(failure, RetryableError):
            failure.server_out = server_out
        raise failure

    def _error_for(self, status: int, payload: bytes, retry_after: str | None) -> Exception:
        if status == 402:
            said = self.redact(_credits_message(payload))
            return CreditsExhaustedError(
                f"out of credits: the server answered 402: {said}; add credits or raise the "
                "workspace's credit cap in Roboflow, then rerun to resume",
                http_status=status,
            )
        return answer_error(
            status,
            self.redact(_server_message(payload)),
            retry_after,
            fatal=_FATAL_HINTS,
            too_large="; try --max-size to downscale",
        )
