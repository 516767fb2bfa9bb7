"""MediatorCore (sans-IO): handshake, pairing order, duplicates, limits, faults, snapshots.

Fake clock (``Driver.now``), deterministic nonces; real HPKE except where a symbolic crypto makes
whole runs deterministic (snapshot tests).
"""

from __future__ import annotations

import pytest
from mediator_helpers import (
    Driver,
    abort_code,
    closed,
    counting_nonces,
    messages,
    sym_answer,
    sym_key,
    timers,
)

from p2psc import wire
from p2psc.core.io import Close, Send
from p2psc.core.mediator import MediatorConfig, MediatorCore, MediatorNote
from p2psc.keys import Keypair

R = wire.Reason
A_REMOTE = ("198.51.100.1", 40001)
B_REMOTE = ("203.0.113.7", 50002)


@pytest.fixture(scope="module")
def alice() -> Keypair:
    return Keypair.generate()


@pytest.fixture(scope="module")
def bob() -> Keypair:
    return Keypair.generate()


@pytest.fixture(scope="module")
def carol() -> Keypair:
    return Keypair.generate()


def _raw(kp: Keypair) -> bytes:
    return kp.public_key.raw


# --- the happy path, both orders -----------------------------------------------------------


@pytest.mark.parametrize("alice_first", [True, False])
def test_pairing_sends_disconnect_then_identification(
    alice: Keypair, bob: Keypair, alice_first: bool
) -> None:
    d = Driver()
    a_local = wire.Address.parse("192.168.1.10:40001")
    b_local = wire.Address.parse("10.1.2.3:50002")
    first, second = (1, 2)
    order = [(alice, bob, A_REMOTE, a_local), (bob, alice, B_REMOTE, b_local)]
    if not alice_first:
        order.reverse()
    (c_kp, c_want, c_remote, c_local), (p_kp, p_want, p_remote, p_local) = order

    registered = d.register_keypair(first, c_kp, _raw(c_want), local=c_local, remote=c_remote)
    assert messages(registered, first) == []  # waiting: nothing sent
    assert d.core.state_of(first) == "waiting" and d.core.waiting == 1

    paired = d.register_keypair(second, p_kp, _raw(p_want), local=p_local, remote=p_remote)
    assert messages(paired, first) == []  # the Client hears nothing yet
    (disconnect,) = messages(paired, second)
    assert isinstance(disconnect, wire.PeerDisconnect) and len(disconnect.pairing_id) == 16
    assert disconnect == wire.PeerDisconnect(
        pairing_id=disconnect.pairing_id,
        peer=wire.Address.from_tuple(p_remote),
        client=wire.Address.from_tuple(c_remote),
        client_local=c_local,
        extensions=wire.dial_delay_extension(0),  # both round trips took 0 s of this clock
    )
    assert closed(paired) == []
    assert d.core.state_of(first) == "confirming"
    assert d.core.state_of(second) == "disconnecting"
    assert d.core.waiting == 0
    deadline = d.now + d.config.confirm_timeout
    assert timers(paired) == {second: deadline, first: deadline}

    confirmed = d.close(second)  # the Peer's clean close = it is listening
    (identification,) = messages(confirmed, first)
    assert identification == wire.PeerIdentification(
        version=1,
        pairing_id=disconnect.pairing_id,  # the same id in both pairing messages
        peer=wire.Address.from_tuple(p_remote),
        peer_local=p_local,
    )
    assert closed(confirmed) == [second, first]
    # PeerIdentification is sent before the Client's close
    kinds = [(type(a).__name__, a.conn) for a in confirmed if isinstance(a, Send | Close)]
    assert kinds.index(("Send", first)) < kinds.index(("Close", first))
    assert d.core.sessions == 0 and d.core.waiting == 0 and d.core.pending == 0
    assert [n.kind for n in d.notes if n.kind in {"registered", "paired", "introduced"}] == [
        "registered",
        "paired",
        "introduced",
    ]


def test_identification_never_before_the_peer_closed(alice: Keypair, bob: Keypair) -> None:
    d = Driver()
    d.register_keypair(1, alice, _raw(bob))
    d.register_keypair(2, bob, _raw(alice))
    # time passes (but not the deadline), the Client is silent: nothing goes to the Client
    d.advance(d.config.confirm_timeout / 2)
    early = d.fire(1)  # an early timer must not fire the step
    assert messages(early, 1) == [] and closed(early) == []
    assert not any(isinstance(m, wire.PeerIdentification) for m in messages(d.log, 1))


