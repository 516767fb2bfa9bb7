"""p2psc.trio.connect pairs with asyncio peers through either mediator, and its stream is the
secure channel (issue 20).

Each cross-framework test runs every side on its own thread with its own event loop: the
mediator (asyncio's serve_mediator, or p2psc.trio's), and one thread per peer. A thread-safe
observer on the mediator tells when the first peer has registered, so the registration order
(first = Client, Noise initiator) is exact, not a sleep. Data goes both ways through the
channel, in payloads spanning several records, then each side ends with the authenticated close
and sees the other's.

trio is in the ``test`` extra, so CI always runs these; elsewhere they skip when trio is absent.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import pytest

if os.environ.get("CI"):
    import trio  # CI installs the test extra: a missing trio must fail, not skip
else:
    trio = pytest.importorskip("trio")
import trio.testing

import p2psc.trio
from p2psc.aio.connect import connect as aio_connect
from p2psc.aio.mediator import serve_mediator as aio_serve_mediator
from p2psc.core.mediator import MediatorNote
from p2psc.core.peer import LISTENER
from p2psc.errors import (
    ChannelClosed,
    HandshakeTimeout,
    MediatorUnreachable,
    RecordTampered,
    TruncatedStream,
)
from p2psc.keys import Keypair

T = TypeVar("T")
FAST: dict[str, Any] = {"timeout": 8.0, "punch_timeout": 4.0, "step_timeout": 4.0}
SIZE = 200_000
"""Bytes each side sends: several 32 KiB records and several reads."""


class Registrations:
    """A mediator observer any thread can wait on: which keys have registered."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.keys: list[bytes] = []

    def __call__(self, note: MediatorNote) -> None:
        if note.kind == "registered" and note.our_key is not None:
            with self.cond:
                self.keys.append(note.our_key)
                self.cond.notify_all()

    def wait(self, key: Keypair, timeout: float = 10.0) -> None:
        with self.cond:
            ok = self.cond.wait_for(lambda: key.public_key.raw in self.keys, timeout)
        assert ok, "the first peer never registered"


