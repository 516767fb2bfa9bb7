"""INSECURE LEGACY clients (protocol version 0) served by our mediator, on the v1 port.

Sans-IO checks of :class:`LegacyAwareMediatorCore` (translation, timing rules, snapshots) and
loopback checks through the asyncio mediator: legacy pairs with legacy, bad legacy input gets a
clean close, v1 still works on the same port and is never paired with legacy.
"""

from __future__ import annotations

import asyncio
import json
import logging
import select
import subprocess
import sys
from collections.abc import Coroutine
from typing import Any

import pytest

from p2psc import wire
from p2psc.aio.mediator import serve_mediator
from p2psc.core.io import Action, Close, Closed, Opened, Received, Send, SetTimer, TimerFired
from p2psc.core.mediator import MediatorCore, MediatorNote
from p2psc.errors import P2pscError
from p2psc.keys import Keypair, nonce_info, open_nonce
from p2psc.legacy import codec
from p2psc.legacy.client import connect_legacy
from p2psc.legacy.crypto import RsaKeypair, decrypt_nonce
from p2psc.legacy.mediator import LegacyAwareMediatorCore, LegacyNote, legacy_registry_key


@pytest.fixture(scope="module")
def rsa_keys() -> list[RsaKeypair]:
    return [RsaKeypair.generate() for _ in range(3)]


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    """No pytest-asyncio: each async test runs in its own loop, with a deadline."""
    asyncio.run(asyncio.wait_for(coroutine, 30))


# --- sans-IO ----------------------------------------------------------------------------------


def legacy_sends(actions: list[Action], conn: int) -> list[codec.LegacyMessage]:
    return [codec.decode(a.data) for a in actions if isinstance(a, Send) and a.conn == conn]


def check_one_message_per_step(actions: list[Action]) -> None:
    """The legacy timing rule: never two messages back to back to one connection."""
    conns = [a.conn for a in actions if isinstance(a, Send)]
    assert len(conns) == len(set(conns)), actions


def register(
    core: LegacyAwareMediatorCore, conn: int, me: RsaKeypair, them: RsaKeypair, now: float
) -> list[Action]:
    core.handle(Opened(conn, ("127.0.0.1", 40000 + conn)), now)
    advertise = codec.Advertise(0, me.public_key.to_wire(), them.public_key.to_wire())
    actions = core.handle(Received(conn, codec.encode(advertise)), now)
    check_one_message_per_step(actions)
    [challenge] = legacy_sends(actions, conn)
    assert isinstance(challenge, codec.AdvertiseChallenge)
    nonce = decrypt_nonce(me, challenge.encrypted_nonce)
    actions = core.handle(Received(conn, codec.encode(codec.AdvertiseResponse(nonce))), now)
    check_one_message_per_step(actions)
    return actions


def roundtrip(core: LegacyAwareMediatorCore) -> None:
    snap = core.snapshot()
    hash(snap)
    assert LegacyAwareMediatorCore.from_snapshot(snap).snapshot() == snap


def test_pairing_timing_rules(rsa_keys: list[RsaKeypair]) -> None:
    core = LegacyAwareMediatorCore(introduce_delay=0.5)
    a, b = rsa_keys[0], rsa_keys[1]
    register(core, 1, a, b, 10.0)
    assert core.state_of(1) == "waiting" and core.is_legacy(1)
    roundtrip(core)
    actions = register(core, 2, b, a, 11.0)
    # the Peer: PeerDisconnect {port}, then its connection is closed at once
    sends = [x for x in actions if isinstance(x, (Send, Close)) and x.conn == 2]
    assert len(sends) == 2 and isinstance(sends[1], Close)
    # ... in the same segment as the message (the C++ Peer rebinds the port at once)
    assert sends[1].fin_with_send and actions.index(sends[1]) == actions.index(sends[0]) + 1
    assert legacy_sends(actions, 2) == [codec.PeerDisconnect(40002)]
    # the Client: nothing yet, a short timer instead of the confirmation deadline
    assert legacy_sends(actions, 1) == []
    assert SetTimer(1, 11.5) in actions
    assert not any(isinstance(x, SetTimer) and x.conn == 1 and x.deadline != 11.5 for x in actions)
    roundtrip(core)
    # an earlier timer handle (adapters re-arm lazily) fires first: nothing is sent yet
    assert core.handle(TimerFired(1), 11.2) == [SetTimer(1, 11.5)]
    # the adapter never reports the close of a connection the core closed; the timer fires
    actions = core.handle(TimerFired(1), 11.5)
    check_one_message_per_step(actions)
    assert legacy_sends(actions, 1) == [codec.PeerIdentification(0, "127.0.0.1", 40002)]
    assert Close(1, "partner_confirmed: PeerIdentification sent") in actions
    assert not any(isinstance(x, Send) and x.conn == 2 for x in actions)
    assert core.sessions == 0 and core.waiting == 0
    assert core.snapshot() == LegacyAwareMediatorCore().snapshot()


