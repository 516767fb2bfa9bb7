"""Fit a mediator's connection limits into the file descriptors the process may open.

Why: every connection is one descriptor. The built-in limits (4096 unverified, 100000
waiting) exceed a typical ``RLIMIT_NOFILE`` (1024 soft on many systems), and a mediator that
runs out of descriptors cannot even accept the connection that would tell it so: legitimate
clients saw ``MediatorClosed`` with nothing in the log (issue 21). So at start the soft limit
is raised to the hard one where allowed, limits not given explicitly are derived from what is
available (keeping :data:`HEADROOM` for the listener, logs, metrics and DNS), and explicit
limits that cannot fit are refused with one clear line (:class:`LimitsDoNotFit`).

A relay holds one descriptor per connection too (its silent connections and its admitted
legs: :func:`relay_descriptors`), so ``p2psc relay`` fits its limits the same way
(:func:`fit_relay_limits`), and ``p2psc mediator --relay`` first sets aside the relay's share
(:func:`relay_share`) and fits the Mediator into the rest: otherwise the two together could
promise twice the descriptors the process has.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass, replace

from p2psc.core.mediator import MediatorConfig
from p2psc.core.relay import RelayConfig

__all__ = [
    "HEADROOM",
    "RELAY_LIMITS",
    "LimitsDoNotFit",
    "NofileLimit",
    "fit_limits",
    "fit_relay_limits",
    "raise_nofile_limit",
    "relay_descriptors",
    "relay_share",
]

RELAY_LIMITS = ("max_connections", "max_pending")
"""The relay limits that count descriptors (:func:`relay_descriptors`): their defaults are
ceilings, lowered to fit RLIMIT_NOFILE (the command-line flags default to None)."""

HEADROOM = 64
"""Descriptors kept free of connections: listening sockets, stdio, log files, the metrics
endpoint and its scrapes, resolver sockets, and connections being refused or evicted (each
holds its descriptor until its last write is flushed)."""

_SOFT_CAP = 1 << 20
"""Never ask for more than this (an unlimited hard limit is not a number the kernel takes)."""


class LimitsDoNotFit(ValueError):
    """Explicit limits need more descriptors than RLIMIT_NOFILE allows."""


@dataclass(frozen=True, slots=True)
class NofileLimit:
    soft: int
    hard: int
    raised_from: int | None = None
    """The soft limit before :func:`raise_nofile_limit` raised it (None: unchanged)."""

    @property
    def available(self) -> int:
        """Descriptors connections may use."""
        return max(0, self.soft - HEADROOM)


def raise_nofile_limit() -> NofileLimit:
    """Raise the soft RLIMIT_NOFILE to the hard limit when allowed; return what applies."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _SOFT_CAP if hard == resource.RLIM_INFINITY else min(hard, _SOFT_CAP)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return NofileLimit(soft, hard)
        return NofileLimit(target, hard, raised_from=soft)
    return NofileLimit(min(soft, _SOFT_CAP), hard)


