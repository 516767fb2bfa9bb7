"""Blocking ``p2psc.connect(...)``: the original library's one-call interface, no asyncio.

Why: many programs are not async. This adapter drives the very same sans-IO
:class:`~p2psc.core.peer.PeerCore` as :func:`p2psc.aio.connect`, over non-blocking plain sockets
and one :mod:`selectors` loop in the calling thread (no threads, no event loop). Sockets come
from :mod:`p2psc.aio.holepunch` (shared port, SO_REUSEADDR/SO_REUSEPORT). It contains no
protocol logic; every wait is bounded by the core's timers and by an outer deadline.
"""

from __future__ import annotations

import contextlib
import errno
import secrets
import selectors
import socket
import time
from dataclasses import dataclass, field
from types import TracebackType

from p2psc.aio.holepunch import listening_socket, reusable_socket, wildcard
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
from p2psc.errors import HandshakeTimeout
from p2psc.keys import HPKE, Keypair, NonceCrypto, NonceSource, PublicKey

__all__ = ["SyncConnection", "connect", "connect_with"]

READ_SIZE = 65536
OUTER_MARGIN = 2.0


@dataclass
class SyncConnection:
    """A direct, authenticated connection as a blocking socket.

    ``sock`` is connected and blocking. Bytes the other side sent right after the handshake
    (coalesced with its last handshake frame) are in ``leftover``; :meth:`recv` returns them
    first, so prefer it over ``sock.recv`` (or read ``leftover`` yourself before ``sock``)."""

    sock: socket.socket
    peer_key: PublicKey
    role: str
    session_secret: bytes
    local: tuple[str, int]
    remote: tuple[str, int]
    leftover: bytes = field(default=b"", repr=False)

    def recv(self, bufsize: int = READ_SIZE) -> bytes:
        """Like ``socket.recv``, but first returns what arrived with the handshake."""
        if self.leftover:
            data, self.leftover = self.leftover[:bufsize], self.leftover[bufsize:]
            return data
        return self.sock.recv(bufsize)

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> SyncConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def connect(
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
) -> SyncConnection:
    """Blocking twin of :func:`p2psc.aio.connect`: same arguments, same errors, same meaning
    of every deadline and hole punching parameter (see its docstring). Returns a
    :class:`SyncConnection` (blocking socket, peer key, role, session secret)."""
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
    return connect_with(config)


def connect_with(config: PeerConfig) -> SyncConnection:
    """:func:`connect` for a ready :class:`~p2psc.core.peer.PeerConfig`."""
    driver = _Driver(PeerCore(config))
    try:
        return driver.run()
    finally:
        driver.shutdown()


