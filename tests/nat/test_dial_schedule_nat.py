"""The Mediator's dial schedule across real delays (issue 13; spec/mediator.md section 4.2).

Topology ``far-client`` (tests/nat/topology.py, delays by tests/nat/delay_bridge.py): the Client
is public, 150 ms one way from the Mediator (only that path is slow) and 50 ms from the Peer;
the Peer sits behind a NAT that drops unsolicited SYNs, 50 ms from both. So R_A = 300 ms,
R_B = 100 ms, and the Client hears PeerIdentification 50 + 150 = 200 ms after the Peer read
PeerDisconnect.

- With the Mediator's DIAL_DELAY ((300 + 100) / 2 = 200 ms) the Peer's first SYN leaves when the
  Client's does; they cross (simultaneous open): no attempt of the Peer fails.
- With the Peer's own estimate (its 100 ms round trip) its first SYN reaches the Client's host
  50 ms before the Client listens: refused (which also closes the Peer's NAT mapping), and the
  pair connects on a retry.

Attempts are counted from the driver every adapter shares (netns_peer.py ``dials``/``failed``),
not from wall time; the margins either way are 50 ms of bridge delay. Bounded (``DEADLINE``
per side) and torn down also on failure (the ``topo`` fixture).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from nat.helpers import needs_netns, pair, start_mediator, stop, wait_for_log
from nat.topology import Topology, build_scenario

pytestmark = [pytest.mark.netns, needs_netns]

RUNS = 2
DEADLINE = 10.0
PUNCH = ["--punch-timeout", "5", "--relay", "never"]


@pytest.fixture
def mediator(topo: Topology) -> Iterator[subprocess.Popen[str]]:
    proc = start_mediator(topo)
    try:
        yield proc
    finally:
        stop(proc)


def test_the_first_attempt_succeeds_with_the_schedule_and_not_without(
    topo: Topology, mediator: subprocess.Popen[str]
) -> None:
    a, b = build_scenario(topo, "far-client")
    for _ in range(RUNS):
        for mode in ("scheduled", "estimated"):
            extra = PUNCH + (["--ignore-dial-schedule"] if mode == "estimated" else [])
            result = pair(
                a,
                b,
                deadline=DEADLINE,
                extra=extra,
                # the Peer starts once the Mediator logged the Client's registration (3 round
                # trips of 300 ms), so the roles hold
                between=lambda: wait_for_log(mediator, "registered", DEADLINE),
            )
            client, peer = result.client, result.peer
            context = (mode, client, peer, topo.describe())
            assert client["ok"] and peer["ok"], context
            assert (client["role"], peer["role"]) == ("client", "peer"), context
            assert peer["dials"] >= 1, context
            if mode == "scheduled":
                assert peer["failed"] == 0, context  # the first attempt did it
            else:
                assert peer["failed"] >= 1, context  # refused: the Client did not listen yet
