"""The floor: the least CPU a Python client can spend per image over HTTP/1.1.

An ``asyncio.Protocol`` per connection, N keep-alive connections each with one request in
flight, the request head built once, the file read and base64-encoded (pybase64) on the
loop, the answer read up to its Content-Length. No JSON parse, no rows, no retries, no
timeouts, no chunked answers: nothing a real client needs beyond getting bytes there and
back. It counts answers by status and writes the counts as one JSON line to OUTPUT.

usage: floor_client.py MANIFEST API_URL MODEL OUTPUT CONCURRENCY [API_KEY]
Lines of MANIFEST are file paths or http URLs (sent as ``image=`` with an empty body).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from urllib.parse import quote, urlsplit

import orjson
import pybase64


class Connection(asyncio.Protocol):
    """One keep-alive connection: send a request, wait for its whole answer, repeat."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.need = -1  # bytes of head + body once the head is in; -1 before
        self.status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if self.need < 0:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).lower()
            self.status = int(head[9:12])
            at = head.index(b"content-length:") + 15
            self.need = end + 4 + int(head[at : head.index(b"\r\n", at)])
        if len(buffer) >= self.need:
            del buffer[: self.need]
            self.need = -1
            waiter, self.waiter = self.waiter, None
            assert waiter is not None
            waiter.set_result(self.status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionError("closed"))

    def send(self, data: bytes) -> asyncio.Future[int]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter


async def main(manifest: str, api_url: str, model: str, output: str, n: int, key: str) -> None:
    split = urlsplit(api_url)
    host, port = split.hostname or "127.0.0.1", split.port or 80
    target = f"{split.path.rstrip('/')}/{model}?api_key={quote(key)}"
    prefix = f"POST {target}".encode()
    suffix = (
        f" HTTP/1.1\r\nHost: {split.netloc}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: "
    ).encode()
    # Blocking reads on the loop, as in lean_client.py: small files from the page cache.
    lines = (line.rstrip("\n") for line in open(manifest, encoding="utf-8"))  # noqa: ASYNC230, SIM115
    statuses: Counter[int] = Counter()
    loop = asyncio.get_running_loop()

    async def worker() -> None:
        _, connection = await loop.create_connection(Connection, host, port)
        for ref in lines:  # the shared generator is the sliding window: N requests in flight
            if ref.startswith(("http://", "https://")):
                data = b"%s&image=%s%s0\r\n\r\n" % (prefix, quote(ref, safe="").encode(), suffix)
            else:
                with open(ref, "rb") as handle:  # noqa: ASYNC230
                    body = pybase64.b64encode(handle.read())
                data = b"%s%s%d\r\n\r\n%s" % (prefix, suffix, len(body), body)
            statuses[await connection.send(data)] += 1
        assert connection.transport is not None
        connection.transport.close()

    await asyncio.gather(*(worker() for _ in range(n)))
    with open(output, "wb") as out:  # noqa: ASYNC230
        out.write(orjson.dumps({str(k): v for k, v in statuses.items()}) + b"\n")


if __name__ == "__main__":
    a = sys.argv
    if os.environ.get("FLOOR_LOOP") == "uvloop":
        import uvloop

        uvloop.install()
    asyncio.run(main(a[1], a[2], a[3], a[4], int(a[5]), a[6] if len(a) > 6 else "bench"))
