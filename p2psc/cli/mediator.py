"""``p2psc mediator``: run a Mediator server until SIGINT/SIGTERM.

Logs (to stderr) one structured line per registration, pairing, introduction and failure, with
the reason and the fingerprints of both keys, as text or as JSON lines (``--log-format json``).
Limits and deadlines are those of spec/mediator.md; the flags override the defaults.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

from p2psc.core.mediator import MediatorConfig, MediatorNote

__all__ = ["register"]

log = logging.getLogger("p2psc.mediator")

_LEVELS = {
    "refused": logging.WARNING,
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


class _LogObserver:
    """Turns core notes into structured log records.

    ``kinds`` (read by the core once, when it is built) lists the note kinds the log level
    shows, so the core does not even build notes that would be dropped: at ``--log-level
    warning`` or above a pairing costs no note at all.
    """

    __slots__ = ("kinds",)

    def __init__(self) -> None:
        self.kinds = frozenset(kind for kind, level in _LEVELS.items() if log.isEnabledFor(level))

    def __call__(self, note: MediatorNote) -> None:
        level = _LEVELS.get(note.kind, logging.INFO)
        if not log.isEnabledFor(level):
            return
        fields: dict[str, Any] = {"event": note.kind, "conn": note.conn}
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
            fields["reason"] = note.reason
        log.log(level, note.kind, extra={"p2psc": fields})


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "p2psc", {})
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        extra = " ".join(
            f"{k}={json.dumps(v) if isinstance(v, str) and ' ' in v else v}"
            for k, v in fields.items()
            if k != "event"
        )
        text = f"{when}Z {record.levelname} {record.getMessage()}"
        return f"{text} {extra}" if extra else text


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = dict(getattr(record, "p2psc", {}))
        fields.setdefault("event", record.getMessage())
        entry = {"ts": round(record.created, 6), "level": record.levelname.lower(), **fields}
        return json.dumps(entry, sort_keys=False)


def _setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    log.handlers[:] = [handler]
    log.setLevel(level.upper())
    log.propagate = False


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


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be 0..65535")
    return value


def _run(args: argparse.Namespace) -> int:
    from p2psc.aio.mediator import MediatorServer, run_mediator

    _setup_logging(args.log_level, args.log_format)
    defaults = MediatorConfig()
    step = args.timeout
    config = MediatorConfig(
        advertise_timeout=step or defaults.advertise_timeout,
        response_timeout=step or defaults.response_timeout,
        confirm_timeout=step or defaults.confirm_timeout,
        wait_timeout=None if args.wait_timeout == 0 else args.wait_timeout,
        max_pending=args.max_pending,
        max_pending_per_ip=args.max_pending_per_ip,
        max_waiting=args.max_waiting,
        max_waiting_per_ip=args.max_waiting_per_ip,
    )

    def ready(server: MediatorServer) -> None:
        log.info(
            "listening",
            extra={"p2psc": {"event": "listening", "host": server.host, "port": server.port}},
        )

    try:
        status = run_mediator(
            args.host,
            args.port,
            config=config,
            observer=_LogObserver(),  # after _setup_logging: its kinds follow the level
            ready=ready,
            use_uvloop=not args.no_uvloop,
            legacy=not args.no_legacy,
        )
    except OSError as error:  # bind/listen failed: address in use, no such address, ...
        why = error.strerror or str(error)
        print(f"p2psc mediator: cannot listen on {args.host}:{args.port}: {why}", file=sys.stderr)
        return 1
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
        "--max-pending",
        type=_positive_int,
        default=defaults.max_pending,
        help="unverified connections, all sources (%(default)s)",
    )
    parser.add_argument(
        "--max-pending-per-ip",
        type=_positive_int,
        default=defaults.max_pending_per_ip,
        help="unverified connections per source address (%(default)s)",
    )
    parser.add_argument(
        "--max-waiting",
        type=_positive_int,
        default=defaults.max_waiting,
        help="verified registrations waiting for their partner (%(default)s)",
    )
    parser.add_argument(
        "--max-waiting-per-ip",
        type=_positive_int,
        default=defaults.max_waiting_per_ip,
        help="waiting registrations per source address (%(default)s)",
    )
    parser.add_argument("--no-uvloop", action="store_true", help="use plain asyncio")
    parser.add_argument(
        "--no-legacy",
        action="store_true",
        help=(
            "do not serve protocol version 0 (the original C++ clients: JSON, RSA PKCS#1 v1.5; "
            "insecure, see spec/legacy.md) on the same port"
        ),
    )
    parser.set_defaults(func=_run)
