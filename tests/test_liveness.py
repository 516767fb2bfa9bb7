"""Liveness after the introduction (issue 13; spec/mediator.md section 4.3, protocol.md 4.11).

A coordinated pairing (both peers offered COORDINATE and the Mediator echoed it) keeps both
Mediator connections while the peers punch. The Peer confirms PeerDisconnect with
Status(PUNCHING) instead of a close, so a Peer that dies before confirming is reported to the
Client at once (PEER_GONE) instead of being introduced; after the introduction, a side whose
connection closes or goes silent before its done status makes the Mediator tell the other one
(PARTNER_LOST), which fails with PartnerLost instead of PeerUnreachable at the punch timeout.
Without the capability on both sides nothing changes (bytes included).
"""

from __future__ import annotations

import asyncio

import pytest

from p2psc import wire
from p2psc.core.fleet import FleetCore
from p2psc.core.io import Close, Closed, Connect, Listen, Received, Send, SetTimer, TimerFired
from p2psc.core.mediator import COORDINATE_GRACE, MediatorConfig
from p2psc.core.peer import (
    KEEPALIVE_TIMER,
    LISTENER,
    MEDIATOR_BASE,
    RELAY_CONN,
    TIMER,
    Established,
)
from p2psc.errors import PartnerLost, PeerUnreachable, ProtocolError
from tests.mediator_helpers import Driver, abort_code, closed, messages, sym_answer, sym_key
from tests.test_peer_core import (
    A_KEY,
    A_LOCAL,
    B_KEY,
    B_LOCAL,
    PID,
    Side,
    failed,
    registered,
    sends,
    shuttle,
    wire_up,
)

R = wire.Reason
S = wire.StatusCode
COORD: wire.Extensions = ((int(wire.ExtensionType.COORDINATE), b""),)
PUNCHING = wire.Status(S.PUNCHING).encode()

# --------------------------------------------------------------------------- the wire


def test_status_and_the_capability_on_the_wire() -> None:
    assert wire.Status(S.DIRECT).encode() == b"P2\x01\x0d\x00\x01\x02"
    assert wire.decode(b"P2\x01\x0d\x00\x01\x01") == wire.Status(S.PUNCHING)
    for bad in (
        b"P2\x01\x0d\x00\x01\x00",
        b"P2\x01\x0d\x00\x01\x05",
        b"P2\x01\x0d\x00\x02\x01\x01",
    ):
        with pytest.raises(ProtocolError):
            wire.decode(bad)
    with pytest.raises(ProtocolError, match="COORDINATE must be empty"):
        wire.Advertise(1, sym_key(1), sym_key(2), None, ((3, b"x"),))
    advertise = wire.Advertise(1, sym_key(1), sym_key(2), None, COORD)
    assert wire.decode(advertise.encode()) == advertise
    assert wire.coordinated(advertise.extensions) and not wire.coordinated(())
    assert wire.construct_decode(advertise.encode()) == advertise


# --------------------------------------------------------------------------- the mediator core


def register(d: Driver, conn: int, our: int, their: int, *, coord: bool = True) -> list[object]:
    d.open(conn, (f"10.0.0.{conn}", 40000 + conn))
    advertise = wire.Advertise(1, sym_key(our), sym_key(their), None, COORD if coord else ())
    (challenge,) = messages(d.send(conn, advertise.encode()), conn)
    assert isinstance(challenge, wire.AdvertiseChallenge)
    return d.send(conn, wire.AdvertiseResponse(sym_answer(challenge)).encode())  # type: ignore[return-value]


def paired_mediator(*, client: bool = True, peer: bool = True, **config: object) -> Driver:
    """Client (conn 1) waiting, Peer (conn 2) just sent PeerDisconnect."""
    d = Driver(MediatorConfig(**config), symbolic=True)  # type: ignore[arg-type]
    register(d, 1, 1, 2, coord=client)
    actions = register(d, 2, 2, 1, coord=peer)
    (disconnect,) = messages(actions, 2)  # type: ignore[arg-type]
    assert isinstance(disconnect, wire.PeerDisconnect)
    assert wire.coordinated(disconnect.extensions) == (client and peer and d.core.config.coordinate)
    assert d.core.state_of(1) == "confirming" and d.core.state_of(2) == "disconnecting"
    return d


def coordinating() -> Driver:
    d = paired_mediator()
    actions = d.send(2, PUNCHING)
    (identification,) = messages(actions, 1)
    assert isinstance(identification, wire.PeerIdentification)
    assert wire.coordinated(identification.extensions)
    assert closed(actions) == [] and messages(actions, 2) == []
    assert d.core.state_of(1) == d.core.state_of(2) == "coordinating"
    return d


