"""``p2psc explore``: run the exhaustive explorer over the real sans-IO cores.

Breadth-first over every interleaving of a model (properties and settings: spec/properties.md).
Prints states, transitions, depth, states/s and which declared machine transitions were never
taken. Exit status 0 when every property holds, 1 on a violation, with the shortest
counterexample as text and as a Mermaid ``sequenceDiagram``; 2 on bad arguments. With
``--mutant`` a deliberately broken core is explored instead (the run must fail). The models live
in the top-level ``models`` package of the repository.

examples:
  p2psc explore negotiator                  # 3 protocols, 3 rounds, every configuration
  p2psc explore negotiator --faults --mixed-sets --protocols 2
  p2psc explore mediation --faults          # A, B and C; one drop or early timeout anywhere
  p2psc explore mediation --peers 4 --garbage   # also D, who wants B; one malformed frame
  p2psc explore mediation --mutant identify-early
  p2psc explore direct --stranger-budget 3  # Client, Peer and a stranger who replays anything
  p2psc explore relay --relay-faults 2 --bridging-relay   # path agreement, direct or relayed
  p2psc explore relay --relay-faults 1 --garbage   # the real relay core against a stranger
  p2psc explore channel --adversary-budget 2  # established records against drops, replays, cuts
  p2psc explore mediation --peers 2 --faults --limits --coverage-fail-under 60

Each "never taken" transition is followed by the configuration that takes it, or by why no model
can and the test that exercises it instead (models/coverage.py). With --coverage-fail-under PCT
the exit status is 1 when less than PCT percent of the declared transitions were taken.

mutants (--mutant NAME; the property each one breaks):
  negotiator: tie-local (N2), tie-yield (N1), drop-early-byte (N2)
  mediation:  no-mutual (M1), identify-early (M2), forget-client (M3), keep-open (M3),
              leaky-registry (M4), mute-pings (K1), slow-pings (K1), quiet-loss (L1),
              punch-on (L1)
  direct:     commit-on-init (D2), no-binding (D4), global-cap (D3)
  relay:      path-unbound (R1, always with the bridging relay)
  channel:    skip-lost-record (C1), eof-is-close (C2), close-not-recorded (C3),
              fin-only-close (C4)
  fleet:      non-atomic-claim (M3), confirm-early (M2), no-hold (M3)
              (two mediator instances over one shared registry; --faults: notices lost or
              duplicated, refreshes at any moment; spec/mediator.md section 10)
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

__all__ = ["MODELS", "register"]

MODELS: dict[str, str] = {
    "negotiator": "p2psc.models.negotiator_model",
    "mediation": "p2psc.models.mediation_model",
    "direct": "p2psc.models.direct_model",
    "relay": "p2psc.models.relay_model",
    "channel": "p2psc.models.channel_model",
    "fleet": "p2psc.models.fleet_model",
}
"""Model name -> module exposing ``build(faults=..., mutant=..., **model options) -> Model``."""

MAX_PROTOCOLS = 4


def _protocols(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= value <= MAX_PROTOCOLS:
        raise argparse.ArgumentTypeError(
            f"{value} is out of range: the negotiator model has 1..{MAX_PROTOCOLS} protocols "
            "(every set, priority and policy of them is explored)"
        )
    return value


def _at_least(minimum: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}: {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"a percentage is 0..100: {value:g}")
    return value


def _progress(result: Any, frontier: int) -> None:
    print(
        f"\r  {result.states:>12,} states  {result.transitions:>13,} transitions  "
        f"depth {result.depth:>3}  frontier {frontier:>10,}  "
        f"{result.states_per_second:>10,.0f} states/s",
        end="",
        file=sys.stderr,
        flush=True,
    )


def _options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The model's build options; refuses options of the other model and unknown mutants."""
    if args.model == "fleet":
        from p2psc.models.fleet_model import MUTANTS

        if args.mutant is not None and args.mutant not in MUTANTS:
            listed = ", ".join(f"{name} ({why})" for name, why in sorted(MUTANTS.items()))
            parser.error(f"unknown fleet mutant {args.mutant!r}; choose from: {listed}")
        given = (args.peers, args.protocols, args.stranger_budget)
        flags = (args.mixed_sets, args.limits, args.garbage, args.shutdown)
        if any(o is not None for o in given) or any(flags):
            parser.error("the fleet model takes --faults and --mutant only")
        return {"faults": args.faults, "mutant": args.mutant}
    from p2psc.models.mutants import (
        CHANNEL_MUTANTS,
        DIRECT_MUTANTS,
        MEDIATION_MUTANTS,
        NEGOTIATOR_MUTANTS,
        RELAY_MUTANTS,
    )

    by_model: dict[str, dict[str, Any]] = {
        "negotiator": NEGOTIATOR_MUTANTS,
        "mediation": MEDIATION_MUTANTS,
        "direct": DIRECT_MUTANTS,
        "relay": RELAY_MUTANTS,
        "channel": CHANNEL_MUTANTS,
    }
    mutants = by_model[args.model]
    if args.mutant is not None and args.mutant not in mutants:
        listed = ", ".join(f"{name} ({entry[1]})" for name, entry in sorted(mutants.items()))
        parser.error(f"unknown {args.model} mutant {args.mutant!r}; choose from: {listed}")
    if args.model != "relay" and (args.relay_faults is not None or args.bridging_relay):
        parser.error("--relay-faults and --bridging-relay apply to the relay model only")
    if args.model == "relay":
        not_relay = (args.faults, args.peers, args.protocols, args.mixed_sets, args.keepalive)
        if any(o not in (None, False) for o in not_relay) or (
            args.stranger_budget is not None or args.adversary_budget is not None
        ):
            parser.error(
                "the relay model takes --relay-faults, --bridging-relay, --garbage, --shutdown, "
                "--limits and --mutant only"
            )
        faults = 2 if args.relay_faults is None else args.relay_faults
        return {
            "faults": faults,
            "evil": args.bridging_relay,
            "garbage": args.garbage,
            "shutdown": args.shutdown,
            "limits": args.limits,
            "mutant": args.mutant,
        }
    if args.model != "direct" and args.stranger_budget is not None:
        parser.error("--stranger-budget applies to the direct model only")
    if args.model != "channel" and args.adversary_budget is not None:
        parser.error("--adversary-budget applies to the channel model only")
    if args.model == "channel":
        others = (args.faults, args.peers, args.protocols, args.mixed_sets, args.limits)
        if any(o not in (None, False) for o in others) or args.garbage or args.shutdown:
            parser.error("the channel model takes --adversary-budget and --mutant only")
        budget = 2 if args.adversary_budget is None else args.adversary_budget
        return {"budget": budget, "mutant": args.mutant}
    if args.model == "direct":
        others = (args.faults, args.peers, args.protocols, args.mixed_sets, args.limits)
        if (
            any(o not in (None, False) for o in others)
            or args.garbage
            or args.shutdown
            or (args.keepalive)
            or args.coordinate
        ):
            parser.error("the direct model takes --stranger-budget and --mutant only")
        budget = 2 if args.stranger_budget is None else args.stranger_budget
        return {"budget": budget, "mutant": args.mutant}
    options: dict[str, Any] = {"faults": args.faults, "mutant": args.mutant}
    if args.model == "negotiator":
        if args.peers is not None:
            parser.error("--peers applies to the mediation model only")
        options.update(protocols=args.protocols, mixed_sets=args.mixed_sets)
        if args.keepalive or args.coordinate:
            parser.error("--keepalive and --coordinate apply to the mediation model only")
        if args.limits or args.garbage or args.shutdown:
            parser.error("--limits, --garbage and --shutdown apply to the mediation model only")
    else:
        if args.protocols is not None or args.mixed_sets:
            parser.error("--protocols and --mixed-sets apply to the negotiator model only")
        options.update(third=(args.peers or 3) >= 3)
        if args.mutant is None:
            options.update(limits=args.limits, garbage=args.garbage, shutdown=args.shutdown)
            options.update(keepalive=args.keepalive, coordinate=args.coordinate)
            options.update(peers=args.peers or 3)
        elif args.limits or args.garbage or args.shutdown:
            parser.error("--limits, --garbage and --shutdown do not combine with --mutant")
    return options


