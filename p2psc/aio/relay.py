"""The relay over asyncio: moves bytes and time between sockets and :class:`RelayCore`.

All decisions (who is spliced, limits, timers, where a circuit may be cut) are the core's
(:mod:`p2psc.core.relay`); this adapter only executes its actions, and adds the two things that
are about sockets, not the protocol:

- **Backpressure**: when a connection's write buffer passes the high-water mark (the partner
  reads slowly), reading from the other side of its circuit pauses until it drains, so a relay
  never buffers more than about two high-water marks per circuit. The core's own
  :class:`~p2psc.core.relay.PauseReading` (the rate limit) is combined with it: a side reads
  only when neither asks it to pause.
- **A graceful end**: a Close after the relay's end marker half-closes (FIN) and drops what
  still arrives until the other side closes or ``linger`` seconds pass, so the end marker is
  not destroyed by a reset before the peer has read it.

It runs on its own port (``p2psc relay``, :func:`serve_relay`) or inside a Mediator on the
Mediator's port (``p2psc mediator --relay``: :meth:`RelayServer.adopt` takes the connections
whose first frame is a RelayRequest).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable
from types import TracebackType
from typing import cast

from p2psc.aio.mediator import _Serving
from p2psc.core.io import Close, Closed, Event, Opened, Received, Send, SetTimer, TimerFired
from p2psc.core.relay import (
    PauseReading,
    RelayAction,
    RelayConfig,
    RelayCore,
    RelayNote,
    ResumeReading,
    ShutdownWrite,
)

__all__ = ["RelayServer", "run_relay", "serve_relay"]

log = logging.getLogger("p2psc.relay")

HIGH_WATER = 256 * 1024
"""Bytes buffered towards one connection before its partner's reading pauses."""
LINGER = 2.0
"""Seconds a connection ended by the relay may take to close its side after our FIN."""


