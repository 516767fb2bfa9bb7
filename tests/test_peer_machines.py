"""The peer machines (Registration, Rendezvous, ClientCandidate, PeerCandidate): compiled tables
match the classes; each has the deadlines and guards the core relies on."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statemachine import StateMachine

from p2psc.errors import InvalidTransition
from p2psc.machines import machine_classes
from p2psc.machines.compiler import MachineTable, compile_machine, reference_path
from p2psc.machines.handshake import ClientCandidate, PeerCandidate, Registration, Rendezvous

MACHINES: list[type[StateMachine]] = [Registration, Rendezvous, ClientCandidate, PeerCandidate]
TABLES = {cls.__name__: compile_machine(cls) for cls in MACHINES}
REG, REN = TABLES["Registration"], TABLES["Rendezvous"]
CLIENT, PEER = TABLES["ClientCandidate"], TABLES["PeerCandidate"]


def oracle(**values: bool):  # type: ignore[no-untyped-def]
    return lambda name: values.get(name, False)


def test_registered() -> None:
    classes = machine_classes()
    for cls in MACHINES:
        assert classes[cls.__name__] is cls


def test_nothing_is_declared_twice() -> None:
    """The registration phase is declared once (both roles), the rendezvous once; only the
    per-candidate machines differ by role, and they share no event that means two things."""
    assert REG.finals == {"client", "peer", "failed"}
    assert REN.finals == {"established", "relayed", "failed"}
    assert set(CLIENT.events) & set(PEER.events) == {"bad_message", "silent", "closed"}


def test_every_live_registration_state_has_a_deadline() -> None:
    for state in set(REG.states) - REG.finals - {"idle"}:
        assert REG.step(state, "timeout").target == "failed", state
    assert REN.step("punching", "timeout").target == "failed"


def test_registration_guards() -> None:
    assert REG.step("advertising", "advertise_challenge", oracle()).target == "failed"
    ok = oracle(challenge_opens=True)
    assert REG.step("advertising", "advertise_challenge", ok).target == "waiting"
    assert REG.step("waiting", "advertise_retry", oracle()).target == "failed"
    assert REG.step("waiting", "advertise_retry", oracle(can_retry=True)).target == "backing_off"
    version_only = oracle(version_supported=True)
    assert REG.step("waiting", "peer_identification", version_only).target == "failed"
    both = oracle(version_supported=True, addresses_usable=True)
    assert REG.step("waiting", "peer_identification", both).target == "client"
    assert REG.step("waiting", "peer_disconnect", oracle(addresses_usable=True)).target == "failed"
    usable = oracle(addresses_usable=True, can_listen=True)
    assert REG.step("waiting", "peer_disconnect", usable).target == "peer"
    with pytest.raises(InvalidTransition):
        REG.step("connecting_mediator", "malformed")


def test_candidate_guards() -> None:
    """A candidate is confirmed only by the guard of its role's last message."""
    assert CLIENT.step(CLIENT.initial, "handshake_response", oracle()).target == "rejected"
    valid = oracle(response_valid=True)
    assert CLIENT.step(CLIENT.initial, "handshake_response", valid).target == "confirmed"
    assert PEER.step(PEER.initial, "handshake_init", oracle()).target == "rejected"
    answered = PEER.step(PEER.initial, "handshake_init", oracle(init_valid=True)).target
    assert answered == "answered"
    # answering confirms nothing: only the Client's first record does
    assert PEER.step(answered, "first_record", oracle()).target == "rejected"
    assert PEER.step(answered, "first_record", oracle(record_valid=True)).target == "confirmed"
    with pytest.raises(InvalidTransition):
        PEER.step(PEER.initial, "first_record", oracle(record_valid=True))
    for table in (CLIENT, PEER):
        for state in set(table.states) - table.finals:
            for event in ("silent", "closed"):
                assert table.step(state, event).target == "rejected"
    assert CLIENT.step(CLIENT.initial, "bad_message").target == "rejected"
    assert PEER.step(PEER.initial, "bad_message").target == "rejected"
    # Past its answer the Peer reads a transport record: garbage there is a first_record that
    # does not decrypt (the explorer's garbage model takes it), never a bad_message.
    with pytest.raises(InvalidTransition):
        PEER.step(answered, "bad_message")


def test_listen_failed_is_fatal_only_for_the_peer() -> None:
    assert REN.step("punching", "listen_failed", oracle(can_go_on=True)).target == "punching"
    assert REN.step("punching", "listen_failed", oracle()).target == "failed"


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


@pytest.mark.parametrize("cls", MACHINES, ids=lambda c: c.__name__)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_differential(cls: type[StateMachine], data: st.DataObject) -> None:
    table = TABLES[cls.__name__]
    events = data.draw(st.lists(st.sampled_from(table.events), max_size=10))
    guards = data.draw(
        st.fixed_dictionaries({name: st.booleans() for name in sorted(table.guard_names)})
    )
    assert _table_path(table, events, guards) == reference_path(cls, events, guards.__getitem__)


HAPPY = {
    "Registration": ["start", "mediator_opened", "advertise_challenge", "peer_identification"],
    "Rendezvous": [
        "attempt_failed",
        "attempt_due",
        "direct_opened",
        "candidate_evicted",
        "confirmed",
    ],
    "ClientCandidate": ["handshake_response"],
    "PeerCandidate": ["handshake_init", "first_record"],
}


@pytest.mark.parametrize("cls", MACHINES, ids=lambda c: c.__name__)
def test_happy_paths_agree_with_the_classes(cls: type[StateMachine]) -> None:
    """Random sequences rarely reach the end; each happy path is checked explicitly."""
    table = TABLES[cls.__name__]
    yes = dict.fromkeys(table.guard_names, True)
    path = _table_path(table, HAPPY[cls.__name__], yes)
    assert path[-1] in table.finals and path[-1] not in ("failed", "rejected")
    assert path == reference_path(cls, HAPPY[cls.__name__], yes.__getitem__)
