"""Cancelling ``connect_legacy()`` in every state of the legacy peer machine leaks nothing.

The legacy client runs on the shared driver and asyncio adapter of version 1, so issue 20's
promise holds for it too: a task awaiting ``connect_legacy()`` that is cancelled, at any point,
closes every socket the attempt opened, and a partner that already holds a direct connection
sees it end promptly. Each test reaches one state of
:class:`p2psc.legacy.machines.LegacyPeerMachine` for real (loopback, the real mediator, and a
scripted version 0 partner that stops answering at the right step), checks that the state holds,
cancels, then checks the process's open descriptors and, where there is one, the partner's EOF.
The Peer's hand-over hold (PeerAcknowledgement sent, the connection not yet returned) is a state
of its own.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from test_cancellation import (
    Recorder,
    cancel,
    open_fds,
    settle_fds,
    silent_mediator,
    unanswered_mediator,
)

from p2psc.aio.holepunch import open_connection_from
from p2psc.aio.mediator import serve_mediator
from p2psc.core.mediator import MediatorNote
from p2psc.legacy import codec
from p2psc.legacy.crypto import RsaKeypair, decrypt_nonce, encrypt_nonce, new_nonce
from p2psc.sockets import listening_socket

client_module = importlib.import_module("p2psc.legacy.client")
FAST: dict[str, Any] = {"step_timeout": 8.0, "pairing_timeout": 8.0, "connect_timeout": 8.0}
GRACE = 8.0  # the Peer's hand-over hold, long enough to cancel in it


@pytest.fixture(scope="module")
def keys() -> tuple[RsaKeypair, RsaKeypair]:
    return RsaKeypair.generate(), RsaKeypair.generate()


class LegacyRecorder(Recorder):
    """test_cancellation's recorder, on ``connect_legacy``'s adapter, waiting for one state
    of the first attempt and checking that it holds."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__(monkeypatch, client_module)

    def state(self) -> str:
        return str(self.adapters[0].driver.core.state)

    async def until_held(self, state: str) -> None:
        await self.until(0, state)
        await asyncio.sleep(0.1)  # the state holds: the cancel lands in it
        assert self.state() == state


