"""PeerCore against a scripted, in-memory Mediator and network: both roles, every failure path.

No sockets and no clock: the tests play the Mediator (sealing real HPKE challenges) and the
network (routing Connect actions and Send bytes between two cores), with explicit ``now``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import pytest

from p2psc import wire
from p2psc.core.io import (
    Close,
    Closed,
    Connect,
    Failed,
    Listen,
    Opened,
    Received,
    Send,
    SetTimer,
    TimerFired,
)
from p2psc.core.peer import (
    CANDIDATE_TIMER,
    FIRST_ACCEPTED,
    LISTENER,
    MEDIATOR_BASE,
    PUNCH_TIMER_BASE,
    RETRY_TIMER,
    TIMER,
    Established,
    PeerAction,
    PeerConfig,
    PeerCore,
    parse_host_port,
    peer_config,
    prologue,
    session_secret,
    take_frame,
)
from p2psc.errors import (
    AdvertiseAborted,
    AdvertiseRetryExhausted,
    HandshakeTimeout,
    IdentityCheckFailed,
    MediatorClosed,
    MediatorUnreachable,
    P2pscError,
    PeerUnreachable,
    ProtocolError,
    UnsupportedVersion,
    UnusableAddress,
)
from p2psc.keys import HPKE, Keypair, nonce_info
from p2psc.noise import HandshakeState

MEDIATOR = ("127.0.0.1", 9999)
A_LOCAL = ("127.0.0.1", 40001)
B_LOCAL = ("127.0.0.1", 40002)
A_KEY = Keypair.generate()
B_KEY = Keypair.generate()
STRANGER = Keypair.generate()
PID = bytes(range(16))
"""The pairing id of the scripted Mediator."""


def counting_nonces(start: int) -> Callable[[int], bytes]:
    counter = itertools.count(start)
    return lambda n: next(counter).to_bytes(n, "big")


def config(me: Keypair, them: Keypair, **options: object) -> PeerConfig:
    base: dict[str, object] = {"nonce_source": counting_nonces(1 if me is A_KEY else 1000)}
    base.update(options)
    return peer_config(me, them.public_key, MEDIATOR, **base)


def failed(actions: Sequence[PeerAction]) -> P2pscError:
    errors = [a.error for a in actions if isinstance(a, Failed)]
    assert len(errors) == 1, actions
    return errors[0]


def sends(actions: Sequence[PeerAction], conn: int) -> list[wire.Message]:
    """The frames sent on ``conn`` (a transport record, which is no frame, is left out)."""
    return [
        wire.decode(a.data)
        for a in actions
        if isinstance(a, Send) and a.conn == conn and a.data[:2] == wire.MAGIC
    ]


def records(actions: Sequence[PeerAction], conn: int) -> list[bytes]:
    """The Noise transport records sent on ``conn``."""
    return [
        a.data
        for a in actions
        if isinstance(a, Send) and a.conn == conn and a.data[:2] != wire.MAGIC
    ]


@dataclass
class Side:
    """One core plus what the scripted Mediator needs to know about it."""

    core: PeerCore
    local: tuple[str, int]
    now: float = 0.0
    log: list[PeerAction] = field(default_factory=list)

    def do(self, event: object) -> list[PeerAction]:
        actions = self.core.handle(event, self.now)  # type: ignore[arg-type]
        self.log += actions
        # every state this core passes through survives a snapshot round trip
        snap = self.core.snapshot()
        hash(snap)
        assert PeerCore.from_snapshot(snap, self.core.config).snapshot() == snap
        return actions


def registered(me: Keypair, them: Keypair, local: tuple[str, int], **options: object) -> Side:
    """Run ``me`` through connect, Advertise and the Mediator's challenge: now ``waiting``."""
    side = Side(PeerCore(config(me, them, **options)), local)
    start = side.core.start(0.0)
    assert start[0] == Connect(MEDIATOR_BASE, MEDIATOR)
    actions = side.do(Opened(MEDIATOR_BASE, MEDIATOR, local))
    (advertise,) = sends(actions, MEDIATOR_BASE)
    assert isinstance(advertise, wire.Advertise)
    assert advertise.our_key == me.public_key.raw and advertise.their_key == them.public_key.raw
    assert advertise.local == wire.Address(*local)
    nonce = bytes(range(32))
    info = nonce_info("AdvertiseChallenge", advertise.our_key, advertise.their_key)
    sealed = HPKE.seal(me.public_key, nonce, info)
    actions = side.do(Received(MEDIATOR_BASE, wire.AdvertiseChallenge(sealed).encode()))
    assert sends(actions, MEDIATOR_BASE) == [wire.AdvertiseResponse(nonce)]
    assert side.core.state == "waiting"
    return side


def introduce(client: Side, peer: Side) -> tuple[list[PeerAction], list[PeerAction]]:
    """The Mediator's pairing: PeerDisconnect to the Peer, then PeerIdentification."""
    to_peer = wire.PeerDisconnect(
        PID, wire.Address(*peer.local), wire.Address(*client.local), wire.Address(*client.local)
    )
    peer_actions = peer.do(Received(MEDIATOR_BASE, to_peer.encode()))
    to_client = wire.PeerIdentification(1, PID, wire.Address(*peer.local), None)
    client_actions = client.do(Received(MEDIATOR_BASE, to_client.encode()))
    return client_actions, peer_actions


def connects(actions: Sequence[PeerAction]) -> list[Connect]:
    return [a for a in actions if isinstance(a, Connect)]


def wire_up(client: Side, peer: Side, client_actions: list[PeerAction]) -> tuple[int, int]:
    """The Client's first attempt reaches the Peer's listener: Opened on both sides."""
    attempt = connects(client_actions)[0]
    client.do(Opened(attempt.conn, attempt.remote, client.local))
    peer.do(Opened(FIRST_ACCEPTED, client.local, peer.local))
    return attempt.conn, FIRST_ACCEPTED


