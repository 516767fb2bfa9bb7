"""The mediation model (real MediatorCore + real PeerCores) and its mutants.

Fast tests run two or three peers without faults; the runs with a dropped connection or an
early timeout at every point are marked slow (CI runs them; seconds each).
"""

from __future__ import annotations

import pytest
from p2psc.models.explorer import explore, format_report, mermaid_trace
from p2psc.models.mediation_model import MediationModel
from p2psc.models.mutants import MEDIATION_MUTANTS, NEEDS_FAULTS, mediation_mutant


def _taken(model: MediationModel, machine: str) -> set[str]:
    coverage = model.coverage()
    assert coverage is not None
    table = coverage.tables[machine]
    return {str(t) for t in table.transitions if t.index in coverage.taken[machine]}


@pytest.mark.parametrize("third", [False, True])
def test_real_cores_pair_safely_and_completely(third: bool) -> None:
    model = MediationModel(third=third)
    result = explore(model)
    assert result.ok, format_report(result, model.describe)
    # Both registration orders happened, and the happy ending is reachable.
    assert ("established", "established", *(("failed",) if third else ())) in model.outcome_counts
    taken = _taken(model, "MediatorSession")
    assert any("partner_confirmed" in t for t in taken)
    assert any("partner_arrived" in t for t in taken)
    registration = _taken(model, "Registration")
    assert "idle --start--> connecting_mediator" in registration  # the app step is recorded too
    assert any("confirmed" in t for t in _taken(model, "Rendezvous"))
    assert any("response_valid" in t for t in _taken(model, "ClientCandidate"))
    assert any("record_valid" in t for t in _taken(model, "PeerCandidate"))


def test_two_peers_with_one_fault_anywhere() -> None:
    model = MediationModel(third=False, faults=True)
    result = explore(model)
    assert result.ok, format_report(result, model.describe)
    # A fault can leave one side established and the other failed (told by EOF/reset).
    assert ("established", "failed") in model.outcome_counts
    assert any("lost" in t for t in _taken(model, "MediatorSession"))


@pytest.mark.parametrize("name", sorted(set(MEDIATION_MUTANTS) - NEEDS_FAULTS))
def test_every_mediator_mutant_is_caught(name: str) -> None:
    model = mediation_mutant(name)
    result = explore(model)
    violation = result.violation
    assert violation is not None, f"mutant {name} survived"
    assert violation.message.startswith(MEDIATION_MUTANTS[name][1]), violation.message
    assert violation.steps and violation.states[0] in model.initial_states()
    assert mermaid_trace(violation, model.actors).startswith("sequenceDiagram")


@pytest.mark.parametrize("name", sorted(NEEDS_FAULTS))
def test_fault_only_mutants_are_caught_with_faults(name: str) -> None:
    model = mediation_mutant(name, third=False)
    result = explore(model)
    violation = result.violation
    assert violation is not None, f"mutant {name} survived"
    assert violation.message.startswith(MEDIATION_MUTANTS[name][1]), violation.message
    assert any("fault" in step.text or step.kind == "drop" for step in violation.steps)


def test_early_identification_trace_shows_the_order_violation() -> None:
    result = explore(mediation_mutant("identify-early", third=False))
    violation = result.violation
    assert violation is not None
    texts = [step.text for step in violation.steps]
    # The shortest trace ends with the pairing step; the Peer never got to close first.
    assert "AdvertiseResponse" in texts[-1]
    assert "EOF" not in texts


@pytest.mark.slow
def test_three_peers_with_one_fault_anywhere() -> None:
    model = MediationModel(third=True, faults=True)
    result = explore(model)
    assert result.ok, format_report(result, model.describe)
    assert result.states > 10_000


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MEDIATION_MUTANTS))
def test_mutants_are_caught_with_three_peers_and_faults(name: str) -> None:
    result = explore(mediation_mutant(name, faults=True))
    assert result.violation is not None
    assert result.violation.message.startswith(MEDIATION_MUTANTS[name][1])