@pytest.mark.parametrize(("client", "peer"), [(True, False), (False, True), (False, False)])
def test_without_the_capability_on_both_sides_nothing_changes(client: bool, peer: bool) -> None:
    d = paired_mediator(client=client, peer=peer)
    reference = paired_mediator(client=False, peer=False)
    assert [a for a in d.log if isinstance(a, Send) and a.conn == 2][-1] == [
        a for a in reference.log if isinstance(a, Send) and a.conn == 2
    ][-1]  # the same PeerDisconnect bytes
    actions = d.close(2)  # the clean close is the confirmation, as before
    (identification,) = messages(actions, 1)
    assert isinstance(identification, wire.PeerIdentification)
    assert not wire.coordinated(identification.extensions)
    assert sorted(closed(actions)) == [1, 2]


def test_a_mediator_configured_not_to_coordinate_does_not_echo() -> None:
    paired_mediator(coordinate=False)  # (the assertion is in paired_mediator)


def test_a_fleet_does_not_echo_the_capability() -> None:
    core = FleetCore(MediatorConfig(), instance="0123456789abcdef")
    assert core._coordinates() is False


def test_kill_before_confirm_the_client_is_not_introduced_to_a_dead_peer() -> None:
    """Issue 13: the FIN of a Peer killed after PeerDisconnect is no confirmation any more."""
    d = paired_mediator()
    actions = d.close(2)
    assert messages(actions, 1) == [wire.AdvertiseAbort(R.PEER_GONE, messages(actions, 1)[0].text)]  # type: ignore[union-attr]
    assert sorted(closed(actions)) == [1, 2] and d.core.sessions == 0


@pytest.mark.parametrize("survivor", [1, 2])
@pytest.mark.parametrize("how", ["eof", "reset"])
def test_after_the_introduction_a_lost_partner_is_reported_at_once(survivor: int, how: str) -> None:
    d = coordinating()
    gone = 3 - survivor
    d.advance(0.25)
    actions = d.close(gone, None if how == "eof" else "[Errno 104] Connection reset by peer")
    (abort,) = messages(actions, survivor)
    assert isinstance(abort, wire.AdvertiseAbort) and abort.code == R.PARTNER_LOST
    assert "250 ms after the introduction" in abort.text and "it is gone" in abort.text
    assert sorted(closed(actions)) == [1, 2] and d.core.sessions == 0


def test_a_done_status_never_makes_the_survivor_abort() -> None:
    """The race: the Client completes the handshake, reports DIRECT and closes while the Peer
    still waits for the last handshake message."""
    d = coordinating()
    actions = d.send(1, wire.Status(S.DIRECT).encode())
    assert closed(actions) == [1] and messages(actions, 2) == [] and messages(actions, 1) == []
    assert d.core.state_of(2) == "coordinating"
    assert d.close(1) == []  # its close after the status is no news
    d.advance(0.5)
    actions = d.send(2, wire.Status(S.DIRECT).encode() + b"")
    assert closed(actions) == [2] and d.core.sessions == 0


@pytest.mark.parametrize("status", [S.RELAY, S.GAVE_UP])
def test_the_partner_dies_after_our_done_status_nobody_is_told(status: S) -> None:
    d = coordinating()
    d.send(2, wire.Status(status).encode())
    d.advance(1)
    actions = d.close(1, "reset")
    assert messages(actions, 1) == [] and messages(actions, 2) == []
    assert d.core.sessions == 0


def test_a_silent_side_is_reported_and_pings_keep_it_alive() -> None:
    d = coordinating()
    start = d.now
    ended: list[object] = []
    for i in range(1, 6):  # the Peer pings every second; the Client stops after 2
        d.now = start + i
        d.send(2, wire.Ping(i, 1000).encode())
        if i <= 2:
            assert messages(d.send(1, wire.Ping(i, 1000).encode()), 1) == [wire.Pong(i)]
        ended = d.fire(1) + d.fire(2)  # type: ignore[operator]
        if d.core.sessions == 0:
            break
    # the Client's deadline was 2 s after its last Ping (start + 2): it fired at start + 4
    assert d.now == start + 4 and d.core.sessions == 0
    actions = ended  # type: ignore[assignment]
    (silent,) = messages(actions, 1)
    (lost,) = messages(actions, 2)
    assert isinstance(silent, wire.AdvertiseAbort) and silent.code == R.SILENT
    assert isinstance(lost, wire.AdvertiseAbort) and lost.code == R.PARTNER_LOST
    assert "went silent" in lost.text