def shuttle(
    client: Side, peer: Side, cconn: int, pconn: int, rounds: int = 10
) -> tuple[Established | None, Established | None]:
    """Move Send bytes between the two cores until both are finished (bounded)."""
    c_seen = p_seen = 0
    for _ in range(rounds):
        moved = False
        for a in client.log[c_seen:]:
            if isinstance(a, Send) and a.conn == cconn:
                peer.do(Received(pconn, a.data))
                moved = True
        c_seen = len(client.log)
        for a in peer.log[p_seen:]:
            if isinstance(a, Send) and a.conn == pconn:
                client.do(Received(cconn, a.data))
                moved = True
        p_seen = len(peer.log)
        if not moved:
            break
    c_est = next((a for a in client.log if isinstance(a, Established)), None)
    p_est = next((a for a in peer.log if isinstance(a, Established)), None)
    return c_est, p_est


def paired() -> tuple[Side, Side, int, int]:
    client = registered(A_KEY, B_KEY, A_LOCAL)
    peer = registered(B_KEY, A_KEY, B_LOCAL)
    client_actions, _ = introduce(client, peer)
    cconn, pconn = wire_up(client, peer, client_actions)
    return client, peer, cconn, pconn


# --- the happy path ----------------------------------------------------------------------


def test_full_pairing_both_roles() -> None:
    client = registered(A_KEY, B_KEY, A_LOCAL)
    peer = registered(B_KEY, A_KEY, B_LOCAL)
    client_actions, peer_actions = introduce(client, peer)

    # The Peer listens on its Mediator-facing port BEFORE closing the Mediator connection,
    # then connects out from that port to the Client.
    listen = next(i for i, a in enumerate(peer_actions) if isinstance(a, Listen))
    close = next(i for i, a in enumerate(peer_actions) if isinstance(a, Close))
    assert peer_actions[listen] == Listen(LISTENER, B_LOCAL[1])
    assert peer_actions[close] == Close(MEDIATOR_BASE, peer_actions[close].reason)
    assert listen < close
    assert [(c.remote, c.from_port) for c in connects(peer_actions)] == [(A_LOCAL, B_LOCAL[1])]
    assert peer.core.role == "peer" and peer.core.state == "punching"

    # The Client closes the Mediator connection and connects out from its own port.
    assert Close(MEDIATOR_BASE, "PeerIdentification: punching") in client_actions
    assert [(c.remote, c.from_port) for c in connects(client_actions)] == [(B_LOCAL, A_LOCAL[1])]
    assert client.core.role == "client"

    cconn, pconn = wire_up(client, peer, client_actions)
    c_est, p_est = shuttle(client, peer, cconn, pconn)
    assert c_est is not None and p_est is not None
    assert (c_est.role, p_est.role) == ("client", "peer")
    assert c_est.peer_key == B_KEY.public_key and p_est.peer_key == A_KEY.public_key
    assert c_est.session_secret == p_est.session_secret and len(c_est.session_secret) == 32
    assert c_est.handshake_hash == p_est.handshake_hash
    assert c_est.session_secret == session_secret(c_est.handshake_hash)
    assert c_est.leftover == b"" == p_est.leftover
    # on the direct connection: HandshakeInit, HandshakeResponse, the Client's confirmation
    client_sent = [type(m).__name__ for m in sends(client.log, cconn)]
    peer_sent = [type(m).__name__ for m in sends(peer.log, pconn)]
    assert client_sent == ["HandshakeInit"] and peer_sent == ["HandshakeResponse"]
    assert len(records(client.log, cconn)) == 1 and records(peer.log, pconn) == []
    assert client.core.finished and peer.core.finished
    # the channels work both ways and are each other's mirror
    sealed = c_est.channel.seal(b"hello peer")
    assert p_est.channel.feed(sealed) == [b"hello peer"]
    assert c_est.channel.feed(p_est.channel.seal(b"hello client")) == [b"hello client"]


def test_two_runs_with_other_ephemerals_give_other_secrets() -> None:
    client, peer, cconn, pconn = paired()
    first, _ = shuttle(client, peer, cconn, pconn)
    client2 = registered(A_KEY, B_KEY, A_LOCAL, nonce_source=counting_nonces(77))
    peer2 = registered(B_KEY, A_KEY, B_LOCAL)
    ca, _ = introduce(client2, peer2)
    c2, p2 = wire_up(client2, peer2, ca)
    second, _ = shuttle(client2, peer2, c2, p2)
    assert first is not None and second is not None
    assert first.session_secret != second.session_secret


def test_application_records_coalesced_with_the_handshake_are_kept() -> None:
    """Bytes after the last handshake message arrive in the same read: they are handed over
    as raw ``leftover`` for the channel, whatever the cuts."""
    client, peer, cconn, pconn = paired()
    (init,) = sends(client.log, cconn)
    peer.do(Received(pconn, init.encode()))
    (response,) = sends(peer.log, pconn)
    c_actions = client.do(Received(cconn, response.encode() + b"early"))
    c_est = next(a for a in c_actions if isinstance(a, Established))
    assert c_est.leftover == b"early"
    (confirmation,) = records(c_actions, cconn)
    data = c_est.channel.seal(b"early client bytes")
    stream = confirmation + data
    p_est = None
    later = b""  # what the adapter reads after Established goes to the channel, not the core
    for chunk in (stream[:1], stream[1:3], stream[3:40], stream[40:]):
        if p_est is not None:
            later += chunk
            continue
        p_est = next(
            (a for a in peer.do(Received(pconn, chunk)) if isinstance(a, Established)), None
        )
    assert p_est is not None and p_est.leftover == stream[len(confirmation) : 40]
    assert p_est.channel.feed(p_est.leftover + later) == [b"early client bytes"]
    assert p_est.session_secret == c_est.session_secret
    # later reads go straight to the application: the finished core does not consume them
    assert peer.do(Received(pconn, b"more")) == []


