"""The relay model (issue 14; spec/properties.md section 3b): path agreement over every
interleaving, with resets, late deliveries and a relay that bridges the two paths."""

from __future__ import annotations

import pytest
from p2psc.models.explorer import explore
from p2psc.models.relay_model import build


@pytest.mark.parametrize("faults", [0, 1, 2])
@pytest.mark.parametrize("evil", [False, True], ids=["honest-relay", "bridging-relay"])
def test_both_sides_always_end_on_the_same_path(faults: int, evil: bool) -> None:
    result = explore(build(faults=faults, evil=evil))
    assert result.ok, result.violation
    assert result.terminals > 0


def test_the_model_reaches_both_paths() -> None:
    """The check is not vacuous: some runs end direct, some relayed."""
    model = build(faults=0)
    result = explore(model)
    assert result.ok
    coverage = result.coverage
    assert coverage is not None
    taken = {
        str(t)
        for t in coverage.tables["Rendezvous"].transitions
        if t.index in coverage.taken["Rendezvous"]
    }
    assert "punching --confirmed--> established" in taken
    assert "relaying --confirmed [relayed_path]--> relayed" in taken


def test_an_unbound_path_lets_a_bridging_relay_split_the_sides() -> None:
    result = explore(build(faults=1, mutant="path-unbound"))
    assert result.violation is not None
    assert result.violation.message.startswith("R1")
