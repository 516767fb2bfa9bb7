"""Liveness benchmark (issue 13, spec/mediator.md section 4.3): how long the survivor of a
pairing takes to learn that its partner is gone, as a share of the punch timeout.

Run (root, with ip and nft): .venv/bin/python tests/bench/bench_nat_liveness.py [--runs N]

For each step (the Peer killed on PeerDisconnect, the Client killed on PeerIdentification, the
Client killed or frozen 1.5 s into a punch that cannot succeed) and each setting (coordinated,
the default, and ``--no-coordinate``, the behaviour before), ``--runs`` fresh pairings in one
topology per step; prints the survivor's errors and the median time from the death to the
survivor's failure, divided by the punch timeout of the same run. Figures only; asserts
nothing. Every pairing is bounded by ``--deadline``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests/ dir: `nat` package

from nat.helpers import finish, p2psc_argv, start_in_order, start_mediator, stop
from nat.topology import Host, Topology, build_scenario, missing_requirements

from p2psc.keys import Keypair

STEPS = {
    # step: (scenario, who dies, --die-at)
    "Peer killed on PeerDisconnect": ("no-nat", "peer", "disconnect"),
    "Client killed on PeerIdentification": ("no-nat", "client", "identification"),
    "Client killed 1.5 s into the punch": ("both-nat-rst", "client", "punching"),
    "Client frozen 1.5 s into the punch": ("both-nat-rst", "client", "frozen"),
}


def one(
    a: Host, b: Host, dies: str, step: str, extra: list[str], deadline: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    ka, kb = Keypair.generate(), Keypair.generate()
    death = ["--die-at", step]
    ea = extra + (death if dies == "client" else [])
    eb = extra + (death if dies == "peer" else [])
    pa, pb = start_in_order(
        (a, p2psc_argv(a, ka, kb, "client-side", None, deadline, ea)),
        (b, p2psc_argv(b, kb, ka, "peer-side", None, deadline, eb)),
        stagger=0.3,
    )
    dead_proc, live_proc = (pa, pb) if dies == "client" else (pb, pa)
    survivor = finish(live_proc, deadline + 20)
    if step == "frozen":
        dead_proc.kill()
    dead = finish(dead_proc, deadline + 20)
    return dead, survivor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="pairings per step and setting (3)")
    parser.add_argument("--punch", type=float, default=5.0, help="punch timeout, s (5)")
    parser.add_argument("--deadline", type=float, default=15.0, help="connect() timeout (15 s)")
    args = parser.parse_args(argv)
    missing = missing_requirements()
    if missing is not None:
        print(f"skipped: {missing}")
        return 0
    base = ["--punch-timeout", str(args.punch), "--relay", "never"]
    print(f"punch timeout {args.punch:g} s; time from the death to the survivor's failure")
    for label, (scenario, dies, step) in STEPS.items():
        with Topology() as topo:
            a, b = build_scenario(topo, scenario)
            mediator = start_mediator(topo)
            try:
                for setting, extra in (("coordinated", []), ("uncoordinated", ["--no-coordinate"])):
                    errors, times = Counter[str](), []
                    for _ in range(args.runs):
                        dead, survivor = one(a, b, dies, step, base + extra, args.deadline)
                        errors[str(survivor.get("error"))] += 1
                        if "died_at" in dead and "failed_at" in survivor:
                            times.append(float(survivor["failed_at"]) - float(dead["died_at"]))
                    median = statistics.median(times) if times else float("nan")
                    print(
                        f"  {label:38} {setting:13} median {median * 1000:7.0f} ms = "
                        f"{median / args.punch:.3f} of the punch timeout  {dict(errors)}"
                    )
            finally:
                stop(mediator)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
