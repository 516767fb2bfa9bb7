"""``await p2psc.aio.connect(...)``: one direct, mutually authenticated, encrypted connection.

All protocol logic lives in :class:`p2psc.core.peer.PeerCore`, run by the shared
:class:`p2psc.core.peer_driver.PeerDriver`; this module only executes its operations on real
sockets (made by :mod:`p2psc.sockets`, so every socket of the attempt shares one local port) and
reports what happened, from the loop's callbacks. Its :class:`DriverAdapter` runs any
:class:`~p2psc.core.peer_driver.AttemptDriver` (the legacy client's too); only what it hands
the caller differs, a function of the kept transport and the outcome. Each connection is a
plain :class:`asyncio.Protocol`, so nothing is buffered between the socket and the core: bytes
go to the driver the moment they arrive, and when the attempt succeeds nothing of the kept
connection is pending anywhere. Its transport is then handed, protocol swapped, to the secure
channel (:func:`p2psc.aio.channel.secure_streams`), which gives the application a standard
StreamReader/StreamWriter pair with flow control both ways.

Every wait has a deadline (the driver's single next deadline: the core's timers, an outer
bound, a held outcome's hand-over time). Cancelling ``connect()`` at any point closes every
socket the attempt opened: the only await is on a future the callbacks complete, and the
connection is built in the callback that completed the handshake and closed by the cleanup if
the caller is gone, so a finished connection is never dropped unclosed.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, Unpack, cast

from p2psc.aio.channel import secure_streams
from p2psc.aio.holepunch import open_connection_from
from p2psc.core.io import Close, Connect, ConnId, Listen, Send
from p2psc.core.peer import LISTENER, Established, PeerConfig, PeerCore, PeerOptions
from p2psc.core.peer_driver import AttemptDriver, IoOp, Outcome, PeerDriver
from p2psc.errors import P2pscError
from p2psc.keys import Keypair, PublicKey
from p2psc.peer_tls import prepare
from p2psc.sockets import address_pair, listener_for

__all__ = ["P2PConnection", "connect", "connect_with"]

READ_LIMIT = 2**16


class StreamConnection:
    """What every connection returned as a StreamReader/StreamWriter pair shares (this module's
    :class:`P2PConnection`, :class:`p2psc.legacy.client.LegacyConnection`): :meth:`close`,
    :meth:`wait_closed`, ``async with``."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def close(self) -> None:
        """Close the connection after what was written (an encrypted connection sends its
        authenticated close first)."""
        self.writer.close()

    async def wait_closed(self) -> None:
        """Wait (at most 5 s) until the connection is closed."""
        with contextlib.suppress(OSError, ConnectionError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), 5.0)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        await self.wait_closed()


