"""Pairings across added latency, loss and IPv6 (issue 13; the README's NAT table rows).

- ``delay-150``: both routers drop unsolicited SYNs; the Client router's WAN wire adds 150 ms
  each way (tests/nat/delay_bridge.py: this kernel has no netem), so the peers are 300 ms of
  round trip apart and the Client 300 ms from the Mediator.
- ``loss-3``: both routers drop unsolicited SYNs; each router's WAN wire loses 3 % of the frames
  each way (seeded).
- ``ipv6``: both hosts IPv6-only behind stateful firewalls (``ct state established,related
  accept``, everything else from the WAN dropped; no NAT), the Mediator reached over IPv6.

Each pairs ``RUNS`` times in one topology and asserts a direct connection with the roles as
meant, data both ways. Bounded (``DEADLINE`` per side) and torn down also on failure. The median
times of the README come from ``tests/bench/bench_nat.py --only delay-150 loss-3 ipv6``.
"""

from __future__ import annotations

import pytest

from nat.helpers import mediator_of, needs_netns, pair, start_mediator, stop, wait_for_log
from nat.topology import Scenario, build_scenario, missing_requirements, scenario_topology

pytestmark = [pytest.mark.netns, needs_netns]

RUNS = 2
DEADLINE = 12.0

LISTEN = """
import socket, time
srv = socket.create_server(("::", 9300), family=socket.AF_INET6)
print("listening", flush=True)
time.sleep(10)
"""

PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.0).close()
    print("connected")
except TimeoutError:
    print("timeout")
except OSError as exc:
    print(type(exc).__name__)
"""


@pytest.mark.parametrize("name", ["delay-150", "loss-3", "ipv6"])
def test_pairs_directly(name: Scenario) -> None:
    if missing_requirements() is not None:
        pytest.skip(missing_requirements() or "")
    extra = ["--punch-timeout", "5", "--relay", "never"]
    with scenario_topology(name) as topo:
        a, b = build_scenario(topo, name)
        mediator = start_mediator(topo)
        try:
            for _ in range(RUNS):
                result = pair(
                    a,
                    b,
                    deadline=DEADLINE,
                    extra=extra,
                    mediator=mediator_of(topo),
                    # the Peer starts once the Mediator logged the Client's registration: a lost
                    # segment costs the Client a retransmission (1 s for a SYN), longer than
                    # any fixed stagger, and the roles would swap
                    between=lambda: wait_for_log(mediator, "registered", DEADLINE),
                )
                client, peer = result.client, result.peer
                context = (client, peer, topo.describe())
                assert client["ok"] and peer["ok"], context
                assert (client["role"], peer["role"]) == ("client", "peer"), context
                assert (client["path"], peer["path"]) == ("direct", "direct"), context
                assert (client["other"], peer["other"]) == ("peer-side", "client-side"), context
                if name == "ipv6":  # over IPv6 end to end, no NAT: each sees the other's own
                    assert client["remote"].rpartition(":")[0] == b.addr, context
                    assert peer["remote"].rpartition(":")[0] == a.addr, context
        finally:
            stop(mediator)
        if name == "ipv6":  # the firewall is real: a new connection from outside is dropped
            server = b.popen(b.python(["-c", LISTEN]))
            try:
                assert server.stdout is not None
                assert "listening" in server.stdout.readline()
                probe = topo.public.run(["python3", "-c", PROBE, b.addr, "9300"]).strip()
                inside = a.run(["python3", "-c", PROBE, b.addr, "9300"]).strip()
            finally:
                stop(server)
            assert probe == "timeout", (probe, topo.describe())
            assert inside == "timeout", (inside, topo.describe())  # from a's LAN: b's drops it
