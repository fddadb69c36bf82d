"""Running a server: in the current event loop, on a background thread, or until Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
import threading
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

from aiohttp import web

from .config import ServerConfig
from .faults import Fault, Faults, FaultSpec, as_fault, image_key
from .routes import STATE_KEY, create_app
from .stats import ServerStats

_T = TypeVar("_T")


class _FaultControls:
    """Scripting faults; shared by ``RunningServer`` and ``BackgroundServer``."""

    _faults: Faults

    def script(self, *responses: FaultSpec) -> None:
        """The next inference requests answer these, in order, then normally again."""
        self._faults.push([as_fault(r) for r in responses])

    def fail_next(
        self,
        n: int,
        status: int,
        headers: Mapping[str, str] | None = None,
        *,
        message: str | None = None,
    ) -> None:
        """The next ``n`` inference requests answer ``status`` (with ``headers`` if given)."""
        self.script(*[Fault(status=status, headers=headers, message=message)] * n)

    def fail_image(self, key: bytes | str, fault: FaultSpec, *, times: int | None = None) -> None:
        """Requests for this image (its bytes, or its ``image=`` URL) answer ``fault``;
        ``times=None`` means for ever."""
        name = image_key(key) if isinstance(key, bytes) else key
        self._faults.add_image(name, as_fault(fault), times)

    def clear_faults(self) -> None:
        self._faults.clear()


class RunningServer(_FaultControls):
    """A started server; see ``batchclassify.server``'s docstring for scripting faults."""

    def __init__(self, app: web.Application, runner: web.AppRunner, sock: socket.socket) -> None:
        self._state = app[STATE_KEY]
        self._faults = self._state.faults
        self._runner = runner
        # The one socket this server ever listens on: kept bound while down (set_down), so
        # that no other program can take the port and answer in its place on its way back.
        self._socket = sock
        host, self.port = sock.getsockname()[:2]
        self._site: web.SockSite | None = None
        self.url = f"http://{host if ':' not in host else f'[{host}]'}:{self.port}"
        self._state.own_hosts.update({f"{host}:{self.port}", f"localhost:{self.port}"})

    @property
    def config(self) -> ServerConfig:
        return self._state.config

    @property
    def stats(self) -> ServerStats:
        return self._state.stats

    @property
    def down(self) -> bool:
        return self._site is None

    async def _listen(self) -> None:
        # asyncio closes the socket it serves on when it stops: give it a duplicate, so the
        # socket itself stays open (and its port ours) while down.
        site = web.SockSite(self._runner, self._socket.dup(), backlog=_BACKLOG)
        await site.start()  # listen() on the shared socket again
        self._site = site

    async def set_down(self, down: bool) -> None:
        """Down: stop listening and cut every open connection; the port stays bound to this
        server, so connections are refused and no other program can take it meanwhile. Up:
        listen again, on the same port."""
        if down and self._site is not None:
            site, self._site = self._site, None
            await site.stop()
            # Out of the listening state (pending connections are reset, new ones refused),
            # yet still bound: bound by port number (_bound_socket), the port stays held.
            self._socket.shutdown(socket.SHUT_RD)
            for connection in self._runner.server.connections if self._runner.server else []:
                connection.force_close()
        elif not down and self._site is None:
            await self._listen()

    async def stop(self) -> None:
        await self.set_down(True)  # cut hung requests now instead of waiting them out
        await self._runner.cleanup()
        self._socket.close()


#: Connections a listening socket queues before accepting (asyncio's default).
_BACKLOG = 100


def _bound_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (port 0: a free one), not yet listening.

    Bound to its port by number, which the kernel then keeps with the socket when it stops
    listening (bound to port 0 the port would be released then). For port 0, another socket
    finds a free port first and holds it until this one is bound to it too (``SO_REUSEADDR``
    lets two sockets share a port while neither listens), so the port is never free between.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]

    def make() -> socket.socket:
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:  # as asyncio does: an IPv6 address serves IPv6 only
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        return sock

    sock = make()
    try:
        if port == 0:
            with make() as finder:
                finder.bind(address)
                sock.bind((address[0], finder.getsockname()[1], *address[2:]))
        else:
            sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


async def start_server(
    config: ServerConfig = ServerConfig(),  # noqa: B008 (frozen; ruff only sees that in its module)
    *,
    host: str = "127.0.0.1",
    port: int = 0,
) -> RunningServer:
    """Start listening (port 0: any free port, see ``.url``) in the running event loop."""
    app = create_app(config)
    # No access log: it would write request lines, api_key query included.
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    try:
        sock = _bound_socket(host, port)
    except BaseException:
        await runner.cleanup()
        raise
    server = RunningServer(app, runner, sock)
    try:
        await server._listen()
    except BaseException:
        await runner.cleanup()
        sock.close()
        raise
    return server


class BackgroundServer(_FaultControls):
    """A server on its own thread and event loop, for synchronous code (and ``inference_sdk``).

    Starts on construction; a context manager that stops on exit. ``script``, ``fail_next``,
    ``fail_image`` and ``set_down`` are safe to call from any thread.
    """

    def __init__(
        self,
        config: ServerConfig = ServerConfig(),  # noqa: B008 (frozen)
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="batchclassify-server", daemon=True
        )
        self._thread.start()
        self._server = self._call(start_server(config, host=host, port=port))
        self._faults = self._server._faults  # thread-safe: it takes a lock
        self.url = self._server.url
        self.port = self._server.port

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    @property
    def stats(self) -> ServerStats:
        return self._server.stats

    def set_down(self, down: bool) -> None:
        self._call(self._server.set_down(down))

    def stop(self) -> None:
        if self._loop.is_closed():
            return
        self._call(self._server.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ListenError(Exception):
    """The server could not listen where it was asked to (port in use, unknown address)."""


def check_port(port: int) -> None:
    """Raise ``ValueError`` unless ``port`` is a TCP port number (0 picks a free one)."""
    if not 0 <= port <= 65535:
        raise ValueError(f"{port} is not a port number: use 1..65535, or 0 for any free port")


def serve_forever(config: ServerConfig, *, host: str, port: int) -> None:
    """Serve until Ctrl-C or SIGTERM; prints ``listening on URL`` once ready.

    Raises ``ListenError`` if it cannot listen on ``host:port``, ``ValueError`` for a port
    number out of range.
    """
    check_port(port)

    async def main() -> None:
        try:
            server = await start_server(config, host=host, port=port)
        except OSError as error:  # in use, not an address of this machine, no permission
            # asyncio's strerror repeats the address; a lookup failure's errno is negative.
            code = error.errno or 0
            reason = os.strerror(code) if code > 0 else (error.strerror or str(error))
            hint = " (is another server running there? pick another --port, or 0 for any)"
            in_use = error.errno == errno.EADDRINUSE
            raise ListenError(
                f"cannot listen on {host}:{port}: {reason}{hint if in_use else ''}"
            ) from None
        print(f"listening on {server.url}", flush=True)
        stopping = asyncio.Event()
        with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
        try:
            await stopping.wait()
        finally:
            await server.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
