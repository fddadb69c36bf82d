"""The default transport (``api/http1.py``) where a review found it wrong: answers and
cancellations that used to leave the pool short of a connection for good, against scripted
servers on 127.0.0.1, on the standard event loop and on uvloop (the job's loop when installed)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from collections.abc import Coroutine
from typing import Any

import pytest
import uvloop

from batchclassify.error_types import ErrorType
from batchclassify.errors import RetryableError

from .test_http1 import FORM, SECRET, Scripted, answer, endpoint, transport

LOOPS = ["asyncio", "uvloop"]


def run(main: Coroutine[Any, Any, None], loop: str) -> None:
    if loop == "uvloop":
        uvloop.run(main)
    else:
        asyncio.run(main)


def all_at_once(count: int) -> Scripted:
    """A server that answers only once ``count`` requests are in at the same time: the client
    must still be able to open that many connections."""
    arrived = 0
    everyone_in = asyncio.Event()

    async def barrier(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        nonlocal arrived
        arrived += 1
        if arrived >= count:
            everyone_in.set()
        await everyone_in.wait()
        writer.write(answer(b"for " + body))
        return True

    return Scripted(barrier)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_cut_off_compressed_answer_without_a_length_fails_fast_and_frees_its_place(
    loop: str,
) -> None:
    # A gateway's error page, gzipped though identity was asked for, framed by the end of the
    # connection, and cut off: its body cannot be decoded once the connection is gone.
    cut = gzip.compress(b"<html>bad gateway</html>" * 20)[:15]

    async def gateway(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        if body == b"cut":
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Encoding: gzip\r\n\r\n" + cut)
            await writer.drain()
            return False
        writer.write(answer(b"for " + body))
        return True

    async def main() -> None:
        async with Scripted(gateway).running() as base:
            client = transport(concurrency=1, timeout=3.0)  # a pool of 3 connections
            for _ in range(4):
                with pytest.raises(RetryableError) as caught:
                    await client.send(endpoint(base), b"cut", FORM)
                # A broken answer, said at once: not a timeout after --timeout seconds.
                assert caught.value.kind == ErrorType.CONNECTION
                assert "request to the-server failed: an answer that could not be decoded" in str(
                    caught.value
                )
                assert SECRET not in str(caught.value)
            # The pool is not short of the connections those answers came on.
            answers = await asyncio.wait_for(
                asyncio.gather(*(client.send(endpoint(base), b"%d" % n, FORM) for n in range(3))),
                10,
            )
            assert [a.body for a in answers] == [b"for 0", b"for 1", b"for 2"]
            await client.aclose()

    run(main(), loop)


def _cancel_after(task: asyncio.Task[Any], turns: int) -> None:
    """Cancel ``task`` after ``turns`` turns of the event loop."""
    loop = asyncio.get_running_loop()

    def tick(left: int) -> None:
        if left == 0:
            task.cancel()
        else:
            loop.call_soon(tick, left - 1)

    loop.call_soon(tick, turns)


@pytest.mark.parametrize("loop", LOOPS)
def test_requests_cancelled_at_every_turn_of_connecting_leave_the_whole_pool(loop: str) -> None:
    # The job's watchdog and its hedged copies cancel requests at any moment, and some land
    # while a new connection is being opened (on uvloop, between the connection being made and
    # create_connection returning it, no connection_lost follows).
    async def closing(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer(body, extra=b"Connection: close\r\n"))
        await writer.drain()
        return False

    async def main() -> None:
        client = transport(concurrency=1)  # a pool of 3 connections
        async with Scripted(closing).running() as base:
            for turns in range(40):  # from before connecting to after the answer
                task = asyncio.create_task(client.send(endpoint(base), b"x", FORM))
                _cancel_after(task, turns)
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        # All 3 connections can still be open at once.
        server = all_at_once(3)
        async with server.running() as base:
            answers = await asyncio.wait_for(
                asyncio.gather(*(client.send(endpoint(base), b"%d" % n, FORM) for n in range(3))),
                10,
            )
            await client.aclose()
        assert [a.body for a in answers] == [b"for 0", b"for 1", b"for 2"]

    run(main(), loop)


@pytest.mark.parametrize("loop", LOOPS)
def test_an_answer_before_the_upload_was_all_sent_is_taken_at_once(loop: str) -> None:
    # A server that refuses a large upload from its head (413) and reads no more of it: the
    # client, its writes paused, must take the answer then, not after --timeout seconds.
    async def refuse_large(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            if length > 1_000_000:
                writer.write(answer(b'{"message": "too large"}', status="413 Payload Too Large"))
                await asyncio.sleep(60)  # reads nothing more
            await reader.readexactly(length)
            writer.write(answer(b"for " + head[:4]))

    async def main() -> None:
        server = await asyncio.start_server(refuse_large, "127.0.0.1", 0)
        base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        client = transport(concurrency=1, timeout=60.0)
        for _ in range(4):  # more than the pool's 3 connections
            refused = await asyncio.wait_for(
                client.send(endpoint(base), b"x" * 32_000_000, FORM), 10
            )
            assert refused.status == 413
            assert refused.body == b'{"message": "too large"}'
        small = await asyncio.wait_for(client.send(endpoint(base), b"x", FORM), 10)
        assert small.body == b"for POST"
        await client.aclose()
        server.close()

    run(main(), loop)


def test_an_empty_answer_marked_compressed_keeps_its_status() -> None:
    # A 429 or 503 with no body but a Content-Encoding header (as some proxies send it) is
    # still the server's answer: the job slows down or waits as told, as through aiohttp,
    # rather than seeing a broken connection.
    async def busy(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n"
            b"Content-Encoding: gzip\r\nRetry-After: 7\r\n\r\n"
        )
        return True

    async def main() -> None:
        async with Scripted(busy).running() as base:
            client = transport()
            response = await client.send(endpoint(base), b"x", FORM)
            await client.aclose()
        assert (response.status, response.body) == (429, b"")
        assert response.headers["Retry-After"] == "7"

    asyncio.run(main())