def fit_limits(
    config: MediatorConfig,
    nofile: NofileLimit,
    explicit: frozenset[str] = frozenset(),
    *,
    reserved: int = 0,
) -> MediatorConfig:
    """``config`` with the limits not named in ``explicit`` derived from ``nofile``.

    Derived: ``max_connections`` = available descriptors (less ``reserved``, the share of a
    relay in the same process); ``max_pending`` = min(default, a quarter of that);
    ``max_waiting`` = min(default, the rest); per-address limits no larger than the global
    ones. Raises :class:`LimitsDoNotFit` when explicit limits exceed what is available
    (``max_connections``, or ``max_pending`` + ``max_waiting``).
    """
    available = nofile.available - reserved
    defaults = MediatorConfig()
    kept = f"{HEADROOM} kept free" + (f", {reserved} for the relay" if reserved else "")
    where = f"RLIMIT_NOFILE allows {nofile.soft} (hard {nofile.hard}, {kept})"
    if available < 2:
        raise LimitsDoNotFit(f"no descriptors left for connections: {where}")
    if "max_connections" in explicit:
        cap = config.max_connections or available
        if cap > available:
            raise LimitsDoNotFit(
                f"--max-connections {cap} needs {cap + HEADROOM} file descriptors but {where}"
            )
    else:
        cap = available
    pending = (
        config.max_pending
        if "max_pending" in explicit
        else min(defaults.max_pending, max(1, cap // 4))
    )
    waiting = (
        config.max_waiting
        if "max_waiting" in explicit
        else min(defaults.max_waiting, max(1, cap - pending))
    )
    named = [n for n in ("max_pending", "max_waiting") if n in explicit]
    if named and pending + waiting > cap:
        parts = " + ".join(f"--{n.replace('_', '-')} {getattr(config, n)}" for n in named)
        raise LimitsDoNotFit(
            f"{parts} (with the derived rest: {pending} + {waiting} connections) need "
            f"{pending + waiting + HEADROOM} file descriptors but {where}; lower the limits "
            "or raise the limit (ulimit -n)"
        )
    pending_per_ip = (
        config.max_pending_per_ip
        if "max_pending_per_ip" in explicit
        else min(defaults.max_pending_per_ip, pending)
    )
    waiting_per_ip = (
        config.max_waiting_per_ip
        if "max_waiting_per_ip" in explicit
        else min(defaults.max_waiting_per_ip, waiting)
    )
    return replace(
        config,
        max_connections=cap,
        max_pending=pending,
        max_waiting=waiting,
        max_pending_per_ip=pending_per_ip,
        max_waiting_per_ip=waiting_per_ip,
    )


def relay_descriptors(config: RelayConfig) -> int:
    """Descriptors a relay may hold at once: connections that have not sent their RelayRequest
    (``max_pending``) and admitted legs (``max_connections``)."""
    return config.max_pending + config.max_connections


def relay_share(config: RelayConfig, nofile: NofileLimit, explicit: frozenset[str]) -> int:
    """The descriptors ``p2psc mediator --relay`` sets aside for its relay: what explicit relay
    limits need, else at most half of those available (the relay's defaults are ceilings)."""
    half = min(relay_descriptors(RelayConfig()), nofile.available // 2)
    named: int = sum(getattr(config, name) for name in RELAY_LIMITS if name in explicit)
    missing = sum(1 for name in RELAY_LIMITS if name not in explicit)
    return max(half, named + missing)


def fit_relay_limits(
    config: RelayConfig,
    available: int,
    explicit: frozenset[str] = frozenset(),
    where: str = "",
    prefix: str = "",
) -> RelayConfig:
    """``config`` with the descriptor limits not named in ``explicit`` derived from the
    ``available`` descriptors: ``max_connections`` = min(default, four fifths), ``max_pending``
    = min(default, the rest); ``max_per_address`` and ``max_per_key`` no larger than
    ``max_connections``. Raises :class:`LimitsDoNotFit` when the two need more than that
    (naming the flags ``--{prefix}max-connections`` and ``--{prefix}max-pending``)."""
    defaults = RelayConfig()
    where = where or f"{available} descriptors are available"
    if available < 2:
        raise LimitsDoNotFit(f"no descriptors left for relay connections: {where}")
    connections = (
        config.max_connections
        if "max_connections" in explicit
        else min(defaults.max_connections, max(1, available * 4 // 5))
    )
    pending = (
        config.max_pending
        if "max_pending" in explicit
        else min(defaults.max_pending, max(1, available - connections))
    )
    if connections + pending > available:
        parts = " + ".join(
            f"--{prefix}{n.replace('_', '-')} {getattr(config, n)}"
            for n in RELAY_LIMITS
            if n in explicit
        )
        raise LimitsDoNotFit(
            f"{parts} (with the derived rest: {connections} + {pending} relay connections) "
            f"need {connections + pending} file descriptors but {where}; lower the limits "
            "or raise the limit (ulimit -n)"
        )
    return replace(
        config,
        max_connections=connections,
        max_pending=pending,
        max_per_address=min(config.max_per_address, connections),
        max_per_key=min(config.max_per_key, connections),
    )