def test_client_leaving_during_the_delay(rsa_keys: list[RsaKeypair]) -> None:
    core = LegacyAwareMediatorCore()
    register(core, 1, rsa_keys[0], rsa_keys[1], 0.0)
    register(core, 2, rsa_keys[1], rsa_keys[0], 0.0)
    actions = core.handle(Closed(1, None), 0.1)
    assert not any(isinstance(x, Send) for x in actions)
    assert core.handle(TimerFired(1), 0.3) == []
    assert core.sessions == 0


def test_wrong_nonce_is_refused_in_json(rsa_keys: list[RsaKeypair]) -> None:
    core = LegacyAwareMediatorCore()
    core.handle(Opened(1, ("127.0.0.1", 1)), 0.0)
    a, b = rsa_keys[0], rsa_keys[1]
    advertise = codec.Advertise(0, a.public_key.to_wire(), b.public_key.to_wire())
    core.handle(Received(1, codec.encode(advertise)), 0.0)
    actions = core.handle(Received(1, codec.encode(codec.AdvertiseResponse("12"))), 0.0)
    [abort] = legacy_sends(actions, 1)
    assert isinstance(abort, codec.AdvertiseAbort) and "nonce" in abort.reason
    assert any(isinstance(x, Close) and x.conn == 1 for x in actions)
    assert core.sessions == 0


@pytest.mark.parametrize("answer", ["x1", "9" * 100, ""])
def test_non_numeric_answers_fail_the_identity_check(
    rsa_keys: list[RsaKeypair], answer: str
) -> None:
    core = LegacyAwareMediatorCore()
    core.handle(Opened(1, ("127.0.0.1", 1)), 0.0)
    advertise = codec.Advertise(
        0, rsa_keys[0].public_key.to_wire(), rsa_keys[1].public_key.to_wire()
    )
    core.handle(Received(1, codec.encode(advertise)), 0.0)
    actions = core.handle(Received(1, codec.encode(codec.AdvertiseResponse(answer))), 0.0)
    assert isinstance(legacy_sends(actions, 1)[0], codec.AdvertiseAbort)
    assert any(isinstance(x, Close) and x.conn == 1 for x in actions)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"type":0,"payload":{"version":0', None),  # incomplete: nothing yet
        (b'{"type":0,"payload":[]}', "payload"),
        (b'{"type":0 "payload":{}}', "malformed"),
        (b"{" + b" " * 5000, "exceeds"),
        (
            codec.encode(codec.AdvertiseResponse("1")) + codec.encode(codec.AdvertiseResponse("1")),
            "followed",
        ),
        (codec.encode(codec.AdvertiseResponse("1")), "not allowed"),
        (codec.encode(codec.Advertise(0, "not a key", "x")), "PEM"),
    ],
)
def test_bad_legacy_input_is_aborted_and_closed(data: bytes, reason: str | None) -> None:
    core = LegacyAwareMediatorCore()
    core.handle(Opened(7, ("127.0.0.1", 1)), 0.0)
    actions = core.handle(Received(7, data), 0.0)
    if reason is None:
        assert actions == [] and core.state_of(7) == "awaiting_advertise"
        return
    check_one_message_per_step(actions)
    [abort] = legacy_sends(actions, 7)
    assert isinstance(abort, codec.AdvertiseAbort) and reason in abort.reason
    assert any(isinstance(x, Close) and x.conn == 7 for x in actions)
    assert core.sessions == 0 and not core.is_legacy(7)


