"""The userspace delay/loss bridge of the namespace topology (tests/nat/delay_bridge.py).

What is checked, each without a timed upper bound (only lower bounds a working bridge cannot
beat, and counters):
- a TCP connect across a link with one-way delay D takes at least 2 D (SYN and SYN-ACK cross
  it); with ``match`` naming another address, no frame is subject to delay or loss (counted by
  the bridge, and loss 1.0 still delivers everything); address resolution is never delayed or
  lost (loss 1.0: a connect times out, never EHOSTUNREACH);
- loss is exactly what the seeded RNG decides: the bridge draws once per matched frame, so the
  number lost equals the draws below ``loss`` among the first ``matched`` draws of
  ``random.Random(seed)``, and the receiver gets every datagram that was not lost;
- the queue is bounded in frames and in bytes: a burst beyond either bound is dropped
  (``overflow``) and never delivered;
- the bridge stops by itself at its ``lifetime`` and on SIGTERM, and the topology reaps it.

Every wait is bounded; the ``topo`` fixture deletes the namespaces also on failure.
"""

from __future__ import annotations

import hashlib
import json
import random
import time

import pytest

from nat.helpers import needs_netns
from nat.topology import Host, Link, Topology

pytestmark = [pytest.mark.netns, needs_netns]

B_ADDR = "203.0.113.101"
"""The first public host's address (topology.py: 203.0.113.(100+k))."""

RECEIVER = """
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind(("0.0.0.0", 9100))
print(json.dumps({"listening": True}), flush=True)
s.settimeout(float(sys.argv[1]))
got = 0
end = time.monotonic() + 20
while time.monotonic() < end:
    try:
        s.recv(2048)
    except TimeoutError:
        break
    got += 1
print(json.dumps({"received": got}), flush=True)
"""

SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
n, size, gap = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
for i in range(n):
    s.sendto(b"x" * size, (sys.argv[1], 9100))
    time.sleep(gap)
"""

CONNECT = """
import socket, sys, time
t = time.monotonic()
socket.create_connection((sys.argv[1], 9000), timeout=10).close()
print(time.monotonic() - t)
"""


def _udp(a: Host, b: Host, count: int, size: int, gap: float, quiet: float) -> int:
    """Send ``count`` datagrams from ``a`` to ``b``; how many ``b`` received (bounded)."""
    receiver = b.popen(b.python(["-c", RECEIVER, str(quiet)]))
    try:
        assert receiver.stdout is not None
        assert "listening" in receiver.stdout.readline()
        a.run(["python3", "-c", SENDER, b.addr, str(count), str(size), str(gap)], timeout=60)
        out, _ = receiver.communicate(timeout=30)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.communicate(timeout=5)
    result: dict[str, int] = json.loads(out.strip().splitlines()[-1])
    return result["received"]


def test_one_way_delay_is_added_to_every_crossing(topo: Topology) -> None:
    delay = 0.2
    a = topo.add_public_host("a", link=Link(delay=delay))
    b = topo.add_public_host("b")
    server = b.popen(b.peer_script(["observe", "9000", "--deadline", "20"]))
    try:
        assert server.stdout is not None
        assert "listening" in server.stdout.readline()
        for _ in range(2):  # the first one also waits for ARP across the bridge
            took = float(a.run(["python3", "-c", CONNECT, b.addr]).strip())
            assert took >= 2 * delay, (took, topo.describe())
    finally:
        server.kill()
        server.communicate(timeout=5)
    stats = topo.stop_bridge("a")
    assert stats["reason"] == "signal" and stats["errors"] == 0, stats
    # no match list: every frame but address resolution is subject to the delay (some may
    # still be queued at the stop); ARP crossed at once, at least once each way
    assert stats["resolution"] >= 2, stats  # type: ignore[operator]
    crossed = stats["matched"] + stats["resolution"]  # type: ignore[operator]
    assert crossed == stats["forwarded"] + stats["queued"], stats  # type: ignore[operator]
    assert stats["matched"] > 0, stats  # type: ignore[operator]


PROBE = """
import errno, socket, sys
try:
    socket.create_connection((sys.argv[1], 9000), timeout=5.0).close()
    print("connected")
except TimeoutError:
    print("timeout")
except OSError as exc:
    print(errno.errorcode.get(exc.errno, str(exc)))
