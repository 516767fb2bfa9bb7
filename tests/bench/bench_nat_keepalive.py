"""Keepalive benchmark (issue 13): pairings formed through a router that forgets idle TCP fast.

Run (root, with ip and nft): .venv/bin/python tests/bench/bench_nat_keepalive.py [--runs N]

The Client sits behind a router whose conntrack keeps an idle established TCP entry for
``--idle`` seconds (5); the Peer (public) arrives ``--late`` seconds (8) after the Client. Each
keepalive setting (off, and ``--interval``, 2 s) pairs ``--runs`` fresh identities in one
topology and prints successes out of runs and how the failures ended. Figures only; asserts
nothing. Every pairing is bounded by ``--deadline``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests/ dir: `nat` package

from nat.helpers import pair, start_mediator, stop
from nat.topology import Topology, missing_requirements


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="pairings per setting (5)")
    parser.add_argument("--idle", type=int, default=5, help="router idle timeout, s (5)")
    parser.add_argument("--late", type=float, default=8.0, help="the Peer's delay, s (8)")
    parser.add_argument("--interval", type=float, default=2.0, help="keepalive, s (2)")
    parser.add_argument("--deadline", type=float, default=16.0, help="connect() timeout (16 s)")
    args = parser.parse_args(argv)
    missing = missing_requirements()
    if missing is not None:
        print(f"skipped: {missing}")
        return 0
    print(f"router idle timeout {args.idle} s, Peer {args.late:g} s after the Client")
    for interval in (0.0, args.interval):
        formed, failures, times = 0, Counter[str](), []
        with Topology() as topo:
            ra = topo.add_router("ra", idle_timeout=args.idle)
            a, b = topo.add_host("a", ra), topo.add_public_host("b")
            mediator = start_mediator(topo)
            try:
                for _ in range(args.runs):
                    extra = ["--punch-timeout", "3", "--keepalive", str(interval)]
                    result = pair(a, b, deadline=args.deadline, stagger=args.late, extra=extra)
                    client, peer = result.client, result.peer
                    if client.get("ok") and peer.get("ok"):
                        formed += 1
                        times.append(peer["elapsed"])
                    else:
                        failures[f"{client.get('error')}/{peer.get('error')}"] += 1
            finally:
                stop(mediator)
        label = "keepalive off" if not interval else f"keepalive every {interval:g} s"
        median = f", median {statistics.median(times) * 1000:.0f} ms" if times else ""
        print(f"  {label:24} {formed}/{args.runs} pairings formed{median}  {dict(failures)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
