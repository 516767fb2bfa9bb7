"""``await p2psc.trio.connect(...)``: one direct, mutually authenticated, encrypted connection.

The trio twin of :func:`p2psc.aio.connect`, written against spec/embedding.md alone: all
protocol logic lives in :class:`p2psc.core.peer.PeerCore`, run by the shared
:class:`p2psc.core.peer_driver.PeerDriver`; this module only executes its operations on plain
non-blocking sockets from :mod:`p2psc.sockets` (one :class:`~p2psc.trio._link.Link` each) and
reports what happened. One task per connection waits for readability (and for a ``Connect``,
first for the connection); the calling task sleeps until something happened or the driver's
single deadline passes.

No byte of the kept connection is read after the handshake succeeded (a reader checks the
result between its wait and its read, with no checkpoint between), so the connection is handed
to :class:`~p2psc.trio.stream.SecureStream` with only the driver's ``leftover``. Cancelling
``connect()`` at any point closes every socket of the attempt; a connection that was established
but not yet returned gets the authenticated close record first, so the partner sees a clean end.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import socket
from collections.abc import Callable
from typing import Unpack

import trio

from p2psc.core.io import Close, Connect, ConnId, Send
from p2psc.core.peer import LISTENER, Established, PeerConfig, PeerCore, PeerOptions
from p2psc.core.peer_driver import IoOp, PeerDriver
from p2psc.errors import P2pscError
from p2psc.keys import Keypair, PublicKey
from p2psc.peer_tls import prepare
from p2psc.sockets import address_pair, listener_for, reusable_socket, source_host
from p2psc.trio._link import READ_SIZE, Link, close_socket, readable
from p2psc.trio.stream import SecureStream

__all__ = ["TrioConnection", "connect", "connect_with"]


class TrioConnection(SecureStream):
    """A direct, encrypted connection: a :class:`~p2psc.trio.stream.SecureStream`
    (``send_all``, ``receive_some``, ``send_eof``, ``aclose``, ``async with``) plus who is on
    the other end: ``peer_key`` (proven), ``role`` (``"client"``: registered first, the Noise
    initiator, or ``"peer"``), ``session_secret`` and ``handshake_hash`` (see
    :class:`p2psc.aio.P2PConnection`), ``local``/``remote`` addresses and ``path``."""

    def __init__(self, sock: socket.socket, result: Established, unsent: bytes) -> None:
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        super().__init__(stream, result.channel, result.leftover, unsent)
        self.peer_key: PublicKey = result.peer_key
        self.role = result.role
        self.session_secret = result.session_secret
        self.handshake_hash = result.handshake_hash
        self.local = _address(sock.getsockname)
        self.remote = _address(sock.getpeername)  # ("", 0) if it was reset meanwhile
        self.path = result.path


async def connect(
    keypair: Keypair,
    peer_key: PublicKey | bytes | str,
    mediator_addr: tuple[str, int] | str,
    *,
    tls: bool = False,
    mediator_ca: str | None = None,
    mediator_pin: str | None = None,
    **options: Unpack[PeerOptions],
) -> TrioConnection:
    """trio twin of :func:`p2psc.aio.connect`: same arguments (TLS to the Mediator included),
    errors and deadlines (see its docstring). Returns a :class:`TrioConnection`."""
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


async def connect_with(config: PeerConfig, driver: PeerDriver | None = None) -> TrioConnection:
    """:func:`connect` for a ready :class:`~p2psc.core.peer.PeerConfig` (and, optionally, a
    ready driver: :func:`p2psc.peer_tls.make_driver` makes one with TLS to the Mediator)."""
    adapter = _Adapter(driver or PeerDriver(PeerCore(config)))
    try:
        async with trio.open_nursery() as nursery:
            adapter.nursery = nursery
            await adapter.run()
        return adapter.finish()
    finally:
        adapter.shutdown()


class _Adapter:
    """Moves bytes and time between trio and the shared :class:`PeerDriver`."""

    nursery: trio.Nursery

    def __init__(self, driver: PeerDriver) -> None:
        self.driver = driver
        self.links: dict[ConnId, Link] = {}
        self.connecting: dict[ConnId, trio.CancelScope] = {}
        self.local_host: str | None = None
        self.changed = trio.Event()

    async def run(self) -> None:
        """Until the driver has a result; then stop every task of the attempt."""
        self._execute(self.driver.start(trio.current_time()))
        while self.driver.result is None:
            self.changed = trio.Event()
            deadline = self.driver.next_deadline()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await self.changed.wait()
            self.step(self.driver.tick)
        self.nursery.cancel_scope.cancel()

    def finish(self) -> TrioConnection:
        result = self.driver.result
        if isinstance(result, P2pscError):
            raise result
        assert isinstance(result, Established)
        link = self.links.pop(result.conn)
        return TrioConnection(link.sock, result, bytes(link.out))

    def step(self, method: Callable[..., list[IoOp]], *args: object) -> None:
        """Feed one happening to the driver, execute what it answers, wake :meth:`run`."""
        if self.driver.result is None:
            self._execute(method(*args, trio.current_time()))
        self.changed.set()

    def _execute(self, ops: list[IoOp]) -> None:
        for op in ops:
            if isinstance(op, Send):
                link = self.links.get(op.conn)
                if link is not None:
                    link.send(op.data, self.nursery)
            elif isinstance(op, Close):
                self._drop(op.conn, flush=True)
            elif isinstance(op, Connect):
                self.connecting[op.conn] = scope = trio.CancelScope()
                self.nursery.start_soon(self._connect, op, scope)
            else:
                try:
                    sock = listener_for(self.local_host, op.port)
                except OSError as error:
                    self.step(self.driver.closed, LISTENER, str(error))
                    continue
                self.links[LISTENER] = link = Link(sock)
                self.nursery.start_soon(self._serve, link)

    async def _connect(self, op: Connect, scope: trio.CancelScope) -> None:
        sock: socket.socket | None = None
        with scope:
            try:
                infos = await trio.socket.getaddrinfo(*op.remote, type=socket.SOCK_STREAM)
                family, _, _, _, address = infos[0]
                fam = socket.AddressFamily(family)
                local = self.local_host if op.from_port is not None else None
                sock = reusable_socket(
                    fam, source_host(fam, local, str(address[0])), op.from_port or 0
                )
                code = sock.connect_ex(address)
                if code in (errno.EINPROGRESS, errno.EWOULDBLOCK):
                    await trio.lowlevel.wait_writable(sock)
                    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    raise OSError(code, os.strerror(code))
                remote, local_name = _pair(sock.getpeername()), _pair(sock.getsockname())
            except OSError as error:
                if sock is not None:
                    sock.close()
                if self.connecting.pop(op.conn, None) is not None:
                    self.step(self.driver.closed, op.conn, str(error) or type(error).__name__)
                return
            except BaseException:  # cancelled: the core closed it, or the attempt is over
                if sock is not None:
                    close_socket(sock)
                raise
        if scope.cancelled_caught or self.connecting.pop(op.conn, None) is None or sock is None:
            if sock is not None:
                close_socket(sock)  # idempotent
            return
        self.links[op.conn] = link = Link(sock)
        if self.local_host is None:
            self.local_host = local_name[0]
        self.step(self.driver.opened, op.conn, remote, local_name)
        await self._read(op.conn, link)

    async def _serve(self, listener: Link) -> None:
        with _reading(listener):
            while True:
                try:
                    await readable(listener.sock)
                    if self.driver.result is not None:
                        return
                    sock, address = listener.sock.accept()
                except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                    continue
                except trio.ClosedResourceError:
                    return
                except OSError as error:
                    self._gone(LISTENER, str(error))
                    return
                sock.setblocking(False)
                remote, local = _pair(address), _address(sock.getsockname)
                conn, ops = self.driver.accepted(remote, local, trio.current_time())
                self.links[conn] = link = Link(sock)
                self.nursery.start_soon(self._read, conn, link)
                self._execute(ops)
                self.changed.set()

    async def _read(self, conn: ConnId, link: Link) -> None:
        with _reading(link):
            while True:
                try:
                    await readable(link.sock)
                    if self.driver.result is not None:
                        return  # what waits in the kernel is the channel's, not the driver's
                    data = link.sock.recv(READ_SIZE)
                except (BlockingIOError, InterruptedError):
                    continue
                except trio.ClosedResourceError:
                    return
                except OSError as error:
                    self._gone(conn, str(error) or type(error).__name__)
                    return
                if not data:
                    self._gone(conn, None)
                    return
                self.step(self.driver.received, conn, data)

    def _gone(self, conn: ConnId, why: str | None) -> None:
        """``conn`` ended by itself (EOF, reset, listener error): close it, tell the driver."""
        self._drop(conn, flush=False)
        self.step(self.driver.closed, conn, why)

    def _drop(self, conn: ConnId, *, flush: bool) -> None:
        scope = self.connecting.pop(conn, None)
        if scope is not None:
            scope.cancel()
        link = self.links.pop(conn, None)
        if link is not None:
            link.close(flush=flush)

    def shutdown(self) -> None:
        """Close everything the attempt opened except the connection handed out. A connection
        established but not handed out (we were cancelled) gets the authenticated close."""
        result = self.driver.result
        if isinstance(result, Established) and result.conn in self.links:
            link = self.links[result.conn]
            with contextlib.suppress(OSError, P2pscError):  # best effort, never blocks
                link.sock.send(bytes(link.out) + result.channel.seal_close())
        for scope in self.connecting.values():
            scope.cancel()
        self.connecting.clear()
        for conn in list(self.links):
            self._drop(conn, flush=False)


def _reading(link: Link) -> trio.CancelScope:
    """The reader's scope: a Close stops the reader even while the socket lingers to flush."""
    link.reading = trio.CancelScope()
    if link.closing:  # closed (to flush) before its reader even started
        link.reading.cancel()
    return link.reading


def _address(get: Callable[[], object]) -> tuple[str, int]:
    try:
        return _pair(get())
    except OSError:
        return ("", 0)


def _pair(name: object) -> tuple[str, int]:
    return address_pair(name)
