"""Raw-socket proof of the topology: TCP simultaneous open through two masquerade routers.

No p2psc code: two hosts behind two port-preserving masquerade routers each bind the port the
other expects and connect to the other's public address. This is the mechanism p2psc's hole punch
relies on (DESIGN.md section 7), checked against the kernel before p2psc is involved.

What the kernel does (and these tests pin down):
- routers that DROP unsolicited SYNs: the first SYN to arrive dies at the far router, but it
  opened a mapping in its own router; the other side's SYN then matches that mapping and meets a
  socket in SYN-SENT: one connection, even when the two sides start half a second apart (the
  dropped SYN is simply retransmitted or overtaken).
- routers that answer with RST (Linux's default): the early SYN is refused, which also closes
  its router's mapping, so the later SYN is refused too; retrying does not help unless both
  SYNs cross in flight, i.e. start within about one one-way latency (microseconds here).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from nat.helpers import finish, needs_netns, start_in_order
from nat.topology import Host, Inbound, Topology

pytestmark = [pytest.mark.netns, needs_netns]


def _simopen(
    topo: Topology, inbound: Inbound, *, stagger: float, deadline: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run one simultaneous open between hosts a and b; b starts ``stagger`` s after a."""
    ra = topo.add_router("ra", inbound=inbound)
    rb = topo.add_router("rb", inbound=inbound)
    a = topo.add_host("a", ra)
    b = topo.add_host("b", rb)
    port_a, port_b = 42001, 43001
    common = ["--deadline", str(deadline), "--backoff", "0.05", "--gate"]

    def side(host: Host, port: int, to: str, name: str) -> list[str]:
        args = ["simopen", "--bind-port", str(port), "--to", to, "--name", name]
        return host.peer_script([*args, *common])

    pa, pb = start_in_order(
        (a, side(a, port_a, f"{rb.wan_addr}:{port_b}", "A")),
        (b, side(b, port_b, f"{ra.wan_addr}:{port_a}", "B")),
        stagger=stagger,
    )
    return finish(pa, deadline + 15), finish(pb, deadline + 15)


@pytest.mark.parametrize("stagger", [0.0, 0.005, 0.5])
def test_drop_routers_give_one_connection(topo: Topology, stagger: float) -> None:
    a, b = _simopen(topo, "drop", stagger=stagger, deadline=4.0)
    assert a["ok"] and b["ok"], (a, b, topo.describe())
    assert (a["other"], b["other"]) == ("B", "A")  # data went both ways on one connection
    # one attempt each: the dropped SYN was retransmitted or overtaken, never refused
    assert a["attempts"] == ["connected"] and b["attempts"] == ["connected"], (a, b)


def test_rst_routers_refuse_again_and_again(topo: Topology) -> None:
    """Staggered by 20 ms (as mediator signalling staggers the two sides) with RST routers:
    every attempt of both sides is refused, and both give up at their deadline, not later."""
    deadline = 1.5
    started = time.monotonic()
    a, b = _simopen(topo, "rst", stagger=0.02, deadline=deadline)
    took = time.monotonic() - started
    assert not a["ok"] and not b["ok"], (a, b)
    for side in (a, b):
        assert len(side["attempts"]) >= 5, side  # retried, bounded ...
        assert set(side["attempts"]) == {"ECONNREFUSED"}, side  # ... and refused every time
    assert took < deadline + 5.0


@pytest.mark.parametrize("client_listens", [False, True])
def test_public_client_behind_no_nat_needs_a_listener_for_an_rst_nat_peer(
    topo: Topology, client_listens: bool
) -> None:
    """Peer behind an RST router, Client public (the "Peer behind NAT" case of a Linux-default
    router). The Peer's SYN reaches the Client first (it learns the Client's address first);
    with nothing listening the Client's host answers RST, which also closes the Peer's mapping,
    so the Client's own SYN is then refused by the Peer's router: no connection, ever. When the
    Client also listens on its port, the Peer's (retried) SYN simply lands on that listener."""
    rb = topo.add_router("rb", inbound="rst")
    a = topo.add_public_host("a")
    b = topo.add_host("b", rb)
    port_a, port_b = 42001, 43001
    common = ["--deadline", "1.5", "--backoff", "0.05", "--gate"]
    listen = ["--listen"] if client_listens else []
    # the Peer (b) learns the Client's address first: it starts 20 ms before the Client (a)
    pb, pa = start_in_order(
        (
            b,
            b.peer_script(
                [
                    "simopen",
                    "--bind-port",
                    str(port_b),
                    "--to",
                    f"{a.addr}:{port_a}",
                    "--name",
                    "B",
                    *common,
                ]
            ),
        ),
        (
            a,
            a.peer_script(
                [
                    "simopen",
                    "--bind-port",
                    str(port_a),
                    "--to",
                    f"{rb.wan_addr}:{port_b}",
                    "--name",
                    "A",
                    *listen,
                    *common,
                ]
            ),
        ),
        stagger=0.02,
    )
    client, peer = finish(pa, 20), finish(pb, 20)
    if client_listens:
        assert client["ok"] and peer["ok"], (client, peer)
        assert (client["other"], peer["other"]) == ("B", "A")
    else:
        assert not client["ok"] and not peer["ok"], (client, peer)
        assert set(client["attempts"]) == {"ECONNREFUSED"}, client
        assert set(peer["attempts"]) == {"ECONNREFUSED"}, peer
