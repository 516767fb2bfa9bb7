"""Keepalive across a NAT that forgets idle TCP quickly (issue 13, spec/mediator.md section 4.1).

The Client sits behind a router whose conntrack drops an *established* TCP entry after
``IDLE`` = 5 s without traffic (``nf_conntrack_tcp_timeout_established``; real routers and
carrier-grade NATs use minutes, Linux itself five days: 5 s makes the test short). The Peer
arrives ``LATE`` = 8 s after the Client. Without keepalive the Client's Mediator connection is
idle for 8 s, the router forgets its mapping, and the Mediator's PeerIdentification is dropped
at the router: no pairing forms (measured in issue 13: 0 of 10). With a Ping every 2 s the
mapping stays and the pairing forms as usual.

Both tests are bounded (``DEADLINE`` for each side, the harness waits at most 20 s more) and
tear their namespaces down also on failure (the ``topo`` fixture).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from nat.helpers import needs_netns, pair, start_mediator, stop
from nat.topology import Topology

pytestmark = [pytest.mark.netns, needs_netns]

IDLE = 5
"""Seconds the Client's router keeps an idle established TCP entry."""
LATE = 8.0
"""Seconds between the Client's and the Peer's start: longer than IDLE."""
DEADLINE = 16.0
PUNCH = ["--punch-timeout", "3"]


@pytest.fixture
def mediator(topo: Topology) -> Iterator[subprocess.Popen[str]]:
    proc = start_mediator(topo)
    try:
        yield proc
    finally:
        stop(proc)


def test_without_keepalive_the_router_forgets_the_waiting_client(
    topo: Topology, mediator: subprocess.Popen[str]
) -> None:
    ra = topo.add_router("ra", idle_timeout=IDLE)
    a, b = topo.add_host("a", ra), topo.add_public_host("b")
    extra = [*PUNCH, "--keepalive", "0", "--relay", "never"]  # the failure without a relay
    result = pair(a, b, deadline=DEADLINE, stagger=LATE, extra=extra)
    client, peer = result.client, result.peer
    context = (client, peer, topo.describe())
    assert not client["ok"] and not peer["ok"], context
    # The Client never heard of the Peer: PeerIdentification died at its router. Its error says
    # what it observed, and without keepalive it cannot claim the partner did not register.
    assert client["error"] == "HandshakeTimeout", context
    assert "keepalive off" in client["reason"], context
    assert "did not register" not in client["reason"], context
    # The Peer was introduced and punched towards a mapping the router had forgotten.
    assert peer["error"] == "PeerUnreachable", context


def test_keepalive_keeps_the_binding_and_the_pairing_forms(
    topo: Topology, mediator: subprocess.Popen[str]
) -> None:
    ra = topo.add_router("ra", idle_timeout=IDLE)
    a, b = topo.add_host("a", ra), topo.add_public_host("b")
    result = pair(a, b, deadline=DEADLINE, stagger=LATE, extra=[*PUNCH, "--keepalive", "2"])
    client, peer = result.client, result.peer
    context = (client, peer, topo.describe())
    assert client["ok"] and peer["ok"], context
    assert (client["role"], peer["role"]) == ("client", "peer"), context
    assert (client["other"], peer["other"]) == ("peer-side", "client-side"), context
