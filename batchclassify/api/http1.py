"""HTTP/1.1 POSTs over keep-alive connections: the job's default transport.

Every image is one POST of a few kilobytes to one host, so the client needs little of HTTP:
a pool of keep-alive connections, a request head, and an answer framed by Content-Length,
chunks or the end of the connection. aiohttp's client session does much more per request
(a request and a response object, multidicts, cookies, tracing, timers, redirects) and that
Python is most of a client's CPU per image: on one core this transport sends ~1.5× the
images aiohttp does (``benchmarks/cpu_bench.py``, RESULTS.md "Issue 25").
``BATCHCLASSIFY_HTTP=aiohttp`` picks ``client.AiohttpTransport`` instead.

What it does: http and https (the system's certificate store, as aiohttp: ``SSL_CERT_FILE``
and ``SSL_CERT_DIR`` apply), at most ``CONNECTIONS_PER_WORKER × --concurrency`` connections,
the most recently used idle connection first, idle ones closed after ``KEEPALIVE_SECONDS``,
interim 1xx answers skipped, gzip/deflate answers decoded. What it does not: proxies (as the
aiohttp session, which does not read the environment's), redirects (a 3xx is an answer:
``client.py`` names its Location), HTTP/2. A connection on which anything went wrong (a
timeout, a cancellation, a cut-off or malformed answer) is closed, never reused.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections import deque
from collections.abc import Iterator, Mapping
from typing import cast

from yarl import URL

from ..config import HttpConfig
from ..errors import RetryableError
from ..version import __version__
from .transport import CONNECTIONS_PER_WORKER, Failures, Response, new_response

#: An idle connection older than this is closed rather than reused: servers drop idle
#: connections after a while (5 s to minutes), and a request sent on one they just dropped
#: fails. aiohttp's default, too.
KEEPALIVE_SECONDS = 15.0
#: The longest answer head (status line and headers) taken; a longer one is malformed.
MAX_HEAD_BYTES = 64 * 1024

_Origin = tuple[str, str, int]


class Headers(Mapping[str, str]):
    """An answer's headers by name, in any case (a repeated header's values joined by ", ")."""

    __slots__ = ("_by_name",)

    def __init__(self, by_name: dict[str, str]) -> None:
        self._by_name = by_name  # lower-case names

    def __getitem__(self, name: str) -> str:
        return self._by_name[name.lower()]

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return self._by_name.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._by_name

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        return f"Headers({self._by_name!r})"


class _Broken(Exception):
    """The answer could not be read: ``kind`` says how (``closed``, ``cut``, ``malformed``)."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(detail or kind)
        self.kind = kind


# How the answer's body is framed, once its head is in.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _TRAILER, _UNTIL_CLOSE = range(6)


