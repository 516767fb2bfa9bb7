"""``p2psc mediator``: run a Mediator server until SIGINT/SIGTERM (SIGHUP reloads the TLS
certificate).

Logs (to stderr) one structured line per registration, pairing, introduction and failure, with
the reason and the fingerprints of both keys, as text or as JSON lines (``--log-format json``).
Evictions and refusals (floods) are logged at most 10 a second per kind, then summarised.
Text from the network is logged with control characters escaped.

Limits and deadlines are those of spec/mediator.md, section 6; the flags override them. At
start the soft RLIMIT_NOFILE is raised to the hard limit; limits not given are derived from
the descriptors available (64 kept free; with ``--relay``, the relay's share first: what its
explicit limits need, else up to half), and explicit limits that do not fit are refused.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from p2psc.cli.relay import add_relay_limits, relay_explicit
from p2psc.core.mediator import MediatorConfig, MediatorNote, NoteObserver
from p2psc.text import printable

__all__ = ["register"]

log = logging.getLogger("p2psc.mediator")

_LEVELS = {
    "refused": logging.WARNING,
    "evicted": logging.WARNING,
    "rejected": logging.WARNING,
    "failed": logging.WARNING,
    "replaced": logging.INFO,
    "registered": logging.INFO,
    "paired": logging.INFO,
    "introduced": logging.INFO,
    "challenged": logging.DEBUG,
    "closed": logging.DEBUG,
}


def _fingerprint(raw: bytes | None) -> str | None:
    if not raw:
        return None
    try:
        from p2psc.keys import PublicKey

        return PublicKey.from_raw(raw).fingerprint()
    except Exception:  # a malformed key is still worth a log line
        return raw[:8].hex()


_FLOOD_KINDS = frozenset({"refused", "evicted"})
"""Kinds a flood produces by the thousand: logged at most _FLOOD_RATE a second each."""
_FLOOD_RATE = 10


class _LogObserver:
    """Turns core notes into structured log records.

    ``kinds`` (read by the core once, when it is built) lists the note kinds the log level
    shows, so the core does not even build notes that would be dropped: at ``--log-level
    warning`` or above a pairing costs no note at all. Refusals and evictions are
    rate-limited (a flood must not become a disk-filling log): past ``_FLOOD_RATE`` a second
    per kind they are counted, and the count is logged with the next line of that kind.
    """

    __slots__ = ("_clock", "_suppressed", "_window", "kinds")

    def __init__(self, clock: Any = time.monotonic) -> None:
        self.kinds = frozenset(kind for kind, level in _LEVELS.items() if log.isEnabledFor(level))
        self._window: dict[str, tuple[float, int]] = {}
        self._suppressed: dict[str, int] = {}
        self._clock = clock

    def __call__(self, note: MediatorNote) -> None:
        level = _LEVELS.get(note.kind, logging.INFO)
        if not log.isEnabledFor(level):
            return
        fields: dict[str, Any] = {"event": note.kind, "conn": note.conn}
        if note.kind in _FLOOD_KINDS:
            now = self._clock()
            start, count = self._window.get(note.kind, (now, 0))
            if now - start >= 1.0:
                start, count = now, 0
            if count >= _FLOOD_RATE:
                self._window[note.kind] = (start, count + 1)
                self._suppressed[note.kind] = self._suppressed.get(note.kind, 0) + 1
                return
            self._window[note.kind] = (start, count + 1)
            suppressed = self._suppressed.pop(note.kind, 0)
            if suppressed:
                fields["suppressed"] = suppressed
        if note.remote is not None:
            fields["remote"] = f"{note.remote[0]}:{note.remote[1]}"
        # legacy notes carry the RSA fingerprints that keygen --rsa and connect --legacy print
        if note.our_key:
            fields["key"] = getattr(note, "our_fingerprint", None) or _fingerprint(note.our_key)
        if note.their_key:
            fields["wants"] = getattr(note, "their_fingerprint", None) or _fingerprint(
                note.their_key
            )
        if note.partner is not None:
            fields["partner"] = note.partner
        if note.reason:
            fields["reason"] = printable(note.reason, limit=512)
        if note.cause:
            fields["cause"] = note.cause
        log.log(level, note.kind, extra={"p2psc": fields})


class _Observers:
    """Several note observers as one (the core takes one): kinds is the union."""

    def __init__(self, observers: Sequence[NoteObserver]) -> None:
        self._observers = [(o, getattr(o, "kinds", None)) for o in observers]
        wanted: set[str] = set()
        for _, kinds in self._observers:
            if kinds is None:
                self.kinds = None
                break
            wanted |= set(kinds)
        else:
            self.kinds = frozenset(wanted)

    def __call__(self, note: MediatorNote) -> None:
        for observer, kinds in self._observers:
            if kinds is None or note.kind in kinds:
                observer(note)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "p2psc", {})
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        extra = " ".join(f"{k}={_text_value(v)}" for k, v in fields.items() if k != "event")
        text = f"{when}Z {record.levelname} {printable(record.getMessage())}"
        return f"{text} {extra}" if extra else text


def _text_value(value: object) -> str:
    """One field of a text log line: control characters escaped (a reason text from the
    network must not move the cursor or start a forged line), quoted when it has spaces."""
    text = printable(value, limit=1024)  # (backslashes doubled: a \" below is unambiguous)
    return '"' + text.replace('"', '\\"') + '"' if " " in text or '"' in text else text


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = dict(getattr(record, "p2psc", {}))
        fields.setdefault("event", record.getMessage())
        entry = {"ts": round(record.created, 6), "level": record.levelname.lower(), **fields}
        return json.dumps(entry, sort_keys=False)


def _setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    for logger in (log, logging.getLogger("p2psc.relay")):  # the relay of `mediator --relay`
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _prefix(bits: int) -> Any:
    def parse(text: str) -> int:
        value = int(text)
        if not 0 <= value <= bits:
            raise argparse.ArgumentTypeError(f"must be 0..{bits}")
        return value

    return parse


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be 0..65535")
    return value


_LIMIT_FLAGS = (
    "max_connections",
    "max_pending",
    "max_pending_per_ip",
    "max_waiting",
    "max_waiting_per_ip",
)


def _config(args: argparse.Namespace) -> tuple[MediatorConfig, frozenset[str]]:
    """The configuration the flags ask for, and which limits were given explicitly."""
    defaults = MediatorConfig()
    step = args.timeout
    explicit = frozenset(name for name in _LIMIT_FLAGS if getattr(args, name) is not None)
    limits = {name: getattr(args, name) for name in explicit}
    config = replace(
        defaults,
        advertise_timeout=step or defaults.advertise_timeout,
        response_timeout=step or defaults.response_timeout,
        confirm_timeout=step or defaults.confirm_timeout,
        wait_timeout=None if args.wait_timeout == 0 else args.wait_timeout,
        ipv4_prefix=args.ipv4_prefix,
        ipv6_prefix=args.ipv6_prefix,
        challenge_rate=args.challenge_rate,
        challenge_burst=args.challenge_burst,
        require_tls=args.require_tls,
        coordinate=not args.no_coordinate,
        coordinate_timeout=args.coordinate_timeout,
        **limits,
    )
    return config, explicit


def _fail(message: str) -> int:
    print(f"p2psc mediator: {printable(message)}", file=sys.stderr)
    return 1


def _run(args: argparse.Namespace) -> int:
    from p2psc.aio.mediator import MediatorServer, run_mediator
    from p2psc.cli.relay import relay_config
    from p2psc.errors import MediatorTlsError
    from p2psc.fdlimits import (
        HEADROOM,
        LimitsDoNotFit,
        fit_limits,
        fit_relay_limits,
        raise_nofile_limit,
        relay_share,
    )

    _setup_logging(args.log_level, args.log_format)
    if args.require_tls and not args.tls_cert:
        return _fail("--require-tls needs --tls-cert (and --tls-key)")
    if args.tls_key and not args.tls_cert:
        return _fail("--tls-key needs --tls-cert")
    try:
        wanted, explicit = _config(args)
    except ValueError as error:
        return _fail(str(error))
    nofile = raise_nofile_limit()
    relay = None
    reserved = 0
    try:
        if args.relay:
            relay_wanted, relay_named = relay_config(args), relay_explicit(args)
            reserved = relay_share(relay_wanted, nofile, relay_named)
            where = (
                f"RLIMIT_NOFILE allows {nofile.soft} (hard {nofile.hard}, {HEADROOM} kept free, "
                "at least 2 left for the Mediator)"
            )
            fits = min(reserved, nofile.available - 2)
            relay = fit_relay_limits(relay_wanted, fits, relay_named, where, "relay-")
        config = fit_limits(wanted, nofile, explicit, reserved=reserved)
    except LimitsDoNotFit as error:
        return _fail(f"cannot start: {error}")
    except ValueError as error:
        return _fail(str(error))

    fleet = None
    if args.registry != "memory":
        if not args.registry.startswith(("redis://", "rediss://", "unix://")):
            return _fail(f"--registry must be memory or redis://HOST:PORT/DB, got {args.registry}")
        try:
            import redis  # noqa: F401
        except ImportError:
            return _fail("--registry redis://... needs the redis extra: pip install 'p2psc[redis]'")
        from p2psc.aio.fleet import FleetOptions

        ttl = args.registry_ttl
        fleet = FleetOptions(
            args.registry, ttl=ttl, tombstone_ttl=max(ttl, 2 * config.confirm_timeout)
        )

    tls_loader = None
    if args.tls_cert:
        from p2psc.tls import server_context

        cert, key = args.tls_cert, args.tls_key

        def tls_loader() -> Any:
            return server_context(cert, key)

        try:
            tls_loader()  # fail now, with one line, rather than inside the event loop
        except MediatorTlsError as error:
            return _fail(error.reason)

    observers: list[NoteObserver] = [_LogObserver()]  # after _setup_logging: kinds follow it
    metrics = None
    if args.metrics_port is not None:
        from p2psc.metrics import MediatorMetrics, MetricsUnavailable

        try:
            metrics = MediatorMetrics()
        except MetricsUnavailable as error:
            return _fail(str(error))
        observers.append(metrics)

    def ready(server: MediatorServer) -> None:
        # one line: where, whether TLS, and the limits in force (derived or explicit)
        fields: dict[str, Any] = {
            "event": "listening",
            "host": server.host,
            "port": server.port,
            "tls": server.tls is not None,
        }
        fields.update({name: getattr(config, name) for name in _LIMIT_FLAGS})
        if relay is not None:
            fields.update(
                relay_max_connections=relay.max_connections, relay_max_pending=relay.max_pending
            )
        fields.update(nofile=nofile.soft, nofile_hard=nofile.hard)
        if nofile.raised_from is not None:
            fields["nofile_raised_from"] = nofile.raised_from
        log.info("listening", extra={"p2psc": fields})
        if metrics is not None:
            metrics.bind(server)
            try:
                host, port = metrics.serve(args.metrics_port, args.metrics_host)
            except OSError as error:
                why = printable(error.strerror or str(error))
                log.error(
                    "metrics unavailable",
                    extra={"p2psc": {"event": "metrics_failed", "reason": why}},
                )
                return
            log.info("metrics", extra={"p2psc": {"event": "metrics", "host": host, "port": port}})

    try:
        status = run_mediator(
            args.host,
            args.port,
            config=config,
            observer=observers[0] if len(observers) == 1 else _Observers(observers),
            ready=ready,
            use_uvloop=not args.no_uvloop,
            legacy=not args.no_legacy,
            tls=tls_loader,
            fleet=fleet,
            relay=relay,
        )
    except OSError as error:  # bind/listen failed: address in use, no such address, ...
        why = error.strerror or str(error)
        return _fail(f"cannot listen on {args.host}:{args.port}: {why}")
    log.info("stopped", extra={"p2psc": {"event": "stopped"}})
    return status


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    defaults = MediatorConfig()
    parser = subparsers.add_parser(
        "mediator",
        help="run a Mediator server that verifies and pairs peers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    parser.add_argument("--port", type=_port, default=1337, help="TCP port, 0 = any (%(default)s)")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="(%(default)s)",
    )
    parser.add_argument(
        "--log-format", default="text", choices=["text", "json"], help="(%(default)s)"
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=None,
        help=(
            "seconds for each handshake step: Advertise, AdvertiseResponse, the Peer's close "
            f"after PeerDisconnect (default {defaults.advertise_timeout:g})"
        ),
    )
    parser.add_argument(
        "--wait-timeout",
        type=float,
        default=defaults.wait_timeout,
        help="seconds a registration may wait for its partner, 0 = no limit (%(default)s)",
    )
    parser.add_argument(
        "--no-coordinate",
        action="store_true",
        help="never coordinate a pairing (do not echo COORDINATE: peers close after the "
        "introduction and a partner that dies is noticed only at its punch timeout; "
        "spec/mediator.md section 4.3)",
    )
    parser.add_argument(
        "--coordinate-timeout",
        type=_positive_float,
        default=defaults.coordinate_timeout,
        help="seconds a coordinated pairing's connections are held after the introduction "
        "(%(default)s)",
    )
    limits = parser.add_argument_group(
        "limits",
        "Defaults in parentheses are ceilings: at start each limit not given is lowered\n"
        "to fit RLIMIT_NOFILE (connections = soft limit - 64, unverified = a quarter of\n"
        "that, waiting = the rest); explicit limits that do not fit refuse to start.\n"
        "Over an unverified limit the oldest unverified connection of the fullest origin\n"
        "(an address; an IPv6 /64) is evicted with AdvertiseRetry(BUSY), not the newcomer.\n"
        "See spec/mediator.md, section 6.",
    )
    limits.add_argument(
        "--max-connections",
        type=_positive_int,
        default=None,
        help="connections in any state, one descriptor each (RLIMIT_NOFILE - 64)",
    )
    limits.add_argument(
        "--max-pending",
        type=_positive_int,
        default=None,
        help=f"unverified connections, all sources ({defaults.max_pending})",
    )
    limits.add_argument(
        "--max-pending-per-ip",
        type=_positive_int,
        default=None,
        help=f"unverified connections per origin ({defaults.max_pending_per_ip})",
    )
    limits.add_argument(
        "--max-waiting",
        type=_positive_int,
        default=None,
        help=f"verified registrations waiting for their partner ({defaults.max_waiting})",
    )
    limits.add_argument(
        "--max-waiting-per-ip",
        type=_positive_int,
        default=None,
        help=f"waiting registrations per origin ({defaults.max_waiting_per_ip})",
    )
    limits.add_argument(
        "--ipv6-prefix",
        type=_prefix(128),
        default=defaults.ipv6_prefix,
        help="per-origin limits count IPv6 sources per this prefix length (%(default)s)",
    )
    limits.add_argument(
        "--ipv4-prefix",
        type=_prefix(32),
        default=defaults.ipv4_prefix,
        help="per-origin limits count IPv4 sources per this prefix length (%(default)s)",
    )
    limits.add_argument(
        "--challenge-rate",
        type=_positive_float,
        default=defaults.challenge_rate,
        help="HPKE challenges and TLS handshakes per second per origin (%(default)s)",
    )
    limits.add_argument(
        "--challenge-burst",
        type=_positive_int,
        default=defaults.challenge_burst,
        help="... of which this many at once (%(default)s)",
    )
    tls = parser.add_argument_group(
        "TLS",
        "TLS on the same port: a connection starting with a TLS ClientHello (0x16) runs\n"
        "the protocol inside TLS; clear version 1 and version 0 are still served unless\n"
        "refused (--require-tls, --no-legacy).",
    )
    tls.add_argument("--tls-cert", metavar="FILE", help="PEM certificate chain (SIGHUP reloads)")
    tls.add_argument("--tls-key", metavar="FILE", help="PEM private key (default: in --tls-cert)")
    tls.add_argument(
        "--require-tls",
        action="store_true",
        help="refuse clear version 1 registrations (AdvertiseAbort TLS_REQUIRED)",
    )
    metrics = parser.add_argument_group("metrics")
    metrics.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        help="serve Prometheus metrics on this port (needs p2psc[metrics])",
    )
    metrics.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address of the metrics endpoint (%(default)s: loopback only)",
    )
    fleet = parser.add_argument_group(
        "fleet",
        "Several instances sharing one Redis registry pair peers that reached different "
        "instances (spec/mediator.md section 10; needs p2psc[redis]; version 0 clients are "
        "not served).",
    )
    fleet.add_argument(
        "--registry",
        default="memory",
        metavar="URL",
        help="memory (default: this process only) or redis://HOST:PORT/DB",
    )
    fleet.add_argument(
        "--registry-ttl",
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="lifetime of a waiting registration in Redis unless refreshed (%(default)s)",
    )
    parser.add_argument("--no-uvloop", action="store_true", help="use plain asyncio")
    parser.add_argument(
        "--relay",
        action="store_true",
        help="also run a relay on this port, for peers that cannot connect directly (they find "
        "it at the Mediator's address: spec/relay.md)",
    )
    add_relay_limits(parser, prefix="relay-")
    parser.add_argument(
        "--no-legacy",
        action="store_true",
        help=(
            "do not serve protocol version 0 (the original C++ clients: JSON, RSA PKCS#1 v1.5; "
            "insecure, see spec/legacy.md) on the same port"
        ),
    )
    parser.set_defaults(func=_run)
