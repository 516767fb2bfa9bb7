"""The generic explorer on toy models whose state spaces are known by hand.

Why toys: the engine (deduplication, BFS shortest traces, deadlock detection, depth bounds,
coverage, reports) must be right before it is trusted to judge the real cores.
"""

from __future__ import annotations

import gc
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from p2psc.models.explorer import Coverage, Step, explore, format_report, mermaid_trace, text_trace
from p2psc.models.mutants import (
    CHANNEL_MUTANTS,
    DIRECT_MUTANTS,
    MEDIATION_MUTANTS,
    NEGOTIATOR_MUTANTS,
)
from statemachine import State, StateMachine

from p2psc.errors import InvalidTransition
from p2psc.machines.compiler import compile_machine
from p2psc.machines.handshake import ClientCandidate, PeerCandidate, Registration, Rendezvous
from p2psc.machines.mediator import MediatorSession
from p2psc.machines.negotiator import NegotiatorMachine


class Counters:
    """Two independent counters, each counting 0..n; the only terminal state is (n, n)."""

    name = "counters"
    actors: Sequence[str] = ("A", "B")

    def __init__(self, n: int, *, bad: tuple[int, int] | None = None) -> None:
        self.n = n
        self.bad = bad

    def initial_states(self) -> list[tuple[int, int]]:
        return [(0, 0)]

    def successors(self, state: tuple[int, int]) -> list[tuple[Step, tuple[int, int]]]:
        a, b = state
        out = []
        if a < self.n:
            out.append((Step("app", "A", f"a={a + 1}"), (a + 1, b)))
        if b < self.n:
            out.append((Step("app", "B", f"b={b + 1}"), (a, b + 1)))
        return out

    def invariant(self, state: tuple[int, int]) -> str | None:
        return "reached the bad state" if state == self.bad else None

    def terminal(self, state: tuple[int, int]) -> str | None:
        return None if state == (self.n, self.n) else "stuck"

    def describe(self, state: tuple[int, int]) -> str:
        return repr(state)

    def coverage(self) -> Coverage | None:
        return None


LostUpdateState = tuple[int, tuple[int, int], tuple[int, int]]  # x, pcs, locals


class LostUpdate:
    """Two processes do ``tmp = x; x = tmp + 1`` without a lock; when both end x must be 2."""

    name = "lost-update"
    actors: Sequence[str] = ("P0", "P1", "x")

    def initial_states(self) -> list[LostUpdateState]:
        return [(0, (0, 0), (0, 0))]

    def successors(self, state: LostUpdateState) -> list[tuple[Step, LostUpdateState]]:
        x, pcs, tmps = state
        out = []
        for i in (0, 1):
            pc = pcs[i]
            if pc == 0:
                read_pcs = (1, pcs[1]) if i == 0 else (pcs[0], 1)
                read_tmps = (x, tmps[1]) if i == 0 else (tmps[0], x)
                out.append((Step("deliver", f"P{i}", f"read {x}", "x"), (x, read_pcs, read_tmps)))
            elif pc == 1:
                done_pcs = (2, pcs[1]) if i == 0 else (pcs[0], 2)
                step = Step("deliver", "x", f"write {tmps[i] + 1}", f"P{i}")
                out.append((step, (tmps[i] + 1, done_pcs, tmps)))
        return out

    def invariant(self, state: LostUpdateState) -> str | None:
        x, pcs, _ = state
        if pcs == (2, 2) and x != 2:
            return f"both incremented but x == {x}"
        return None

    def terminal(self, state: LostUpdateState) -> str | None:
        return None

    def describe(self, state: LostUpdateState) -> str:
        return f"x={state[0]} pcs={state[1]}"

    def coverage(self) -> Coverage | None:
        return None


