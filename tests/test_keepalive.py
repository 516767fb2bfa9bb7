"""Keepalive while waiting (issue 13; spec/mediator.md section 4.1, protocol.md 4.9/4.10).

Both cores, sans-IO: the peer pings every ``keepalive_interval`` and fails with MediatorSilent
when a Ping stays unanswered for a whole interval; the Mediator answers every Ping with a Pong,
moves the waiting session's deadline to twice the announced interval (never past
wait_timeout), closes a session that falls silent with SILENT, and refuses floods. The error
texts say what was observed (a silent mediator is not a partner that did not register).
Then the same over real loopback sockets with the asyncio adapters.
"""

from __future__ import annotations

import asyncio

import pytest

from p2psc import wire
from p2psc.core.io import Closed, Received, SetTimer, TimerFired
from p2psc.core.mediator import MIN_PING_GAP, MediatorConfig
from p2psc.core.peer import KEEPALIVE_TIMER, MEDIATOR_BASE, TIMER, PeerCore
from p2psc.errors import AdvertiseAborted, HandshakeTimeout, MediatorSilent, ProtocolError
from p2psc.keys import Keypair
from tests.mediator_helpers import Driver, abort_code, closed, messages, sym_key, timers
from tests.test_e2e import aio
from tests.test_peer_core import A_KEY, A_LOCAL, B_KEY, B_LOCAL, PID, failed, registered, sends

R = wire.Reason

# --------------------------------------------------------------------------- the peer core


def test_a_waiting_peer_pings_every_interval_and_the_pong_keeps_it_going() -> None:
    side = registered(A_KEY, B_KEY, A_LOCAL, timeout=100.0, keepalive_interval=5.0)
    assert SetTimer(KEEPALIVE_TIMER, 5.0) in side.log
    for round_, now in enumerate((5.0, 10.0, 15.0)):
        side.now = now
        actions = side.do(TimerFired(KEEPALIVE_TIMER))
        assert sends(actions, MEDIATOR_BASE) == [wire.Ping(round_, 5000)]
        assert SetTimer(KEEPALIVE_TIMER, now + 5.0) in actions
        side.now = now + 0.1
        assert side.do(Received(MEDIATOR_BASE, wire.Pong(round_).encode())) == []
        assert side.core.state == "waiting"


def test_an_unanswered_ping_is_a_silent_mediator_not_an_absent_partner() -> None:
    side = registered(A_KEY, B_KEY, A_LOCAL, timeout=100.0, keepalive_interval=5.0)
    side.now = 5.0
    side.do(TimerFired(KEEPALIVE_TIMER))
    side.now = 10.0
    error = failed(side.do(TimerFired(KEEPALIVE_TIMER)))
    assert isinstance(error, MediatorSilent) and isinstance(error, TimeoutError)
    assert "no answer from the mediator 127.0.0.1:9999 for 10.0 s" in error.reason
    assert "did not register" not in error.reason
    assert side.core.state == "failed"


def test_a_pong_nobody_asked_for_is_a_protocol_error() -> None:
    side = registered(A_KEY, B_KEY, A_LOCAL, keepalive_interval=5.0)
    error = failed(side.do(Received(MEDIATOR_BASE, wire.Pong(0).encode())))
    assert isinstance(error, ProtocolError) and "Pong 0" in error.reason
    side = registered(A_KEY, B_KEY, A_LOCAL, keepalive_interval=5.0)
    side.now = 5.0
    side.do(TimerFired(KEEPALIVE_TIMER))
    error = failed(side.do(Received(MEDIATOR_BASE, wire.Pong(1).encode())))
    assert isinstance(error, ProtocolError)