def test_only_mutual_intent_pairs(alice: Keypair, bob: Keypair, carol: Keypair) -> None:
    d = Driver()
    d.register_keypair(1, alice, _raw(bob))  # alice wants bob
    d.register_keypair(2, bob, _raw(carol))  # bob wants carol: no pair with alice
    assert d.core.state_of(1) == "waiting" and d.core.state_of(2) == "waiting"
    paired = d.register_keypair(3, carol, _raw(bob))  # carol wants bob: pairs with 2
    (disconnect,) = messages(paired, 3)
    assert isinstance(disconnect, wire.PeerDisconnect)
    assert d.core.state_of(1) == "waiting"
    assert d.core.state_of(2) == "confirming"
    d.close(3)
    assert d.core.state_of(2) is None and d.core.state_of(1) == "waiting"
    assert d.core.waiting == 1


# --- handshake refusals ---------------------------------------------------------------------


def test_self_pairing_is_refused(alice: Keypair) -> None:
    d = Driver()
    d.open(1, A_REMOTE)
    actions = d.send(1, wire.Advertise(1, _raw(alice), _raw(alice)).encode())
    assert abort_code(actions, 1) == R.SELF_PAIRING
    assert closed(actions) == [1] and d.core.sessions == 0


def test_advertise_version_field_mismatch(alice: Keypair, bob: Keypair) -> None:
    d = Driver()
    d.open(1, A_REMOTE)
    frame = bytearray(wire.Advertise(1, _raw(alice), _raw(bob)).encode())
    frame[wire.HEADER_SIZE] = 2  # the payload's version byte comes first
    actions = d.send(1, bytes(frame))
    assert abort_code(actions, 1) == R.UNSUPPORTED_VERSION
    assert closed(actions) == [1]


def test_frame_header_version_mismatch(alice: Keypair, bob: Keypair) -> None:
    d = Driver()
    d.open(1, A_REMOTE)
    frame = bytearray(wire.Advertise(1, _raw(alice), _raw(bob)).encode())
    frame[2] = 7
    actions = d.send(1, bytes(frame[:3]))  # refused as soon as the version byte arrives
    assert abort_code(actions, 1) == R.UNSUPPORTED_VERSION
    assert closed(actions) == [1]


def test_wrong_nonce_fails_identity_check(alice: Keypair, bob: Keypair) -> None:
    d = Driver()
    d.advertise(1, _raw(alice), _raw(bob))
    actions = d.send(1, wire.AdvertiseResponse(bytes(32)).encode())
    assert abort_code(actions, 1) == R.IDENTITY_CHECK_FAILED
    assert closed(actions) == [1] and d.core.waiting == 0


def test_key_not_owned_fails_identity_check(alice: Keypair, bob: Keypair, carol: Keypair) -> None:
    """Carol advertises Alice's key; she cannot open the challenge sealed to Alice."""
    from p2psc.errors import CryptoError
    from p2psc.keys import nonce_info, open_nonce

    d = Driver()
    challenge = d.advertise(1, _raw(alice), _raw(bob))
    info = nonce_info("AdvertiseChallenge", _raw(alice), _raw(bob))
    with pytest.raises(CryptoError):
        open_nonce(carol, challenge.encrypted_nonce, info)
    guess = challenge.encrypted_nonce[32:64]  # the best she has: some bytes of the ciphertext
    actions = d.send(1, wire.AdvertiseResponse(guess).encode())
    assert abort_code(actions, 1) == R.IDENTITY_CHECK_FAILED


def test_degenerate_key_is_refused_without_crash(bob: Keypair) -> None:
    d = Driver()
    d.open(1, A_REMOTE)
    actions = d.send(1, wire.Advertise(1, bytes(32), _raw(bob)).encode())  # all-zero point
    assert abort_code(actions, 1) == R.IDENTITY_CHECK_FAILED
    assert closed(actions) == [1]