def test_take_frame() -> None:
    frame = wire.HandshakeResponse(bytes(48)).encode()
    assert take_frame(b"") is None
    assert take_frame(frame[:3]) is None
    assert take_frame(frame + b"xy") == (frame, wire.HandshakeResponse(bytes(48)), b"xy")
    with pytest.raises(ProtocolError):
        take_frame(b"XX")
    with pytest.raises(UnsupportedVersion):
        take_frame(b"P2\x02\x08\x00\x00")
    with pytest.raises(ProtocolError):
        take_frame(b"P2\x01\x08\xff\xff")  # length over the maximum


def test_snapshot_of_a_failed_core() -> None:
    broken = registered(A_KEY, B_KEY, A_LOCAL)
    broken.do(Closed(MEDIATOR_BASE, None))
    snap = broken.core.snapshot()
    again = PeerCore.from_snapshot(snap, broken.core.config)
    assert again.snapshot() == snap
    assert isinstance(again.error, MediatorClosed) and again.finished


def test_snapshot_then_continue_behaves_identically() -> None:
    """Rebuild the Client from its snapshot right before PeerIdentification: same actions (the
    ephemeral comes from the injected source, so the HandshakeInit is byte for byte the same)."""
    peer = registered(B_KEY, A_KEY, B_LOCAL)
    original = registered(A_KEY, B_KEY, A_LOCAL)
    # the copy gets its own nonce source in the same position (the source is not state)
    same_nonces = replace(original.core.config, nonce_source=counting_nonces(1))
    copy = Side(PeerCore.from_snapshot(original.core.snapshot(), same_nonces), A_LOCAL)
    ident = wire.PeerIdentification(1, PID, wire.Address(*peer.local)).encode()
    first = original.do(Received(MEDIATOR_BASE, ident))
    second = copy.do(Received(MEDIATOR_BASE, ident))
    assert first == second
    assert original.core.snapshot() == copy.core.snapshot()


# --- Mediator-side failures --------------------------------------------------------------


def test_mediator_unreachable_on_refused_connect() -> None:
    core = PeerCore(config(A_KEY, B_KEY))
    core.start(0.0)
    error = failed(core.handle(Closed(MEDIATOR_BASE, "Connection refused"), 0.1))
    assert isinstance(error, MediatorUnreachable) and "refused" in error.reason


def test_mediator_unreachable_on_connect_timeout() -> None:
    core = PeerCore(config(A_KEY, B_KEY, step_timeout=2.0))
    actions = core.start(0.0)
    assert SetTimer(TIMER, 2.0) in actions
    assert isinstance(failed(core.handle(TimerFired(TIMER), 2.0)), MediatorUnreachable)


def test_no_challenge_in_time() -> None:
    side = Side(PeerCore(config(A_KEY, B_KEY, step_timeout=3.0)), A_LOCAL)
    side.core.start(0.0)
    side.do(Opened(MEDIATOR_BASE, MEDIATOR, A_LOCAL))
    side.now = 3.0
    actions = side.do(TimerFired(TIMER))
    assert isinstance(failed(actions), HandshakeTimeout)
    assert Close(MEDIATOR_BASE, failed(actions).reason) in actions


def test_challenge_sealed_to_another_key() -> None:
    side = Side(PeerCore(config(A_KEY, B_KEY)), A_LOCAL)
    side.core.start(0.0)
    side.do(Opened(MEDIATOR_BASE, MEDIATOR, A_LOCAL))
    info = nonce_info("AdvertiseChallenge", A_KEY.public_key.raw, B_KEY.public_key.raw)
    sealed = HPKE.seal(STRANGER.public_key, bytes(32), info)
    actions = side.do(Received(MEDIATOR_BASE, wire.AdvertiseChallenge(sealed).encode()))
    assert isinstance(failed(actions), IdentityCheckFailed)
    assert not sends(actions, MEDIATOR_BASE)


def test_challenge_for_another_registration_context() -> None:
    side = Side(PeerCore(config(A_KEY, B_KEY)), A_LOCAL)
    side.core.start(0.0)
    side.do(Opened(MEDIATOR_BASE, MEDIATOR, A_LOCAL))
    info = nonce_info("AdvertiseChallenge", A_KEY.public_key.raw, STRANGER.public_key.raw)
    sealed = HPKE.seal(A_KEY.public_key, bytes(32), info)
    actions = side.do(Received(MEDIATOR_BASE, wire.AdvertiseChallenge(sealed).encode()))
    assert isinstance(failed(actions), IdentityCheckFailed)


@pytest.mark.parametrize("code", [wire.Reason.IDENTITY_CHECK_FAILED, wire.Reason.SELF_PAIRING, 999])
def test_advertise_abort_carries_the_code(code: int) -> None:
    side = registered(A_KEY, B_KEY, A_LOCAL)
    actions = side.do(Received(MEDIATOR_BASE, wire.AdvertiseAbort(code, "no").encode()))
    error = failed(actions)
    assert isinstance(error, AdvertiseAborted) and error.code == code
    assert "no" in error.reason


def test_advertise_retry_backs_off_and_reconnects_then_gives_up() -> None:
    side = registered(A_KEY, B_KEY, A_LOCAL, advertise_retries=2, retry_backoff=0.5)
    busy = wire.AdvertiseRetry(wire.Reason.BUSY, "busy").encode()
    actions = side.do(Received(MEDIATOR_BASE, busy))
    assert Close(MEDIATOR_BASE, "AdvertiseRetry: backing off") in actions
    assert SetTimer(RETRY_TIMER, 0.5) in actions
    assert side.core.state == "backing_off"
    side.now = 0.5
    actions = side.do(TimerFired(RETRY_TIMER))
    assert actions[0] == Connect(MEDIATOR_BASE + 1, MEDIATOR)
    # a late close of the first Mediator connection is ignored
    assert side.do(Closed(MEDIATOR_BASE, None)) == []
    side.do(Opened(MEDIATOR_BASE + 1, MEDIATOR, A_LOCAL))
    actions = side.do(Received(MEDIATOR_BASE + 1, busy))  # retry before the challenge
    assert SetTimer(RETRY_TIMER, 1.5) in actions  # doubled
    side.now = 1.5
    side.do(TimerFired(RETRY_TIMER))
    side.do(Opened(MEDIATOR_BASE + 2, MEDIATOR, A_LOCAL))
    error = failed(side.do(Received(MEDIATOR_BASE + 2, busy)))
    assert isinstance(error, AdvertiseRetryExhausted) and error.code == wire.Reason.BUSY


