"""Admission of unverified connections (issue 21): eviction order, IPv6 prefixes, the
challenge budget, the connection cap and TLS-only operation, on the sans-IO core."""

from __future__ import annotations

import pytest
from mediator_helpers import Driver, abort_code, closed, messages, sym_answer, sym_key

from p2psc import wire
from p2psc.core.admission import Admission, origin_of
from p2psc.core.io import Opened
from p2psc.core.mediator import MediatorConfig

R = wire.Reason


def test_origin_counts_ipv6_per_prefix() -> None:
    assert (
        origin_of("2001:db8:1:2:aaaa::1")
        == origin_of("2001:db8:1:2:ffff::9")
        == ("2001:db8:1:2::/64")
    )
    assert origin_of("2001:db8:1:3::1") != origin_of("2001:db8:1:2::1")
    assert origin_of("2001:db8:1:2::1", ipv6_prefix=48) == "2001:db8:1::/48"
    assert origin_of("2001:db8::1", ipv6_prefix=128) == "2001:db8::1"
    assert origin_of("192.0.2.7") == "192.0.2.7"
    assert origin_of("192.0.2.7", ipv4_prefix=24) == "192.0.2.0/24"
    assert origin_of("fe80::1%eth0") == "fe80::/64"
    assert origin_of("not an address") == "not an address"


def test_one_ipv6_64_shares_one_per_address_limit() -> None:
    d = Driver(MediatorConfig(max_pending_per_ip=2))
    d.open(1, ("2001:db8:0:1::1", 1))
    d.open(2, ("2001:db8:0:1::2", 1))
    actions = d.open(3, ("2001:db8:0:1:ffff::3", 1))  # same /64: evicts the oldest
    assert closed(actions) == [1]
    assert closed(d.open(4, ("2001:db8:0:2::1", 1))) == []  # another /64: its own budget
    assert d.core._pending_by_ip == {"2001:db8:0:1::/64": 2, "2001:db8:0:2::/64": 1}


def test_idle_connections_go_before_challenged_ones() -> None:
    """An attacker churning idle connections cannot evict a client that already sent its
    Advertise: idle connections of the origin are evicted first, oldest first."""
    d = Driver(MediatorConfig(max_pending_per_ip=3), symbolic=True)
    ip = "192.0.2.1"
    d.advertise(1, sym_key(1), sym_key(2), remote=(ip, 1))  # the honest client: challenged
    d.open(2, (ip, 2))
    d.open(3, (ip, 3))
    for conn in range(4, 40):  # the attacker keeps reconnecting
        actions = d.open(conn, (ip, conn))
        assert closed(actions) == [conn - 2]
    assert d.core.state_of(1) == "challenged"
    # and the client completes its registration
    d.open(99, (ip, 99))  # evicts idle 38; 1 is still there
    assert d.core.state_of(1) == "challenged"


def test_challenged_connections_are_evicted_when_no_idle_one_is_left() -> None:
    d = Driver(MediatorConfig(max_pending_per_ip=2), symbolic=True)
    ip = "192.0.2.1"
    d.advertise(1, sym_key(1), sym_key(2), remote=(ip, 1))
    d.advertise(2, sym_key(3), sym_key(4), remote=(ip, 2))
    actions = d.open(3, (ip, 3))
    assert closed(actions) == [1] and abort_code(actions, 1) == R.BUSY


def test_global_limit_evicts_from_the_largest_origin() -> None:
    d = Driver(MediatorConfig(max_pending=6, max_pending_per_ip=6))
    d.open(1, ("192.0.2.9", 1))  # the victim, alone on its address, arrives first
    for conn in range(2, 7):
        d.open(conn, ("192.0.2.1" if conn % 2 else "192.0.2.2", conn))
    # 192.0.2.2 holds 3 (2, 4, 6), 192.0.2.1 holds 2: the newcomer evicts 192.0.2.2's oldest
    assert closed(d.open(7, ("192.0.2.3", 1))) == [2]
    # now both attacker addresses hold 2; either may lose one, never the lone victim
    for conn in range(8, 30):
        assert 1 not in closed(d.open(conn, (f"192.0.2.{conn % 2 + 1}", conn)))
    assert d.core.state_of(1) == "awaiting_advertise"


def test_connection_cap_evicts_unverified_then_refuses() -> None:
    d = Driver(MediatorConfig(max_connections=2, max_waiting_per_ip=5), symbolic=True)
    d.register_symbolic(1, sym_key(1), sym_key(2), remote=("192.0.2.1", 1))
    d.open(2, ("192.0.2.2", 1))
    actions = d.open(3, ("192.0.2.3", 1))  # at the cap: the unverified 2 makes room
    assert closed(actions) == [2]
    d.send(3, wire.Advertise(1, sym_key(3), sym_key(4)).encode())
    (challenge,) = [m for m in messages(d.log, 3) if isinstance(m, wire.AdvertiseChallenge)]
    d.send(3, wire.AdvertiseResponse(sym_answer(challenge)).encode())
    assert d.core.state_of(3) == "waiting"
    actions = d.open(4, ("192.0.2.4", 1))  # only verified connections: the newcomer is refused
    assert closed(actions) == [4] and abort_code(actions, 4) == R.BUSY
    assert [n.cause for n in d.notes if n.kind == "refused"] == ["connections"]