def test_each_nonce_is_fresh(alice: Keypair, bob: Keypair) -> None:
    seen = []
    source_calls: list[int] = []

    def source(n: int) -> bytes:
        source_calls.append(n)
        return len(source_calls).to_bytes(n, "big")

    core = MediatorCore(nonce_source=source)
    from p2psc.core.io import Opened, Received

    for conn in (1, 2):
        core.handle(Opened(conn, A_REMOTE), 0.0)
        actions = core.handle(Received(conn, wire.Advertise(1, _raw(alice), _raw(bob)).encode()), 0)
        seen.append(messages(actions, conn)[0])
    assert source_calls == [32, 32]
    assert seen[0] != seen[1]


# --- duplicates -----------------------------------------------------------------------------


def test_duplicate_registration_newer_replaces_older(alice: Keypair, bob: Keypair) -> None:
    d = Driver()
    d.register_keypair(1, alice, _raw(bob))
    actions = d.register_keypair(2, alice, _raw(bob))
    assert abort_code(actions, 1) == R.DUPLICATE_REGISTRATION
    assert closed(actions) == [1]
    assert d.core.state_of(1) is None and d.core.state_of(2) == "waiting"
    assert d.core.waiting == 1
    d.close(1)  # the old connection's close arrives later: must not remove the new entry
    assert d.core.waiting == 1
    paired = d.register_keypair(3, bob, _raw(alice))
    (disconnect,) = messages(paired, 3)
    assert isinstance(disconnect, wire.PeerDisconnect)
    assert d.core.state_of(2) == "confirming"


def test_same_key_may_wait_for_several_peers(alice: Keypair, bob: Keypair, carol: Keypair) -> None:
    d = Driver()
    d.register_keypair(1, alice, _raw(bob))
    actions = d.register_keypair(2, alice, _raw(carol))
    assert abort_code(actions, 1) is None
    assert d.core.waiting == 2


# --- vanishing and timeouts -----------------------------------------------------------------


def test_vanishing_in_each_early_state_leaves_nothing(alice: Keypair, bob: Keypair) -> None:
    d = Driver()
    d.open(1, A_REMOTE)
    assert closed(d.close(1)) == [1]
    d.advertise(2, _raw(alice), _raw(bob))
    assert closed(d.close(2, "connection reset")) == [2]
    d.register_keypair(3, alice, _raw(bob))
    assert d.core.waiting == 1
    assert closed(d.close(3)) == [3]
    assert d.core.sessions == 0 and d.core.waiting == 0 and d.core.pending == 0


def test_client_vanishing_while_peer_disconnecting(alice: Keypair, bob: Keypair) -> None:
    d = Driver()
    d.register_keypair(1, alice, _raw(bob))
    d.register_keypair(2, bob, _raw(alice))
    actions = d.close(1)
    assert abort_code(actions, 2) == R.PEER_GONE
    assert sorted(closed(actions)) == [1, 2]
    assert d.core.sessions == 0


def test_peer_reset_is_not_a_confirmation(alice: Keypair, bob: Keypair) -> None:
    d = Driver()
    d.register_keypair(1, alice, _raw(bob))
    d.register_keypair(2, bob, _raw(alice))
    actions = d.close(2, "connection reset by peer")
    assert abort_code(actions, 1) == R.PEER_GONE
    assert not any(isinstance(m, wire.PeerIdentification) for m in messages(actions, 1))
    assert sorted(closed(actions)) == [1, 2]


def test_peer_not_closing_times_out_both(alice: Keypair, bob: Keypair) -> None:
    d = Driver()
    d.register_keypair(1, alice, _raw(bob))
    d.register_keypair(2, bob, _raw(alice))
    d.advance(d.config.confirm_timeout)
    actions = d.fire(2)
    assert abort_code(actions, 2) == R.TIMEOUT and abort_code(actions, 1) == R.TIMEOUT
    assert sorted(closed(actions)) == [1, 2]
    assert d.fire(1) == []  # the partner's timer afterwards is a no-op


@pytest.mark.parametrize("stage", ["open", "advertised", "waiting"])
def test_step_deadlines(alice: Keypair, bob: Keypair, stage: str) -> None:
    config = MediatorConfig(advertise_timeout=5, response_timeout=7, wait_timeout=60)
    d = Driver(config)
    if stage == "open":
        actions = d.open(1, A_REMOTE)
        wait = 5.0
    elif stage == "advertised":
        d.open(1, A_REMOTE)
        actions = d.send(1, wire.Advertise(1, _raw(alice), _raw(bob)).encode())
        wait = 7.0
    else:
        actions = d.register_keypair(1, alice, _raw(bob))
        wait = 60.0
    assert timers(actions)[1] == d.now + wait
    d.advance(wait - 0.001)
    assert closed(d.fire(1)) == []
    d.advance(0.001)
    fired = d.fire(1)
    assert abort_code(fired, 1) == R.TIMEOUT and closed(fired) == [1]
    assert d.core.sessions == 0 and d.core.waiting == 0