def test_advertise_retry_that_cannot_fit_the_deadline() -> None:
    side = registered(A_KEY, B_KEY, A_LOCAL, timeout=1.0, retry_backoff=5.0)
    busy = wire.AdvertiseRetry(wire.Reason.BUSY, "busy").encode()
    assert isinstance(failed(side.do(Received(MEDIATOR_BASE, busy))), AdvertiseRetryExhausted)


def test_mediator_closes_while_waiting() -> None:
    side = registered(A_KEY, B_KEY, A_LOCAL)
    error = failed(side.do(Closed(MEDIATOR_BASE, None)))
    assert isinstance(error, MediatorClosed)


def test_mediator_closes_mid_frame() -> None:
    side = registered(A_KEY, B_KEY, A_LOCAL)
    side.do(
        Received(
            MEDIATOR_BASE, wire.PeerIdentification(1, PID, wire.Address(*B_LOCAL)).encode()[:5]
        )
    )
    error = failed(side.do(Closed(MEDIATOR_BASE, None)))
    assert isinstance(error, MediatorClosed) and "middle of a frame" in error.reason


def test_peer_never_registers() -> None:
    side = registered(A_KEY, B_KEY, A_LOCAL, timeout=7.0)
    timers = [a for a in side.log if isinstance(a, SetTimer) and a.conn == TIMER]
    assert timers[-1].deadline == 7.0  # waiting lasts until the overall deadline
    side.now = 7.0
    error = failed(side.do(TimerFired(TIMER)))
    assert isinstance(error, HandshakeTimeout) and "did not register" in error.reason


@pytest.mark.parametrize(
    "data",
    [
        b"garbage!",
        b"P2\x01\x63\x00\x00",  # unknown type
        b"P2\x01\x05\xff\xff",  # oversized
        wire.AdvertiseResponse(bytes(32)).encode(),  # a message only a Mediator receives
        wire.HandshakeInit(bytes(48)).encode(),  # a direct-connection message
    ],
)
def test_bad_bytes_from_the_mediator(data: bytes) -> None:
    side = registered(A_KEY, B_KEY, A_LOCAL)
    actions = side.do(Received(MEDIATOR_BASE, data))
    assert isinstance(failed(actions), ProtocolError)
    assert any(isinstance(a, Close) and a.conn == MEDIATOR_BASE for a in actions)
    assert side.core.finished


def test_unsupported_frame_version_from_the_mediator() -> None:
    side = registered(A_KEY, B_KEY, A_LOCAL)
    frame = bytearray(wire.PeerIdentification(1, PID, wire.Address(*B_LOCAL)).encode())
    frame[2] = 2
    assert isinstance(failed(side.do(Received(MEDIATOR_BASE, bytes(frame)))), UnsupportedVersion)


def test_unsupported_version_in_peer_identification() -> None:
    side = registered(A_KEY, B_KEY, A_LOCAL)
    ident = wire.PeerIdentification(2, PID, wire.Address(*B_LOCAL)).encode()
    assert isinstance(failed(side.do(Received(MEDIATOR_BASE, ident))), UnsupportedVersion)


def test_second_challenge_is_a_protocol_error() -> None:
    side = registered(A_KEY, B_KEY, A_LOCAL)
    again = wire.AdvertiseChallenge(bytes(80)).encode()
    assert isinstance(failed(side.do(Received(MEDIATOR_BASE, again))), ProtocolError)


# --- hole punching -----------------------------------------------------------------------


def test_client_retries_with_backoff_then_peer_unreachable() -> None:
    client = registered(
        A_KEY,
        B_KEY,
        A_LOCAL,
        punch_timeout=3.0,
        punch_interval=0.1,
        punch_backoff=2.0,
        punch_max_interval=0.3,
    )
    ident = wire.PeerIdentification(
        1, PID, wire.Address(*B_LOCAL), wire.Address("10.0.0.2", 5)
    ).encode()
    actions = client.do(Received(MEDIATOR_BASE, ident))
    attempts = connects(actions)
    assert [c.remote for c in attempts] == [B_LOCAL, ("10.0.0.2", 5)]  # observed, then local
    assert SetTimer(TIMER, 3.0) in actions
    waits = []
    conn = attempts[0].conn
    for _ in range(4):
        actions = client.do(Closed(conn, "Connection refused"))
        (timer,) = [a for a in actions if isinstance(a, SetTimer)]
        assert timer.conn == PUNCH_TIMER_BASE and timer.deadline is not None
        waits.append(round(timer.deadline - client.now, 6))
        client.now = timer.deadline
        actions = client.do(TimerFired(PUNCH_TIMER_BASE))
        (again,) = connects(actions)
        assert again.remote == B_LOCAL and again.from_port == A_LOCAL[1]
        assert again.conn != conn
        conn = again.conn
    assert waits == [0.1, 0.2, 0.3, 0.3]  # backoff, capped
    client.now = 3.0
    error = failed(client.do(TimerFired(TIMER)))
    assert isinstance(error, PeerUnreachable) and "127.0.0.1:40002" in error.reason
    # everything in flight is closed
    assert Close(conn, error.reason) in client.log


def test_attempt_that_hangs_is_dropped_and_retried() -> None:
    client = registered(A_KEY, B_KEY, A_LOCAL, punch_attempt_timeout=1.0)
    ident = wire.PeerIdentification(1, PID, wire.Address(*B_LOCAL)).encode()
    (attempt,) = connects(client.do(Received(MEDIATOR_BASE, ident)))
    client.now = 1.0
    actions = client.do(TimerFired(PUNCH_TIMER_BASE))
    assert Close(attempt.conn, "direct attempt timed out") in actions
    client.now = 2.0
    (again,) = connects(client.do(TimerFired(PUNCH_TIMER_BASE)))
    assert again.conn != attempt.conn
    # the dropped attempt connecting late is refused
    assert client.do(Opened(attempt.conn, B_LOCAL, A_LOCAL)) == [
        Close(attempt.conn, "not expected")
    ]