def test_a_side_that_never_pings_is_silent_after_the_grace() -> None:
    d = coordinating()
    d.advance(COORDINATE_GRACE - 0.01)
    assert messages(d.fire(1), 2) == []  # early: re-armed
    d.advance(0.01)
    actions = d.fire(1)
    assert abort_code(actions, 1) == R.SILENT and abort_code(actions, 2) == R.PARTNER_LOST


def test_the_hold_is_bounded_and_its_end_is_no_partner_loss() -> None:
    d = coordinating()
    hold = d.core.config.coordinate_timeout
    start = d.now
    t = 1.0
    while t < hold:
        d.now = start + t
        for conn in (1, 2):
            d.send(conn, wire.Ping(int(t), 1000).encode())
        t += 1.0
    d.now = start + hold
    actions = d.fire(1)
    assert abort_code(actions, 1) == R.TIMEOUT and abort_code(actions, 2) == R.TIMEOUT
    assert d.core.sessions == 0


@pytest.mark.parametrize(
    ("conn", "frame", "partner_code"),
    [
        (2, wire.Status(S.DIRECT).encode(), R.PEER_GONE),  # done before the confirmation
        (1, PUNCHING, R.PEER_GONE),  # the Client confirming for the Peer
        (2, PUNCHING + PUNCHING, R.PARTNER_LOST),  # a replayed confirmation
    ],
)
def test_a_status_in_a_wrong_state_is_malformed(conn: int, frame: bytes, partner_code: int) -> None:
    d = paired_mediator()
    actions = d.send(conn, frame)
    assert abort_code(actions, conn) == R.MALFORMED
    other = 3 - conn
    codes = [m.code for m in messages(actions, other) if isinstance(m, wire.AdvertiseAbort)]
    assert codes == [partner_code]
    assert d.core.sessions == 0


def test_a_status_in_an_uncoordinated_pairing_or_while_waiting_is_malformed() -> None:
    d = paired_mediator(client=False)
    actions = d.send(2, PUNCHING)
    assert abort_code(actions, 2) == R.MALFORMED and abort_code(actions, 1) == R.PEER_GONE
    d = Driver(MediatorConfig(), symbolic=True)
    register(d, 1, 1, 2)
    actions = d.send(1, wire.Status(S.GAVE_UP).encode())
    assert abort_code(actions, 1) == R.MALFORMED and d.core.sessions == 0


def test_a_flood_of_status_frames_ends_at_the_first_one_too_many() -> None:
    d = coordinating()
    flood = wire.Status(S.GAVE_UP).encode() * 1000
    actions = d.send(2, flood)
    assert closed(actions) == [2] and d.core.state_of(1) == "coordinating"
    d = coordinating()
    actions = d.send(2, PUNCHING * 1000)
    assert abort_code(actions, 2) == R.MALFORMED and abort_code(actions, 1) == R.PARTNER_LOST
    assert len(actions) < 10 and d.core.sessions == 0


def test_a_status_split_across_reads_and_a_ping_in_the_same_read() -> None:
    d = paired_mediator()
    for byte in PUNCHING:
        actions = d.send(2, bytes([byte]))
    assert d.core.state_of(2) == "coordinating"
    d.advance(1)
    actions = d.send(1, wire.Ping(7, 1000).encode() + wire.Status(S.GAVE_UP).encode())
    assert messages(actions, 1) == [wire.Pong(7)] and closed(actions) == [1]


def test_the_snapshot_keeps_the_coordination() -> None:
    d = coordinating()
    from p2psc.core.mediator import MediatorCore

    rebuilt = MediatorCore.from_snapshot(d.core.snapshot(), d.core.config)
    assert rebuilt.snapshot() == d.core.snapshot()
    actions = rebuilt.handle(Closed(2), d.now)
    assert abort_code(actions, 1) == R.PARTNER_LOST  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the peer core


def coord_peer(*, relay: str = "never") -> tuple[Side, list[object]]:
    peer = registered(B_KEY, A_KEY, B_LOCAL, relay=relay, relay_address=("127.0.0.1", 9998))
    disconnect = wire.PeerDisconnect(
        PID, wire.Address(*B_LOCAL), wire.Address(*A_LOCAL), None, COORD
    )
    return peer, peer.do(Received(MEDIATOR_BASE, disconnect.encode()))  # type: ignore[return-value]