def test_the_waiting_deadline_says_what_was_observed() -> None:
    # Keepalive on and answered: the mediator held our registration; the partner did not come.
    side = registered(A_KEY, B_KEY, A_LOCAL, timeout=12.0, keepalive_interval=5.0)
    side.now = 5.0
    side.do(TimerFired(KEEPALIVE_TIMER))
    side.now = 5.5
    side.do(Received(MEDIATOR_BASE, wire.Pong(0).encode()))
    side.now = 12.0
    error = failed(side.do(TimerFired(TIMER)))
    assert isinstance(error, HandshakeTimeout)
    assert "did not register" in error.reason and "last answered 6.5 s ago" in error.reason
    # Keepalive off: nothing tells a silent mediator from an absent partner, so no claim.
    side = registered(A_KEY, B_KEY, A_LOCAL, timeout=12.0, keepalive_interval=None)
    assert not any(isinstance(a, SetTimer) and a.conn == KEEPALIVE_TIMER for a in side.log)
    side.now = 12.0
    error = failed(side.do(TimerFired(TIMER)))
    assert isinstance(error, HandshakeTimeout)
    assert "did not register" not in error.reason and "keepalive off" in error.reason


def test_the_introduction_stops_the_keepalive() -> None:
    side = registered(A_KEY, B_KEY, A_LOCAL, keepalive_interval=5.0)
    introduction = wire.PeerIdentification(1, PID, wire.Address(*B_LOCAL))
    actions = side.do(Received(MEDIATOR_BASE, introduction.encode()))
    assert SetTimer(KEEPALIVE_TIMER, None) in actions
    assert KEEPALIVE_TIMER not in side.core.timers
    side.now = 5.0
    assert side.do(TimerFired(KEEPALIVE_TIMER)) == []  # a stale timer event is ignored


def test_an_abort_after_registration_is_not_called_a_refusal() -> None:
    """The misleading text of issue 13: 'the Mediator refused our registration: PEER_GONE:
    partner lost: [Errno 104]' (our registration was accepted; the errno was the partner's)."""
    side = registered(A_KEY, B_KEY, A_LOCAL)
    gone = wire.AdvertiseAbort(
        R.PEER_GONE, "your partner's connection to the mediator was lost ([Errno 104])"
    )
    error = failed(side.do(Received(MEDIATOR_BASE, gone.encode())))
    assert isinstance(error, AdvertiseAborted) and error.code == R.PEER_GONE
    assert "refused" not in error.reason
    assert error.reason.startswith("the Mediator paired us, then our partner went away")


def test_keepalive_interval_is_validated() -> None:
    for bad in (0.5, 0.0, -1.0, 3601.0):
        with pytest.raises(ValueError, match="keepalive_interval"):
            registered(A_KEY, B_KEY, A_LOCAL, keepalive_interval=bad)


# --------------------------------------------------------------------------- the mediator core


def waiting_session() -> Driver:
    d = Driver(MediatorConfig(wait_timeout=100.0), symbolic=True)
    d.register_symbolic(1, sym_key(1), sym_key(2))
    assert d.core.state_of(1) == "waiting"
    return d


def test_the_mediator_answers_a_ping_and_moves_the_deadline() -> None:
    d = waiting_session()
    d.advance(5)
    actions = d.send(1, wire.Ping(41, 2000).encode())
    assert messages(actions, 1) == [wire.Pong(41)]
    assert timers(actions) == {1: d.now + 4.0}  # twice the announced interval
    # split across reads, byte by byte
    d.advance(1)
    frame = wire.Ping(42, 2000).encode()
    out = [a for byte in frame for a in d.send(1, bytes([byte]))]
    assert messages(out, 1) == [wire.Pong(42)]
    assert d.core.state_of(1) == "waiting"


def test_the_deadline_never_passes_wait_timeout() -> None:
    d = waiting_session()
    d.advance(99)
    actions = d.send(1, wire.Ping(0, 60_000).encode())
    assert timers(actions) == {1: 1100.0}  # registered at 1000 with wait_timeout 100
    d.advance(1)
    actions = d.fire(1)
    assert abort_code(actions, 1) == R.TIMEOUT


def test_a_waiting_session_that_stops_pinging_is_closed_as_silent() -> None:
    d = waiting_session()
    d.advance(1)
    d.send(1, wire.Ping(0, 2000).encode())
    d.advance(3.9)
    assert messages(d.fire(1), 1) == []  # early: re-armed
    d.advance(0.1)
    actions = d.fire(1)
    (abort,) = messages(actions, 1)
    assert isinstance(abort, wire.AdvertiseAbort) and abort.code == R.SILENT
    assert "no Ping from you for 4.0 s" in abort.text
    assert 1 in closed(actions) and d.core.waiting == 0


