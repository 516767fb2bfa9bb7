"""ClientHandshake / PeerHandshake: compiled tables match the classes; the shared half is exact."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psc.errors import InvalidTransition
from p2psc.machines import machine_classes
from p2psc.machines.compiler import MachineTable, compile_machine, reference_path
from p2psc.machines.handshake import ClientHandshake, PeerHandshake

CLIENT = compile_machine(ClientHandshake)
PEER = compile_machine(PeerHandshake)
SHARED_STATES = {"idle", "connecting_mediator", "advertising", "waiting", "backing_off"}
HANDOVER = {"peer_disconnect", "peer_identification"}


def test_registered() -> None:
    classes = machine_classes()
    assert classes["ClientHandshake"] is ClientHandshake
    assert classes["PeerHandshake"] is PeerHandshake


def _shared(table: MachineTable) -> set[tuple[str, str, str, tuple[object, ...]]]:
    return {
        (t.source, t.event, t.target, t.guards)
        for t in table.transitions
        if t.source in SHARED_STATES and t.event not in HANDOVER
    }


def test_shared_half_is_identical() -> None:
    """The core hands over from one table to the other at ``waiting``: the first half of both
    must be the same machine, or the hand-over would change behaviour."""
    assert _shared(CLIENT) == _shared(PEER)
    assert len(_shared(CLIENT)) > 10
    assert CLIENT.step("waiting", "peer_disconnect").target == "became_peer"
    assert PEER.step("waiting", "peer_disconnect").target == "punching"
    assert PEER.step("waiting", "peer_identification").target == "became_client"


@pytest.mark.parametrize("table", [CLIENT, PEER], ids=lambda t: t.name)
def test_every_live_state_has_a_deadline(table: MachineTable) -> None:
    for state in set(table.states) - table.finals - {"idle"}:
        assert table.step(state, "timeout").target == "failed", state


def test_guards() -> None:
    def oracle(**values: bool):  # type: ignore[no-untyped-def]
        return lambda name: values.get(name, False)

    assert CLIENT.step("advertising", "advertise_challenge", oracle()).target == "failed"
    ok = oracle(challenge_opens=True)
    assert CLIENT.step("advertising", "advertise_challenge", ok).target == "waiting"
    assert CLIENT.step("waiting", "advertise_retry", oracle()).target == "failed"
    retry = oracle(can_retry=True)
    assert CLIENT.step("waiting", "advertise_retry", retry).target == "backing_off"
    assert CLIENT.step("waiting", "peer_identification", oracle()).target == "failed"
    version = oracle(version_supported=True)
    assert CLIENT.step("waiting", "peer_identification", version).target == "punching"
    assert CLIENT.step("punching", "challenge_response", oracle()).target == "punching"
    good = oracle(response_ok=True)
    assert CLIENT.step("punching", "challenge_response", good).target == "confirming"
    assert PEER.step("punching", "peer_challenge", oracle()).target == "punching"
    assert PEER.step("punching", "peer_challenge", ok).target == "answering"
    assert PEER.step("answering", "peer_response", oracle()).target == "failed"
    assert PEER.step("answering", "peer_response", oracle(nonce_ok=True)).target == "established"
    with pytest.raises(InvalidTransition):
        CLIENT.step("punching", "malformed")


def _table_path(
    table: MachineTable, events: list[str], guards: dict[str, bool]
) -> list[str | None]:
    state = table.initial
    path: list[str | None] = []
    for event in events:
        try:
            state = table.step(state, event, guards.__getitem__).target
        except InvalidTransition:
            path.append(None)
            continue
        path.append(state)
    return path


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(st.sampled_from(CLIENT.events), max_size=12),
    guards=st.fixed_dictionaries({name: st.booleans() for name in sorted(CLIENT.guard_names)}),
)
def test_client_differential(events: list[str], guards: dict[str, bool]) -> None:
    assert _table_path(CLIENT, events, guards) == reference_path(
        ClientHandshake, events, guards.__getitem__
    )


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(st.sampled_from(PEER.events), max_size=12),
    guards=st.fixed_dictionaries({name: st.booleans() for name in sorted(PEER.guard_names)}),
)
def test_peer_differential(events: list[str], guards: dict[str, bool]) -> None:
    assert _table_path(PEER, events, guards) == reference_path(
        PeerHandshake, events, guards.__getitem__
    )


HAPPY_CLIENT = [
    "start",
    "mediator_opened",
    "advertise_challenge",
    "peer_identification",
    "attempt_failed",
    "attempt_due",
    "direct_opened",
    "challenge_response",
    "acknowledgement",
]
HAPPY_PEER = [
    "start",
    "mediator_opened",
    "advertise_challenge",
    "peer_disconnect",
    "direct_opened",
    "candidate_rejected",
    "peer_challenge",
    "peer_response",
]


def test_happy_paths_agree_with_the_classes() -> None:
    """Random sequences rarely reach the end; the two full handshakes are checked explicitly."""
    yes = dict.fromkeys(CLIENT.guard_names | PEER.guard_names, True)
    client = _table_path(CLIENT, HAPPY_CLIENT, yes)
    assert client[-1] == "established"
    assert client == reference_path(ClientHandshake, HAPPY_CLIENT, yes.__getitem__)
    peer = _table_path(PEER, HAPPY_PEER, yes)
    assert peer[-1] == "established"
    assert peer == reference_path(PeerHandshake, HAPPY_PEER, yes.__getitem__)
