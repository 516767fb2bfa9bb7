"""Cancelling ``p2psc.trio.connect()`` in every state of the peer machines leaks nothing.

The trio twin of tests/test_cancellation.py (issue 20). Each test reaches one state for real, on
loopback, then cancels the cancel scope around ``connect()`` and checks the process's open
descriptors (``/proc/self/fd``) and that the other end (the Mediator, a hand-made partner, or
the paired peer) sees the connection end promptly. The Mediator is p2psc.trio's, in the same
``trio.run``, so its connection count tells that it saw the close.
"""

from __future__ import annotations

import importlib
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

if os.environ.get("CI"):
    import trio  # CI installs the test extra: a missing trio must fail, not skip
else:
    trio = pytest.importorskip("trio")

from p2psc import wire
from p2psc.core.mediator import MediatorConfig
from p2psc.keys import HPKE, Keypair, PublicKey, nonce_info
from p2psc.sockets import reusable_socket
from p2psc.trio.mediator import serve_mediator

connect_module = importlib.import_module("p2psc.trio.connect")  # the module, not the function
FAST: dict[str, Any] = {"timeout": 8.0, "punch_timeout": 4.0, "step_timeout": 4.0}


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Recorder:
    """Remembers every connect() adapter so a test can see which state its core is in."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.adapters: list[Any] = []
        original = connect_module._Adapter
        recorder = self

        class Recording(original):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any) -> None:
                super().__init__(*args)
                recorder.adapters.append(self)

        monkeypatch.setattr(connect_module, "_Adapter", Recording)

    async def until(self, index: int, state: str) -> None:
        with trio.fail_after(5):
            while not (
                len(self.adapters) > index and self.adapters[index].driver.core.state == state
            ):
                await trio.sleep(0.002)


async def until_true(check: Callable[[], bool], what: str) -> None:
    """Descriptors and the other side's view settle within a few scheduler turns (bounded)."""
    with trio.move_on_after(5):
        while not check():
            await trio.sleep(0.005)
    assert check(), what


