"""The relay leg of PeerCore (issue 14; spec/relay.md): every way the leg ends, the fallback,
and path agreement, against a scripted relay (real HPKE, explicit ``now``)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from p2psc import relay_wire as rw
from p2psc import wire
from p2psc.core.io import Close, Closed, Connect, Opened, Received, Send, TimerFired
from p2psc.core.peer import FIRST_ACCEPTED, LISTENER, RELAY_CONN, TIMER, Established, PeerAction
from p2psc.errors import (
    IdentityCheckFailed,
    PeerUnreachable,
    RelayRefused,
    RelayTimeout,
    RelayUnreachable,
)
from p2psc.keys import HPKE, Keypair, nonce_info
from tests.test_peer_core import (
    A_KEY,
    A_LOCAL,
    B_KEY,
    B_LOCAL,
    PID,
    Side,
    connects,
    failed,
    introduce,
    registered,
    wire_up,
)

RELAY = ("127.0.0.1", 9998)
OPTIONS: dict[str, object] = {"relay": "auto", "relay_address": RELAY, "punch_timeout": 5.0}


def relay_bytes(actions: Sequence[PeerAction]) -> list[object]:
    return [
        rw.decode_relay(a.data)
        for a in actions
        if isinstance(a, Send) and a.conn == RELAY_CONN and a.data[:2] == b"P2"
    ]


def at_relay(side: Side) -> list[PeerAction]:
    """The punch deadline passes: the side moves to the relay and connects to it."""
    side.now = 5.0
    actions = side.do(TimerFired(TIMER))
    assert Connect(RELAY_CONN, RELAY) in actions
    assert side.core.state == "relaying"
    return actions


def requested(side: Side, me: Keypair) -> rw.RelayRequest:
    (request,) = relay_bytes(side.do(Opened(RELAY_CONN, RELAY, side.local)))
    assert isinstance(request, rw.RelayRequest)
    assert (request.our_key, request.pairing_id) == (me.public_key.raw, PID)
    return request


def answered(side: Side, me: Keypair, them: Keypair) -> None:
    requested(side, me)
    info = rw.challenge_info(me.public_key.raw, them.public_key.raw, PID)
    sealed = HPKE.seal(me.public_key, bytes(32), info)
    (response,) = relay_bytes(side.do(Received(RELAY_CONN, rw.RelayChallenge(sealed).encode())))
    assert response == rw.RelayResponse(bytes(32))


def pair(**options: object) -> tuple[Side, Side, list[PeerAction]]:
    client = registered(A_KEY, B_KEY, A_LOCAL, **{**OPTIONS, **options})
    peer = registered(B_KEY, A_KEY, B_LOCAL, **{**OPTIONS, **options})
    client_actions, _ = introduce(client, peer)
    return client, peer, client_actions


def test_both_sides_move_to_the_relay_and_end_relayed() -> None:
    client, peer, _ = pair()
    for side, me, them in ((client, A_KEY, B_KEY), (peer, B_KEY, A_KEY)):
        at_relay(side)
        answered(side, me, them)
    connected = rw.RelayConnected(3600, 1 << 30).encode()
    (init,) = [a.data for a in client.do(Received(RELAY_CONN, connected)) if isinstance(a, Send)]
    waiting = peer.do(Received(RELAY_CONN, connected))
    assert not [a for a in waiting if isinstance(a, Send)]  # the Peer waits for the Client
    (reply,) = [a.data for a in peer.do(Received(RELAY_CONN, init)) if isinstance(a, Send)]
    out = client.do(Received(RELAY_CONN, reply))
    (c_est,) = [a for a in out if isinstance(a, Established)]
    (confirmation,) = [a.data for a in out if isinstance(a, Send) and a.conn == RELAY_CONN]
    (p_est,) = [
        a for a in peer.do(Received(RELAY_CONN, confirmation)) if isinstance(a, Established)
    ]
    assert c_est.path == p_est.path == "relayed"
    assert c_est.handshake_hash == p_est.handshake_hash
    assert client.core.state == peer.core.state == "relayed"


def test_a_direct_handshake_message_never_verifies_on_the_relay_leg() -> None:
    """The path is in the prologue: the Client's direct HandshakeInit, carried to the Peer's
    relay leg, is rejected (and a relayed one on a direct candidate likewise)."""
    client, peer, client_actions = pair()
    cconn, _ = wire_up(client, peer, client_actions)
    (direct_init,) = [a.data for a in client.log if isinstance(a, Send) and a.conn == cconn]
    at_relay(peer)
    answered(peer, B_KEY, A_KEY)
    peer.do(Received(RELAY_CONN, rw.RelayConnected().encode()))
    out = peer.do(Received(RELAY_CONN, direct_init))
    assert not any(isinstance(a, Send) and a.conn == RELAY_CONN for a in out)
    assert any(isinstance(a, Close) and a.conn == RELAY_CONN for a in out)


def test_the_client_drops_direct_candidates_when_it_moves_the_peer_keeps_them() -> None:
    client, peer, client_actions = pair()
    cconn, pconn = wire_up(client, peer, client_actions)
    client_moves = at_relay(client)
    assert Close(cconn, "moving to the relay") in client_moves
    assert Close(LISTENER, "moving to the relay") in client_moves
    peer_moves = at_relay(peer)
    assert not any(isinstance(a, Close) and a.conn in (pconn, LISTENER) for a in peer_moves)
    assert pconn in peer.core.candidates


def test_the_peer_commits_direct_after_moving_when_the_clients_confirmation_arrives() -> None:
    """The Client committed direct before its deadline; the Peer's deadline passed first: its
    relay leg is dropped and both end direct."""
    client, peer, client_actions = pair()
    cconn, pconn = wire_up(client, peer, client_actions)
    (init,) = [a.data for a in client.log if isinstance(a, Send) and a.conn == cconn]
    (reply,) = [a.data for a in peer.do(Received(pconn, init)) if isinstance(a, Send)]
    out = client.do(Received(cconn, reply))
    (c_est,) = [a for a in out if isinstance(a, Established)]
    (confirmation,) = [a.data for a in out if isinstance(a, Send) and a.conn == cconn]
    at_relay(peer)  # the confirmation is late
    requested(peer, B_KEY)
    out = peer.do(Received(pconn, confirmation))
    (p_est,) = [a for a in out if isinstance(a, Established)]
    assert c_est.path == p_est.path == "direct"
    assert any(isinstance(a, Close) and a.conn == RELAY_CONN for a in out)


def test_no_relay_at_the_address() -> None:
    client, _, _ = pair()
    at_relay(client)
    error = failed(client.do(Closed(RELAY_CONN, "connection refused")))
    assert isinstance(error, RelayUnreachable) and isinstance(error, PeerUnreachable)
    assert "no direct TCP connection with the Peer" in error.reason


def test_a_mediator_without_a_relay_is_named_as_such() -> None:
    client, _, _ = pair()
    at_relay(client)
    requested(client, A_KEY)
    abort = wire.AdvertiseAbort(wire.Reason.MALFORMED, "unknown message type 14")
    error = failed(client.do(Received(RELAY_CONN, abort.encode())))
    assert isinstance(error, RelayUnreachable) and "does not relay" in error.reason


def test_a_challenge_sealed_for_the_mediator_does_not_open_at_the_relay() -> None:
    """Domain separation, peer side: a relay that forwards a Mediator's challenge gets nothing."""
    client, _, _ = pair()
    at_relay(client)
    requested(client, A_KEY)
    info = nonce_info("AdvertiseChallenge", A_KEY.public_key.raw, B_KEY.public_key.raw)
    sealed = HPKE.seal(A_KEY.public_key, bytes(32), info)
    out = client.do(Received(RELAY_CONN, rw.RelayChallenge(sealed).encode()))
    assert not relay_bytes(out)[1:]  # no RelayResponse
    assert isinstance(failed(out), IdentityCheckFailed)