def test_unsupported_legacy_version(rsa_keys: list[RsaKeypair]) -> None:
    core = LegacyAwareMediatorCore()
    core.handle(Opened(1, ("127.0.0.1", 1)), 0.0)
    pem = rsa_keys[0].public_key.to_wire()
    actions = core.handle(Received(1, codec.encode(codec.Advertise(3, pem, pem))), 0.0)
    [abort] = legacy_sends(actions, 1)
    assert isinstance(abort, codec.AdvertiseAbort) and "version" in abort.reason


def test_v1_bytes_are_untouched() -> None:
    """A v1 connection is framed and answered exactly as by the plain MediatorCore."""
    plain, aware = MediatorCore(nonce_source=bytes), LegacyAwareMediatorCore(nonce_source=bytes)
    frame = wire.Advertise(1, bytes(range(32)), bytes(range(1, 33))).encode()
    for core in (plain, aware):
        core.handle(Opened(1, ("127.0.0.1", 5)), 0.0)
    for data in (frame[:3], frame[3:], b"P2\x07garbage"):
        a = plain.handle(Received(1, data), 0.0)
        b = aware.handle(Received(1, data), 0.0)
        assert [type(x) for x in a] == [type(x) for x in b]
        for x, y in zip(a, b, strict=True):
            if isinstance(x, Send):  # the challenge is randomised by HPKE; compare framing
                assert isinstance(y, Send) and x.data[:6] == y.data[:6]
            else:
                assert x == y
    assert not aware.is_legacy(1)


def test_legacy_keys_never_collide_with_v1_keys(rsa_keys: list[RsaKeypair]) -> None:
    """Structural separation: a legacy registration is keyed by a domain-separated hash."""
    key = rsa_keys[0].public_key
    assert legacy_registry_key(key) != key.der[:32]
    assert len({legacy_registry_key(k.public_key) for k in rsa_keys}) == len(rsa_keys)


# --- loopback, through the asyncio mediator ----------------------------------------------------


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    data = b""
    for _ in range(100):
        chunk = await asyncio.wait_for(reader.read(4096), 5)
        if not chunk:
            return data
        data += chunk
    raise AssertionError("mediator did not close")


def test_legacy_pairs_with_legacy_through_our_mediator(rsa_keys: list[RsaKeypair]) -> None:
    async def body() -> None:
        a, b = rsa_keys[0], rsa_keys[1]
        async with serve_mediator(core=LegacyAwareMediatorCore()) as server:
            first = asyncio.create_task(connect_legacy(a, b.public_key, server.address))
            await asyncio.sleep(0.2)
            second = asyncio.create_task(connect_legacy(b, a.public_key, server.address))
            x, y = await asyncio.wait_for(asyncio.gather(first, second), 15)
            assert (x.role, y.role) == ("client", "peer")
            x.writer.write(b"from client")
            assert await asyncio.wait_for(y.reader.readexactly(11), 5) == b"from client"
            y.writer.write(b"from peer")
            assert await asyncio.wait_for(x.reader.readexactly(9), 5) == b"from peer"
            async with x:
                pass  # closes x; y sees EOF
            assert await asyncio.wait_for(y.reader.read(), 5) == b""
            async with y:
                pass
            assert x.writer.is_closing() and y.writer.is_closing()

    run(body())


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{]", "malformed"),
        (b'{"type": 0, "payload": {"version": 0, "our_key": "' + b"A" * 5000, "exceeds"),
        (codec.encode(codec.AdvertiseRetry("x")) * 2, "followed"),
        (b' \n{"type":"zero","payload":{}}', "integer"),
    ],
)
def test_bad_legacy_bytes_get_a_clean_close(payload: bytes, reason: str) -> None:
    async def body() -> None:
        async with serve_mediator(core=LegacyAwareMediatorCore()) as server:
            reader, writer = await asyncio.open_connection(*server.address)
            writer.write(payload)
            data = await read_until_closed(reader)
            writer.close()
            reply = json.loads(data)
            assert reply["type"] == 3 and reason in reply["payload"]["reason"]
            assert server.core.sessions == 0

    run(body())


