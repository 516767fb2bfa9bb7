"""Who may hold an unverified connection, and who is evicted when too many do (sans-IO).

Why eviction and not refusal: an unverified connection (accepted, no correct AdvertiseResponse
yet) is the one resource an attacker gets for free: no key, no crypto, just a TCP connection it
can hold for the whole ``advertise_timeout`` and renew. If a full table refuses newcomers, 256
idle connections from a shared NAT address lock out every honest user behind it, and a few
thousand lock out everyone. If instead a newcomer evicts the *oldest* unverified connection,
the attacker has to keep winning a race against every honest client's handshake (a round trip
or two), and idle connections are what gets evicted first:

- per origin (an IPv4 address, an IPv6 /64 by default: one host gets a whole /64 for free), a
  newcomer over ``max_pending_per_ip`` evicts that origin's oldest connection that has not
  sent its Advertise yet ("idle"), else the one challenged longest ago;
- over ``max_pending`` (or the connection cap), a newcomer evicts from the origin that holds
  the *most* unverified connections, so a flood from a few addresses pays for itself and a
  client alone on its address is the last to go;
- challenged connections (they sent a well-formed Advertise and cost us an HPKE seal) are
  evicted only after every idle one of their origin, and the seals themselves are bounded per
  origin by a token bucket (:meth:`Admission.take_challenge`).

Every operation is O(1) (ordered dicts per origin, origins bucketed by count); memory is
bounded by the number of unverified connections plus one small bucket per origin that was
challenged within the last refill period. Time comes in as ``now``; nothing here reads a clock.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict

from p2psc.core.io import ConnId

__all__ = ["Admission", "AdmissionSnapshot", "origin_of"]

AdmissionSnapshot = tuple[
    tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...],
    tuple[tuple[int, tuple[str, ...]], ...],
]
"""Per origin: its idle and its challenged connections, oldest first; and per count, the
origins holding that many in the order a global eviction visits them (restored exactly, so a
rebuilt core evicts the same connection as the original: ties between origins of equal size
depend on history)."""


def origin_of(ip: str, ipv4_prefix: int = 32, ipv6_prefix: int = 64) -> str:
    """The key per-address limits count ``ip`` under: the address itself for IPv4 (by
    default), its ``/ipv6_prefix`` network for IPv6 (an IPv4-mapped IPv6 address as its IPv4
    address), as text. Unparsable text counts as itself."""
    try:
        if ":" in ip:
            mapped = ipaddress.IPv6Address(ip.split("%", 1)[0]).ipv4_mapped
            if mapped is not None:  # an IPv4 client of a dual-stack socket counts as IPv4
                ip = str(mapped)
        if ":" not in ip:
            if ipv4_prefix >= 32:
                return ip
            return str(ipaddress.IPv4Network((ip, ipv4_prefix), strict=False))
        if ipv6_prefix >= 128:
            return str(ipaddress.IPv6Address(ip.split("%", 1)[0]))
        net = ipaddress.IPv6Network((ip.split("%", 1)[0], ipv6_prefix), strict=False)
        return str(net)
    except ValueError:
        return ip


class _Origin:
    """Unverified connections of one origin, oldest first, idle and challenged apart."""

    __slots__ = ("challenged", "idle")

    def __init__(self) -> None:
        self.idle: OrderedDict[ConnId, None] = OrderedDict()
        self.challenged: OrderedDict[ConnId, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self.idle) + len(self.challenged)

    def oldest(self) -> ConnId | None:
        for queue in (self.idle, self.challenged):
            if queue:
                return next(iter(queue))
        return None


class Admission:
    """Counts, orders and rate-limits the unverified connections of one mediator."""

    __slots__ = (
        "_by_size",
        "_largest",
        "_origins",
        "_prune_at",
        "_tokens",
        "burst",
        "counts",
        "rate",
        "total",
    )

    def __init__(self, challenge_rate: float, challenge_burst: int) -> None:
        self.rate = challenge_rate
        self.burst = challenge_burst
        self.total = 0
        """Unverified connections, all origins."""
        self.counts: dict[str, int] = {}
        """Unverified connections per origin (origins with none are absent)."""
        self._origins: dict[str, _Origin] = {}
        self._by_size: dict[int, dict[str, None]] = {}
        """count -> origins holding exactly that many (for the largest in O(1))."""
        self._largest = 0
        self._tokens: dict[str, tuple[float, float]] = {}
        """origin -> (tokens, at): challenge budget left at time ``at`` (full: absent)."""
        self._prune_at = 1024

    # --- membership ----------------------------------------------------------------------

    def add(self, conn: ConnId, origin: str, *, challenged: bool = False) -> None:
        entry = self._origins.get(origin)
        if entry is None:
            entry = self._origins[origin] = _Origin()
        (entry.challenged if challenged else entry.idle)[conn] = None
        self._resize(origin, +1)

    def remove(self, conn: ConnId, origin: str) -> None:
        entry = self._origins.get(origin)
        if entry is None:
            return
        if entry.idle.pop(conn, 0) is not None and entry.challenged.pop(conn, 0) is not None:
            return  # not there (pop returned the default twice)
        if not entry:
            del self._origins[origin]
        self._resize(origin, -1)

    def challenged(self, conn: ConnId, origin: str) -> None:
        """``conn`` sent its Advertise and was challenged: it moves behind the idle ones."""
        entry = self._origins.get(origin)
        if entry is not None and entry.idle.pop(conn, 0) is None:
            entry.challenged[conn] = None

    def _resize(self, origin: str, delta: int) -> None:
        counts = self.counts
        old = counts.get(origin, 0)
        new = old + delta
        self.total += delta
        by_size = self._by_size
        if old:
            bucket = by_size[old]
            del bucket[origin]
            if not bucket:
                del by_size[old]
        if new:
            counts[origin] = new
            by_size.setdefault(new, {})[origin] = None
            if new > self._largest:
                self._largest = new
        else:
            del counts[origin]
        while self._largest and self._largest not in by_size:
            self._largest -= 1  # counts move by one, so this loops at most once

    # --- snapshots -----------------------------------------------------------------------

    def snapshot(self) -> AdmissionSnapshot:
        """The eviction order (counts follow from it), hashable.

        Challenge budgets are left out on purpose: they are rate state that refills with time
        and outlives connections, so a mediator with no connection left would never again equal
        a fresh one (the explorer and the tests compare exactly that), and a model that never
        comes near ``challenge_burst`` seals per origin gains nothing from them. A core rebuilt
        from a snapshot starts with full budgets."""
        origins = tuple(
            sorted(
                (origin, tuple(entry.idle), tuple(entry.challenged))
                for origin, entry in self._origins.items()
            )
        )
        buckets = tuple(sorted((size, tuple(bucket)) for size, bucket in self._by_size.items()))
        return origins, buckets

    def restore(self, snapshot: AdmissionSnapshot) -> None:
        """Replace the eviction order with what :meth:`snapshot` returned.

        Built directly rather than by :meth:`add` per connection: the explorer rebuilds a
        Mediator from a snapshot at every real core step it takes (the same result: each
        origin's queues in order, its count, the total, the largest count)."""
        origins, buckets = snapshot
        table: dict[str, _Origin] = {}
        counts: dict[str, int] = {}
        total = 0
        for origin, idle, challenged in origins:
            size = len(idle) + len(challenged)
            if not size:
                continue
            entry = table[origin] = _Origin()
            if idle:
                entry.idle = OrderedDict.fromkeys(idle)
            if challenged:
                entry.challenged = OrderedDict.fromkeys(challenged)
            counts[origin] = size
            total += size
        self.total, self.counts, self._origins = total, counts, table
        self._largest = max(counts.values(), default=0)
        self._by_size = {size: dict.fromkeys(order) for size, order in buckets}

    # --- eviction ------------------------------------------------------------------------

    def oldest_of(self, origin: str) -> ConnId | None:
        """Whom a newcomer from ``origin`` over the per-origin limit evicts."""
        entry = self._origins.get(origin)
        return None if entry is None else entry.oldest()

    def oldest_of_largest(self) -> ConnId | None:
        """Whom a newcomer over a global limit evicts: the oldest (idle first) connection of
        the origin that holds the most unverified connections."""
        bucket = self._by_size.get(self._largest)
        if not bucket:
            return None
        return self.oldest_of(next(iter(bucket)))

    # --- challenge budget ----------------------------------------------------------------

    def take_challenge(self, origin: str, now: float) -> bool:
        """Spend one HPKE seal of ``origin``'s budget (``burst`` seals, refilled at ``rate``
        per second); False when it is spent: a client that never answers its challenges does
        not get unlimited new ones."""
        tokens, at = self._tokens.get(origin, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - at) * self.rate)
        if tokens < 1.0:
            self._tokens[origin] = (tokens, now)
            return False
        self._tokens[origin] = (tokens - 1.0, now)
        if len(self._tokens) > self._prune_at:
            self._prune(now)
        return True

    def _prune(self, now: float) -> None:
        """Forget buckets that are full again (they carry no information)."""
        rate, burst = self.rate, float(self.burst)
        for origin, (tokens, at) in list(self._tokens.items()):
            if tokens + (now - at) * rate >= burst:
                del self._tokens[origin]
        self._prune_at = max(1024, 2 * len(self._tokens))  # amortised O(1) per challenge