def coord_client(*, relay: str = "never") -> tuple[Side, list[object]]:
    client = registered(A_KEY, B_KEY, A_LOCAL, relay=relay, relay_address=("127.0.0.1", 9998))
    identification = wire.PeerIdentification(1, PID, wire.Address(*B_LOCAL), None, COORD)
    return client, client.do(Received(MEDIATOR_BASE, identification.encode()))  # type: ignore[return-value]


def test_a_peer_offers_the_capability_unless_told_not_to() -> None:
    side = registered(A_KEY, B_KEY, A_LOCAL)
    (advertise,) = [m for m in sends(side.log, MEDIATOR_BASE) if isinstance(m, wire.Advertise)]
    assert wire.coordinated(advertise.extensions)
    side = registered(A_KEY, B_KEY, A_LOCAL, coordinate=False)
    (advertise,) = [m for m in sends(side.log, MEDIATOR_BASE) if isinstance(m, wire.Advertise)]
    assert advertise.extensions == ()


def test_the_peer_confirms_with_status_after_listening_and_keeps_the_connection() -> None:
    peer, actions = coord_peer()
    listen = next(i for i, a in enumerate(actions) if isinstance(a, Listen))
    status = next(i for i, a in enumerate(actions) if isinstance(a, Send) and a.data == PUNCHING)
    assert listen < status  # the ordering guarantee: it listens before it confirms
    assert Close(MEDIATOR_BASE, "PeerDisconnect: punching") not in actions
    assert not any(isinstance(a, Close) and a.conn == MEDIATOR_BASE for a in actions)
    assert SetTimer(KEEPALIVE_TIMER, 1.0) in actions and peer.core.state == "punching"


def test_uncoordinated_introductions_close_the_mediator_connection_as_before() -> None:
    peer = registered(B_KEY, A_KEY, B_LOCAL)
    disconnect = wire.PeerDisconnect(PID, wire.Address(*B_LOCAL), wire.Address(*A_LOCAL), None)
    actions = peer.do(Received(MEDIATOR_BASE, disconnect.encode()))
    assert Close(MEDIATOR_BASE, "PeerDisconnect: punching") in actions
    assert not any(isinstance(a, Send) and a.conn == MEDIATOR_BASE for a in actions)


def test_the_client_pings_every_second_while_punching_and_ignores_pongs() -> None:
    client, actions = coord_client()
    assert not any(isinstance(a, Close) and a.conn == MEDIATOR_BASE for a in actions)
    for i in range(1, 4):
        client.now = float(i)
        out = client.do(TimerFired(KEEPALIVE_TIMER))
        assert sends(out, MEDIATOR_BASE) == [wire.Ping(i - 1, 1000)]
        assert client.do(Received(MEDIATOR_BASE, wire.Pong(i - 1).encode())) == []
    assert client.core.state == "punching"


@pytest.mark.parametrize("role", ["client", "peer"])
def test_partner_lost_fails_at_once_with_a_typed_error_and_no_relay(role: str) -> None:
    side, _ = (coord_client if role == "client" else coord_peer)(relay="auto")
    side.now = 0.3
    abort = wire.AdvertiseAbort(R.PARTNER_LOST, "your partner's connection ... it is gone")
    actions = side.do(Received(MEDIATOR_BASE, abort.encode()))
    error = failed(actions)
    assert isinstance(error, PartnerLost) and not isinstance(error, PeerUnreachable)
    assert error.code == R.PARTNER_LOST and "300 ms after our introduction" in error.reason
    assert not any(isinstance(a, Connect) and a.conn == RELAY_CONN for a in actions)
    assert not any(isinstance(a, Send) and a.conn == MEDIATOR_BASE for a in actions)
    assert Close(MEDIATOR_BASE, error.reason) in actions and side.core.timers == {}


@pytest.mark.parametrize(
    "event",
    [
        Closed(MEDIATOR_BASE),
        Closed(MEDIATOR_BASE, "[Errno 104] Connection reset by peer"),
        Received(MEDIATOR_BASE, wire.AdvertiseAbort(R.TIMEOUT, "coordination ended").encode()),
        Received(MEDIATOR_BASE, wire.AdvertiseAbort(R.SHUTTING_DOWN, "bye").encode()),
        Received(MEDIATOR_BASE, b"garbage!"),
        Received(MEDIATOR_BASE, wire.Status(S.PUNCHING).encode()),
    ],
)
def test_losing_the_mediator_while_punching_is_not_fatal(event: object) -> None:
    client, _ = coord_client()
    actions = client.do(event)
    assert not any(isinstance(a, Send) for a in actions)
    assert client.core.state == "punching" and client.core.coordinated is None
    assert KEEPALIVE_TIMER not in client.core.timers
    client.now = 1.0
    assert client.do(TimerFired(KEEPALIVE_TIMER)) == []  # stale
    client.now = 11.0
    assert isinstance(failed(client.do(TimerFired(TIMER))), PeerUnreachable)


