"""PeerDriver: the adapter-neutral driver keeps timers, names accepted connections, never
reports a close the core made itself, bounds the attempt, and says what to close at the end."""

from __future__ import annotations

import pytest

from p2psc import wire
from p2psc.core.io import Close, Connect, Listen, Send
from p2psc.core.peer import FIRST_ACCEPTED, LISTENER, MEDIATOR_BASE, TIMER, PeerCore, peer_config
from p2psc.core.peer_driver import OUTER_MARGIN, PeerDriver
from p2psc.errors import HandshakeTimeout, MediatorClosed, MediatorUnreachable
from p2psc.keys import HPKE, Keypair, nonce_info

MEDIATOR = ("127.0.0.1", 9999)
LOCAL = ("127.0.0.1", 40001)
ME, THEM = Keypair.generate(), Keypair.generate()
PID = bytes(16)


def driver(**options: object) -> PeerDriver:
    return PeerDriver(PeerCore(peer_config(ME, THEM.public_key, MEDIATOR, **options)))


def registered(**options: object) -> PeerDriver:
    d = driver(**options)
    assert d.start(0.0) == [Connect(MEDIATOR_BASE, MEDIATOR)]
    (advertise,) = d.opened(MEDIATOR_BASE, MEDIATOR, LOCAL, 0.0)
    assert isinstance(advertise, Send)
    info = nonce_info("AdvertiseChallenge", ME.public_key.raw, THEM.public_key.raw)
    sealed = HPKE.seal(ME.public_key, bytes(32), info)
    d.received(MEDIATOR_BASE, wire.AdvertiseChallenge(sealed).encode(), 0.0)
    return d


def test_timers_are_kept_by_the_driver_and_early_ticks_are_harmless() -> None:
    d = driver(step_timeout=2.0, timeout=30.0)
    d.start(0.0)
    assert d.next_deadline() == 2.0  # the core's step timer, before the outer bound
    assert d.tick(1.0) == [] and d.result is None
    assert d.tick(2.0) == []  # the connect never completed: nothing the core holds to close
    assert isinstance(d.result, MediatorUnreachable)
    assert d.closing == {MEDIATOR_BASE}  # but the adapter still holds the pending connect
    assert d.next_deadline() is None


def test_outer_bound_fails_the_attempt_and_names_what_to_close() -> None:
    d = driver(timeout=5.0, step_timeout=100.0)
    d.start(0.0)
    d.core.timers.clear()  # a core bug: no timer of its own would ever fire
    d.timers.clear()
    assert d.next_deadline() == 5.0 + OUTER_MARGIN
    ops = d.tick(5.0 + OUTER_MARGIN)
    assert isinstance(d.result, HandshakeTimeout)
    assert ops == [Close(MEDIATOR_BASE, "outer bound")]


def test_a_close_the_core_made_is_not_reported_back() -> None:
    d = registered()
    ident = wire.PeerIdentification(1, PID, wire.Address("127.0.0.1", 40002)).encode()
    ops = d.received(MEDIATOR_BASE, ident, 0.1)
    assert Close(MEDIATOR_BASE, "PeerIdentification: punching") in ops
    assert Listen(LISTENER, LOCAL[1]) in ops
    # the adapter reports the end of the connection it was told to close: not an event
    assert d.closed(MEDIATOR_BASE, None, 0.2) == []
    assert d.result is None and d.core.state == "punching"


def test_accepted_connections_are_named_and_handed_to_the_core() -> None:
    d = registered()
    ident = wire.PeerIdentification(1, PID, wire.Address("127.0.0.1", 40002)).encode()
    d.received(MEDIATOR_BASE, ident, 0.1)
    conn, ops = d.accepted(("127.0.0.1", 50000), LOCAL, 0.2)
    assert conn == FIRST_ACCEPTED
    assert [type(op) for op in ops] == [Send]  # the Client's HandshakeInit on the candidate
    conn2, _ = d.accepted(("127.0.0.1", 50001), LOCAL, 0.2)
    assert conn2 == FIRST_ACCEPTED + 1


def test_failure_sets_the_result_and_stops_everything() -> None:
    d = registered()
    assert d.closed(MEDIATOR_BASE, None, 0.1) == []  # the Mediator went away
    assert isinstance(d.result, MediatorClosed)
    assert d.closing == frozenset() and d.next_deadline() is None
    # anything later: a late connection is refused, bytes and timers are ignored
    assert d.received(MEDIATOR_BASE, b"x", 0.2) == []
    assert d.tick(100.0) == []


