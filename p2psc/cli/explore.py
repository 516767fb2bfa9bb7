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
  p2psc explore mediation --mutant identify-early
  p2psc explore direct --stranger-budget 3  # Client, Peer and a stranger who replays anything

mutants (--mutant NAME; the property each one breaks):
  negotiator: tie-local (N2), tie-yield (N1), drop-early-byte (N2)
  mediation:  no-mutual (M1), identify-early (M2), forget-client (M3), keep-open (M3),
              leaky-registry (M4)
  direct:     commit-on-init (D2), no-binding (D4), global-cap (D3)
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
}
"""Model name -> module exposing ``build(faults=..., mutant=..., **model options) -> Model``."""

MAX_PROTOCOLS = 3


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
    from p2psc.models.mutants import DIRECT_MUTANTS, MEDIATION_MUTANTS, NEGOTIATOR_MUTANTS

    by_model: dict[str, dict[str, Any]] = {
        "negotiator": NEGOTIATOR_MUTANTS,
        "mediation": MEDIATION_MUTANTS,
        "direct": DIRECT_MUTANTS,
    }
    mutants = by_model[args.model]
    if args.mutant is not None and args.mutant not in mutants:
        listed = ", ".join(f"{name} ({entry[1]})" for name, entry in sorted(mutants.items()))
        parser.error(f"unknown {args.model} mutant {args.mutant!r}; choose from: {listed}")
    if args.model != "direct" and args.stranger_budget is not None:
        parser.error("--stranger-budget applies to the direct model only")
    if args.model == "direct":
        if args.faults or args.peers is not None or args.protocols is not None or args.mixed_sets:
            parser.error("the direct model takes --stranger-budget and --mutant only")
        budget = 2 if args.stranger_budget is None else args.stranger_budget
        return {"budget": budget, "mutant": args.mutant}
    options: dict[str, Any] = {"faults": args.faults, "mutant": args.mutant}
    if args.model == "negotiator":
        if args.peers is not None:
            parser.error("--peers applies to the mediation model only")
        options.update(protocols=args.protocols, mixed_sets=args.mixed_sets)
    else:
        if args.protocols is not None or args.mixed_sets:
            parser.error("--protocols and --mixed-sets apply to the negotiator model only")
        options.update(third=(args.peers or 3) == 3)
    return options


def _run(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.explore_parser
    try:
        from p2psc.models.explorer import explore, format_report
    except ImportError:  # pragma: no cover - only outside a source checkout
        print(
            "p2psc explore: the 'models' package is missing (run from a checkout)", file=sys.stderr
        )
        return 2
    options = _options(args, parser)
    model = importlib.import_module(MODELS[args.model]).build(**options)
    show = (not args.quiet and sys.stderr.isatty()) or args.progress
    result = explore(
        model,
        max_depth=args.max_depth,
        max_states=args.max_states,
        progress=_progress if show else None,
    )
    if show:
        _progress(result, 0)  # the final counts on the same line
        print(file=sys.stderr)
    print(format_report(result, model.describe))
    return 0 if result.ok else 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "explore",
        help="exhaustively check a model of the cores (negotiator pair, mediation, direct)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", choices=sorted(MODELS), help="which model to explore")
    parser.add_argument(
        "--protocols",
        type=_protocols,
        default=None,
        metavar="N",
        help=f"negotiator: protocol ids 1..{MAX_PROTOCOLS} (default {MAX_PROTOCOLS})",
    )
    parser.add_argument(
        "--mixed-sets",
        action="store_true",
        help="negotiator: also every pair of different protocol sets on the two sides",
    )
    parser.add_argument(
        "--peers",
        type=int,
        choices=(2, 3),
        default=None,
        help="mediation: A and B only (2), or also C, who wants A (3, the default)",
    )
    parser.add_argument(
        "--stranger-budget",
        type=_at_least(0),
        default=None,
        metavar="N",
        help="direct: how many actions the stranger may take (default 2)",
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
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.set_defaults(func=_run, explore_parser=parser)
