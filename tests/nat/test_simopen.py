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

from nat.helpers import finish, needs_netns
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
    start = time.time() + 0.5  # both processes are up by then
    common = ["--deadline", str(deadline), "--backoff", "0.05"]

    def side(host: Host, port: int, to: str, name: str, at: float) -> list[str]:
        args = ["simopen", "--bind-port", str(port), "--to", to, "--name", name]
        return host.peer_script([*args, "--start-at", str(at), *common])

    pa = a.popen(side(a, port_a, f"{rb.wan_addr}:{port_b}", "A", start))
    pb = b.popen(side(b, port_b, f"{ra.wan_addr}:{port_a}", "B", start + stagger))
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
