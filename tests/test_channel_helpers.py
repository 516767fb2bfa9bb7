"""Shared helpers of the channel adapter tests: KK channel pairs, loopback TCP pairs, and a
man-in-the-middle relay that records (and optionally corrupts) what crosses it.

Everything binds to 127.0.0.1 only, every socket has a timeout, and every thread is joined, so a
failing test cannot leave anything behind or hang the suite.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from p2psc.core.channel import SecureChannel
from p2psc.noise import HandshakeState, public_key

TIMEOUT = 10.0


def kk_channels(prologue: bytes = b"p2psc channel tests") -> tuple[SecureChannel, SecureChannel]:
    """(client, peer) channels from a real KK handshake with fresh keys."""
    i_s, r_s, i_e, r_e = (os.urandom(32) for _ in range(4))
    init = HandshakeState.initiator(i_s, public_key(r_s), prologue, i_e)
    resp = HandshakeState.responder(r_s, public_key(i_s), prologue, r_e)
    resp.read_message(init.write_message())
    init.read_message(resp.write_message())
    return SecureChannel(*init.split()), SecureChannel(*resp.split())


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """Two connected loopback TCP sockets (client, server), blocking, with timeouts."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
        server, _ = listener.accept()
    server.settimeout(TIMEOUT)
    return client, server


class Relay:
    """A man in the middle: accepts one connection and relays it to ``target``.

    It keeps a copy of every byte it forwards (``upstream``: client to target, ``downstream``:
    back) and, when ``flip_at`` is set, XORs ``0x01`` into that byte offset of the upstream."""

    def __init__(self, target: tuple[str, int], flip_at: int | None = None) -> None:
        self.target = target
        self.flip_at = flip_at
        self.upstream = bytearray()
        self.downstream = bytearray()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(TIMEOUT)
        self.address: tuple[str, int] = self.listener.getsockname()
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)

    def _accept(self) -> None:
        try:
            near, _ = self.listener.accept()
        except OSError:
            return
        far = socket.create_connection(self.target, timeout=TIMEOUT)
        near.settimeout(TIMEOUT)
        self._socks += [near, far]
        for src, dst, log, flip in (
            (near, far, self.upstream, self.flip_at),
            (far, near, self.downstream, None),
        ):
            t = threading.Thread(target=self._pump, args=(src, dst, log, flip), daemon=True)
            t.start()
            self._threads.append(t)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, log: bytearray, flip: int | None) -> None:
        try:
            while data := src.recv(65536):
                start = len(log)
                if flip is not None and start <= flip < start + len(data):
                    mutable = bytearray(data)
                    mutable[flip - start] ^= 0x01
                    data = bytes(mutable)
                log += data
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()
        for s in self._socks:
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        for t in self._threads:
            t.join(TIMEOUT)
        for s in self._socks:
            s.close()


@contextmanager
def relayed_pair(
    flip_at: int | None = None,
) -> Iterator[tuple[socket.socket, socket.socket, Relay]]:
    """(client, server, relay): client connects to the relay, the relay to the server."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    relay = Relay(listener.getsockname(), flip_at)
    client = server = None
    try:
        client = socket.create_connection(relay.address, timeout=TIMEOUT)
        server, _ = listener.accept()
        server.settimeout(TIMEOUT)
        yield client, server, relay
    finally:
        listener.close()
        for s in (client, server):
            if s is not None:
                s.close()
        relay.close()


def test_kk_channels_interoperate() -> None:
    client, peer = kk_channels()
    assert peer.feed(client.seal(b"ping")) == [b"ping"]
    assert client.feed(peer.seal(b"pong")) == [b"pong"]


def test_relay_forwards_records_and_flips_the_chosen_byte() -> None:
    with relayed_pair(flip_at=3) as (client, server, relay):
        client.sendall(b"abcdef")
        client.shutdown(socket.SHUT_WR)
        got = b""
        while data := server.recv(100):
            got += data
        assert got == b"abceef"  # 'd' ^ 1
        assert bytes(relay.upstream) == got