@pytest.mark.parametrize("state", ["waiting", "confirming", "disconnecting"])
def test_pings_faster_than_the_floor_are_refused(state: str) -> None:
    """In every state that takes Pings; while pairing the partner fails too (PEER_GONE)."""
    d = waiting_session()
    conn = {"waiting": 1, "confirming": 1, "disconnecting": 2}[state]
    if state != "waiting":
        d.register_symbolic(2, sym_key(2), sym_key(1))
    assert d.core.state_of(conn) == state
    d.send(conn, wire.Ping(0, 1000).encode())
    d.advance(MIN_PING_GAP / 2)
    actions = d.send(conn, wire.Ping(1, 1000).encode())
    assert abort_code(actions, conn) == R.MALFORMED and conn in closed(actions)
    if state != "waiting":
        other = 3 - conn
        assert abort_code(actions, other) == R.PEER_GONE and other in closed(actions)
    assert d.core.waiting == 0 and d.core.sessions == 0


@pytest.mark.parametrize(
    "data",
    [
        b"\x00",
        wire.Pong(0).encode(),  # the Mediator's message
        wire.AdvertiseResponse(bytes(32)).encode(),
        wire.encode(wire.Ping(0, 1000))[:6] + bytes(8),  # interval 0
        b"P2\x01\x0b\x00\x09",  # a Ping header announcing 9 bytes
    ],
)
def test_anything_but_a_ping_after_the_handshake_is_malformed(data: bytes) -> None:
    d = waiting_session()
    actions = d.send(1, data)
    assert abort_code(actions, 1) == R.MALFORMED and 1 in closed(actions)


def test_pings_while_pairing() -> None:
    """The Client's Ping while its Peer confirms is answered (no deadline moves); a Peer's Ping
    that crossed PeerDisconnect is accepted silently; the pairing goes on either way."""
    d = waiting_session()
    d.register_symbolic(2, sym_key(2), sym_key(1))
    assert (d.core.state_of(1), d.core.state_of(2)) == ("confirming", "disconnecting")
    d.advance(1)
    actions = d.send(1, wire.Ping(0, 1000).encode())
    assert messages(actions, 1) == [wire.Pong(0)] and timers(actions) == {}
    assert d.send(2, wire.Ping(0, 1000).encode()) == []
    actions = d.close(2)
    (introduction,) = messages(actions, 1)
    assert isinstance(introduction, wire.PeerIdentification)


def test_a_version_0_session_has_no_keepalive() -> None:
    from p2psc.legacy.mediator import LegacyAwareMediatorCore

    core = LegacyAwareMediatorCore(MediatorConfig())
    assert core._speaks_v1(5) and (core._legacy.add(5) or not core._speaks_v1(5))


def test_partner_text_names_the_partner() -> None:
    d = waiting_session()
    d.register_symbolic(2, sym_key(2), sym_key(1))
    actions = d.close(2, "[Errno 104] Connection reset by peer")
    (abort,) = messages(actions, 1)
    assert isinstance(abort, wire.AdvertiseAbort) and abort.code == R.PEER_GONE
    assert abort.text == (
        "your partner's connection to the mediator was lost ([Errno 104] Connection reset by peer)"
    )


def test_closed_event_is_still_a_clean_end() -> None:
    d = waiting_session()
    assert d.core.handle(Closed(1), d.now)  # closes the session, no keepalive involved
    assert d.core.waiting == 0


# --------------------------------------------------------------------------- over loopback


@aio
async def test_keepalive_over_loopback_then_pairing() -> None:
    """A Client waits through several keepalive rounds (the Mediator answers each), then its
    partner arrives and they connect: the keepalive does not disturb the pairing."""
    from p2psc.aio import connect, serve_mediator

    a, b = Keypair.generate(), Keypair.generate()
    async with serve_mediator("127.0.0.1", 0) as server:
        where = f"127.0.0.1:{server.port}"
        first = asyncio.ensure_future(
            connect(a, b.public_key, where, timeout=20, keepalive_interval=1.0)
        )
        await asyncio.sleep(3.5)  # three Pings answered
        assert not first.done()
        second = await connect(b, a.public_key, where, timeout=20, keepalive_interval=1.0)
        conn = await first
        assert {conn.role, second.role} == {"client", "peer"}
        conn.close()
        second.close()


