"""INSECURE LEGACY peer core (sans-IO): both roles driven by a scripted mediator, in memory."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
from p2psc.errors import (
    AdvertiseAborted,
    HandshakeTimeout,
    IdentityCheckFailed,
    MediatorClosed,
    PeerUnreachable,
    ProtocolError,
)
from p2psc.legacy import codec
from p2psc.legacy.crypto import RsaKeypair, decrypt_nonce, encrypt_nonce
from p2psc.legacy.machines import LegacyPeerMachine
from p2psc.legacy.peer import (
    FIRST_ACCEPTED,
    LISTENER,
    MEDIATOR,
    PEER_OUT,
    TIMER,
    Established,
    LegacyAction,
    LegacyPeerConfig,
    LegacyPeerCore,
)
from p2psc.machines.compiler import compile_machine, reference_path

MEDIATOR_ADDRESS = ("127.0.0.1", 7000)


@pytest.fixture(scope="module")
def keys() -> list[RsaKeypair]:
    return [RsaKeypair.generate() for _ in range(3)]


def sends(actions: list[LegacyAction], conn: int) -> list[codec.LegacyMessage]:
    return [codec.decode(a.data) for a in actions if isinstance(a, Send) and a.conn == conn]


def checked(core: LegacyPeerCore, actions: list[LegacyAction]) -> list[LegacyAction]:
    """Every step keeps the core rebuildable from its snapshot."""
    snap = core.snapshot()
    assert LegacyPeerCore.from_snapshot(snap, core.config).snapshot() == snap
    hash(snap)
    return actions


def register(core: LegacyPeerCore, now: float = 0.0) -> None:
    """Drive ``core`` through the mediator handshake; the scripted mediator checks the nonce."""
    actions = checked(core, core.start(now))
    assert actions[0] == Connect(MEDIATOR, MEDIATOR_ADDRESS)
    actions = checked(
        core, core.handle(Opened(MEDIATOR, MEDIATOR_ADDRESS, ("127.0.0.1", 40000)), now)
    )
    [advertise] = sends(actions, MEDIATOR)
    assert isinstance(advertise, codec.Advertise) and advertise.version == 0
    assert advertise.our_key == core.config.keypair.public_key.to_wire()
    assert advertise.their_key == core.config.their_key.to_wire()
    challenge = codec.AdvertiseChallenge(encrypt_nonce(core.config.keypair.public_key, "987654"))
    actions = checked(core, core.handle(Received(MEDIATOR, codec.encode(challenge)), now))
    assert sends(actions, MEDIATOR) == [codec.AdvertiseResponse("987654")]
    assert core.state == "awaiting_pairing"


def pair(
    client: LegacyPeerCore, peer: LegacyPeerCore, trailing: bytes = b""
) -> tuple[list[LegacyAction], list[LegacyAction]]:
    """Run both through pairing and the peer handshake; return all actions of each."""
    register(client)
    register(peer)
    peer_actions = checked(
        peer, peer.handle(Received(MEDIATOR, codec.encode(codec.PeerDisconnect(40001))), 1.0)
    )
    assert Close(MEDIATOR, "PeerDisconnect: listening for the Client") in peer_actions
    assert Listen(LISTENER, 40001) in peer_actions
    ident = codec.PeerIdentification(0, "127.0.0.1", 40001)
    client_actions = checked(client, client.handle(Received(MEDIATOR, codec.encode(ident)), 1.2))
    assert Connect(PEER_OUT, ("127.0.0.1", 40001)) in client_actions
    accepted = FIRST_ACCEPTED
    peer_actions += checked(peer, peer.handle(Opened(accepted, ("127.0.0.1", 40000)), 1.3))
    new = checked(client, client.handle(Opened(PEER_OUT, ("127.0.0.1", 40001)), 1.3))
    client_actions += new
    # shuttle bytes until nobody sends any more
    pending_to_peer = [a.data for a in new if isinstance(a, Send) and a.conn == PEER_OUT]
    pending_to_client: list[bytes] = []
    for _ in range(10):
        if not pending_to_peer and not pending_to_client:
            break
        for data in pending_to_peer:
            out = checked(peer, peer.handle(Received(accepted, data), 1.4))
            peer_actions += out
            pending_to_client += [a.data for a in out if isinstance(a, Send)]
        pending_to_peer = []
        for data in pending_to_client:
            extra = trailing if codec.decode(data) == codec.PeerAcknowledgement() else b""
            out = checked(client, client.handle(Received(PEER_OUT, data + extra), 1.5))
            client_actions += out
            pending_to_peer += [a.data for a in out if isinstance(a, Send)]
        pending_to_client = []
    return client_actions, peer_actions


def config(keys: list[RsaKeypair], me: int, them: int, **kw: Any) -> LegacyPeerConfig:
    return LegacyPeerConfig(keys[me], keys[them].public_key, MEDIATOR_ADDRESS, **kw)


def test_client_and_peer_pair(keys: list[RsaKeypair]) -> None:
    client = LegacyPeerCore(config(keys, 0, 1))
    peer = LegacyPeerCore(config(keys, 1, 0))
    client_actions, peer_actions = pair(client, peer, trailing=b"hello")
    assert client_actions[-1] == Established(PEER_OUT, "client", b"hello")
    # the Peer's application may not send before the grace after PeerAcknowledgement (at 1.4)
    assert peer_actions[-1] == Established(FIRST_ACCEPTED, "peer", b"", send_after=1.4 + 0.25)
    assert client.state == peer.state == "established"
    # the handshake messages, in order, each in one Send
    to_peer = sends(client_actions, PEER_OUT)
    assert [type(m) for m in to_peer] == [codec.PeerChallenge, codec.PeerResponse]
    to_client = sends(peer_actions, FIRST_ACCEPTED)
    assert [type(m) for m in to_client] == [codec.PeerChallengeResponse, codec.PeerAcknowledgement]
    assert not any(isinstance(a, Failed) for a in client_actions + peer_actions)


def test_peer_with_the_wrong_key_fails_the_client(keys: list[RsaKeypair]) -> None:
    """The 'peer' owns key 1 but wants key 2: its nonce is encrypted to key 2, which the
    client (key 0) cannot open, so the client refuses."""
    client = LegacyPeerCore(config(keys, 0, 1))
    peer = LegacyPeerCore(config(keys, 1, 2))
    client_actions, _ = pair(client, peer)
    assert client.state == "failed"
    failures = [a.error for a in client_actions if isinstance(a, Failed)]
    assert len(failures) == 1 and isinstance(failures[0], IdentityCheckFailed)
    assert Close(PEER_OUT, failures[0].reason) in client_actions


def test_impostor_client_fails_the_peer(keys: list[RsaKeypair]) -> None:
    """Key 2 pretends to be key 0: it cannot answer the peer's challenge (encrypted to key 0)."""
    impostor = LegacyPeerCore(config(keys, 2, 1))
    peer = LegacyPeerCore(config(keys, 1, 0))
    impostor_actions, peer_actions = pair(impostor, peer)
    assert impostor.state == "failed" or peer.state == "failed"
    assert peer.state != "established"
    assert not any(isinstance(a, Established) for a in impostor_actions + peer_actions)


