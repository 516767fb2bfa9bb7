"""End to end on loopback: the real Mediator (serve_mediator) and real peers (aio.connect).

Every wait is bounded by ``asyncio.wait_for`` or by the short ``timeout`` given to connect().
Misbehaving peers are scripted with raw sockets and the wire/keys modules, so each fault is
exactly the one the test names.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest

from p2psc import wire
from p2psc.aio.connect import P2PConnection, connect
from p2psc.aio.holepunch import reusable_socket
from p2psc.aio.mediator import MediatorServer, serve_mediator
from p2psc.core.channel import SecureChannel
from p2psc.core.mediator import MediatorConfig, MediatorNote
from p2psc.core.peer import prologue
from p2psc.errors import (
    AdvertiseAborted,
    ConnectError,
    HandshakeTimeout,
    IdentityCheckFailed,
    MediatorUnreachable,
    PeerUnreachable,
)
from p2psc.keys import HPKE, Keypair, PublicKey, nonce_info
from p2psc.noise import HandshakeState

T = TypeVar("T")
FAST = {"timeout": 8.0, "punch_timeout": 3.0, "step_timeout": 3.0}


def aio(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test on a fresh event loop, bounded as a whole (no plugin needed)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(fn(*args, **kwargs), 60.0))

    return run


async def bounded(awaitable: Awaitable[T], seconds: float = 15.0) -> T:
    return await asyncio.wait_for(awaitable, seconds)


class Notes:
    """Collects MediatorNotes; lets a test wait until a key has registered."""

    def __init__(self) -> None:
        self.notes: list[MediatorNote] = []
        self.changed = asyncio.Event()

    def __call__(self, note: MediatorNote) -> None:
        self.notes.append(note)
        self.changed.set()

    async def registered(self, key: PublicKey, count: int = 1) -> None:
        async def wait() -> None:
            while sum(n.kind == "registered" and n.our_key == key.raw for n in self.notes) < count:
                self.changed.clear()
                await self.changed.wait()

        await bounded(wait(), 10.0)


@contextlib.asynccontextmanager
async def mediator(**config: Any) -> AsyncIterator[tuple[MediatorServer, Notes]]:
    notes = Notes()
    cfg = MediatorConfig(**config) if config else None
    async with serve_mediator("127.0.0.1", 0, config=cfg, observer=notes) as server:
        yield server, notes


async def exchange(a: P2PConnection, b: P2PConnection, size: int = 1000) -> None:
    """Both directions at once, with payloads large enough to span several reads."""
    one, two = bytes(range(256)) * (size // 256 + 1), b"\xab" * size
    a.writer.write(one)
    b.writer.write(two)
    assert await bounded(b.reader.readexactly(len(one))) == one
    assert await bounded(a.reader.readexactly(len(two))) == two


async def close(*conns: P2PConnection) -> None:
    for conn in conns:
        conn.close()
    for conn in conns:
        await conn.wait_closed()


@pytest.mark.parametrize("first", ["a", "b"])
@aio
async def test_pair_in_each_registration_order(first: str) -> None:
    a, b = Keypair.generate(), Keypair.generate()
    async with mediator() as (server, notes):
        addr = ("127.0.0.1", server.port)
        early, late = (a, b) if first == "a" else (b, a)
        early_task = asyncio.create_task(connect(early, late.public_key, addr, **FAST))
        await notes.registered(early.public_key)
        late_conn = await bounded(connect(late, early.public_key, addr, **FAST))
        early_conn = await bounded(early_task)
        # the earlier registrant is the Client, the later the Peer
        assert (early_conn.role, late_conn.role) == ("client", "peer")
        assert early_conn.peer_key == late.public_key
        assert late_conn.peer_key == early.public_key
        assert early_conn.session_secret == late_conn.session_secret
        assert len(early_conn.session_secret) == 32
        assert early_conn.local == late_conn.remote and early_conn.remote == late_conn.local
        await exchange(early_conn, late_conn)
        await close(early_conn, late_conn)


@aio
async def test_data_written_right_after_the_handshake_is_not_lost() -> None:
    a, b = Keypair.generate(), Keypair.generate()
    async with mediator() as (server, notes):
        addr = ("127.0.0.1", server.port)
        ta = asyncio.create_task(connect(a, b.public_key, addr, **FAST))
        await notes.registered(a.public_key)
        peer = await bounded(connect(b, a.public_key, addr, **FAST))
        peer.writer.write(b"first bytes from the peer")  # possibly before the Client returns
        client = await bounded(ta)
        assert await bounded(client.reader.readexactly(25)) == b"first bytes from the peer"
        client.writer.write(b"x")
        client.writer.write_eof()
        assert await bounded(peer.reader.read()) == b"x"  # then EOF
        await close(client, peer)


@aio
async def test_three_peers_only_two_want_each_other() -> None:
    a, b, c = Keypair.generate(), Keypair.generate(), Keypair.generate()
    async with mediator() as (server, _notes):
        addr = ("127.0.0.1", server.port)
        lonely = asyncio.create_task(connect(c, a.public_key, addr, timeout=1.5))
        ca, cb = await bounded(
            asyncio.gather(
                connect(a, b.public_key, addr, **FAST), connect(b, a.public_key, addr, **FAST)
            )
        )
        assert {ca.role, cb.role} == {"client", "peer"}
        assert ca.peer_key == b.public_key and cb.peer_key == a.public_key
        await exchange(ca, cb)
        with pytest.raises(HandshakeTimeout, match="did not register"):
            await bounded(lonely)
        await close(ca, cb)


@aio
async def test_many_pairs_at_once() -> None:
    pairs = [(Keypair.generate(), Keypair.generate()) for _ in range(20)]
    async with mediator() as (server, _notes):
        addr = ("127.0.0.1", server.port)
        tasks = []
        for a, b in pairs:
            tasks.append(connect(a, b.public_key, addr, **FAST))
            tasks.append(connect(b, a.public_key, addr, **FAST))
        conns = await bounded(asyncio.gather(*tasks), 30.0)
        for i in range(0, len(conns), 2):
            x, y = conns[i], conns[i + 1]
            assert {x.role, y.role} == {"client", "peer"}
            assert x.session_secret == y.session_secret
            x.writer.write(b"%d" % i)
            assert await bounded(y.reader.readexactly(len(b"%d" % i))) == b"%d" % i
        secrets = {c.session_secret for c in conns}
        assert len(secrets) == len(pairs)  # one distinct secret per pair
        await close(*conns)


class Impostor(Keypair):
    """Claims someone else's public key while holding a different private key."""

    def __init__(self, victim: PublicKey) -> None:
        super().__init__(Keypair.generate().private_key)
        self._victim = victim

    @property  # type: ignore[override]
    def public_key(self) -> PublicKey:
        return self._victim

    @public_key.setter
    def public_key(self, value: PublicKey) -> None:
        pass


