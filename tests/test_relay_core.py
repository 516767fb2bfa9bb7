"""The sans-IO relay core (issue 14; spec/relay.md): who is spliced, limits, ends.

Driven with events and ``now`` only; keys and HPKE are real."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psc import relay_wire as rw
from p2psc import wire
from p2psc.core.channel import SecureChannel
from p2psc.core.io import Close, Closed, Opened, Received, Send, SetTimer, TimerFired
from p2psc.core.relay import (
    PauseReading,
    RelayAction,
    RelayConfig,
    RelayCore,
    ResumeReading,
    ShutdownWrite,
)
from p2psc.errors import CryptoError, RecordTampered, RelayLimitReached, TruncatedStream
from p2psc.keys import HPKE, Keypair, nonce_info
from p2psc.noise import CipherState

A, B, C = Keypair.generate(), Keypair.generate(), Keypair.generate()
PID = bytes(range(16))
OTHER_PID = bytes(16)


def sends(actions: list[RelayAction], conn: int) -> list[bytes]:
    return [a.data for a in actions if isinstance(a, Send) and a.conn == conn]


def messages(actions: list[RelayAction], conn: int) -> list[object]:
    return [rw.decode_relay(data) for data in sends(actions, conn) if data[:2] == b"P2"]


def closes(actions: list[RelayAction]) -> set[int]:
    return {a.conn for a in actions if isinstance(a, Close)}


def request(
    core: RelayCore,
    conn: int,
    me: Keypair,
    them: Keypair,
    pid: bytes = PID,
    now: float = 0.0,
    host: str = "192.0.2.1",
) -> list[RelayAction]:
    core.handle(Opened(conn, (host, 1000 + conn)), now)
    req = rw.RelayRequest(1, me.public_key.raw, them.public_key.raw, pid)
    return core.handle(Received(conn, req.encode()), now)


def leg(
    core: RelayCore,
    conn: int,
    me: Keypair,
    them: Keypair,
    pid: bytes = PID,
    now: float = 0.0,
    host: str = "192.0.2.1",
) -> list[RelayAction]:
    """Open, request, answer the challenge: the actions of the response."""
    (challenge,) = messages(request(core, conn, me, them, pid, now, host), conn)
    assert isinstance(challenge, rw.RelayChallenge)
    info = rw.challenge_info(me.public_key.raw, them.public_key.raw, pid)
    nonce = HPKE.open(me, challenge.encrypted_nonce, info)
    return core.handle(Received(conn, rw.RelayResponse(nonce).encode()), now)


def spliced(config: RelayConfig | None = None) -> RelayCore:
    core = RelayCore(config or RelayConfig(max_rate=0))
    assert leg(core, 1, A, B) == [SetTimer(1, core.config.wait_timeout)]
    out = leg(core, 2, B, A)
    for conn in (1, 2):
        (connected,) = messages(out, conn)
        assert isinstance(connected, rw.RelayConnected)
    assert core.circuits == 1 and core.partner_of(1) == 2
    return core


def test_two_legs_of_one_pairing_are_spliced_and_bytes_pass_unchanged() -> None:
    core = spliced()
    frame = wire.HandshakeInit(b"\x01" * 48).encode()
    assert sends(core.handle(Received(1, frame), 1.0), 2) == [frame]
    reply = wire.HandshakeResponse(b"\x02" * 48).encode()
    record = b"\x00\x11" + b"r" * 17
    assert sends(core.handle(Received(2, reply + record), 1.0), 1) == [reply + record]
    # a record split across reads is held back until it is whole, then forwarded at once
    assert sends(core.handle(Received(1, record[:1]), 1.0), 2) == []
    assert sends(core.handle(Received(1, record[1:5]), 1.0), 2) == []
    assert sends(core.handle(Received(1, record[5:] + record[:3]), 1.0), 2) == [record]
    assert core.relayed_bytes == len(frame) + len(reply) + 2 * len(record)


@pytest.mark.parametrize(
    ("second", "pid"),
    [((B, C), PID), ((B, A), OTHER_PID), ((C, A), PID)],
    ids=["names-another-partner", "another-pairing", "another-key"],
)
def test_legs_that_do_not_name_each_other_are_never_spliced(
    second: tuple[Keypair, Keypair], pid: bytes
) -> None:
    core = RelayCore(RelayConfig(max_rate=0, wait_timeout=5.0))
    leg(core, 1, A, B)
    out = leg(core, 2, *second, pid=pid)
    assert not any(isinstance(m, rw.RelayConnected) for m in messages(out, 2))
    assert core.circuits == 0
    # Both wait alone until wait_timeout, then RelayAbort(RELAY_NO_PARTNER).
    out = core.handle(TimerFired(1), 5.0)
    (abort,) = messages(out, 1)
    assert isinstance(abort, rw.RelayAbort) and abort.code == rw.RelayReason.RELAY_NO_PARTNER
    assert closes(out) == {1}


def test_a_wrong_response_is_refused_and_does_not_disturb_the_waiting_leg() -> None:
    """A stranger knows the pairing id and claims B's key but cannot open the challenge."""
    core = RelayCore(RelayConfig(max_rate=0))
    leg(core, 1, A, B)
    request(core, 2, B, A)
    out = core.handle(Received(2, rw.RelayResponse(b"\x00" * 32).encode()), 0.0)
    (abort,) = messages(out, 2)
    assert isinstance(abort, rw.RelayAbort) and abort.code == wire.Reason.IDENTITY_CHECK_FAILED
    assert closes(out) == {2} and core.circuits == 0
    assert core.sessions[1].state == "waiting"
    leg(core, 3, B, A)  # the real B still pairs
    assert core.partner_of(3) == 1


