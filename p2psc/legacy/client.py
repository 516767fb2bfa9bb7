"""INSECURE LEGACY: ``await connect_legacy(...)``, a protocol version 0 client over asyncio.

Why: Python programs that must pair with peers running the original C++ library (RSA keys,
JSON messages) need a client speaking that protocol. All protocol logic is in
:class:`p2psc.legacy.peer.LegacyPeerCore`; this module only executes its actions on real
sockets and feeds back what happened. Every wait has a deadline: the core's own timers, and an
outer bound (the sum of all timeouts plus a margin) in case an action never completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from dataclasses import dataclass, field
from types import TracebackType

from p2psc.aio.holepunch import reusable_socket, wildcard
from p2psc.core.io import (
    Close,
    Closed,
    Connect,
    ConnId,
    Event,
    Failed,
    Listen,
    Opened,
    Received,
    Send,
    SetTimer,
    TimerFired,
)
from p2psc.errors import HandshakeTimeout, P2pscError
from p2psc.legacy.crypto import RsaKeypair, RsaPublicKey
from p2psc.legacy.peer import (
    FIRST_ACCEPTED,
    LISTENER,
    Established,
    LegacyAction,
    LegacyPeerConfig,
    LegacyPeerCore,
)

__all__ = ["LegacyConnection", "connect_legacy"]

READ_SIZE = 65536


@dataclass
class LegacyConnection:
    """A direct connection to the peer whose key we asked for, after the legacy handshake.

    ``role`` is ``"client"`` (we connected) or ``"peer"`` (we listened). Bytes the other side
    sent right after the handshake are already in ``reader``."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    role: str
    peer_key: RsaPublicKey
    _pump: asyncio.Task[None] | None = field(default=None, repr=False)

    def close(self) -> None:
        self.writer.close()
        if self._pump is not None:
            self._pump.cancel()

    async def wait_closed(self) -> None:
        """Wait (at most 5 s) until the connection is closed."""
        with contextlib.suppress(OSError, ConnectionError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), 5.0)

    async def __aenter__(self) -> LegacyConnection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        await self.wait_closed()


async def connect_legacy(
    keypair: RsaKeypair,
    their_key: RsaPublicKey,
    mediator: tuple[str, int],
    *,
    step_timeout: float = 10.0,
    pairing_timeout: float = 300.0,
    connect_timeout: float = 5.0,
    ack_grace: float = 0.25,
) -> LegacyConnection:
    """Pair with ``their_key`` through the legacy (version 0) protocol at ``mediator``.

    As the Peer, the connection is returned ``ack_grace`` seconds after PeerAcknowledgement
    was sent, so that the caller's first bytes never reach a C++ Client in the same read.
    Raises a :class:`p2psc.errors.ConnectError` subclass on failure."""
    config = LegacyPeerConfig(
        keypair=keypair,
        their_key=their_key,
        mediator=mediator,
        step_timeout=step_timeout,
        pairing_timeout=pairing_timeout,
        connect_timeout=connect_timeout,
        ack_grace=ack_grace,
    )
    driver = _Driver(LegacyPeerCore(config))
    bound = pairing_timeout + connect_timeout + 6 * step_timeout + ack_grace + 5.0
    try:
        return await asyncio.wait_for(driver.run(), bound)
    except P2pscError:  # the core's own verdict (its HandshakeTimeout is a TimeoutError too)
        raise
    except TimeoutError:  # only the outer bound: an action that never completed
        raise HandshakeTimeout(f"legacy connect did not finish within {bound:.0f} s") from None
    finally:
        driver.shutdown()


