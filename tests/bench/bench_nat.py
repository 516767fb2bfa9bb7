"""NAT traversal benchmark: how often and how fast a connection forms, per NAT scenario, and
on which path (direct, or relayed by ``mediator --relay`` after the punch deadline: issue 14).

Run (root, with ip and nft): .venv/bin/python tests/bench/bench_nat.py [--runs N] [--quick]

For each scenario of tests/nat/topology.py it builds the topology once, starts ``p2psc
mediator`` in the public namespace and pairs two fresh identities ``--runs`` times (a registers
first, b 0.3 s later). It prints, per scenario: successes out of runs, the median time to
establish (from the second registration, the Peer's ``connect()`` call, until *both* sides hold
the authenticated connection), the range, the median as a ratio of the no-NAT median measured in
the same run, and how failures ended. Prints figures only; asserts nothing. Every pairing is
bounded by ``--deadline`` (and ``--punch-timeout`` for the hole punch); the whole run by the
number of scenarios times runs.

``--compare-timed-dial`` instead pairs every scenario three times per run, in turn with the
Peer's first dial at once, after its own round trip to the Mediator, and when the Mediator's
DIAL_DELAY says (issue 13), and prints the medians, their ratio to "at once", the time saved and
how many pairings needed no second attempt, measured in the same topology
(``--only far-client`` is the case the schedule is for).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests/ dir: `nat` package

from nat.helpers import mediator_of, pair, start_mediator, stop
from nat.topology import SCENARIOS, build_scenario, missing_requirements, scenario_topology

STAGGER = 0.3
LATE_STAGGER = {"delay-150": 1.5, "far-client": 1.5}
"""Where the Client needs longer than STAGGER to register (3 round trips of 300 ms), the Peer
starts later, so that the roles stay as meant."""
PEER_RTT = {"delay-150": 0.3, "far-client": 0.1}
"""Round trip between the peers (seconds) where a scenario adds latency: the median is also
printed in these units (issue 13's round-trip count; tests/test_round_trips.py has the exact
count on the real cores in virtual time)."""


def bench(
    scenario: str, runs: int, deadline: float, punch_timeout: float, more: Sequence[str] = ()
) -> dict[str, object]:
    """Pair ``runs`` times in one topology; return successes, times and failure reasons."""
    times: list[float] = []
    paths: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    fail_times: list[float] = []
    extra = ["--punch-timeout", str(punch_timeout), *more]
    stagger = LATE_STAGGER.get(scenario, STAGGER)
    with scenario_topology(scenario) as topo:  # type: ignore[arg-type]
        a, b = build_scenario(topo, scenario)  # type: ignore[arg-type]
        mediator = start_mediator(topo, relay=[])
        try:
            for _ in range(runs):
                result = pair(
                    a,
                    b,
                    deadline=deadline,
                    stagger=stagger,
                    extra=extra,
                    mediator=mediator_of(topo),
                )
                client, peer = result.client, result.peer
                if client.get("ok") and peer.get("ok"):
                    times.append(max(client["elapsed"] - stagger, peer["elapsed"]))
                    path = client.get("path")
                    paths[path if path == peer.get("path") else f"{path}/{peer.get('path')}"] += 1
                    if client.get("role") != "client":
                        paths["(roles swapped)"] += 1
                else:
                    failures[f"{client.get('error')}/{peer.get('error')}"] += 1
                    fail_times.append(max(client.get("elapsed", 0.0), peer.get("elapsed", 0.0)))
        finally:
            stop(mediator)
    return {"times": times, "paths": paths, "failures": failures, "fail_times": fail_times}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=9, help="pairings per scenario (9)")
    parser.add_argument("--quick", action="store_true", help="3 runs per scenario")
    parser.add_argument("--deadline", type=float, default=8.0, help="connect() timeout (8 s)")
    parser.add_argument("--punch-timeout", type=float, default=3.0, help="(3 s)")
    parser.add_argument("--only", nargs="*", choices=SCENARIOS, help="a subset of scenarios")
    parser.add_argument(
        "--compare-timed-dial", action="store_true", help="each scenario with and without"
    )
    args = parser.parse_args(argv)
    missing = missing_requirements()
    if missing:
        print(f"skipped: {missing}")
        return 0
    runs = 3 if args.quick else max(1, min(args.runs, 50))
    scenarios = args.only or list(SCENARIOS)
    if args.compare_timed_dial:
        return compare_timed_dial(scenarios, runs, args.deadline, args.punch_timeout)
    if "no-nat" not in scenarios:
        scenarios.insert(0, "no-nat")  # the baseline of the ratios
    print(f"{runs} pairings per scenario; establish time = Peer's connect() call -> both ready")
    print(f"{'scenario':<15} {'ok':>7} {'median ms':>10} {'min-max ms':>14} {'x no-nat':>9}  path")
    baseline: float | None = None
    for name in scenarios:
        r = bench(name, runs, args.deadline, args.punch_timeout)
        times: list[float] = r["times"]  # type: ignore[assignment]
        failures: Counter[str] = r["failures"]  # type: ignore[assignment]
        fail_times: list[float] = r["fail_times"]  # type: ignore[assignment]
        paths: Counter[str] = r["paths"]  # type: ignore[assignment]
        path = ", ".join(f"{k} {v}" for k, v in paths.most_common()) or "-"
        ok = f"{len(times)}/{runs}"
        if times:
            med = statistics.median(times)
            if name == "no-nat":
                baseline = med
            ratio = f"{med / baseline:9.1f}" if baseline else f"{'-':>9}"
            span = f"{min(times) * 1e3:.0f}-{max(times) * 1e3:.0f}"
            print(f"{name:<15} {ok:>7} {med * 1e3:10.0f} {span:>14} {ratio}  {path}")
            if name in PEER_RTT:
                print(f"{'':<15} = {med / PEER_RTT[name]:.2f} round trips between the peers")
        else:
            print(f"{name:<15} {ok:>7} {'-':>10} {'-':>14} {'-':>9}  {path}")
        if failures:
            ends = ", ".join(f"{k} x{v}" for k, v in failures.most_common())
            print(
                f"{'':<15} failed: {ends}; median time to fail "
                f"{statistics.median(fail_times) * 1e3:.0f} ms"
            )
    return 0


MODES = (
    ("off", ["--no-timed-dial"]),
    ("own-rtt", ["--ignore-dial-schedule"]),
    ("scheduled", []),
)
"""The Peer's first dial: at once; after its own round trip to the Mediator (the estimate
before DIAL_DELAY); when the Mediator's DIAL_DELAY says (issue 13)."""


def compare_timed_dial(
    scenarios: Sequence[str], runs: int, deadline: float, punch_timeout: float
) -> int:
    """Each scenario with the Peer's first dial in each of MODES, in turn in one topology (so
    load changes hit all alike); prints medians, ratios to ``off`` and the failed attempts."""
    print(f"{runs} pairings per mode and scenario, in turn; time = the Peer's connect()")
    print(
        f"{'scenario':<13} {'mode':<10} {'median ms':>9} {'x off':>6} {'saved ms':>9}  first dials"
    )
    extra = ["--punch-timeout", str(punch_timeout)]
    for name in scenarios:
        times: dict[str, list[float]] = {mode: [] for mode, _ in MODES}
        failed: dict[str, list[int]] = {mode: [] for mode, _ in MODES}
        with scenario_topology(name) as topo:  # type: ignore[arg-type]
            a, b = build_scenario(topo, name)  # type: ignore[arg-type]
            mediator = start_mediator(topo)
            try:
                for _ in range(runs):
                    for mode, more in MODES:
                        result = pair(
                            a,
                            b,
                            deadline=deadline,
                            stagger=LATE_STAGGER.get(name, STAGGER),
                            extra=extra + more,
                            mediator=mediator_of(topo),
                        )
                        client, peer = result.client, result.peer
                        # the Peer's own connect() -> established (the Client's process
                        # start is too noisy on a loaded machine); runs whose roles swapped
                        # (the Client started late) are left out
                        if client.get("ok") and peer.get("role") == "peer":
                            times[mode].append(peer["elapsed"])
                            failed[mode].append(peer.get("failed", 0))
            finally:
                stop(mediator)
        if not times["off"]:
            print(f"{name:<13} no counted run with the timed dial off")
            continue
        base = statistics.median(times["off"])
        for mode, _ in MODES:
            got = times[mode]
            if not got:
                print(f"{name:<13} {mode:<10} 0/{runs} counted")
                continue
            med = statistics.median(got)
            first = sum(1 for f in failed[mode] if f == 0)
            print(
                f"{name:<13} {mode:<10} {med * 1e3:9.1f} {med / base:6.2f} "
                f"{(base - med) * 1e3:9.1f}  {first}/{len(got)} without a failed attempt"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