def run(body: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        with trio.fail_after(30):
            await body()

    trio.run(bounded)


class Victim:
    """connect() in a cancel scope of its own; the scope is what the test cancels."""

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.outcome: list[Any] = []
        self.done = trio.Event()

    async def attempt(self, me: Keypair, them: PublicKey, addr: Any) -> None:
        try:
            with self.scope:
                self.outcome.append(await connect_module.connect(me, them, addr, **FAST))
        finally:
            self.done.set()

    async def cancel(self) -> None:
        self.scope.cancel()
        with trio.fail_after(5):
            await self.done.wait()
        assert self.scope.cancelled_caught and self.outcome == []  # nothing was handed out


async def victim(nursery: trio.Nursery, me: Keypair, them: PublicKey, addr: Any) -> Victim:
    started = Victim()
    nursery.start_soon(started.attempt, me, them, addr)
    return started


def test_cancel_while_connecting_to_the_mediator(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Mediator's accept queue is full, so the connect hangs in SYN-SENT: cancel there."""
    recorder = Recorder(monkeypatch)

    async def body() -> None:
        with socket.create_server(("127.0.0.1", 0), backlog=0) as full:
            filler = socket.create_connection(full.getsockname()[:2])  # fills the queue
            with filler:
                before = open_fds()
                async with trio.open_nursery() as nursery:
                    me, them = Keypair.generate(), Keypair.generate()
                    scope = await victim(nursery, me, them.public_key, full.getsockname()[:2])
                    await recorder.until(0, "connecting_mediator")
                    await trio.sleep(0.05)  # the SYN is out and unanswered
                    await scope.cancel()
                await until_true(lambda: open_fds() <= before, "a descriptor leaked")

    run(body)


def test_cancel_while_advertising(monkeypatch: pytest.MonkeyPatch) -> None:
    """A mediator that reads and never answers; it must see our EOF after the cancel."""
    recorder = Recorder(monkeypatch)

    async def body() -> None:
        listener = trio.socket.socket()
        await listener.bind(("127.0.0.1", 0))
        listener.listen()
        seen_eof = trio.Event()

        async def silent() -> None:
            conn, _ = await listener.accept()
            with conn:
                while await conn.recv(4096):
                    pass
            seen_eof.set()

        with listener:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(silent)
                before = open_fds()
                me, them = Keypair.generate(), Keypair.generate()
                scope = await victim(nursery, me, them.public_key, listener.getsockname())
                await recorder.until(0, "advertising")
                await scope.cancel()
                with trio.fail_after(5):
                    await seen_eof.wait()
                await until_true(lambda: open_fds() <= before, "a descriptor leaked")

    run(body)


def test_cancel_while_waiting_for_the_partner(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder(monkeypatch)

    async def body() -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: serve_mediator(config=MediatorConfig(), task_status=task_status)
            )
            before = open_fds()
            me, them = Keypair.generate(), Keypair.generate()
            scope = await victim(nursery, me, them.public_key, server.address)
            await recorder.until(0, "waiting")
            await until_true(lambda: server.core.waiting == 1, "never registered")
            await scope.cancel()
            await until_true(lambda: server.connections == 0, "the mediator kept the session")
            assert server.core.waiting == 0
            await until_true(lambda: open_fds() <= before, "a descriptor leaked")
            server.close()

    run(body)


async def raw_register(me: Keypair, them: PublicKey, addr: tuple[str, int]) -> Any:
    """Register by hand (the victim's partner on the Mediator side, never on the direct path);
    returns the Mediator connection and its frame decoder."""
    sock = trio.socket.from_stdlib_socket(reusable_socket(socket.AF_INET, "127.0.0.1", 0))
    await sock.connect(addr)
    await sock.send(wire.Advertise(1, me.public_key.raw, them.raw).encode())
    decoder = wire.FrameDecoder()
    (challenge,) = decoder.feed(await sock.recv(4096))
    info = nonce_info("AdvertiseChallenge", me.public_key.raw, them.raw)
    await sock.send(wire.AdvertiseResponse(HPKE.open(me, challenge.encrypted_nonce, info)).encode())
    return sock, decoder


async def next_message(sock: Any, decoder: wire.FrameDecoder) -> wire.Message:
    while True:
        data = await sock.recv(4096)
        assert data, "mediator closed"
        if messages := decoder.feed(data):
            return messages[0]


@pytest.mark.parametrize("role", ["client", "peer"])
def test_cancel_while_punching(role: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The partner registers by hand and never shows up on the direct path: the victim punches
    (and, as the Peer, listens); the cancel closes its listener and every attempt."""
    recorder = Recorder(monkeypatch)

    async def body() -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_mediator)
            before = open_fds()
            me, them = Keypair.generate(), Keypair.generate()
            if role == "client":
                scope = await victim(nursery, me, them.public_key, server.address)
                await recorder.until(0, "waiting")
                sock, decoder = await raw_register(them, me.public_key, server.address)
                assert isinstance(await next_message(sock, decoder), wire.PeerDisconnect)
            else:
                sock, decoder = await raw_register(them, me.public_key, server.address)
                await until_true(lambda: server.core.waiting == 1, "raw partner not waiting")
                scope = await victim(nursery, me, them.public_key, server.address)
                assert isinstance(await next_message(sock, decoder), wire.PeerIdentification)
            sock.close()  # as the Peer: the confirmation; as the Client: gone after the news
            await recorder.until(0, "punching")
            assert recorder.adapters[0].driver.core.role == role
            await scope.cancel()
            await until_true(lambda: open_fds() <= before, "a descriptor leaked")
            server.close()

    run(body)


def test_cancel_at_the_moment_the_connection_is_established(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The scope is cancelled in the very step that completes the handshake: the finished
    connection is closed with the authenticated close record, and the partner reads a clean
    end of stream (not a truncation) promptly."""
    recorder = Recorder(monkeypatch)

    async def body() -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_mediator)
            a, b = Keypair.generate(), Keypair.generate()
            before = open_fds()
            scope = await victim(nursery, a, b.public_key, server.address)
            await recorder.until(0, "waiting")
            adapter = recorder.adapters[0]
            original = adapter.step

            def step(*args: Any) -> None:
                original(*args)
                if adapter.driver.result is not None:
                    scope.scope.cancel()

            adapter.step = step
            with trio.fail_after(10):
                partner = await connect_module.connect(b, a.public_key, server.address, **FAST)
            await scope.cancel()
            assert partner.role == "peer"
            with trio.fail_after(5):
                assert await partner.receive_some() == b""  # clean, authenticated end
            await partner.aclose()
            await until_true(lambda: open_fds() <= before, "a descriptor leaked")
            server.close()

    run(body)