class _Link(asyncio.Protocol):
    """One connection at the relay."""

    __slots__ = (
        "closing",
        "conn",
        "paused_by_core",
        "paused_by_partner",
        "reading",
        "server",
        "timer",
        "transport",
    )

    def __init__(self, server: RelayServer) -> None:
        self.server = server
        self.conn = 0
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.paused_by_core = False
        self.paused_by_partner = False
        self.reading = True
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.server._opened(self, cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        if not self.closing:
            self.server._event(Received(self.conn, data))

    def eof_received(self) -> bool:
        if self.closing:
            return False  # the other side closed after our end: done
        self.server._event(Closed.eof(self.conn))
        return True  # keep our sending side: the core decides (a spliced side half-closes)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._lost(self, exc)

    def pause_writing(self) -> None:
        self.server._backpressure(self, True)

    def resume_writing(self) -> None:
        self.server._backpressure(self, False)

    def update_reading(self) -> None:
        want = not (self.paused_by_core or self.paused_by_partner)
        transport = self.transport
        if transport is None or want == self.reading or transport.is_closing():
            return
        self.reading = want
        if want:
            transport.resume_reading()
        else:
            transport.pause_reading()


class RelayServer:
    """A running relay. ``async with`` closes it; :attr:`port` is the bound port (0 when it
    only serves connections a Mediator hands over)."""

    def __init__(
        self,
        core: RelayCore,
        loop: asyncio.AbstractEventLoop,
        observer: Callable[[RelayNote], None] | None = None,
    ) -> None:
        self.core = core
        self._loop = loop
        self._observer = observer
        self._links: dict[int, _Link] = {}
        self._next = 1
        self._server: asyncio.Server | None = None
        self.handled: Callable[[str, int, bytes], None] | None = None
        """Test hook: called with ("in", conn, data) for every byte the relay reads and
        ("out", conn, data) for every byte it writes."""

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return 0
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None and self._server.sockets
        name = self._server.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    async def _listen(self, host: str, port: int, backlog: int) -> None:
        self._server = await self._loop.create_server(
            lambda: _Link(self), host, port, backlog=backlog, reuse_address=True
        )

    def adopt(self, transport: asyncio.Transport, first: bytes) -> None:
        """Take over a connection another server accepted (a Mediator with ``--relay``), with
        the bytes it already read."""
        link = _Link(self)
        transport.set_protocol(link)
        link.connection_made(transport)
        if first:
            link.data_received(first)

    async def close(self) -> None:
        """Stop accepting, end every circuit and close every connection."""
        if self._server is not None:
            self._server.close()
        self._execute(self.core.shutdown())
        for link in list(self._links.values()):
            if link.transport is not None:
                link.transport.abort()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5.0)

    async def __aenter__(self) -> RelayServer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- internals --------------------------------------------------------------------------

    def _opened(self, link: _Link, transport: asyncio.Transport) -> None:
        link.transport = transport
        link.conn = self._next
        self._next += 1
        self._links[link.conn] = link
        peer = transport.get_extra_info("peername")
        if not peer:
            transport.abort()
            self._links.pop(link.conn, None)
            return
        with contextlib.suppress(OSError):
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=HIGH_WATER)
        self._event(Opened(link.conn, (str(peer[0]), int(peer[1]))))

    def _lost(self, link: _Link, exc: Exception | None) -> None:
        if link.timer is not None:
            link.timer.cancel()
            link.timer = None
        if self._links.pop(link.conn, None) is None:
            return
        self._event(Closed(link.conn, None if exc is None else (str(exc) or repr(exc))))

    def _event(self, event: Event) -> None:
        if self.handled is not None and isinstance(event, Received):
            self.handled("in", event.conn, event.data)
        try:
            actions = self.core.handle(event, self._loop.time())
        except Exception:  # a core bug must not take the relay down; contain it
            log.exception("relay core failed on %r", event)
            link = self._links.get(event.conn)
            if link is not None and link.transport is not None:
                link.transport.abort()
            return
        self._execute(actions)

    def _execute(self, actions: list[RelayAction]) -> None:
        links = self._links
        for action in actions:
            if isinstance(action, Send):
                link = links.get(action.conn)
                if link is not None and link.transport is not None and not link.closing:
                    if self.handled is not None:
                        self.handled("out", action.conn, action.data)
                    link.transport.write(action.data)
            elif isinstance(action, SetTimer):
                link = links.get(action.conn)
                if link is not None:
                    self._arm(link, action.deadline)
            elif isinstance(action, Close):
                link = links.get(action.conn)
                if link is not None:
                    self._close(link)
            elif isinstance(action, PauseReading | ResumeReading):
                link = links.get(action.conn)
                if link is not None:
                    link.paused_by_core = isinstance(action, PauseReading)
                    link.update_reading()
            elif isinstance(action, ShutdownWrite):
                link = links.get(action.conn)
                transport = link.transport if link is not None else None
                if transport is not None and transport.can_write_eof():
                    with contextlib.suppress(OSError, RuntimeError):
                        transport.write_eof()
            elif isinstance(action, RelayNote):
                if self._observer is not None:
                    self._observer(action)
                fields = {"event": f"relay_{action.kind}", "conn": action.conn}
                log.info(action.text, extra={"p2psc": fields})

    def _arm(self, link: _Link, deadline: float | None) -> None:
        if link.timer is not None:
            link.timer.cancel()
            link.timer = None
        if deadline is not None:
            link.timer = self._loop.call_at(deadline, self._fire, link)

    def _fire(self, link: _Link) -> None:
        link.timer = None
        if self._links.get(link.conn) is link:
            self._event(TimerFired(link.conn))

    def _close(self, link: _Link) -> None:
        """The core is done with ``link``: FIN after what was written, drop what still
        arrives, close when the other side does or after :data:`LINGER`."""
        self._links.pop(link.conn, None)
        if link.timer is not None:
            link.timer.cancel()
            link.timer = None
        transport = link.transport
        if transport is None or transport.is_closing():
            return
        link.closing = True
        link.paused_by_core = link.paused_by_partner = False
        link.update_reading()
        if transport.can_write_eof():
            with contextlib.suppress(OSError, RuntimeError):
                transport.write_eof()
            self._loop.call_later(LINGER, transport.close)
        else:
            transport.close()

    def _backpressure(self, link: _Link, paused: bool) -> None:
        """``link``'s write buffer passed (or fell below) the high-water mark: pause (resume)
        reading from its partner."""
        partner = self.core.partner_of(link.conn)
        other = self._links.get(partner) if partner is not None else None
        if other is not None:
            other.paused_by_partner = paused
            other.update_reading()


def serve_relay(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    config: RelayConfig | None = None,
    observer: Callable[[RelayNote], None] | None = None,
    backlog: int = 1024,
    listen: bool = True,
) -> _Serving[RelayServer]:
    """Run a relay on ``host:port`` (port 0: any free port); ``listen=False`` makes one that
    only serves connections handed to :meth:`RelayServer.adopt` (``mediator --relay``).

    ``server = await serve_relay(...)`` then ``await server.close()``, or ``async with``."""

    async def start() -> RelayServer:
        server = RelayServer(RelayCore(config), asyncio.get_running_loop(), observer)
        if listen:
            await server._listen(host, port, backlog)
        return server

    return _Serving(start)


def run_relay(
    host: str = "127.0.0.1",
    port: int = 1338,
    *,
    config: RelayConfig | None = None,
    ready: Callable[[RelayServer], None] | None = None,
) -> int:
    """Run a relay until SIGINT/SIGTERM (``p2psc relay``); return exit status 0."""

    async def main() -> int:
        server = await serve_relay(host, port, config=config)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        if ready is not None:
            ready(server)
        await stop.wait()
        await server.close()
        return 0

    return asyncio.run(main())
