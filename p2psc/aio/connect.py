"""``await p2psc.aio.connect(...)``: one direct, mutually authenticated TCP connection.

All protocol logic lives in :class:`p2psc.core.peer.PeerCore`; this module executes its actions
on real sockets (made by :mod:`p2psc.aio.holepunch`, so every socket of the attempt shares one
local port) and feeds back what happened. Every wait has a deadline: the core's own timers
(each clipped to the overall ``timeout``), and an outer bound slightly above ``timeout`` in
case an action never completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass, field
from types import TracebackType

from p2psc.aio.holepunch import listening_socket, open_connection_from
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
from p2psc.core.peer import (
    FIRST_ACCEPTED,
    LISTENER,
    Established,
    PeerAction,
    PeerConfig,
    PeerCore,
    peer_config,
)
from p2psc.errors import HandshakeTimeout, P2pscError
from p2psc.keys import HPKE, Keypair, NonceCrypto, NonceSource, PublicKey

__all__ = ["P2PConnection", "connect"]

READ_SIZE = 65536
OUTER_MARGIN = 2.0
"""Seconds the outer bound adds to ``timeout``: the core fails first, this only catches bugs."""


@dataclass
class P2PConnection:
    """A direct TCP connection to the owner of ``peer_key``, both identities proven.

    ``role`` is what the Mediator made us: ``"client"`` (registered first, challenged the
    other side) or ``"peer"`` (registered later, listened and answered). ``session_secret`` is
    32 bytes both sides derive identically (spec/protocol.md, "Session secret"). Bytes the other
    side sent right after the handshake are already in ``reader``. Use as an async context
    manager, or call :meth:`close` (and :meth:`wait_closed`)."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    peer_key: PublicKey
    role: str
    session_secret: bytes
    local: tuple[str, int]
    remote: tuple[str, int]
    _pump: asyncio.Task[None] | None = field(default=None, repr=False)

    def close(self) -> None:
        """Close the connection (flushes what was written first)."""
        self.writer.close()
        if self._pump is not None:
            self._pump.cancel()

    async def wait_closed(self) -> None:
        """Wait (at most 5 s) until the connection is closed."""
        with contextlib.suppress(OSError, ConnectionError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), 5.0)

    async def __aenter__(self) -> P2PConnection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        await self.wait_closed()


async def connect(
    keypair: Keypair,
    peer_key: PublicKey | bytes | str,
    mediator_addr: tuple[str, int] | str,
    *,
    timeout: float = 30.0,
    step_timeout: float = 10.0,
    punch_timeout: float = 10.0,
    punch_interval: float = 0.05,
    punch_backoff: float = 2.0,
    punch_max_interval: float = 1.0,
    punch_attempt_timeout: float = 2.0,
    advertise_retries: int = 3,
    retry_backoff: float = 0.5,
    send_local: bool = True,
    crypto: NonceCrypto = HPKE,
    nonce_source: NonceSource = secrets.token_bytes,
) -> P2PConnection:
    """Pair with the owner of ``peer_key`` through the Mediator at ``mediator_addr``.

    ``peer_key`` is a :class:`~p2psc.keys.PublicKey`, 32 raw bytes, or text (64 hex chars or
    PEM); ``mediator_addr`` is ``(host, port)`` or ``"host:port"``.

    Deadlines: ``timeout`` bounds the whole call (registration, waiting for the other side,
    hole punching and the handshake); ``step_timeout`` bounds each request/answer step (Mediator
    connect, its challenge, each direct handshake message).

    Hole punching (tune these for NATs): after the Mediator introduces us, both sides connect
    out from the local port of their Mediator connection to the other's observed address (and
    its local address, when the Mediator forwards one), with one attempt in flight per address.
    An attempt that has not connected after ``punch_attempt_timeout`` seconds is dropped; a
    failed attempt is retried after ``punch_interval * punch_backoff**(failures-1)`` seconds,
    capped at ``punch_max_interval``; all of it stops after ``punch_timeout`` seconds
    (:class:`~p2psc.errors.PeerUnreachable`). ``advertise_retries`` and ``retry_backoff``
    (doubling) bound how often we re-register when the Mediator answers AdvertiseRetry (busy).
    ``send_local=False`` keeps our local address out of the Advertise.

    Raises a :class:`~p2psc.errors.ConnectError` subclass (MediatorUnreachable,
    MediatorClosed, AdvertiseAborted, AdvertiseRetryExhausted, IdentityCheckFailed,
    PeerUnreachable, HandshakeTimeout) or a :class:`~p2psc.errors.ProtocolError` (including
    UnsupportedVersion) when the other side breaks the protocol.
    """
    config = peer_config(
        keypair,
        peer_key,
        mediator_addr,
        timeout=timeout,
        step_timeout=step_timeout,
        punch_timeout=punch_timeout,
        punch_interval=punch_interval,
        punch_backoff=punch_backoff,
        punch_max_interval=punch_max_interval,
        punch_attempt_timeout=punch_attempt_timeout,
        advertise_retries=advertise_retries,
        retry_backoff=retry_backoff,
        send_local=send_local,
        crypto=crypto,
        nonce_source=nonce_source,
    )
    return await connect_with(config)


