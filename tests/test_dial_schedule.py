"""The Mediator's dial schedule (issue 13; extension item 2 DIAL_DELAY in PeerDisconnect).

The Mediator measures each session's round trip (AdvertiseChallenge sent -> AdvertiseResponse
received, with the ``now`` of its events) and names in PeerDisconnect the delay after which the
Peer dials: half the Peer's round trip (its confirmation reaching the Mediator) plus half the
Client's (PeerIdentification reaching the Client), so both first SYNs leave together. The Peer
uses it, capped at ``punch_max_interval``; without it, its own round trip (spec/protocol.md
"Timed first dial", spec/mediator.md section 4.2).
"""

from __future__ import annotations

import pytest
from latency_sim import established, pairing

from p2psc import wire
from p2psc.core.io import Connect, Listen, Opened, Received, Send, SetTimer
from p2psc.core.mediator import MediatorCore
from p2psc.core.peer import MEDIATOR_BASE, PUNCH_TIMER_BASE, PeerCore
from p2psc.errors import ProtocolError
from p2psc.keys import HPKE, Keypair, nonce_info
from tests.test_peer_core import A_KEY, A_LOCAL, B_KEY, B_LOCAL, PID, Side, config

V4 = wire.Address("192.0.2.7", 4000)

# --------------------------------------------------------------------------- the wire


def test_dial_delay_round_trips_and_is_clipped() -> None:
    msg = wire.PeerDisconnect(PID, V4, V4, None, wire.dial_delay_extension(170))
    decoded = wire.decode(msg.encode())
    assert isinstance(decoded, wire.PeerDisconnect)
    assert decoded.dial_delay == pytest.approx(0.170)
    assert wire.PeerDisconnect(PID, V4, V4).dial_delay is None
    assert wire.dial_delay_extension(70_000) == ((2, b"\xff\xff"),)
    assert wire.dial_delay_extension(-5) == ((2, b"\x00\x00"),)


@pytest.mark.parametrize("value", [b"", b"\x01", b"\x00\x01\x02"])
def test_a_dial_delay_of_another_length_is_rejected(value: bytes) -> None:
    with pytest.raises(ProtocolError, match="DIAL_DELAY"):
        wire.PeerDisconnect(PID, V4, V4, None, ((2, value),))
    good = wire.PeerDisconnect(PID, V4, V4, None, ((2, b"\x00\x01"),)).encode()
    bad = bytearray(good[:-3] + bytes((len(value),)) + value)
    bad[4:6] = (len(bad) - 6).to_bytes(2, "big")
    with pytest.raises(ProtocolError, match="DIAL_DELAY"):
        wire.decode(bytes(bad))


# --------------------------------------------------------------------------- the Mediator


def _register(
    core: MediatorCore, conn: int, me: Keypair, them: Keypair, sent: float, answered: float
) -> list[object]:
    """Advertise at ``sent`` (the challenge leaves then), answer at ``answered``."""
    core.handle(Opened(conn, (f"198.51.100.{conn}", 40000 + conn)), sent)
    advertise = wire.Advertise(1, me.public_key.raw, them.public_key.raw)
    actions = core.handle(Received(conn, advertise.encode()), sent)
    challenge = next(wire.decode(a.data) for a in actions if isinstance(a, Send))
    assert isinstance(challenge, wire.AdvertiseChallenge)
    info = nonce_info("AdvertiseChallenge", me.public_key.raw, them.public_key.raw)
    nonce = HPKE.open(me, challenge.encrypted_nonce, info)
    return list(core.handle(Received(conn, wire.AdvertiseResponse(nonce).encode()), answered))


def test_the_mediator_names_half_of_both_round_trips() -> None:
    core = MediatorCore()
    a, b = Keypair.generate(), Keypair.generate()
    _register(core, 1, a, b, 0.0, 0.300)  # the Client: 300 ms round trip
    actions = _register(core, 2, b, a, 5.0, 5.040)  # the Peer: 40 ms, paired at once
    (disconnect,) = (wire.decode(x.data) for x in actions if isinstance(x, Send) and x.conn == 2)
    assert isinstance(disconnect, wire.PeerDisconnect)
    assert disconnect.dial_delay == pytest.approx(0.170)