@aio
async def test_advertising_a_key_we_do_not_own_fails() -> None:
    a, b = Keypair.generate(), Keypair.generate()
    async with mediator() as (server, _notes):
        addr = ("127.0.0.1", server.port)
        with pytest.raises((IdentityCheckFailed, AdvertiseAborted)):
            await bounded(connect(Impostor(a.public_key), b.public_key, addr, **FAST))


@aio
async def test_mediator_rejects_a_wrong_answer_with_a_reason() -> None:
    """A raw impostor that answers the challenge with a guess gets AdvertiseAbort."""
    a, b = Keypair.generate(), Keypair.generate()
    async with mediator() as (server, _notes):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(wire.Advertise(1, a.public_key.raw, b.public_key.raw).encode())
        decoder = wire.FrameDecoder()
        (challenge,) = decoder.feed(await bounded(reader.read(4096)))
        assert isinstance(challenge, wire.AdvertiseChallenge)
        writer.write(wire.AdvertiseResponse(bytes(32)).encode())
        (abort,) = decoder.feed(await bounded(reader.read(4096)))
        assert isinstance(abort, wire.AdvertiseAbort)
        assert abort.code == wire.Reason.IDENTITY_CHECK_FAILED
        writer.close()


async def raw_register(
    me: Keypair, them: PublicKey, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, wire.FrameDecoder]:
    """Register like a real peer would, by hand, from a socket with SO_REUSEADDR and
    SO_REUSEPORT that is bound explicitly (a port connect() picks implicitly may be shared with
    unrelated connections, and then cannot be bound again); returns the Mediator connection."""
    sock = reusable_socket(socket.AF_INET, "127.0.0.1", 0)
    await bounded(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(wire.Advertise(1, me.public_key.raw, them.raw).encode())
    decoder = wire.FrameDecoder()
    (challenge,) = decoder.feed(await bounded(reader.read(4096)))
    assert isinstance(challenge, wire.AdvertiseChallenge)
    info = nonce_info("AdvertiseChallenge", me.public_key.raw, them.raw)
    nonce = HPKE.open(me, challenge.encrypted_nonce, info)
    writer.write(wire.AdvertiseResponse(nonce).encode())
    await writer.drain()
    return reader, writer, decoder


async def next_message(reader: asyncio.StreamReader, decoder: wire.FrameDecoder) -> wire.Message:
    while True:
        data = await bounded(reader.read(4096))
        assert data, "mediator closed"
        messages = decoder.feed(data)
        if messages:
            return messages[0]


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0): a crash, not a confirmation."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


@aio
async def test_peer_crashing_after_peer_disconnect() -> None:
    """The Peer resets instead of listening: the Mediator aborts the Client (PEER_GONE)."""
    client_key, peer_key = Keypair.generate(), Keypair.generate()
    async with mediator() as (server, notes):
        addr = ("127.0.0.1", server.port)
        client = asyncio.create_task(connect(client_key, peer_key.public_key, addr, **FAST))
        await notes.registered(client_key.public_key)
        reader, writer, decoder = await raw_register(peer_key, client_key.public_key, server.port)
        assert isinstance(await next_message(reader, decoder), wire.PeerDisconnect)
        reset(writer)
        with pytest.raises(AdvertiseAborted) as caught:
            await bounded(client)
        assert caught.value.code == wire.Reason.PEER_GONE


@aio
async def test_peer_vanishing_after_peer_disconnect() -> None:
    """The Peer closes cleanly but never listens: the Client punches, then PeerUnreachable."""
    client_key, peer_key = Keypair.generate(), Keypair.generate()
    async with mediator() as (server, notes):
        addr = ("127.0.0.1", server.port)
        loop = asyncio.get_running_loop()
        started = loop.time()
        client = asyncio.create_task(
            connect(client_key, peer_key.public_key, addr, timeout=6.0, punch_timeout=1.0)
        )
        await notes.registered(client_key.public_key)
        reader, writer, decoder = await raw_register(peer_key, client_key.public_key, server.port)
        assert isinstance(await next_message(reader, decoder), wire.PeerDisconnect)
        writer.close()
        with pytest.raises(PeerUnreachable):
            await bounded(client)
        assert loop.time() - started < 6.0


@aio
async def test_client_that_never_connects() -> None:
    """The Client learns the Peer's address and goes away: the Peer fails at its deadline."""
    client_key, peer_key = Keypair.generate(), Keypair.generate()
    async with mediator() as (server, notes):
        addr = ("127.0.0.1", server.port)
        reader, writer, decoder = await raw_register(client_key, peer_key.public_key, server.port)
        await notes.registered(client_key.public_key)
        loop = asyncio.get_running_loop()
        started = loop.time()
        peer = asyncio.create_task(
            connect(peer_key, client_key.public_key, addr, timeout=6.0, punch_timeout=1.0)
        )
        assert isinstance(await next_message(reader, decoder), wire.PeerIdentification)
        writer.close()
        with pytest.raises(PeerUnreachable, match="Client"):
            await bounded(peer)
        assert loop.time() - started < 6.0


async def _dial_until_listening(
    target: tuple[str, int], local_port: int | None = None
) -> socket.socket:
    """Connect to ``target`` (from ``local_port`` if given), retrying refusals for a while."""
    loop = asyncio.get_running_loop()
    for _ in range(200):
        sock = reusable_socket(socket.AF_INET, "127.0.0.1", local_port or 0)
        try:
            await bounded(loop.sock_connect(sock, target), 2.0)
            return sock
        except OSError:
            sock.close()
            await asyncio.sleep(0.01)
    raise AssertionError(f"nothing ever listened on {target}")


class HandNoise:
    """One side of the direct handshake done by hand (Noise KK, as spec/protocol.md says), so a
    test can act as the real partner, or replay what a real partner sent."""

    def __init__(self, me: Keypair, them: PublicKey, pairing_id: bytes, initiator: bool) -> None:
        client, peer = (me.public_key.raw, them.raw) if initiator else (them.raw, me.public_key.raw)
        make = HandshakeState.initiator if initiator else HandshakeState.responder
        self.handshake = make(
            me.to_private_raw(), them.raw, prologue(pairing_id, client, peer), os.urandom(32)
        )
        self.channel: SecureChannel | None = None

    def message(self) -> bytes:
        return self.handshake.write_message(b"")

    def read(self, message: bytes) -> None:
        self.handshake.read_message(message)

    def split(self) -> SecureChannel:
        self.channel = SecureChannel(*self.handshake.split())
        return self.channel


async def read_plain(reader: asyncio.StreamReader, channel: SecureChannel, size: int) -> bytes:
    """Application bytes from records until ``size`` bytes arrived (bounded)."""
    got = b""
    while len(got) < size:
        raw = await bounded(reader.read(65536))
        assert raw, "EOF before the expected data"
        got += b"".join(item for item in channel.feed(raw) if isinstance(item, bytes))
    return got