def test_trickling_sender_hits_the_step_deadline(alice: Keypair, bob: Keypair) -> None:
    d = Driver(MediatorConfig(advertise_timeout=2))
    d.open(1, A_REMOTE)
    frame = wire.Advertise(1, _raw(alice), _raw(bob)).encode()
    for byte in frame[:-1]:  # one byte every 0.1 s: each byte is "progress", but not enough
        assert closed(d.send(1, bytes([byte]))) == []
        d.advance(0.1)
        if d.now >= 1002.0:
            break
    d.now = 1002.0
    fired = d.fire(1)
    assert abort_code(fired, 1) == R.TIMEOUT


def test_wait_timeout_may_be_disabled(alice: Keypair, bob: Keypair) -> None:
    d = Driver(MediatorConfig(wait_timeout=None))
    actions = d.register_keypair(1, alice, _raw(bob))
    assert timers(actions) == {1: None}


# --- malformed input at every step ------------------------------------------------------------

GARBAGE = [
    b"GET / HTTP/1.1\r\n\r\n",
    b'{"version": 0}',  # a legacy JSON client
    b"P2\x01\x63\x00\x00",  # unknown message type
    b"P2\x01\x00\x13\x88",  # oversized: 5000-byte payload announced
    wire.AdvertiseChallenge(bytes(80)).encode(),  # well-formed, wrong direction
]


def _drive_to(d: Driver, stage: str, alice: Keypair, bob: Keypair) -> int:
    """Bring a session to ``stage``; return the conn that will get the garbage."""
    if stage == "awaiting_advertise":
        d.open(1, A_REMOTE)
        return 1
    if stage == "challenged":
        d.advertise(1, _raw(alice), _raw(bob))
        return 1
    d.register_keypair(1, alice, _raw(bob))
    if stage == "waiting":
        return 1
    d.register_keypair(2, bob, _raw(alice))
    return 2 if stage == "disconnecting" else 1


@pytest.mark.parametrize("garbage", GARBAGE, ids=["http", "json", "type", "oversized", "dir"])
@pytest.mark.parametrize(
    "stage", ["awaiting_advertise", "challenged", "waiting", "disconnecting", "confirming"]
)
def test_garbage_at_every_step(alice: Keypair, bob: Keypair, stage: str, garbage: bytes) -> None:
    d = Driver()
    victim = _drive_to(d, stage, alice, bob)
    d.open(99, ("192.0.2.99", 9999))  # a bystander that must not be affected
    actions = d.send(victim, garbage)
    assert abort_code(actions, victim) == R.MALFORMED
    assert victim in closed(actions)
    assert 99 not in closed(actions) and d.core.state_of(99) == "awaiting_advertise"
    if stage in ("disconnecting", "confirming"):
        partner = 1 if victim == 2 else 2
        assert abort_code(actions, partner) == R.PEER_GONE
        assert partner in closed(actions)
    assert d.core.waiting == 0


def test_oversized_header_is_refused_before_its_payload(alice: Keypair) -> None:
    d = Driver()
    d.open(1, A_REMOTE)
    actions = d.send(1, b"P2\x01\x00\xff\xff")
    assert abort_code(actions, 1) == R.MALFORMED


def test_second_advertise_and_pipelined_bytes(alice: Keypair, bob: Keypair) -> None:
    d = Driver()
    d.open(1, A_REMOTE)
    frame = wire.Advertise(1, _raw(alice), _raw(bob)).encode()
    actions = d.send(1, frame + frame)  # coalesced: the second Advertise is a violation
    assert isinstance(messages(actions, 1)[0], wire.AdvertiseChallenge)
    assert abort_code(actions, 1) == R.MALFORMED


