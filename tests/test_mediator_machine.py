"""MediatorSession: the compiled table matches the python-statemachine class, and its shape."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from p2psc.errors import InvalidTransition
from p2psc.machines import machine_classes
from p2psc.machines.compiler import compile_machine, reference_path
from p2psc.machines.mediator import MediatorSession

TABLE = compile_machine(MediatorSession)


def test_registered_and_shaped_as_specified() -> None:
    assert machine_classes()["MediatorSession"] is MediatorSession
    assert TABLE.initial == "awaiting_advertise"
    assert TABLE.finals == frozenset({"closed"})
    assert TABLE.guard_names == frozenset(
        {
            "version_supported",
            "self_pairing",
            "key_usable",
            "nonce_matches",
            "partner_waiting",
            "registry_full",
            "duplicate",
        }
    )
    # every non-final state can be left by each connection-level event
    for state in set(TABLE.states) - TABLE.finals:
        for event in ("eof", "lost", "timeout", "bad_input", "shutdown"):
            assert TABLE.step(state, event).target == "closed"


def test_guard_order_of_the_response() -> None:
    def oracle(**values: bool):  # type: ignore[no-untyped-def]
        return lambda name: values.get(name, False)

    step = TABLE.step
    assert step("challenged", "response", oracle(partner_waiting=True)).target == "closed"
    ok = {"nonce_matches": True}
    assert step("challenged", "response", oracle(**ok, partner_waiting=True)).target == (
        "disconnecting"
    )
    full = oracle(**ok, registry_full=True, duplicate=True)
    assert step("challenged", "response", full).target == "closed"
    assert step("challenged", "response", oracle(**ok)).target == "waiting"


@settings(max_examples=300)
@given(
    events=st.lists(st.sampled_from(TABLE.events), max_size=10),
    guards=st.fixed_dictionaries({name: st.booleans() for name in sorted(TABLE.guard_names)}),
)
def test_differential_against_the_class(events: list[str], guards: dict[str, bool]) -> None:
    expected = reference_path(MediatorSession, events, guards.__getitem__)
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