def test_the_punch_timeout_reports_gave_up_before_the_close() -> None:
    client, _ = coord_client()
    client.now = 10.0
    actions = client.do(TimerFired(TIMER))
    assert isinstance(failed(actions), PeerUnreachable)
    status = actions.index(Send(MEDIATOR_BASE, wire.Status(S.GAVE_UP).encode()))
    close = next(
        i for i, a in enumerate(actions) if isinstance(a, Close) and a.conn == MEDIATOR_BASE
    )
    assert status < close


def test_going_to_the_relay_reports_relay() -> None:
    client, _ = coord_client(relay="auto")
    client.now = 10.0
    actions = client.do(TimerFired(TIMER))
    assert Send(MEDIATOR_BASE, wire.Status(S.RELAY).encode()) in actions
    assert any(isinstance(a, Connect) and a.conn == RELAY_CONN for a in actions)
    assert client.core.state == "relaying" and client.core.coordinated is None


def test_a_direct_connection_reports_direct_on_both_sides() -> None:
    client, client_actions = coord_client()
    peer, _ = coord_peer()
    cconn, pconn = wire_up(client, peer, client_actions)  # type: ignore[arg-type]
    c_est, p_est = shuttle(client, peer, cconn, pconn)
    assert isinstance(c_est, Established) and isinstance(p_est, Established)
    for side in (client, peer):
        direct = Send(MEDIATOR_BASE, wire.Status(S.DIRECT).encode())
        assert direct in side.log
        assert side.log.index(direct) < max(
            i for i, a in enumerate(side.log) if isinstance(a, Close) and a.conn == MEDIATOR_BASE
        )
        assert LISTENER not in side.core.open_conns


def test_garbage_or_a_ping_flood_while_coordinating_is_malformed_and_the_partner_is_told() -> None:
    d = coordinating()
    actions = d.send(1, b"\x00garbage")
    assert abort_code(actions, 1) == R.MALFORMED and abort_code(actions, 2) == R.PARTNER_LOST
    d = coordinating()
    d.advance(1)
    d.send(2, wire.Ping(0, 1000).encode())
    d.advance(0.1)
    actions = d.send(2, wire.Ping(1, 1000).encode())
    assert abort_code(actions, 2) == R.MALFORMED and abort_code(actions, 1) == R.PARTNER_LOST
    assert d.core.sessions == 0


def test_a_shutdown_while_coordinating_is_no_partner_loss() -> None:
    d = coordinating()
    actions = d.core.shutdown(d.now)
    assert abort_code(actions, 1) == R.SHUTTING_DOWN  # type: ignore[arg-type]
    assert abort_code(actions, 2) == R.SHUTTING_DOWN  # type: ignore[arg-type]
    assert d.core.sessions == 0


def test_a_status_from_the_mediator_while_waiting_is_a_typed_error_and_a_clean_close() -> None:
    """A Status travels only peer -> Mediator: one that reaches a waiting peer breaks the
    protocol (InvalidTransition, a ProtocolError), and the attempt ends with every close."""
    from p2psc.errors import InvalidTransition

    side = registered(A_KEY, B_KEY, A_LOCAL)
    actions = side.do(Received(MEDIATOR_BASE, PUNCHING))
    error = failed(actions)
    assert isinstance(error, InvalidTransition) and isinstance(error, ProtocolError)
    assert any(isinstance(a, Close) and a.conn == MEDIATOR_BASE for a in actions)
    assert side.core.state == "failed" and side.core.timers == {}


def test_the_mediator_command_line_sets_the_coordination() -> None:
    import argparse

    from p2psc.cli import mediator as cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    default, _ = cli._config(parser.parse_args(["mediator"]))
    assert default.coordinate and default.coordinate_timeout == 20.0
    off, _ = cli._config(
        parser.parse_args(["mediator", "--no-coordinate", "--coordinate-timeout", "7.5"])
    )
    assert not off.coordinate and off.coordinate_timeout == 7.5


# --------------------------------------------------------------------------- over loopback