def test_relay_and_mediator_challenges_never_open_as_each_other() -> None:
    """Domain separation: what a Mediator seals for A does not open under the relay's info
    (and vice versa), so neither server can use a peer to answer the other's challenge."""
    relay_info = rw.challenge_info(A.public_key.raw, B.public_key.raw, PID)
    mediator_info = nonce_info("AdvertiseChallenge", A.public_key.raw, B.public_key.raw)
    nonce = bytes(range(32))
    sealed_for_mediator = HPKE.seal(A.public_key, nonce, mediator_info)
    sealed_for_relay = HPKE.seal(A.public_key, nonce, relay_info)
    assert HPKE.open(A, sealed_for_relay, relay_info) == nonce
    with pytest.raises(CryptoError):
        HPKE.open(A, sealed_for_mediator, relay_info)
    with pytest.raises(CryptoError):
        HPKE.open(A, sealed_for_relay, mediator_info)
    with pytest.raises(CryptoError):  # nor for another pairing
        HPKE.open(
            A, sealed_for_relay, rw.challenge_info(A.public_key.raw, B.public_key.raw, OTHER_PID)
        )


def test_a_reconnecting_key_replaces_its_waiting_leg() -> None:
    core = RelayCore(RelayConfig(max_rate=0))
    leg(core, 1, A, B)
    out = leg(core, 2, A, B)
    (abort,) = messages(out, 1)
    assert isinstance(abort, rw.RelayAbort) and abort.code == wire.Reason.DUPLICATE_REGISTRATION
    leg(core, 3, B, A)
    assert core.partner_of(3) == 2


def test_limits_per_key_per_address_in_total_and_pending() -> None:
    core = RelayCore(RelayConfig(max_rate=0, max_per_key=1, max_per_address=3, max_pending=1))
    leg(core, 1, A, B)
    out = leg(core, 2, A, C)  # A's second connection: over max_per_key, after its proof
    (abort,) = messages(out, 2)
    assert isinstance(abort, rw.RelayAbort) and abort.code == rw.RelayReason.RELAY_REFUSED
    leg(core, 3, B, C)
    leg(core, 4, C, B)  # three connections from 192.0.2.1 now (B and C spliced, A waiting)
    (abort,) = messages(request(core, 5, C, A), 5)
    assert isinstance(abort, rw.RelayAbort) and abort.code == rw.RelayReason.RELAY_REFUSED
    (other,) = messages(request(core, 6, C, A, host="192.0.2.2"), 6)
    assert isinstance(other, rw.RelayChallenge)  # another address is not affected
    core.handle(Opened(7, ("192.0.2.9", 1)), 0.0)
    assert core.handle(Opened(8, ("192.0.2.9", 2)), 0.0) == [
        Close(8, "too many unauthenticated relay connections")
    ]


