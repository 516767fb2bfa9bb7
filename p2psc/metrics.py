"""Prometheus metrics of a running mediator (``p2psc mediator --metrics-port PORT``).

Why prometheus-client (an optional extra, ``pip install p2psc[metrics]``): it is the
ecosystem's exposition library; it gets the text format, escaping and the HTTP endpoint right,
and it is only imported when metrics are asked for. Counters follow the core's notes
(:class:`p2psc.core.mediator.MediatorNote`, labelled by their bounded ``cause``, never by
anything a client chose); gauges are read from the server when scraped, so the event path pays
one counter increment per note and nothing else.

The endpoint listens on loopback by default: the counters tell an attacker how well a flood
works, so exposing them is the operator's explicit choice (``--metrics-host``).
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from p2psc.core.mediator import MediatorNote

if TYPE_CHECKING:
    from p2psc.aio.mediator import MediatorServer

__all__ = ["KINDS", "MediatorMetrics", "MetricsUnavailable"]

KINDS = frozenset(
    {"refused", "evicted", "rejected", "registered", "replaced", "paired", "introduced", "failed"}
)
"""Note kinds the metrics count (the core builds no other notes for them)."""


class MetricsUnavailable(RuntimeError):
    """prometheus-client is not installed."""


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


class MediatorMetrics:
    """A note observer that counts, plus a collector that reads the server's gauges."""

    kinds = KINDS

    def __init__(self) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter
        except ImportError:  # pragma: no cover (the extra is installed for tests)
            raise MetricsUnavailable(
                "metrics need prometheus-client: pip install 'p2psc[metrics]'"
            ) from None
        self.registry = CollectorRegistry()
        self._server: MediatorServer | None = None
        prefix = "p2psc_mediator"
        self._events: dict[str, Any] = {
            "registered": Counter(
                f"{prefix}_registrations",
                "Verified registrations that started waiting.",
                registry=self.registry,
            ),
            "paired": Counter(
                f"{prefix}_pairings",
                "Pairs formed (PeerDisconnect sent).",
                registry=self.registry,
            ),
            "introduced": Counter(
                f"{prefix}_introductions",
                "Clients sent PeerIdentification (pairing done).",
                registry=self.registry,
            ),
            "replaced": Counter(
                f"{prefix}_replaced",
                "Waiting registrations replaced by a newer duplicate.",
                registry=self.registry,
            ),
        }
        self._labelled: dict[str, Any] = {
            "failed": Counter(
                f"{prefix}_failures",
                "Sessions that failed, by cause.",
                ["cause"],
                registry=self.registry,
            ),
            "rejected": Counter(
                f"{prefix}_rejections",
                "Advertise/response refused, by failed check.",
                ["cause"],
                registry=self.registry,
            ),
            "evicted": Counter(
                f"{prefix}_evictions",
                "Unverified connections evicted for a newcomer, by limit.",
                ["cause"],
                registry=self.registry,
            ),
            "refused": Counter(
                f"{prefix}_refusals",
                "Connections refused at accept, by limit.",
                ["cause"],
                registry=self.registry,
            ),
        }
        self.registry.register(_Gauges(self))

    def __call__(self, note: MediatorNote) -> None:
        counter = self._events.get(note.kind)
        if counter is not None:
            counter.inc()
            return
        labelled = self._labelled.get(note.kind)
        if labelled is not None:
            labelled.labels(note.cause or "other").inc()

    def bind(self, server: MediatorServer) -> None:
        """Read gauges (waiting, unverified, connections, descriptors) from ``server``."""
        self._server = server

    def serve(self, port: int, host: str = "127.0.0.1") -> tuple[str, int]:
        """Serve ``/metrics`` over HTTP in a daemon thread; return the bound address."""
        from prometheus_client import start_http_server

        http, _ = start_http_server(port, addr=host, registry=self.registry)
        bound = http.server_address
        return str(bound[0]), int(bound[1])

    def text(self) -> str:
        """The exposition text, as a scrape would get it."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()


class _Gauges:
    """Values read at scrape time from the bound server (prometheus custom collector)."""

    def __init__(self, metrics: MediatorMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        server = self._metrics._server
        prefix = "p2psc_mediator"
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        yield GaugeMetricFamily(f"{prefix}_open_fds", "Open file descriptors.", _open_fds())
        yield GaugeMetricFamily(f"{prefix}_max_fds", "RLIMIT_NOFILE (soft).", soft)
        if server is None:
            return
        core = server.core
        config = core.config
        yield GaugeMetricFamily(
            f"{prefix}_waiting", "Verified registrations waiting for their partner.", core.waiting
        )
        yield GaugeMetricFamily(
            f"{prefix}_unverified",
            "Unverified connections (before AdvertiseResponse).",
            core.pending,
        )
        yield GaugeMetricFamily(
            f"{prefix}_connections", "Open connections, any state.", server.connections
        )
        limits = GaugeMetricFamily(f"{prefix}_limit", "Configured limits.", labels=["limit"])
        for name in ("max_pending", "max_pending_per_ip", "max_waiting", "max_waiting_per_ip"):
            limits.add_metric([name], getattr(config, name))
        if config.max_connections is not None:
            limits.add_metric(["max_connections"], config.max_connections)
        yield limits
        yield CounterMetricFamily(
            f"{prefix}_accept_errors",
            "accept() failures for lack of descriptors or memory (EMFILE, ENFILE...).",
            server.accept_errors,
        )
        del hard
