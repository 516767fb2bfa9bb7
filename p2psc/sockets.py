"""Socket mechanics of TCP hole punching (DESIGN.md section 7), for any framework.

Why a module of its own: every socket of one pairing attempt must share one local port. The
Mediator connection is made from a socket that has ``SO_REUSEADDR`` and ``SO_REUSEPORT`` set
*before* it is bound, so that later, on the very same port and while that connection may still
be open, the Peer can bind a listener and both sides can bind outgoing sockets that connect to
the other side (TCP simultaneous open through NATs that keep the port). Which sockets to open,
when, and how often to retry is decided by :class:`p2psc.core.peer.PeerCore`; these helpers only
create them. They import no event loop: the asyncio, blocking and trio adapters all use them.
"""

from __future__ import annotations

import socket

__all__ = [
    "address_pair",
    "family_of",
    "listener_for",
    "listening_socket",
    "reusable_socket",
    "source_host",
    "wildcard",
]


def family_of(host: str) -> socket.AddressFamily:
    """AF_INET6 for an IPv6 literal, AF_INET otherwise."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def wildcard(family: socket.AddressFamily) -> str:
    """The any-address of ``family``."""
    return "::" if family == socket.AF_INET6 else "0.0.0.0"


def reusable_socket(
    family: socket.AddressFamily, host: str, port: int, *, dual_stack: bool = False
) -> socket.socket:
    """A non-blocking TCP socket with SO_REUSEADDR (+ SO_REUSEPORT where the OS has it), bound
    to ``(host, port)`` (``port`` 0 = any; ``dual_stack``: an IPv6 socket that also takes
    IPv4). Raises OSError; never leaks the socket."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if dual_stack:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setblocking(False)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def address_pair(name: object) -> tuple[str, int]:
    """``(host, port)`` of a socket address (``("", 0)`` when it is none); an IPv4-mapped IPv6
    host, as the dual-stack listener of :func:`listener_for` reports an IPv4 peer, as the IPv4
    address it is."""
    if not (isinstance(name, tuple) and len(name) >= 2):
        return ("", 0)
    host = str(name[0])
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, int(name[1])


def route_source(family: socket.AddressFamily, remote_host: str) -> str | None:
    """The source address the kernel would choose towards ``remote_host`` (a connected UDP
    socket: nothing is sent), or None when there is no route."""
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((remote_host, 9))
            return str(probe.getsockname()[0])
    except OSError:
        return None


def source_host(
    family: socket.AddressFamily, local_host: str | None, remote_host: str | None = None
) -> str:
    """The local address an outgoing socket of ``family`` binds (spec/protocol.md
    "Candidates"): the Mediator connection's (``local_host``), unless the route towards
    ``remote_host`` leaves from another address of this host (a candidate on another
    interface), then that one; any address of the family when ``local_host`` has the other
    family."""
    if local_host is None or family_of(local_host) != family:
        return wildcard(family)
    if remote_host is None:
        return local_host
    preferred = route_source(family, remote_host)
    return local_host if preferred is None else preferred


def listener_for(local_host: str | None, port: int, backlog: int = 8) -> socket.socket:
    """The listener of a pairing attempt on ``port``: on every address of both families (a
    dual-stack ``[::]`` socket), so that the partner's attempts towards any of our candidates
    land on it; where the host has no IPv6, on every address of ``local_host``'s family.
    Raises OSError when neither can listen."""
    try:
        sock = reusable_socket(socket.AF_INET6, "::", port, dual_stack=True)
    except OSError:
        return listening_socket(wildcard(family_of(local_host or "0.0.0.0")), port, backlog)
    try:
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def listening_socket(host: str, port: int, backlog: int = 8) -> socket.socket:
    """A listener on ``(host, port)`` that coexists with the other sockets of that port.

    Synchronous on purpose: the Peer must be listening *before* it closes its Mediator
    connection, and the adapter executes the core's actions in order."""
    sock = reusable_socket(family_of(host), host, port)
    try:
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock
