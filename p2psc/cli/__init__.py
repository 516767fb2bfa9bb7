"""The ``p2psc`` command: a dispatcher over one module per subcommand.

Each module in :data:`SUBCOMMANDS` exposes ``register(subparsers)``, which adds its parser and
sets ``func`` (``func(args) -> int`` exit status). Errors of the :mod:`p2psc.errors` hierarchy
are printed as one line, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from p2psc import __version__
from p2psc.errors import P2pscError
from p2psc.text import printable

__all__ = ["SUBCOMMANDS", "build_parser", "main"]

SUBCOMMANDS: tuple[str, ...] = (
    "p2psc.cli.diagrams",
    "p2psc.cli.keygen",
    "p2psc.cli.mediator",
    "p2psc.cli.relay",
    "p2psc.cli.connect",
    "p2psc.cli.demo",
    "p2psc.legacy.cli",
    "p2psc.cli.explore",
    "p2psc.cli.conformance",
)
"""Subcommand modules, in the order ``--help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p2psc",
        description=(
            "Peer-to-peer socket creation: run a Mediator, pair two peers through it into one "
            "direct authenticated TCP connection, and negotiate protocols on it."
        ),
    )
    parser.add_argument("--version", action="version", version=f"p2psc {__version__}")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for module_name in SUBCOMMANDS:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        status: int = func(args)
    except P2pscError as error:
        # Reasons quote what the network sent (a mediator's reason text): escaped, so a peer
        # cannot move the cursor or forge a line on our terminal.
        print(
            f"p2psc {args.command}: {type(error).__name__}: {printable(error.reason)}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _stdout_gone()
    try:
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except BrokenPipeError:
        return _stdout_gone()
    return status


def _stdout_gone() -> int:
    """Whoever read our output went away (``p2psc ... | head``): stop quietly, like other Unix
    tools, with the status a SIGPIPE would give. Pointing stdout at /dev/null keeps Python's
    final flush from printing a second error."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + 13  # SIGPIPE
