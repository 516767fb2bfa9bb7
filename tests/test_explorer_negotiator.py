"""The negotiator pair model over the real Negotiator core, and its mutants.

Fast tests use small configurations; the full three-protocol runs are marked slow (CI runs
them; each takes seconds).
"""

from __future__ import annotations

import pytest
from p2psc.models.explorer import explore, format_report, mermaid_trace
from p2psc.models.mutants import NEGOTIATOR_MUTANTS, negotiator_mutant
from p2psc.models.negotiator_model import NegotiatorPairModel, configurations


def _taken(model: NegotiatorPairModel) -> set[str]:
    coverage = model.coverage()
    assert coverage is not None
    table = coverage.tables["NegotiatorMachine"]
    return {str(t) for t in table.transitions if t.index in coverage.taken["NegotiatorMachine"]}


def test_configurations_cover_ties_policies_and_sets() -> None:
    configs = configurations(2)
    # Every shared set of 0..2 protocols, with every priority (3) and policy (2) per member.
    assert len(configs) == 1 + 2 * 6 + 36
    assert any(known[0] == {0, 1} and prio[0] == prio[1] for prio, _, known in configs)
    assert any(known[0] == {0, 1} and prio[0] != prio[1] for prio, _, known in configs)
    assert all(a == b for _, _, (a, b) in configs)
    mixed = configurations(2, mixed_sets=True)
    assert any(a != b for _, _, (a, b) in mixed)


@pytest.mark.parametrize("protocols", [1, 2])
def test_real_negotiator_always_agrees_and_never_deadlocks(protocols: int) -> None:
    model = NegotiatorPairModel(protocols=protocols, rounds=2)
    result = explore(model)
    assert result.ok, format_report(result, model.describe)
    assert result.states > len(model.config_specs)
    assert result.terminals > 0 and not result.bounded
    taken = _taken(model)
    # The interesting decisions were really exercised, not just keepalives.
    assert any("same_protocol" in t and "ProtocolNegotiated" in t for t in taken)
    if protocols == 2:
        assert any("our_protocol_wins" in t for t in taken)
        assert any(t.startswith("WaitForAcceptReject") and "Sleep" in t for t in taken)


def test_dropped_connection_or_timeout_never_deadlocks() -> None:
    model = NegotiatorPairModel(protocols=2, rounds=2, faults=True)
    result = explore(model)
    assert result.ok, format_report(result, model.describe)
    taken = _taken(model)
    # EOF after a drop or a peer's failure (between rounds), and a timeout while waiting.
    assert "Sleep --fail--> Failed" in taken
    assert "WaitForAcceptReject --fail--> Failed" in taken


def test_sides_that_know_different_sets_fail_cleanly() -> None:
    """An id only one side knows: the other fails and closes; never a deadlock, and two
    completed results still agree."""
    model = NegotiatorPairModel(protocols=2, rounds=2, mixed_sets=True)
    assert any(a != b for _, _, (a, b) in model.config_specs)
    result = explore(model)
    assert result.ok, format_report(result, model.describe)
    assert "SentInitiate --fail--> Failed" in _taken(model)


def test_interning_is_a_bijection() -> None:
    """States are tuples of interned ids: distinct states must decode to distinct full states
    (the same full state always gets the same ids), so deduplicating ids is exact."""
    model = NegotiatorPairModel(protocols=2, rounds=2, faults=True)
    seen = set(model.initial_states())
    frontier = list(seen)
    while frontier:
        frontier = [
            target
            for state in frontier
            for _, target in model.successors(state)
            if not (target in seen or seen.add(target))  # type: ignore[func-returns-value]
        ]
    full = {model.decode(state) for state in seen}
    assert len(full) == len(seen) > 10_000


@pytest.mark.parametrize("faults", [False, True])
@pytest.mark.parametrize("name", sorted(NEGOTIATOR_MUTANTS))
def test_every_negotiator_mutant_is_caught_with_a_shortest_trace(name: str, faults: bool) -> None:
    """Also with faults: a deadlock must not hide behind the drop or timeout that could end it."""
    model = negotiator_mutant(name, protocols=2, faults=faults)
    result = explore(model)
    violation = result.violation
    assert violation is not None, f"mutant {name} survived"
    prop = NEGOTIATOR_MUTANTS[name][1]
    assert violation.message.startswith(prop), violation.message
    # Both sides start a round with different protocols of equal priority, and each byte is
    # delivered: nothing shorter can show a tie-break bug.
    assert len(violation.steps) == 4
    diagram = mermaid_trace(violation, model.actors)
    assert diagram.startswith("sequenceDiagram") and "A->>B: initiate" in diagram
    assert "VIOLATION" in format_report(result, model.describe)


@pytest.mark.slow
@pytest.mark.parametrize("faults", [False, True])
def test_three_protocols_three_rounds_exhaustively(faults: bool) -> None:
    model = NegotiatorPairModel(protocols=3, rounds=3, faults=faults)
    result = explore(model)
    assert result.ok, format_report(result, model.describe)
    assert result.states > 100_000


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NEGOTIATOR_MUTANTS))
def test_mutants_are_caught_with_three_protocols(name: str) -> None:
    result = explore(negotiator_mutant(name, protocols=3, rounds=3, faults=True))
    assert result.violation is not None
    assert result.violation.message.startswith(NEGOTIATOR_MUTANTS[name][1])
