"""Blocking ``p2psc.connect(...)``: the original library's one-call interface, no asyncio.

Why: many programs are not async. This adapter drives the very same sans-IO
:class:`~p2psc.core.peer.PeerCore`, through the same :class:`~p2psc.core.peer_driver.PeerDriver`,
as :func:`p2psc.aio.connect`, over non-blocking plain sockets
and one :mod:`selectors` loop in the calling thread (no threads, no event loop). Sockets come
from :mod:`p2psc.sockets` (shared port, SO_REUSEADDR/SO_REUSEPORT). It contains no
protocol logic; every wait is bounded by the core's timers and by an outer deadline.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import time
from typing import Unpack

from p2psc.core.channel import SecureChannel
from p2psc.core.io import Close, Connect, ConnId, Send
from p2psc.core.peer import LISTENER, Established, PeerConfig, PeerCore, PeerOptions
from p2psc.core.peer_driver import IoOp, PeerDriver
from p2psc.errors import P2pscError
from p2psc.keys import Keypair, PublicKey
from p2psc.peer_tls import prepare
from p2psc.sockets import address_pair, listener_for, reusable_socket, source_host
from p2psc.sync_channel import SecureSocket

__all__ = ["SyncConnection", "connect", "connect_with"]

READ_SIZE = 65536


class SyncConnection(SecureSocket):
    """A direct, encrypted connection as a blocking, socket-like object.

    It is a :class:`~p2psc.sync_channel.SecureSocket` (``sendall``, ``recv``, ``recv_into``,
    ``makefile``, ``settimeout``, ``fileno``, ``shutdown``, ``close``, context manager) over the
    Noise channel, plus who is on the other end: ``peer_key`` (proven), ``role``,
    ``session_secret`` and ``handshake_hash`` (see :class:`p2psc.aio.P2PConnection`)."""

    def __init__(
        self,
        sock: socket.socket,
        channel: SecureChannel,
        leftover: bytes,
        *,
        peer_key: PublicKey,
        role: str,
        session_secret: bytes,
        handshake_hash: bytes,
        path: str = "direct",
    ) -> None:
        super().__init__(sock, channel, leftover)
        self.peer_key = peer_key
        self.role = role
        self.session_secret = session_secret
        self.handshake_hash = handshake_hash
        self.path = path
        self.local = _pair(sock.getsockname())
        self.remote = _pair(sock.getpeername())


def connect(
    keypair: Keypair,
    peer_key: PublicKey | bytes | str,
    mediator_addr: tuple[str, int] | str,
    *,
    tls: bool = False,
    mediator_ca: str | None = None,
    mediator_pin: str | None = None,
    **options: Unpack[PeerOptions],
) -> SyncConnection:
    """Blocking twin of :func:`p2psc.aio.connect`: same arguments (TLS to the Mediator
    included), same errors, same meaning of every deadline and hole punching parameter (see its
    docstring). Returns a :class:`SyncConnection` (a socket-like object over the secure
    channel, with the peer key, role and session secret)."""
    driver = prepare(
        keypair,
        peer_key,
        mediator_addr,
        tls=tls,
        mediator_ca=mediator_ca,
        mediator_pin=mediator_pin,
        **options,
    )
    return connect_with(driver.core.config, driver)


def connect_with(config: PeerConfig, driver: PeerDriver | None = None) -> SyncConnection:
    """:func:`connect` for a ready :class:`~p2psc.core.peer.PeerConfig` (and, optionally, a
    ready driver: :func:`p2psc.peer_tls.make_driver` makes one with TLS to the Mediator)."""
    adapter = _Adapter(driver or PeerDriver(PeerCore(config)))
    try:
        return adapter.run()
    finally:
        adapter.shutdown()


class _Adapter:
    """Moves bytes and time between non-blocking sockets (one selector, the caller's thread)
    and the shared :class:`~p2psc.core.peer_driver.PeerDriver`."""

    def __init__(self, driver: PeerDriver) -> None:
        self.driver = driver
        self.selector = selectors.DefaultSelector()
        self.sockets: dict[ConnId, socket.socket] = {}
        self.connecting: set[ConnId] = set()
        self.local_host: str | None = None
        self.kept: socket.socket | None = None

    def run(self) -> SyncConnection:
        self._execute(self.driver.start(time.monotonic()))
        while self.driver.result is None:
            deadline = self.driver.next_deadline()
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = self.selector.select(wait)
            for key, _mask in ready:
                if self.driver.result is None:
                    self._ready(key.data)
            if self.driver.result is None:
                self._execute(self.driver.tick(time.monotonic()))
        result = self.driver.result
        for conn in sorted(self.driver.closing):
            self._drop(conn)
        if isinstance(result, P2pscError):
            raise result
        assert isinstance(result, Established)
        sock = self.sockets.pop(result.conn)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(sock)
        sock.setblocking(True)
        return SyncConnection(
            sock,
            result.channel,
            result.leftover,
            peer_key=result.peer_key,
            role=result.role,
            session_secret=result.session_secret,
            handshake_hash=result.handshake_hash,
            path=result.path,
        )

    def _ready(self, conn: ConnId) -> None:
        sock = self.sockets.get(conn)
        if sock is None:
            return
        now = time.monotonic
        if conn == LISTENER:
            with contextlib.suppress(BlockingIOError, InterruptedError):
                accepted, _ = sock.accept()
                accepted.setblocking(False)
                new, ops = self.driver.accepted(
                    _pair(accepted.getpeername()), _pair(accepted.getsockname()), now()
                )
                self.sockets[new] = accepted
                self.selector.register(accepted, selectors.EVENT_READ, new)
                self._execute(ops)
            return
        if conn in self.connecting:
            self.connecting.discard(conn)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self._drop(conn)
                self._execute(self.driver.closed(conn, errno.errorcode.get(code, str(code)), now()))
                return
            self.selector.modify(sock, selectors.EVENT_READ, conn)
            local = _pair(sock.getsockname())
            if self.local_host is None:
                self.local_host = local[0]
            self._execute(self.driver.opened(conn, _pair(sock.getpeername()), local, now()))
            return
        try:
            data = sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._drop(conn)
            self._execute(self.driver.closed(conn, str(error), now()))
            return
        if not data:
            self._drop(conn)
            self._execute(self.driver.closed(conn, None, now()))
            return
        self._execute(self.driver.received(conn, data, now()))

    def _execute(self, ops: list[IoOp]) -> None:
        for op in ops:
            if isinstance(op, Send):
                sock = self.sockets.get(op.conn)
                if sock is not None:
                    self._send_all(op.conn, sock, op.data)
            elif isinstance(op, Close):
                self._drop(op.conn)
            elif isinstance(op, Connect):
                self._connect(op)
            else:
                try:
                    sock = listener_for(self.local_host, op.port)
                except OSError as error:
                    self._execute(self.driver.closed(LISTENER, str(error), time.monotonic()))
                else:
                    self.sockets[LISTENER] = sock
                    self.selector.register(sock, selectors.EVENT_READ, LISTENER)

    def _connect(self, op: Connect) -> None:
        host, port = op.remote
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            family, _, _, _, address = infos[0]
            fam = socket.AddressFamily(family)
            local = self.local_host if op.from_port is not None else None
            sock = reusable_socket(fam, source_host(fam, local, str(address[0])), op.from_port or 0)
        except OSError as error:
            self._execute(self.driver.closed(op.conn, str(error), time.monotonic()))
            return
        code = sock.connect_ex(address)
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            sock.close()
            reason = errno.errorcode.get(code, str(code))
            self._execute(self.driver.closed(op.conn, reason, time.monotonic()))
            return
        self.sockets[op.conn] = sock
        self.connecting.add(op.conn)
        self.selector.register(sock, selectors.EVENT_WRITE, op.conn)

    def _send_all(self, conn: ConnId, sock: socket.socket, data: bytes) -> None:
        """Handshake messages are small; a full send buffer is waited for, boundedly."""
        view = memoryview(data)
        give_up = time.monotonic() + self.driver.core.config.step_timeout
        while view:
            try:
                view = view[sock.send(view) :]
            except (BlockingIOError, InterruptedError):
                if time.monotonic() > give_up:
                    break
                time.sleep(0.005)
            except OSError as error:
                self._drop(conn)
                self._execute(self.driver.closed(conn, str(error), time.monotonic()))
                return

    def _drop(self, conn: ConnId) -> None:
        self.connecting.discard(conn)
        sock = self.sockets.pop(conn, None)
        if sock is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(sock)
        sock.close()

    def shutdown(self) -> None:
        """Close everything the attempt opened except the connection handed out."""
        for conn in list(self.sockets):
            self._drop(conn)
        self.selector.close()


def _pair(name: object) -> tuple[str, int]:
    return address_pair(name)
