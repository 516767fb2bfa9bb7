"""The blocking adapter (p2psc.sync_channel.SecureSocket) over real loopback sockets.

Same ground as test_channel_aio.py, blocking style: data both ways, a large transfer in both
directions at once, backpressure (a sender facing a non-reading receiver times out, and the
stream stays whole after it), tampering through a relay, truncation, no plaintext on the wire,
plus the socket-like surface (makefile, timeouts, pending, shutdown, context manager).
"""

from __future__ import annotations

import hashlib
import os
import select
import socket
import threading
from collections.abc import Callable

import pytest
from test_channel_helpers import TIMEOUT, kk_channels, relayed_pair, tcp_pair

from p2psc.core.channel import SecureChannel
from p2psc.errors import ChannelClosed, RecordTampered, TruncatedStream
from p2psc.sync_channel import SecureSocket


def secure_pair(
    c_sock: socket.socket, s_sock: socket.socket
) -> tuple[SecureSocket, SecureSocket, SecureChannel, SecureChannel]:
    c_ch, s_ch = kk_channels()
    return SecureSocket(c_sock, c_ch), SecureSocket(s_sock, s_ch), c_ch, s_ch


def recv_exactly(s: SecureSocket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        data = s.recv(n - len(out))
        assert data, f"EOF after {len(out)} of {n} bytes"
        out += data
    return bytes(out)


def recv_all(s: SecureSocket) -> bytes:
    out = bytearray()
    while data := s.recv(65536):
        out += data
    return bytes(out)


class Worker(threading.Thread):
    """A thread whose exception is re-raised by join_checked (tests must not swallow it)."""

    def __init__(self, fn: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.error: BaseException | None = None
        self.result: object = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:
            self.error = exc

    def join_checked(self) -> object:
        self.join(60)
        assert not self.is_alive(), "worker hung"
        if self.error is not None:
            raise self.error
        return self.result


def test_data_both_ways_and_authenticated_close() -> None:
    c_sock, s_sock = tcp_pair()
    client, server, c_ch, s_ch = secure_pair(c_sock, s_sock)
    with client, server:
        client.sendall(b"hello peer")
        assert recv_exactly(server, 10) == b"hello peer"
        assert server.send(b"hello client") == 12
        assert recv_exactly(client, 12) == b"hello client"
        client.sendall(b"")  # no empty record
        assert c_ch.records_sent == 1
        client.shutdown(socket.SHUT_WR)
        assert c_ch.closed
        with pytest.raises(ChannelClosed):
            client.sendall(b"too late")
        assert server.recv(100) == b""
        assert server.recv(100) == b""  # EOF stays EOF
        assert s_ch.peer_closed
        server.sendall(b"the other way is open")
        assert recv_exactly(client, 21) == b"the other way is open"
        assert server.getpeername() == client.getsockname()
        assert server.getsockname() == client.getpeername()
        assert server.channel is s_ch
        assert "fd=" in repr(server)
    assert c_sock.fileno() == -1 and s_sock.fileno() == -1
    assert repr(server) == "<SecureSocket closed>"
    server.close()  # idempotent


def test_close_sends_the_close_record() -> None:
    c_sock, s_sock = tcp_pair()
    client, server, _, s_ch = secure_pair(c_sock, s_sock)
    client.sendall(b"bye")
    client.close()
    assert recv_all(server) == b"bye"  # a clean end, not TruncatedStream
    assert s_ch.peer_closed
    server.close()


def test_large_transfer_both_directions_at_once_with_leftover() -> None:
    c_sock, s_sock = tcp_pair()
    c_ch, s_ch = kk_channels()
    c_sock.sendall(c_ch.seal(b"early"))
    leftover = b""
    while len(leftover) < 2 + 17 + 5:
        leftover += s_sock.recv(100)
    client, server = SecureSocket(c_sock, c_ch), SecureSocket(s_sock, s_ch, leftover)
    assert server.pending() == 5
    assert recv_exactly(server, 5) == b"early"
    up, down = os.urandom(6 * 2**20), os.urandom(5 * 2**20)

    def send(s: SecureSocket, data: bytes) -> None:
        view = memoryview(data)
        for i in range(0, len(data), 65536):
            s.sendall(view[i : i + 65536])
        s.shutdown(socket.SHUT_WR)

    def receive(s: SecureSocket) -> bytes:
        digest, buf = hashlib.sha256(), bytearray(100_000)
        while n := s.recv_into(buf):
            digest.update(buf[:n])
        return digest.digest()

    workers = [
        Worker(lambda: send(client, up)),
        Worker(lambda: send(server, down)),
        Worker(lambda: receive(server)),
        Worker(lambda: receive(client)),
    ]
    for w in workers:
        w.start()
    results = [w.join_checked() for w in workers]
    assert results[2] == hashlib.sha256(up).digest()
    assert results[3] == hashlib.sha256(down).digest()
    client.close()
    server.close()


def test_backpressure_and_a_timed_out_send_keeps_the_stream_whole() -> None:
    c_sock, s_sock = tcp_pair()
    for s in (c_sock, s_sock):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2**16)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2**16)
    client, server, _, _ = secure_pair(c_sock, s_sock)
    client.settimeout(0.3)
    block = bytes(range(256)) * 256
    accepted = 0
    with pytest.raises(TimeoutError):
        for _ in range(1024):  # at most 64 MiB: the kernel buffers fill long before
            client.sendall(block)
            accepted += len(block)
    accepted += len(block)  # the timed-out write counts as accepted (its rest is kept)
    assert accepted < 16 * 2**20
    assert server.pending() == 0  # the receiver buffered nothing: it never read
    reader = Worker(lambda: recv_all(server))
    reader.start()
    client.settimeout(TIMEOUT)
    client.sendall(b"tail")  # flushes the kept ciphertext first
    client.shutdown(socket.SHUT_WR)
    assert reader.join_checked() == block * (accepted // len(block)) + b"tail"
    client.close()
    server.close()


def test_tampered_record_is_a_typed_error_and_cuts_the_connection() -> None:
    with relayed_pair(flip_at=30) as (c_sock, s_sock, _relay):
        client, server, _, s_ch = secure_pair(c_sock, s_sock)
        client.sendall(b"A" * 100)
        with pytest.raises(RecordTampered):
            server.recv(100)
        with pytest.raises(RecordTampered):
            server.recv(100)  # stays failed
        assert isinstance(s_ch.failed, RecordTampered)
        with pytest.raises(ChannelClosed, match="failed"):
            server.sendall(b"x")
        with pytest.raises((TruncatedStream, ConnectionError)):
            client.recv(100)  # the server cut the connection without a close record
        client.close()
        server.close()


def test_raw_fin_without_close_record_is_truncation() -> None:
    c_sock, s_sock = tcp_pair()
    c_ch, s_ch = kk_channels()
    server = SecureSocket(s_sock, s_ch)
    c_sock.sendall(c_ch.seal(b"complete"))
    c_sock.shutdown(socket.SHUT_WR)
    assert recv_exactly(server, 8) == b"complete"
    with pytest.raises(TruncatedStream):
        server.recv(100)
    c_sock.close()
    server.close()


def test_reset_without_close_record_is_truncation() -> None:
    c_sock, s_sock = tcp_pair()
    c_ch, s_ch = kk_channels()
    server = SecureSocket(s_sock, s_ch)
    c_sock.sendall(c_ch.seal(b"x"))
    assert recv_exactly(server, 1) == b"x"
    c_sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c_sock.close()  # RST
    with pytest.raises(TruncatedStream):
        server.recv(100)
    server.close()


def test_no_plaintext_on_the_wire() -> None:
    marker = b"SECRET-PAYLOAD-" * 100
    with relayed_pair() as (c_sock, s_sock, relay):
        client, server, _, _ = secure_pair(c_sock, s_sock)
        client.sendall(marker)
        client.shutdown(socket.SHUT_WR)
        assert recv_all(server) == marker
        server.sendall(marker)
        server.close()
        assert recv_all(client) == marker
        client.close()
    wire = bytes(relay.upstream) + bytes(relay.downstream)
    assert b"SECRET" not in wire
    assert len(relay.upstream) == len(marker) + 2 * (2 + 17)


def test_makefile_binary_and_text() -> None:
    c_sock, s_sock = tcp_pair()
    client, server, _, _ = secure_pair(c_sock, s_sock)
    with client, server:
        wfile = client.makefile("wb")
        wfile.write(b"line one\nline two\n")
        wfile.flush()
        rfile = server.makefile("rb")
        assert rfile.readline() == b"line one\n"
        assert rfile.readline() == b"line two\n"
        text_out = server.makefile("w", encoding="utf-8")
        text_out.write("grüße\n")
        text_out.flush()
        text_in = client.makefile("r", encoding="utf-8")
        assert text_in.readline() == "grüße\n"
        assert text_in.mode == "r"
        rw = client.makefile("rwb")
        rw.write(b"ping\n")
        rw.flush()
        assert rfile.readline() == b"ping\n"
        raw = client.makefile("rb", buffering=0)
        server.sendall(b"raw")
        buf = bytearray(10)
        assert raw.readinto(buf) == 3 and buf[:3] == b"raw"
        assert raw.fileno() == client.fileno()
        with pytest.raises(OSError):
            raw.write(b"x")  # opened for reading only
        for f in (wfile, rfile, text_out, text_in, rw, raw):
            f.close()
        client.sendall(b"still open")  # closing the files leaves the socket open
        assert recv_exactly(server, 10) == b"still open"
        for bad in ("ab", "x", "b"):
            with pytest.raises(ValueError):
                client.makefile(bad)
        with pytest.raises(ValueError):
            client.makefile("r", buffering=0)


def test_timeouts_blocking_only_and_pending() -> None:
    c_sock, s_sock = tcp_pair()
    client, server, _, _ = secure_pair(c_sock, s_sock)
    with client, server:
        for bad in (0, -1):
            with pytest.raises(ValueError):
                server.settimeout(bad)
        with pytest.raises(ValueError):
            server.setblocking(False)
        server.setblocking(True)
        assert server.gettimeout() is None
        server.settimeout(0.2)
        assert server.gettimeout() == 0.2
        with pytest.raises(TimeoutError):
            server.recv(10)  # nothing consumed
        client.sendall(b"first")
        client.sendall(b"second")
        assert recv_exactly(server, 1) == b"f"
        assert server.pending() >= 4
        # Decrypted bytes wait here while select() may see nothing: check pending() first.
        readable, _, _ = select.select([server], [], [], 0)  # fileno() works with select
        assert readable in ([], [server])
        assert recv_exactly(server, 10) == b"irstsecond"
        assert server.pending() == 0
        assert server.recv(0) == b""
        with pytest.raises(ValueError):
            server.recv(10, socket.MSG_PEEK)
        with pytest.raises(ValueError):
            server.recv(-1)
        with pytest.raises(ValueError):
            server.sendall(b"x", socket.MSG_DONTWAIT)
        with pytest.raises(ValueError):
            server.recv_into(bytearray(2), 3)
        with pytest.raises(ValueError):
            server.recv_into(bytearray(2), -1)
    blocking, other = tcp_pair()
    blocking.setblocking(False)
    with pytest.raises(ValueError):
        SecureSocket(blocking, kk_channels()[0])
    blocking.close()
    other.close()


def test_close_never_blocks_on_a_full_buffer() -> None:
    """A peer that stopped reading cannot make close() hang; what was not delivered (the
    unsent ciphertext, the close record) shows as a truncation at the peer, not a clean end."""
    c_sock, s_sock = tcp_pair()
    for s in (c_sock, s_sock):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2**16)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2**16)
    client, server, _, _ = secure_pair(c_sock, s_sock)
    client.settimeout(0.2)
    with pytest.raises(TimeoutError):
        for _ in range(1024):
            client.sendall(bytes(65536))
    client.settimeout(None)
    closer = Worker(client.close)
    closer.start()
    closer.join_checked()  # returns: close() did not block on the full buffer
    with pytest.raises(TruncatedStream):
        recv_all(server)
    server.close()