@aio
async def test_a_stranger_on_the_peer_port_does_not_break_the_pairing() -> None:
    """Someone connects to the Peer's listener and sends garbage before the real Client."""
    client_key, peer_key = Keypair.generate(), Keypair.generate()
    async with mediator() as (server, notes):
        addr = ("127.0.0.1", server.port)
        reader, writer, decoder = await raw_register(client_key, peer_key.public_key, server.port)
        await notes.registered(client_key.public_key)
        local_port = writer.get_extra_info("sockname")[1]
        peer = asyncio.create_task(connect(peer_key, client_key.public_key, addr, **FAST))
        ident = await next_message(reader, decoder)
        assert isinstance(ident, wire.PeerIdentification)
        writer.close()
        # the stranger
        _, junk = await asyncio.open_connection(*ident.peer.to_tuple())
        junk.write(b"GET / HTTP/1.0\r\n\r\n")
        await junk.drain()
        # the real Client, by hand, from its Mediator-facing port, with the real handshake
        sock = await _dial_until_listening(ident.peer.to_tuple(), local_port)
        r2, w2 = await asyncio.open_connection(sock=sock)
        hand = HandNoise(client_key, peer_key.public_key, ident.pairing_id, initiator=True)
        w2.write(wire.HandshakeInit(hand.message()).encode())
        response = await next_message(r2, wire.FrameDecoder())
        assert isinstance(response, wire.HandshakeResponse)
        hand.read(response.noise)
        channel = hand.split()
        w2.write(channel.seal(b"") + channel.seal(b"early"))  # key confirmation, then data
        conn = await bounded(peer)
        assert conn.role == "peer" and conn.peer_key == client_key.public_key
        assert conn.handshake_hash == hand.handshake.handshake_hash
        assert await bounded(conn.reader.readexactly(5)) == b"early"
        conn.writer.write(b"ok")
        assert await read_plain(r2, channel, 2) == b"ok"
        junk.close()
        w2.close()
        await close(conn)


@aio
async def test_silent_flood_and_replayed_handshakes_do_not_break_the_pairing() -> None:
    """Issue 19's attack on loopback: 50 silent connections to the Peer's listener, plus the
    first messages of an earlier pairing of the same two keys replayed on fresh connections,
    all before the real Client arrives: the real pair still connects."""
    client_key, peer_key = Keypair.generate(), Keypair.generate()
    async with mediator() as (server, notes):
        addr = ("127.0.0.1", server.port)
        # an earlier, complete pairing of the same keys: the attacker recorded its HandshakeInit
        old_reader, old_writer, old_dec = await raw_register(
            client_key, peer_key.public_key, server.port
        )
        await notes.registered(client_key.public_key)
        old_peer = asyncio.create_task(connect(peer_key, client_key.public_key, addr, **FAST))
        old_ident = await next_message(old_reader, old_dec)
        assert isinstance(old_ident, wire.PeerIdentification)
        old_writer.close()
        recorded = HandNoise(client_key, peer_key.public_key, old_ident.pairing_id, True)
        recorded_init = wire.HandshakeInit(recorded.message()).encode()
        old_sock = await _dial_until_listening(old_ident.peer.to_tuple())
        r0, w0 = await asyncio.open_connection(sock=old_sock)
        w0.write(recorded_init)
        old_response = await next_message(r0, wire.FrameDecoder())
        assert isinstance(old_response, wire.HandshakeResponse)
        recorded.read(old_response.noise)
        w0.write(recorded.split().seal(b""))
        await close(await bounded(old_peer))
        w0.close()

        # the new pairing
        reader, writer, decoder = await raw_register(client_key, peer_key.public_key, server.port)
        await notes.registered(client_key.public_key)
        local_port = writer.get_extra_info("sockname")[1]
        peer = asyncio.create_task(connect(peer_key, client_key.public_key, addr, **FAST))
        ident = await next_message(reader, decoder)
        assert isinstance(ident, wire.PeerIdentification)
        assert ident.pairing_id != old_ident.pairing_id  # fresh per pairing
        writer.close()
        target = ident.peer.to_tuple()
        first = await _dial_until_listening(target)
        attackers: list[asyncio.StreamWriter] = []
        try:
            attackers.append((await asyncio.open_connection(sock=first))[1])
            for _ in range(49):  # silent ones
                attackers.append((await bounded(asyncio.open_connection(*target)))[1])
            replayed: list[asyncio.StreamReader] = []
            for _ in range(5):  # the recorded first message, replayed
                r, w = await bounded(asyncio.open_connection(*target))
                w.write(recorded_init)
                attackers.append(w)
                replayed.append(r)
            sock = await _dial_until_listening(target, local_port)
            r2, w2 = await asyncio.open_connection(sock=sock)
            hand = HandNoise(client_key, peer_key.public_key, ident.pairing_id, initiator=True)
            w2.write(wire.HandshakeInit(hand.message()).encode())
            response = await next_message(r2, wire.FrameDecoder())
            assert isinstance(response, wire.HandshakeResponse)
            hand.read(response.noise)
            channel = hand.split()
            w2.write(channel.seal(b""))
            conn = await bounded(peer)
            assert conn.peer_key == client_key.public_key
            conn.writer.write(b"still us")
            assert await read_plain(r2, channel, 8) == b"still us"
            for r in replayed:  # never answered: closed without a HandshakeResponse
                assert await bounded(r.read(100)) == b""
            w2.close()
            await close(conn)
        finally:
            for w in attackers:
                w.close()


