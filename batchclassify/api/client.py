"""HTTP to the classification API: one request per image, answers mapped to our errors.

Two layers, as httpx has them: ``ClassificationClient`` builds each request and maps the
answer (status, headers, body) to a ``Prediction`` or an error; a ``Transport`` sends the
request and returns the answer. ``AiohttpTransport``, the default, is the only code that
touches aiohttp: its exceptions are translated there, once, into ``RetryableError``; their
text is never passed on as is, because aiohttp puts the full request URL, ``api_key`` query
included, into its messages. Tests pass a transport of their own to run the job in memory.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Coroutine, Mapping
from types import TracebackType
from typing import Any, NamedTuple, Protocol, Self
from urllib.parse import urlsplit

import aiohttp
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
from .redaction import redact
from .retry import RETRYABLE_STATUSES, parse_retry_after

#: Connections the pool may open per unit of --concurrency (see ``__aenter__``).
CONNECTIONS_PER_WORKER = 3

_FORM = {"Content-Type": "application/x-www-form-urlencoded"}

_FATAL_HINTS = {
    401: "the API key was rejected: check --api-key or ROBOFLOW_API_KEY",
    403: "the API key was refused (403 Forbidden): check --api-key or ROBOFLOW_API_KEY "
    "and that the key belongs to the model's workspace",
    404: "model not found: check --model (SLUG/VERSION) and --api-url",
    423: "usage of this workspace is paused: resume it in Roboflow, then rerun to resume",
    507: "the server may not load this model: check the model and the server's limits",
}


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


class Response(NamedTuple):
    """What a transport returns: an answer from the server, whatever its status."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    server_out: bool = False
    """Several servers (``fleet.py``): the server that gave a retryable failure is out now,
    while another is in: the failure was the server's, not the item's."""


_new_tuple = tuple.__new__


class Transport(Protocol):
    """Sends one POST and returns the server's answer.

    A request that got no answer (no connection, a timeout, a cut-off answer) raises
    ``RetryableError`` (kind ``timeout`` or ``connection``) with a message safe to show: no
    URL, no key. Cancellation must pass through (the watchdog cuts requests by cancelling).
    """

    async def send(self, url: URL, body: bytes, headers: Mapping[str, str]) -> Response:
        """POST ``body`` to ``url`` and return the answer."""
        ...

    async def aclose(self) -> None:
        """Release connections; called once, when the client closes."""
        ...


