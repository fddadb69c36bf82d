"""The default transport (``api/http1.py``) against real servers on 127.0.0.1: scripted HTTP/1.1
servers that answer as real ones may (chunks, gzip, 100 Continue, closing, hanging, cutting
off), a TLS server with a certificate made for the test, and what a job sees through it."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from yarl import URL

from batchclassify.api.http1 import Http1Transport
from batchclassify.api.transport import HTTP_VARIABLE
from batchclassify.config import HttpConfig
from batchclassify.error_types import ErrorType
from batchclassify.errors import RetryableError
from batchclassify.server.running import BackgroundServer

from .conftest import Cli, make_images, read_rows, run_args

SECRET = "sk-test-http1-5ecret"

Handler = Callable[[bytes, bytes, asyncio.StreamWriter], Awaitable[bool]]
"""(request head, request body, writer) -> keep the connection open?"""


class Scripted:
    """An HTTP/1.1 server on 127.0.0.1 whose answers a test scripts."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.heads: list[bytes] = []
        self.open_now = 0
        self.most_open = 0
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.heads.append(head)
                if not await self.handler(head, body, writer):
                    return
        finally:
            self.open_now -= 1
            with contextlib.suppress(ConnectionError):
                writer.close()

    @contextlib.asynccontextmanager
    async def running(self, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        port = server.sockets[0].getsockname()[1]
        self.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
        try:
            yield self.url
        finally:
            server.close()


def answer(body: bytes, *, status: str = "200 OK", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\n%s\r\n%s" % (
        status.encode(),
        len(body),
        extra,
        body,
    )


async def echo(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
    writer.write(answer(b"got " + body, extra=b"X-Thing: one\r\nx-thing: two\r\n"))
    return True


def transport(concurrency: int = 4, timeout: float = 10.0) -> Http1Transport:
    config = HttpConfig(api_key=SECRET, concurrency=concurrency, timeout=timeout)
    return Http1Transport(config, host="the-server")


def endpoint(base: str) -> URL:
    return URL(f"{base}/colors/1").with_query({"api_key": SECRET})


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_answers_come_back_to_their_requests_over_a_few_kept_connections() -> None:
    async def main() -> None:
        server = Scripted(echo)
        async with server.running() as base:
            client = transport(concurrency=4)

            async def loop(n: int) -> list[bytes]:
                bodies = []
                for k in range(25):
                    response = await client.send(endpoint(base), b"%d-%d" % (n, k), FORM)
                    assert response.status == 200
                    bodies.append(response.body)
                return bodies

            results = await asyncio.gather(*(loop(n) for n in range(4)))
            last = await client.send(endpoint(base), b"x", FORM)
            await client.aclose()
        for n, bodies in enumerate(results):
            assert bodies == [b"got %d-%d" % (n, k) for k in range(25)]
        assert server.connections <= 4  # 101 requests, each connection kept
        # Headers by name in any case; a repeated header's values joined.
        assert last.headers["x-THING"] == "one, two"
        assert last.headers.get("Content-Length") == "5"
        assert "x-thing" in last.headers
        head = server.heads[0].decode()
        assert head.startswith(f"POST /colors/1?api_key={SECRET} HTTP/1.1\r\n")
        assert f"Host: {base.split('//')[1]}\r\n" in head
        assert "Content-Type: application/x-www-form-urlencoded\r\n" in head
        assert "User-Agent: batchclassify/" in head

    asyncio.run(main())


def test_chunked_gzip_interim_and_until_close_answers_are_read_whole() -> None:
    payload = b'{"top": "red", "confidence": 0.9}' * 20

    async def varied(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        kind = body.decode()
        if kind == "chunked":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            chunks = [payload[:7], payload[7:300], payload[300:]]
            framed = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in chunks)
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                + framed
                + b"0\r\nX-Trailer: t\r\n\r\n"
            )
            return True
        if kind == "gzip":
            writer.write(answer(gzip.compress(payload), extra=b"Content-Encoding: gzip\r\n"))
            return True
        # No length: the answer ends when the connection does.
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + payload)
        await writer.drain()
        return False

    async def main() -> None:
        server = Scripted(varied)
        async with server.running() as base:
            client = transport()
            # One at a time, byte by byte from the server's side too (small writes above).
            for kind in ("chunked", "gzip", "until-close", "chunked", "until-close", "gzip"):
                response = await client.send(endpoint(base), kind.encode(), FORM)
                assert (kind, response.status, response.body) == (kind, 200, payload)
            await client.aclose()
        # The two answers that ended with their connection each needed a new one after them.
        assert server.connections == 3

    asyncio.run(main())