def test_the_round_trip_survives_a_snapshot() -> None:
    core = MediatorCore()
    a, b = Keypair.generate(), Keypair.generate()
    _register(core, 1, a, b, 0.0, 0.250)
    rebuilt = MediatorCore.from_snapshot(core.snapshot())
    actions = _register(rebuilt, 2, b, a, 5.0, 5.050)
    (disconnect,) = (wire.decode(x.data) for x in actions if isinstance(x, Send) and x.conn == 2)
    assert isinstance(disconnect, wire.PeerDisconnect)
    assert disconnect.dial_delay == pytest.approx(0.150)


# --------------------------------------------------------------------------- the Peer


def _introduced(extensions: wire.Extensions, **options: object) -> list[object]:
    """A Peer whose Advertise was answered 0.04 s later, introduced at t = 1."""
    side = Side(PeerCore(config(B_KEY, A_KEY, **options)), B_LOCAL)
    side.core.start(0.0)
    side.do(Opened(MEDIATOR_BASE, ("127.0.0.1", 9999), B_LOCAL))
    side.now = 0.04
    info = nonce_info("AdvertiseChallenge", B_KEY.public_key.raw, A_KEY.public_key.raw)
    sealed = HPKE.seal(B_KEY.public_key, bytes(32), info)
    side.do(Received(MEDIATOR_BASE, wire.AdvertiseChallenge(sealed).encode()))
    side.now = 1.0
    disconnect = wire.PeerDisconnect(
        PID, wire.Address(*B_LOCAL), wire.Address(*A_LOCAL), None, extensions
    )
    return list(side.do(Received(MEDIATOR_BASE, disconnect.encode())))


def test_the_peer_dials_when_the_mediator_says() -> None:
    actions = _introduced(wire.dial_delay_extension(300))
    assert any(isinstance(a, Listen) for a in actions)  # it listens at once
    assert not any(isinstance(a, Connect) for a in actions)
    assert SetTimer(PUNCH_TIMER_BASE, pytest.approx(1.3)) in actions  # not its own 0.04


def test_a_scheduled_delay_is_capped_at_punch_max_interval() -> None:
    """A lying Mediator can hold our first dial back by punch_max_interval at most."""
    actions = _introduced(wire.dial_delay_extension(65_535), punch_max_interval=0.5)
    assert SetTimer(PUNCH_TIMER_BASE, pytest.approx(1.5)) in actions


def test_without_a_schedule_the_peer_uses_its_own_round_trip() -> None:
    actions = _introduced(())
    assert SetTimer(PUNCH_TIMER_BASE, pytest.approx(1.04)) in actions


def test_timed_dial_off_ignores_the_schedule() -> None:
    actions = _introduced(wire.dial_delay_extension(300), timed_dial=False)
    assert any(isinstance(a, Connect) for a in actions)


def test_a_zero_delay_dials_at_once() -> None:
    actions = _introduced(wire.dial_delay_extension(0))
    assert any(isinstance(a, Connect) for a in actions)


# --------------------------------------------------------------------------- both, in time


def test_the_schedule_saves_the_refused_first_dial(monkeypatch: pytest.MonkeyPatch) -> None:
    """Virtual time (tests/latency_sim.py), the real cores: the Client 300 ms from the Mediator,
    the Peer 20 ms from it and 40 ms from the Client (round trips). The Peer's own estimate
    (20 ms) sends its first SYN to a Client that does not listen yet: refused. With the
    Mediator's schedule ((300 + 20) / 2 = 160 ms) both first SYNs leave together: none is
    refused, and the Peer dials exactly once per target."""
    scheduled = pairing(0.3, 0.02, 0.04, nat_drop=frozenset({"peer"}))
    assert established(scheduled)
    assert scheduled.refused.get("peer", 0) == 0, scheduled
    assert scheduled.peer_first_dial == pytest.approx(0.06 + 0.16)
    original = PeerCore._dial_delay
    monkeypatch.setattr(PeerCore, "_dial_delay", lambda self, scheduled=None: original(self))
    estimated = pairing(0.3, 0.02, 0.04, nat_drop=frozenset({"peer"}))
    assert established(estimated)
    assert estimated.refused.get("peer", 0) >= 1, estimated
    assert estimated.syns["peer"] > scheduled.syns["peer"]
