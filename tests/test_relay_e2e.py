"""The relay end to end on loopback: a real Mediator, a real relay, real peers (issue 14).

Every wait is bounded (``asyncio.wait_for``, the peers' own ``timeout``)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from p2psc.aio.connect import P2PConnection, connect
from p2psc.aio.mediator import serve_mediator
from p2psc.aio.relay import RelayServer, serve_relay
from p2psc.core.relay import RelayConfig
from p2psc.errors import RelayLimitReached, RelayUnreachable
from p2psc.keys import Keypair

T = TypeVar("T")
FAST: dict[str, Any] = {"timeout": 10.0, "punch_timeout": 2.0, "step_timeout": 3.0}


def aio(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(fn(*args, **kwargs), 60.0))

    return run


async def bounded(awaitable: Awaitable[T], seconds: float = 20.0) -> T:
    return await asyncio.wait_for(awaitable, seconds)


async def pair(
    mediator_port: int, relay_at: tuple[str, int] | None, **options: Any
) -> tuple[P2PConnection, P2PConnection]:
    a, b = Keypair.generate(), Keypair.generate()
    opts = {**FAST, **options}
    if relay_at is not None:
        opts["relay_address"] = relay_at
    addr = ("127.0.0.1", mediator_port)
    first = asyncio.create_task(connect(a, b.public_key, addr, **opts))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(connect(b, a.public_key, addr, **opts))
    ca, cb = await bounded(asyncio.gather(first, second))
    return ca, cb


@aio
async def test_relay_only_connects_and_relay_sees_only_ciphertext() -> None:
    """relay="only" on both sides: both end "relayed", bytes flow both ways, and no byte the
    relay read or wrote contains the application plaintext (the Noise channel is end to end)."""
    seen: list[bytes] = []
    async with serve_mediator("127.0.0.1", 0) as med, serve_relay("127.0.0.1", 0) as relay:
        relay.handled = lambda _way, _conn, data: seen.append(bytes(data))
        ca, cb = await pair(med.port, relay.address, relay="only")
        assert ca.path == cb.path == "relayed"
        assert ca.session_secret == cb.session_secret
        secret = b"the-plaintext-marker-" * 50
        ca.writer.write(secret)
        await ca.writer.drain()
        got = await bounded(cb.reader.readexactly(len(secret)))
        assert got == secret
        cb.writer.write(b"pong-" + secret)
        assert await bounded(ca.reader.readexactly(5 + len(secret))) == b"pong-" + secret
        ca.close()
        assert await bounded(cb.reader.read()) == b""
        cb.close()
        await ca.wait_closed()
        await cb.wait_closed()
    handled = b"".join(seen)
    assert len(handled) > len(secret)  # the test can fail: the relay did carry the data
    assert b"plaintext-marker" not in handled


@aio
async def test_mediator_with_relay_serves_both_on_one_port() -> None:
    """``mediator --relay``: with no relay address configured, peers use the Mediator's."""
    async with serve_relay(listen=False) as relay, serve_mediator("127.0.0.1", 0) as med:
        med.relay = relay
        ca, cb = await pair(med.port, None, relay="only")
        assert ca.path == cb.path == "relayed"
        ca.writer.write(b"hi")
        assert await bounded(cb.reader.readexactly(2)) == b"hi"
        ca.close()
        cb.close()


@aio
async def test_auto_stays_direct_on_loopback() -> None:
    """relay="auto" where a direct path forms: both end "direct"."""
    async with serve_relay(listen=False) as relay, serve_mediator("127.0.0.1", 0) as med:
        med.relay = relay
        ca, cb = await pair(med.port, None, relay="auto")
        assert ca.path == cb.path == "direct"
        assert relay.core.spliced_total == 0
        ca.close()
        cb.close()


@aio
async def test_relay_only_without_a_relay_fails_typed() -> None:
    """A Mediator without a relay answers the RelayRequest like a Mediator: RelayUnreachable."""
    async with serve_mediator("127.0.0.1", 0) as med:
        with pytest.raises(RelayUnreachable, match="does not relay"):
            await pair(med.port, None, relay="only")


@aio
async def test_byte_limit_ends_the_circuit_with_a_typed_error_on_both_sides() -> None:
    config = RelayConfig(max_bytes=64 * 1024, max_rate=0)
    async with (
        serve_mediator("127.0.0.1", 0) as med,
        serve_relay("127.0.0.1", 0, config=config) as relay,
    ):
        ca, cb = await pair(med.port, relay.address, relay="only")

        async def pump(conn: P2PConnection) -> None:
            for _ in range(64):  # 64 x 4 KiB = 4 x the limit: bounded
                conn.writer.write(b"x" * 4096)
                await conn.writer.drain()
            await asyncio.sleep(5)

        async def drain(conn: P2PConnection) -> None:
            while await conn.reader.read(65536):
                pass

        pumps = [asyncio.create_task(pump(c)) for c in (ca, cb)]
        for conn in (ca, cb):
            with pytest.raises(RelayLimitReached, match="RELAY_LIMIT"):
                await bounded(drain(conn), 10.0)
        for task in pumps:
            task.cancel()
        assert relay.core.circuits == 0


async def _wait_spliced(relay: RelayServer) -> None:
    while relay.core.circuits == 0:
        await asyncio.sleep(0.01)


def test_relay_commands_exist_and_say_what_they_do(capsys: pytest.CaptureFixture[str]) -> None:
    from p2psc.cli import main

    for argv in (["relay", "--help"], ["mediator", "--help"], ["connect", "--help"]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--max-duration" in out and "--relay-max-bytes" in out and "--relay-address" in out


def test_p2psc_connect_prints_the_relayed_path(tmp_path: Any) -> None:
    """Two `p2psc connect --relay only` processes through a `mediator --relay` (in a thread)."""
    import subprocess
    import sys
    import threading

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> Any:
        relay = await serve_relay(listen=False)
        med = await serve_mediator("127.0.0.1", 0)
        med.relay = relay
        return med, relay

    med, relay = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    a, b = Keypair.generate(), Keypair.generate()
    a.save(tmp_path / "a.pem")
    b.save(tmp_path / "b.pem")
    common = ["--mediator", f"127.0.0.1:{med.port}", "--timeout", "20", "--relay", "only"]
    argv = [sys.executable, "-m", "p2psc", "connect"]
    procs = [
        subprocess.Popen(
            [
                *argv,
                "--key",
                str(tmp_path / f"{me}.pem"),
                "--peer",
                other.public_key.hex(),
                *common,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for me, other in (("a", b), ("b", a))
    ]
    outs: list[tuple[bytes, bytes]] = [(b"", b""), (b"", b"")]

    def talk(index: int) -> None:
        outs[index] = procs[index].communicate(f"hi from {index}\n".encode(), timeout=40)

    talkers = [threading.Thread(target=talk, args=(i,)) for i in (0, 1)]
    try:
        for talker in talkers:
            talker.start()
        for talker in talkers:
            talker.join(50)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        asyncio.run_coroutine_threadsafe(med.close(), loop).result(10)
        asyncio.run_coroutine_threadsafe(relay.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    assert [out for out, _ in outs] == [b"hi from 1\n", b"hi from 0\n"]
    for _, err in outs:
        assert "path relayed" in err.decode(), err