def test_rate_limit_pauses_reading_and_resumes_when_the_bucket_refills() -> None:
    core = spliced(RelayConfig(max_rate=1000, burst=1000))
    frame = wire.HandshakeInit(b"\x01" * 2994).encode()  # 3000 bytes
    out = core.handle(Received(1, frame), 10.0)
    assert sends(out, 2) == [frame]  # what was read is forwarded
    assert PauseReading(1) in out
    (timer,) = [a for a in out if isinstance(a, SetTimer) and a.conn == 1]
    assert timer.deadline == pytest.approx(12.0)
    assert ResumeReading(1) not in core.handle(TimerFired(1), 11.0)
    assert ResumeReading(1) in core.handle(TimerFired(1), 12.0)


def _record(n: int) -> bytes:
    return n.to_bytes(2, "big") + b"c" * n


def test_byte_limit_ends_both_directions_at_a_record_boundary_with_the_end_marker() -> None:
    core = spliced(RelayConfig(max_rate=0, max_bytes=400))
    handshake = wire.HandshakeInit(b"\x01" * 48).encode()  # 54 bytes
    core.handle(Received(1, handshake), 1.0)
    record = _record(300)  # 302 bytes: 356 forwarded in all, under the budget
    assert sends(core.handle(Received(1, record[:100]), 1.0), 2) == []  # held: not whole
    out = core.handle(Received(1, record[100:] + _record(20)[:5]), 1.5)
    assert sends(out, 2) == [record] and not closes(out)
    # the next whole record would cross the budget: it is not forwarded, the circuit ends
    out = core.handle(Received(1, _record(20)[5:] + _record(50)), 1.5)
    (whole, marker) = sends(out, 2)
    assert whole == _record(20)  # 378 bytes forwarded: the 52-byte record would make 430
    trailer = rw.END_MARKER + rw.RelayAbort(rw.RelayReason.RELAY_LIMIT, "x").encode()[:6]
    assert marker.startswith(trailer[:6])
    (to_a,) = sends(out, 1)
    assert to_a.startswith(trailer[:6])
    assert closes(out) == {1, 2} and core.circuits == 0
    assert core.relayed_bytes == 54 + 302 + 22 <= 400


def test_duration_limit_ends_the_circuit() -> None:
    core = spliced(RelayConfig(max_rate=0, max_duration=60.0))
    out = core.handle(TimerFired(1), 60.0)
    for conn in (1, 2):
        (marker,) = sends(out, conn)
        assert marker.startswith(rw.END_MARKER)
    assert closes(out) == {1, 2}


def test_a_clean_end_is_passed_on_as_a_half_close_a_reset_closes_both() -> None:
    core = spliced()
    assert core.handle(Closed.eof(1), 1.0) == [ShutdownWrite(2)]
    late = wire.HandshakeResponse(b"\x02" * 48).encode()
    assert sends(core.handle(Received(2, late), 1.0), 1) == [late]
    assert closes(core.handle(Closed.eof(2), 1.0)) == {1, 2}
    core = spliced()
    assert closes(core.handle(Closed.failed(1, "reset"), 1.0)) == {1, 2}
    assert core.circuits == 0 and not core.sessions


@pytest.mark.parametrize(
    "data",
    [b"XX", wire.Advertise(1, A.public_key.raw, B.public_key.raw).encode(), b"P2\x02\x0e"],
    ids=["bad-magic", "mediator-message", "version-2"],
)
def test_malformed_input_is_refused_at_once(data: bytes) -> None:
    core = RelayCore()
    core.handle(Opened(1, ("192.0.2.1", 1)), 0.0)
    out = core.handle(Received(1, data), 0.0)
    assert closes(out) == {1} and not core.sessions