def test_unknown_or_closed_connections_are_refused() -> None:
    d = registered()
    assert d.opened(12345, ("127.0.0.1", 1), LOCAL, 0.1) == [Close(12345, "not expected")]
    assert d.received(12345, b"data", 0.1) == []
    assert d.closed(12345, "reset", 0.1) == []


@pytest.mark.parametrize("now", [0.0, 1.999])
def test_tick_before_any_deadline_does_nothing(now: float) -> None:
    d = driver(step_timeout=2.0)
    d.start(0.0)
    assert d.tick(now) == [] and d.result is None
    assert TIMER in d.timers


def test_closed_is_typed_never_a_free_string() -> None:
    """Issue 20: a clean end and a failure are told apart by a typed field; the text is only a
    reason. "eof" as a text is a failure, not a clean end."""
    from p2psc.core.io import Closed, CloseKind

    assert Closed(5).clean and Closed(5).kind is CloseKind.EOF
    assert Closed.eof(5) == Closed(5)
    assert not Closed(5, "eof").clean and Closed(5, "eof").kind is CloseKind.ERROR
    assert Closed.failed(5, "").error == "failed" and not Closed.failed(5, "").clean
    assert Closed(5, "mediator said bye", CloseKind.EOF).clean  # a reason may travel with EOF
    assert hash(Closed(5)) == hash(Closed.eof(5))


def test_only_a_clean_end_confirms_at_the_mediator() -> None:
    """The Peer's reset after PeerDisconnect is never taken as its confirmation."""
    from p2psc.core.io import Closed
    from p2psc.core.mediator import MediatorCore

    for closed, introduced in ((Closed.eof, True), (lambda c: Closed.failed(c, "reset"), False)):
        core = MediatorCore()
        sent = _pair_on(core)
        actions = core.handle(closed(sent["peer"]), 1.0)
        kinds = {type(wire.decode(a.data)).__name__ for a in actions if isinstance(a, Send)}
        assert ("PeerIdentification" in kinds) is introduced, kinds


def _pair_on(core: object) -> dict[str, int]:
    """Register two connections that want each other on ``core``; returns their names."""
    from p2psc.core.io import Opened, Received
    from p2psc.core.mediator import MediatorCore

    assert isinstance(core, MediatorCore)
    a, b = Keypair.generate(), Keypair.generate()
    for conn, me, them in ((1, a, b), (2, b, a)):
        actions = core.handle(Opened(conn, ("192.0.2.1", 1000 + conn)), 0.0)
        advertise = wire.Advertise(1, me.public_key.raw, them.public_key.raw)
        actions = core.handle(Received(conn, advertise.encode()), 0.0)
        challenge = next(
            wire.decode(x.data) for x in actions if isinstance(x, Send) and x.conn == conn
        )
        assert isinstance(challenge, wire.AdvertiseChallenge)
        info = nonce_info("AdvertiseChallenge", me.public_key.raw, them.public_key.raw)
        nonce = HPKE.open(me, challenge.encrypted_nonce, info)
        core.handle(Received(conn, wire.AdvertiseResponse(nonce).encode()), 0.0)
    return {"client": 1, "peer": 2}


def test_the_mediator_core_unmaps_ipv4_mapped_addresses() -> None:
    """Issue 20: the address rule lives in the core, not in each adapter: a dual-stack
    listener's ``::ffff:a.b.c.d`` is the IPv4 client a.b.c.d in PeerDisconnect and
    PeerIdentification."""
    from p2psc.core.io import Opened, Received
    from p2psc.core.mediator import MediatorCore

    core = MediatorCore()
    a, b = Keypair.generate(), Keypair.generate()
    sent: list[wire.Message] = []
    for conn, me, them in ((1, a, b), (2, b, a)):
        core.handle(Opened(conn, (f"::ffff:192.0.2.{conn}", 4000 + conn)), 0.0)
        advertise = wire.Advertise(1, me.public_key.raw, them.public_key.raw)
        actions = core.handle(Received(conn, advertise.encode()), 0.0)
        challenge = next(wire.decode(x.data) for x in actions if isinstance(x, Send))
        assert isinstance(challenge, wire.AdvertiseChallenge)
        info = nonce_info("AdvertiseChallenge", me.public_key.raw, them.public_key.raw)
        answer = wire.AdvertiseResponse(HPKE.open(me, challenge.encrypted_nonce, info))
        actions = core.handle(Received(conn, answer.encode()), 0.0)
        sent += [wire.decode(x.data) for x in actions if isinstance(x, Send)]
    (disconnect,) = sent
    assert isinstance(disconnect, wire.PeerDisconnect)
    assert disconnect.peer == wire.Address("192.0.2.2", 4002)
    assert disconnect.client == wire.Address("192.0.2.1", 4001)


