"""The asyncio adapter of the secure channel over real loopback sockets.

Each test makes its CipherStates with a real KK handshake, then drives StreamReader/StreamWriter
pairs from :func:`p2psc.aio.channel.secure_streams` (over a transport) and
:func:`open_secure_streams_from_socket` (over a socket). Attacks go through a relay in the
middle (tests/test_channel_helpers.py) or a raw socket that speaks records by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
from collections.abc import Awaitable, Callable

import pytest
from test_channel_helpers import TIMEOUT, kk_channels, relayed_pair, tcp_pair

from p2psc.aio.channel import DEFAULT_LIMIT, open_secure_streams_from_socket, secure_streams
from p2psc.core.channel import MAX_RECORD_WIRE, SecureChannel
from p2psc.errors import ChannelClosed, ChannelError, RecordTampered, TruncatedStream

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(coro_fn(), 60)

    asyncio.run(bounded())


async def over_transport(sock: socket.socket, channel: SecureChannel, **kw: object) -> Streams:
    """The secure_streams entry point: a transport that already exists (as after a handshake)."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=sock)
    assert isinstance(transport, asyncio.Transport)
    return secure_streams(transport, channel, **kw)  # type: ignore[arg-type]


async def secure_pair(
    client_sock: socket.socket, server_sock: socket.socket, limit: int = DEFAULT_LIMIT
) -> tuple[Streams, Streams, SecureChannel, SecureChannel]:
    client_ch, server_ch = kk_channels()
    client = await open_secure_streams_from_socket(client_sock, client_ch, limit=limit)
    server = await over_transport(server_sock, server_ch, limit=limit)
    return client, server, client_ch, server_ch


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ChannelError, OSError):
        await asyncio.wait_for(writer.wait_closed(), TIMEOUT)


def test_data_both_ways_and_authenticated_close() -> None:
    async def main() -> None:
        c_sock, s_sock = tcp_pair()
        (cr, cw), (sr, sw), c_ch, s_ch = await secure_pair(c_sock, s_sock)
        cw.write(b"hello peer")
        await cw.drain()
        assert await sr.readexactly(10) == b"hello peer"
        sw.writelines([b"hello ", b"client"])
        await sw.drain()
        assert await cr.readexactly(12) == b"hello client"
        cw.write(b"")  # asyncio semantics: no-op, no empty record
        assert c_ch.records_sent == 1
        assert cw.can_write_eof()
        cw.write_eof()  # close record, then TCP half close
        assert c_ch.closed
        with pytest.raises(ChannelClosed):
            cw.write(b"too late")
        assert await sr.read() == b""  # EOF only after the close record
        assert s_ch.peer_closed
        sw.write(b"still open the other way")
        await sw.drain()
        assert await cr.readexactly(24) == b"still open the other way"
        assert sw.get_extra_info("p2psc_channel") is s_ch
        assert sw.get_extra_info("peername") == c_sock.getsockname()
        await close(sw)
        assert await cr.read() == b""
        assert cr.exception() is None
        await close(cw)

    run(main)


def test_large_transfer_with_leftover() -> None:
    async def main() -> None:
        c_sock, s_sock = tcp_pair()
        c_ch, s_ch = kk_channels()
        # The first records arrive before the adapter takes over: the handshake code read them.
        first = os.urandom(1000)
        c_sock.sendall(c_ch.seal(first))
        leftover = b""
        while len(leftover) < 2 + 17 + 1000:
            leftover += s_sock.recv(65536)
        _cr, cw = await open_secure_streams_from_socket(c_sock, c_ch)
        sr, sw = await over_transport(s_sock, s_ch, leftover=leftover)
        payload = os.urandom(8 * 2**20)

        async def send() -> None:
            view = memoryview(payload)
            for i in range(0, len(payload), 65536):
                cw.write(view[i : i + 65536])
                await cw.drain()
            cw.write_eof()

        sender = asyncio.create_task(send())
        got = await sr.read(len(first))
        while len(got) < len(first):
            got += await sr.read(len(first) - len(got))
        assert got == first
        received = hashlib.sha256()
        total = 0
        while chunk := await sr.read(2**18):
            received.update(chunk)
            total += len(chunk)
        await sender
        assert total == len(payload)
        assert received.digest() == hashlib.sha256(payload).digest()
        await close(sw)
        await close(cw)

    run(main)


