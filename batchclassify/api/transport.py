"""What a transport is: it sends one POST and returns the server's answer.

Two transports implement it: ``http1.Http1Transport``, the default (HTTP/1.1 keep-alive
connections on asyncio protocols: the least CPU per request), and
``aiohttp_transport.AiohttpTransport`` (aiohttp's client session), chosen with
``BATCHCLASSIFY_HTTP=aiohttp``. ``client.new_transport`` picks one; tests pass their own.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import NamedTuple, Protocol

from yarl import URL

from ..error_types import ErrorType
from ..errors import RetryableError
from .redaction import redact

#: Connections the pool may open per unit of --concurrency: the job bounds its own requests
#: (``hedging.extra_requests``); this is only a backstop, with room for stuck requests, the
#: spare workers standing in for them and the copies sent of them.
CONNECTIONS_PER_WORKER = 3
#: ``aiohttp`` picks ``AiohttpTransport``; anything else (or unset) the default.
HTTP_VARIABLE = "BATCHCLASSIFY_HTTP"


class Response(NamedTuple):
    """What a transport returns: an answer from the server, whatever its status."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    server_out: bool = False
    """Several servers (``fleet.py``): the server that gave a retryable failure is out now,
    while another is in: the failure was the server's, not the item's."""


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


new_response = tuple.__new__
"""``new_response(Response, (status, headers, body, server_out))``: the NamedTuple without its
Python-level ``__new__``, once per request."""


class Failures:
    """What a transport says when a request got no answer: one wording and one kind for each
    failure, whichever transport met it, with the host named and never the URL (its query
    holds the API key). The job's retry and outage rules read ``kind`` and ``unreachable``."""

    def __init__(self, host: str, *, api_key: str | None, timeout: float) -> None:
        self._host = host
        self._api_key = api_key
        self._timeout = timeout

    def not_accepted(self, seconds: float) -> RetryableError:
        """The connection itself was never accepted: nothing at that address answers (a
        firewall dropping packets, a wrong address or port). Before any answer, the job
        stops soon (health.py) rather than sitting out --max-outage."""
        error = RetryableError(
            f"cannot connect to {self._host}: the connection was not accepted within "
            f"{seconds:g} s (a firewall, or a wrong address or port?)",
            kind=ErrorType.CONNECTION,
        )
        error.unreachable = True
        return error

    def cannot_connect(self, reason: str, *, unreachable: bool = False) -> RetryableError:
        error = RetryableError(
            f"cannot connect to {self._host}: {redact(reason, self._api_key)}",
            kind=ErrorType.CONNECTION,
        )
        error.unreachable = unreachable
        return error

    def cannot_connect_to(self, exc: OSError) -> RetryableError:
        """An address refused or not resolved is unreachable; other errors may pass."""
        unreachable = isinstance(exc, socket.gaierror | ConnectionRefusedError)
        return self.cannot_connect(str(exc), unreachable=unreachable)

    def no_answer(self) -> RetryableError:
        return RetryableError(
            f"no answer from {self._host} within {self._timeout:g} s "
            "(raise --timeout if the server is just slow)",
            kind=ErrorType.TIMEOUT,
        )

    def closed(self) -> RetryableError:
        return RetryableError(
            f"{self._host} closed the connection before answering", kind=ErrorType.CONNECTION
        )

    def cut_off(self) -> RetryableError:
        return RetryableError(
            f"the answer from {self._host} was cut off", kind=ErrorType.CONNECTION
        )

    def failed(self, what: str) -> RetryableError:
        return RetryableError(f"request to {self._host} failed: {what}", kind=ErrorType.CONNECTION)

    def network(self, exc: OSError) -> RetryableError:
        return RetryableError(
            f"network error talking to {self._host}: {exc.strerror or type(exc).__name__}",
            kind=ErrorType.CONNECTION,
        )
