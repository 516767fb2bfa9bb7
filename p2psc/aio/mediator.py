"""The Mediator over asyncio: a thin driver that moves bytes between sockets and MediatorCore.

Why Protocol/Transport and not streams: a waiting registration must cost <= 4 KiB, and a
StreamReader/StreamWriter pair plus a task per connection costs several times that. Here each
connection is one ``__slots__`` protocol object and one entry in a timer bucket; all protocol
logic is in :class:`p2psc.core.mediator.MediatorCore` (this module has none).

Timers are bucketed: a deadline is rounded *up* to a tick (1/64 s; whole seconds for deadlines
more than a minute away), and all connections due in the same tick share one ``loop.call_at``
handle. Re-arming or cancelling is then a dict update instead of a handle per change (the core
moves a connection's deadline four times in a pairing), and a waiting registration holds no
handle of its own. A timer fires at most one tick after its deadline, never before it.

uvloop is used by :func:`run_mediator` when it is installed; :func:`serve_mediator` runs on
whatever loop is current (plain asyncio or uvloop).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import signal
import socket
from collections.abc import Callable, Generator
from types import TracebackType
from typing import Any, cast

from p2psc.core.io import Action, Close, Closed, Event, Opened, Received, Send, SetTimer, TimerFired
from p2psc.core.mediator import MediatorConfig, MediatorCore, NoteObserver
from p2psc.core.registry import Registry
from p2psc.legacy.mediator import LegacyAwareMediatorCore

__all__ = ["MediatorServer", "run_mediator", "serve_mediator"]

log = logging.getLogger("p2psc.mediator")
_ceil = math.ceil

_TICKS_PER_SECOND = 64
"""Timer granularity near deadlines: they are rounded up to 1/64 s (see the module doc)."""
_FAR = 60.0
"""Deadlines further away than this (seconds) are rounded up to whole seconds instead."""


class _Connection(asyncio.Protocol):
    """One accepted socket: forwards events to the server, holds the transport and timer."""

    __slots__ = ("conn", "server", "tick", "transport")

    def __init__(self, server: MediatorServer) -> None:
        self.server = server
        self.conn = 0
        self.transport: asyncio.Transport | None = None
        self.tick: int | None = None
        """The timer bucket this connection is in (its deadline rounded up), if any."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but implement it
        self.transport = cast(asyncio.Transport, transport)
        self.server._opened(self, self.transport)

    def data_received(self, data: bytes) -> None:
        self.server._event(Received(self.conn, data))

    def eof_received(self) -> bool:
        self.server._event(Closed(self.conn, None))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._lost(self, exc)


