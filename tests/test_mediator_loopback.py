"""serve_mediator over real loopback sockets, driven by raw frames and real keys.

Each test runs its own event loop with an overall deadline; every read has its own deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections.abc import Awaitable, Callable

import pytest

from p2psc import wire
from p2psc.aio.mediator import MediatorServer, _Connection, serve_mediator
from p2psc.core.io import Action, SetTimer, TimerFired
from p2psc.core.mediator import MediatorConfig
from p2psc.keys import Keypair, nonce_info, open_nonce

R = wire.Reason
FAST = MediatorConfig(advertise_timeout=2, response_timeout=2, confirm_timeout=2, wait_timeout=30)
KEYS = [Keypair.generate() for _ in range(6)]


def run(coro_fn: Callable[[], Awaitable[None]], deadline: float = 30.0, uv: bool = False) -> None:
    async def main() -> None:
        await asyncio.wait_for(coro_fn(), deadline)

    if uv:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    else:
        asyncio.run(main())


class Raw:
    """A raw mediator client: frames in, messages out, each read with a deadline."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = wire.FrameDecoder()
        self.inbox: list[wire.Message] = []

    @classmethod
    async def open(cls, port: int) -> Raw:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        return cls(reader, writer)

    @property
    def sockname(self) -> wire.Address:
        return wire.Address.from_tuple(self.writer.get_extra_info("sockname"))

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def recv(self, timeout: float = 5.0) -> wire.Message | None:
        """Next message, or None on EOF. Raises TimeoutError when nothing comes in time."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not self.inbox:
            left = end - loop.time()
            if left <= 0:
                raise TimeoutError
            data = await asyncio.wait_for(self.reader.read(65536), left)
            if not data:
                return None
            self.inbox.extend(self.decoder.feed(data))
        return self.inbox.pop(0)

    async def expect_eof(self, timeout: float = 5.0) -> None:
        assert await self.recv(timeout) is None

    async def silent(self, seconds: float) -> bool:
        """True when nothing at all arrives within ``seconds``."""
        try:
            message = await self.recv(seconds)
        except TimeoutError:
            return True
        if message is not None:
            self.inbox.insert(0, message)
        return False

    def close(self) -> None:
        self.writer.close()

    def reset(self) -> None:
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


async def advertise(
    port: int, kp: Keypair, their: Keypair, local: wire.Address | None = None
) -> tuple[Raw, wire.AdvertiseChallenge]:
    raw = await Raw.open(port)
    raw.send(wire.Advertise(1, kp.public_key.raw, their.public_key.raw, local).encode())
    challenge = await raw.recv()
    assert isinstance(challenge, wire.AdvertiseChallenge), challenge
    return raw, challenge


async def register(
    port: int, kp: Keypair, their: Keypair, local: wire.Address | None = None
) -> Raw:
    raw, challenge = await advertise(port, kp, their, local)
    info = nonce_info("AdvertiseChallenge", kp.public_key.raw, their.public_key.raw)
    raw.send(wire.AdvertiseResponse(open_nonce(kp, challenge.encrypted_nonce, info)).encode())
    return raw


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.01)


async def code_then_eof(raw: Raw, timeout: float = 5.0) -> int:
    message = await raw.recv(timeout)
    assert isinstance(message, wire.AdvertiseAbort | wire.AdvertiseRetry), message
    await raw.expect_eof(timeout)
    return int(message.code)


# --- pairing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("uv", [False, True], ids=["asyncio", "uvloop"])
@pytest.mark.parametrize("alice_first", [True, False])
def test_two_peers_each_order(alice_first: bool, uv: bool) -> None:
    alice, bob = KEYS[0], KEYS[1]

    async def body() -> None:
        async with serve_mediator("127.0.0.1", 0, config=FAST) as server:
            first_kp, second_kp = (alice, bob) if alice_first else (bob, alice)
            first_local = wire.Address.parse("192.168.7.7:7777")
            second_local = wire.Address.parse("10.9.9.9:9999")
            client = await register(server.port, first_kp, second_kp, first_local)
            await until(lambda: server.core.waiting == 1)
            assert await client.silent(0.1)
            peer = await register(server.port, second_kp, first_kp, second_local)
            disconnect = await peer.recv()
            assert isinstance(disconnect, wire.PeerDisconnect)
            assert disconnect == wire.PeerDisconnect(
                pairing_id=disconnect.pairing_id,
                peer=peer.sockname,
                client=client.sockname,
                client_local=first_local,
                extensions=disconnect.extensions,
            )
            # the dial schedule (mediator.md 4.2): both round trips were measured
            assert disconnect.extensions[0][0] == wire.ExtensionType.DIAL_DELAY
            assert disconnect.dial_delay is not None
            # the Peer stays open for a while: the Client must hear nothing meanwhile
            assert await client.silent(0.3)
            peer.close()
            identification = await client.recv()
            assert identification == wire.PeerIdentification(
                version=1,
                pairing_id=disconnect.pairing_id,
                peer=peer.sockname,
                peer_local=second_local,
            )
            await client.expect_eof()
            await until(lambda: server.connections == 0)
            assert server.core.sessions == 0 and server.core.waiting == 0

    run(body, uv=uv)


def test_three_peers_only_two_want_each_other() -> None:
    a, b, c = KEYS[0], KEYS[1], KEYS[2]

    async def body() -> None:
        async with serve_mediator("127.0.0.1", 0, config=FAST) as server:
            ra = await register(server.port, a, b)  # a wants b; b does not want a
            rb = await register(server.port, b, c)
            await until(lambda: server.core.waiting == 2)
            rc = await register(server.port, c, b)
            disconnect = await rc.recv()
            assert isinstance(disconnect, wire.PeerDisconnect)
            assert disconnect.client == rb.sockname
            rc.close()
            identification = await rb.recv()
            assert isinstance(identification, wire.PeerIdentification)
            assert identification.peer == rc.sockname
            await rb.expect_eof()
            assert await ra.silent(0.2)
            assert server.core.waiting == 1
            ra.close()
            await until(lambda: server.core.sessions == 0)

    run(body)


def test_many_pairs_at_once() -> None:
    pairs = [(Keypair.generate(), Keypair.generate()) for _ in range(40)]

    async def one_pair(port: int, x: Keypair, y: Keypair, rng: random.Random) -> None:
        async def side(me: Keypair, them: Keypair) -> wire.Message | None:
            await asyncio.sleep(rng.random() * 0.05)
            raw = await register(port, me, them)
            message = await raw.recv(10)
            if isinstance(message, wire.PeerDisconnect):
                raw.close()
                return message
            await raw.expect_eof()
            return message

        got = await asyncio.gather(side(x, y), side(y, x))
        kinds = sorted(type(m).__name__ for m in got)
        assert kinds == ["PeerDisconnect", "PeerIdentification"], got

    async def body() -> None:
        config = MediatorConfig(max_pending=1000, max_pending_per_ip=1000)
        async with serve_mediator("127.0.0.1", 0, config=config) as server:
            rng = random.Random(4)
            await asyncio.gather(*(one_pair(server.port, x, y, rng) for x, y in pairs))
            await until(lambda: server.core.sessions == 0)
            assert server.core.waiting == 0

    run(body, deadline=60)


# --- bad input and faults -----------------------------------------------------------------------

GARBAGE = {
    "http": b"GET / HTTP/1.1\r\n\r\n",
    "oversized": b"P2\x01\x00\xff\xff" + b"\x00" * 100,
    "unknown_type": b"P2\x01\x63\x00\x00",
    "truncated_field": b"P2\x01\x00\x00\x03\x01\x02\x03",
}


async def _to_stage(port: int, stage: str) -> tuple[Raw, Raw | None]:
    """Return (victim, partner-or-None) with the victim in ``stage``."""
    a, b = KEYS[3], KEYS[4]
    if stage == "awaiting_advertise":
        return await Raw.open(port), None
    if stage == "challenged":
        raw, _ = await advertise(port, a, b)
        return raw, None
    client = await register(port, a, b)
    await asyncio.sleep(0.05)
    if stage == "waiting":
        return client, None
    peer = await register(port, b, a)
    assert isinstance(await peer.recv(), wire.PeerDisconnect)
    return (peer, client) if stage == "disconnecting" else (client, peer)


@pytest.mark.parametrize("garbage", sorted(GARBAGE))
@pytest.mark.parametrize(
    "stage", ["awaiting_advertise", "challenged", "waiting", "disconnecting", "confirming"]
)
def test_garbage_at_every_step(stage: str, garbage: str) -> None:
    async def body() -> None:
        async with serve_mediator("127.0.0.1", 0, config=FAST) as server:
            bystander = await register(server.port, KEYS[0], KEYS[5])
            victim, partner = await _to_stage(server.port, stage)
            victim.send(GARBAGE[garbage])
            assert await code_then_eof(victim) == R.MALFORMED
            if partner is not None:
                assert await code_then_eof(partner) == R.PEER_GONE
            await until(lambda: server.core.sessions == 1)
            assert server.core.state_of(1) == "waiting"  # the bystander is untouched
            assert await bystander.silent(0.05)

    run(body)


def test_wrong_nonce() -> None:
    async def body() -> None:
        async with serve_mediator("127.0.0.1", 0, config=FAST) as server:
            raw, _ = await advertise(server.port, KEYS[0], KEYS[1])
            raw.send(wire.AdvertiseResponse(b"\x01" * 32).encode())
            assert await code_then_eof(raw) == R.IDENTITY_CHECK_FAILED
            assert server.core.waiting == 0

    run(body)


def test_advertise_with_a_key_the_sender_does_not_own() -> None:
    owner, impostor, target = KEYS[0], KEYS[2], KEYS[1]

    async def body() -> None:
        async with serve_mediator("127.0.0.1", 0, config=FAST) as server:
            raw, challenge = await advertise(server.port, owner, target)
            info = nonce_info("AdvertiseChallenge", owner.public_key.raw, target.public_key.raw)
            try:  # the impostor tries its own private key: HPKE refuses
                guess = open_nonce(impostor, challenge.encrypted_nonce, info)
            except Exception:
                guess = challenge.encrypted_nonce[:32]
            raw.send(wire.AdvertiseResponse(guess).encode())
            assert await code_then_eof(raw) == R.IDENTITY_CHECK_FAILED

    run(body)


def test_self_pairing_and_version_mismatch() -> None:
    async def body() -> None:
        async with serve_mediator("127.0.0.1", 0, config=FAST) as server:
            raw = await Raw.open(server.port)
            key = KEYS[0].public_key.raw
            raw.send(wire.Advertise(1, key, key).encode())
            assert await code_then_eof(raw) == R.SELF_PAIRING
            raw = await Raw.open(server.port)
            frame = bytearray(wire.Advertise(1, key, KEYS[1].public_key.raw).encode())
            frame[2] = 2
            raw.send(bytes(frame))
            message = await raw.recv()
            assert isinstance(message, wire.AdvertiseAbort)
            assert message.code == R.UNSUPPORTED_VERSION

    run(body)


def test_duplicate_registration() -> None:
    async def body() -> None:
        async with serve_mediator("127.0.0.1", 0, config=FAST) as server:
            old = await register(server.port, KEYS[0], KEYS[1])
            await until(lambda: server.core.waiting == 1)
            new = await register(server.port, KEYS[0], KEYS[1])
            assert await code_then_eof(old) == R.DUPLICATE_REGISTRATION
            assert server.core.waiting == 1
            peer = await register(server.port, KEYS[1], KEYS[0])
            assert isinstance(await peer.recv(), wire.PeerDisconnect)
            peer.close()
            assert isinstance(await new.recv(), wire.PeerIdentification)

    run(body)


@pytest.mark.parametrize("when", ["after_advertise", "after_challenge", "while_waiting"])
def test_vanishing_early_leaves_nothing(when: str) -> None:
    async def body() -> None:
        async with serve_mediator("127.0.0.1", 0, config=FAST) as server:
            if when == "after_advertise":
                raw = await Raw.open(server.port)
                raw.send(wire.Advertise(1, KEYS[0].public_key.raw, KEYS[1].public_key.raw).encode())
            elif when == "after_challenge":
                raw, _ = await advertise(server.port, KEYS[0], KEYS[1])
            else:
                raw = await register(server.port, KEYS[0], KEYS[1])
                await until(lambda: server.core.waiting == 1)
            raw.close()
            await until(lambda: server.core.sessions == 0 and server.connections == 0)
            assert server.core.waiting == 0 and server.core.pending == 0
            # the partner arriving later just waits: nothing stale pairs with it
            late = await register(server.port, KEYS[1], KEYS[0])
            await until(lambda: server.core.waiting == 1)
            assert await late.silent(0.1)

    run(body)


@pytest.mark.parametrize("how", ["peer_reset", "client_vanishes", "peer_never_closes"])
def test_faults_after_peer_disconnect(how: str) -> None:
    async def body() -> None:
        config = MediatorConfig(confirm_timeout=0.5)
        async with serve_mediator("127.0.0.1", 0, config=config) as server:
            client = await register(server.port, KEYS[0], KEYS[1])
            await until(lambda: server.core.waiting == 1)
            peer = await register(server.port, KEYS[1], KEYS[0])
            assert isinstance(await peer.recv(), wire.PeerDisconnect)
            if how == "peer_reset":
                peer.reset()
                assert await code_then_eof(client) == R.PEER_GONE
            elif how == "client_vanishes":
                client.close()
                assert await code_then_eof(peer) == R.PEER_GONE
            else:
                assert await code_then_eof(client, 3) == R.TIMEOUT
                assert await code_then_eof(peer, 3) == R.TIMEOUT
            await until(lambda: server.core.sessions == 0 and server.connections == 0)

    run(body)


def test_trickling_sender_times_out_for_the_whole_step() -> None:
    async def body() -> None:
        config = MediatorConfig(advertise_timeout=0.6)
        async with serve_mediator("127.0.0.1", 0, config=config) as server:
            raw = await Raw.open(server.port)
            frame = wire.Advertise(1, KEYS[0].public_key.raw, KEYS[1].public_key.raw).encode()

            async def trickle() -> None:  # one byte every 50 ms: ~3.7 s for the frame
                for byte in frame[:-1]:
                    raw.send(bytes([byte]))
                    await asyncio.sleep(0.05)

            loop = asyncio.get_running_loop()
            start = loop.time()
            sender = asyncio.create_task(trickle())
            try:
                message = await raw.recv()
                assert isinstance(message, wire.AdvertiseAbort) and message.code == R.TIMEOUT
            finally:
                sender.cancel()
            # Then the end of the connection: EOF, or a reset when one of our trickled bytes
            # reached the mediator's socket after it closed (the kernel answers it with RST;
            # a loaded test process may read the end only after that). The abort itself was
            # already read: queued data is returned before the reset's error.
            with contextlib.suppress(ConnectionResetError):
                await raw.expect_eof()
            assert loop.time() - start < 2.0  # the deadline covers the whole step
            await until(lambda: server.core.sessions == 0)

    run(body)


def test_flood_of_half_open_connections_is_bounded() -> None:
    async def body() -> None:
        config = MediatorConfig(max_pending=20, max_pending_per_ip=20, advertise_timeout=5)
        async with serve_mediator("127.0.0.1", 0, config=config) as server:
            raws = [await Raw.open(server.port) for _ in range(120)]
            await until(lambda: server.core.sessions == 20)
            # the oldest 100 were evicted, one by each newcomer, the newest 20 hold the slots
            busy = 0
            for raw in raws[:100]:
                if await code_then_eof(raw) == R.BUSY:
                    busy += 1
            assert busy == 100
            assert server.core.sessions == 20 and server.core.pending == 20
            await until(lambda: server.connections == 20)
            # a legitimate user gets in at once, even while the half-open ones hold every slot
            raw, _ = await advertise(server.port, KEYS[0], KEYS[1])
            raw.close()
            for raw in raws[100:]:
                raw.close()
            await until(lambda: server.core.sessions == 0)

    run(body)


def test_shutdown_aborts_open_sessions_and_stops_listening() -> None:
    async def body() -> None:
        server: MediatorServer = await serve_mediator("127.0.0.1", 0, config=FAST)
        port = server.port
        raw = await register(port, KEYS[0], KEYS[1])
        await until(lambda: server.core.waiting == 1)
        await server.close()
        assert await code_then_eof(raw) == R.SHUTTING_DOWN
        with pytest.raises(OSError):
            await Raw.open(port)

    run(body)


class _TimerCore:
    """A stand-in core for the adapter's timers: arms what the test says, records TimerFired
    (with the loop time it arrived at); no protocol at all."""

    def __init__(self) -> None:
        self.fired: list[tuple[int, float]] = []
        self.now = 0.0
        self.on_fire: Callable[[int], list[Action]] = lambda conn: []

    def handle(self, event: object, now: float) -> list[Action]:
        if isinstance(event, TimerFired):
            self.fired.append((event.conn, now))
            return self.on_fire(event.conn)
        return []

    def shutdown(self, now: float) -> list[Action]:
        return []


@pytest.mark.parametrize("uv", [False, True])
def test_adapter_timers_fire_after_their_deadline_within_a_tick(uv: bool) -> None:
    """Deadlines share bucketed loop timers: each is due in the first tick (1/64 s) at or
    after it and fires no earlier; re-arming moves it, None cancels it, closing forgets it."""

    async def body() -> None:
        loop = asyncio.get_running_loop()
        core = _TimerCore()
        server = MediatorServer(core, loop)  # type: ignore[arg-type]
        connections = {}
        for conn in range(1, 7):
            connection = _Connection(server)
            connection.conn = conn
            server._connections[conn] = connection
            connections[conn] = connection
        now = loop.time()
        deadlines = {1: now + 0.05, 2: now + 0.05, 3: now + 0.12}
        server._execute([SetTimer(c, d) for c, d in deadlines.items()])
        server._execute([SetTimer(4, now + 0.05), SetTimer(4, now + 0.2)])  # moved later
        deadlines[4] = now + 0.2
        server._execute([SetTimer(5, now + 0.05), SetTimer(5, None)])  # cancelled
        server._execute([SetTimer(6, now + 0.05)])
        server._drop(connections[6])  # closed
        assert connections[1].tick == connections[2].tick  # one bucket, one loop timer
        for conn, deadline in deadlines.items():  # due in the first tick at or after it
            tick = connections[conn].tick
            assert tick is not None and deadline <= tick / 64 < deadline + 1 / 64
        await asyncio.sleep(0.35)
        assert sorted(c for c, _ in core.fired) == [1, 2, 3, 4]
        for conn, at in core.fired:
            assert deadlines[conn] <= at + 0.002  # never early (loop clocks round to ms)
        assert not server._ticks or all(not bucket for bucket in server._ticks.values())

        # A deadline more than a minute away is bucketed by whole seconds.
        server._execute([SetTimer(1, now + 3600.3)])
        tick = connections[1].tick
        assert tick is not None and tick % 64 == 0 and tick / 64 >= now + 3600.3

        # Handling one timer may re-arm another one of the same bucket: it then fires at its
        # new deadline, not with the old bucket.
        core.fired.clear()
        now = loop.time()
        core.on_fire = lambda conn: [SetTimer(3, now + 0.15)] if conn == 2 else []
        server._execute([SetTimer(2, now + 0.05), SetTimer(3, now + 0.05)])
        await asyncio.sleep(0.1)
        assert [c for c, _ in core.fired] == [2]
        await asyncio.sleep(0.2)
        assert [c for c, _ in core.fired] == [2, 3]
        assert core.fired[1][1] >= now + 0.15 - 0.002

    run(body, uv=uv)
