"""What a transport is: it sends one POST and returns the server's answer.

Two transports implement it: ``http1.Http1Transport``, the default (HTTP/1.1 keep-alive
connections on asyncio protocols: the least CPU per request), and
``aiohttp_transport.AiohttpTransport`` (aiohttp's client session), chosen with
``BATCHCLASSIFY_HTTP=aiohttp``. ``client.new_transport`` picks one; tests pass their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple, Protocol

from yarl import URL

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