class MediatorServer:
    """A listening mediator. ``async with`` closes it; :attr:`port` is the bound port."""

    def __init__(
        self,
        core: MediatorCore,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.core = core
        self._loop = loop
        self._server: asyncio.Server | None = None
        self._connections: dict[int, _Connection] = {}
        self._ids = itertools.count(1)
        self._ticks: dict[int, dict[int, _Connection]] = {}
        """Timer buckets: tick (1/64 s since the loop clock's origin) -> connections due."""
        self._closing = False
        self._closed = asyncio.Event()

    # --- public ---------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return str(self._sockname()[0])

    @property
    def port(self) -> int:
        return int(self._sockname()[1])

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the mediator listens on, for ``connect(..., mediator_addr)``."""
        return self.host, self.port

    @property
    def connections(self) -> int:
        """Open connections (any state)."""
        return len(self._connections)

    async def close(self) -> None:
        """Stop accepting, abort every session with AdvertiseAbort(SHUTTING_DOWN), close all."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
        self._execute(self.core.shutdown(self._loop.time()))
        for connection in list(self._connections.values()):  # defensive: core closed them all
            self._drop(connection)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5.0)
        await asyncio.sleep(0)  # let transports flush their last frames
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def serve_forever(self) -> None:
        """Wait until :meth:`close` is called (from a signal handler or another task)."""
        await self._closed.wait()

    async def __aenter__(self) -> MediatorServer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- plumbing (called by _Connection) -------------------------------------------------

    def _sockname(self) -> tuple[Any, ...]:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("mediator is not listening")
        return tuple(self._server.sockets[0].getsockname())

    def _opened(self, connection: _Connection, transport: asyncio.Transport) -> None:
        conn = next(self._ids)
        connection.conn = conn
        self._connections[conn] = connection
        peername = transport.get_extra_info("peername")
        if not peername:
            self._drop(connection)
            return
        # No SO_KEEPALIVE: every state has a deadline shorter than the kernel's keepalive idle
        # time (2 h), so it would only cost a syscall per connection.
        host = str(peername[0])
        if host.startswith("::ffff:") and "." in host:  # dual-stack listener, IPv4 client
            host = host[7:]
        self._event(Opened(conn, (host, int(peername[1]))))

    def _lost(self, connection: _Connection, exc: Exception | None) -> None:
        if self._connections.get(connection.conn) is not connection:
            return  # we closed it ourselves
        self._event(Closed(connection.conn, None if exc is None else (str(exc) or repr(exc))))
        self._drop(connection)

    def _event(self, event: Event) -> None:
        try:
            actions = self.core.handle(event, self._loop.time())
        except Exception:  # a core bug must not take the server down; contain it
            log.exception("mediator core failed on %r", event)
            connection = self._connections.get(event.conn)
            if connection is not None:
                self._drop(connection)
            return
        self._execute(actions)

    def _execute(self, actions: list[Action]) -> None:
        connections = self._connections
        for index, action in enumerate(actions):
            kind = type(action)
            if kind is Send:
                send: Send = action  # type: ignore[assignment]  # (exact type checked above)
                connection = connections.get(send.conn)
                if connection is not None:
                    transport = connection.transport
                    if transport is not None:
                        if index + 1 < len(actions) and _fin_follows(actions[index + 1], send.conn):
                            _send_with_fin(transport, send.data)
                        else:
                            transport.write(send.data)
            elif kind is SetTimer:
                timer: SetTimer = action  # type: ignore[assignment]
                connection = connections.get(timer.conn)
                if connection is not None:
                    self._set_timer(connection, timer.deadline)
            elif kind is Close:
                close: Close = action  # type: ignore[assignment]
                connection = connections.get(close.conn)
                if connection is not None:
                    self._drop(connection)

    def _set_timer(self, connection: _Connection, deadline: float | None) -> None:
        """Move ``connection`` to the bucket of ``deadline`` (None: out of any bucket)."""
        old = connection.tick
        if deadline is None:
            if old is not None:
                self._unbucket(connection, old)
            return
        if deadline - self._loop.time() > _FAR:  # far away: whole seconds, fewer buckets
            tick = _ceil(deadline) * _TICKS_PER_SECOND
        else:
            tick = _ceil(deadline * _TICKS_PER_SECOND)
        if tick == old:
            return
        if old is not None:
            self._unbucket(connection, old)
        ticks = self._ticks
        bucket = ticks.get(tick)
        if bucket is None:
            bucket = ticks[tick] = {}
            self._loop.call_at(tick / _TICKS_PER_SECOND, self._fire, tick)
        bucket[connection.conn] = connection
        connection.tick = tick

    def _unbucket(self, connection: _Connection, tick: int) -> None:
        connection.tick = None
        bucket = self._ticks.get(tick)  # None while that bucket is being fired
        if bucket is not None:
            bucket.pop(connection.conn, None)

    def _fire(self, tick: int) -> None:
        """A bucket is due: each connection still armed for it gets TimerFired, in the order
        they were armed. (Handling one may re-arm, cancel or close others of the bucket.)"""
        bucket = self._ticks.pop(tick, None)
        if not bucket:
            return
        connections = self._connections
        for conn, connection in bucket.items():
            if connection.tick == tick and connections.get(conn) is connection:
                connection.tick = None
                self._event(TimerFired(conn))

    def _drop(self, connection: _Connection) -> None:
        """Forget ``connection`` and close its transport (after flushing pending writes)."""
        self._connections.pop(connection.conn, None)
        if connection.tick is not None:
            self._unbucket(connection, connection.tick)
        if connection.transport is not None:
            connection.transport.close()


