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

__all__ = ["family_of", "listening_socket", "reusable_socket", "wildcard"]


def family_of(host: str) -> socket.AddressFamily:
    """AF_INET6 for an IPv6 literal, AF_INET otherwise."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def wildcard(family: socket.AddressFamily) -> str:
    """The any-address of ``family``."""
    return "::" if family == socket.AF_INET6 else "0.0.0.0"


def reusable_socket(family: socket.AddressFamily, host: str, port: int) -> socket.socket:
    """A non-blocking TCP socket with SO_REUSEADDR (+ SO_REUSEPORT where the OS has it), bound
    to ``(host, port)`` (``port`` 0 = any). Raises OSError; never leaks the socket."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setblocking(False)
        sock.bind((host, port))
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
