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

TLS (issue 21) is peeled here, below the core: a connection whose first byte is 0x16 gets a
:class:`p2psc.tls.TlsServerSession` (``ssl.MemoryBIO``; the bytes already read are fed to it,
which ``loop.start_tls`` could not do), once :meth:`MediatorCore.start_tls` allowed it; the core
then sees plaintext only. Version 0 and plaintext version 1 pass through untouched.

The listening socket is accepted from here (``add_reader`` + ``accept()``), not by
``loop.create_server``: uvloop closes a server whose accept fails with EMFILE/ENFILE without a
word, and asyncio only tells its own logger. Here such a failure is logged with its reason
(rate-limited), accepting pauses for :data:`ACCEPT_RETRY_DELAY` and the mediator keeps serving
the connections it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import math
import os
import signal
import socket
import ssl
from collections.abc import Callable, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

from p2psc.core.io import Close, Closed, Event, Opened, Received, Send, SetTimer, TimerFired
from p2psc.core.mediator import MediatorAction, MediatorConfig, MediatorCore, NoteObserver
from p2psc.core.registry import Registry
from p2psc.errors import MediatorTlsError
from p2psc.legacy.mediator import LegacyAwareMediatorCore
from p2psc.relay_wire import is_relay_request_start
from p2psc.text import printable
from p2psc.tls import TLS_HANDSHAKE_RECORD, TlsServerSession

if TYPE_CHECKING:
    from p2psc.aio.relay import RelayServer
    from p2psc.core.relay import RelayConfig

__all__ = ["MediatorServer", "run_mediator", "serve_mediator"]

log = logging.getLogger("p2psc.mediator")
_ceil = math.ceil

_TICKS_PER_SECOND = 64
"""Timer granularity near deadlines: they are rounded up to 1/64 s (see the module doc)."""
_FAR = 60.0
"""Deadlines further away than this (seconds) are rounded up to whole seconds instead."""
ACCEPT_RETRY_DELAY = 0.1
"""Seconds accepting pauses after accept() failed for lack of descriptors or memory."""
_ACCEPT_BATCH = 256
"""Connections accepted per readiness event at most (then other work gets a turn)."""
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_TRANSIENT_ERRNOS = frozenset(
    {errno.ECONNABORTED, errno.EPROTO, errno.ENETDOWN, errno.EHOSTUNREACH, errno.ENETUNREACH}
)


class _Connection(asyncio.Protocol):
    """One accepted socket: forwards events to the server, holds the transport and timer."""

    __slots__ = ("conn", "fresh", "server", "tick", "tls", "transport")

    def __init__(self, server: MediatorServer) -> None:
        self.server = server
        self.conn = 0
        self.transport: asyncio.Transport | None = None
        self.tick: int | None = None
        """The timer bucket this connection is in (its deadline rounded up), if any."""
        self.fresh = True
        """No byte received yet (the first one may be a TLS ClientHello)."""
        self.tls: TlsServerSession | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but implement it
        self.transport = cast(asyncio.Transport, transport)
        self.server._opened(self, self.transport)

    def data_received(self, data: bytes) -> None:
        if self.fresh:
            self.fresh = False
            if data[0] == TLS_HANDSHAKE_RECORD and self.server._tls is not None:
                self.server._start_tls(self, data)
                return
            if self.server.relay is not None and is_relay_request_start(data):
                self.server._hand_over(self, data)  # `mediator --relay` (spec/relay.md)
                return
        if self.tls is not None:
            self.server._tls_received(self, self.tls, data)
            return
        self.server._event(Received(self.conn, data))

    def eof_received(self) -> bool:
        # Over TLS a clean close is close_notify (handled in _tls_received); a bare FIN after
        # it, or instead of it, is still taken as the end of the stream (a FIN is no more
        # forgeable by an on-path attacker than in clear, and the confirmation it carries
        # is only an ordering hint: see spec/mediator.md, section 4).
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
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.core = core
        self._loop = loop
        self._tls = tls
        """Server TLS context (None: no TLS; a 0x16 first byte is then malformed input)."""
        self._listeners: list[socket.socket] = []
        self._accepting = False
        self.accept_errors = 0
        """accept() calls that failed for lack of descriptors or memory (EMFILE, ENFILE...)."""
        self._accept_logged = -math.inf
        self._connections: dict[int, _Connection] = {}
        self._ids = itertools.count(1)
        self._ticks: dict[int, dict[int, _Connection]] = {}
        """Timer buckets: tick (1/64 s since the loop clock's origin) -> connections due."""
        self._closing = False
        self._closed = asyncio.Event()
        self.relay: RelayServer | None = None
        """A relay served on the same port (``p2psc mediator --relay``): connections whose
        first frame is a RelayRequest are handed to it."""

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

    @property
    def tls(self) -> ssl.SSLContext | None:
        """The TLS context new connections get (None: TLS is off)."""
        return self._tls

    def set_tls(self, context: ssl.SSLContext | None) -> None:
        """Serve new TLS connections with ``context`` (a reloaded certificate); connections
        already running keep the session they have."""
        self._tls = context

    async def close(self) -> None:
        """Stop accepting, abort every session with AdvertiseAbort(SHUTTING_DOWN), close all."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        self._stop_accepting()
        for listener in self._listeners:
            listener.close()
        self._execute(self.core.shutdown(self._loop.time()))
        for connection in list(self._connections.values()):  # defensive: core closed them all
            self._drop(connection)
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
        if not self._listeners or self._listeners[0].fileno() < 0:
            raise RuntimeError("mediator is not listening")
        return tuple(self._listeners[0].getsockname())

    # --- accepting ------------------------------------------------------------------------

    def _listen(self, listeners: list[socket.socket]) -> None:
        self._listeners = listeners
        for listener in listeners:
            listener.setblocking(False)
        self._start_accepting()

    def _start_accepting(self) -> None:
        if self._closing or self._accepting:
            return
        self._accepting = True
        for listener in self._listeners:
            self._loop.add_reader(listener.fileno(), self._accept, listener)

    def _stop_accepting(self) -> None:
        if not self._accepting:
            return
        self._accepting = False
        for listener in self._listeners:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(listener.fileno())

    def _accept(self, listener: socket.socket) -> None:
        accepted: list[socket.socket] = []
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as error:
                if error.errno in _TRANSIENT_ERRNOS:
                    continue  # that one connection died in the backlog: take the next
                self._accept_failed(error)
                break
            accepted.append(sock)
        if accepted:
            self._loop.create_task(self._adopt(accepted))

    def _accept_failed(self, error: OSError) -> None:
        """accept() failed (EMFILE, ENFILE, ...): log it (at most once a second), pause
        accepting briefly so the loop does not spin on a listener it cannot serve, go on."""
        self.accept_errors += 1
        now = self._loop.time()
        if now - self._accept_logged >= 1.0:
            self._accept_logged = now
            name = errno.errorcode.get(error.errno or 0, "?")
            log.error(
                "accept failed",
                extra={
                    "p2psc": {
                        "event": "accept_failed",
                        "errno": name,
                        "reason": printable(error.strerror or str(error)),
                        "connections": len(self._connections),
                        "failures": self.accept_errors,
                    }
                },
            )
        if error.errno in _RESOURCE_ERRNOS:
            self._stop_accepting()
            self._loop.call_later(ACCEPT_RETRY_DELAY, self._start_accepting)

    async def _adopt(self, socks: list[socket.socket]) -> None:
        """Give accepted sockets a transport and a :class:`_Connection` each."""
        if self._closing:
            for sock in socks:
                sock.close()
            return
        loop = self._loop
        results = await asyncio.gather(
            *(loop.connect_accepted_socket(lambda: _Connection(self), sock) for sock in socks),
            return_exceptions=True,
        )
        for sock, result in zip(socks, results, strict=True):
            if isinstance(result, BaseException):  # the socket died before it got a transport
                sock.close()
                log.debug("accepted socket lost: %s", printable(result))

    # --- TLS ------------------------------------------------------------------------------

    def _start_tls(self, connection: _Connection, data: bytes) -> None:
        """The first byte was a TLS ClientHello: if the core allows it, run TLS from here."""
        context = self._tls
        assert context is not None
        conn = connection.conn
        self._execute(self.core.start_tls(conn, self._loop.time()))
        if self._connections.get(conn) is not connection:
            return  # refused (the core closed it)
        connection.tls = session = TlsServerSession(context)
        self._tls_received(connection, session, data)

    def _tls_received(
        self, connection: _Connection, session: TlsServerSession, data: bytes
    ) -> None:
        conn = connection.conn
        try:
            plain = session.receive(data)
        except MediatorTlsError as error:
            self._tls_flush(connection, session)  # the alert, if any
            connection.tls = None  # nothing more can be sent in this session
            self._event(Closed(conn, f"tls: {error.reason}"))
            self._drop(connection)
            return
        self._tls_flush(connection, session)
        if plain:
            self._event(Received(conn, plain))
        if session.closed_by_peer and self._connections.get(conn) is connection:
            self._event(Closed(conn, None))

    @staticmethod
    def _tls_flush(connection: _Connection, session: TlsServerSession) -> None:
        out = session.data_to_send()
        if out and connection.transport is not None:
            connection.transport.write(out)

    def _hand_over(self, connection: _Connection, data: bytes) -> None:
        """Give a connection that speaks the relay protocol to :attr:`relay` (its Mediator
        session is forgotten; nothing is sent on it from here)."""
        transport, relay = connection.transport, self.relay
        self._connections.pop(connection.conn, None)
        if connection.tick is not None:
            self._unbucket(connection, connection.tick)
        self._event(Closed(connection.conn, "handed over to the relay"))
        if transport is not None and relay is not None:
            relay.adopt(transport, data)

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
        # (an IPv4-mapped address from a dual-stack listener is the core's to unmap)
        self._event(Opened(conn, (str(peername[0]), int(peername[1]))))

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

    def _execute(self, actions: list[MediatorAction]) -> None:
        connections = self._connections
        for index, action in enumerate(actions):
            kind = type(action)
            if kind is Send:
                send: Send = action  # type: ignore[assignment]  # (exact type checked above)
                connection = connections.get(send.conn)
                if connection is not None:
                    transport = connection.transport
                    if transport is not None:
                        if connection.tls is not None:  # version 0 is never TLS: no FIN rule
                            self._tls_send(connection, connection.tls, send.data)
                        elif index + 1 < len(actions) and _fin_follows(
                            actions[index + 1], send.conn
                        ):
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

    def _tls_send(self, connection: _Connection, session: TlsServerSession, data: bytes) -> None:
        try:
            out = session.send(data)
        except MediatorTlsError:
            connection.tls = None
            self._drop(connection)
            return
        if out and connection.transport is not None:
            connection.transport.write(out)

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
        transport = connection.transport
        if transport is not None:
            session = connection.tls
            if session is not None:
                connection.tls = None
                with contextlib.suppress(MediatorTlsError):
                    closing = session.close()  # close_notify: a clean end of our stream
                    if closing:
                        transport.write(closing)
            transport.close()


def _fin_follows(action: MediatorAction, conn: int) -> bool:
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


class _Closable(Protocol):
    async def close(self) -> None: ...


_ServerT = TypeVar("_ServerT", bound=_Closable)


class _Serving(Generic[_ServerT]):
    """What :func:`serve_mediator` (and ``serve_relay``, ``serve_fleet_mediator``) returns:
    ``await`` it for the running server, or use it with ``async with`` to close it after."""

    def __init__(self, start: Callable[[], Any]) -> None:
        self._start = start
        self._server: _ServerT | None = None

    def __await__(self) -> Generator[Any, None, _ServerT]:
        server: _ServerT = yield from self._start().__await__()
        return server

    async def __aenter__(self) -> _ServerT:
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
    tls: ssl.SSLContext | None = None,
) -> _Serving[MediatorServer]:
    """Listen on ``host:port`` (port 0: any free port) and mediate.

    Use ``server = await serve_mediator(...)`` then ``await server.close()``, or
    ``async with serve_mediator(...) as server:``. ``server.port`` is the bound port.
    ``observer`` receives a :class:`~p2psc.core.mediator.MediatorNote` per registration,
    pairing and failure (the CLI logs them). ``core`` overrides the whole core (tests inject
    deterministic nonces that way). ``legacy`` also serves protocol version 0 (the original C++
    clients: JSON and RSA, INSECURE, see spec/legacy.md) on the same port, recognised by the
    first byte of each connection; ``legacy=False`` is ``p2psc mediator --no-legacy``.
    ``tls`` (:func:`p2psc.tls.server_context`) also serves TLS on the same port: a connection
    whose first byte is 0x16 (a ClientHello) runs the same protocol inside TLS.
    """

    async def start() -> MediatorServer:
        loop = asyncio.get_running_loop()
        mediator_core = core or (LegacyAwareMediatorCore if legacy else MediatorCore)(
            config, registry=registry, observer=observer
        )
        server = MediatorServer(mediator_core, loop, tls)
        server._listen(_bind(host, port, backlog))
        return server

    return _Serving(start)


def _bind(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Listening sockets for ``host:port``, as ``loop.create_server(host, port,
    reuse_address=True)`` makes them: one per address ``getaddrinfo`` gives (``""``: every
    family), SO_REUSEADDR, IPv6 sockets IPv6-only (the IPv4 socket serves IPv4)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    listeners: list[socket.socket] = []
    seen: set[tuple[int, Any]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            listeners.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
    except BaseException:
        for sock in listeners:
            sock.close()
        raise
    return listeners


def run_mediator(
    host: str = "127.0.0.1",
    port: int = 1337,
    *,
    config: MediatorConfig | None = None,
    observer: NoteObserver | None = None,
    ready: Callable[[MediatorServer], None] | None = None,
    use_uvloop: bool = True,
    legacy: bool = True,
    tls: Callable[[], ssl.SSLContext] | None = None,
    relay: RelayConfig | None = None,
    fleet: Any = None,
) -> int:
    """Run a mediator until SIGINT or SIGTERM, then shut down cleanly; return exit status 0.

    Uses uvloop when installed (and ``use_uvloop``), plain asyncio otherwise. ``ready`` is
    called once the socket is bound (the CLI logs the address from it). ``tls`` loads the
    server TLS context (certificate and key files); it is called at start and again on
    SIGHUP, so a renewed certificate is picked up without a restart (a reload that fails is
    logged and the previous certificate stays). ``fleet`` (a
    :class:`p2psc.aio.fleet.FleetOptions`) runs one instance of a fleet sharing that Redis
    registry instead (spec/mediator.md section 10; version 0 clients are then not served).
    """

    async def main() -> int:
        loop = asyncio.get_running_loop()
        context = tls() if tls is not None else None
        if fleet is not None:
            from p2psc.aio.fleet import serve_fleet_mediator

            server = await serve_fleet_mediator(
                host, port, registry=fleet, config=config, observer=observer, tls=context
            )
        else:
            server = await serve_mediator(
                host, port, config=config, observer=observer, legacy=legacy, tls=context
            )
        if relay is not None:  # `mediator --relay`: the relay shares the port (spec/relay.md)
            from p2psc.aio.relay import serve_relay

            server.relay = await serve_relay(config=relay, listen=False)
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        if tls is not None:

            def reload() -> None:
                try:
                    server.set_tls(tls())
                except MediatorTlsError as error:
                    fields = {"event": "tls_reload_failed", "reason": printable(error.reason)}
                    log.error("tls reload failed", extra={"p2psc": fields})
                    return
                log.info("tls reloaded", extra={"p2psc": {"event": "tls_reloaded"}})

            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signal.SIGHUP, reload)
        if ready is not None:
            ready(server)
        await stop.wait()
        await server.close()
        if server.relay is not None:
            await server.relay.close()
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
