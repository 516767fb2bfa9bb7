"""This host's usable IP addresses of both families: the candidates a peer advertises.

Why here and not in the core: enumerating interfaces is I/O (the core is sans-IO); the adapters'
``connect()`` (through :func:`p2psc.peer_tls.prepare`) fills ``PeerConfig.candidates`` with
:func:`local_addresses` when the caller left it ``None``.

Linux: IPv4 from ``SIOCGIFADDR`` per interface (each interface's primary address), IPv6 from
``/proc/net/if_inet6`` (global scope only: a link-local address needs a zone the wire cannot
carry). Elsewhere: what the host name resolves to. Loopback, link-local, unspecified and
multicast addresses are left out; the result is bounded and never raises.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import socket
import struct

from p2psc.wire import MAX_CANDIDATES

__all__ = ["local_addresses", "usable"]

_SIOCGIFADDR = 0x8915
_IF_INET6 = "/proc/net/if_inet6"
_GLOBAL_SCOPE = 0x00


def usable(host: str) -> bool:
    """Whether ``host`` can be a candidate another host reaches us on."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not (ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast)


def _ipv4() -> list[str]:
    out: list[str] = []
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            with contextlib.suppress(OSError):
                answer = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)
                out.append(socket.inet_ntoa(answer[20:24]))
    return out


def _ipv6() -> list[str]:
    out: list[str] = []
    with contextlib.suppress(OSError), open(_IF_INET6, encoding="ascii") as table:
        for line in table.read().splitlines()[:256]:
            fields = line.split()
            if len(fields) < 6 or len(fields[0]) != 32:
                continue
            with contextlib.suppress(ValueError):
                if int(fields[3], 16) == _GLOBAL_SCOPE:
                    out.append(str(ipaddress.IPv6Address(bytes.fromhex(fields[0]))))
    return out


def _resolved() -> list[str]:
    with contextlib.suppress(OSError):
        infos = socket.getaddrinfo(socket.gethostname(), None, type=socket.SOCK_STREAM)
        return [str(info[4][0]) for info in infos]
    return []


def local_addresses() -> tuple[str, ...]:
    """Usable addresses of this host, IPv4 first, at most MAX_CANDIDATES + 1 (one of them is
    usually the Mediator connection's own address, which is not repeated as a candidate)."""
    found = _ipv4() + _ipv6()
    if not found:
        found = _resolved()
    out: list[str] = []
    for host in found:
        if usable(host) and host not in out:
            out.append(host)
    return tuple(out[: MAX_CANDIDATES + 1])
