"""Symmetry reduction (issue 16): one state per class of interchangeable actors.

The negotiator pair model declares its one symmetry (the two sides swapped). Reduced and
unreduced explorations must agree on every property: the same verdict, the same property broken
by every mutant at the same (shortest) depth, and the reduced run must visit exactly one
representative of every state the unreduced run reaches.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import pytest
from p2psc.models.explorer import Coverage, Step, explore
from p2psc.models.mutants import NEGOTIATOR_MUTANTS, negotiator_mutant
from p2psc.models.negotiator_model import NegotiatorPairModel

from p2psc.cli import main

SMALL = [
    {"protocols": 1, "rounds": 2},
    {"protocols": 2, "rounds": 2},
    {"protocols": 2, "rounds": 2, "faults": True},
    {"protocols": 2, "rounds": 2, "mixed_sets": True},
]


def _reachable(model: NegotiatorPairModel) -> set[Hashable]:
    seen: set[Hashable] = set(model.initial_states())
    frontier = list(seen)
    while frontier:
        state = frontier.pop()
        for _, target in model.successors(state):  # type: ignore[arg-type]
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    return seen


@pytest.mark.parametrize("options", SMALL)
def test_reduced_and_unreduced_runs_agree(options: dict[str, int | bool]) -> None:
    full = explore(NegotiatorPairModel(**options))  # type: ignore[arg-type]
    reduced = explore(NegotiatorPairModel(**options), symmetry=True)  # type: ignore[arg-type]
    assert full.ok and reduced.ok
    assert full.depth == reduced.depth
    assert reduced.states < full.states <= 2 * reduced.states
    assert any("symmetry" in note for note in reduced.notes)
    # Exactly one representative per reachable state: the canonical images of everything the
    # full run reaches are the states the reduced run stores.
    model = NegotiatorPairModel(**options)  # type: ignore[arg-type]
    states = _reachable(model)
    representatives = {model.canonical(s) for s in states}  # type: ignore[arg-type]
    assert len(representatives) == reduced.states
    assert len(states) == full.states
    for state in list(states)[:2000]:  # the mirror image is reachable and has the same verdicts
        sa, sb, ca, cb, book = state  # type: ignore[misc]
        mirror = (sb, sa, cb, ca, model._mirror(book))
        assert mirror in states
        assert model.invariant(mirror) == model.invariant(state)  # type: ignore[arg-type]
        assert (model.terminal(mirror) is None) == (model.terminal(state) is None)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(NEGOTIATOR_MUTANTS))
@pytest.mark.parametrize("faults", [False, True])
def test_every_mutant_breaks_the_same_property_at_the_same_depth(name: str, faults: bool) -> None:
    def build() -> NegotiatorPairModel:
        return negotiator_mutant(name, protocols=2, rounds=2, faults=faults, mixed_sets=False)

    full, reduced = explore(build()), explore(build(), symmetry=True)
    assert full.violation is not None and reduced.violation is not None
    assert full.violation.kind == reduced.violation.kind
    assert full.violation.message.split(":")[0] == reduced.violation.message.split(":")[0]
    assert len(full.violation.steps) == len(reduced.violation.steps)


class _Mirror:
    """Toy: two counters that each may go up to 2; swapping them is a symmetry."""

    name = "mirror"
    actors: Sequence[str] = ("X", "Y")

    def initial_states(self) -> list[tuple[int, int]]:
        return [(0, 0)]

    def successors(self, state: tuple[int, int]) -> list[tuple[Step, tuple[int, int]]]:
        x, y = state
        out = []
        if x < 2:
            out.append((Step("app", "X", "up"), (x + 1, y)))
        if y < 2:
            out.append((Step("app", "Y", "up"), (x, y + 1)))
        return out

    def canonical(self, state: tuple[int, int]) -> tuple[int, int]:
        return min(state, state[::-1])

    def invariant(self, state: tuple[int, int]) -> str | None:
        return None

    def terminal(self, state: tuple[int, int]) -> str | None:
        return None

    def describe(self, state: tuple[int, int]) -> str:
        return repr(state)

    def coverage(self) -> Coverage | None:
        return None


def test_the_engine_stores_one_state_per_class() -> None:
    assert explore(_Mirror()).states == 9
    reduced = explore(_Mirror(), symmetry=True)
    assert reduced.states == 6  # (0,0) (0,1) (0,2) (1,1) (1,2) (2,2)
    assert reduced.depth == 4 and reduced.terminals == 1


def test_cli_symmetry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explore", "negotiator", "--protocols", "2", "--symmetry", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "symmetry reduction" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["explore", "mediation", "--symmetry", "--quiet"])
    assert exit_info.value.code == 2


@pytest.mark.slow
def test_four_protocols_within_ci_time_with_symmetry() -> None:
    model = NegotiatorPairModel(protocols=4, rounds=3)
    result = explore(model, symmetry=True)
    assert result.ok
    assert result.states > 1_000_000
