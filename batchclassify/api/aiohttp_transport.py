"""aiohttp's client session as a transport (``BATCHCLASSIFY_HTTP=aiohttp``).

The only code that touches aiohttp's client: its exceptions are translated here, once, into
``RetryableError``; their text is never passed on as is, because aiohttp puts the full
request URL, ``api_key`` query included, into its messages.
"""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
import orjson
from yarl import URL

from ..config import HttpConfig
from .transport import CONNECTIONS_PER_WORKER, Failures, Response, new_response


class AiohttpTransport:
    """The real transport: one aiohttp connection pool for the job."""

    def __init__(self, config: HttpConfig, *, host: str) -> None:
        self._config = config
        self._failures = Failures(host, api_key=config.api_key, timeout=config.timeout)
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
            raise self._failures.not_accepted(self._config.connect_seconds) from None
        except TimeoutError:
            raise self._failures.no_answer() from None
        except aiohttp.ClientConnectorError as exc:
            raise self._failures.cannot_connect_to(exc.os_error) from None
        except aiohttp.ServerDisconnectedError:
            raise self._failures.closed() from None
        except aiohttp.ClientPayloadError:
            raise self._failures.cut_off() from None
        except aiohttp.ClientError as exc:
            raise self._failures.failed(type(exc).__name__) from None
        except OSError as exc:
            raise self._failures.network(exc) from None
