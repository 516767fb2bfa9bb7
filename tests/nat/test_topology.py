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


STRAY_SYN_ACK = """
import socket, struct, sys, time
src, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])

def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

def segment(flags: int) -> bytes:
    head = struct.pack("!HHIIBBHHH", 40123, port, 1000, 2000, 5 << 4, flags, 64240, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(head))
    return head[:16] + struct.pack("!H", checksum(pseudo + head)) + head[18:]

raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
raw.settimeout(0.2)
raw.sendto(segment(0x12), (dst, 0))  # SYN+ACK: no connection starts with it (conntrack: invalid)
end, answer = time.monotonic() + 1.5, "none"
while time.monotonic() < end:
    try:
        packet, (sender, _) = raw.recvfrom(65535)
    except TimeoutError:
        continue
    tcp = packet[(packet[0] & 0x0F) * 4 :]
    if sender == dst and struct.unpack("!H", tcp[:2])[0] == port and tcp[13] & 0x04:
        answer = "rst"
        break
print(answer)
"""


def test_a_dropping_router_answers_no_invalid_segment(topo: Topology) -> None:
    """A segment conntrack calls invalid (here a SYN-ACK of no connection) is not translated,
    so it reaches the router's own stack: a ``drop`` router drops it (as a home router does),
    an ``rst`` router answers RST. Before, the ``drop`` router answered RST too, and a
    retransmitted SYN of a simultaneous open (also invalid) got a RST that failed the
    partner's every new attempt (the loss-3 pairing failed so)."""
    drop = topo.add_router("rd", inbound="drop")
    rst = topo.add_router("rs", inbound="rst")
    public = topo.add_public_host("p")
    for router, expected in ((rst, "rst"), (drop, "none")):
        argv = ["python3", "-c", STRAY_SYN_ACK, public.addr, router.wan_addr, "41000"]
        assert public.run(argv, timeout=30).strip() == expected, (router.role, expected)


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
