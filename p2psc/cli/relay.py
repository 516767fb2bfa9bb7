"""``p2psc relay``: run a relay on its own port (spec/relay.md).

Peers reach it when no direct connection forms (``connect(..., relay="auto")``) if they are
told its address (``relay_address`` / ``p2psc connect --relay-address``). A Mediator can serve
the relay on its own port instead (``p2psc mediator --relay``); peers then need no address.

Every limit below is per relay (section 6 of spec/relay.md says why each default is what it is).
At start the soft RLIMIT_NOFILE is raised to the hard limit; the connection limits not given
are lowered to fit the descriptors available (64 kept free), and explicit ones that do not fit
are refused. It logs the limits in force, one line per circuit spliced or ended and per
refused connection, and stops cleanly on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from p2psc.core.relay import MiB, RelayConfig
from p2psc.fdlimits import RELAY_LIMITS

__all__ = ["add_relay_limits", "register", "relay_config", "relay_explicit"]

_FLAGS: tuple[tuple[str, str, type, float], ...] = (
    ("max_duration", "seconds a circuit may last (0: no limit)", float, 1),
    ("max_bytes", "MiB a circuit may carry, both directions together (0: no limit)", float, MiB),
    ("max_rate", "MiB/s per direction of a circuit (0: no limit)", float, MiB),
    ("max_per_key", "relay connections per proven key", int, 1),
    ("max_per_address", "relay connections per IP address", int, 1),
    ("max_connections", "relay connections in total (2 per circuit)", int, 1),
    ("max_pending", "connections that have not sent their RelayRequest yet", int, 1),
    ("challenge_rate", "sealed challenges per second per address (token bucket)", float, 1),
    ("challenge_burst", "sealed challenges per address at once", int, 1),
    ("wait_timeout", "seconds an authenticated leg waits for its partner", float, 1),
    ("request_timeout", "seconds for each step before the splice", float, 1),
)


def add_relay_limits(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """Add ``--[prefix]max-duration`` ... (defaults from :class:`RelayConfig`)."""
    defaults = RelayConfig()
    group = parser.add_argument_group("relay limits (spec/relay.md section 6)")
    for name, text, kind, unit in _FLAGS:
        default = kind(getattr(defaults, name) / unit)
        ceiling = name in RELAY_LIMITS
        group.add_argument(
            f"--{prefix}{name.replace('_', '-')}",
            dest=f"relay_{name}",
            type=kind,
            default=None if ceiling else default,
            help=f"{text} ({default}{' at most, lowered to fit RLIMIT_NOFILE' if ceiling else ''})",
        )


def relay_config(args: argparse.Namespace) -> RelayConfig:
    """The :class:`RelayConfig` the flags of :func:`add_relay_limits` describe (a descriptor
    limit not given: its default, to be fitted by :func:`p2psc.fdlimits.fit_relay_limits`)."""
    defaults = RelayConfig()
    values: dict[str, Any] = {}
    for name, _, kind, unit in _FLAGS:
        given = getattr(args, f"relay_{name}")
        if given is None:
            values[name] = getattr(defaults, name)
            continue
        value = given * unit
        values[name] = int(value) if kind is int or unit == MiB else value
    return RelayConfig(**values)


def relay_explicit(args: argparse.Namespace) -> frozenset[str]:
    """The descriptor limits given on the command line (the others are fitted)."""
    return frozenset(n for n in RELAY_LIMITS if getattr(args, f"relay_{n}") is not None)


def _run(args: argparse.Namespace) -> int:
    from p2psc.aio.relay import RelayServer, run_relay
    from p2psc.fdlimits import HEADROOM, LimitsDoNotFit, fit_relay_limits, raise_nofile_limit

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        wanted = relay_config(args)
    except ValueError as error:
        print(f"p2psc relay: {error}", file=sys.stderr)
        return 2
    nofile = raise_nofile_limit()
    where = f"RLIMIT_NOFILE allows {nofile.soft} (hard {nofile.hard}, {HEADROOM} kept free)"
    try:
        config = fit_relay_limits(wanted, nofile.available, relay_explicit(args), where)
    except LimitsDoNotFit as error:
        print(f"p2psc relay: cannot start: {error}", file=sys.stderr)
        return 1

    def ready(server: RelayServer) -> None:
        host, port = server.address
        logging.getLogger("p2psc.relay").info(
            "relay listening on %s:%d (max_connections %d, max_pending %d, nofile %d)",
            host,
            port,
            config.max_connections,
            config.max_pending,
            nofile.soft,
        )

    try:
        return run_relay(args.host, args.port, config=config, ready=ready)
    except OSError as error:
        print(f"p2psc relay: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "relay",
        help="run a relay for peers that cannot connect directly",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    parser.add_argument("--port", type=int, default=1338, help="TCP port, 0 = any (%(default)s)")
    add_relay_limits(parser)
    parser.set_defaults(func=_run)