@aio
async def test_a_silent_mediator_fails_the_waiting_peer_within_two_intervals() -> None:
    """A 'mediator' that challenges correctly and then never answers again."""
    from p2psc.aio import connect
    from p2psc.keys import HPKE, nonce_info

    a, b = Keypair.generate(), Keypair.generate()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        header = await reader.readexactly(6)
        payload = await reader.readexactly(int.from_bytes(header[4:6], "big"))
        advertise = wire.Advertise.from_payload(payload)
        info = nonce_info("AdvertiseChallenge", advertise.our_key, advertise.their_key)
        sealed = HPKE.seal(a.public_key, bytes(32), info)
        writer.write(wire.AdvertiseChallenge(sealed).encode())
        await reader.read(100)
        await asyncio.sleep(30)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        with pytest.raises(MediatorSilent, match="no answer from the mediator") as caught:
            await connect(a, b.public_key, f"127.0.0.1:{port}", timeout=20, keepalive_interval=1)
        # (MediatorSilent, not the HandshakeTimeout of the 20 s deadline: two intervals)
        assert "did not register" not in caught.value.reason


# --------------------------------------------------------------------------- timed dials


def _peer_introduced(**options: object) -> tuple[list[object], float]:
    """A Peer whose Advertise was answered 0.04 s later, introduced at t = 1: its actions."""
    from p2psc.core.io import Opened
    from p2psc.keys import HPKE, nonce_info
    from tests.test_peer_core import Side, config

    side = Side(PeerCore(config(B_KEY, A_KEY, **options)), B_LOCAL)
    side.core.start(0.0)
    side.do(Opened(MEDIATOR_BASE, ("127.0.0.1", 9999), B_LOCAL))
    side.now = 0.04
    info = nonce_info("AdvertiseChallenge", B_KEY.public_key.raw, A_KEY.public_key.raw)
    sealed = HPKE.seal(B_KEY.public_key, bytes(32), info)
    side.do(Received(MEDIATOR_BASE, wire.AdvertiseChallenge(sealed).encode()))
    side.now = 1.0
    disconnect = wire.PeerDisconnect(PID, wire.Address(*B_LOCAL), wire.Address(*A_LOCAL))
    return list(side.do(Received(MEDIATOR_BASE, disconnect.encode()))), side.core.rtt or 0.0


def test_the_peer_dials_one_round_trip_after_its_introduction() -> None:
    from p2psc.core.io import Connect, Listen
    from p2psc.core.peer import PUNCH_TIMER_BASE

    actions, rtt = _peer_introduced()
    assert rtt == pytest.approx(0.04)
    assert any(isinstance(a, Listen) for a in actions)  # it listens at once
    assert not any(isinstance(a, Connect) for a in actions)  # but dials later
    assert SetTimer(PUNCH_TIMER_BASE, pytest.approx(1.04)) in actions
    # without timed dials: at once
    actions, _ = _peer_introduced(timed_dial=False)
    assert any(isinstance(a, Connect) for a in actions)


def test_the_dial_delay_is_bounded_by_punch_max_interval() -> None:
    from p2psc.core.peer import PUNCH_TIMER_BASE

    actions, _ = _peer_introduced(punch_max_interval=0.01)
    assert SetTimer(PUNCH_TIMER_BASE, pytest.approx(1.01)) in actions


def test_the_client_dials_at_once() -> None:
    from p2psc.core.io import Connect

    side = registered(A_KEY, B_KEY, A_LOCAL)
    introduction = wire.PeerIdentification(1, PID, wire.Address(*B_LOCAL))
    actions = side.do(Received(MEDIATOR_BASE, introduction.encode()))
    assert any(isinstance(a, Connect) for a in actions)
