"""INSECURE LEGACY asyncio client over real loopback sockets, against a scripted mediator.

The scripted mediator below does what the issue says a version 0 mediator must: one message
per write, close the Peer's connection right after PeerDisconnect, and send PeerIdentification
only after a short delay. (Our real mediator is tested in test_legacy_mediator.py.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from p2psc.errors import AdvertiseAborted, HandshakeTimeout, MediatorUnreachable
from p2psc.legacy import codec
from p2psc.legacy.client import connect_legacy
from p2psc.legacy.crypto import RsaKeypair, RsaPublicKey, encrypt_nonce, new_nonce


@pytest.fixture(scope="module")
def keys() -> list[RsaKeypair]:
    return [RsaKeypair.generate() for _ in range(2)]


class ScriptedMediator:
    """Pairs the first two advertisers; the second is the Peer."""

    def __init__(self, abort: str | None = None) -> None:
        self.abort = abort
        self.waiting: list[tuple[asyncio.StreamWriter, tuple[str, int]]] = []

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = codec.LegacyDecoder()

        async def receive() -> codec.LegacyMessage:
            for _ in range(100):
                data = await asyncio.wait_for(reader.read(4096), 5)
                assert data
                messages = decoder.feed(data)
                if messages:
                    return messages[0]
            raise AssertionError("no message")

        advertise = await receive()
        assert isinstance(advertise, codec.Advertise)
        if self.abort is not None:
            writer.write(codec.encode(codec.AdvertiseAbort(self.abort)))
            writer.close()
            return
        key = RsaPublicKey.from_wire(advertise.our_key)
        nonce = new_nonce()
        writer.write(codec.encode(codec.AdvertiseChallenge(encrypt_nonce(key, nonce))))
        response = await receive()
        assert response == codec.AdvertiseResponse(nonce)
        observed = writer.get_extra_info("peername")
        if not self.waiting:
            self.waiting.append((writer, observed))
            await reader.read()  # keep the Client's connection until we close it
            return
        client_writer, _ = self.waiting.pop()
        writer.write(codec.encode(codec.PeerDisconnect(observed[1])))
        writer.close()
        await asyncio.sleep(0.1)
        client_writer.write(codec.encode(codec.PeerIdentification(0, observed[0], observed[1])))
        client_writer.close()


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    """No pytest-asyncio here: each async test runs in its own loop, with a deadline."""
    asyncio.run(asyncio.wait_for(coroutine, 30))


def test_two_legacy_clients_pair_and_talk(keys: list[RsaKeypair]) -> None:
    run(two_legacy_clients_pair_and_talk(keys))


async def two_legacy_clients_pair_and_talk(keys: list[RsaKeypair]) -> None:
    server = await asyncio.start_server(ScriptedMediator().session, "127.0.0.1", 0)
    address = ("127.0.0.1", int(server.sockets[0].getsockname()[1]))
    first = asyncio.create_task(connect_legacy(keys[0], keys[1].public_key, address))
    await asyncio.sleep(0.2)  # so that keys[0] is the Client
    second = asyncio.create_task(connect_legacy(keys[1], keys[0].public_key, address))
    a, b = await asyncio.wait_for(asyncio.gather(first, second), 20)
    assert (a.role, b.role) == ("client", "peer")
    assert a.peer_key == keys[1].public_key and b.peer_key == keys[0].public_key
    a.writer.write(b"ping")
    assert await asyncio.wait_for(b.reader.readexactly(4), 5) == b"ping"
    b.writer.write(b"pong")
    assert await asyncio.wait_for(a.reader.readexactly(4), 5) == b"pong"
    a.close()
    assert await asyncio.wait_for(b.reader.read(), 5) == b""
    b.close()
    await a.wait_closed()
    await b.wait_closed()
    server.close()


def test_abort_is_reported(keys: list[RsaKeypair]) -> None:
    run(abort_is_reported(keys))


async def abort_is_reported(keys: list[RsaKeypair]) -> None:
    server = await asyncio.start_server(ScriptedMediator(abort="go away").session, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(AdvertiseAborted, match="go away"):
            await connect_legacy(keys[0], keys[1].public_key, ("127.0.0.1", port), step_timeout=5)
    finally:
        server.close()


def test_unreachable_mediator(keys: list[RsaKeypair]) -> None:
    run(unreachable_mediator(keys))


async def unreachable_mediator(keys: list[RsaKeypair]) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(MediatorUnreachable):
        await connect_legacy(keys[0], keys[1].public_key, ("127.0.0.1", port), step_timeout=5)


def test_pairing_timeout_names_the_pairing_timeout(keys: list[RsaKeypair]) -> None:
    """Issue 12 item 5: ``--timeout 3`` failed after 3.6 s saying "within 73 s" (the outer
    bound's text replaced the core's own HandshakeTimeout, itself a TimeoutError)."""

    async def body() -> None:
        server = await asyncio.start_server(ScriptedMediator().session, "127.0.0.1", 0)
        async with server:
            address = server.sockets[0].getsockname()[:2]
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(HandshakeTimeout) as caught:
                await connect_legacy(keys[0], keys[1].public_key, address, pairing_timeout=0.5)
            assert loop.time() - start < 5
        assert "did not pair us within 0.5 s" in caught.value.reason, caught.value.reason

    asyncio.run(asyncio.wait_for(body(), 20))
