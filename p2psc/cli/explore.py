"""``p2psc explore``: run the exhaustive explorer over the real sans-IO cores.

Breadth-first over every interleaving of a model (see ``spec/properties.md``): prints states,
transitions, depth, states/s and which declared machine transitions were never taken. Exit
status 1 on a violation, with the shortest counterexample as text and as a Mermaid
``sequenceDiagram``. The models live in the top-level ``models`` package of the repository.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

__all__ = ["MODELS", "register"]

MODELS: dict[str, str] = {
    "negotiator": "models.negotiator_model",
    "mediation": "models.mediation_model",
}
"""Model name -> module exposing ``build(protocols=..., faults=..., mutant=...) -> Model``."""


def _progress(result: Any, frontier: int) -> None:
    print(
        f"\r  {result.states:>12,} states  {result.transitions:>13,} transitions  "
        f"depth {result.depth:>3}  frontier {frontier:>10,}  "
        f"{result.states_per_second:>10,.0f} states/s",
        end="",
        file=sys.stderr,
        flush=True,
    )


def _run(args: argparse.Namespace) -> int:
    try:
        from models.explorer import explore, format_report
    except ImportError:  # pragma: no cover - only outside a source checkout
        print(
            "p2psc explore: the 'models' package is missing (run from a checkout)", file=sys.stderr
        )
        return 2
    module = importlib.import_module(MODELS[args.model])
    model = module.build(protocols=args.protocols, faults=args.faults, mutant=args.mutant)
    show = (not args.quiet and sys.stderr.isatty()) or args.progress
    result = explore(
        model,
        max_depth=args.max_depth,
        max_states=args.max_states,
        progress=_progress if show else None,
    )
    if show:
        print(file=sys.stderr)
    print(format_report(result, model.describe))
    return 0 if result.ok else 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "explore",
        help="exhaustively check a model of the cores (negotiator pair, mediation)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", choices=sorted(MODELS), help="which model to explore")
    parser.add_argument(
        "--protocols",
        type=int,
        default=None,
        help="negotiator: protocols per side, 1..3 (default: the model's); mediation: ignored",
    )
    parser.add_argument(
        "--faults",
        action="store_true",
        help="also drop connections and fire timeouts at every point",
    )
    parser.add_argument("--max-depth", type=int, default=None, help="depth bound (default none)")
    parser.add_argument(
        "--max-states",
        type=int,
        default=20_000_000,
        help="stop after this many states (memory bound; default %(default)s)",
    )
    parser.add_argument(
        "--mutant",
        default=None,
        help="explore a deliberately broken variant (see models/mutants.py) instead",
    )
    parser.add_argument("--progress", action="store_true", help="progress line even if not a tty")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.set_defaults(func=_run)