async def v1_register(
    address: tuple[str, int], me: Keypair, them: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, wire.FrameDecoder]:
    reader, writer = await asyncio.open_connection(*address)
    our = me.public_key.raw
    writer.write(wire.Advertise(1, our, them).encode())
    decoder = wire.FrameDecoder()
    challenge = await v1_next(reader, decoder)
    assert isinstance(challenge, wire.AdvertiseChallenge)
    nonce = open_nonce(me, challenge.encrypted_nonce, nonce_info("AdvertiseChallenge", our, them))
    writer.write(wire.AdvertiseResponse(nonce).encode())
    return reader, writer, decoder


async def v1_next(reader: asyncio.StreamReader, decoder: wire.FrameDecoder) -> wire.Message:
    for _ in range(50):
        data = await asyncio.wait_for(reader.read(4096), 5)
        assert data, "closed"
        messages = decoder.feed(data)
        if messages:
            return messages[0]
    raise AssertionError("no frame")


def test_v1_and_legacy_share_the_port_but_never_pair(rsa_keys: list[RsaKeypair]) -> None:
    async def body() -> None:
        core = LegacyAwareMediatorCore()
        async with serve_mediator(core=core) as server:
            # a legacy client waits for an RSA key; a v1 client asks for its registry key
            lone = asyncio.create_task(
                connect_legacy(rsa_keys[2], rsa_keys[0].public_key, server.address)
            )
            v1 = Keypair.generate()
            pseudo = legacy_registry_key(rsa_keys[2].public_key)
            r0, w0, _ = await v1_register(server.address, v1, pseudo)
            # and a real v1 pair completes meanwhile
            p, q = Keypair.generate(), Keypair.generate()
            r1, w1, d1 = await v1_register(server.address, p, q.public_key.raw)
            await asyncio.sleep(0.1)
            r2, w2, d2 = await v1_register(server.address, q, p.public_key.raw)
            disconnect = await v1_next(r2, d2)
            assert isinstance(disconnect, wire.PeerDisconnect)
            w2.close()
            identification = await v1_next(r1, d1)
            assert isinstance(identification, wire.PeerIdentification)
            w1.close()
            # the cross-protocol pair is still waiting, unpaired
            await asyncio.sleep(0.3)
            assert not lone.done()
            assert sorted(s for s in map(core.state_of, range(1, 10)) if s) == [
                "waiting",
                "waiting",
            ]
            lone.cancel()
            w0.close()
            del r0

    run(body())


def test_plain_core_closes_legacy_clients(rsa_keys: list[RsaKeypair]) -> None:
    """What --no-legacy does: version 0 bytes fail version 1 framing and are closed."""

    async def body() -> None:
        async with serve_mediator(core=MediatorCore()) as server:
            with pytest.raises(P2pscError):
                await connect_legacy(
                    rsa_keys[0], rsa_keys[1].public_key, server.address, step_timeout=5
                )

    run(body())


def test_serve_mediator_serves_legacy_by_default_and_not_with_legacy_false() -> None:
    async def probe(legacy: bool) -> bytes:
        async with serve_mediator(legacy=legacy) as server:
            reader, writer = await asyncio.open_connection(*server.address)
            writer.write(b"{]")
            data = await read_until_closed(reader)
            writer.close()
            return data

    async def body() -> None:
        assert json.loads(await probe(True))["type"] == 3  # a legacy AdvertiseAbort
        frame = await probe(False)
        assert frame.startswith(wire.MAGIC)  # a v1 AdvertiseAbort: not JSON
        assert isinstance(wire.decode(frame), wire.AdvertiseAbort)

    run(body())


