"""Liveness after the introduction, with real processes killed at each step (issue 13;
spec/mediator.md section 4.3).

A real ``p2psc mediator`` in the public namespace and two real peer processes
(``netns_peer.py p2psc``); one of them dies (``os._exit``: the kernel closes its sockets, as for
``kill -9``) at a step of the pairing, and the survivor's error and the time it took to learn
it (its failure minus the death, both wall-clock on this host) are reported. The tests print
that time and its ratio to the punch timeout; they assert only the error type and that it came
before the punch timeout, never a timing threshold beyond that.

Steps: the Peer right after PeerDisconnect (before it listens or confirms: its FIN used to look
like the confirmation), the Client right after PeerIdentification, and either side 1.5 s into a
punch that cannot succeed (both behind NATs that answer unsolicited SYNs with RST, 0/9 in the
README table). The uncoordinated reference (``--no-coordinate``) shows the old behaviour: the
survivor fails only at its punch timeout with PeerUnreachable.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from nat.helpers import (
    finish,
    needs_netns,
    p2psc_argv,
    start_in_order,
    start_mediator,
    stop,
)
from nat.topology import Host, Topology, build_scenario
from p2psc.keys import Keypair

pytestmark = [pytest.mark.netns, needs_netns]

PUNCH = 5.0
"""The peers' punch timeout (s): the bound the survivor must beat."""
DEADLINE = 15.0
BASE = ["--punch-timeout", str(PUNCH), "--relay", "never"]


@pytest.fixture
def mediator(topo: Topology) -> Iterator[subprocess.Popen[str]]:
    proc = start_mediator(topo)
    try:
        yield proc
    finally:
        stop(proc)


def run_pair(
    a: Host, b: Host, client_extra: Sequence[str], peer_extra: Sequence[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Client ``a`` registers first, Peer ``b`` 0.3 s later; each with its own options."""
    ka, kb = Keypair.generate(), Keypair.generate()
    pa, pb = start_in_order(
        (a, p2psc_argv(a, ka, kb, "client-side", None, DEADLINE, [*BASE, *client_extra])),
        (b, p2psc_argv(b, kb, ka, "peer-side", None, DEADLINE, [*BASE, *peer_extra])),
        stagger=0.3,
    )
    if "frozen" in client_extra:  # (killed once the other side finished)
        rb = finish(pb, DEADLINE + 20)
        pa.kill()
        return finish(pa, 10), rb
    if "frozen" in peer_extra:
        ra = finish(pa, DEADLINE + 20)
        pb.kill()
        return ra, finish(pb, 10)
    return finish(pa, DEADLINE + 20), finish(pb, DEADLINE + 20)


def detection(dead: dict[str, Any], survivor: dict[str, Any], label: str) -> float:
    """Seconds from the death to the survivor's failure; printed with the punch-timeout ratio."""
    assert dead.get("error") == "KILLED", (dead, survivor)
    assert "failed_at" in survivor, (dead, survivor)
    took = float(survivor["failed_at"]) - float(dead["died_at"])
    print(
        f"\n[liveness] {label}: survivor {survivor['error']} {took * 1000:.0f} ms after the "
        f"death = {took / PUNCH:.3f} of the {PUNCH:g} s punch timeout"
    )
    return took


def test_peer_killed_after_peer_disconnect_the_client_is_told_at_once(
    topo: Topology, mediator: subprocess.Popen[str]
) -> None:
    a, b = build_scenario(topo, "no-nat")
    client, peer = run_pair(a, b, [], ["--die-at", "disconnect"])
    took = detection(peer, client, "Peer killed after PeerDisconnect (coordinated)")
    # Not introduced to a dead Peer: AdvertiseAbort(PEER_GONE) instead of PeerIdentification.
    assert client["error"] == "AdvertiseAborted", (client, peer)
    assert "PEER_GONE" in client["reason"], (client, peer)
    assert took < PUNCH, (client, peer)


def test_uncoordinated_reference_the_fin_is_taken_for_the_confirmation(
    topo: Topology, mediator: subprocess.Popen[str]
) -> None:
    """The behaviour issue 13 measured (kept for peers or mediators without the capability)."""
    a, b = build_scenario(topo, "no-nat")
    off = ["--no-coordinate"]
    client, peer = run_pair(a, b, off, [*off, "--die-at", "disconnect"])
    took = detection(peer, client, "Peer killed after PeerDisconnect (uncoordinated)")
    assert client["error"] == "PeerUnreachable", (client, peer)
    assert took >= PUNCH * 0.5, (client, peer)  # it waited for (most of) its punch timeout


def test_client_killed_after_peer_identification_the_peer_is_told_at_once(
    topo: Topology, mediator: subprocess.Popen[str]
) -> None:
    a, b = build_scenario(topo, "no-nat")
    client, peer = run_pair(a, b, ["--die-at", "identification"], [])
    took = detection(client, peer, "Client killed after PeerIdentification")
    assert peer["error"] == "PartnerLost", (client, peer)
    assert "PARTNER_LOST" in peer["reason"], (client, peer)
    assert took < PUNCH, (client, peer)


@pytest.mark.parametrize("dies", ["client", "peer"])
def test_killed_while_punching_the_survivor_is_told_at_once(
    topo: Topology, mediator: subprocess.Popen[str], dies: str
) -> None:
    a, b = build_scenario(topo, "both-nat-rst")  # the punch cannot succeed here
    death = ["--die-at", "punching"]
    client, peer = run_pair(
        a, b, death if dies == "client" else [], death if dies == "peer" else []
    )
    dead, survivor = (client, peer) if dies == "client" else (peer, client)
    took = detection(dead, survivor, f"{dies.capitalize()} killed 1.5 s into the punch")
    assert survivor["error"] == "PartnerLost", (client, peer)
    assert took < PUNCH, (client, peer)


def test_a_silently_vanished_partner_is_reported_within_the_silence_bound(
    topo: Topology, mediator: subprocess.Popen[str]
) -> None:
    """The Client's process freezes 1.5 s into the punch (SIGSTOP: no FIN, no more Pings, as
    a host that vanished): the Mediator notices the silence (2 s after its last Ping, section
    4.3 rule 2) and tells the Peer."""
    a, b = build_scenario(topo, "both-nat-rst")
    client, peer = run_pair(a, b, ["--die-at", "frozen"], [])
    took = detection(client, peer, "Client frozen 1.5 s into the punch (silent)")
    assert peer["error"] == "PartnerLost", (client, peer)
    assert "went silent" in peer["reason"], (client, peer)
    assert took < PUNCH, (client, peer)