def test_challenge_budget_bounds_seals_per_origin() -> None:
    config = MediatorConfig(challenge_rate=2.0, challenge_burst=3)
    d = Driver(config, symbolic=True)
    ip = "192.0.2.1"
    for conn in (1, 2, 3):
        d.advertise(conn, sym_key(conn), sym_key(100), remote=(ip, conn))
    d.open(4, (ip, 4))
    actions = d.send(4, wire.Advertise(1, sym_key(4), sym_key(100)).encode())
    (retry,) = messages(actions, 4)
    assert isinstance(retry, wire.AdvertiseRetry) and retry.code == R.BUSY
    assert closed(actions) == [4]
    assert [n.cause for n in d.notes if n.kind == "rejected"] == ["challenge_rate"]
    # another origin is not affected
    d.advertise(5, sym_key(5), sym_key(100), remote=("192.0.2.2", 5))
    d.advance(0.5)  # one token back (2 per second)
    d.advertise(6, sym_key(6), sym_key(100), remote=(ip, 6))
    d.open(7, (ip, 7))
    assert closed(d.send(7, wire.Advertise(1, sym_key(7), sym_key(100)).encode())) == [7]


def test_token_buckets_are_forgotten_once_full() -> None:
    admission = Admission(challenge_rate=10.0, challenge_burst=2)
    for n in range(3000):
        assert admission.take_challenge(f"10.0.{n // 250}.{n % 250}", now=n * 1.0)
    assert len(admission._tokens) <= 2048  # pruned: only recently challenged origins stay


def test_require_tls_refuses_clear_version_1() -> None:
    d = Driver(MediatorConfig(require_tls=True), symbolic=True)
    d.open(1, ("192.0.2.1", 1))
    actions = d.send(1, wire.Advertise(1, sym_key(1), sym_key(2)).encode())
    assert abort_code(actions, 1) == R.TLS_REQUIRED and closed(actions) == [1]
    # over TLS the same Advertise is challenged
    d.open(2, ("192.0.2.1", 2))
    assert d.core.start_tls(2, d.now) == []
    actions = d.send(2, wire.Advertise(1, sym_key(1), sym_key(2)).encode())
    assert isinstance(messages(actions, 2)[0], wire.AdvertiseChallenge)
    assert d.core.snapshot()[0][0][10] is True  # the TLS flag (SessionRow index 10) is in it


def test_tls_handshakes_are_paid_from_the_challenge_budget() -> None:
    d = Driver(MediatorConfig(challenge_rate=1.0, challenge_burst=2), symbolic=True)
    for conn in (1, 2):
        d.open(conn, ("192.0.2.1", conn))
        assert d.core.start_tls(conn, d.now) == []
    d.open(3, ("192.0.2.1", 3))
    assert closed(d.core.start_tls(3, d.now)) == [3]
    assert d.core.state_of(3) is None
    # a TLS connection is not charged a second time for its HPKE challenge
    actions = d.send(1, wire.Advertise(1, sym_key(1), sym_key(2)).encode())
    assert isinstance(messages(actions, 1)[0], wire.AdvertiseChallenge)


