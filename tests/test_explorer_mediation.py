"""The mediation model (real MediatorCore + real PeerCores) and its mutants.

Fast tests run two or three peers without faults; the runs with a dropped connection or an
early timeout at every point are marked slow (CI runs them; seconds each).
"""

from __future__ import annotations

from typing import Any

import pytest
from p2psc.models.explorer import Coverage, Step, explore, format_report, mermaid_trace
from p2psc.models.mediation_model import MediationModel
from p2psc.models.mutants import MEDIATION_MUTANTS, NEEDS_FAULTS, mediation_mutant
from p2psc.models.network import Net, Network


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


class _Unpacked:
    """The same model explored on plain :class:`models.network.Net` states by the reference
    :meth:`Network.successors` (no packed memo): what :class:`PackedNetwork` must reproduce."""

    def __init__(self, model: MediationModel) -> None:
        self.model = model
        self.name = model.name
        self.actors = model.actors

    def initial_states(self) -> list[Net]:
        return [self.model.unpack(state) for state in self.model.initial_states()]

    def successors(self, state: Net) -> list[tuple[Step, Net]]:
        return Network.successors(self.model, state)

    def invariant(self, state: Net) -> str | None:
        return self.model.invariant(self.model.pack(state))

    def terminal(self, state: Net) -> str | None:
        return self.model.terminal(self.model.pack(state))

    def describe(self, state: Net) -> str:
        return self.model.describe(self.model.pack(state))

    def coverage(self) -> Coverage | None:
        return self.model.coverage()


@pytest.mark.parametrize(("third", "faults"), [(False, False), (True, False), (False, True)])
def test_packed_states_explore_exactly_the_reference_network(third: bool, faults: bool) -> None:
    packed_model = MediationModel(third=third, faults=faults)
    packed = explore(packed_model)
    reference_model = MediationModel(third=third, faults=faults)
    reference = explore(_Unpacked(reference_model))
    assert packed.ok and reference.ok
    assert (packed.states, packed.transitions, packed.terminals, packed.depth) == (
        reference.states,
        reference.transitions,
        reference.terminals,
        reference.depth,
    )
    assert packed_model.outcome_counts == reference_model.outcome_counts
    # Same successors, in the same order, state by state (the first few hundred states).
    frontier = packed_model.initial_states()
    seen = 0
    while frontier and seen < 300:
        state = frontier.pop(0)
        seen += 1
        ours = packed_model.successors(state)
        theirs = Network.successors(packed_model, packed_model.unpack(state))
        assert [(str(s), packed_model.unpack(t)) for s, t in ours] == [
            (str(s), t) for s, t in theirs
        ]
        frontier.extend(t for _, t in ours)


def test_packed_states_catch_the_mutants_with_the_same_trace() -> None:
    """Expanded in the same order (core steps computed when first needed), packed and unpacked
    states give the same counterexample; deferring the states whose core steps are missing
    (the default) reorders a level, so its trace may differ but is as short and breaks the
    same property."""
    model = mediation_mutant("identify-early", third=False)
    model.prefetching = False
    packed = explore(model)
    reference = explore(_Unpacked(mediation_mutant("identify-early", third=False)))
    deferred = explore(mediation_mutant("identify-early", third=False))
    assert packed.violation is not None and reference.violation is not None
    assert deferred.violation is not None
    assert [str(s) for s in packed.violation.steps] == [str(s) for s in reference.violation.steps]
    assert len(deferred.violation.steps) == len(reference.violation.steps)
    assert deferred.violation.message.split(":")[0] == reference.violation.message.split(":")[0]


def test_limits_retry_with_backoff_and_refuse_when_busy() -> None:
    model = MediationModel(third=True, limits=True)
    result = explore(model)
    assert result.ok, format_report(result, model.describe)
    registration = _taken(model, "Registration")
    assert "backing_off --retry_due--> connecting_mediator" in registration
    assert "waiting --advertise_retry [can_retry]--> backing_off" in registration
    assert "waiting --advertise_retry--> failed" in registration  # the retry budget runs out
    mediator = _taken(model, "MediatorSession")
    assert "challenged --response [registry_full]--> closed" in mediator
    # over the pending limit the oldest unverified connection is evicted (spec/mediator.md 6.1)
    assert "awaiting_advertise --evicted--> closed" in mediator
    # Pairing still completes when the limits leave room.
    assert ("established", "established", "failed") in model.outcome_counts


def test_malformed_input_anywhere_is_refused_cleanly() -> None:
    model = MediationModel(third=False, garbage=True)
    result = explore(model)
    assert result.ok, format_report(result, model.describe)
    mediator = _taken(model, "MediatorSession")
    for state in ("awaiting_advertise", "challenged", "waiting", "disconnecting", "confirming"):
        assert f"{state} --bad_input--> closed" in mediator
    assert {"advertising --malformed--> failed", "waiting --malformed--> failed"} <= _taken(
        model, "Registration"
    )
    assert "answered --first_record--> rejected" in _taken(model, "PeerCandidate")
    assert "awaiting_response --bad_message--> rejected" in _taken(model, "ClientCandidate")


def test_shutdown_at_any_moment_ends_every_session() -> None:
    model = MediationModel(third=False, shutdown=True)
    result = explore(model)
    assert result.ok, format_report(result, model.describe)
    mediator = _taken(model, "MediatorSession")
    for state in ("awaiting_advertise", "challenged", "waiting", "disconnecting", "confirming"):
        assert f"{state} --shutdown--> closed" in mediator
    assert ("failed", "failed") in model.outcome_counts


def test_the_completion_claim_is_what_catches_a_limits_failure() -> None:
    """Under the limits M3 does not claim completion: the same exploration with the claim on
    finds the legitimate BUSY failure (so the claim is really switched off, not vacuous)."""
    model = MediationModel(third=True, limits=True)
    model.completes = True
    result = explore(model)
    assert result.violation is not None
    assert result.violation.message.startswith("M3: no fault occurred")
    assert any("AdvertiseRetry(BUSY)" in step.text for step in result.violation.steps)


def test_four_peers_pair_safely_and_completely() -> None:
    model = MediationModel(peers=4)
    result = explore(model)
    assert result.ok, format_report(result, model.describe)
    # C wants A and D wants B; nobody wants them back: both fail, A and B still pair.
    assert ("established", "established", "failed", "failed") in model.outcome_counts
    assert all(outcome[2:] == ("failed", "failed") for outcome in model.outcome_counts)


def test_whoever_nobody_wants_must_fail() -> None:
    """M3 really checks D: a model in which D's outcome is forced to 'established' fails."""
    model = MediationModel(peers=4)
    state = model.unpack(model.initial_states()[0])
    book = state.extra
    forced = book._replace(  # type: ignore[attr-defined]
        started=(True,) * 5, outcomes=(None, "failed", "failed", "failed", "established")
    )
    assert model.terminal(model.pack(state._replace(extra=forced))) == (
        "M3: D, whom nobody wants, ended established"
    )


@pytest.mark.slow
@pytest.mark.parametrize("option", ["limits", "garbage"])
def test_four_peers_with_limits_or_garbage(option: str) -> None:
    model = MediationModel(peers=4, **{option: True})
    result = explore(model)
    assert result.ok, format_report(result, model.describe)
    assert result.states > 100_000


@pytest.mark.slow
def test_four_peers_with_one_fault_anywhere() -> None:
    """The largest mediation model CI runs (13.3 million states, about 3 minutes: spec/properties.md
    section 7)."""
    model = MediationModel(peers=4, faults=True)
    result = explore(model)
    assert result.ok, format_report(result, model.describe)
    assert result.states > 3_000_000


def _explored_by_level(model: MediationModel) -> tuple[tuple[int, int, int, int], list[Any]]:
    """(states, transitions, terminals, depth) and, per depth, the set of states the explorer
    checked there, with the actors' snapshots themselves (ids depend on the order snapshots are
    first seen, and deferring reorders the states within a level)."""
    levels: list[Any] = []
    check = model.invariant
    depth_of: dict[tuple[int, ...], int] = {}
    for initial in model.initial_states():
        depth_of[initial] = 0
    successors = model.successors_or_defer

    def defer(state: tuple[int, ...], wanted: Any) -> Any:
        nexts = successors(state, wanted)
        for _, target in nexts or ():
            depth_of.setdefault(target, depth_of[state] + 1)
        return nexts

    def invariant(state: tuple[int, ...]) -> str | None:
        net = model.unpack(state)
        depth = depth_of.setdefault(state, 0)
        while len(levels) <= depth:
            levels.append(set())
        levels[depth].add(net._replace(snaps=tuple(model.snapshot(snap) for snap in net.snaps)))
        return check(state)

    model.invariant = invariant  # type: ignore[method-assign]
    model.successors_or_defer = defer  # type: ignore[method-assign]
    result = explore(model)
    assert result.ok
    return (result.states, result.transitions, result.terminals, result.depth), levels


@pytest.mark.parametrize("peers", [2, 3])
def test_deferring_core_steps_explores_exactly_the_same_states(peers: int) -> None:
    """The explorer defers a state whose real core steps are missing and computes those steps
    in batches (PackedNetwork.successors_or_defer, run_deferred): every level holds the same
    states as when each step is computed when first needed, with the same verdicts,
    transitions, outcomes and coverage, and the batches did compute steps (so the test can
    fail)."""
    batched = MediationModel(peers=peers, faults=peers == 2)
    inline = MediationModel(peers=peers, faults=peers == 2)
    inline.prefetching = False
    computed = []
    run_deferred = batched.run_deferred

    def counting(wanted: dict[Any, None]) -> None:
        before = len(batched._memo)
        run_deferred(wanted)
        computed.append(len(batched._memo) - before)

    batched.run_deferred = counting  # type: ignore[method-assign]
    one, two = _explored_by_level(batched), _explored_by_level(inline)
    assert one[0] == two[0]
    assert len(one[1]) == len(two[1]) and all(a == b for a, b in zip(one[1], two[1], strict=True))
    assert sum(len(level) for level in one[1]) == one[0][0]
    assert batched.outcome_counts == inline.outcome_counts
    assert batched.coverage() is not None and inline.coverage() is not None
    assert batched.coverage().taken == inline.coverage().taken  # type: ignore[union-attr]
    # Nearly every step came from the batches.
    assert sum(computed) > 0.95 * len(batched._memo)
    assert set(batched._snapshots.values) == set(inline._snapshots.values)