class Philosophers:
    """Two philosophers, two forks, each takes the left fork then the right: can deadlock.

    With ``waiter``, a fault step is always possible too: a waiter takes every fork back (only
    once). It could break the deadlock, but progress must not depend on a fault."""

    name = "philosophers"
    actors: Sequence[str] = ("P0", "P1")

    def __init__(self, *, waiter: bool = False) -> None:
        self.waiter = waiter

    def initial_states(self) -> list[tuple[int, int, bool]]:
        # per philosopher: 0 thinking, 1 has left, 2 eating (done); then: the waiter came
        return [(0, 0, False)]

    def successors(self, state: tuple[int, int, bool]) -> list[tuple[Step, tuple[int, int, bool]]]:
        out = []
        for i in (0, 1):
            left, right = i, 1 - i
            holder = self._holders(state)
            if state[i] == 0 and holder[left] is None:
                out.append((Step("app", f"P{i}", "take left"), self._set(state, i, 1)))
            if state[i] == 1 and holder[right] is None:
                out.append((Step("app", f"P{i}", "take right, eat"), self._set(state, i, 2)))
        if self.waiter and not state[2] and 2 not in state[:2]:
            out.append((Step("app", "P0", "waiter resets the forks", fault=True), (0, 0, True)))
        return out

    @staticmethod
    def _set(state: tuple[int, int, bool], i: int, value: int) -> tuple[int, int, bool]:
        return (value, state[1], state[2]) if i == 0 else (state[0], value, state[2])

    @staticmethod
    def _holders(state: tuple[int, int, bool]) -> list[int | None]:
        holders: list[int | None] = [None, None]
        for i in (0, 1):
            if state[i] >= 1:
                holders[i] = i  # left fork of i is fork i
            if state[i] == 2:
                holders[1 - i] = i
        return holders

    def invariant(self, state: tuple[int, int, bool]) -> str | None:
        return None

    def terminal(self, state: tuple[int, int, bool]) -> str | None:
        if 2 in state[:2]:
            return None
        return "both hold their left fork and wait for the right one"

    def describe(self, state: tuple[int, int, bool]) -> str:
        return repr(state)

    def coverage(self) -> Coverage | None:
        return None


def test_counters_state_space_is_exact() -> None:
    n = 7
    result = explore(Counters(n))
    assert result.ok
    assert result.states == (n + 1) ** 2
    assert result.transitions == 2 * n * (n + 1)
    assert result.depth == 2 * n
    assert result.terminals == 1
    assert not result.bounded


def test_depth_bound_stops_expansion() -> None:
    result = explore(Counters(10), max_depth=3)
    assert result.ok
    assert result.bounded
    assert result.depth == 3
    assert result.states == 1 + 2 + 3 + 4  # states at depth 0..3 of the grid


def test_state_budget_is_reported() -> None:
    result = explore(Counters(50), max_states=100)
    assert result.ok
    assert result.bounded
    assert result.notes and "budget" in result.notes[0]


def test_invariant_violation_is_a_shortest_trace() -> None:
    result = explore(Counters(5, bad=(3, 2)))
    assert result.violation is not None
    assert result.violation.kind == "invariant"
    assert len(result.violation.steps) == 5
    assert result.violation.state == (3, 2)
    assert result.violation.states[0] == (0, 0)


def test_lost_update_is_found_in_four_steps() -> None:
    result = explore(LostUpdate())
    violation = result.violation
    assert violation is not None
    assert violation.kind == "invariant"
    assert len(violation.steps) == 4
    assert violation.state[0] == 1
    kinds = [step.text.split()[0] for step in violation.steps]
    assert kinds.count("read") == 2 and kinds.count("write") == 2
    text = text_trace(violation, LostUpdate().describe)
    assert "both incremented but x == 1" in text
    diagram = mermaid_trace(violation, LostUpdate.actors)
    assert diagram.startswith("sequenceDiagram")
    assert "x->>P0: read 0" in diagram or "x->>P1: read 0" in diagram


def test_deadlock_is_reported_with_its_trace() -> None:
    result = explore(Philosophers())
    violation = result.violation
    assert violation is not None
    assert violation.kind == "terminal"
    assert violation.state == (1, 1, False)
    assert len(violation.steps) == 2
    report = format_report(result, Philosophers().describe)
    assert "VIOLATION" in report and "```mermaid" in report and "Note over P0" in report