class _Driver:
    """Executes core actions on non-blocking sockets; one selector, the caller's thread."""

    def __init__(self, core: PeerCore) -> None:
        self.core = core
        self.selector = selectors.DefaultSelector()
        self.sockets: dict[ConnId, socket.socket] = {}
        self.connecting: set[ConnId] = set()
        self.timers: dict[ConnId, float] = {}
        self.pending: list[Event] = []
        self.next_accepted = FIRST_ACCEPTED
        self.local_host: str | None = None
        self.kept: ConnId | None = None

    def run(self) -> SyncConnection:
        start = time.monotonic()
        bound = start + self.core.config.timeout + OUTER_MARGIN
        actions = self.core.start(start)
        while True:
            for action in actions:
                result = self._execute(action)
                if result is not None:
                    return result
            event = self._next_event(bound)
            actions = self.core.handle(event, time.monotonic())

    def _next_event(self, bound: float) -> Event:
        while True:
            if self.pending:
                return self.pending.pop(0)
            now = time.monotonic()
            if now >= bound:
                raise HandshakeTimeout("connect did not finish within its deadline")
            if self.timers:
                conn, due = min(self.timers.items(), key=lambda item: item[1])
                if due <= now:
                    del self.timers[conn]
                    return TimerFired(conn)
                wait = min(due, bound) - now
            else:
                wait = bound - now
            for key, _mask in self.selector.select(max(wait, 0.0)):
                self._ready(key.data)

    def _ready(self, conn: ConnId) -> None:
        sock = self.sockets.get(conn)
        if sock is None:
            return
        if conn == LISTENER:
            with contextlib.suppress(BlockingIOError, InterruptedError):
                accepted, _ = sock.accept()
                accepted.setblocking(False)
                new = self.next_accepted
                self.next_accepted += 1
                self.sockets[new] = accepted
                self.selector.register(accepted, selectors.EVENT_READ, new)
                self.pending.append(
                    Opened(new, _pair(accepted.getpeername()), _pair(accepted.getsockname()))
                )
            return
        if conn in self.connecting:
            self.connecting.discard(conn)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self._drop(conn)
                self.pending.append(Closed(conn, errno.errorcode.get(code, str(code))))
                return
            self.selector.modify(sock, selectors.EVENT_READ, conn)
            local = _pair(sock.getsockname())
            if self.local_host is None:
                self.local_host = local[0]
            self.pending.append(Opened(conn, _pair(sock.getpeername()), local))
            return
        try:
            data = sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._drop(conn)
            self.pending.append(Closed(conn, str(error)))
            return
        if not data:
            self._drop(conn)
            self.pending.append(Closed(conn, None))
            return
        self.pending.append(Received(conn, data))

    def _execute(self, action: PeerAction) -> SyncConnection | None:
        if isinstance(action, Send):
            sock = self.sockets.get(action.conn)
            if sock is not None:
                self._send_all(action.conn, sock, action.data)
        elif isinstance(action, Close):
            self._drop(action.conn)
        elif isinstance(action, SetTimer):
            if action.deadline is None:
                self.timers.pop(action.conn, None)
            else:
                self.timers[action.conn] = action.deadline
        elif isinstance(action, Connect):
            self._connect(action)
        elif isinstance(action, Listen):
            try:
                sock = listening_socket(self.local_host or "0.0.0.0", action.port)
            except OSError as error:
                self.pending.append(Closed(LISTENER, str(error)))
            else:
                self.sockets[LISTENER] = sock
                self.selector.register(sock, selectors.EVENT_READ, LISTENER)
        elif isinstance(action, Failed):
            raise action.error
        elif isinstance(action, Established):
            return self._established(action)
        return None

    def _connect(self, action: Connect) -> None:
        host, port = action.remote
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            family, _, _, _, address = infos[0]
            fam = socket.AddressFamily(family)
            local = self.local_host if action.from_port is not None else None
            sock = reusable_socket(fam, local or wildcard(fam), action.from_port or 0)
        except OSError as error:
            self.pending.append(Closed(action.conn, str(error)))
            return
        code = sock.connect_ex(address)
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            sock.close()
            self.pending.append(Closed(action.conn, errno.errorcode.get(code, str(code))))
            return
        self.sockets[action.conn] = sock
        self.connecting.add(action.conn)
        self.selector.register(sock, selectors.EVENT_WRITE, action.conn)

    def _send_all(self, conn: ConnId, sock: socket.socket, data: bytes) -> None:
        """Handshake frames are small; a full send buffer is waited for, boundedly."""
        view = memoryview(data)
        give_up = time.monotonic() + self.core.config.step_timeout
        while view:
            try:
                view = view[sock.send(view) :]
            except (BlockingIOError, InterruptedError):
                if time.monotonic() > give_up:
                    break
                time.sleep(0.005)
            except OSError as error:
                self._drop(conn)
                self.pending.append(Closed(conn, str(error)))
                return

    def _drop(self, conn: ConnId) -> None:
        self.connecting.discard(conn)
        sock = self.sockets.pop(conn, None)
        if sock is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(sock)
        if conn != self.kept:
            sock.close()

    def _established(self, action: Established) -> SyncConnection:
        self.kept = action.conn
        sock = self.sockets.pop(action.conn)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(sock)
        leftover = action.leftover + b"".join(
            e.data for e in self.pending if isinstance(e, Received) and e.conn == action.conn
        )
        sock.setblocking(True)
        return SyncConnection(
            sock=sock,
            peer_key=action.peer_key,
            role=action.role,
            session_secret=action.session_secret,
            local=_pair(sock.getsockname()),
            remote=_pair(sock.getpeername()),
            leftover=leftover,
        )

    def shutdown(self) -> None:
        for conn in list(self.sockets):
            self._drop(conn)
        self.selector.close()


def _pair(name: object) -> tuple[str, int]:
    if isinstance(name, tuple) and len(name) >= 2:
        return str(name[0]), int(name[1])
    return ("", 0)