def test_an_attempt_outlasts_tcps_own_recovery_by_default() -> None:
    """By default an attempt is dropped only after TCP itself resent a lost SYN or SYN-ACK twice
    (1 s and 3 s after the first, plus a round trip): a simultaneous open whose answers were
    lost completes as the same attempt, not as one we already closed (with the old 2 s, the
    other side held it as established and we closed it: loss-3 namespace failures)."""
    client = registered(A_KEY, B_KEY, A_LOCAL)
    ident = wire.PeerIdentification(1, PID, wire.Address(*B_LOCAL)).encode()
    actions = client.do(Received(MEDIATOR_BASE, ident))
    (attempt,) = connects(actions)
    (deadline,) = [
        a.deadline for a in actions if isinstance(a, SetTimer) and a.conn == PUNCH_TIMER_BASE
    ]
    assert deadline is not None and deadline - client.now > 3.5
    client.now += 3.3  # the second retransmission answered: the connection is open
    opened = client.do(Opened(attempt.conn, B_LOCAL, A_LOCAL))
    assert not any(isinstance(a, Close) and a.conn == attempt.conn for a in opened)
    assert any(isinstance(a, Send) and a.conn == attempt.conn for a in opened)  # HandshakeInit


def test_client_listens_before_closing_the_mediator_connection() -> None:
    client = registered(A_KEY, B_KEY, A_LOCAL)
    ident = wire.PeerIdentification(1, PID, wire.Address(*B_LOCAL)).encode()
    actions = client.do(Received(MEDIATOR_BASE, ident))
    listen = actions.index(Listen(LISTENER, A_LOCAL[1]))
    close = next(i for i, a in enumerate(actions) if isinstance(a, Close))
    assert listen < close and actions[close].conn == MEDIATOR_BASE
    assert connects(actions)[0].from_port == A_LOCAL[1]


def test_client_challenges_every_candidate_and_commits_to_the_first_valid_answer() -> None:
    """Outgoing attempts and accepted connections are all candidates; each gets the same
    HandshakeInit; a wrong answer drops only that candidate; the first valid one wins."""
    peer = registered(B_KEY, A_KEY, B_LOCAL)
    ident_local = wire.Address("10.0.0.2", 5)  # a private address that is someone else's
    ident = wire.PeerIdentification(1, PID, wire.Address(*B_LOCAL), ident_local).encode()
    client = registered(A_KEY, B_KEY, A_LOCAL)
    peer.do(
        Received(
            MEDIATOR_BASE,
            wire.PeerDisconnect(PID, wire.Address(*B_LOCAL), wire.Address(*A_LOCAL)).encode(),
        )
    )
    first, second = connects(client.do(Received(MEDIATOR_BASE, ident)))
    inits = []
    for conn, remote in ((second.conn, second.remote), (first.conn, first.remote)):
        (init,) = sends(client.do(Opened(conn, remote, A_LOCAL)), conn)
        inits.append(init)
    accepted = FIRST_ACCEPTED
    (init,) = sends(client.do(Opened(accepted, B_LOCAL, A_LOCAL)), accepted)
    inits.append(init)
    assert inits[0] == inits[1] == inits[2]
    assert isinstance(inits[0], wire.HandshakeInit)
    # the host behind the private address cannot answer: dropped, the others stay
    forged = wire.HandshakeResponse(bytes(48)).encode()
    actions = client.do(Received(second.conn, forged))
    assert [a.conn for a in actions if isinstance(a, Close)] == [second.conn]
    assert not any(isinstance(a, Failed | Established) for a in actions)
    assert client.core.state == "punching"
    # the real Peer answers on the accepted connection: commit there, close the rest
    peer.do(Opened(FIRST_ACCEPTED + 1, A_LOCAL, B_LOCAL))
    peer.do(Received(FIRST_ACCEPTED + 1, inits[2].encode()))
    (answer,) = sends(peer.log, FIRST_ACCEPTED + 1)
    actions = client.do(Received(accepted, answer.encode()))
    assert client.core.finished
    assert Close(first.conn, "another direct connection won") in actions
    assert Close(LISTENER, "another direct connection won") in actions
    assert len(records(actions, accepted)) == 1  # the key confirmation
    (est,) = [a for a in actions if isinstance(a, Established)]
    assert est.conn == accepted and est.role == "client"


def test_client_drops_a_candidate_that_closes_or_sends_garbage() -> None:
    client = registered(A_KEY, B_KEY, A_LOCAL, punch_timeout=3.0)
    ident = wire.PeerIdentification(1, PID, wire.Address(*B_LOCAL)).encode()
    (attempt,) = connects(client.do(Received(MEDIATOR_BASE, ident)))
    client.do(Opened(attempt.conn, attempt.remote, A_LOCAL))
    client.do(Opened(FIRST_ACCEPTED, ("192.0.2.9", 1), A_LOCAL))
    actions = client.do(Received(FIRST_ACCEPTED, b"\x00" * 10))
    assert [a.conn for a in actions if isinstance(a, Close)] == [FIRST_ACCEPTED]
    assert client.do(Closed(attempt.conn, None)) == []
    assert client.core.state == "punching" and not client.core.candidates
    client.now = 3.0
    error = failed(client.do(TimerFired(TIMER)))
    assert isinstance(error, PeerUnreachable)


