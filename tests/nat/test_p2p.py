"""Real p2psc peers paired by a real mediator across real (nftables) NATs (issue 7).

Every test builds its own topology (tests/nat/topology.py), runs ``p2psc mediator`` in the
public namespace and two ``p2psc.aio.connect`` callers (tests/nat/netns_peer.py) in host
namespaces; ``a`` registers first (the Client), ``b`` 0.3 s later (the Peer). On success both
sides exchange a line over the returned connection, so data went both ways on one socket.

What is deterministic here and what is not:
- port-preserving NATs that DROP unsolicited SYNs, one NAT, no NAT, the same NAT: a direct
  connection always forms (asserted).
- the Peer behind a NAT that answers unsolicited SYNs with RST, the Client public: the Peer's
  first SYNs reach the Client before it knows the Peer; they land on the Client's listener
  (or are refused and retried until it listens), so a connection always forms (asserted).
  Without the Client's listener it never did (test_simopen.py shows why).
- port-preserving NATs that answer unsolicited SYNs with RST: the Peer's early SYN is refused by
  the Client's router, which also closes the Peer's mapping, so the Client's SYN is refused in
  turn; a direct connection forms only when two attempts happen to cross in flight, i.e.
  sometimes (see test_simopen.py and the README table). With the relay (issue 14, ``mediator
  --relay`` and the peers' default ``relay="auto"``) both sides always connect: directly when
  the attempts crossed, else relayed, on the same path (asserted).
- ``random-fully`` on one side: the observed port is useless, no direct connection can form;
  both sides connect through the relay (asserted); with ``relay="never"`` both fail with
  PeerUnreachable within the deadline (asserted).
- the relay killed in the middle of a stream, and a relay limit reached: a typed error on both
  sides, soon after (asserted).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from nat.helpers import (
    MEDIATOR_PORT,
    Pairing,
    finish,
    needs_netns,
    p2psc_argv,
    pair,
    start_in_order,
    start_mediator,
    stop,
    wait_for_log,
)
from nat.topology import MEDIATOR_ADDR, Host, Scenario, Topology, build_scenario, run
from p2psc.keys import Keypair

pytestmark = [pytest.mark.netns, needs_netns]

DEADLINE = 8.0
KILL_DEADLINE = 30.0
REACTION = 4.0
PUNCH = ["--punch-timeout", "3"]


@pytest.fixture
def mediator(topo: Topology) -> Iterator[subprocess.Popen[str]]:
    proc = start_mediator(topo, relay=[])
    try:
        yield proc
    finally:
        stop(proc)


def _clean(side: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in side.items() if k != "stderr" or v}


def _assert_paired(result: Pairing, a: Host, b: Host, topo: Topology) -> None:
    client, peer = result.client, result.peer
    context = (_clean(client), _clean(peer), topo.describe())
    assert client["ok"] and peer["ok"], context
    assert (client["role"], peer["role"]) == ("client", "peer"), context
    # data went both ways over the one connection each side got
    assert (client["other"], peer["other"]) == ("peer-side", "client-side"), context
    # and it is the same TCP connection seen from both ends (modulo NAT rewriting)
    assert client["local"].split(":")[0] == a.addr, context
    assert peer["local"].split(":")[0] == b.addr, context
    assert client["remote"].split(":")[0] in (b.addr, b.public_addr), context
    assert peer["remote"].split(":")[0] in (a.addr, a.public_addr), context
    assert client["path"] == peer["path"] == "direct", context


def _assert_relayed(result: Pairing, topo: Topology) -> None:
    client, peer = result.client, result.peer
    context = (_clean(client), _clean(peer), topo.describe())
    assert client["ok"] and peer["ok"], context
    assert (client["role"], peer["role"]) == ("client", "peer"), context
    assert (client["other"], peer["other"]) == ("peer-side", "client-side"), context
    assert client["path"] == peer["path"] == "relayed", context
    # both connections end at the relay (the Mediator's address, mediator --relay)
    assert client["remote"] == peer["remote"] == f"{MEDIATOR_ADDR}:{MEDIATOR_PORT}", context


@pytest.mark.parametrize(
    "scenario", ["no-nat", "client-nat", "peer-nat", "peer-nat-rst", "both-nat-drop", "same-nat"]
)
def test_direct_connection_forms(
    topo: Topology, mediator: subprocess.Popen[str], scenario: Scenario
) -> None:
    a, b = build_scenario(topo, scenario)
    result = pair(a, b, deadline=DEADLINE, extra=PUNCH)
    _assert_paired(result, a, b, topo)
    if scenario == "same-nat":
        # no hairpin NAT on the router: the connection runs between the LAN addresses that
        # each side advertised as its local address
        assert result.client["remote"].split(":")[0] == b.addr
    if scenario == "both-nat-drop":
        # through both NATs: each side sees the other's router, with the port preserved
        assert result.client["remote"].split(":")[0] == b.public_addr
        assert result.client["remote"].split(":")[1] == result.peer["local"].split(":")[1]


def test_same_nat_without_local_address_has_no_hairpin(
    topo: Topology, mediator: subprocess.Popen[str]
) -> None:
    """Proof that same-NAT pairing rests on the advertised local address: without it, the only
    target is the shared public address, and a Linux masquerade router does not hairpin."""
    a, b = build_scenario(topo, "same-nat")
    extra = [*PUNCH, "--no-local", "--relay", "never"]
    result = pair(a, b, deadline=DEADLINE, extra=extra)
    for side in (result.client, result.peer):
        assert side["error"] == "PeerUnreachable", _clean(side)
        assert side["elapsed"] < DEADLINE + 1.0, side


def test_rst_routers_connect_direct_or_relayed(
    topo: Topology, mediator: subprocess.Popen[str]
) -> None:
    """Both NATs answer with RST: direct only if two attempts crossed, else through the relay;
    either way both sides connect, on the same path."""
    a, b = build_scenario(topo, "both-nat-rst")
    result = pair(a, b, deadline=DEADLINE, extra=PUNCH)
    if result.client.get("path") == "direct":
        _assert_paired(result, a, b, topo)
    else:
        _assert_relayed(result, topo)


def test_random_fully_connects_through_the_relay(
    topo: Topology, mediator: subprocess.Popen[str]
) -> None:
    a, b = build_scenario(topo, "random-fully")
    result = pair(a, b, deadline=DEADLINE, extra=PUNCH)
    _assert_relayed(result, topo)
    for side in (result.client, result.peer):
        assert side["elapsed"] >= 3.0, _clean(side)  # only after the punch deadline


def test_random_fully_without_relay_fails_within_deadline(
    topo: Topology, mediator: subprocess.Popen[str]
) -> None:
    a, b = build_scenario(topo, "random-fully")
    started = time.monotonic()
    result = pair(a, b, deadline=DEADLINE, extra=[*PUNCH, "--relay", "never"])
    took = time.monotonic() - started
    for side in (result.client, result.peer):
        assert side["error"] == "PeerUnreachable", _clean(side)
        assert side["reason"], side  # a human reason, not just a class name
        assert side["elapsed"] < DEADLINE + 1.0, side
    assert took < DEADLINE + 10.0  # both processes were done well inside the harness bound


def _streaming_pair(
    topo: Topology, a: Host, b: Host, stream: float
) -> tuple[subprocess.Popen[str], subprocess.Popen[str]]:
    ka, kb = Keypair.generate(), Keypair.generate()
    extra = [*PUNCH, "--relay", "only", "--stream", str(stream)]
    return start_in_order(
        (a, p2psc_argv(a, ka, kb, "client-side", None, DEADLINE, extra)),
        (b, p2psc_argv(b, kb, ka, "peer-side", None, DEADLINE, extra)),
        stagger=0.3,
    )


def test_relay_killed_mid_stream_is_a_typed_error_on_both_sides(topo: Topology) -> None:
    """Both peers stream through the relay; the relay (mediator --relay) is killed: both
    readers raise TruncatedStream (no authenticated close came) within REACTION seconds."""
    a, b = build_scenario(topo, "random-fully")
    med = start_mediator(topo, relay=[])
    procs: list[subprocess.Popen[str]] = []
    try:
        pa, pb = _streaming_pair(topo, a, b, stream=20.0)
        procs += [pa, pb]
        assert wait_for_log(med, "relay_spliced", 20.0) is not None, "never spliced"
        time.sleep(1.5)  # the line exchange is done and both sides stream by now
        killed = time.time()
        os.kill(med.pid, signal.SIGKILL)
        client, peer = finish(pa, DEADLINE + 30), finish(pb, DEADLINE + 30)
    finally:
        for proc in procs:
            stop(proc)
        stop(med)
    for side in (client, peer):
        assert side["ok"] and side["path"] == "relayed", _clean(side)
        assert side["received"] > 0, _clean(side)  # it was streaming
        assert side["stream_error"] == "TruncatedStream", _clean(side)
        assert side["stream_error_at"] - killed < REACTION, _clean(side)


def test_relay_limit_is_a_typed_error_on_both_sides(topo: Topology) -> None:
    """A relay whose circuits may carry 1 MiB: streaming peers both get RelayLimitReached."""
    a, b = build_scenario(topo, "random-fully")
    med = start_mediator(topo, relay=["--relay-max-bytes", "1"])
    try:
        pa, pb = _streaming_pair(topo, a, b, stream=20.0)
        client, peer = finish(pa, DEADLINE + 30), finish(pb, DEADLINE + 30)
    finally:
        stop(med)
    for side in (client, peer):
        assert side["ok"] and side["path"] == "relayed", _clean(side)
        assert side["stream_error"] == "RelayLimitReached", _clean(side)
        assert "RELAY_LIMIT" in side["stream_reason"], _clean(side)
        assert side["received"] <= 1 << 20, _clean(side)


def _established_count(topo: Topology) -> int:
    out = run(
        topo.public.argv(["ss", "-tnH", "state", "established", f"( sport = :{MEDIATOR_PORT} )"])
    )
    return len(out.splitlines())


def test_mediator_killed_mid_coordination(topo: Topology) -> None:
    """The Client is registered and waiting, the Peer has connected and sent Advertise; the
    mediator is frozen (SIGSTOP) so it cannot answer, then killed. Both sides must report a
    typed mediator error quickly, far inside their deadline. The deadline is long here
    (``KILL_DEADLINE``) so that a slow start of the Peer on a loaded machine cannot expire the
    waiting Client before the kill; the reaction must still come within ``REACTION`` seconds."""
    ra = topo.add_router("ra")
    a = topo.add_host("a", ra)
    b = topo.add_public_host("b")
    med = start_mediator(topo)
    procs: list[subprocess.Popen[str]] = []
    try:
        ka, kb = Keypair.generate(), Keypair.generate()
        pa = a.popen(p2psc_argv(a, ka, kb, "client-side", 0.0, KILL_DEADLINE, PUNCH))
        procs.append(pa)
        assert wait_for_log(med, "registered", 15.0) is not None, "the Client never registered"
        os.kill(med.pid, signal.SIGSTOP)  # the `ip netns exec` wrapper exec()s: pid is ours
        pb = b.popen(p2psc_argv(b, kb, ka, "peer-side", 0.0, KILL_DEADLINE, PUNCH))
        procs.append(pb)
        end = time.monotonic() + 15.0
        while _established_count(topo) < 2 and time.monotonic() < end:
            time.sleep(0.05)
        assert _established_count(topo) >= 2, "the Peer never reached the frozen mediator"
        time.sleep(0.2)  # let the Peer's Advertise arrive in the frozen mediator's socket
        killed = time.monotonic()
        os.kill(med.pid, signal.SIGKILL)
        client, peer = finish(pa, KILL_DEADLINE + 10), finish(pb, KILL_DEADLINE + 10)
        reacted = time.monotonic() - killed
    finally:
        for proc in procs:
            stop(proc)
        if med.poll() is None:
            os.kill(med.pid, signal.SIGCONT)
        stop(med)
    for side in (client, peer):
        assert side["error"] == "MediatorClosed", _clean(side)
    assert reacted < REACTION, (reacted, client, peer)