"""


def test_address_resolution_is_never_lost(topo: Topology) -> None:
    """Loss 1.0 on every frame: a connect times out (its SYNs are lost), but ARP still crosses,
    so the host never gets EHOSTUNREACH (3 lost ARP probes, about 3 s, inside the 5 s connect
    timeout: what a router whose WAN resolution failed answered in CI)."""
    a = topo.add_public_host("a", link=Link(loss=1.0))
    b = topo.add_public_host("b")
    assert a.run(["python3", "-c", PROBE, b.addr], timeout=30).strip() == "timeout"
    stats = topo.stop_bridge("a")
    assert stats["resolution"] >= 2 and stats["lost"] == stats["matched"] > 0, stats  # type: ignore[operator]


def test_match_limits_delay_and_loss_to_the_named_address(topo: Topology) -> None:
    a = topo.add_public_host("a", link=Link(delay=0.5, loss=1.0, match=("203.0.113.250",)))
    b = topo.add_public_host("b")
    assert _udp(a, b, 20, 100, 0.005, 1.0) == 20  # loss 1.0, yet nothing of theirs matched
    stats = topo.stop_bridge("a")
    assert stats["matched"] == 0 and stats["lost"] == 0, stats


@pytest.mark.parametrize("seed", [7, 8])
def test_loss_is_the_seeded_fraction(topo: Topology, seed: int) -> None:
    loss, count = 0.25, 400
    b = topo.add_public_host("b")
    a = topo.add_public_host("a", link=Link(loss=loss, seed=seed, match=(b.addr,)))
    received = _udp(a, b, count, 200, 0.001, 1.5)
    stats = topo.stop_bridge("a")
    rng = random.Random(seed)
    expected = sum(rng.random() < loss for _ in range(int(stats["matched"])))  # type: ignore[call-overload]
    assert stats["lost"] == expected, stats
    assert stats["matched"] == count, stats  # only our datagrams go to b's address one way
    assert received == count - expected, (received, stats)
    assert 0.15 * count < expected < 0.35 * count, stats  # 25 % of 400, as the RNG drew it


@pytest.mark.parametrize(
    "link",
    [
        Link(delay=3.0, max_frames=20, match=(B_ADDR,)),
        Link(delay=3.0, max_bytes=20 * 1100, match=(B_ADDR,)),
    ],
    ids=["frames", "bytes"],
)
def test_queue_is_bounded(topo: Topology, link: Link) -> None:
    b = topo.add_public_host("b")
    assert b.addr == B_ADDR
    a = topo.add_public_host("a", link=link)  # ARP not matched: resolved at once
    received = _udp(a, b, 200, 1000, 0.0, 4.0)
    stats = topo.stop_bridge("a")
    assert received <= 20, (received, stats)
    assert int(stats["overflow"]) >= 150, stats  # type: ignore[call-overload]


def test_bridge_stops_by_itself_at_its_lifetime(topo: Topology) -> None:
    topo.add_public_host("a", link=Link(lifetime=1.0))
    proc = topo.bridges["a"]
    end = time.monotonic() + 15
    while proc.poll() is None and time.monotonic() < end:
        time.sleep(0.1)
    assert proc.poll() == 0, "the bridge outlived its lifetime"
    stats = topo.stop_bridge("a")
    assert stats["reason"] == "lifetime", stats
    assert not topo.bridges


SINK = """
import hashlib, json, socket
srv = socket.create_server(("0.0.0.0", 9200))
print(json.dumps({"listening": True}), flush=True)
srv.settimeout(20)
conn, _ = srv.accept()
conn.settimeout(20)
digest, size = hashlib.sha256(), 0
while data := conn.recv(65536):
    digest.update(data)
    size += len(data)
print(json.dumps({"size": size, "sha256": digest.hexdigest()}), flush=True)
"""

SOURCE = """
import socket, sys
data = bytes(range(256)) * (int(sys.argv[2]) // 256)
with socket.create_connection((sys.argv[1], 9200), timeout=20) as s:
    s.sendall(data)
"""


def test_bulk_tcp_crosses_intact(topo: Topology) -> None:
    """Large segments (veth GSO) and offloaded checksums pass: the vnet header carries them."""
    size = 4 << 20
    a = topo.add_public_host("a", link=Link(delay=0.01))
    b = topo.add_public_host("b")
    sink = b.popen(b.python(["-c", SINK]))
    try:
        assert sink.stdout is not None
        assert "listening" in sink.stdout.readline()
        a.run(["python3", "-c", SOURCE, b.addr, str(size)], timeout=60)
        out, _ = sink.communicate(timeout=30)
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.communicate(timeout=5)
    got = json.loads(out.strip().splitlines()[-1])
    data = bytes(range(256)) * (size // 256)
    assert got == {"size": size, "sha256": hashlib.sha256(data).hexdigest()}
    stats = topo.stop_bridge("a")
    assert stats["errors"] == 0 and stats["overflow"] == 0, stats