def _fin_follows(action: Action, conn: int) -> bool:
    return isinstance(action, Close) and action.fin_with_send and action.conn == conn


def _send_with_fin(transport: asyncio.Transport, data: bytes) -> None:
    """Write ``data`` and end the stream in one TCP segment (see :class:`Close`): TCP_CORK
    holds the written bytes back in the kernel, and the FIN of the shutdown that follows is
    added to that held segment, which then leaves at once. The shutdown is done here, on a
    duplicate of the descriptor, when the transport has handed everything to the kernel
    (uvloop's own ``write_eof`` would wait for the next loop iteration, and a cork holds bytes
    for 200 ms at most). Where TCP_CORK does not exist the bytes and the FIN may leave in two
    segments."""
    cork = getattr(socket, "TCP_CORK", None)
    sock = transport.get_extra_info("socket")
    if cork is not None and sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, cork, 1)
    transport.write(data)
    if sock is not None and transport.get_write_buffer_size() == 0:
        try:
            with socket.socket(fileno=os.dup(sock.fileno())) as duplicate:
                duplicate.shutdown(socket.SHUT_WR)
            return
        except OSError:
            pass
    if transport.can_write_eof():
        transport.write_eof()


class _Serving:
    """What :func:`serve_mediator` returns: ``await`` it, or use it with ``async with``."""

    def __init__(self, start: Callable[[], Any]) -> None:
        self._start = start
        self._server: MediatorServer | None = None

    def __await__(self) -> Generator[Any, None, MediatorServer]:
        server: MediatorServer = yield from self._start().__await__()
        return server

    async def __aenter__(self) -> MediatorServer:
        self._server = await self._start()
        return self._server

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            await self._server.close()


def serve_mediator(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    config: MediatorConfig | None = None,
    observer: NoteObserver | None = None,
    registry: Registry | None = None,
    backlog: int = 1024,
    core: MediatorCore | None = None,
    legacy: bool = True,
) -> _Serving:
    """Listen on ``host:port`` (port 0: any free port) and mediate.

    Use ``server = await serve_mediator(...)`` then ``await server.close()``, or
    ``async with serve_mediator(...) as server:``. ``server.port`` is the bound port.
    ``observer`` receives a :class:`~p2psc.core.mediator.MediatorNote` per registration,
    pairing and failure (the CLI logs them). ``core`` overrides the whole core (tests inject
    deterministic nonces that way). ``legacy`` also serves protocol version 0 (the original C++
    clients: JSON and RSA, INSECURE, see spec/legacy.md) on the same port, recognised by the
    first byte of each connection; ``legacy=False`` is ``p2psc mediator --no-legacy``.
    """

    async def start() -> MediatorServer:
        loop = asyncio.get_running_loop()
        mediator_core = core or (LegacyAwareMediatorCore if legacy else MediatorCore)(
            config, registry=registry, observer=observer
        )
        server = MediatorServer(mediator_core, loop)
        server._server = await loop.create_server(
            lambda: _Connection(server), host, port, backlog=backlog, reuse_address=True
        )
        return server

    return _Serving(start)


def run_mediator(
    host: str = "127.0.0.1",
    port: int = 1337,
    *,
    config: MediatorConfig | None = None,
    observer: NoteObserver | None = None,
    ready: Callable[[MediatorServer], None] | None = None,
    use_uvloop: bool = True,
    legacy: bool = True,
) -> int:
    """Run a mediator until SIGINT or SIGTERM, then shut down cleanly; return exit status 0.

    Uses uvloop when installed (and ``use_uvloop``), plain asyncio otherwise. ``ready`` is
    called once the socket is bound (the CLI logs the address from it).
    """

    async def main() -> int:
        loop = asyncio.get_running_loop()
        server = await serve_mediator(host, port, config=config, observer=observer, legacy=legacy)
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        if ready is not None:
            ready(server)
        await stop.wait()
        await server.close()
        return 0

    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if use_uvloop:
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main())