def test_backpressure_stops_the_sender_and_bounds_the_receiver() -> None:
    """A receiver that does not read pauses its socket; TCP stops the sender; drain() blocks."""

    async def main() -> None:
        limit = 2**16
        c_sock, s_sock = tcp_pair()
        for s in (c_sock, s_sock):  # small kernel buffers make the stall come sooner
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2**16)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2**16)
        (_cr, cw), (sr, sw), _, _ = await secure_pair(c_sock, s_sock, limit=limit)
        block = os.urandom(65536)
        written, blocked = 0, False
        for _ in range(2048):  # at most 128 MiB: the sender must stall long before
            cw.write(block)
            written += len(block)
            try:
                await asyncio.wait_for(cw.drain(), 0.5)
            except TimeoutError:
                blocked = True
                break
        assert blocked, f"drain() never blocked after {written} bytes"
        # The receiver holds at most 2*limit plus one read (256 KiB) plus one record.
        buffered = len(sr._buffer)  # type: ignore[attr-defined]
        assert buffered <= 2 * limit + 2**18 + MAX_RECORD_WIRE, buffered
        assert not sw.transport.is_reading()  # paused all the way down to the socket
        assert written < 64 * 2**20
        # Reading again resumes everything; every byte arrives intact.
        pending = asyncio.create_task(cw.drain())
        received = bytearray()
        while len(received) < written:
            chunk = await sr.read(2**18)
            assert chunk
            received += chunk
        await pending
        assert received == block * (written // len(block))
        await close(cw)
        await close(sw)

    run(main)


def test_tampered_record_through_a_relay_is_a_typed_error_and_a_close() -> None:
    async def main() -> None:
        # Flip a byte inside the second record's ciphertext (offset 100 of ~1100 sent).
        with relayed_pair(flip_at=1200) as (c_sock, s_sock, relay):
            (cr, cw), (sr, sw), _, s_ch = await secure_pair(c_sock, s_sock)
            cw.write(b"A" * 1000)
            await cw.drain()
            assert await sr.readexactly(1000) == b"A" * 1000
            cw.write(b"B" * 1000)
            await cw.drain()
            with pytest.raises(RecordTampered):
                await sr.read(1000)
            assert isinstance(s_ch.failed, RecordTampered)
            assert sw.transport.is_closing()
            with pytest.raises(RecordTampered):
                await sw.drain()  # the writer side reports it too
            # The sender sees its connection cut without a close record.
            with pytest.raises((TruncatedStream, ConnectionError)):
                while await cr.read(1000):
                    pass
            assert b"B" * 16 not in bytes(relay.upstream)
            await close(cw)
            await close(sw)

    run(main)


def test_raw_fin_without_close_record_is_truncation() -> None:
    async def main() -> None:
        c_sock, s_sock = tcp_pair()
        c_ch, s_ch = kk_channels()
        sr, sw = await over_transport(s_sock, s_ch)
        c_sock.sendall(c_ch.seal(b"complete record"))
        c_sock.shutdown(socket.SHUT_WR)  # a FIN anyone on the path could forge
        assert await sr.readexactly(15) == b"complete record"
        with pytest.raises(TruncatedStream):
            await sr.read(100)
        assert sw.transport.is_closing()
        c_sock.close()
        await close(sw)

    run(main)


def test_reset_without_close_record_is_truncation() -> None:
    async def main() -> None:
        c_sock, s_sock = tcp_pair()
        c_ch, s_ch = kk_channels()
        sr, sw = await over_transport(s_sock, s_ch)
        c_sock.sendall(c_ch.seal(b"x") + c_ch.seal(b"partial")[:10])
        c_sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c_sock.close()  # RST
        assert await sr.readexactly(1) == b"x"
        with pytest.raises(TruncatedStream) as info:
            await sr.read(100)
        assert isinstance(info.value.__cause__, ConnectionError) or "inside a record" in str(
            info.value
        )
        await close(sw)

    run(main)


def test_no_plaintext_on_the_wire() -> None:
    async def main() -> None:
        marker = b"SECRET-PAYLOAD-" * 100
        with relayed_pair() as (c_sock, s_sock, relay):
            (cr, cw), (sr, sw), c_ch, _ = await secure_pair(c_sock, s_sock)
            cw.write(marker)
            cw.write_eof()
            sw.write(marker)
            await sw.drain()
            assert await sr.read() == marker
            assert await cr.readexactly(len(marker)) == marker
            await close(sw)
            assert await cr.read() == b""
            await close(cw)
        wire = bytes(relay.upstream) + bytes(relay.downstream)
        assert b"SECRET" not in wire
        assert len(relay.upstream) == len(marker) + 2 * (2 + 17)  # one data + one close record
        assert c_ch.records_sent == 2

    run(main)
