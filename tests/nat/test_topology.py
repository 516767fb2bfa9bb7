"""The topology itself behaves like the NATs it claims to be (before any p2psc code is involved).

Each test checks one property the NAT traversal tests rely on: masquerade rewrites the source
address and keeps the port (or randomises it with random-fully), the two inbound policies (DROP
vs RST) really differ, nothing has a route out of the namespaces, and teardown leaves nothing.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from nat.helpers import finish, needs_netns
from nat.topology import MEDIATOR_ADDR, Host, Topology, list_namespaces, run

pytestmark = [pytest.mark.netns, needs_netns]

OBSERVE_PORT = 7000


def _observer(topo: Topology) -> subprocess.Popen[str]:
    proc = topo.public.popen(
        topo.public.peer_script(["observe", str(OBSERVE_PORT), "--deadline", "20"])
    )
    assert proc.stdout is not None
    assert "listening" in proc.stdout.readline()
    return proc


def _dial(host: Host, to: str, bind_port: int = 0, deadline: float = 2.0) -> dict[str, object]:
    proc = host.popen(
        host.peer_script(
            ["dial", "--bind-port", str(bind_port), "--to", to, "--deadline", str(deadline)]
        )
    )
    return finish(proc, deadline + 10)


def test_masquerade_preserves_port_and_random_fully_does_not(topo: Topology) -> None:
    preserve = topo.add_router("rp")
    randomised = topo.add_router("rr", masquerade="random-fully")
    a = topo.add_host("a", preserve)
    b = topo.add_host("b", randomised)
    public = topo.add_public_host("p")
    observer = _observer(topo)
    try:
        seen_a = _dial(a, f"{MEDIATOR_ADDR}:{OBSERVE_PORT}", bind_port=41000)
        seen_p = _dial(public, f"{MEDIATOR_ADDR}:{OBSERVE_PORT}", bind_port=41000)
        seen_b = [
            _dial(b, f"{MEDIATOR_ADDR}:{OBSERVE_PORT}", bind_port=41000 + i) for i in range(3)
        ]
    finally:
        observer.kill()
        observer.communicate(timeout=5)
    assert seen_a["answer"] == f"{preserve.wan_addr}:41000", seen_a
    assert seen_p["answer"] == f"{public.addr}:41000", seen_p
    ports = []
    for seen in seen_b:
        host, _, port = str(seen["answer"]).rpartition(":")
        assert host == randomised.wan_addr, seen
        ports.append(int(port))
    # random-fully keeping all three bound ports would be a ~1 in 10^14 coincidence
    assert ports != [41000, 41001, 41002], seen_b


def test_unsolicited_syn_dropped_or_refused(topo: Topology) -> None:
    drop = topo.add_router("rd", inbound="drop")
    rst = topo.add_router("rs", inbound="rst")
    public = topo.add_public_host("p")
    started = time.monotonic()
    to_rst = _dial(public, f"{rst.wan_addr}:41000", deadline=2.0)
    rst_time = time.monotonic() - started
    to_drop = _dial(public, f"{drop.wan_addr}:41000", deadline=1.0)
    assert to_rst["error"] == "ConnectionRefusedError", to_rst
    assert to_drop["error"] == "TimeoutError", to_drop
    assert rst_time < 2.0  # refused at once, not after the dial deadline


def test_no_route_leaves_the_namespaces(topo: Topology) -> None:
    router = topo.add_router("r")
    topo.add_host("a", router)
    topo.add_public_host("p")
    for netns in topo.namespaces:
        routes = run(["ip", "-n", netns, "route", "show"])
        assert "default" not in routes, (netns, routes)
        for line in routes.splitlines():
            assert line.split()[0] in ("198.18.1.0/24", "203.0.113.0/24"), (netns, line)


def test_teardown_removes_every_namespace() -> None:
    with Topology() as topo:
        router = topo.add_router("r")
        host = topo.add_host("a", router)
        sleeper = host.popen(["sleep", "30"])
        names = list(topo.namespaces)
        assert set(names) <= set(list_namespaces())
    assert not set(names) & set(list_namespaces())
    assert sleeper.wait(timeout=5) != 0  # killed by the teardown, not left running


def test_teardown_runs_when_the_body_fails() -> None:
    names: list[str] = []
    with pytest.raises(RuntimeError, match="boom"), Topology() as topo:
        topo.add_router("r")
        names.extend(topo.namespaces)
        raise RuntimeError("boom")
    assert names
    assert not set(names) & set(list_namespaces())