class _Driver:
    """Executes core actions; turns socket happenings into events (no protocol logic)."""

    def __init__(self, core: LegacyPeerCore) -> None:
        self.core = core
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.streams: dict[ConnId, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
        self.tasks: dict[ConnId, asyncio.Task[None]] = {}
        self.server: asyncio.Server | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.next_accepted = FIRST_ACCEPTED
        self.local_host = "127.0.0.1"
        self.kept: ConnId | None = None

    async def run(self) -> LegacyConnection:
        actions = self.core.start(self.loop.time())
        while True:
            for action in actions:
                result = await self._execute(action)
                if result is not None:
                    return result
            event = await self.events.get()
            actions = self.core.handle(event, self.loop.time())

    async def _execute(self, action: LegacyAction) -> LegacyConnection | None:
        if isinstance(action, Send):
            stream = self.streams.get(action.conn)
            if stream is not None:
                stream[1].write(action.data)
        elif isinstance(action, Close):
            self._close(action.conn)
        elif isinstance(action, SetTimer):
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            if action.deadline is not None:
                conn = action.conn
                self.timer = self.loop.call_at(
                    action.deadline, self.events.put_nowait, TimerFired(conn)
                )
        elif isinstance(action, Connect):
            self.tasks[action.conn] = asyncio.create_task(self._connect(action))
        elif isinstance(action, Listen):
            await self._listen(action)
        elif isinstance(action, Failed):
            raise action.error
        elif isinstance(action, Established):
            return await self._established(action)
        return None

    async def _connect(self, action: Connect) -> None:
        host, port = action.remote
        try:
            infos = await self.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            family, _, _, _, address = infos[0]
            # The legacy Peer later listens on this very port. Binding it explicitly (with
            # SO_REUSEADDR/SO_REUSEPORT) before connecting reserves it: a port that connect()
            # picks implicitly may be handed to other, unrelated outgoing connections too, and
            # those would make the listener's bind fail with "address in use".
            sock = reusable_socket(family, wildcard(family), 0)
            try:
                await self.loop.sock_connect(sock, address)
                reader, writer = await asyncio.open_connection(sock=sock, limit=READ_SIZE)
            except BaseException:
                sock.close()
                raise
        except OSError as error:
            self.events.put_nowait(Closed(action.conn, str(error)))
            return
        self.streams[action.conn] = (reader, writer)
        local = writer.get_extra_info("sockname")
        self.local_host = str(local[0])
        self.events.put_nowait(
            Opened(action.conn, _pair(writer.get_extra_info("peername")), _pair(local))
        )
        await self._read(action.conn, reader)

    async def _read(self, conn: ConnId, reader: asyncio.StreamReader) -> None:
        try:
            while data := await reader.read(READ_SIZE):
                self.events.put_nowait(Received(conn, data))
        except OSError as error:
            self.events.put_nowait(Closed(conn, str(error)))
            return
        self.events.put_nowait(Closed(conn, None))

    async def _listen(self, action: Listen) -> None:
        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conn = self.next_accepted
            self.next_accepted += 1
            self.streams[conn] = (reader, writer)
            self.events.put_nowait(
                Opened(
                    conn,
                    _pair(writer.get_extra_info("peername")),
                    _pair(writer.get_extra_info("sockname")),
                )
            )
            self.tasks[conn] = asyncio.create_task(self._read(conn, reader))

        family = (
            socket.AF_INET6
            if ipaddress.ip_address(self.local_host).version == 6
            else socket.AF_INET
        )
        try:
            self.server = await asyncio.start_server(
                accepted,
                host=self.local_host,
                port=action.port,
                family=family,
                reuse_address=True,
                limit=READ_SIZE,
            )
        except OSError as error:
            self.events.put_nowait(Closed(LISTENER, str(error)))

    def _close(self, conn: ConnId) -> None:
        if conn == LISTENER:
            if self.server is not None:
                self.server.close()
                self.server = None
            return
        task = self.tasks.pop(conn, None)
        if task is not None and conn != self.kept:
            task.cancel()
        stream = self.streams.pop(conn, None)
        if stream is not None:
            stream[1].close()

    async def _established(self, action: Established) -> LegacyConnection:
        hold = action.send_after - self.loop.time()
        if hold > 0:  # the caller may write at once: give the peer time to read the last message
            await asyncio.sleep(hold)
        reader, writer = self.streams.pop(action.conn)
        self.kept = action.conn
        task = self.tasks.pop(action.conn, None)
        if task is not None:
            task.cancel()  # reader.read() is cancellation safe: unread bytes stay in reader
            with contextlib.suppress(asyncio.CancelledError):
                await task
        out = asyncio.StreamReader(limit=READ_SIZE)
        out.feed_data(action.leftover)
        while not self.events.empty():
            event = self.events.get_nowait()
            if isinstance(event, Received) and event.conn == action.conn:
                out.feed_data(event.data)
        pump = asyncio.create_task(_pump(reader, out))
        return LegacyConnection(out, writer, action.role, self.core.config.their_key, pump)

    def shutdown(self) -> None:
        """Close everything the handshake opened except the connection handed out."""
        if self.timer is not None:
            self.timer.cancel()
        if self.server is not None:
            self.server.close()
        for conn in list(self.streams):
            self._close(conn)
        for task in self.tasks.values():
            task.cancel()


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamReader) -> None:
    try:
        while data := await source.read(READ_SIZE):
            sink.feed_data(data)
    except OSError as error:
        sink.set_exception(error)
        return
    sink.feed_eof()


def _pair(name: object) -> tuple[str, int]:
    assert isinstance(name, tuple)
    return str(name[0]), int(name[1])