def test_forged_peer_response_is_refused(keys: list[RsaKeypair]) -> None:
    peer = LegacyPeerCore(config(keys, 1, 0))
    register(peer)
    peer.handle(Received(MEDIATOR, codec.encode(codec.PeerDisconnect(40001))), 1.0)
    peer.handle(Opened(FIRST_ACCEPTED, ("127.0.0.1", 1)), 1.0)
    challenge = codec.PeerChallenge(encrypt_nonce(keys[1].public_key, "55"))
    out = peer.handle(Received(FIRST_ACCEPTED, codec.encode(challenge)), 1.0)
    [reply] = sends(out, FIRST_ACCEPTED)
    assert isinstance(reply, codec.PeerChallengeResponse) and reply.decrypted_nonce == "55"
    real = decrypt_nonce(keys[0], reply.encrypted_nonce)
    out = peer.handle(Received(FIRST_ACCEPTED, codec.encode(codec.PeerResponse(real + "1"))), 1.0)
    assert peer.state == "failed"
    assert any(isinstance(a, Failed) and isinstance(a.error, IdentityCheckFailed) for a in out)
    assert Close(FIRST_ACCEPTED, "the Client does not own the key we asked for") in out


def test_abort_and_mediator_close(keys: list[RsaKeypair]) -> None:
    core = LegacyPeerCore(config(keys, 0, 1))
    register(core)
    out = core.handle(Received(MEDIATOR, codec.encode(codec.AdvertiseAbort("no"))), 2.0)
    assert isinstance(out[-1], Failed) and isinstance(out[-1].error, AdvertiseAborted)
    assert core.handle(Received(MEDIATOR, b"{}"), 2.0) == []  # finished: ignores everything

    core = LegacyPeerCore(config(keys, 0, 1))
    register(core)
    out = core.handle(Closed(MEDIATOR), 2.0)
    assert isinstance(out[-1], Failed) and isinstance(out[-1].error, MediatorClosed)


