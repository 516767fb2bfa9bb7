"""The blocking connect() (p2psc.sync, re-exported as p2psc.connect) against the asyncio Mediator.

The Mediator runs on its own event loop in a background thread; peers run in worker threads.
Every join and every socket read has a timeout.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import pytest

import p2psc
from p2psc import sync
from p2psc.aio.mediator import MediatorServer, serve_mediator
from p2psc.errors import HandshakeTimeout, MediatorUnreachable
from p2psc.keys import Keypair

T = TypeVar("T")
FAST = {"timeout": 8.0, "punch_timeout": 3.0, "step_timeout": 3.0}


@pytest.fixture
def mediator_port() -> Iterator[int]:
    """A real serve_mediator on 127.0.0.1, on an event loop in a daemon thread."""
    loop = asyncio.new_event_loop()
    ready: Future[MediatorServer] = Future()

    async def main() -> None:
        server = await serve_mediator("127.0.0.1", 0)
        ready.set_result(server)

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(main(), loop).result(10)
    server = ready.result(10)
    try:
        yield server.port
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def in_threads(*calls: Callable[[], T]) -> list[T]:
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        return [f.result(timeout=20) for f in futures]


def test_p2psc_connect_is_the_blocking_one() -> None:
    assert p2psc.connect is sync.connect


def test_two_blocking_peers_pair_and_talk(mediator_port: int) -> None:
    a, b = Keypair.generate(), Keypair.generate()
    addr = f"127.0.0.1:{mediator_port}"
    ca, cb = in_threads(
        lambda: p2psc.connect(a, b.public_key, addr, **FAST),
        lambda: p2psc.connect(b, a.public_key.hex(), addr, **FAST),
    )
    with ca, cb:
        assert {ca.role, cb.role} == {"client", "peer"}
        assert ca.peer_key == b.public_key and cb.peer_key == a.public_key
        assert ca.session_secret == cb.session_secret
        assert ca.local == cb.remote and ca.path == cb.path == "direct"
        ca.settimeout(10)
        cb.settimeout(10)
        ca.sendall(b"ping")
        assert _read(cb, 4) == b"ping"
        cb.sendall(b"pong" * 5000)
        assert _read(ca, 20000) == b"pong" * 5000
        # the socket-like surface: recv_into, makefile, fileno, shutdown = authenticated EOF
        buffer = bytearray(5)
        ca.sendall(b"hello")
        assert cb.recv_into(buffer) == 5 and bytes(buffer) == b"hello"
        assert isinstance(ca.fileno(), int) and ca.fileno() >= 0
        with cb.makefile("wb") as out:
            out.write(b"line\n")
        assert ca.makefile("rb").readline() == b"line\n"
        cb.shutdown(socket.SHUT_WR)
        assert ca.recv(10) == b""


def test_blocking_and_async_peers_pair(mediator_port: int) -> None:
    from p2psc.aio.connect import connect as aio_connect

    a, b = Keypair.generate(), Keypair.generate()
    addr = ("127.0.0.1", mediator_port)

    async def async_side() -> bytes:
        conn = await aio_connect(b, a.public_key, addr, **FAST)
        conn.writer.write(b"from async")  # right after the handshake
        data = await asyncio.wait_for(conn.reader.readexactly(9), 10)
        conn.close()
        return data

    def blocking_side() -> bytes:
        with sync.connect(a, b.public_key, addr, **FAST) as conn:
            conn.settimeout(10)
            data = _read(conn, 10)
            conn.sendall(b"from sync")
            return data

    from_async, from_sync = in_threads(blocking_side, lambda: asyncio.run(async_side()))
    assert (from_async, from_sync) == (b"from async", b"from sync")


def test_blocking_mediator_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(MediatorUnreachable):
        sync.connect(Keypair.generate(), Keypair.generate().public_key, ("127.0.0.1", port))


def test_blocking_timeout_when_nobody_comes(mediator_port: int) -> None:
    with pytest.raises(HandshakeTimeout, match="did not register"):
        sync.connect(
            Keypair.generate(),
            Keypair.generate().public_key,
            ("127.0.0.1", mediator_port),
            timeout=0.8,
        )


def _read(conn: sync.SyncConnection, size: int) -> bytes:
    out = b""
    while len(out) < size:
        chunk = conn.recv(size - len(out))
        assert chunk, "closed early"
        out += chunk
    return out