@pytest.mark.parametrize("stage", ["requesting", "answered"])
def test_relay_abort_is_relay_refused_with_its_code(stage: str) -> None:
    client, _, _ = pair()
    at_relay(client)
    if stage == "requesting":
        requested(client, A_KEY)
    else:
        answered(client, A_KEY, B_KEY)
    abort = rw.RelayAbort(rw.RelayReason.RELAY_REFUSED, "too many")
    error = failed(client.do(Received(RELAY_CONN, abort.encode())))
    assert isinstance(error, RelayRefused) and error.code == rw.RelayReason.RELAY_REFUSED


@pytest.mark.parametrize("stage", ["requesting", "answered"])
def test_garbage_from_the_relay(stage: str) -> None:
    client, _, _ = pair()
    at_relay(client)
    if stage == "requesting":
        requested(client, A_KEY)
    else:
        answered(client, A_KEY, B_KEY)
    error = failed(client.do(Received(RELAY_CONN, b"HTTP/1.1 400 Bad Request\r\n")))
    assert isinstance(error, RelayUnreachable)


@pytest.mark.parametrize("stage", ["connecting", "requesting", "answered"])
def test_the_deadline_at_the_relay(stage: str) -> None:
    client, _, _ = pair()
    at_relay(client)
    if stage == "requesting":
        requested(client, A_KEY)
    elif stage == "answered":
        answered(client, A_KEY, B_KEY)
    client.now = 30.0
    error = failed(client.do(TimerFired(TIMER)))
    expected = RelayUnreachable if stage == "connecting" else RelayTimeout
    assert isinstance(error, expected)
    assert client.core.relay_state == "failed"


def test_relay_only_never_punches_and_never_listens() -> None:
    client, peer, client_actions = pair(relay="only")
    for side, actions in ((client, client_actions), (peer, peer.log)):
        assert Connect(RELAY_CONN, RELAY) in actions
        assert [c for c in connects(actions) if c.conn != RELAY_CONN] == []
        assert side.core.state == "relaying" and LISTENER not in side.core.open_conns


def test_the_peers_listener_failing_while_relaying_is_not_fatal() -> None:
    _, peer, _ = pair()
    at_relay(peer)
    assert peer.do(Closed(LISTENER, "address in use")) == []
    assert peer.core.state == "relaying"


def test_strangers_on_the_peers_listener_are_evicted_while_relaying() -> None:
    _, peer, _ = pair(max_candidates_per_source=1)
    at_relay(peer)
    peer.do(Opened(FIRST_ACCEPTED + 5, ("192.0.2.9", 1), B_LOCAL))
    out = peer.do(Opened(FIRST_ACCEPTED + 6, ("192.0.2.9", 2), B_LOCAL))
    assert Close(FIRST_ACCEPTED + 5, "evicted: too many candidates from 192.0.2.9") in out
    assert peer.core.state == "relaying"