# --- the same driver runs the legacy (version 0) core ---------------------------------------


def _legacy_peer_until_acknowledged(grace: float) -> tuple[object, int]:
    """A legacy core in the Peer role, through the driver, up to the PeerAcknowledgement it
    sends at t=1.0; returns the driver and the accepted connection's name."""
    from p2psc.core.io import Listen as ListenOp
    from p2psc.core.peer_driver import AttemptDriver
    from p2psc.legacy import codec
    from p2psc.legacy.crypto import RsaKeypair, decrypt_nonce, encrypt_nonce
    from p2psc.legacy.peer import MEDIATOR as LEGACY_MEDIATOR
    from p2psc.legacy.peer import LegacyPeerConfig, LegacyPeerCore

    me, them = RsaKeypair.generate(), RsaKeypair.generate()
    config = LegacyPeerConfig(me, them.public_key, MEDIATOR, ack_grace=grace)
    d = AttemptDriver(LegacyPeerCore(config))
    assert d.start(0.0) == [Connect(LEGACY_MEDIATOR, MEDIATOR)]
    assert d.next_deadline() == config.step_timeout  # the core's timer, before the outer bound
    d.opened(LEGACY_MEDIATOR, MEDIATOR, LOCAL, 0.0)
    challenge = codec.AdvertiseChallenge(encrypt_nonce(me.public_key, "42"))
    d.received(LEGACY_MEDIATOR, codec.encode(challenge), 0.0)
    ops = d.received(LEGACY_MEDIATOR, codec.encode(codec.PeerDisconnect(LOCAL[1])), 0.5)
    assert ListenOp(LISTENER, LOCAL[1]) in ops
    conn, _ = d.accepted(("127.0.0.1", 50000), LOCAL, 0.6)
    assert conn == FIRST_ACCEPTED  # accepted connections are named as for version 1
    ops = d.received(
        conn, codec.encode(codec.PeerChallenge(encrypt_nonce(me.public_key, "7"))), 0.7
    )
    (reply_op,) = ops
    assert isinstance(reply_op, Send)
    reply = codec.decode(reply_op.data)
    assert isinstance(reply, codec.PeerChallengeResponse)
    response = codec.PeerResponse(decrypt_nonce(them, reply.encrypted_nonce))
    ops = d.received(conn, codec.encode(response), 1.0)
    assert ops == [Send(conn, codec.encode(codec.PeerAcknowledgement()))]
    return d, conn


def test_a_held_outcome_is_ready_only_at_its_hand_over_time() -> None:
    """The legacy Peer's outcome carries ``send_after`` (PeerAcknowledgement + ack_grace): the
    attempt is over at once (result set, everything else to close), but the caller gets the
    connection only from the tick at that time: the driver's one deadline names it."""
    from p2psc.core.peer_driver import AttemptDriver

    d, conn = _legacy_peer_until_acknowledged(grace=0.25)
    assert isinstance(d, AttemptDriver)
    assert d.result is not None and not isinstance(d.result, Exception)
    assert d.result.conn == conn and d.closing == frozenset()
    assert not d.ready and d.next_deadline() == 1.25
    assert d.tick(1.2) == [] and not d.ready  # early ticks are harmless
    assert d.received(conn, b"early bytes", 1.21) == []  # the application's, not the driver's
    assert d.tick(1.25) == [] and d.ready and d.next_deadline() is None


def test_an_outcome_without_hand_over_time_is_ready_at_once() -> None:
    from p2psc.core.peer_driver import AttemptDriver

    d, _ = _legacy_peer_until_acknowledged(grace=0.0)
    assert isinstance(d, AttemptDriver)
    assert d.result is not None and d.ready and d.next_deadline() is None


def test_the_legacy_outer_bound_follows_its_step_deadlines() -> None:
    from p2psc.core.peer_driver import AttemptDriver
    from p2psc.legacy.crypto import RsaKeypair
    from p2psc.legacy.peer import LegacyPeerConfig, LegacyPeerCore

    key = RsaKeypair.generate()
    config = LegacyPeerConfig(key, key.public_key, MEDIATOR, step_timeout=1.0)
    assert config.timeout == config.pairing_timeout + config.connect_timeout + 4.0
    d = AttemptDriver(LegacyPeerCore(config))
    d.start(10.0)
    d.timers.clear()  # as if the core had lost its timer: only the outer bound remains
    assert d.next_deadline() == 10.0 + config.timeout + OUTER_MARGIN
    assert d.tick(10.0 + config.timeout + OUTER_MARGIN) == [Close(1, "outer bound")]
    assert isinstance(d.result, HandshakeTimeout)