def test_bytes_behind_a_request_are_refused() -> None:
    core = RelayCore()
    core.handle(Opened(1, ("192.0.2.1", 1)), 0.0)
    req = rw.RelayRequest(1, A.public_key.raw, B.public_key.raw, PID).encode()
    out = core.handle(Received(1, req + b"\x00"), 0.0)
    (abort,) = messages(out, 1)
    assert isinstance(abort, rw.RelayAbort) and abort.code == wire.Reason.MALFORMED


def test_self_pairing_and_silence_are_refused() -> None:
    core = RelayCore()
    (abort,) = messages(request(core, 1, A, A), 1)
    assert isinstance(abort, rw.RelayAbort) and abort.code == wire.Reason.SELF_PAIRING
    core.handle(Opened(2, ("192.0.2.1", 1)), 0.0)
    out = core.handle(TimerFired(2), core.config.request_timeout)
    (abort,) = messages(out, 2)
    assert isinstance(abort, rw.RelayAbort) and abort.code == wire.Reason.TIMEOUT


def test_every_relay_message_round_trips() -> None:
    for message in (
        rw.RelayRequest(1, A.public_key.raw, B.public_key.raw, PID),
        rw.RelayChallenge(bytes(80)),
        rw.RelayResponse(bytes(32)),
        rw.RelayConnected(3600, 2**30),
        rw.RelayAbort(rw.RelayReason.RELAY_LIMIT, "limit"),
    ):
        frame = message.encode()
        assert rw.decode_relay(frame) == message
        assert rw.take_relay_frame(frame + b"rest") == (message, b"rest")
        assert rw.take_relay_frame(frame[:-1]) is None


def test_relay_frames_match_the_spec_examples_byte_for_byte() -> None:
    request = rw.RelayRequest(1, b"\x11" * 32, b"\x22" * 32, bytes(range(16)))
    assert request.encode() == bytes.fromhex(
        "5032010e005101" + "11" * 32 + "22" * 32 + "000102030405060708090a0b0c0d0e0f"
    )
    connected = bytes.fromhex("50320111000c00000e100000000040000000")
    assert rw.RelayConnected(3600, 1 << 30).encode() == connected
    abort = bytes.fromhex("503201120009000d00056c696d6974")
    assert rw.RelayAbort(rw.RelayReason.RELAY_LIMIT, "limit").encode() == abort
    assert rw.is_relay_request_start(request.encode()[:4])
    assert not rw.is_relay_request_start(bytes.fromhex("50320100"))  # an Advertise


def _pair_of_channels(relayed: bool) -> tuple[SecureChannel, SecureChannel]:
    k1, k2 = bytes(range(32)), bytes(range(1, 33))
    tx = SecureChannel(CipherState(k1), CipherState(k2))
    rx = SecureChannel(CipherState(k2), CipherState(k1), relayed=relayed)
    return tx, rx


def test_a_relayed_channel_reads_the_end_marker_as_relay_limit_reached() -> None:
    tx, rx = _pair_of_channels(relayed=True)
    end = rw.END_MARKER + rw.RelayAbort(rw.RelayReason.RELAY_LIMIT, "data limit").encode()
    assert rx.feed(tx.seal(b"before") + end[:5]) == [b"before"]  # what came before is kept
    with pytest.raises(RelayLimitReached, match="RELAY_LIMIT: data limit") as caught:
        rx.feed(end[5:])
    assert caught.value.code == rw.RelayReason.RELAY_LIMIT
    tx, rx = _pair_of_channels(relayed=True)
    rx.feed(tx.seal(b"x") + end)
    with pytest.raises(RelayLimitReached):
        rx.transport_eof()


def test_a_reset_after_the_end_marker_is_still_relay_limit_reached() -> None:
    """The relay closes after its linger; a peer still writing then sees a reset, not a FIN.
    The marker it already read decides (the flaky NAT test of the relay limit got
    TruncatedStream here); without a marker a reset is a TruncatedStream."""
    tx, rx = _pair_of_channels(relayed=True)
    end = rw.END_MARKER + rw.RelayAbort(rw.RelayReason.RELAY_LIMIT, "data limit").encode()
    assert rx.feed(tx.seal(b"before") + end) == [b"before"]
    error = rx.transport_lost("reset")
    assert isinstance(error, RelayLimitReached) and "RELAY_LIMIT: data limit" in error.reason
    tx, rx = _pair_of_channels(relayed=True)
    assert rx.feed(tx.seal(b"x")) == [b"x"]
    cut = rx.transport_lost("reset")
    assert type(cut) is TruncatedStream and "reset before the close record" in cut.reason