@pytest.mark.parametrize(
    ("script", "kind", "says"),
    [
        (b"", ErrorType.CONNECTION, "the-server closed the connection before answering"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial",
            ErrorType.CONNECTION,
            "the answer from the-server was cut off",
        ),
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", ErrorType.CONNECTION, "request to the-server failed"),
    ],
    ids=["closed", "cut-off", "not-http"],
)
def test_a_broken_answer_is_a_retryable_error_that_names_the_host_not_the_url(
    script: bytes, kind: ErrorType, says: str
) -> None:
    async def broken(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(script)
        await writer.drain()
        return False  # and close

    async def main() -> None:
        async with Scripted(broken).running() as base:
            client = transport()
            with pytest.raises(RetryableError) as caught:
                await client.send(endpoint(base), b"x", FORM)
            await client.aclose()
        assert caught.value.kind == kind
        assert says in str(caught.value)
        assert SECRET not in str(caught.value) and "colors/1" not in str(caught.value)

    asyncio.run(main())


def test_a_timed_out_or_cancelled_request_never_hands_its_late_answer_to_the_next() -> None:
    async def slow_then_fast(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        if body == b"slow":
            await asyncio.sleep(0.5)
        writer.write(answer(b"for " + body))
        return True

    async def main() -> Scripted:
        server = Scripted(slow_then_fast)
        async with server.running() as base:
            client = transport(concurrency=1, timeout=0.2)
            with pytest.raises(RetryableError) as caught:
                await client.send(endpoint(base), b"slow", FORM)
            assert caught.value.kind == ErrorType.TIMEOUT
            assert "no answer from the-server within 0.2 s" in str(caught.value)
            fresh = await client.send(endpoint(base), b"fresh", FORM)
            assert fresh.body == b"for fresh"

            # Cancelled (the job's watchdog, a stop): the same.
            task = asyncio.create_task(client.send(endpoint(base), b"slow", FORM))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            again = await client.send(endpoint(base), b"again", FORM)
            assert again.body == b"for again"
            await asyncio.sleep(0.6)  # the late answers would have arrived by now
            last = await client.send(endpoint(base), b"last", FORM)
            assert last.body == b"for last"
            await client.aclose()
        return server

    server = asyncio.run(main())
    # The timed-out and the cancelled request each took their connection with them.
    assert server.connections == 3


def test_connections_stay_within_the_pool_limit() -> None:
    async def slow(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.05)
        writer.write(answer(body))
        return True

    async def main() -> Scripted:
        server = Scripted(slow)
        async with server.running() as base:
            client = transport(concurrency=1)  # 3 connections per unit of concurrency
            answers = await asyncio.gather(
                *(client.send(endpoint(base), b"%d" % n, FORM) for n in range(12))
            )
            await client.aclose()
        assert [a.body for a in answers] == [b"%d" % n for n in range(12)]
        return server

    server = asyncio.run(main())
    assert server.most_open == 3


def test_an_idle_connection_the_server_closed_is_not_used_again() -> None:
    async def answer_then_close(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer(body))  # says nothing about closing, then closes
        await writer.drain()
        return False

    async def main() -> Scripted:
        server = Scripted(answer_then_close)
        async with server.running() as base:
            client = transport()
            for n in range(5):
                response = await client.send(endpoint(base), b"%d" % n, FORM)
                assert response.body == b"%d" % n
                await asyncio.sleep(0.05)  # the close reaches the client meanwhile
            await client.aclose()
        return server

    assert asyncio.run(main()).connections == 5


def test_nothing_listening_is_unreachable_and_says_so_without_the_key() -> None:
    async def main() -> RetryableError:
        client = transport()
        with pytest.raises(RetryableError) as caught:
            await client.send(endpoint("http://127.0.0.1:9"), b"x", FORM)
        await client.aclose()
        return caught.value

    error = asyncio.run(main())
    assert error.unreachable
    assert str(error).startswith("cannot connect to the-server:")
    assert SECRET not in str(error)


def test_a_header_with_a_line_break_is_refused_before_anything_is_sent() -> None:
    async def main() -> Scripted:
        server = Scripted(echo)
        async with server.running() as base:
            client = transport()
            with pytest.raises(ValueError, match="line break"):
                await client.send(endpoint(base), b"x", {"Authorization": "Bearer a\r\nX: y"})
            ok = await client.send(endpoint(base), b"x", FORM)
            assert ok.body == b"got x"
            await client.aclose()
        return server

    assert len(asyncio.run(main()).heads) == 1


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_https_verifies_the_server_certificate(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)

    async def main() -> None:
        async with Scripted(echo).running(server_side) as base:
            trusting = ssl.create_default_context(cafile=str(cert))
            config = HttpConfig(api_key=SECRET, concurrency=2)
            client = Http1Transport(config, host="the-server", ssl_context=trusting)
            response = await client.send(endpoint(base), b"over tls", FORM)
            assert response.body == b"got over tls"
            await client.aclose()

            # The system's certificate store does not know this certificate.
            default = transport()
            with pytest.raises(RetryableError) as caught:
                await default.send(endpoint(base), b"x", FORM)
            await default.aclose()
            assert "cannot connect to the-server: TLS failed" in str(caught.value)
            assert "certificate" in str(caught.value)

    asyncio.run(main())


@pytest.mark.parametrize("http", ["", "aiohttp"], ids=["default", "aiohttp"])
def test_a_job_gets_the_same_rows_through_either_transport(
    tmp_path: Path,
    server: BackgroundServer,
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
    http: str,
) -> None:
    expected = make_images(tmp_path / "in", 30)  # id -> its colour, the model's answer
    monkeypatch.setenv(HTTP_VARIABLE, http)
    output = tmp_path / "out.jsonl"
    result = cli(*run_args(server, output, tmp_path / "in"), "--concurrency", "4", "-q")
    assert result.code == 0, result.err
    rows = read_rows(output)
    assert all(row["status"] == "ok" for row in rows)
    assert {row["id"]: row["top"] for row in rows} == expected
    assert server.stats.requests == 30  # one request per image, none paid twice


def test_an_undecodable_answer_ended_by_the_close_is_an_error_not_a_hang() -> None:
    async def bad_gzip(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\nnot gzip at all")
        await writer.drain()
        return False  # the close ends the answer

    async def main() -> RetryableError:
        async with Scripted(bad_gzip).running() as base:
            client = transport(timeout=30.0)
            with pytest.raises(RetryableError) as caught:
                # Before: the decoding error escaped connection_lost and the request waited
                # for its timeout (30 s here: the test would fail on pytest's own limit).
                await asyncio.wait_for(client.send(endpoint(base), b"x", FORM), 5)
            await client.aclose()
        return caught.value

    error = asyncio.run(main())
    assert error.kind == ErrorType.CONNECTION
    assert "could not be decoded" in str(error)


def test_no_body_is_awaited_after_a_204_and_chunks_with_a_length_end_the_connection() -> None:
    async def odd(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        if body == b"204":  # a length with no body: a 204 has none, whatever it says
            writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n")
        else:  # chunks and a length both: read as chunks, the connection not used again
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"2\r\nok\r\n0\r\n\r\n"
            )
        return True

    async def main() -> Scripted:
        server = Scripted(odd)
        async with server.running() as base:
            client = transport(timeout=30.0)
            empty = await asyncio.wait_for(client.send(endpoint(base), b"204", FORM), 5)
            assert (empty.status, empty.body) == (204, b"")
            both = await asyncio.wait_for(client.send(endpoint(base), b"both", FORM), 5)
            assert (both.status, both.body) == (200, b"ok")
            again = await asyncio.wait_for(client.send(endpoint(base), b"204", FORM), 5)
            assert again.status == 204
            await client.aclose()
        return server

    assert asyncio.run(main()).connections == 2  # the 204's kept, the one after "both" new