def test_client_goes_on_when_its_listener_fails() -> None:
    client = registered(A_KEY, B_KEY, A_LOCAL)
    ident = wire.PeerIdentification(1, PID, wire.Address(*B_LOCAL)).encode()
    client.do(Received(MEDIATOR_BASE, ident))
    assert client.do(Closed(LISTENER, "address in use")) == []
    assert client.core.state == "punching" and LISTENER not in client.core.open_conns
    # accepted connections are not expected any more; outgoing attempts still count
    assert client.do(Opened(FIRST_ACCEPTED, B_LOCAL, A_LOCAL)) == [
        Close(FIRST_ACCEPTED, "not expected")
    ]


def test_client_that_never_connects() -> None:
    peer = registered(B_KEY, A_KEY, B_LOCAL, punch_timeout=4.0)
    disconnect = wire.PeerDisconnect(PID, wire.Address(*B_LOCAL), wire.Address(*A_LOCAL))
    actions = peer.do(Received(MEDIATOR_BASE, disconnect.encode()))
    assert SetTimer(TIMER, 4.0) in actions
    peer.now = 4.0
    actions = peer.do(TimerFired(TIMER))
    error = failed(actions)
    assert isinstance(error, PeerUnreachable) and "Client" in error.reason
    assert any(isinstance(a, Close) and a.conn == LISTENER for a in actions)


def _stranger_init(pairing_id: bytes = PID, key: Keypair = STRANGER) -> bytes:
    """A HandshakeInit as someone else would make it: another key, or another pairing."""
    handshake = HandshakeState.initiator(
        key.to_private_raw(),
        B_KEY.public_key.raw,
        prologue(pairing_id, A_KEY.public_key.raw, B_KEY.public_key.raw),
        bytes([7]) * 32,
    )
    return wire.HandshakeInit(handshake.write_message(b"")).encode()


def test_peer_drops_stray_connections_and_still_pairs() -> None:
    client = registered(A_KEY, B_KEY, A_LOCAL)
    peer = registered(B_KEY, A_KEY, B_LOCAL)
    client_actions, _ = introduce(client, peer)
    # strangers reach the listener first: garbage, a wrong first message, a HandshakeInit
    # from another key, and the real Client's key but another pairing (a replay)
    strays = {
        FIRST_ACCEPTED + 1: b"GET / HTTP/1.1\r\n",
        FIRST_ACCEPTED + 2: wire.HandshakeResponse(bytes(48)).encode(),
        FIRST_ACCEPTED + 3: _stranger_init(),
        FIRST_ACCEPTED + 4: _stranger_init(bytes(16), A_KEY),
    }
    for conn, data in strays.items():
        assert (
            peer.do(Opened(conn, ("192.0.2.1", conn % 60000), B_LOCAL))[0].conn == CANDIDATE_TIMER
        )
        actions = peer.do(Received(conn, data))
        assert next(a for a in actions if isinstance(a, Close)).conn == conn
        assert not any(isinstance(a, Failed) for a in actions)
        assert sends(actions, conn) == []  # nothing is answered to any of them
    assert peer.core.state == "punching"
    attempt = connects(client_actions)[0]
    client.do(Opened(attempt.conn, attempt.remote, A_LOCAL))
    peer.do(Opened(FIRST_ACCEPTED, A_LOCAL, B_LOCAL))
    c_est, p_est = shuttle(client, peer, attempt.conn, FIRST_ACCEPTED)
    assert c_est and p_est and c_est.session_secret == p_est.session_secret


def test_a_relayed_init_is_answered_but_never_confirmed() -> None:
    """An observer copies the Client's HandshakeInit onto a connection of its own: the Peer
    answers there too, but commits only where the Client's key confirmation arrives."""
    client, peer, cconn, pconn = paired()
    (init,) = sends(client.log, cconn)
    relay = FIRST_ACCEPTED + 9
    peer.do(Opened(relay, ("192.0.2.66", 4444), B_LOCAL))
    actions = peer.do(Received(relay, init.encode()))
    assert [type(m) for m in sends(actions, relay)] == [wire.HandshakeResponse]
    # the relay cannot make the confirmation: a record under other keys is rejected
    forged = SecureChannel_for_test()
    actions = peer.do(Received(relay, forged))
    assert [a.conn for a in actions if isinstance(a, Close)] == [relay]
    assert not peer.core.finished
    c_est, p_est = shuttle(client, peer, cconn, pconn)
    assert c_est and p_est and p_est.conn == pconn


def SecureChannel_for_test() -> bytes:
    """A well-formed record (length prefix and AEAD tag) under keys nobody agreed."""
    from p2psc.core.channel import SecureChannel
    from p2psc.noise import CipherState

    return SecureChannel(CipherState(bytes(32)), CipherState(bytes(32))).seal(b"")


def test_peer_reports_identity_failure_at_the_deadline() -> None:
    peer = registered(B_KEY, A_KEY, B_LOCAL, punch_timeout=2.0)
    disconnect = wire.PeerDisconnect(PID, wire.Address(*B_LOCAL), wire.Address(*A_LOCAL))
    peer.do(Received(MEDIATOR_BASE, disconnect.encode()))
    peer.do(Opened(FIRST_ACCEPTED, A_LOCAL, B_LOCAL))
    peer.do(Received(FIRST_ACCEPTED, _stranger_init()))
    peer.now = 2.0
    error = failed(peer.do(TimerFired(TIMER)))
    assert isinstance(error, IdentityCheckFailed) and "1 candidate" in error.reason


def _punching_peer(**options: object) -> Side:
    peer = registered(B_KEY, A_KEY, B_LOCAL, **options)
    disconnect = wire.PeerDisconnect(PID, wire.Address(*B_LOCAL), wire.Address(*A_LOCAL))
    peer.do(Received(MEDIATOR_BASE, disconnect.encode()))
    return peer


