"""The fleet model (models/fleet_model.py): two real FleetCore instances over one shared
registry; M1-M4 hold with lost, duplicated and overtaking notices, and each mutant is caught."""

from __future__ import annotations

import pytest
from p2psc.models.explorer import explore
from p2psc.models.fleet_model import MUTANTS, build

from p2psc.cli import main


@pytest.mark.parametrize("faults", [False, True], ids=["no-faults", "faults"])
def test_the_fleet_model_holds(faults: bool) -> None:
    result = explore(build(faults=faults))
    assert result.ok, result.violation
    assert result.states > 50


@pytest.mark.parametrize(
    ("mutant", "prop"),
    [("non-atomic-claim", "M3"), ("confirm-early", "M2"), ("no-hold", "M3")],
)
def test_each_fleet_mutant_is_caught(mutant: str, prop: str) -> None:
    assert mutant in MUTANTS
    result = explore(build(mutant=mutant))
    assert not result.ok
    assert result.violation is not None
    assert result.violation.message.startswith(prop), result.violation.message


def test_cli_explores_the_fleet(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explore", "fleet", "--quiet"]) == 0
    assert main(["explore", "fleet", "--mutant", "confirm-early", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "M2" in out
