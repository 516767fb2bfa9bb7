"""Cancelling ``p2psc.aio.connect()`` in every state of the peer machines leaks nothing.

Issue 20: a task awaiting ``connect()`` that is cancelled, at any point, must close every socket
the attempt opened, and a partner that already holds a direct connection must see it end
promptly. Each test cancels at one state (reached for real, on loopback, through a real
Mediator), then checks the process's open descriptors and, where there is one, the partner's EOF.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from p2psc.aio.mediator import serve_mediator
from p2psc.core.mediator import MediatorConfig
from p2psc.keys import Keypair

connect_module = importlib.import_module("p2psc.aio.connect")  # the module, not the function
FAST: dict[str, Any] = {"timeout": 8.0, "punch_timeout": 4.0, "step_timeout": 4.0}


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Recorder:
    """Remembers every adapter that ``module`` makes (its ``DriverAdapter``: ``connect()`` by
    default), so a test can see which state its core is in."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module: Any = connect_module) -> None:
        self.adapters: list[Any] = []
        original = module.DriverAdapter
        recorder = self

        class Recording(original):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any) -> None:
                super().__init__(*args)
                recorder.adapters.append(self)

        monkeypatch.setattr(module, "DriverAdapter", Recording)

    async def until(self, index: int, state: str) -> None:
        for _ in range(800):
            if len(self.adapters) > index and self.adapters[index].driver.core.state == state:
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"adapter {index} never reached {state}")


@asynccontextmanager
async def mediator() -> AsyncIterator[tuple[str, int]]:
    async with serve_mediator("127.0.0.1", 0, config=MediatorConfig()) as server:
        yield ("127.0.0.1", server.port)


async def settle_fds(expected: int) -> int:
    """Descriptors close in loop callbacks: give them a few turns (bounded)."""
    for _ in range(100):
        if open_fds() <= expected:
            break
        await asyncio.sleep(0.01)
    return open_fds()


async def cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)


@asynccontextmanager
async def silent_mediator() -> AsyncIterator[tuple[str, int]]:
    """Accepts and reads, never answers: the peer stays in ``advertising``."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()  # returns at the peer's close: the cancel must reach the server
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield ("127.0.0.1", server.sockets[0].getsockname()[1])
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def unanswered_mediator() -> AsyncIterator[tuple[str, int]]:
    """A listener whose accept queue is full and is never accepted from: Linux drops further
    SYNs, so a connect to it stays in ``connecting_mediator`` (on loopback, a listener that
    accepts moves the peer on within microseconds, too fast to cancel there reliably)."""
    import socket

    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        for _ in range(4):  # simultaneous handshakes: several complete before the queue is full
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(address)
            fillers.append(filler)
        await asyncio.sleep(0.05)
        yield ("127.0.0.1", address[1])
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@pytest.mark.parametrize("state", ["connecting_mediator", "advertising", "waiting"])
def test_cancel_during_registration(state: str, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder(monkeypatch)
    servers = {
        "connecting_mediator": unanswered_mediator,
        "advertising": silent_mediator,
        "waiting": mediator,
    }

    async def body() -> None:
        async with servers[state]() as addr:
            before = open_fds()
            me, them = Keypair.generate(), Keypair.generate()
            task = asyncio.create_task(connect_module.connect(me, them.public_key, addr, **FAST))
            await recorder.until(0, state)
            await asyncio.sleep(0.1)  # the state holds: the cancel below lands in it
            assert recorder.adapters[0].driver.core.state == state
            await cancel(task)
            assert await settle_fds(before) <= before

    asyncio.run(body())


@pytest.mark.parametrize("role", ["client", "peer"])
def test_cancel_while_punching(role: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """One side punches towards a partner that never shows up on the direct path; its listener
    and every attempt are closed by the cancel."""
    recorder = Recorder(monkeypatch)

    async def body() -> None:
        from test_e2e import next_message, raw_register  # the raw partner of test_e2e

        async with mediator() as addr:
            before = open_fds()
            me, them = Keypair.generate(), Keypair.generate()
            if role == "client":
                task = asyncio.create_task(
                    connect_module.connect(me, them.public_key, addr, **FAST)
                )
                await recorder.until(0, "waiting")
                reader, writer, decoder = await raw_register(them, me.public_key, addr[1])
                await next_message(reader, decoder)  # PeerDisconnect: we are the Peer
                writer.close()  # confirm, then never connect
            else:
                reader, writer, decoder = await raw_register(them, me.public_key, addr[1])
                await asyncio.sleep(0.2)
                task = asyncio.create_task(
                    connect_module.connect(me, them.public_key, addr, **FAST)
                )
                await next_message(reader, decoder)  # PeerIdentification: the raw one is Client
                writer.close()
            await recorder.until(0, "punching")
            assert recorder.adapters[0].driver.core.role == role
            await cancel(task)
            assert await settle_fds(before) <= before

    asyncio.run(body())


def test_cancel_at_the_moment_the_connection_is_established(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The task is cancelled in the very callback that completes the handshake: the finished
    connection is closed (authenticated close) and the partner sees its end promptly."""
    recorder = Recorder(monkeypatch)

    async def body() -> None:
        async with mediator() as addr:
            a, b = Keypair.generate(), Keypair.generate()
            before = open_fds()
            victim = asyncio.create_task(connect_module.connect(a, b.public_key, addr, **FAST))
            await recorder.until(0, "waiting")
            adapter = recorder.adapters[0]
            original: Callable[..., None] = adapter.execute

            def execute(ops: list[Any]) -> None:
                original(ops)
                if adapter.driver.result is not None and not victim.done():
                    victim.cancel()

            adapter.execute = execute
            partner = await asyncio.wait_for(
                connect_module.connect(b, a.public_key, addr, **FAST), 10
            )
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(victim, 5)
            assert await asyncio.wait_for(partner.reader.read(100), 5) == b""  # clean end
            partner.close()
            await partner.wait_closed()
            assert await settle_fds(before) <= before

    asyncio.run(body())
