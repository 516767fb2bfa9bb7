"""MediatorSession: the compiled table matches the python-statemachine class, and its shape."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psc.errors import InvalidTransition
from p2psc.machines import machine_classes
from p2psc.machines.compiler import Transition, compile_machine, reference_path
from p2psc.machines.mediator import MediatorSession

TABLE = compile_machine(MediatorSession)


def test_registered_and_shaped_as_specified() -> None:
    assert machine_classes()["MediatorSession"] is MediatorSession
    assert TABLE.initial == "awaiting_advertise"
    assert TABLE.finals == frozenset({"closed"})
    assert TABLE.guard_names == frozenset(
        {
            "version_supported",
            "transport_allowed",
            "self_pairing",
            "challenge_budget",
            "key_usable",
            "nonce_matches",
            "partner_waiting",
            "registry_full",
            "duplicate",
            "ping_allowed",
            "confirms",
            "reports_done",
            "coordinated",
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


def test_the_cores_flattened_step_is_the_compiled_table() -> None:
    """MediatorCore steps a flattened copy of the table (p2psc.core.mediator._step): for every
    state, event and assignment of every guard it takes the same transition object as
    MachineTable.step, asks the same guards in the same order, and refuses the same events."""
    from p2psc.core import mediator as core_module

    names = sorted(TABLE.guard_names)
    for state in TABLE.states:
        for event in TABLE.events:
            for bits in range(1 << len(names)):
                values = {name: bool(bits >> i & 1) for i, name in enumerate(names)}
                outcomes = []
                for step in (TABLE.step, core_module._step):
                    asked: list[str] = []

                    def oracle(
                        name: str, asked: list[str] = asked, values: dict[str, bool] = values
                    ) -> bool:
                        asked.append(name)
                        return values[name]

                    try:
                        outcomes.append((step(state, event, oracle), asked))
                    except InvalidTransition as error:
                        outcomes.append((str(error), asked))
                assert outcomes[0] == outcomes[1], (state, event, values)
                if isinstance(outcomes[1][0], Transition):
                    assert outcomes[1][0] is outcomes[0][0]  # the very same table entry


def test_the_cores_step_follows_a_swapped_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """The explorer's coverage recorder replaces ``TABLE`` in the core's module; the core's
    fast path must then step through the replacement, or coverage would go unrecorded."""
    from p2psc.core import mediator as core_module

    taken: list[tuple[str, str]] = []

    class Recorder:
        name = TABLE.name

        def step(self, state: str, event: str, oracle: object = None) -> Transition:
            taken.append((state, event))
            return TABLE.step(state, event, oracle)  # type: ignore[arg-type]

    monkeypatch.setattr(core_module, "TABLE", Recorder())
    assert core_module._step("waiting", "eof").target == "closed"
    assert taken == [("waiting", "eof")]