@pytest.mark.parametrize(
    "raw",
    [
        b"P2\x01\x06\x00\x00",
        b'{"type":99,"payload":{}}',
        codec.encode(codec.AdvertiseResponse("1")),  # only a mediator receives that
        codec.encode(codec.PeerAcknowledgement()) * 2,
        b'{"type":5,"payload":{"port":' + b"9" * 5000 + b"}}",
    ],
)
def test_bad_mediator_bytes_fail_cleanly(keys: list[RsaKeypair], raw: bytes) -> None:
    core = LegacyPeerCore(config(keys, 0, 1))
    register(core)
    out = core.handle(Received(MEDIATOR, raw), 2.0)
    assert core.state == "failed"
    assert Close(MEDIATOR, out[-1].error.reason) in out if isinstance(out[-1], Failed) else False
    assert isinstance(out[-1], Failed) and isinstance(out[-1].error, ProtocolError)


def test_undecryptable_mediator_challenge(keys: list[RsaKeypair]) -> None:
    core = LegacyPeerCore(config(keys, 0, 1))
    core.start(0.0)
    core.handle(Opened(MEDIATOR, MEDIATOR_ADDRESS, ("127.0.0.1", 1)), 0.0)
    wrong = codec.AdvertiseChallenge(encrypt_nonce(keys[1].public_key, "1"))
    out = core.handle(Received(MEDIATOR, codec.encode(wrong)), 0.0)
    assert isinstance(out[-1], Failed) and isinstance(out[-1].error, IdentityCheckFailed)


def test_timeouts(keys: list[RsaKeypair]) -> None:
    core = LegacyPeerCore(config(keys, 0, 1, pairing_timeout=30.0))
    register(core, now=0.0)
    out = core.handle(TimerFired(TIMER), 30.0)
    assert isinstance(out[-1], Failed) and isinstance(out[-1].error, HandshakeTimeout)
    assert Close(MEDIATOR, out[-1].error.reason) in out

    core = LegacyPeerCore(config(keys, 1, 0))
    register(core)
    core.handle(Received(MEDIATOR, codec.encode(codec.PeerDisconnect(5))), 1.0)
    out = core.handle(TimerFired(TIMER), 7.0)  # the Client never came
    assert isinstance(out[-1], Failed) and isinstance(out[-1].error, PeerUnreachable)
    assert Close(LISTENER, out[-1].error.reason) in out


def test_refused_connects_are_retried_until_the_deadline(keys: list[RsaKeypair]) -> None:
    core = LegacyPeerCore(config(keys, 0, 1, connect_timeout=1.0, retry_interval=0.25))
    register(core)
    ident = codec.PeerIdentification(0, "127.0.0.1", 40001)
    out = core.handle(Received(MEDIATOR, codec.encode(ident)), 10.0)
    assert SetTimer(TIMER, 11.0) in out
    now, connects = 10.0, 1
    for _ in range(20):  # bounded
        now += 0.01
        out = core.handle(Closed(PEER_OUT, "refused"), now)
        if isinstance(out[-1], Failed):
            break
        assert out == [SetTimer(TIMER, now + 0.25)]
        now += 0.25
        out = core.handle(TimerFired(TIMER), now)
        assert out == [Connect(PEER_OUT, ("127.0.0.1", 40001)), SetTimer(TIMER, 11.0)]
        connects += 1
    assert isinstance(out[-1].error, PeerUnreachable) if isinstance(out[-1], Failed) else False
    assert 3 <= connects <= 5


def test_unexpected_connections_are_closed(keys: list[RsaKeypair]) -> None:
    core = LegacyPeerCore(config(keys, 0, 1))
    register(core)
    assert core.handle(Opened(FIRST_ACCEPTED + 3, ("127.0.0.1", 9)), 1.0) == [
        Close(FIRST_ACCEPTED + 3, "not expected")
    ]


EVENTS = sorted(compile_machine(LegacyPeerMachine).events)
GUARDS = sorted(compile_machine(LegacyPeerMachine).guard_names)


@given(
    st.lists(st.sampled_from(EVENTS), max_size=14),
    st.fixed_dictionaries({g: st.booleans() for g in GUARDS}),
)
def test_table_matches_the_class(events: list[str], guards: dict[str, bool]) -> None:
    table = compile_machine(LegacyPeerMachine)
    expected = reference_path(LegacyPeerMachine, events, guards.__getitem__)
    state, actual = table.initial, []
    for event in events:
        try:
            state = table.step(state, event, guards.__getitem__).target
            actual.append(state)
        except ProtocolError:
            actual.append(None)
    assert actual == expected
