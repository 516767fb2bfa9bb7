"""The round-trip budget of a pairing, checked on the real cores in virtual time (issue 13).

Budget (README, spec/protocol.md "Round trips"): establishing takes at most **4 peer round
trips plus the Mediator round trips of the later peer**. Counted here, with R_AB the round trip
between the peers and R_A, R_B each peer's round trip to the Mediator (B = the Peer, the later
one), from the Peer's ``connect()`` until both sides hold the authenticated connection:

- the later peer's 3 Mediator round trips (TCP open, Advertise/AdvertiseChallenge,
  AdvertiseResponse/PeerDisconnect) and the introduction, the Mediator relaying the Peer's
  confirmation to the Client (½ R_B + ½ R_A);
- then 2.5 peer round trips: the TCP open to the listening Peer (1), HandshakeInit /
  HandshakeResponse (1), the key confirmation reaching the Peer (½).

So T = 3 R_B + ½ (R_B + R_A) + 2.5 R_AB exactly (no processing time in the simulation), which
is within 4 R_AB + 3 R_B + ½ (R_B + R_A); when R_A <= R_B + R_AB (any path through the Peer is
a path) that is at most 4 R_AB + 4 R_B. tests/latency_sim.py runs the real MediatorCore and two
PeerCores through the adapters' PeerDriver, with fixed one-way latencies and no wall clock.
"""

from __future__ import annotations

import math

import pytest
from latency_sim import Result, established, pairing

GEOMETRIES = [
    # (R_A: Client-Mediator, R_B: Peer-Mediator, R_AB: between the peers), seconds
    (0.1, 0.1, 0.1),
    (0.3, 0.02, 0.3),  # Client far from both
    (0.02, 0.3, 0.3),  # Peer far from both
    (0.3, 0.3, 0.04),  # peers near each other, both far from the Mediator
    (0.3, 0.28, 0.04),  # the Client far from the Mediator, near the Peer
    (0.05, 0.2, 0.16),  # issue 13's 160 ms between the peers
]
NATS = [frozenset(), frozenset({"peer"}), frozenset({"client", "peer"})]


def _check(result: Result, r_a: float, r_b: float, r_ab: float) -> float:
    assert established(result), result
    t = result.established
    intro = 3 * r_b + (r_b + r_a) / 2
    peer_round_trips = (t - intro) / r_ab
    assert t <= 4 * r_ab + intro + 1e-9, (t, peer_round_trips, result)
    if r_a <= r_b + r_ab:
        assert t <= 4 * r_ab + 4 * r_b + 1e-9, (t, result)
    return peer_round_trips


@pytest.mark.parametrize("nat", NATS, ids=["public", "peer-nat", "both-nat"])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=[str(g) for g in GEOMETRIES])
@pytest.mark.parametrize("timed", [True, False], ids=["timed", "at-once"])
def test_establishing_is_within_the_round_trip_budget(
    geometry: tuple[float, float, float], nat: frozenset[str], timed: bool
) -> None:
    r_a, r_b, r_ab = geometry
    result = pairing(r_a, r_b, r_ab, nat_drop=nat, timed_dial=timed)
    peer_round_trips = _check(result, r_a, r_b, r_ab)
    # the count the README states: 2.5 peer round trips after the introduction
    assert math.isclose(peer_round_trips, 2.5, abs_tol=1e-6), (peer_round_trips, result)


def test_the_check_can_fail() -> None:
    """The budget check has teeth: the same pairing with every latency tripled, judged against
    the original latencies, is over budget."""
    r_a, r_b, r_ab = 0.1, 0.1, 0.1
    assert _check(pairing(r_a, r_b, r_ab), r_a, r_b, r_ab) == pytest.approx(2.5)
    slow = pairing(r_a * 3, r_b * 3, r_ab * 3)
    with pytest.raises(AssertionError):
        _check(slow, r_a, r_b, r_ab)