class Partner:
    """A scripted version 0 peer: registers at the mediator, then takes one step at a time."""

    def __init__(self, me: RsaKeypair, them: RsaKeypair) -> None:
        self.me, self.them = me, them
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.decoder = codec.LegacyDecoder()
        self.server: asyncio.Server | None = None
        self.accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )

    async def open(self, address: tuple[str, int]) -> None:
        sock = await open_connection_from(address, None, None)
        self.reader, self.writer = await asyncio.open_connection(sock=sock)
        self.decoder = codec.LegacyDecoder()

    def send(self, message: codec.LegacyMessage) -> None:
        assert self.writer is not None
        self.writer.write(codec.encode(message))

    async def receive(self) -> codec.LegacyMessage:
        assert self.reader is not None
        for _ in range(100):
            messages = self.decoder.feed(await asyncio.wait_for(self.reader.read(4096), 10))
            if messages:
                return messages[0]
        raise AssertionError("no message")

    async def register(self, mediator: tuple[str, int]) -> codec.LegacyMessage:
        """Advertise, answer the challenge; the mediator's pairing message (once paired)."""
        await self.open(mediator)
        self.send(codec.Advertise(0, self.me.public_key.to_wire(), self.them.public_key.to_wire()))
        challenge = await self.receive()
        assert isinstance(challenge, codec.AdvertiseChallenge)
        self.send(codec.AdvertiseResponse(decrypt_nonce(self.me, challenge.encrypted_nonce)))
        return await self.receive()

    async def listen(self, port: int) -> None:
        """Close the mediator connection (it has closed its side) and listen on its port."""
        self.close_stream()

        async def accepted(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await self.accepted.put((r, w))

        sock = listening_socket("127.0.0.1", port)
        self.server = await asyncio.start_server(accepted, sock=sock)

    async def take(self) -> None:
        self.reader, self.writer = await asyncio.wait_for(self.accepted.get(), 10)
        self.decoder = codec.LegacyDecoder()

    async def sees_eof(self) -> None:
        assert self.reader is not None
        assert await asyncio.wait_for(self.reader.read(100), 5) == b""

    def close_stream(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def close(self) -> None:
        self.close_stream()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        while not self.accepted.empty():
            self.accepted.get_nowait()[1].close()
        await asyncio.sleep(0)


async def cancelled(task: asyncio.Task[Any], partner: Partner, direct: bool, before: int) -> None:
    """Cancel ``task``; the partner sees the direct connection (if ``direct``) end; then
    nothing of the attempt stays open."""
    await cancel(task)
    if direct:
        await partner.sees_eof()
    await partner.close()
    assert await settle_fds(before) <= before


@asynccontextmanager
async def mediator() -> AsyncIterator[tuple[tuple[str, int], asyncio.Event]]:
    registered = asyncio.Event()

    def observer(note: MediatorNote) -> None:
        if note.kind == "registered":
            registered.set()

    async with serve_mediator("127.0.0.1", 0, observer=observer) as server:
        yield ("127.0.0.1", server.port), registered


@pytest.mark.parametrize("state", ["connecting_mediator", "awaiting_challenge", "awaiting_pairing"])
def test_cancel_during_registration(
    state: str, keys: tuple[RsaKeypair, RsaKeypair], monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = LegacyRecorder(monkeypatch)

    @asynccontextmanager
    async def real() -> AsyncIterator[tuple[str, int]]:
        async with mediator() as (address, _):
            yield address

    servers = {
        "connecting_mediator": unanswered_mediator,
        "awaiting_challenge": silent_mediator,
        "awaiting_pairing": real,
    }

    async def body() -> None:
        async with servers[state]() as address:
            before = open_fds()
            me, them = keys
            task = asyncio.create_task(
                client_module.connect_legacy(me, them.public_key, address, **FAST)
            )
            await recorder.until_held(state)
            await cancel(task)
            assert await settle_fds(before) <= before

    asyncio.run(asyncio.wait_for(body(), 60))


PEER_STATES = ["listening", "awaiting_peer_challenge", "awaiting_peer_response", "held"]


@pytest.mark.parametrize("state", PEER_STATES)
def test_cancel_as_the_peer(
    state: str, keys: tuple[RsaKeypair, RsaKeypair], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The partner registers first (the Client); we are the Peer and listen."""
    recorder = LegacyRecorder(monkeypatch)

    async def body() -> None:
        me, them = keys
        async with mediator() as (address, registered):
            before = open_fds()
            partner = Partner(them, me)
            pairing = asyncio.create_task(partner.register(address))
            await asyncio.wait_for(registered.wait(), 10)
            task = asyncio.create_task(
                client_module.connect_legacy(me, them.public_key, address, ack_grace=GRACE, **FAST)
            )
            identification = await pairing
            assert isinstance(identification, codec.PeerIdentification)
            partner.close_stream()
            await recorder.until_held("listening")
            steps = PEER_STATES.index(state)
            if steps >= 1:
                await partner.open((identification.ip, identification.port))
                await recorder.until_held("awaiting_peer_challenge")
            if steps >= 2:
                ours = new_nonce()
                partner.send(codec.PeerChallenge(encrypt_nonce(me.public_key, ours)))
                reply = await partner.receive()
                assert isinstance(reply, codec.PeerChallengeResponse)
                assert reply.decrypted_nonce == ours
                await recorder.until_held("awaiting_peer_response")
            if steps >= 3:
                partner.send(codec.PeerResponse(decrypt_nonce(them, reply.encrypted_nonce)))
                assert await partner.receive() == codec.PeerAcknowledgement()
                await recorder.until_held("established")
                driver = recorder.adapters[0].driver
                assert driver.result is not None and not driver.ready  # held, not handed out
                assert not task.done()
                # hold a reference, so that only an explicit close (not the garbage collector
                # collecting the dropped connection) can give the partner its EOF
                held = recorder.adapters[0].connection
                assert held is not None
            await cancelled(task, partner, steps >= 1, before)

    asyncio.run(asyncio.wait_for(body(), 60))


CLIENT_STATES = ["connecting_peer", "awaiting_challenge_response", "awaiting_acknowledgement"]


@pytest.mark.parametrize("state", CLIENT_STATES)
def test_cancel_as_the_client(
    state: str, keys: tuple[RsaKeypair, RsaKeypair], monkeypatch: pytest.MonkeyPatch
) -> None:
    """We register first (the Client); the partner is the Peer: it does not listen at all
    (our connects are refused and retried), or stops answering after the connect or after
    PeerChallengeResponse."""
    recorder = LegacyRecorder(monkeypatch)

    async def body() -> None:
        me, them = keys
        async with mediator() as (address, registered):
            before = open_fds()
            task = asyncio.create_task(
                client_module.connect_legacy(me, them.public_key, address, **FAST)
            )
            await asyncio.wait_for(registered.wait(), 10)
            await recorder.until_held("awaiting_pairing")
            partner = Partner(them, me)
            disconnect = await partner.register(address)
            assert isinstance(disconnect, codec.PeerDisconnect)
            steps = CLIENT_STATES.index(state)
            if steps == 0:
                partner.close_stream()
                await recorder.until_held("connecting_peer")
            else:
                await partner.listen(disconnect.port)
                await partner.take()
                challenge = await partner.receive()
                assert isinstance(challenge, codec.PeerChallenge)
                await recorder.until_held("awaiting_challenge_response")
            if steps >= 2:
                theirs = decrypt_nonce(them, challenge.encrypted_nonce)
                partner.send(
                    codec.PeerChallengeResponse(encrypt_nonce(me.public_key, new_nonce()), theirs)
                )
                assert isinstance(await partner.receive(), codec.PeerResponse)
                await recorder.until_held("awaiting_acknowledgement")
            await cancelled(task, partner, steps >= 1, before)

    asyncio.run(asyncio.wait_for(body(), 60))