@pytest.mark.parametrize("flags", [[], ["--no-legacy"]])
def test_cli_no_legacy_flag(flags: list[str]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2psc", "mediator", "--port", "0", "--log-format", "json", *flags],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    try:
        assert proc.stderr is not None
        ready, _, _ = select.select([proc.stderr], [], [], 20)
        assert ready, "the mediator did not log 'listening' in time"
        line = proc.stderr.readline()  # one whole JSON line follows once readable
        port = int(json.loads(line)["port"])

        async def body() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b' {"type": 42, "payload": {}}')
            data = await read_until_closed(reader)
            writer.close()
            if flags:
                assert isinstance(wire.decode(data), wire.AdvertiseAbort)
            else:
                assert "unknown legacy message type 42" in json.loads(data)["payload"]["reason"]

        run(body())
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


@pytest.mark.parametrize("legacy_first", [True, False])
def test_cross_protocol_pairing_is_refused_explicitly(
    rsa_keys: list[RsaKeypair], legacy_first: bool
) -> None:
    """Even a v1 peer that could answer for a legacy registry key (possible here only because
    the v1 crypto is symbolic) is never paired with a legacy peer: both sides are failed."""
    from mediator_helpers import SymbolicCrypto

    core = LegacyAwareMediatorCore(crypto=SymbolicCrypto())
    a, b = rsa_keys[0], rsa_keys[1]
    ours, theirs = legacy_registry_key(b.public_key), legacy_registry_key(a.public_key)

    def v1(conn: int) -> list[Action]:
        core.handle(Opened(conn, ("127.0.0.1", 50000)), 1.0)
        out = core.handle(Received(conn, wire.Advertise(1, ours, theirs).encode()), 1.0)
        [challenge] = [wire.decode(x.data) for x in out if isinstance(x, Send)]
        assert isinstance(challenge, wire.AdvertiseChallenge)
        answer = wire.AdvertiseResponse(challenge.encrypted_nonce[:32]).encode()
        return core.handle(Received(conn, answer), 1.0)

    if legacy_first:
        register(core, 1, a, b, 1.0)
        actions = v1(2)
    else:
        v1(2)
        actions = register(core, 1, a, b, 1.0)
    assert not any(
        isinstance(x, Send) and x.data[3:4] in (b"\x05", b"\x06") for x in actions
    )  # no v1 PeerDisconnect / PeerIdentification
    assert not any(
        isinstance(m, (codec.PeerDisconnect, codec.PeerIdentification))
        for m in legacy_sends(actions, 1)
    )
    closed = {x.conn for x in actions if isinstance(x, Close)}
    assert closed == {1, 2}
    assert core.sessions == 0 and core.waiting == 0