def _run(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.explore_parser
    try:
        from p2psc.models.explorer import coverage_percent, explore, format_report
    except ImportError:  # pragma: no cover - only outside a source checkout
        print(
            "p2psc explore: the 'models' package is missing (run from a checkout)", file=sys.stderr
        )
        return 2
    options = _options(args, parser)
    model = importlib.import_module(MODELS[args.model]).build(**options)
    show = (not args.quiet and sys.stderr.isatty()) or args.progress
    if args.symmetry and not hasattr(model, "canonical"):
        parser.error(f"the {args.model} model declares no symmetry (see spec/properties.md)")
    result = explore(
        model,
        max_depth=args.max_depth,
        max_states=args.max_states,
        progress=_progress if show else None,
        symmetry=args.symmetry,
    )
    if show:
        _progress(result, 0)  # the final counts on the same line
        print(file=sys.stderr)
    from p2psc.models.coverage import where

    print(format_report(result, model.describe, where))
    if not result.ok:
        return 1
    if args.coverage_fail_under is not None:
        percent = coverage_percent(result)
        if percent is None or percent < args.coverage_fail_under:
            shown = "no coverage" if percent is None else f"{percent:.1f}%"
            print(
                f"coverage {shown} is under --coverage-fail-under {args.coverage_fail_under:g}%",
                file=sys.stderr,
            )
            return 1
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "explore",
        help="exhaustively check a model of the cores (negotiator, mediation, direct, channel, "
        "relay)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", choices=sorted(MODELS), help="which model to explore")
    parser.add_argument(
        "--protocols",
        type=_protocols,
        default=None,
        metavar="N",
        help=f"negotiator: protocol ids 1..{MAX_PROTOCOLS} (default 3)",
    )
    parser.add_argument(
        "--mixed-sets",
        action="store_true",
        help="negotiator: also every pair of different protocol sets on the two sides",
    )
    parser.add_argument(
        "--peers",
        type=int,
        choices=(2, 3, 4),
        default=None,
        help="mediation: A and B only (2), also C, who wants A (3, the default), and D, who "
        "wants B (4)",
    )
    parser.add_argument(
        "--stranger-budget",
        type=_at_least(0),
        default=None,
        metavar="N",
        help="direct: how many actions the stranger may take (default 2)",
    )
    parser.add_argument(
        "--relay-faults",
        type=_at_least(0),
        default=None,
        metavar="N",
        help="relay: how many faults (a reset, a late network) a run may have (default 2)",
    )
    parser.add_argument(
        "--bridging-relay",
        action="store_true",
        help="relay: the relay may splice the Client's leg to the Peer's listener instead",
    )
    parser.add_argument(
        "--adversary-budget",
        type=_at_least(0),
        default=None,
        metavar="N",
        help="channel: how many actions the adversary on the wire may take (default 2)",
    )
    parser.add_argument(
        "--faults",
        action="store_true",
        help="also one fault per run at every point: a dropped connection or an early timeout",
    )
    parser.add_argument(
        "--max-depth",
        type=_at_least(0),
        default=None,
        metavar="D",
        help="do not expand states at depth D (default: no bound)",
    )
    parser.add_argument(
        "--max-states",
        type=_at_least(1),
        default=20_000_000,
        metavar="N",
        help="stop after this many states (memory bound; default %(default)s)",
    )
    parser.add_argument(
        "--mutant",
        default=None,
        metavar="NAME",
        help="explore a deliberately broken core instead (listed below; models/mutants.py); "
        "the run must fail",
    )
    parser.add_argument(
        "--progress",
        action="store_true",
        help="progress line on stderr about every second, even if stderr is not a terminal",
    )
    parser.add_argument(
        "--limits",
        action="store_true",
        help="mediation: Mediator limits of one pending and one waiting registration (BUSY), "
        "peers that honour one AdvertiseRetry; relay: the relay admits one connection",
    )
    parser.add_argument(
        "--garbage",
        action="store_true",
        help="mediation: a fault may inject a malformed frame into any connection (once per run); "
        "relay: into a relay leg, or a stranger connects to the relay",
    )
    parser.add_argument(
        "--keepalive",
        action="store_true",
        help="mediation: the peers ping the Mediator every 5 s while they wait (property K1; "
        "its mutants always do)",
    )
    parser.add_argument(
        "--coordinate",
        action="store_true",
        help="mediation: the peers offer COORDINATE, so the Mediator keeps both connections "
        "while they punch (property L1; its mutants always do)",
    )
    parser.add_argument(
        "--shutdown",
        action="store_true",
        help="mediation (relay): the operator may shut the Mediator (relay) down at any moment",
    )
    parser.add_argument(
        "--symmetry",
        action="store_true",
        help="negotiator: explore one state per mirror-image pair (the two sides swapped)",
    )
    parser.add_argument(
        "--coverage-fail-under",
        type=_percent,
        default=None,
        metavar="PCT",
        help="exit 1 when under PCT percent of the declared machine transitions were taken",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.set_defaults(func=_run, explore_parser=parser)
