"""The machine compiler: tables match the python-statemachine class they come from."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from statemachine import State, StateMachine

from p2psc.errors import InvalidTransition, ProtocolError
from p2psc.machines.compiler import Guard, compile_machine, reference_path


class Door(StateMachine):
    """A toy machine with guards, negated guards, a conjunction and a self-loop."""

    closed = State(initial=True)
    opened = State()
    locked = State()
    broken = State(final=True)

    push = closed.to(opened, cond="unlocked") | closed.to(locked, unless="unlocked")
    shut = opened.to(closed)
    kick = closed.to(broken, cond="strong and not careful") | closed.to.itself()
    wait = locked.to(closed) | opened.to.itself()


def test_table_shape() -> None:
    table = compile_machine(Door)
    assert table.states == ("closed", "opened", "locked", "broken")
    assert table.initial == "closed"
    assert table.finals == frozenset({"broken"})
    assert set(table.events) == {"push", "shut", "kick", "wait"}
    assert table.guard_names == frozenset({"unlocked", "strong", "careful"})
    kicks = table.candidates("closed", "kick")
    assert kicks[0].guards == (Guard("strong", True), Guard("careful", False))
    assert kicks[1].target == "closed"
    assert compile_machine(Door) is table  # compiled once


def test_step_follows_guards_in_declaration_order() -> None:
    table = compile_machine(Door)
    assert table.step("closed", "push", {"unlocked": True}.__getitem__).target == "opened"
    assert table.step("closed", "push", {"unlocked": False}.__getitem__).target == "locked"
    oracle = {"strong": True, "careful": True}.__getitem__
    assert table.step("closed", "kick", oracle).target == "closed"


def test_undeclared_event_is_a_protocol_error() -> None:
    table = compile_machine(Door)
    with pytest.raises(InvalidTransition) as caught:
        table.step("opened", "push")
    assert isinstance(caught.value, ProtocolError)
    assert "push" in caught.value.reason and "opened" in caught.value.reason


def test_unsupported_guard_expression_is_rejected() -> None:
    class Bad(StateMachine):
        a = State(initial=True)
        b = State(final=True)
        go = a.to(b, cond="x or y")

    with pytest.raises(ValueError, match="unsupported guard"):
        compile_machine(Bad)


@given(
    events=st.lists(st.sampled_from(["push", "shut", "kick", "wait"]), max_size=12),
    guards=st.fixed_dictionaries(
        {"unlocked": st.booleans(), "strong": st.booleans(), "careful": st.booleans()}
    ),
)
def test_differential_against_the_class(events: list[str], guards: dict[str, bool]) -> None:
    table = compile_machine(Door)
    expected = reference_path(Door, events, guards.__getitem__)
    state = table.initial
    actual: list[str | None] = []
    for event in events:
        try:
            state = table.step(state, event, guards.__getitem__).target
        except InvalidTransition:
            actual.append(None)
            continue
        actual.append(state)
    assert actual == expected