@aio
async def test_a_stranger_on_the_client_port_does_not_break_the_pairing() -> None:
    """The Client listens too (spec/protocol.md, the peer side): a stranger that reaches that
    listener gets the HandshakeInit, cannot answer it, and is dropped; the real Peer, arriving
    later on the same listener, wins."""
    client_key, peer_key = Keypair.generate(), Keypair.generate()
    async with mediator() as (server, notes):
        addr = ("127.0.0.1", server.port)
        client = asyncio.create_task(connect(client_key, peer_key.public_key, addr, **FAST))
        await notes.registered(client_key.public_key)
        reader, writer, decoder = await raw_register(peer_key, client_key.public_key, server.port)
        local_port = writer.get_extra_info("sockname")[1]
        disconnect = await next_message(reader, decoder)
        assert isinstance(disconnect, wire.PeerDisconnect)
        writer.close()  # our confirmation: the Client is introduced now (we do not listen)
        target = disconnect.client.to_tuple()
        # the stranger reaches the Client's listener first and answers with nonsense
        stranger = await _dial_until_listening(target)
        r1, w1 = await asyncio.open_connection(sock=stranger)
        init = await next_message(r1, wire.FrameDecoder())
        assert isinstance(init, wire.HandshakeInit)
        w1.write(wire.HandshakeResponse(bytes(48)).encode())
        assert await bounded(r1.read(100)) == b""  # dropped by the Client
        # the real Peer, from its Mediator-facing port, with the real handshake
        sock = await _dial_until_listening(target, local_port)
        r2, w2 = await asyncio.open_connection(sock=sock)
        dec = wire.FrameDecoder()
        init = await next_message(r2, dec)
        assert isinstance(init, wire.HandshakeInit)
        hand = HandNoise(peer_key, client_key.public_key, disconnect.pairing_id, initiator=False)
        hand.read(init.noise)
        w2.write(wire.HandshakeResponse(hand.message()).encode())
        channel = hand.split()
        conn = await bounded(client)
        assert conn.role == "client" and conn.peer_key == peer_key.public_key
        # the Client's key confirmation arrives first, then its data
        conn.writer.write(b"hi")
        assert await read_plain(r2, channel, 2) == b"hi"
        w2.write(channel.seal(b"back"))
        assert await bounded(conn.reader.readexactly(4)) == b"back"
        w1.close()
        w2.close()
        await close(conn)


@aio
async def test_mediator_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(MediatorUnreachable):
        await bounded(
            connect(Keypair.generate(), Keypair.generate().public_key, ("127.0.0.1", port))
        )


@aio
async def test_overall_timeout_is_honoured() -> None:
    async with mediator() as (server, _notes):
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ConnectError):
            await bounded(
                connect(
                    Keypair.generate(),
                    Keypair.generate().public_key,
                    f"127.0.0.1:{server.port}",
                    timeout=0.5,
                )
            )
        assert loop.time() - started < 2.0


def test_pair_on_uvloop() -> None:
    """connect() only uses public asyncio APIs: it runs on uvloop too."""
    uvloop = pytest.importorskip("uvloop")
    a, b = Keypair.generate(), Keypair.generate()

    async def main() -> None:
        async with mediator() as (server, notes):
            addr = ("127.0.0.1", server.port)
            first = asyncio.create_task(connect(a, b.public_key, addr, **FAST))
            await notes.registered(a.public_key)
            second = await bounded(connect(b, a.public_key, addr, **FAST))
            conn = await bounded(first)
            assert (conn.role, second.role) == ("client", "peer")
            await exchange(conn, second, 100_000)
            await close(conn, second)

    uvloop.run(asyncio.wait_for(main(), 60.0))
