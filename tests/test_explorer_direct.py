"""The direct-handshake model (real Client and Peer cores, a stranger who replays anything) and
its mutants (spec/properties.md section 3a)."""

from __future__ import annotations

import pytest
from p2psc.models.direct_model import DirectModel, build
from p2psc.models.explorer import explore, format_report, mermaid_trace
from p2psc.models.mutants import DIRECT_MUTANTS

from p2psc.cli import main


@pytest.mark.parametrize("budget", [0, 1, 2, 3])
def test_real_cores_hold_every_property_against_the_stranger(budget: int) -> None:
    model = DirectModel(budget=budget)
    result = explore(model)
    assert result.ok, format_report(result, model.describe)
    coverage = result.coverage
    assert coverage is not None
    taken = {
        str(t)
        for name, table in coverage.tables.items()
        for t in table.transitions
        if t.index in coverage.taken[name]
    }
    assert "answered --first_record [record_valid]--> confirmed" in taken
    if budget >= 2:  # the stranger's silent connections are evicted, the recorded init refused
        assert "punching --candidate_evicted--> punching" in taken
        assert "awaiting_init --handshake_init--> rejected" in taken


@pytest.mark.slow
def test_a_stranger_with_four_actions() -> None:
    model = DirectModel(budget=4)
    result = explore(model)
    assert result.ok, format_report(result, model.describe)
    assert result.states > 1000


@pytest.mark.parametrize("name", sorted(DIRECT_MUTANTS))
def test_every_direct_mutant_is_caught(name: str) -> None:
    model = build(mutant=name)
    result = explore(model)
    violation = result.violation
    assert violation is not None, f"mutant {name} survived"
    assert violation.message.startswith(DIRECT_MUTANTS[name][1]), violation.message
    assert mermaid_trace(violation, model.actors).startswith("sequenceDiagram")


def test_cli_runs_the_direct_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explore", "direct", "--stranger-budget", "1", "--quiet"]) == 0
    assert "model direct (stranger budget 1): OK" in capsys.readouterr().out
    assert main(["explore", "direct", "--mutant", "no-binding", "--quiet"]) == 1
    assert "D4:" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["explore", "direct", "--faults"])
    with pytest.raises(SystemExit):
        main(["explore", "mediation", "--stranger-budget", "2"])