class _Connection(asyncio.Protocol):
    """One connection: one request at a time; ``waiter`` gets (status, headers, body)."""

    def __init__(self, pool: Http1Transport, origin: _Origin) -> None:
        self.pool = pool
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, Headers, bytes]] | None = None
        self.closed = False
        self.counted = True  # holds a place in the pool's count until it is lost
        self.reusable = True
        self.idle_since = 0.0
        self.paused = False
        self._drained: asyncio.Future[None] | None = None
        self._buffer = bytearray()
        self._state = _HEAD
        self._status = 0
        self._headers = Headers({})
        self._left = 0  # body bytes still to come (_LENGTH) or of this chunk (_CHUNK_DATA)
        self._parts: list[bytes] = []
        self._got_any = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():
            # Bytes nobody asked for: the connection is out of step; drop it.
            self.reusable = False
            self.close()
            return
        self._got_any = True
        self._buffer += data
        try:
            self._parse()
        except _Broken as broken:
            self._fail(broken)
        except (ValueError, IndexError, zlib.error) as exc:
            self._fail(_Broken("malformed", f"a malformed HTTP answer ({type(exc).__name__})"))

    def eof_received(self) -> bool:
        return False  # close our side too: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            if self._state == _UNTIL_CLOSE:
                self._parts.append(bytes(self._buffer))
                self._buffer.clear()
                try:
                    self._finish()
                except (_Broken, zlib.error):  # an undecodable body: never leave it unanswered
                    self._fail(_Broken("malformed", "an answer that could not be decoded"))
            elif self._got_any:
                self._fail(_Broken("cut"))
            else:
                self._fail(_Broken("closed"))
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self.pool._lost(self)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # The request

    def start(
        self, head: bytes, body: bytes, loop: asyncio.AbstractEventLoop
    ) -> asyncio.Future[tuple[int, Headers, bytes]]:
        """Send a request; the returned future gets its answer."""
        assert self.transport is not None
        self.waiter = waiter = loop.create_future()
        self._state = _HEAD
        self._got_any = False
        self._parts = []
        # One buffer, one write: uvloop's writelines costs several times the copy.
        self.transport.write(head + body if body else head)
        return waiter

    async def drain(self) -> None:
        """Wait until the kernel took the request (a large upload on a slow link)."""
        if self.paused and not self.closed:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained

    def time_out(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(TimeoutError())
        self.abort()

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.close()

    def abort(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.abort()

    # The answer

    def _fail(self, broken: _Broken) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(broken)
        self.abort()

    def _finish(self) -> None:
        parts = self._parts
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        encoding = self._headers.get("content-encoding")
        if encoding and body and encoding.lower() != "identity":  # no body: nothing encoded
            body = _decoded(body, encoding.lower())
        self._state = _HEAD
        self._parts = []
        waiter = self.waiter
        assert waiter is not None
        if not waiter.done():
            waiter.set_result((self._status, self._headers, body))
        if self._buffer:  # more than the answer: out of step
            self.reusable = False
        drained = self._drained
        if drained is not None and not drained.done():
            # Answered before the request was all sent (a 413): the rest never will be, and a
            # close would wait for it to be.
            drained.set_result(None)
            self.abort()

    def _parse(self) -> None:
        buffer = self._buffer
        while True:
            state = self._state
            if state == _HEAD:
                if not self._read_head():
                    return
                continue
            if state == _LENGTH:
                if len(buffer) < self._left:
                    return
                self._parts.append(bytes(buffer[: self._left]))
                del buffer[: self._left]
                self._finish()
                return
            if state == _UNTIL_CLOSE:
                return
            if state == _CHUNK_SIZE:
                end = buffer.find(b"\r\n")
                if end < 0:
                    return
                size = int(bytes(buffer[:end]).split(b";", 1)[0].strip(), 16)
                del buffer[: end + 2]
                if size < 0:
                    raise _Broken("malformed", "a malformed HTTP answer (chunk size)")
                self._left = size
                self._state = _CHUNK_DATA if size else _TRAILER
                continue
            if state == _CHUNK_DATA:
                if len(buffer) < self._left + 2:
                    return
                self._parts.append(bytes(buffer[: self._left]))
                del buffer[: self._left + 2]
                self._state = _CHUNK_SIZE
                continue
            # _TRAILER: lines up to an empty one
            end = buffer.find(b"\r\n")
            if end < 0:
                return
            del buffer[: end + 2]
            if end == 0:
                self._finish()
                return

    def _read_head(self) -> bool:
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD_BYTES:
                raise _Broken("malformed", "an HTTP answer head over 64 KiB")
            return False
        lines = buffer[:end].decode("latin-1").split("\r\n")
        del buffer[: end + 4]
        version, _, rest = lines[0].partition(" ")
        if not version.startswith("HTTP/1."):
            raise _Broken("malformed", "not an HTTP/1.x answer")
        status = int(rest[:3])
        by_name: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                raise _Broken("malformed", "a malformed HTTP header line")
            name = name.lower()  # no space may come before the colon (RFC 9112)
            if name in by_name:
                by_name[name] = f"{by_name[name]}, {value.strip()}"
            else:
                by_name[name] = value.strip()
        if 100 <= status < 200:
            return True  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        self._status = status
        self._headers = Headers(by_name)
        connection = by_name.get("connection", "").lower()
        if "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection):
            self.reusable = False
        transfer = by_name.get("transfer-encoding")
        if status in (204, 304):  # never a body, whatever the headers say (RFC 9110)
            self._left = 0
            self._state = _LENGTH
        elif transfer is not None and "chunked" in transfer.lower():
            self._state = _CHUNK_SIZE
            if "content-length" in by_name:  # both: the chunks count, the connection is suspect
                self.reusable = False
        elif "content-length" in by_name:
            length = int(by_name["content-length"])
            if length < 0:
                raise _Broken("malformed", "a negative Content-Length")
            self._left = length
            self._state = _LENGTH
        else:
            self.reusable = False
            self._state = _UNTIL_CLOSE
        return True


def _decoded(body: bytes, encoding: str) -> bytes:
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompress(body, 16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        try:
            return zlib.decompress(body)
        except zlib.error:  # raw deflate, without the zlib wrapper, as some servers send it
            return zlib.decompress(body, -zlib.MAX_WBITS)
    raise _Broken("malformed", f"an answer in an encoding not asked for ({encoding[:20]})")


class Http1Transport:
    """The default transport: a pool of HTTP/1.1 keep-alive connections (see the module)."""

    def __init__(
        self, config: HttpConfig, *, host: str, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        """``host`` names the server in messages; ``ssl_context`` (default: the system's
        certificates) verifies https servers."""
        self._config = config
        self._failures = Failures(host, api_key=config.api_key, timeout=config.timeout)
        self._timeout = config.timeout
        self._limit = CONNECTIONS_PER_WORKER * config.concurrency
        self._ssl = ssl_context
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._busy: dict[_Connection, float] = {}
        """Connections with a request in flight -> its deadline (``loop.time()``)."""
        self._sweep_every = max(0.01, min(1.0, config.timeout / 8))
        self._sweeper: asyncio.TimerHandle | None = None
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._prefixes: dict[URL, bytes] = {}
        self._header_lines: dict[tuple[tuple[str, str], ...], bytes] = {}
        self._closed = False

    async def send(self, url: URL, body: bytes, headers: Mapping[str, str]) -> Response:
        head = self._head(url, headers, len(body))
        loop = asyncio.get_running_loop()
        origin = (url.scheme, url.raw_host or "", url.port or 0)
        now = loop.time()
        connection = self._take_idle(origin, now)
        if connection is None:
            connection = await self._connect(origin, loop)
        waiter = connection.start(head, body, loop)
        busy = self._busy
        busy[connection] = now + self._timeout  # --timeout: per request, connect included
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._sweep_every, self._sweep, loop)
        try:
            if connection.paused:  # a large body on a slow link: wait until the kernel took it
                await connection.drain()
            status, answer_headers, payload = await waiter
        except BaseException as exc:
            connection.abort()
            if isinstance(exc, Exception):
                raise self._error(exc) from None
            raise  # cancelled: the connection is gone with the request
        finally:
            del busy[connection]
        self._release(connection, loop)
        return new_response(Response, (status, answer_headers, payload, False))

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Time out the requests past their deadline; again while any is in flight.

        One timer for all requests, not one each: a timer per request is a measurable share
        of its cost (more so on uvloop, where each is a libuv handle), and a deadline of
        ``--timeout`` seconds needs no better precision than an eighth of it."""
        now = loop.time()
        for connection, deadline in list(self._busy.items()):
            if deadline <= now:
                connection.time_out()
        self._sweeper = None
        if self._busy and not self._closed:
            self._sweeper = loop.call_later(self._sweep_every, self._sweep, loop)

    async def aclose(self) -> None:
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
        for connection in list(self._busy):
            connection.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for waiter in self._waiters:
            if not waiter.done():
                waiter.cancel()
        # Let the transports run connection_lost (TLS ones close asynchronously).
        await asyncio.sleep(0)

    # Connections

    def _take_idle(self, origin: _Origin, now: float) -> _Connection | None:
        connections = self._idle.get(origin)
        while connections:
            connection = connections.pop()
            if connection.closed:
                continue
            if now - connection.idle_since > KEEPALIVE_SECONDS:
                connection.close()
                continue
            return connection
        return None

    def _release(self, connection: _Connection, loop: asyncio.AbstractEventLoop) -> None:
        if connection.reusable and not connection.closed and not self._closed:
            connection.idle_since = loop.time()
            connection.waiter = None
            self._idle.setdefault(connection.origin, []).append(connection)
            self._wake()
        else:
            # Not close(): that would wait to send whatever of the request is still buffered,
            # to a server that may never read it.
            connection.abort()

    def _lost(self, connection: _Connection) -> None:
        """A connection closed (``connection_lost``): its place is free, once."""
        if connection.counted:
            connection.counted = False
            self._open -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _connect(self, origin: _Origin, loop: asyncio.AbstractEventLoop) -> _Connection:
        while self._open >= self._limit:
            # At the limit: wait for a connection to come back or to close, within the
            # request's own time (a TimeoutError: said as a request that got no answer).
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout(self._timeout):
                    await waiter
            except TimeoutError:
                raise self._error(TimeoutError()) from None
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # woken and cancelled at once: pass the turn on
                raise
            connection = self._take_idle(origin, loop.time())
            if connection is not None:
                return connection
        self._open += 1
        scheme, host, port = origin
        secure = scheme == "https"
        if secure and self._ssl is None:
            self._ssl = ssl.create_default_context()
        seconds = self._config.connect_seconds
        made: list[_Connection] = []

        def connection_for_this_request() -> _Connection:
            made.append(_Connection(self, origin))
            return made[0]

        try:
            async with asyncio.timeout(seconds):
                _, connection = await loop.create_connection(
                    connection_for_this_request,
                    host,
                    port,
                    ssl=self._ssl if secure else None,
                    server_hostname=host if secure else None,
                )
        except BaseException as exc:
            # Cut off while connecting: give the place back now. uvloop calls no
            # connection_lost for a connection made just before create_connection was
            # cancelled; when asyncio does, _lost finds its place given back already.
            if made:
                self._lost(made[0])
            else:
                self._open -= 1
                self._wake()
            if isinstance(exc, Exception):
                raise self._connect_error(exc, seconds) from None
            raise
        return connection

    def _head(self, url: URL, headers: Mapping[str, str], length: int) -> bytes:
        """The request head up to its Content-Length: built once per URL and per headers."""
        prefix = self._prefixes.get(url)
        if prefix is None:
            prefix = (
                f"POST {url.raw_path_qs} HTTP/1.1\r\nHost: {url.host_port_subcomponent}\r\n"
                f"User-Agent: batchclassify/{__version__}\r\nAccept-Encoding: identity\r\n"
            ).encode("ascii")
            if len(self._prefixes) >= 64:  # URL items: a new query each time
                self._prefixes.clear()
            self._prefixes[url] = prefix
        given = tuple(headers.items())
        lines = self._header_lines.get(given)
        if lines is None:
            text = "".join([f"{name}: {value}\r\n" for name, value in given])
            if text.count("\n") != len(given) or text.count("\r") != len(given):
                raise ValueError("a request header holds a line break")
            lines = text.encode("latin-1")
            if len(self._header_lines) >= 64:
                self._header_lines.clear()
            self._header_lines[given] = lines
        return b"%s%sContent-Length: %d\r\n\r\n" % (prefix, lines, length)

    # Errors: said without the URL (its query holds the API key)

    def _error(self, exc: Exception) -> RetryableError:
        failures = self._failures
        if isinstance(exc, RetryableError):
            return exc
        if isinstance(exc, TimeoutError):
            return failures.no_answer()
        if isinstance(exc, _Broken):
            if exc.kind == "closed":
                return failures.closed()
            if exc.kind == "cut":
                return failures.cut_off()
            return failures.failed(str(exc))
        if isinstance(exc, OSError):
            return failures.network(exc)
        return failures.failed(type(exc).__name__)

    def _connect_error(self, exc: Exception, seconds: float) -> RetryableError:
        if isinstance(exc, TimeoutError):
            return self._failures.not_accepted(seconds)
        if isinstance(exc, ssl.SSLError | ssl.CertificateError):
            reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None)
            return self._failures.cannot_connect(f"TLS failed ({reason or type(exc).__name__})")
        if isinstance(exc, OSError):
            return self._failures.cannot_connect_to(exc)
        return self._failures.cannot_connect(str(exc))