async def connect_with(config: PeerConfig) -> P2PConnection:
    """:func:`connect` for a ready :class:`~p2psc.core.peer.PeerConfig`."""
    driver = _Driver(PeerCore(config))
    bound = config.timeout + OUTER_MARGIN
    try:
        return await asyncio.wait_for(driver.run(), bound)
    except P2pscError:
        raise  # HandshakeTimeout is a TimeoutError too: keep the core's reason
    except TimeoutError:
        raise HandshakeTimeout(f"connect did not finish within {bound:.1f} s") from None
    finally:
        driver.shutdown()


class _Driver:
    """Executes core actions; turns socket happenings into events (no protocol logic)."""

    def __init__(self, core: PeerCore) -> None:
        self.core = core
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.streams: dict[ConnId, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
        self.tasks: dict[ConnId, asyncio.Task[None]] = {}
        self.timers: dict[ConnId, asyncio.TimerHandle] = {}
        self.server: asyncio.Server | None = None
        self.next_accepted = FIRST_ACCEPTED
        self.local_host: str | None = None
        self.kept: ConnId | None = None

    async def run(self) -> P2PConnection:
        actions = self.core.start(self.loop.time())
        while True:
            for action in actions:
                result = await self._execute(action)
                if result is not None:
                    return result
            event = await self.events.get()
            actions = self.core.handle(event, self.loop.time())

    async def _execute(self, action: PeerAction) -> P2PConnection | None:
        if isinstance(action, Send):
            stream = self.streams.get(action.conn)
            if stream is not None:
                stream[1].write(action.data)
        elif isinstance(action, Close):
            self._close(action.conn)
        elif isinstance(action, SetTimer):
            self._set_timer(action.conn, action.deadline)
        elif isinstance(action, Connect):
            self.tasks[action.conn] = asyncio.create_task(self._connect(action))
        elif isinstance(action, Listen):
            await self._listen(action)
        elif isinstance(action, Failed):
            raise action.error
        elif isinstance(action, Established):
            return await self._established(action)
        return None

    def _set_timer(self, conn: ConnId, deadline: float | None) -> None:
        old = self.timers.pop(conn, None)
        if old is not None:
            old.cancel()
        if deadline is not None:
            self.timers[conn] = self.loop.call_at(
                deadline, self.events.put_nowait, TimerFired(conn)
            )

    async def _connect(self, action: Connect) -> None:
        local_host = self.local_host if action.from_port is not None else None
        try:
            sock = await open_connection_from(action.remote, local_host, action.from_port)
            try:
                reader, writer = await asyncio.open_connection(sock=sock, limit=READ_SIZE)
            except BaseException:
                sock.close()
                raise
        except OSError as error:
            self.events.put_nowait(Closed(action.conn, str(error) or type(error).__name__))
            return
        self.streams[action.conn] = (reader, writer)
        local = _pair(writer.get_extra_info("sockname"))
        if self.local_host is None:
            self.local_host = local[0]
        self.events.put_nowait(Opened(action.conn, _pair(writer.get_extra_info("peername")), local))
        await self._read(action.conn, reader)

    async def _read(self, conn: ConnId, reader: asyncio.StreamReader) -> None:
        try:
            while data := await reader.read(READ_SIZE):
                self.events.put_nowait(Received(conn, data))
        except OSError as error:
            self.events.put_nowait(Closed(conn, str(error) or type(error).__name__))
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

        try:
            sock = listening_socket(self.local_host or "0.0.0.0", action.port)
            self.server = await asyncio.start_server(accepted, sock=sock, limit=READ_SIZE)
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

    async def _established(self, action: Established) -> P2PConnection:
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
        return P2PConnection(
            reader=out,
            writer=writer,
            peer_key=action.peer_key,
            role=action.role,
            session_secret=action.session_secret,
            local=_pair(writer.get_extra_info("sockname")),
            remote=_pair(writer.get_extra_info("peername")),
            _pump=pump,
        )

    def shutdown(self) -> None:
        """Close everything the attempt opened except the connection handed out."""
        for handle in self.timers.values():
            handle.cancel()
        self.timers.clear()
        if self.server is not None:
            self.server.close()
            self.server = None
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
    if isinstance(name, tuple) and len(name) >= 2:
        return str(name[0]), int(name[1])
    return ("", 0)