def test_a_deadlock_is_reported_even_when_a_fault_could_break_it() -> None:
    result = explore(Philosophers(waiter=True))
    violation = result.violation
    assert violation is not None and violation.kind == "terminal"
    assert violation.state == (1, 1, False)  # before the waiter, the only way on, came


def test_fault_steps_are_still_explored_from_a_final_state() -> None:
    """A final state that is allowed keeps its fault successors in the search."""

    class Done(Philosophers):
        def terminal(self, state: tuple[int, int, bool]) -> str | None:
            return None

    result = explore(Done(waiter=True))
    assert result.ok
    plain = explore(Done())
    assert result.states > plain.states  # the waiter's states were reached


def test_progress_callback_runs_on_long_explorations() -> None:
    calls: list[int] = []
    result = explore(
        Counters(120), progress=lambda r, frontier: calls.append(r.states), progress_interval=0.0
    )
    assert result.ok and calls
    assert calls == sorted(calls)


class _Tiny(StateMachine):
    idle = State(initial=True)
    busy = State()
    done = State(final=True)
    go = idle.to(busy)
    finish = busy.to(done) | idle.to(done)


def test_coverage_lists_transitions_never_taken() -> None:
    table = compile_machine(_Tiny)
    coverage = Coverage([table])
    coverage.take_pair("_Tiny", "idle", "busy")
    coverage.take_pair("_Tiny", "busy", "done", "finish")
    assert (coverage.covered, coverage.declared) == (2, 3)
    missing = [str(t) for _, t in coverage.missing()]
    assert missing == ["idle --finish--> done"]


@pytest.mark.parametrize(
    "machine",
    [
        NegotiatorMachine,
        MediatorSession,
        Registration,
        Rendezvous,
        ClientCandidate,
        PeerCandidate,
    ],
)
def test_recording_table_steps_exactly_like_the_table(machine: type) -> None:
    """The coverage recorder replaces the cores' tables during exploration: for every state,
    event and guard assignment it must take the same transition (or refuse the same way) as
    :meth:`MachineTable.step`, and record exactly that transition."""
    table = compile_machine(machine)
    coverage = Coverage([table])
    recorder = coverage.recorder(table)
    assert coverage.recorder(table) is recorder  # built once per table
    names = sorted(table.guard_names)
    for values in itertools.product((False, True), repeat=len(names)):
        answers = dict(zip(names, values, strict=True))
        for state in table.states:
            for event in table.events:
                try:
                    expected = table.step(state, event, answers.__getitem__)
                except InvalidTransition:
                    with pytest.raises(InvalidTransition):
                        recorder.step(state, event, answers.__getitem__)
                    continue
                before = set(coverage.taken[table.name])
                assert recorder.step(state, event, answers.__getitem__) is expected
                assert coverage.taken[table.name] - before <= {expected.index}
                assert expected.index in coverage.taken[table.name]
    assert recorder.initial == table.initial  # other attributes are the table's


def test_explore_turns_the_cyclic_gc_off_and_back_on() -> None:
    before = gc.get_threshold()
    seen: list[bool] = []

    class Watching(Counters):
        def invariant(self, state: Any) -> str | None:
            seen.append(gc.isenabled())
            return super().invariant(state)

    assert gc.isenabled()
    explore(Watching(3))
    assert seen and not any(seen)  # off during the search
    assert gc.isenabled() and gc.get_threshold() == before
    explore(Philosophers())  # also when a violation ends the search
    assert gc.isenabled() and gc.get_threshold() == before
    gc.disable()
    try:
        explore(Counters(3))
        assert not gc.isenabled()  # left as the caller had it
    finally:
        gc.enable()


def test_spec_lists_every_mutant_with_the_property_it_breaks() -> None:
    """spec/properties.md section 4 stays in step with models/mutants.py."""
    spec = (Path(__file__).resolve().parents[1] / "spec" / "properties.md").read_text()
    for name, (_, prop) in (
        *NEGOTIATOR_MUTANTS.items(),
        *MEDIATION_MUTANTS.items(),
        *DIRECT_MUTANTS.items(),
        *CHANNEL_MUTANTS.items(),
    ):
        assert f"| {prop} | `{name}` |" in spec
        assert f"**{prop}, " in spec  # the property itself is stated