class AiohttpTransport:
    """The real transport: one aiohttp connection pool for the job."""

    def __init__(self, config: HttpConfig, *, host: str) -> None:
        self._config = config
        self._host = host
        connector = aiohttp.TCPConnector(
            # The job bounds its own requests; this is only a backstop. Room beyond
            # --concurrency for stuck requests, the spare workers standing in for them and
            # the copies sent of them: at most hedging.extra_requests beyond it, copies
            # within a small budget.
            limit=CONNECTIONS_PER_WORKER * config.concurrency,
            ttl_dns_cache=300,
            enable_cleanup_closed=True,
        )
        timeout = aiohttp.ClientTimeout(total=config.timeout, sock_connect=config.connect_seconds)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            json_serialize=lambda obj: orjson.dumps(obj).decode(),
            raise_for_status=False,
            auto_decompress=True,
        )

    async def aclose(self) -> None:
        await self._session.close()

    async def send(self, url: URL, body: bytes, headers: Mapping[str, str]) -> Response:
        try:
            async with self._session.post(url, data=body, headers=headers) as response:
                # tuple.__new__: the NamedTuple without its Python-level __new__, per request.
                return _new_tuple(
                    Response, (response.status, response.headers, await response.read(), False)
                )
        except aiohttp.ConnectionTimeoutError:
            # The connection itself was never accepted: nothing at that address answers (a
            # firewall dropping packets, a wrong address or port). Before any answer, the
            # job stops soon (health.py) rather than sitting out --max-outage.
            error = RetryableError(
                f"cannot connect to {self._host}: the connection was not accepted within "
                f"{self._config.connect_seconds:g} s (a firewall, or a wrong address or port?)",
                kind=ErrorType.CONNECTION,
            )
            error.unreachable = True
            raise error from None
        except TimeoutError:
            raise RetryableError(
                f"no answer from {self._host} within {self._config.timeout:g} s "
                "(raise --timeout if the server is just slow)",
                kind=ErrorType.TIMEOUT,
            ) from None
        except aiohttp.ClientConnectorError as exc:
            error = RetryableError(
                f"cannot connect to {self._host}: "
                f"{redact(str(exc.os_error), self._config.api_key)}",
                kind=ErrorType.CONNECTION,
            )
            error.unreachable = isinstance(exc.os_error, socket.gaierror | ConnectionRefusedError)
            raise error from None
        except aiohttp.ServerDisconnectedError:
            raise RetryableError(
                f"{self._host} closed the connection before answering", kind=ErrorType.CONNECTION
            ) from None
        except aiohttp.ClientPayloadError:
            raise RetryableError(
                f"the answer from {self._host} was cut off", kind=ErrorType.CONNECTION
            ) from None
        except aiohttp.ClientError as exc:
            raise RetryableError(
                f"request to {self._host} failed: {type(exc).__name__}", kind=ErrorType.CONNECTION
            ) from None
        except OSError as exc:
            raise RetryableError(
                f"network error talking to {self._host}: {exc.strerror or type(exc).__name__}",
                kind=ErrorType.CONNECTION,
            ) from None


class TransportHolder:
    """An async context manager holding one transport for a client's life: the caller's, or
    an aiohttp connection pool made on entry (an aiohttp session belongs to the running event
    loop), closed on exit. ``base_url`` names the host in messages."""

    def __init__(self, config: HttpConfig, base_url: str, transport: Transport | None) -> None:
        self._config = config
        # Named in messages: without a user:password@ part, which is a secret too.
        self._host = urlsplit(base_url).netloc.rpartition("@")[2]
        self._given = transport
        self._transport: Transport | None = None

    async def __aenter__(self) -> Self:
        self._transport = self._given or AiohttpTransport(self._config, host=self._host)
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

    Use as an async context manager; one instance holds one transport (by default an aiohttp
    connection pool) for the job, and closes it at the end.
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
        message = self.redact(_server_message(payload))
        if status in RETRYABLE_STATUSES:
            rate_limited = status == 429
            return (RateLimitedError if rate_limited else RetryableError)(
                f"HTTP {status}: {message}",
                kind=ErrorType.RATE_LIMITED if rate_limited else ErrorType.SERVER_ERROR,
                http_status=status,
                retry_after=parse_retry_after(retry_after, now=time.time),
            )
        if status == 402:
            said = self.redact(_credits_message(payload))
            return CreditsExhaustedError(
                f"out of credits: the server answered 402: {said}; add credits or raise the "
                "workspace's credit cap in Roboflow, then rerun to resume",
                http_status=status,
            )
        if status in _FATAL_HINTS:
            return FatalApiError(
                f"{_FATAL_HINTS[status]} (HTTP {status}: {message})", http_status=status
            )
        lowered = message.lower()
        if status == 400 and ("api key" in lowered or "api_key" in lowered):
            return FatalApiError(
                f"the server wants an API key: pass --api-key or set ROBOFLOW_API_KEY "
                f"(HTTP 400: {message})",
                http_status=status,
            )
        if status == 413:
            return ItemError(
                f"HTTP 413: the server refused the upload as too large ({message}); "
                "try --max-size to downscale",
                kind=ErrorType.TOO_LARGE,
                http_status=status,
            )
        kind = ErrorType.BAD_IMAGE if status == 400 else ErrorType.HTTP_ERROR
        return ItemError(f"HTTP {status}: {message}", kind=kind, http_status=status)
