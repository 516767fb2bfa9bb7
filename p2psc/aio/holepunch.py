"""asyncio part of the hole punching socket mechanics: connect out from a shared port.

The framework-neutral helpers live in :mod:`p2psc.sockets` (re-exported here for existing
imports); this module adds only the asyncio connect.
"""

from __future__ import annotations

import asyncio
import socket

from p2psc.sockets import family_of, listening_socket, reusable_socket, source_host, wildcard

__all__ = [
    "family_of",
    "listening_socket",
    "open_connection_from",
    "reusable_socket",
    "wildcard",
]


async def open_connection_from(
    remote: tuple[str, int], local_host: str | None, from_port: int | None
) -> socket.socket:
    """Connect to ``remote`` from ``(local_host, from_port)`` (any when None); a connected,
    non-blocking socket. Raises OSError (refused, unreachable, 4-tuple already in use...)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(remote[0], remote[1], type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"cannot resolve {remote[0]}")
    family, _, _, _, address = infos[0]
    fam = socket.AddressFamily(family)
    sock = reusable_socket(fam, source_host(fam, local_host, remote[0]), from_port or 0)
    try:
        await loop.sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock
