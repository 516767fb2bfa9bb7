"""Benchmark of the exhaustive explorer (models/). Prints figures; asserts nothing.

Run: .venv/bin/python tests/bench/bench_explorer.py [--quick] [--ratio]
(``--ratio``: sections 1-3 only.)

1. Baselines, measured in this run: the engine alone (breadth-first search of a trivial grid
   model whose successors are precomputed: hashing, deduplication, parent pointers, invariant
   calls; the ceiling for any model) and one real Negotiator core step (restore a snapshot,
   feed a byte, snapshot, hash: what every transition would cost without memoisation).
2. The budget: states/s on the negotiator pair model (3 protocols, 3 rounds, as
   ``p2psc explore negotiator``), best of several runs from a fresh model (cold memo, as the
   CLI), against ">= 100,000 states/s" and as a ratio of the engine's ceiling.
3. The mediation model against the negotiator's rate (issue 16's target: within 3x), both as
   the CLI runs them (cold memo) and on a second exploration of the same model (warm memo: the
   explorer's own cost per state, without the real core steps); and the same without
   deferring the states whose real core steps are missing and computing those steps in
   batches (``PackedNetwork.successors_or_defer``, ``run_deferred``), for comparison.
   Best of several rounds (as the budget), each round running every model once in turn, so
   that a busy spell of the shared machine does not decide the ratio; the ratio of each round
   is printed too.
4. Every shipped configuration: states, transitions, depth, final states, time, states/s (best
   of several runs when one takes under 2 s), coverage of the declared machine transitions,
   and, for models that declare a symmetry, the states of the reduced run and the saving
   (``--quick`` skips the largest).
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from p2psc.models.channel_model import ChannelModel
from p2psc.models.direct_model import DirectModel
from p2psc.models.explorer import Coverage, Result, Step, explore
from p2psc.models.mediation_model import MediationModel
from p2psc.models.negotiator_model import NegotiatorPairModel
from p2psc.models.relay_model import RelayModel

from p2psc.core.negotiator import Negotiator, ProtocolSpec, ProtocolTable

BUDGET = 100_000
"""States per second on the negotiator pair model (DESIGN.md section 11)."""

Grid = tuple[int, int]


class GridModel:
    """An n x n grid walked right or down, steps precomputed: the explorer's own cost only."""

    name = "grid"
    actors: Sequence[str] = ("X", "Y")

    def __init__(self, n: int) -> None:
        right, down = Step("app", "X", "right"), Step("app", "Y", "down")
        self._next: dict[Grid, list[tuple[Step, Grid]]] = {}
        for x in range(n + 1):
            for y in range(n + 1):
                moves = []
                if x < n:
                    moves.append((right, (x + 1, y)))
                if y < n:
                    moves.append((down, (x, y + 1)))
                self._next[(x, y)] = moves

    def initial_states(self) -> list[Grid]:
        return [(0, 0)]

    def successors(self, state: Grid) -> list[tuple[Step, Grid]]:
        return self._next[state]

    def invariant(self, state: Grid) -> str | None:
        return None

    def terminal(self, state: Grid) -> str | None:
        return None

    def describe(self, state: Grid) -> str:
        return repr(state)

    def coverage(self) -> Coverage | None:
        return None


def best_run(build: Callable[[], Any], runs: int) -> tuple[Result[Any], float]:
    """(a result, best states/s) over ``runs`` explorations, each of a freshly built model.

    The best of several filters out time stolen by other processes on a shared machine."""
    best = 0.0
    result: Result[Any] | None = None
    for _ in range(runs):
        model = build()
        gc.collect()
        result = explore(model)
        best = max(best, result.states_per_second)
        del model
    assert result is not None
    return result, best


def core_steps_per_second(seconds: float) -> float:
    """One real core step as the explorer would pay it without memoisation."""
    table = ProtocolTable([ProtocolSpec(0, "a", priority=1), ProtocolSpec(1, "b", priority=1)])
    core = Negotiator(table)
    core.start_round(0)
    snap = core.snapshot()
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(1000):
            core.restore(snap)
            core.receive_data(b"\x01")
            hash(core.snapshot())
        count += 1000
    return count / (time.perf_counter() - start)


def warm_rate(build: Callable[[], Any]) -> tuple[float, float]:
    """(cold, warm) states/s: a fresh model, then the same model explored again."""
    model = build()
    gc.collect()
    cold = explore(model).states_per_second
    gc.collect()
    return cold, explore(model).states_per_second


def unbatched(model: MediationModel) -> MediationModel:
    """``model`` computing each real core step when first needed (``prefetching`` off):
    the mediation model's cost before batching, for comparison in the same run."""
    model.prefetching = False
    return model


def configurations(quick: bool) -> list[tuple[str, Callable[[], Any]]]:
    """The shipped model configurations (the CLI's and the tests')."""
    out: list[tuple[str, Callable[[], Any]]] = [
        ("negotiator 1 protocol", lambda: NegotiatorPairModel(protocols=1, rounds=3)),
        ("negotiator 2 protocols", lambda: NegotiatorPairModel(protocols=2, rounds=3)),
        ("negotiator 3 protocols (default)", lambda: NegotiatorPairModel(protocols=3, rounds=3)),
        (
            "negotiator 2 protocols, mixed sets, faults",
            lambda: NegotiatorPairModel(protocols=2, rounds=3, mixed_sets=True, faults=True),
        ),
        ("mediation 2 peers", lambda: MediationModel(third=False)),
        ("mediation 3 peers (default)", lambda: MediationModel(third=True)),
        ("mediation 2 peers, faults", lambda: MediationModel(third=False, faults=True)),
        ("mediation 2 peers, garbage", lambda: MediationModel(third=False, garbage=True)),
        ("mediation 2 peers, shutdown", lambda: MediationModel(third=False, shutdown=True)),
        ("mediation 3 peers, limits", lambda: MediationModel(third=True, limits=True)),
        (
            "mediation 2 peers, faults, limits",
            lambda: MediationModel(third=False, faults=True, limits=True),
        ),
        ("mediation 3 peers, faults", lambda: MediationModel(third=True, faults=True)),
        ("mediation 4 peers", lambda: MediationModel(peers=4)),
        ("direct, stranger budget 2", lambda: DirectModel(budget=2)),
        ("channel, adversary budget 1", lambda: ChannelModel(budget=1)),
        ("channel, adversary budget 2", lambda: ChannelModel(budget=2)),
        ("relay, faults 1, limits", lambda: RelayModel(faults=1, limits=True)),
        ("relay, faults 1, shutdown", lambda: RelayModel(faults=1, shutdown=True)),
        ("relay, faults 1, garbage", lambda: RelayModel(faults=1, garbage=True)),
        ("relay, faults 2, bridging relay", lambda: RelayModel(faults=2, evil=True)),
    ]
    if not quick:
        out += [
            (
                "negotiator 3 protocols, faults",
                lambda: NegotiatorPairModel(protocols=3, rounds=3, faults=True),
            ),
            (
                "negotiator 3 protocols, mixed sets",
                lambda: NegotiatorPairModel(protocols=3, rounds=3, mixed_sets=True),
            ),
            ("mediation 3 peers, garbage", lambda: MediationModel(third=True, garbage=True)),
            ("mediation 4 peers, limits", lambda: MediationModel(peers=4, limits=True)),
            ("mediation 4 peers, garbage", lambda: MediationModel(peers=4, garbage=True)),
            ("negotiator 4 protocols", lambda: NegotiatorPairModel(protocols=4, rounds=3)),
            ("direct, stranger budget 3", lambda: DirectModel(budget=3)),
            ("channel, adversary budget 3", lambda: ChannelModel(budget=3)),
            ("relay, faults 2, garbage", lambda: RelayModel(faults=2, garbage=True)),
            ("mediation 4 peers, faults", lambda: MediationModel(peers=4, faults=True)),
        ]
    return out


def main() -> int:
    quick = "--quick" in sys.argv
    runs = 2 if quick else 5
    grid = 200 if quick else 450

    print("baselines (this run):")
    _, engine = best_run(lambda: GridModel(grid), runs)
    steps = core_steps_per_second(0.3 if quick else 1.0)
    print(f"  engine alone, {(grid + 1) ** 2:,}-state grid:  {engine:>12,.0f} states/s")
    print(f"  one Negotiator core step (no memo):   {steps:>12,.0f} steps/s")
    print()

    result, rate = best_run(
        lambda: NegotiatorPairModel(protocols=3, rounds=3),
        runs,
    )
    per_state = result.transitions / result.states
    print(f"negotiator pair model, 3 protocols, 3 rounds, best of {runs} (cold memo each):")
    print(f"  {result.states:,} states, {result.transitions:,} transitions ({per_state:.1f}/state)")
    print(f"  {rate:,.0f} states/s = {rate / engine:.2f} of the engine alone")
    print(
        f"  transitions/s {rate * per_state:,.0f} = {rate * per_state / steps:.1f}x one core step"
    )
    verdict = "within" if rate >= BUDGET else "UNDER"
    print(
        f"  budget: states/s >= {BUDGET:,}: {rate:,.0f} = {rate / BUDGET:.2f}x budget ({verdict})"
    )
    print()

    rounds = 3 if quick else 5
    print(
        f"mediation (3 peers, faults) against the negotiator (3 protocols), this run, "
        f"best of {rounds} alternating runs each:"
    )
    builds = {
        "negotiator": lambda: NegotiatorPairModel(protocols=3, rounds=3),
        "mediation": lambda: MediationModel(third=True, faults=True),
        "unbatched": lambda: unbatched(MediationModel(third=True, faults=True)),
    }
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in builds}
    for _ in range(rounds):  # alternating: a busy spell of the machine hits every model alike
        for name, build in builds.items():
            rates[name].append(warm_rate(build))
    best = {name: (max(c for c, _ in r), max(w for _, w in r)) for name, r in rates.items()}
    (neg_cold, neg_warm), (med_cold, med_warm) = best["negotiator"], best["mediation"]
    base_cold, base_warm = best["unbatched"]
    for what, neg, med in (("cold memo", neg_cold, med_cold), ("warm memo", neg_warm, med_warm)):
        verdict = "within" if neg / med <= 3 else "OVER"
        print(
            f"  {what}: negotiator {neg:>9,.0f}  mediation {med:>9,.0f} states/s  "
            f"ratio {neg / med:.2f}x ({verdict} 3x)"
        )
    for what, neg, med in (("cold memo", neg_cold, base_cold), ("warm memo", neg_warm, base_warm)):
        print(
            f"  {what}, core steps not batched: mediation {med:>9,.0f} states/s  "
            f"ratio {neg / med:.2f}x"
        )
    ratios = [n[0] / m[0] for n, m in zip(rates["negotiator"], rates["mediation"], strict=True)]
    print(f"  cold ratio of each round: {', '.join(f'{r:.2f}x' for r in ratios)}")
    print()
    if "--ratio" in sys.argv:
        return 0

    head = (
        f"{'configuration':<44}{'states':>11}{'transitions':>13}{'depth':>6}{'final':>8}"
        f"{'time s':>8}{'states/s':>10}{'coverage':>10}{'symmetry':>20}"
    )
    print(head)
    print("-" * len(head))
    for name, build in configurations(quick):
        outcome, best = best_run(build, 1)
        if outcome.elapsed < 2.0:  # cheap enough to take the best of several
            outcome, best = best_run(build, runs)
        coverage = outcome.coverage
        taken = f"{coverage.covered}/{coverage.declared}" if coverage is not None else "-"
        status = "" if outcome.ok else "  VIOLATION"
        symmetric = "-"
        probe = build()
        if hasattr(probe, "canonical"):
            reduced = explore(probe, symmetry=True)
            symmetric = f"{reduced.states:,} ({outcome.states / reduced.states:.2f}x)"
        del probe
        print(
            f"{name:<44}{outcome.states:>11,}{outcome.transitions:>13,}{outcome.depth:>6}"
            f"{outcome.terminals:>8,}{outcome.states / best:>8.2f}{best:>10,.0f}"
            f"{taken:>10}{symmetric:>20}{status}"
        )
    print("(time and states/s: the best run; of several when one run takes under 2 s;")
    print(" symmetry: states of the reduced run and the saving, for models that declare one)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