def test_frames_split_anywhere(alice: Keypair, bob: Keypair) -> None:
    d = Driver()
    d.open(1, A_REMOTE)
    frame = wire.Advertise(1, _raw(alice), _raw(bob)).encode()
    for i in range(len(frame) - 1):
        assert d.send(1, frame[i : i + 1]) == []
    actions = d.send(1, frame[-1:])
    assert isinstance(messages(actions, 1)[0], wire.AdvertiseChallenge)


def test_any_first_cut_gives_what_the_whole_frame_gives(alice: Keypair, bob: Keypair) -> None:
    """A lone whole frame skips the receive buffer; every way of cutting the same bytes in two
    (including a first piece that is a few header bytes) must end in the same actions, notes
    and state as the whole frame in one piece."""
    advertise = wire.Advertise(1, _raw(alice), _raw(bob)).encode()

    def run(cut_advertise: int | None, cut_response: int | None) -> tuple[object, ...]:
        d = Driver(symbolic=True)
        d.open(1, A_REMOTE)
        for frame, cut in ((advertise, cut_advertise), (None, cut_response)):
            if frame is None:  # the answer to the challenge just received
                (challenge,) = messages(d.log, 1)
                assert isinstance(challenge, wire.AdvertiseChallenge)
                frame = wire.AdvertiseResponse(sym_answer(challenge)).encode()
            pieces = [frame] if cut is None else [frame[:cut], frame[cut:]]
            for piece in pieces:
                d.send(1, piece)
        return (d.log, d.notes, d.core.snapshot())

    whole = run(None, None)
    assert whole[2][0][0][1] == "waiting"  # (the registration went through)
    for cut in range(1, len(advertise)):
        assert run(cut, None) == whole, cut
    for cut in range(1, 38):
        assert run(None, cut) == whole, cut


def test_close_mid_frame(alice: Keypair, bob: Keypair) -> None:
    d = Driver()
    d.open(1, A_REMOTE)
    d.send(1, wire.Advertise(1, _raw(alice), _raw(bob)).encode()[:10])
    assert closed(d.close(1)) == [1]
    assert any("middle of a frame" in n.reason for n in d.notes)


# --- limits ---------------------------------------------------------------------------------


def test_pending_limits_evict_the_oldest_unverified() -> None:
    """Over a pending limit the newcomer is admitted and the oldest unverified connection (of
    its origin for the per-address limit; of the largest origin for the global one) is evicted
    with AdvertiseRetry(BUSY) (issue 21: refusing newcomers let idle connections lock out
    honest clients)."""
    d = Driver(MediatorConfig(max_pending=3, max_pending_per_ip=2))
    d.open(1, ("192.0.2.1", 1))
    d.open(2, ("192.0.2.1", 2))
    actions = d.open(3, ("192.0.2.1", 3))  # per-address limit: 1 (the oldest) goes
    assert closed(actions) == [1] and abort_code(actions, 1) == R.BUSY
    assert isinstance(messages(actions, 1)[0], wire.AdvertiseRetry)
    assert d.core.state_of(3) == "awaiting_advertise"
    d.open(4, ("192.0.2.2", 1))
    actions = d.open(5, ("192.0.2.3", 1))  # global limit: 192.0.2.1 holds the most
    assert closed(actions) == [2] and abort_code(actions, 2) == R.BUSY
    assert d.core.pending == 3 and d.core.sessions == 3
    assert {n.cause for n in d.notes if n.kind == "evicted"} == {"pending_origin", "pending_global"}


def test_flood_of_half_open_connections_is_bounded() -> None:
    config = MediatorConfig(max_pending=50, max_pending_per_ip=50)
    d = Driver(config)
    evicted = 0
    for conn in range(1, 10_001):
        actions = d.open(conn, ("192.0.2.1", conn % 60000 + 1))
        evicted += len(closed(actions))
    assert d.core.sessions == 50 and evicted == 10_000 - 50
    assert d.core.pending == 50 and set(d.core._sessions) == set(range(9951, 10_001))
    d.log.clear()


def test_waiting_limits(alice: Keypair, bob: Keypair, carol: Keypair) -> None:
    d = Driver(MediatorConfig(max_waiting=1))
    d.register_keypair(1, alice, _raw(bob))
    actions = d.register_keypair(2, alice, _raw(carol))
    assert isinstance(messages(actions, 2)[-1], wire.AdvertiseRetry)
    assert abort_code(actions, 2) == R.BUSY
    # a duplicate replaces (no growth) and pairing does not need room: both allowed
    assert abort_code(d.register_keypair(3, alice, _raw(bob)), 3) is None
    assert messages(d.register_keypair(4, bob, _raw(alice)), 4)