def test_a_direct_channel_treats_the_end_marker_as_tampering() -> None:
    tx, rx = _pair_of_channels(relayed=False)
    end = rw.END_MARKER + rw.RelayAbort(rw.RelayReason.RELAY_LIMIT, "x").encode()
    with pytest.raises(RecordTampered):
        rx.feed(tx.seal(b"x") + end)


def test_the_pending_count_follows_every_way_out() -> None:
    core = RelayCore(RelayConfig(max_rate=0))
    for conn in range(1, 5):
        core.handle(Opened(conn, ("192.0.2.1", conn)), 0.0)
    assert core.pending == 4
    request(core, 5, A, B)  # opened and requested at once
    core.handle(Received(1, b"XX"), 0.0)  # malformed
    core.handle(Closed.eof(2), 0.0)
    core.handle(TimerFired(3), core.config.request_timeout)
    assert core.pending == 1  # conn 4
    core.handle(Closed.failed(4, "reset"), 0.0)
    assert core.pending == 0 and set(core.sessions) == {5}


def test_challenges_per_address_are_budgeted() -> None:
    core = RelayCore(RelayConfig(challenge_rate=1.0, challenge_burst=2))
    for conn in (1, 2):
        (challenge,) = messages(request(core, conn, A, B), conn)
        assert isinstance(challenge, rw.RelayChallenge)
    (abort,) = messages(request(core, 3, A, B), 3)
    assert isinstance(abort, rw.RelayAbort) and abort.code == rw.RelayReason.RELAY_REFUSED
    (other,) = messages(request(core, 4, A, B, host="192.0.2.7"), 4)
    assert isinstance(other, rw.RelayChallenge)  # another address has its own budget
    (later,) = messages(request(core, 5, A, B, now=1.0), 5)
    assert isinstance(later, rw.RelayChallenge)  # refilled at challenge_rate


@settings(max_examples=200, deadline=None)
@given(chunks=st.lists(st.binary(min_size=0, max_size=200), max_size=8), stage=st.integers(0, 2))
def test_garbage_in_any_state_is_a_clean_close_never_an_exception(
    chunks: list[bytes], stage: int
) -> None:
    """Whatever a client sends (before the request, after it, after the splice), the core
    answers with actions only: a RelayAbort and a Close, or forwarding; memory stays bounded."""
    core = RelayCore(RelayConfig(max_rate=0))
    if stage == 0:
        core.handle(Opened(1, ("192.0.2.1", 1)), 0.0)
    elif stage == 1:
        request(core, 1, A, B)
    else:
        leg(core, 1, A, B)
        leg(core, 2, B, A)
    for chunk in chunks:
        core.handle(Received(1, chunk), 0.5)
        session = core.sessions.get(1)
        if session is not None:
            assert len(session.rx) <= wire.HEADER_SIZE + wire.MAX_PAYLOAD
            if session.circuit is not None:
                assert len(session.circuit.directions[1].held) <= 2 + 65535


def test_a_request_for_another_protocol_version_is_refused() -> None:
    core = RelayCore()
    core.handle(Opened(1, ("192.0.2.1", 1)), 0.0)
    req = rw.RelayRequest(2, A.public_key.raw, B.public_key.raw, PID).encode()
    (abort,) = messages(core.handle(Received(1, req), 0.0), 1)
    assert isinstance(abort, rw.RelayAbort) and abort.code == wire.Reason.UNSUPPORTED_VERSION