def test_peer_bounds_candidates_per_source_evicting_the_oldest_silent_one() -> None:
    peer = _punching_peer(max_candidates_per_source=2)
    stranger = ("192.0.2.7", 1000)
    peer.do(Opened(FIRST_ACCEPTED, stranger, B_LOCAL))
    peer.do(Opened(FIRST_ACCEPTED + 1, stranger, B_LOCAL))
    actions = peer.do(Opened(FIRST_ACCEPTED + 2, stranger, B_LOCAL))
    assert [a for a in actions if isinstance(a, Close)] == [
        Close(FIRST_ACCEPTED, f"evicted: too many candidates from {stranger[0]}")
    ]
    assert set(peer.core.candidates) == {FIRST_ACCEPTED + 1, FIRST_ACCEPTED + 2}
    # another source is not affected by this one's bound
    assert not [
        a for a in peer.do(Opened(FIRST_ACCEPTED + 3, A_LOCAL, B_LOCAL)) if isinstance(a, Close)
    ]


def test_peer_never_evicts_an_answered_candidate() -> None:
    client, peer, cconn, pconn = paired()
    peer.core.config = replace(peer.core.config, max_candidates=1)
    (init,) = sends(client.log, cconn)
    (response,) = sends(peer.do(Received(pconn, init.encode())), pconn)  # answered: not silent
    actions = peer.do(Opened(FIRST_ACCEPTED + 5, ("192.0.2.8", 1), B_LOCAL))
    assert actions == [Close(FIRST_ACCEPTED + 5, "too many candidate connections in total")]
    (confirmation,) = records(client.do(Received(cconn, response.encode())), cconn)
    assert any(isinstance(a, Established) for a in peer.do(Received(pconn, confirmation)))


def test_silent_candidates_are_dropped_at_their_deadline() -> None:
    peer = _punching_peer(candidate_timeout=1.5)
    actions = peer.do(Opened(FIRST_ACCEPTED, ("192.0.2.7", 1), B_LOCAL))
    assert SetTimer(CANDIDATE_TIMER, 1.5) in actions
    peer.now = 1.0  # an early timer event is harmless: re-armed, nothing dropped
    assert peer.do(TimerFired(CANDIDATE_TIMER)) == [SetTimer(CANDIDATE_TIMER, 1.5)]
    peer.now = 1.5
    actions = peer.do(TimerFired(CANDIDATE_TIMER))
    assert (
        Close(FIRST_ACCEPTED, "candidate rejected: silent past the candidate deadline") in actions
    )
    assert not peer.core.candidates and peer.core.state == "punching"
    assert peer.do(TimerFired(CANDIDATE_TIMER)) == []  # a duplicate is ignored


def test_peer_outgoing_connection_can_win() -> None:
    """Simultaneous open: the connection the Peer opened carries the Client's challenge."""
    client = registered(A_KEY, B_KEY, A_LOCAL)
    peer = registered(B_KEY, A_KEY, B_LOCAL)
    client_actions, peer_actions = introduce(client, peer)
    c_attempt, p_attempt = connects(client_actions)[0], connects(peer_actions)[0]
    client.do(Opened(c_attempt.conn, c_attempt.remote, A_LOCAL))
    actions = peer.do(Opened(p_attempt.conn, p_attempt.remote, B_LOCAL))
    assert SetTimer(PUNCH_TIMER_BASE, None) in actions  # that target is not punched again
    c_est, p_est = shuttle(client, peer, c_attempt.conn, p_attempt.conn)
    assert c_est and p_est and c_est.session_secret == p_est.session_secret


def test_listener_that_cannot_bind() -> None:
    peer = registered(B_KEY, A_KEY, B_LOCAL)
    disconnect = wire.PeerDisconnect(PID, wire.Address(*B_LOCAL), wire.Address(*A_LOCAL))
    peer.do(Received(MEDIATOR_BASE, disconnect.encode()))
    error = failed(peer.do(Closed(LISTENER, "Address already in use")))
    assert isinstance(error, PeerUnreachable) and "listen" in error.reason


# --- direct handshake failures -----------------------------------------------------------


def test_every_deadline_is_clipped_to_the_overall_timeout() -> None:
    client, peer, cconn, pconn = paired()
    shuttle(client, peer, cconn, pconn)
    for side in (client, peer):
        deadlines = [
            a.deadline
            for a in side.log
            if isinstance(a, SetTimer) and a.conn == TIMER and a.deadline is not None
        ]
        assert deadlines and max(deadlines) <= side.core.config.timeout


def test_finished_core_ignores_events_and_refuses_connections() -> None:
    client, peer, cconn, pconn = paired()
    shuttle(client, peer, cconn, pconn)
    assert client.do(Received(cconn, b"more")) == []
    assert client.do(TimerFired(TIMER)) == []
    assert client.do(Opened(999, B_LOCAL, A_LOCAL)) == [Close(999, "attempt is over")]


def test_config_validation_and_parsing() -> None:
    with pytest.raises(ValueError):
        config(A_KEY, B_KEY, advertise_retries=-1)
    with pytest.raises(ValueError):
        config(A_KEY, B_KEY, punch_backoff=0.5)
    assert parse_host_port("example.org:80") == ("example.org", 80)
    assert parse_host_port("[::1]:7") == ("::1", 7)
    assert parse_host_port(("127.0.0.1", 5)) == ("127.0.0.1", 5)
    for bad in ("nohost", "host:0", "host:x", ":5"):
        with pytest.raises(ValueError):
            parse_host_port(bad)
    by_hex = peer_config(A_KEY, B_KEY.public_key.hex(), "127.0.0.1:1")
    by_raw = peer_config(A_KEY, B_KEY.public_key.raw, "127.0.0.1:1")
    assert by_hex.peer_key == by_raw.peer_key == B_KEY.public_key
    assert replace(by_hex, timeout=1.0).timeout == 1.0