def test_trickled_bytes_are_scanned_once(
    rsa_keys: list[RsaKeypair], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21 item 4: one byte per segment must not rebuild and rescan the buffer each time
    (that cost ~2 ms per segment). The decoder lives across segments: it is built once per
    connection, and every byte is scanned once; the snapshot still shows the partial bytes."""
    built: list[int] = []
    real = codec.LegacyDecoder.from_snapshot.__func__  # type: ignore[attr-defined]

    def counting(cls: type[codec.LegacyDecoder], buffered: bytes) -> codec.LegacyDecoder:
        built.append(len(buffered))
        decoder: codec.LegacyDecoder = real(cls, buffered)
        return decoder

    monkeypatch.setattr(codec.LegacyDecoder, "from_snapshot", classmethod(counting))
    scanned: list[int] = []
    scan = codec.LegacyDecoder._scan

    def counting_scan(self: codec.LegacyDecoder) -> int | None:
        before = self._scanned
        end = scan(self)
        scanned.append(self._scanned - before)
        return end

    monkeypatch.setattr(codec.LegacyDecoder, "_scan", counting_scan)
    a, b = rsa_keys[0], rsa_keys[1]
    advertise = codec.encode(codec.Advertise(0, a.public_key.to_wire(), b.public_key.to_wire()))
    core = LegacyAwareMediatorCore()
    core.handle(Opened(1, ("127.0.0.1", 40001)), 0.0)
    for i in range(len(advertise) - 1):
        assert core.handle(Received(1, advertise[i : i + 1]), 0.0) == []
    assert len(built) <= 1 and sum(scanned) == len(advertise) - 1, (built, sum(scanned))
    [row] = core.snapshot()[0][0]
    assert row[4] == advertise[:-1]  # the partial message, as a snapshot shows it
    rebuilt = LegacyAwareMediatorCore.from_snapshot(core.snapshot())
    for each in (core, rebuilt):
        [challenge] = legacy_sends(each.handle(Received(1, advertise[-1:]), 0.0), 1)
        assert isinstance(challenge, codec.AdvertiseChallenge)
        assert each.state_of(1) == "challenged"


def test_closing_in_the_middle_of_a_legacy_message_says_so(rsa_keys: list[RsaKeypair]) -> None:
    notes: list[str] = []
    core = LegacyAwareMediatorCore(observer=lambda note: notes.append(note.reason))
    core.handle(Opened(1, ("127.0.0.1", 40001)), 0.0)
    core.handle(Received(1, b'{"type":0,'), 0.0)
    core.handle(Closed(1, None), 0.0)
    assert any("in the middle of a frame" in reason for reason in notes), notes
    assert core.sessions == 0


def test_log_lines_show_the_fingerprints_that_keygen_and_connect_print(
    rsa_keys: list[RsaKeypair], caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 12 item 5: the mediator logged SHA-256 of the registry key, keygen --rsa and
    connect --legacy print SHA-256 of the DER; an operator could not match them."""
    from p2psc.cli.mediator import _LogObserver

    a, b = rsa_keys[0], rsa_keys[1]
    with caplog.at_level(logging.INFO, logger="p2psc.mediator"):
        core = LegacyAwareMediatorCore(observer=_LogObserver())
        register(core, 1, a, b, 0.0)
        register(core, 2, b, a, 0.0)
    lines = [getattr(r, "p2psc", {}) for r in caplog.records]
    registered = [f for f in lines if f.get("event") == "registered"]
    paired = [f for f in lines if f.get("event") == "paired"]
    assert registered and paired, lines
    fa, fb = a.public_key.fingerprint(), b.public_key.fingerprint()
    assert (registered[0]["key"], registered[0]["wants"]) == (fa, fb)
    assert (paired[0]["key"], paired[0]["wants"]) == (fb, fa)
    # the notes themselves say it, for any observer
    notes: list[MediatorNote] = []
    core = LegacyAwareMediatorCore(observer=notes.append)
    register(core, 1, a, b, 0.0)
    assert notes and all(isinstance(n, LegacyNote) for n in notes if n.our_key)
    assert {
        (n.our_fingerprint, n.their_fingerprint) for n in notes if isinstance(n, LegacyNote)
    } == {(fa, fb)}


def test_version_1_never_asks_for_the_fin_with_a_send() -> None:
    """The one-segment close is for legacy Peers only: a whole version 1 pairing through the
    legacy-aware core emits no Close with ``fin_with_send``."""
    from p2psc.keys import HPKE

    a, b = Keypair.generate(), Keypair.generate()
    core = LegacyAwareMediatorCore()
    actions: list[Action] = []
    for conn, me, them in ((1, a, b), (2, b, a)):
        actions += core.handle(Opened(conn, ("127.0.0.1", 40000 + conn)), 0.0)
        advertise = wire.Advertise(1, me.public_key.raw, them.public_key.raw).encode()
        out = core.handle(Received(conn, advertise), 0.0)
        challenge = wire.decode(next(x.data for x in out if isinstance(x, Send)))
        assert isinstance(challenge, wire.AdvertiseChallenge)
        info = nonce_info("AdvertiseChallenge", me.public_key.raw, them.public_key.raw)
        nonce = HPKE.open(me, challenge.encrypted_nonce, info)
        actions += out + core.handle(Received(conn, wire.AdvertiseResponse(nonce).encode()), 0.0)
    actions += core.handle(Closed(2, None), 0.0)  # the v1 Peer confirms by closing
    assert any(isinstance(x, Send) and x.conn == 1 for x in actions[-3:]), actions
    assert not any(isinstance(x, Close) and x.fin_with_send for x in actions)