@contextmanager
def aio_mediator(observer: Registrations) -> Iterator[tuple[str, int]]:
    """asyncio's serve_mediator on a loop in a thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(_aio_start(observer), loop).result(10)
    try:
        yield ("127.0.0.1", server.port)
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


async def _aio_start(observer: Registrations) -> Any:
    return await aio_serve_mediator("127.0.0.1", 0, observer=observer)


@contextmanager
def trio_mediator(observer: Registrations | None = None, **options: Any) -> Iterator[Any]:
    """p2psc.trio.serve_mediator in trio.run on a thread; yields the MediatorServer."""
    ready: Future[tuple[Any, Any]] = Future()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: p2psc.trio.serve_mediator(
                    "127.0.0.1", 0, observer=observer, task_status=task_status, **options
                )
            )
            ready.set_result((server, trio.lowlevel.current_trio_token()))

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    server, token = ready.result(10)
    try:
        yield server
    finally:
        trio.from_thread.run_sync(server.close, trio_token=token)
        thread.join(10)
        assert not thread.is_alive(), "the trio mediator did not shut down"


def payload(tag: bytes) -> bytes:
    return (tag * (SIZE // len(tag) + 1))[:SIZE]


def trio_peer(me: Keypair, them: Keypair, addr: tuple[str, int]) -> tuple[str, bytes, bytes]:
    """Pair, send our payload right away, read theirs, close authenticated, see their close."""

    async def main() -> tuple[str, bytes, bytes]:
        with trio.fail_after(30):
            conn = await p2psc.trio.connect(me, them.public_key, addr, **FAST)
            async with conn:
                assert conn.peer_key == them.public_key and conn.path == "direct"
                got = bytearray()

                async def read() -> None:
                    while len(got) < SIZE:
                        chunk = await conn.receive_some()
                        assert chunk, "EOF before the payload"
                        got.extend(chunk)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read)
                    await conn.send_all(payload(me.public_key.raw[:4]))
                await conn.send_eof()
                assert await conn.receive_some() == b""  # their authenticated close
            return conn.role, conn.session_secret, bytes(got)

    return trio.run(main)


def aio_peer(me: Keypair, them: Keypair, addr: tuple[str, int]) -> tuple[str, bytes, bytes]:
    async def main() -> tuple[str, bytes, bytes]:
        async with asyncio.timeout(30):
            conn = await aio_connect(me, them.public_key, addr, **FAST)
            async with conn:
                assert conn.peer_key == them.public_key
                conn.writer.write(payload(me.public_key.raw[:4]))
                got = await conn.reader.readexactly(SIZE)
                conn.writer.write_eof()
                assert await conn.reader.read() == b""
            return conn.role, conn.session_secret, got

    return asyncio.run(main())


PEERS: dict[str, Callable[[Keypair, Keypair, tuple[str, int]], tuple[str, bytes, bytes]]] = {
    "trio": trio_peer,
    "asyncio": aio_peer,
}


@contextmanager
def any_mediator(kind: str, observer: Registrations) -> Iterator[tuple[str, int]]:
    if kind == "asyncio":
        with aio_mediator(observer) as addr:
            yield addr
    else:
        with trio_mediator(observer) as server:
            yield server.address


@pytest.mark.parametrize("mediator", ["asyncio", "trio"])
@pytest.mark.parametrize(
    ("first", "second"), [("trio", "asyncio"), ("asyncio", "trio"), ("trio", "trio")]
)
def test_cross_pairing(mediator: str, first: str, second: str) -> None:
    a, b = Keypair.generate(), Keypair.generate()
    registrations = Registrations()
    with any_mediator(mediator, registrations) as addr, ThreadPoolExecutor(2) as pool:
        early = pool.submit(PEERS[first], a, b, addr)
        registrations.wait(a)
        late = pool.submit(PEERS[second], b, a, addr)
        role_a, secret_a, got_a = early.result(timeout=40)
        role_b, secret_b, got_b = late.result(timeout=40)
    assert (role_a, role_b) == ("client", "peer")
    assert secret_a == secret_b and len(secret_a) == 32
    assert got_a == payload(b.public_key.raw[:4])
    assert got_b == payload(a.public_key.raw[:4])


# --- the stream: one trio-trio pair through the trio mediator, in one trio.run ----------------


async def _pair(server: Any) -> tuple[Any, Any]:
    a, b = Keypair.generate(), Keypair.generate()
    conns: dict[str, Any] = {}

    async def one(name: str, me: Keypair, them: Keypair) -> None:
        conns[name] = await p2psc.trio.connect(me, them.public_key, server.address, **FAST)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, "a", a, b)
        nursery.start_soon(one, "b", b, a)
    return conns["a"], conns["b"]


def with_pair(body: Callable[[Any, Any], Any]) -> None:
    async def main() -> None:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                server = await nursery.start(p2psc.trio.serve_mediator)
                ca, cb = await _pair(server)
                try:
                    assert ca.local == cb.remote and ca.remote == cb.local
                    assert ca.handshake_hash == cb.handshake_hash != b""
                    await body(ca, cb)
                finally:
                    await ca.aclose()
                    await cb.aclose()
                    server.close()

    trio.run(main)


def test_a_cut_stream_is_a_truncation_not_an_end() -> None:
    async def body(ca: Any, cb: Any) -> None:
        await ca.send_all(b"partial")
        assert await cb.receive_some() == b"partial"
        ca.transport.socket.close()  # a FIN without the close record
        with pytest.raises(TruncatedStream):
            await cb.receive_some()
        with pytest.raises(TruncatedStream):  # and every later call again
            await cb.receive_some()

    with_pair(body)


def test_a_tampered_record_is_refused_and_nothing_of_it_delivered() -> None:
    async def body(ca: Any, cb: Any) -> None:
        record = bytearray(ca.channel.seal(b"secret"))
        record[-1] ^= 1
        await ca.transport.send_all(bytes(record))
        with pytest.raises(RecordTampered):
            await cb.receive_some()
        with pytest.raises(ChannelClosed):
            await cb.send_all(b"more")

    with_pair(body)


def test_send_eof_is_the_authenticated_half_close() -> None:
    async def body(ca: Any, cb: Any) -> None:
        await ca.send_all(b"last words")
        await ca.send_eof()
        with pytest.raises(ChannelClosed):
            await ca.send_all(b"after eof")
        got = b""
        while chunk := await cb.receive_some(3):  # max_bytes honoured
            assert len(chunk) <= 3
            got += chunk
        assert got == b"last words"
        await cb.send_all(b"still open")  # the other direction lives on
        assert await ca.receive_some() == b"still open"
        await cb.wait_send_all_might_not_block()

    with_pair(body)


def test_receiving_in_two_tasks_at_once_is_refused() -> None:
    async def body(ca: Any, cb: Any) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cb.receive_some)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await cb.receive_some()
            await ca.send_all(b"x")

    with_pair(body)


def test_mediator_unreachable() -> None:
    async def main() -> None:
        with trio.socket.socket() as probe:
            await probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]  # bound, not listening: refused
            with pytest.raises(MediatorUnreachable):
                await p2psc.trio.connect(
                    Keypair.generate(), Keypair.generate().public_key, ("127.0.0.1", port), **FAST
                )

    trio.run(main)


def test_timeout_when_nobody_comes() -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(p2psc.trio.serve_mediator)
            with pytest.raises(HandshakeTimeout, match="did not register"):
                await p2psc.trio.connect(
                    Keypair.generate(), Keypair.generate().public_key, server.address, timeout=0.8
                )
            server.close()

    trio.run(main)


def test_a_receiver_that_stops_reading_stops_the_sender() -> None:
    """Backpressure through the channel: with the receiver not reading, send_all stops
    returning once the kernel buffers are full; what got through is bounded by them."""

    async def body(ca: Any, cb: Any) -> None:
        chunk, sent = b"\x00" * 65536, 0
        with trio.move_on_after(1.0) as stalled:
            while sent < 256 * 2**20:
                await ca.send_all(chunk)
                sent += len(chunk)
        assert stalled.cancelled_caught, "256 MiB went into a receiver that never reads"
        assert sent < 64 * 2**20
        got = 0
        ca.transport.socket.close()  # (the half-written record ends the test stream)
        with pytest.raises(TruncatedStream):
            while True:
                got += len(await cb.receive_some())
        assert 0 < got <= sent

    with_pair(body)


def test_silent_strangers_on_the_peer_listener_do_not_break_the_pairing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Six silent connections reach the trio Peer's listener during the pairing: the pair still
    connects, and each stranger is closed by the end of the attempt (no descriptor kept)."""
    connect_module = importlib.import_module("p2psc.trio.connect")
    adapters: list[Any] = []
    original = connect_module._Adapter

    class Recording(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            adapters.append(self)

    monkeypatch.setattr(connect_module, "_Adapter", Recording)
    strangers: list[socket.socket] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(p2psc.trio.serve_mediator)
            a, b = Keypair.generate(), Keypair.generate()
            result: list[Any] = []

            async def client() -> None:
                result.append(await p2psc.trio.connect(a, b.public_key, server.address, **FAST))

            async def strangers_at_the_listener() -> None:
                while len(adapters) < 2 or LISTENER not in adapters[1].links:
                    await trio.sleep(0)
                # (the listener takes both families on every address: aim at loopback)
                target = ("127.0.0.1", adapters[1].links[LISTENER].sock.getsockname()[1])
                for _ in range(6):
                    stranger = socket.socket()
                    stranger.setblocking(False)
                    stranger.connect_ex(target)
                    strangers.append(stranger)

            async with trio.open_nursery() as pairing:
                pairing.start_soon(client)
                while server.core.waiting != 1:
                    await trio.sleep(0.005)
                pairing.start_soon(strangers_at_the_listener)
                peer = await p2psc.trio.connect(b, a.public_key, server.address, **FAST)
            assert peer.role == "peer" and peer.peer_key == a.public_key
            await result[0].send_all(b"still us")
            assert await peer.receive_some() == b"still us"
            await peer.aclose()
            await result[0].aclose()
            server.close()

    before = len(os.listdir("/proc/self/fd"))
    try:
        trio.run(main)
        assert len(strangers) == 6
        assert len(os.listdir("/proc/self/fd")) <= before + len(strangers)  # only ours remain
        for stranger in strangers:  # closed by the Peer: EOF or a reset, never silence
            stranger.setblocking(True)
            stranger.settimeout(5)
            with suppress(ConnectionResetError):
                assert stranger.recv(100) == b""
    finally:
        for stranger in strangers:
            stranger.close()


def test_the_trio_package_imports_no_asyncio() -> None:
    """Every module of p2psc.trio imports neither asyncio nor p2psc.aio (python-statemachine,
    a core dependency, loads asyncio itself; this checks our own code, statically)."""
    package = Path(p2psc.trio.__file__).parent
    modules = sorted(package.glob("*.py"))
    assert len(modules) >= 5
    for module in modules:
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert not name.startswith(("asyncio", "p2psc.aio")), f"{module.name}: {name}"


def test_many_trio_pairs_at_once_through_the_trio_mediator() -> None:
    """Twelve pairings at the same time in one trio.run: each pair finds its own partner and
    the mediator ends with no connection left."""

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(p2psc.trio.serve_mediator)
            pairs = [(Keypair.generate(), Keypair.generate()) for _ in range(12)]
            conns: dict[bytes, Any] = {}

            async def one(me: Keypair, them: Keypair) -> None:
                conn = await p2psc.trio.connect(me, them.public_key, server.address, **FAST)
                conns[me.public_key.raw] = conn

            with trio.fail_after(30):
                async with trio.open_nursery() as everyone:
                    for a, b in pairs:
                        everyone.start_soon(one, a, b)
                        everyone.start_soon(one, b, a)
                for a, b in pairs:
                    ca, cb = conns[a.public_key.raw], conns[b.public_key.raw]
                    assert ca.peer_key == b.public_key and cb.peer_key == a.public_key
                    assert {ca.role, cb.role} == {"client", "peer"}
                    await ca.send_all(a.public_key.raw)
                    assert await cb.receive_some() == a.public_key.raw
                    await ca.aclose()
                    await cb.aclose()
                while server.connections:
                    await trio.sleep(0.01)
            server.close()

    trio.run(main)
