"""Several candidates across real NATs (issue 13, spec/protocol.md "Candidates").

Both hosts sit behind routers that answer unsolicited SYNs with RST, the one topology where the
observed addresses almost never connect (README NAT table: 0 of 9). The two hosts also share a
direct link the Mediator never sees (``Topology.link_hosts``). Each advertises every usable
address of its own (``p2psc.interfaces.local_addresses``); the partner dials them after the
observed and local addresses, from the address the route to each leaves from, so the pairing
forms over the direct link. With ``--no-candidates`` it is the plain ``both-nat-rst`` case:
success only by luck, else ``PeerUnreachable`` within the deadline (asserted: never a hang or
another error). Bounded and torn down like every namespace test.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from nat.helpers import needs_netns, pair, start_mediator, stop
from nat.topology import Host, Topology

pytestmark = [pytest.mark.netns, needs_netns]

DEADLINE = 8.0
PUNCH = ["--punch-timeout", "3"]


@pytest.fixture
def mediator(topo: Topology) -> Iterator[subprocess.Popen[str]]:
    proc = start_mediator(topo)
    try:
        yield proc
    finally:
        stop(proc)


def _hosts(topo: Topology) -> tuple[Host, Host, tuple[str, str]]:
    ra, rb = topo.add_router("ra", inbound="rst"), topo.add_router("rb", inbound="rst")
    a, b = topo.add_host("a", ra), topo.add_host("b", rb)
    return a, b, topo.link_hosts(a, b)


def test_a_candidate_on_a_link_the_mediator_never_saw_connects(
    topo: Topology, mediator: subprocess.Popen[str]
) -> None:
    a, b, (link_a, link_b) = _hosts(topo)
    result = pair(a, b, deadline=DEADLINE, extra=PUNCH)
    client, peer = result.client, result.peer
    context = (client, peer, topo.describe())
    assert client["ok"] and peer["ok"], context
    assert (client["other"], peer["other"]) == ("peer-side", "client-side"), context
    # over the direct link: each side's end of the one connection is its link address
    assert client["local"].split(":")[0] == link_a, context
    assert client["remote"].split(":")[0] == link_b, context


def test_without_candidates_the_rst_routers_connect_only_by_luck(
    topo: Topology, mediator: subprocess.Popen[str]
) -> None:
    a, b, _ = _hosts(topo)
    result = pair(a, b, deadline=DEADLINE, extra=[*PUNCH, "--no-candidates", "--relay", "never"])
    client, peer = result.client, result.peer
    if client.get("ok") and peer.get("ok"):
        assert client["remote"].split(":")[0] != "198.19.250.2"  # not over the link
    else:
        for side in (client, peer):
            assert side["error"] == "PeerUnreachable", (client, peer)