def test_waiting_limit_per_ip() -> None:
    d = Driver(MediatorConfig(max_waiting_per_ip=2), symbolic=True)
    for conn in (1, 2):
        d.register_symbolic(conn, sym_key(conn), sym_key(100), remote=("192.0.2.1", conn))
    actions = d.register_symbolic(3, sym_key(3), sym_key(100), remote=("192.0.2.1", 3))
    assert abort_code(actions, 3) == R.BUSY
    actions = d.register_symbolic(4, sym_key(4), sym_key(100), remote=("192.0.2.2", 4))
    assert abort_code(actions, 4) is None


def test_shutdown_aborts_everyone_and_refuses_new(alice: Keypair, bob: Keypair) -> None:
    d = Driver()
    d.register_keypair(1, alice, _raw(bob))
    d.open(2, B_REMOTE)
    actions = d.core.shutdown(d.now)
    assert abort_code(actions, 1) == R.SHUTTING_DOWN == abort_code(actions, 2)
    assert sorted(closed(actions)) == [1, 2]
    refused = d.open(3, B_REMOTE)
    assert abort_code(refused, 3) == R.SHUTTING_DOWN and closed(refused) == [3]


def test_unknown_connections_are_ignored() -> None:
    d = Driver()
    assert d.send(42, b"x") == [] and d.close(42) == [] and d.fire(42) == []


# --- snapshots ------------------------------------------------------------------------------


def test_snapshot_twin_replays_every_step_identically() -> None:
    """At every step, a core rebuilt from the snapshot reacts exactly like the original."""
    from mediator_helpers import SymbolicCrypto

    from p2psc.core.io import Closed, Event, Opened, Received, TimerFired

    def constant(n: int) -> bytes:  # a pure nonce source: twins draw the same nonces
        return b"\x07" * n

    config = MediatorConfig()
    core = MediatorCore(config, nonce_source=constant, crypto=SymbolicCrypto())
    answer = wire.AdvertiseResponse(b"\x07" * 32).encode()
    adv1 = wire.Advertise(1, sym_key(1), sym_key(2)).encode()
    adv2 = wire.Advertise(1, sym_key(2), sym_key(1)).encode()
    script: list[tuple[float, Event]] = [
        (0.0, Opened(1, ("192.0.2.1", 1))),
        (0.1, Received(1, adv1)),
        (0.2, Received(1, answer)),
        (0.3, Opened(2, ("192.0.2.2", 2))),
        (0.4, Received(2, adv2[:9])),
        (0.5, Received(2, adv2[9:])),
        (0.6, Opened(3, ("192.0.2.3", 3))),
        (0.7, Received(2, answer)),
        (0.8, Received(3, b"garbage")),
        (0.9, TimerFired(1)),
        (1.0, Closed(2)),
    ]
    kinds = set()
    for now, event in script:
        snap = core.snapshot()
        hash(snap)
        twin = MediatorCore.from_snapshot(
            snap, config, nonce_source=constant, crypto=SymbolicCrypto()
        )
        assert twin.snapshot() == snap
        expected = core.handle(event, now)
        assert twin.handle(event, now) == expected
        assert twin.snapshot() == core.snapshot()
        kinds.update(
            type(m).__name__ for a in expected if isinstance(a, Send) for m in [wire.decode(a.data)]
        )
    assert {"AdvertiseChallenge", "PeerDisconnect", "PeerIdentification", "AdvertiseAbort"} <= kinds
    assert core.sessions == 0 and core.snapshot() == ((), (), False, ((), ()))