@pytest.mark.parametrize("seed", range(8))
def test_eviction_follows_the_documented_order_under_random_churn(seed: int) -> None:
    """Random opens, closes and Advertises from a few origins against a small table: the
    counters match the sessions, no limit is exceeded, and every eviction picks exactly the
    connection spec/mediator.md 6.1 names (a model recomputes it from the session list)."""
    import random

    rng = random.Random(seed)
    config = MediatorConfig(max_pending=7, max_pending_per_ip=3, max_connections=12)
    d = Driver(config, symbolic=True)
    order: list[int] = []  # every live connection, oldest first
    advertised: list[int] = []  # challenged connections, in the order they were challenged
    for conn in range(1, 500):
        sessions = d.core._sessions
        live = list(sessions)
        choice = rng.random()
        if choice < 0.5 or not live:
            origin = f"192.0.2.{rng.randrange(4)}"
            pending = [
                c for c in order if sessions[c].state in ("awaiting_advertise", "challenged")
            ]

            def oldest(candidates: list[int]) -> int | None:
                idle = [c for c in candidates if c not in advertised]
                rest = [c for c in advertised if c in candidates]  # oldest challenge first
                return (idle or rest or [None])[0]

            mine = [c for c in pending if sessions[c].origin == origin]
            expected: int | None = None
            if len(mine) >= config.max_pending_per_ip:
                expected = oldest(mine)
            elif len(pending) >= config.max_pending or len(sessions) >= 12:
                counts: dict[str, int] = {}
                for c in pending:
                    counts[sessions[c].origin] = counts.get(sessions[c].origin, 0) + 1
                if counts:
                    top = max(counts.values())
                    # any origin of the largest size may be chosen; the oldest within it
                    options = {
                        oldest([c for c in pending if sessions[c].origin == o])
                        for o, n in counts.items()
                        if n == top
                    }
                    actions = d.open(conn, (origin, conn))
                    evicted = [c for c in closed(actions) if c != conn]
                    assert len(evicted) == 1 and evicted[0] in options, (evicted, options)
                    order.remove(evicted[0])
                    order.append(conn)
                    continue
            actions = d.open(conn, (origin, conn))
            evicted = [c for c in closed(actions) if c != conn]
            assert evicted == ([] if expected is None else [expected])
            for c in evicted:
                order.remove(c)
            if conn in d.core._sessions:
                order.append(conn)
        elif choice < 0.7:
            victim = rng.choice(live)
            d.close(victim)
            order.remove(victim)
        else:
            target = rng.choice(live)
            if d.core.state_of(target) == "awaiting_advertise":
                d.send(target, wire.Advertise(1, sym_key(target), sym_key(0)).encode())
                advertised.append(target)
                if target not in d.core._sessions:
                    order.remove(target)
        sessions = d.core._sessions
        assert sorted(order) == sorted(sessions)
        pending_now = [
            s for s in sessions.values() if s.state in ("awaiting_advertise", "challenged")
        ]
        assert d.core.pending == len(pending_now) <= config.max_pending
        assert len(sessions) <= 12
        by_origin: dict[str, int] = {}
        for s in pending_now:
            by_origin[s.origin] = by_origin.get(s.origin, 0) + 1
        assert d.core._pending_by_ip == by_origin
        assert max(by_origin.values(), default=0) <= config.max_pending_per_ip


def test_snapshot_keeps_the_eviction_order() -> None:
    """A core rebuilt from a snapshot evicts the same connection as the original."""
    from p2psc.core.mediator import MediatorCore

    d = Driver(MediatorConfig(max_pending_per_ip=3), symbolic=True)
    ip = "192.0.2.1"
    d.open(5, (ip, 5))
    d.open(3, (ip, 3))  # opened later, lower id: order is not the id order
    d.advertise(9, sym_key(9), sym_key(1), remote=(ip, 9))
    twin = MediatorCore.from_snapshot(d.core.snapshot(), d.config)
    assert twin.snapshot() == d.core.snapshot()
    actions = d.open(10, (ip, 10))
    assert closed(actions) == [5]
    assert closed(twin.handle(Opened(10, (ip, 10)), d.now)) == [5]


def _replayed(snapshot: object) -> Admission:
    """An Admission rebuilt the slow way: every connection added in the snapshot's order."""
    rebuilt = Admission(1.0, 4)
    origins, buckets = snapshot  # type: ignore[misc]
    for origin, idle, challenged in origins:
        for conn in idle:
            rebuilt.add(conn, origin)
        for conn in challenged:
            rebuilt.add(conn, origin, challenged=True)
    rebuilt._by_size = {size: dict.fromkeys(order) for size, order in buckets}
    return rebuilt


def test_restore_is_the_same_as_adding_every_connection_again() -> None:
    """Admission.restore builds its tables directly (the explorer restores a Mediator at every
    core step): after any sequence of adds, challenges and removals, a restored Admission has
    the same counts, total, largest count and eviction order as one rebuilt add by add (how
    restore used to work) and as the original, and evicts the same connections."""
    import random

    rng = random.Random(16)
    origins = ["192.0.2.1", "192.0.2.2", "192.0.2.3", "2001:db8::/64"]
    for _ in range(200):
        original = Admission(1.0, 4)
        live: dict[int, str] = {}
        for conn in range(rng.randrange(1, 25)):
            move = rng.random()
            if move < 0.6 or not live:
                origin = rng.choice(origins)
                original.add(conn, origin, challenged=rng.random() < 0.3)
                live[conn] = origin
            elif move < 0.8:
                victim = rng.choice(sorted(live))
                original.challenged(victim, live[victim])
            else:
                victim = rng.choice(sorted(live))
                original.remove(victim, live.pop(victim))
        snapshot = original.snapshot()
        restored = Admission(1.0, 4)
        restored.restore(snapshot)
        for other in (_replayed(snapshot), original):
            assert restored.snapshot() == other.snapshot()
            assert (restored.total, restored.counts, restored._largest) == (
                other.total,
                other.counts,
                other._largest,
            )
            assert restored._by_size == other._by_size
            assert restored.oldest_of_largest() == other.oldest_of_largest()
            for origin in origins:
                assert restored.oldest_of(origin) == other.oldest_of(origin)