def test_a_core_rebuilt_from_its_snapshot_at_every_step_acts_the_same() -> None:
    """The explorer's relay model rebuilds RelayCore from :meth:`RelayCore.snapshot` before
    every event: a rebuilt core must act exactly like the one that lived through the events
    (sessions, waiting legs, counters per address and key, circuits with held bytes, half
    closes), and its snapshot must not change by being rebuilt. (The model's symbolic crypto
    and fixed nonces: real HPKE seals differently every time.)"""
    from p2psc.models.symbolic_crypto import SymbolicCrypto, fixed_nonces

    crypto = SymbolicCrypto()
    config = RelayConfig(max_rate=100, burst=64, max_bytes=200, max_duration=50.0)
    config = replace(config, crypto=crypto, nonce_source=fixed_nonces(b"relay"))
    live = RelayCore(config)
    snap = RelayCore(config).snapshot()
    nonces: dict[int, bytes] = {}
    pairs = {1: (A, B), 2: (B, A), 3: (C, A)}
    events: list[tuple[object, float]] = [(Opened(4, ("192.0.2.9", 4)), 0.0)]
    for conn, (me, them) in pairs.items():
        req = rw.RelayRequest(1, me.public_key.raw, them.public_key.raw, PID).encode()
        events += [(Opened(conn, ("192.0.2.1", 1000 + conn)), 0.0), (Received(conn, req), 0.0)]
    events += [("answer", 1.0)]
    record = b"\x00\x05hello"
    init = wire.HandshakeInit(b"\x01" * 48).encode()
    events += [(Received(1, init + record[:3]), 2.0), (Received(1, record[3:]), 2.0)]
    events += [(Received(2, init + record * 4), 3.0), (TimerFired(2), 9.0)]
    events += [(Closed.eof(1), 9.5), (TimerFired(4), 11.0), (TimerFired(3), 40.0)]
    events += [(Closed.eof(2), 41.0)]
    for event, now in events:
        if event == "answer":
            for conn in pairs:
                nonce = nonces[conn]
                events_now = Received(conn, rw.RelayResponse(nonce).encode())
                rebuilt = RelayCore.from_snapshot(snap, config)
                expected = live.handle(events_now, now)
                assert rebuilt.handle(events_now, now) == expected
                snap = rebuilt.snapshot()
                assert snap == live.snapshot()
            continue
        assert isinstance(event, Opened | Received | Closed | TimerFired)
        rebuilt = RelayCore.from_snapshot(snap, config)
        assert RelayCore.from_snapshot(snap, config).snapshot() == snap
        expected = live.handle(event, now)
        assert rebuilt.handle(event, now) == expected
        snap = rebuilt.snapshot()
        assert snap == live.snapshot()
        assert (rebuilt.pending, rebuilt.admitted, rebuilt.circuits) == (
            live.pending,
            live.admitted,
            live.circuits,
        )
        assert (rebuilt.per_address, rebuilt.per_key, rebuilt.waiting) == (
            live.per_address,
            live.per_key,
            live.waiting,
        )
        for conn, (me, them) in pairs.items():
            for data in sends(expected, conn):
                message = rw.decode_relay(data) if data[:4] == b"P2\x01\x0f" else None
                if isinstance(message, rw.RelayChallenge):
                    info = rw.challenge_info(me.public_key.raw, them.public_key.raw, PID)
                    nonces[conn] = crypto.open(me, message.encrypted_nonce, info)
    assert live.spliced_total == 1 and not live.sessions  # the run went through a circuit


def test_a_key_no_nonce_can_be_sealed_to_is_refused() -> None:
    """A RelayRequest naming a degenerate key (all zero, a low-order point): the real HPKE
    cannot seal to it, so the request is refused with IDENTITY_CHECK_FAILED, never a crash
    (the explorer's symbolic crypto seals to any 32 bytes, so only this test takes
    ``request [!key_usable]``)."""
    core = RelayCore()
    core.handle(Opened(1, ("192.0.2.1", 1)), 0.0)
    req = rw.RelayRequest(1, bytes(32), B.public_key.raw, PID).encode()
    out = core.handle(Received(1, req), 0.0)
    (abort,) = messages(out, 1)
    assert isinstance(abort, rw.RelayAbort) and abort.code == wire.Reason.IDENTITY_CHECK_FAILED
    assert closes(out) == {1} and not core.sessions and core.pending == 0
