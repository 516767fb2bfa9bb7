"""The relay from the blocking and trio adapters (they share PeerDriver and prepare): a pair
across adapters ends "relayed" on both sides through ``mediator --relay`` (issue 14)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest

import p2psc
from p2psc.aio.mediator import serve_mediator
from p2psc.aio.relay import serve_relay
from p2psc.keys import Keypair

trio = pytest.importorskip("trio")
import p2psc.trio  # noqa: E402

OPTIONS: dict[str, Any] = {"timeout": 15.0, "step_timeout": 5.0, "relay": "only"}
DATA = b"relayed-bytes " * 4000


@contextmanager
def mediator_with_relay() -> Iterator[tuple[str, int]]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> Any:
        relay = await serve_relay(listen=False)
        server = await serve_mediator("127.0.0.1", 0)
        server.relay = relay
        return server, relay

    server, relay = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield ("127.0.0.1", server.port)
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        asyncio.run_coroutine_threadsafe(relay.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def sync_peer(me: Keypair, them: Keypair, addr: tuple[str, int]) -> tuple[str, bytes]:
    with p2psc.connect(me, them.public_key, addr, **OPTIONS) as conn:
        conn.settimeout(20)
        sender = threading.Thread(target=conn.sendall, args=(DATA,))
        sender.start()
        got = bytearray()
        while len(got) < len(DATA):
            chunk = conn.recv(65536)
            assert chunk
            got += chunk
        sender.join(20)
        return conn.path, bytes(got)


def trio_peer(me: Keypair, them: Keypair, addr: tuple[str, int]) -> tuple[str, bytes]:
    async def main() -> tuple[str, bytes]:
        with trio.fail_after(30):
            conn = await p2psc.trio.connect(me, them.public_key, addr, **OPTIONS)
            async with conn:
                got = bytearray()

                async def read() -> None:
                    while len(got) < len(DATA):
                        chunk = await conn.receive_some()
                        assert chunk
                        got.extend(chunk)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read)
                    await conn.send_all(DATA)
            return str(conn.path), bytes(got)

    result: tuple[str, bytes] = trio.run(main)
    return result


PEERS: dict[str, Callable[[Keypair, Keypair, tuple[str, int]], tuple[str, bytes]]] = {
    "sync": sync_peer,
    "trio": trio_peer,
}


@pytest.mark.parametrize(("first", "second"), [("sync", "trio"), ("trio", "sync")])
def test_blocking_and_trio_peers_connect_through_the_relay(first: str, second: str) -> None:
    a, b = Keypair.generate(), Keypair.generate()
    with mediator_with_relay() as addr, ThreadPoolExecutor(2) as pool:
        one = pool.submit(PEERS[first], a, b, addr)
        two = pool.submit(PEERS[second], b, a, addr)
        assert one.result(timeout=40) == ("relayed", DATA)
        assert two.result(timeout=40) == ("relayed", DATA)
