"""NegotiatorMachine: the compiled table matches the python-statemachine class, and the core
answers every guard the class declares."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2psc.core import negotiator as negotiator_module
from p2psc.core.negotiator import KEEPALIVE, Negotiator, ProtocolSpec
from p2psc.errors import InvalidTransition
from p2psc.machines import machine_classes
from p2psc.machines.compiler import GuardOracle, Transition, compile_machine, reference_path
from p2psc.machines.negotiator import NegotiatorMachine

TABLE = compile_machine(NegotiatorMachine)
GUARDS = sorted(TABLE.guard_names)


def test_states_are_the_seed_states_plus_failed() -> None:
    assert set(TABLE.states) == {
        "Initial",
        "SentKeepalive",
        "SentInitiate",
        "ReceivedInitiate",
        "WaitForAcceptReject",
        "Sleep",
        "ProtocolNegotiated",
        "Failed",
    }
    assert TABLE.initial == "Initial" and TABLE.finals == frozenset({"Failed"})
    assert "p2psc.machines.negotiator:NegotiatorMachine" in str(
        [f"{c.__module__}:{c.__name__}" for c in machine_classes().values()]
    )


def test_guards_are_mutually_exclusive_per_state_and_event() -> None:
    """Every guard combination enables at most one transition, so the diagram reads without
    knowing the declaration order."""
    for state in TABLE.states:
        for event in TABLE.events:
            candidates = TABLE.candidates(state, event)
            names = sorted({g.name for t in candidates for g in t.guards})
            for bits in range(1 << len(names)):
                values = {n: bool(bits >> i & 1) for i, n in enumerate(names)}
                enabled = [t for t in candidates if t.enabled(values.__getitem__)]
                assert len(enabled) <= 1, (state, event, values, enabled)


def test_core_answers_every_guard() -> None:
    n = Negotiator([ProtocolSpec(1, "chat"), ProtocolSpec(2, "sync", priority=3)])
    n.start_round(propose=1)
    n._byte = 2  # a known id, so every byte guard is meaningful
    answers = {name: n._guard(name) for name in GUARDS}
    assert answers["we_initiate"] and answers["is_known_protocol"]
    assert not answers["same_protocol"] and not answers["our_protocol_wins"]
    n._byte = KEEPALIVE
    assert not n._guard("is_known_protocol")


@given(
    events=st.lists(st.sampled_from(TABLE.events), max_size=16),
    guards=st.fixed_dictionaries({name: st.booleans() for name in GUARDS}),
)
def test_differential_against_the_class(events: list[str], guards: dict[str, bool]) -> None:
    expected = reference_path(NegotiatorMachine, events, guards.__getitem__)
    state = TABLE.initial
    actual: list[str | None] = []
    for event in events:
        try:
            state = TABLE.step(state, event, guards.__getitem__).target
        except InvalidTransition:
            actual.append(None)
            continue
        actual.append(state)
    assert actual == expected


class _ScriptedGuards(Negotiator):
    """A core whose guards come from a dict, to compare its own stepping with the table's."""

    __slots__ = ("values",)

    def _guard(self, name: str) -> bool:
        return self.values[name]


@given(
    events=st.lists(st.sampled_from(TABLE.events), max_size=16),
    guards=st.fixed_dictionaries({name: st.booleans() for name in GUARDS}),
)
def test_core_stepping_matches_the_table(events: list[str], guards: dict[str, bool]) -> None:
    core = _ScriptedGuards([ProtocolSpec(1, "chat")])
    core.values = guards
    state = TABLE.initial
    for event in events:
        try:
            expected: str | None = TABLE.step(state, event, guards.__getitem__).target
        except InvalidTransition:
            expected = None
        try:
            actual: str | None = core._step(state, event)
        except InvalidTransition:
            actual = None
        assert actual == expected
        state = expected or state


def test_a_swapped_table_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    """The explorer records coverage by swapping the module's ``_TABLE`` for a proxy."""
    taken: list[str] = []

    class Recorder:
        def step(self, state: str, event: str, oracle: GuardOracle | None = None) -> Transition:
            transition = TABLE.step(state, event, oracle)
            taken.append(str(transition))
            return transition

    monkeypatch.setattr(negotiator_module, "_TABLE", Recorder())
    n = Negotiator([ProtocolSpec(1, "chat")])
    n.start_round(propose=1)
    n.receive_data(b"\x01")
    assert taken == [
        "Initial --start [we_initiate]--> SentInitiate",
        "SentInitiate --initiate [is_known_protocol & same_protocol & simultaneous_runs]"
        "--> ProtocolNegotiated",
    ]