@dataclass
class P2PConnection(StreamConnection):
    """A direct, encrypted connection to the owner of ``peer_key``, both identities proven.

    ``reader``/``writer`` carry application bytes through the Noise channel (spec/protocol.md):
    ``reader`` ends (EOF) only after the other side's authenticated close; a cut, tampered or
    replayed stream raises a :class:`~p2psc.errors.ChannelError` from ``reader`` instead.
    ``writer.write_eof()`` or :meth:`close` sends our authenticated close. ``drain()`` blocks
    while the other side does not read (TCP flow control reaches through the channel).

    ``role`` is what the Mediator made us: ``"client"`` (registered first, the Noise initiator)
    or ``"peer"``. ``session_secret`` is 32 bytes both sides derive identically from the Noise
    handshake hash (forward secret); ``handshake_hash`` is the hash itself, for channel binding.
    ``path`` is ``"direct"`` or ``"relayed"`` (through the relay: spec/relay.md). Use as an
    async context manager, or call :meth:`close` (and
    :meth:`wait_closed`)."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    peer_key: PublicKey
    role: str
    session_secret: bytes
    local: tuple[str, int]
    remote: tuple[str, int]
    handshake_hash: bytes = b""
    path: str = "direct"


async def connect(
    keypair: Keypair,
    peer_key: PublicKey | bytes | str,
    mediator_addr: tuple[str, int] | str,
    *,
    tls: bool = False,
    mediator_ca: str | None = None,
    mediator_pin: str | None = None,
    **options: Unpack[PeerOptions],
) -> P2PConnection:
    """Pair with the owner of ``peer_key`` through the Mediator at ``mediator_addr``.

    ``peer_key`` is a :class:`~p2psc.keys.PublicKey`, 32 raw bytes, or text (64 hex chars or
    PEM); ``mediator_addr`` is ``(host, port)``, ``"host:port"`` or ``"tls://host:port"``.

    TLS to the Mediator (``tls://`` or ``tls=True``) hides who wants to meet whom from the path;
    the certificate is verified against the system trust store and the host name, or against
    ``mediator_ca`` (a PEM file), or must be exactly the one whose SHA-256 fingerprint is
    ``mediator_pin``. A failure is :class:`~p2psc.errors.TlsVerificationFailed` (its
    ``mismatch`` says what did not match) or :class:`~p2psc.errors.MediatorTlsError`; there is
    never a fallback to clear text.

    ``options`` are the fields of :class:`~p2psc.core.peer.PeerOptions` (all keyword, all
    optional; defaults in :class:`~p2psc.core.peer.PeerConfig`): ``timeout`` (30 s),
    ``step_timeout`` (10 s), ``punch_timeout`` (10 s), ``punch_interval`` (0.05 s),
    ``punch_backoff`` (2), ``punch_max_interval`` (1 s), ``punch_attempt_timeout`` (4 s),
    ``advertise_retries`` (3), ``retry_backoff`` (0.5 s), ``candidate_timeout`` (5 s),
    ``max_candidates`` (32), ``max_candidates_per_source`` (4), ``send_local`` (True),
    ``keepalive_interval`` (15 s; None turns it off), ``timed_dial`` (True: the Peer's first
    dials wait for the Mediator's schedule), ``coordinate`` (True: offer a coordinated
    pairing), ``candidates`` (None: every usable address of this host; ``()``: none),
    ``relay`` (``"auto"`` here, unlike the sans-IO default ``"never"``: spec/relay.md),
    ``relay_address`` (None: the Mediator's), ``crypto``, ``nonce_source`` (injected for
    tests).

    Deadlines: ``timeout`` bounds the whole call (registration, waiting for the other side,
    hole punching and the handshake); ``step_timeout`` bounds each request/answer step with the
    Mediator; ``candidate_timeout`` bounds each direct connection's wait for its next handshake
    message (a silent connection is dropped).

    Hole punching (tune these for NATs): after the Mediator introduces us, both sides connect
    out from the local port of their Mediator connection to the other's observed address (and
    its local address, when the Mediator forwards one), with one attempt in flight per address.
    An attempt that has not connected after ``punch_attempt_timeout`` seconds is dropped; a
    failed attempt is retried after ``punch_interval * punch_backoff**(failures-1)`` seconds,
    capped at ``punch_max_interval``; all of it stops after ``punch_timeout`` seconds
    (:class:`~p2psc.errors.PeerUnreachable`). ``advertise_retries`` and ``retry_backoff``
    (doubling) bound how often we re-register when the Mediator answers AdvertiseRetry (busy).
    ``send_local=False`` keeps our local address out of the Advertise.

    While waiting for the other side, a Ping goes to the Mediator every ``keepalive_interval``
    seconds (keep it below the idle timeouts of the NATs on the way: many drop an idle TCP
    binding after 30 s to a few minutes); a Ping unanswered for a whole interval fails with
    :class:`~p2psc.errors.MediatorSilent` ("no answer from the mediator for N s").

    Raises a :class:`~p2psc.errors.ConnectError` subclass (MediatorUnreachable,
    MediatorClosed, AdvertiseAborted, AdvertiseRetryExhausted, IdentityCheckFailed,
    PeerUnreachable, UnusableAddress, HandshakeTimeout) or a
    :class:`~p2psc.errors.ProtocolError` (including UnsupportedVersion) when the other side
    breaks the protocol.
    """
    driver = prepare(
        keypair,
        peer_key,
        mediator_addr,
        tls=tls,
        mediator_ca=mediator_ca,
        mediator_pin=mediator_pin,
        **options,
    )
    return await connect_with(driver.core.config, driver)


async def connect_with(config: PeerConfig, driver: PeerDriver | None = None) -> P2PConnection:
    """:func:`connect` for a ready :class:`~p2psc.core.peer.PeerConfig` (and, optionally, a
    ready driver: :func:`p2psc.peer_tls.make_driver` makes one with TLS to the Mediator)."""
    return await DriverAdapter(driver or PeerDriver(PeerCore(config)), _secure).connect()


def _secure(transport: asyncio.Transport, result: Outcome) -> P2PConnection:
    """The kept transport, handed to the secure channel (in the callback that finished the
    handshake: no byte of it can slip past the core)."""
    assert isinstance(result, Established)
    reader, writer = secure_streams(transport, result.channel, result.leftover, limit=READ_LIMIT)
    return P2PConnection(
        reader=reader,
        writer=writer,
        peer_key=result.peer_key,
        role=result.role,
        session_secret=result.session_secret,
        local=_pair(transport.get_extra_info("sockname")),
        remote=_pair(transport.get_extra_info("peername")),
        handshake_hash=result.handshake_hash,
        path=result.path,
    )


ConnectionT = TypeVar("ConnectionT", bound=StreamConnection)


class _Link(asyncio.Protocol):
    """One socket: what happens on it goes to the driver, nothing more."""

    def __init__(self, adapter: DriverAdapter[Any], conn: ConnId | None) -> None:
        self.adapter = adapter
        self.conn = conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.conn = self.adapter.opened(self.conn, cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        if self.conn is not None:
            self.adapter.step(self.adapter.driver.received, self.conn, data)

    def eof_received(self) -> bool:
        return False  # the transport closes; connection_lost reports it

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None and self.adapter.transports.pop(self.conn, None) is not None:
            why = None if exc is None else (str(exc) or type(exc).__name__)
            self.adapter.step(self.adapter.driver.closed, self.conn, why)


class DriverAdapter(Generic[ConnectionT]):
    """Moves bytes and time between asyncio and the shared driver; ``hand_over`` makes what the
    caller gets from the kept transport and the outcome (it takes the transport over)."""

    def __init__(
        self,
        driver: AttemptDriver[Any],
        hand_over: Callable[[asyncio.Transport, Outcome], ConnectionT],
    ) -> None:
        self.driver = driver
        self.hand_over = hand_over
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.transports: dict[ConnId, asyncio.Transport] = {}
        self.tasks: dict[ConnId, asyncio.Task[None]] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.server: asyncio.Server | None = None
        self.listener: socket.socket | None = None
        self.local_host: str | None = None
        self.connection: ConnectionT | None = None

    async def connect(self) -> ConnectionT:
        """Run the attempt; whatever happens, close everything but the connection handed out."""
        try:
            return await self.run()
        finally:
            self.shutdown()

    async def run(self) -> ConnectionT:
        self.execute(self.driver.start(self.loop.time()))
        await self.done  # the only await: a cancel lands here, and shutdown() cleans up
        result = self.driver.result
        if isinstance(result, P2pscError):
            raise result
        assert self.connection is not None
        connection, self.connection = self.connection, None  # handed out: no longer ours
        return connection

    def step(self, method: Callable[..., list[IoOp]], *args: object) -> None:
        """Feed one happening to the driver and execute what it answers."""
        if self.done.done():
            return
        self.execute(method(*args, self.loop.time()))

    def execute(self, ops: list[IoOp]) -> None:
        for op in ops:
            if isinstance(op, Send):
                transport = self.transports.get(op.conn)
                if transport is not None:
                    transport.write(op.data)
            elif isinstance(op, Close):
                self._close(op.conn)
            elif isinstance(op, Connect):
                self.tasks[op.conn] = asyncio.create_task(self._connect(op))
            else:
                self._listen(op)
        result = self.driver.result
        if result is not None:
            for conn in sorted(self.driver.closing):
                self._close(conn)
            if not isinstance(result, P2pscError) and self.connection is None:
                # in this very callback: no byte of the kept connection can slip past the core
                self.connection = self.hand_over(self.transports.pop(result.conn), result)
            if self.driver.ready:
                if not self.done.done():
                    self.done.set_result(None)
                return
        self._arm(self.driver.next_deadline())

    def _arm(self, deadline: float | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if deadline is not None:
            self.timer = self.loop.call_at(deadline, self.step, self.driver.tick)

    async def _connect(self, op: Connect) -> None:
        local_host = self.local_host if op.from_port is not None else None
        try:
            sock = await open_connection_from(op.remote, local_host, op.from_port)
            try:
                await self.loop.create_connection(lambda: _Link(self, op.conn), sock=sock)
            except BaseException:
                sock.close()
                raise
        except OSError as error:
            self.step(self.driver.closed, op.conn, str(error) or type(error).__name__)
        finally:
            self.tasks.pop(op.conn, None)

    def opened(self, conn: ConnId | None, transport: asyncio.Transport) -> ConnId | None:
        """A connection exists (``conn`` None: accepted on our listener); returns its name."""
        remote = _pair(transport.get_extra_info("peername"))
        local = _pair(transport.get_extra_info("sockname"))
        if self.done.done():
            transport.close()
            return None
        if self.local_host is None:
            self.local_host = local[0]
        if conn is None:
            conn, ops = self.driver.accepted(remote, local, self.loop.time())
            self.transports[conn] = transport
        else:
            self.transports[conn] = transport
            ops = self.driver.opened(conn, remote, local, self.loop.time())
        self.execute(ops)
        return conn

    def _listen(self, op: Listen) -> None:
        # The socket listens before this returns (the Peer's ordering guarantee); serving it
        # through the loop may complete later.
        try:
            self.listener = listener_for(self.local_host, op.port)
        except OSError as error:
            self.loop.call_soon(self.step, self.driver.closed, LISTENER, str(error))
            return
        self.tasks[LISTENER] = asyncio.create_task(self._serve(self.listener))

    async def _serve(self, sock: socket.socket) -> None:
        try:
            self.server = await self.loop.create_server(lambda: _Link(self, None), sock=sock)
        except OSError as error:
            self.step(self.driver.closed, LISTENER, str(error))
        finally:
            self.tasks.pop(LISTENER, None)

    def _close(self, conn: ConnId) -> None:
        task = self.tasks.pop(conn, None)
        if task is not None:
            task.cancel()
        if conn == LISTENER:
            if self.server is not None:
                self.server.close()
                self.server = None
            if self.listener is not None:
                self.listener.close()
                self.listener = None
            return
        transport = self.transports.pop(conn, None)
        if transport is not None:
            transport.close()

    def shutdown(self) -> None:
        """Close everything the attempt opened except the connection handed out."""
        if not self.done.done():
            self.done.cancel()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._close(LISTENER)
        for task in list(self.tasks.values()):
            task.cancel()
        self.tasks.clear()
        for conn in list(self.transports):
            self._close(conn)
        if self.connection is not None:  # established, but the caller was cancelled first
            self.connection.close()  # the partner sees the end at once (authenticated: v1)
            self.connection = None


def _pair(name: object) -> tuple[str, int]:
    return address_pair(name)
