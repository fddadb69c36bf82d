"""aiohttp's client session as a transport (``BATCHCLASSIFY_HTTP=aiohttp``).

The only code that touches aiohttp's client: its exceptions are translated here, once, into
``RetryableError``; their text is never passed on as is, because aiohttp puts the full
request URL, ``api_key`` query included, into its messages.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

import aiohttp
import orjson
from yarl import URL

from ..config import HttpConfig
from ..error_types import ErrorType
from ..errors import RetryableError
from .redaction import redact
from .transport import CONNECTIONS_PER_WORKER, Response, new_response


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
                return new_response(
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