def test_adapter_without_local_address() -> None:
    """An adapter that does not report the local address: no crash, a typed error (Peer) or
    attempts without a fixed port (Client)."""
    for me, them in ((B_KEY, A_KEY), (A_KEY, B_KEY)):
        side = Side(PeerCore(config(me, them)), B_LOCAL)
        side.core.start(0.0)
        actions = side.do(Opened(MEDIATOR_BASE, MEDIATOR, None))
        (advertise,) = sends(actions, MEDIATOR_BASE)
        assert isinstance(advertise, wire.Advertise) and advertise.local is None
        info = nonce_info("AdvertiseChallenge", me.public_key.raw, them.public_key.raw)
        sealed = HPKE.seal(me.public_key, bytes(32), info)
        side.do(Received(MEDIATOR_BASE, wire.AdvertiseChallenge(sealed).encode()))
        if me is B_KEY:
            disconnect = wire.PeerDisconnect(PID, wire.Address(*B_LOCAL), wire.Address(*A_LOCAL))
            error = failed(side.do(Received(MEDIATOR_BASE, disconnect.encode())))
            assert isinstance(error, PeerUnreachable)
        else:
            ident = wire.PeerIdentification(1, PID, wire.Address(*B_LOCAL)).encode()
            (attempt,) = connects(side.do(Received(MEDIATOR_BASE, ident)))
            assert attempt.from_port is None


@pytest.mark.parametrize(
    ("host", "port", "why"),
    [
        ("0.0.0.0", 80, "unspecified"),
        ("::", 80, "unspecified"),
        ("224.0.0.1", 80, "multicast"),
        ("ff02::1", 80, "multicast"),
        ("255.255.255.255", 80, "broadcast"),
        ("::ffff:0.0.0.0", 80, "unspecified"),
        ("127.0.0.1", 22, "loopback"),
        ("::1", 22, "loopback"),
    ],
)
@pytest.mark.parametrize("role", ["client", "peer"])
def test_addresses_that_cannot_be_a_partner_are_refused(
    host: str, port: int, why: str, role: str
) -> None:
    """A Mediator (or whoever rewrites its stream) cannot steer us to the unspecified address
    (our own host), multicast, broadcast, or loopback while the Mediator is not on loopback."""
    mediator = ("198.51.100.1", 9999)
    me, them = (A_KEY, B_KEY) if role == "client" else (B_KEY, A_KEY)
    side = Side(PeerCore(peer_config(me, them.public_key, mediator)), ("198.51.100.2", 5000))
    side.core.start(0.0)
    side.do(Opened(MEDIATOR_BASE, mediator, side.local))
    info = nonce_info("AdvertiseChallenge", me.public_key.raw, them.public_key.raw)
    sealed = HPKE.seal(me.public_key, bytes(32), info)
    side.do(Received(MEDIATOR_BASE, wire.AdvertiseChallenge(sealed).encode()))
    bad = wire.Address(host, port)
    good = wire.Address("198.51.100.3", 6000)
    message = (
        wire.PeerIdentification(1, PID, bad)
        if role == "client"
        else wire.PeerDisconnect(PID, good, bad)
    )
    actions = side.do(Received(MEDIATOR_BASE, message.encode()))
    error = failed(actions)
    assert isinstance(error, UnusableAddress) and why in error.reason
    assert wire.Address(host, port).host in error.reason
    assert not connects(actions) and not any(isinstance(a, Listen) for a in actions)


def test_loopback_partner_is_fine_when_the_mediator_is_on_loopback() -> None:
    client = registered(A_KEY, B_KEY, A_LOCAL)  # the Mediator is 127.0.0.1 here
    ident = wire.PeerIdentification(1, PID, wire.Address("127.0.0.1", 4000)).encode()
    assert connects(client.do(Received(MEDIATOR_BASE, ident)))


def test_an_early_or_stale_timer_event_is_harmless() -> None:
    core = PeerCore(config(A_KEY, B_KEY, step_timeout=2.0))
    core.start(0.0)
    assert core.handle(TimerFired(TIMER), 0.001) == [SetTimer(TIMER, 2.0)]
    assert core.handle(TimerFired(RETRY_TIMER), 5.0) == []  # never set
    assert core.state == "connecting_mediator"
    assert isinstance(failed(core.handle(TimerFired(TIMER), 2.0)), MediatorUnreachable)


def test_a_stranger_cannot_evict_the_partners_silent_connection() -> None:
    """At the total bound, a silent candidate from an address the Mediator named for the
    partner is kept; the stranger's own oldest silent connection goes instead (found by the
    direct model: before this rule the partner's connection, silent until its HandshakeInit
    arrived, was the oldest and was evicted)."""
    peer = _punching_peer(max_candidates=2)
    peer.do(Opened(FIRST_ACCEPTED, A_LOCAL, B_LOCAL))  # the Client, its init not yet read
    peer.do(Opened(FIRST_ACCEPTED + 1, ("192.0.2.50", 1), B_LOCAL))
    actions = peer.do(Opened(FIRST_ACCEPTED + 2, ("192.0.2.51", 1), B_LOCAL))
    assert [a.conn for a in actions if isinstance(a, Close)] == [FIRST_ACCEPTED + 1]
    assert FIRST_ACCEPTED in peer.core.candidates


def test_peer_options_name_every_optional_config_field() -> None:
    """``peer_config(**options)`` is typed by PeerOptions: it must list exactly the fields of
    PeerConfig after the three positional ones, with the same types."""
    import dataclasses
    import typing

    from p2psc.core.peer import PeerOptions

    fields = {f.name: f.type for f in dataclasses.fields(PeerConfig)[3:]}
    hints = typing.get_type_hints(PeerOptions)
    assert set(hints) == set(fields)
    with pytest.raises(TypeError):
        peer_config(A_KEY, B_KEY.public_key, MEDIATOR, no_such_option=1)  # type: ignore[call-arg]


def test_a_first_record_of_another_length_is_refused_from_its_length_bytes() -> None:
    """The key confirmation is an empty DATA record of a known length: an answered candidate
    that announces anything else is dropped at once, never buffered towards 32 KiB."""
    client, peer, cconn, pconn = paired()
    (init,) = sends(client.log, cconn)
    peer.do(Received(pconn, init.encode()))
    actions = peer.do(Received(pconn, b"\x7f\xff"))  # a 32767-byte record announced
    assert [a.conn for a in actions if isinstance(a, Close)] == [pconn]
    assert pconn not in peer.core.candidates and not peer.core.finished