def test_snapshot_rows_of_older_versions_restore_without_round_trip_or_coordination() -> None:
    """Rows written before the round trip (14 fields) and the coordination flag (15 fields)
    were added still restore: the missing fields read as none measured and not coordinated,
    and the other fields are kept (a waiting session is counted under its origin again)."""
    from mediator_helpers import SymbolicCrypto

    from p2psc.core.io import Opened, Received

    def constant(n: int) -> bytes:
        return b"\x07" * n

    config = MediatorConfig()
    core = MediatorCore(config, nonce_source=constant, crypto=SymbolicCrypto())
    core.handle(Opened(1, ("192.0.2.1", 1)), 0.0)
    core.handle(Received(1, wire.Advertise(1, sym_key(1), sym_key(2)).encode()), 0.1)
    core.handle(Received(1, wire.AdvertiseResponse(b"\x07" * 32).encode()), 0.3)
    sessions, registry, shutting_down, admission = core.snapshot()
    (row,) = sessions
    assert row[1] == "waiting" and row[14] is not None  # a measured round trip
    for width in (14, 15):
        old = ((row[:width],), registry, shutting_down, admission)
        twin = MediatorCore.from_snapshot(
            old, config, nonce_source=constant, crypto=SymbolicCrypto()
        )
        expected = (*row[:14], row[14] if width == 15 else None, False)
        assert twin.snapshot() == ((expected,), registry, shutting_down, admission)
        assert twin._waiting_by_ip == {"192.0.2.1": 1}


def test_shutdown_while_pairing_tells_both_sides_shutting_down(
    alice: Keypair, bob: Keypair
) -> None:
    d = Driver()
    d.register_keypair(1, alice, _raw(bob))
    d.register_keypair(2, bob, _raw(alice))
    actions = d.core.shutdown(d.now)
    assert abort_code(actions, 1) == R.SHUTTING_DOWN == abort_code(actions, 2)
    assert sorted(closed(actions)) == [1, 2] and d.core.sessions == 0


def test_observed_addresses_of_both_families(alice: Keypair, bob: Keypair) -> None:
    d = Driver()
    d.register_keypair(1, alice, _raw(bob), remote=("2001:db8::7", 4444))
    paired = d.register_keypair(2, bob, _raw(alice), remote=("198.51.100.9", 5555))
    (disconnect,) = messages(paired, 2)
    assert disconnect.client == wire.Address("2001:db8::7", 4444)  # type: ignore[union-attr]
    identified = d.close(2)
    (identification,) = messages(identified, 1)
    assert identification.peer == wire.Address("198.51.100.9", 5555)  # type: ignore[union-attr]


def test_an_observer_with_kinds_gets_only_those_notes(alice: Keypair, bob: Keypair) -> None:
    """An observer may list the note kinds it wants (the CLI lists those its log level shows);
    the core then sends only those, and the pairing itself is unchanged."""

    class Picky:
        kinds = frozenset({"paired", "closed"})

        def __init__(self) -> None:
            self.notes: list[MediatorNote] = []

        def __call__(self, note: MediatorNote) -> None:
            self.notes.append(note)

    everything, picky = Driver(), Driver()
    observer = Picky()
    picky.core = MediatorCore(picky.config, nonce_source=counting_nonces(), observer=observer)
    for d in (everything, picky):
        d.register_keypair(1, alice, _raw(bob))
        d.register_keypair(2, bob, _raw(alice))
        d.close(2)
    assert [a for a in picky.log if not isinstance(a, Send)] == [
        a for a in everything.log if not isinstance(a, Send)
    ]
    assert [n for n in everything.notes if n.kind in Picky.kinds] == observer.notes
    assert [n.kind for n in observer.notes] == ["paired", "closed", "closed"]

    Picky.kinds = frozenset()  # wants nothing: is never called
    quiet, deaf = Driver(), Picky()
    quiet.core = MediatorCore(quiet.config, nonce_source=counting_nonces(), observer=deaf)
    quiet.register_keypair(1, alice, _raw(bob))
    quiet.register_keypair(2, bob, _raw(alice))
    quiet.close(2)
    assert [a for a in quiet.log if not isinstance(a, Send)] == [
        a for a in everything.log if not isinstance(a, Send)
    ]
    assert deaf.notes == []


def test_the_cli_observer_asks_for_what_its_log_level_shows() -> None:
    import logging

    from p2psc.cli import mediator as cli

    saved = cli.log.level
    try:
        cli.log.setLevel(logging.WARNING)
        assert cli._LogObserver().kinds == {"refused", "evicted", "rejected", "failed"}
        cli.log.setLevel(logging.ERROR)
        assert cli._LogObserver().kinds == frozenset()
        cli.log.setLevel(logging.DEBUG)
        assert cli._LogObserver().kinds == set(cli._LEVELS)
    finally:
        cli.log.setLevel(saved)