async def _fake_partner(
    where: tuple[str, int], me: object, them: object, *, coordinate: bool = True
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, wire.Message]:
    """A hand-written partner: registers ``me`` wanting ``them`` (answering the challenge with
    real HPKE), then returns its stream and the first pairing message it got."""
    from p2psc.keys import HPKE, nonce_info

    reader, writer = await asyncio.open_connection(*where)
    ours, theirs = me.public_key.raw, them.public_key.raw  # type: ignore[attr-defined]
    writer.write(wire.Advertise(1, ours, theirs, None, COORD if coordinate else ()).encode())
    decoder = wire.FrameDecoder()

    async def next_message() -> wire.Message:
        while True:
            messages_ = decoder.feed(await reader.read(4096))
            if messages_:
                return messages_[0]

    challenge = await next_message()
    assert isinstance(challenge, wire.AdvertiseChallenge)
    info = nonce_info("AdvertiseChallenge", ours, theirs)
    writer.write(wire.AdvertiseResponse(HPKE.open(me, challenge.encrypted_nonce, info)).encode())
    return reader, writer, await asyncio.wait_for(next_message(), 20)


@pytest.mark.parametrize("dies", ["peer-before-confirming", "client-after-identification"])
def test_over_loopback_the_survivor_learns_at_once(dies: str) -> None:
    """Real asyncio adapters and Mediator; the partner is a script that closes its socket at
    the step (the Peer with a clean FIN, which the uncoordinated rule took for a confirmation;
    the Client with a reset, as a crashed process). The survivor's connect() fails with the
    typed error long before its 10 s punch timeout (asserted only as "before")."""
    import socket as socket_module
    import struct
    import time

    from p2psc.aio import connect, serve_mediator
    from p2psc.errors import AdvertiseAborted
    from p2psc.keys import Keypair

    async def main() -> tuple[BaseException, float]:
        a, b = Keypair.generate(), Keypair.generate()
        async with serve_mediator("127.0.0.1", 0) as server:
            where = ("127.0.0.1", server.port)
            text = f"127.0.0.1:{server.port}"
            if dies == "peer-before-confirming":  # the survivor registers first: the Client
                real = asyncio.ensure_future(connect(a, b.public_key, text, timeout=30))
                await asyncio.sleep(0.5)
                _, writer, got = await _fake_partner(where, b, a)
                assert isinstance(got, wire.PeerDisconnect)
            else:  # the script registers first (the Client); the survivor is the Peer
                task = asyncio.ensure_future(_fake_partner(where, a, b))
                await asyncio.sleep(0.5)
                real = asyncio.ensure_future(connect(b, a.public_key, text, timeout=30))
                _, writer, got = await task
                assert isinstance(got, wire.PeerIdentification)
            assert wire.coordinated(got.extensions)  # type: ignore[union-attr]
            died = time.monotonic()
            if dies == "peer-before-confirming":
                writer.close()  # a clean FIN: uncoordinated, the Mediator took it for the
                # confirmation (issue 13); coordinated it is "the Peer is gone"
            else:
                sock = writer.get_extra_info("socket")
                linger = struct.pack("ii", 1, 0)
                sock.setsockopt(socket_module.SOL_SOCKET, socket_module.SO_LINGER, linger)
                writer.transport.abort()  # a reset, as a crashed process
            try:
                await asyncio.wait_for(real, 20)
            except (AdvertiseAborted, PartnerLost) as error:
                return error, time.monotonic() - died
            raise AssertionError("connect() succeeded with a dead partner")

    error, took = asyncio.run(main())
    print(f"\n[liveness] loopback, {dies}: {type(error).__name__} after {took * 1000:.0f} ms")
    expected = AdvertiseAborted if dies == "peer-before-confirming" else PartnerLost
    assert type(error) is expected, error
    assert took < 10.0  # the default punch timeout


def test_the_notes_say_whether_a_pairing_is_coordinated() -> None:
    """The paired and introduced notes carry cause "coordinated" (the demo and logs tell the
    Peer's Status from its close by it); an uncoordinated pairing's notes carry none."""
    d = coordinating()
    assert [(n.kind, n.cause) for n in d.notes if n.kind in {"paired", "introduced"}] == [
        ("paired", "coordinated"),
        ("introduced", "coordinated"),
    ]
    plain = paired_mediator(client=False, peer=True)
    plain.close(2)
    assert [(n.kind, n.cause) for n in plain.notes if n.kind in {"paired", "introduced"}] == [
        ("paired", ""),
        ("introduced", ""),
    ]
