"""A discrete-event simulation of one pairing with fixed link latencies (issue 13, round trips).

Why: "establishing takes at most 4 peer round trips plus the later peer's Mediator round trips"
is a statement about message sequencing, not about this machine's speed; measured with wall
clocks it would be a timed assertion. Here the real sans-IO cores run: the Mediator's
:class:`~p2psc.core.mediator.MediatorCore` and two :class:`~p2psc.core.peer.PeerCore` s through
the adapters' own :class:`~p2psc.core.peer_driver.PeerDriver`, with real keys, HPKE and Noise. Only
the network and the clock are simulated: virtual time, zero processing time, and every segment
between two hosts takes that pair's fixed one-way latency.

The TCP model is the part of TCP the cores' timing depends on:

- ``Connect`` sends a SYN from the named local port (or an ephemeral one). A SYN that arrives
  where the reverse connection is itself in SYN-SENT is a simultaneous open: each side's connect
  completes when the other's SYN-ACK arrives. A SYN that arrives at a listener completes the
  connect one latency later (SYN-ACK); the listener's side accepts one more latency later
  (the ACK), before any data the connecting side sent. A SYN that finds neither is refused
  (RST: the connect fails one latency later) or, at a host behind a NAT that drops unsolicited
  SYNs (``nat_drop``), silently dropped unless the host itself sent a SYN to that source from
  that port before (its NAT mapping; a RST it receives deletes the mapping, as Linux's
  conntrack does).
- data and FIN arrive in order after the pair's latency; a FIN is a clean ``Closed``.

Counters (``syns``, ``refused``, ``dropped``) let tests judge the first attempt without any wall
clock. Every run is bounded by ``until`` (virtual seconds) and an event count.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from p2psc.core.io import (
    Close,
    Closed,
    Connect,
    ConnId,
    Listen,
    Opened,
    Received,
    Send,
    SetTimer,
    TimerFired,
)
from p2psc.core.mediator import MediatorConfig, MediatorCore
from p2psc.core.peer import Established, PeerCore, peer_config
from p2psc.core.peer_driver import IoOp, PeerDriver
from p2psc.errors import P2pscError
from p2psc.keys import Keypair

MEDIATOR = ("192.0.2.1", 7777)
MAX_EVENTS = 100_000

Tuple4 = tuple[str, int, str, int]
"""(local ip, local port, remote ip, remote port) of one socket."""


@dataclass
class _Endpoint:
    """One side's socket names: which owner and which conn id."""

    owner: str
    conn: ConnId


@dataclass
class Result:
    """What one simulated pairing did, in virtual seconds from the Peer's start."""

    client_done: float | None
    peer_done: float | None
    client_result: object
    peer_result: object
    syns: dict[str, int]
    refused: dict[str, int]
    dropped: dict[str, int]
    peer_first_dial: float | None
    """When the later peer (the Peer) sent its first SYN towards the Client (from its start)."""

    @property
    def established(self) -> float:
        """Both sides hold the authenticated connection (seconds after the Peer's start)."""
        assert self.client_done is not None and self.peer_done is not None, self
        return max(self.client_done, self.peer_done)


@dataclass
class Sim:
    """Hosts by IP, one-way latency per unordered host pair, the Mediator at ``MEDIATOR``."""

    latency: dict[frozenset[str], float]
    nat_drop: frozenset[str] = frozenset()
    now: float = 0.0
    _queue: list[tuple[float, int, Callable[[], None]]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    listeners: dict[tuple[str, int], _Endpoint] = field(default_factory=dict)
    pending: dict[Tuple4, _Endpoint] = field(default_factory=dict)
    sockets: dict[Tuple4, _Endpoint] = field(default_factory=dict)
    by_conn: dict[tuple[str, ConnId], Tuple4] = field(default_factory=dict)
    mappings: set[Tuple4] = field(default_factory=set)
    ports: dict[str, int] = field(default_factory=dict)
    syns: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    first_syn_to: dict[tuple[str, str], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.hosts: dict[str, str] = {}  # owner -> ip
        self.drivers: dict[str, PeerDriver] = {}
        self.mediator = MediatorCore(MediatorConfig())
        self.mediator_timers: dict[ConnId, float] = {}
        self.mediator_next: ConnId = 1
        self.hosts["mediator"] = MEDIATOR[0]
        self.listeners[MEDIATOR] = _Endpoint("mediator", 0)
        self.done: dict[str, float] = {}
        self.ticks: set[tuple[str, float]] = set()

    # --- scheduling -------------------------------------------------------------------------

    def at(self, when: float, fn: Callable[[], None]) -> None:
        # rounded, so that sums of latencies taken in another order meet at the same instant
        # (an accept scheduled at SYN + 2 L must precede data sent at SYN + L + L)
        # (never earlier than asked: a timer must find itself due when its event runs)
        rounded = round(when, 9)
        heapq.heappush(self._queue, (rounded if rounded >= when else when, next(self._seq), fn))

    def one_way(self, a: str, b: str) -> float:
        return 0.0 if a == b else self.latency[frozenset((a, b))]

    def run(self, until: float) -> None:
        for _ in range(MAX_EVENTS):
            if not self._queue or len(self.done) == len(self.drivers):
                return
            when, _, fn = heapq.heappop(self._queue)
            if when > until:
                return
            self.now = when
            fn()
        raise RuntimeError("simulation did not settle within MAX_EVENTS")

    # --- peers ------------------------------------------------------------------------------

    def add_peer(self, name: str, ip: str, driver: PeerDriver, start: float) -> None:
        self.hosts[name] = ip
        self.drivers[name] = driver
        self.at(start, lambda: self._peer_ops(name, driver.start(self.now)))

    def _peer_ops(self, name: str, ops: list[IoOp]) -> None:
        driver = self.drivers[name]
        for op in ops:
            self._execute(name, op)
        if driver.result is not None and name not in self.done:
            self.done[name] = self.now
            return
        deadline = driver.next_deadline()
        if deadline is not None and (name, deadline) not in self.ticks:
            self.ticks.add((name, deadline))
            self.at(max(deadline, self.now), lambda: self._peer_ops(name, driver.tick(self.now)))

    def _deliver(self, owner: str, event: Opened | Received | Closed) -> None:
        """Hand one event to an owner (a peer driver or the Mediator core)."""
        if owner == "mediator":
            self._mediator_actions(self.mediator.handle(event, self.now))
            return
        driver = self.drivers[owner]
        if driver.result is not None:
            return
        if isinstance(event, Opened):
            ops = driver.opened(event.conn, event.remote, event.local or ("", 0), self.now)
        elif isinstance(event, Received):
            ops = driver.received(event.conn, event.data, self.now)
        else:
            ops = driver.closed(event.conn, event.error, self.now)
        self._peer_ops(owner, ops)

    def _accept(self, owner: str, remote: tuple[str, int], local: tuple[str, int]) -> ConnId:
        """A connection accepted on ``owner``'s listener: its conn id, events delivered."""
        t4 = (local[0], local[1], remote[0], remote[1])
        if owner == "mediator":
            conn = self.mediator_next
            self.mediator_next += 1
            self.by_conn[(owner, conn)] = t4
            self.sockets[t4] = _Endpoint(owner, conn)
            self._mediator_actions(self.mediator.handle(Opened(conn, remote, local), self.now))
            return conn
        driver = self.drivers[owner]
        conn, ops = driver.accepted(remote, local, self.now)
        self.by_conn[(owner, conn)] = t4
        self.sockets[t4] = _Endpoint(owner, conn)
        self._peer_ops(owner, ops)
        return conn

    # --- the Mediator ---------------------------------------------------------------------

    def _mediator_actions(self, actions: list[Send | Close | SetTimer]) -> None:
        for action in actions:
            if isinstance(action, SetTimer):
                if action.deadline is None:
                    self.mediator_timers.pop(action.conn, None)
                else:
                    self.mediator_timers[action.conn] = action.deadline
                    self.at(
                        action.deadline, lambda c=action.conn, d=action.deadline: self._mt(c, d)
                    )
            else:
                self._execute("mediator", action)

    def _mt(self, conn: ConnId, deadline: float) -> None:
        if self.mediator_timers.get(conn) == deadline:
            del self.mediator_timers[conn]
            self._mediator_actions(self.mediator.handle(TimerFired(conn), self.now))

    # --- TCP --------------------------------------------------------------------------------

    def _execute(self, owner: str, op: IoOp | Send | Close) -> None:
        ip = self.hosts[owner]
        if isinstance(op, Listen):
            self.listeners[(ip, op.port)] = _Endpoint(owner, op.conn)
            self.by_conn[(owner, op.conn)] = (ip, op.port, "", 0)
        elif isinstance(op, Connect):
            port = op.from_port or self._ephemeral(ip)
            rip, rport = op.remote
            t4 = (ip, port, rip, rport)
            if t4 in self.pending or t4 in self.sockets:  # EADDRINUSE: that 4-tuple exists
                self.at(self.now, lambda: self._deliver(owner, Closed.failed(op.conn, "in use")))
                return
            self.pending[t4] = _Endpoint(owner, op.conn)
            self.by_conn[(owner, op.conn)] = t4
            self.mappings.add(t4)
            self.syns[owner] = self.syns.get(owner, 0) + 1
            self.first_syn_to.setdefault((owner, rip), self.now)
            self.at(self.now + self.one_way(ip, rip), lambda: self._syn_arrives(t4))
        elif isinstance(op, Send):
            t4 = self.by_conn.get((owner, op.conn))
            if t4 is not None and t4 in self.sockets:
                data = op.data
                self.at(self.now + self.one_way(ip, t4[2]), lambda: self._data_arrives(t4, data))
        elif isinstance(op, Close):
            t4 = self.by_conn.pop((owner, op.conn), None)
            if t4 is None:
                return
            if t4[2] == "":
                self.listeners.pop((t4[0], t4[1]), None)
            elif self.sockets.pop(t4, None) is not None:
                self.at(self.now + self.one_way(ip, t4[2]), lambda: self._fin_arrives(t4))
            else:
                self.pending.pop(t4, None)

    def _ephemeral(self, ip: str) -> int:
        self.ports[ip] = self.ports.get(ip, 40000) + 1
        return self.ports[ip]

    def _owner_of(self, ip: str) -> str:
        return next(name for name, host in self.hosts.items() if host == ip)

    def _syn_arrives(self, t4: Tuple4) -> None:
        """The SYN of ``t4`` (as its sender names it) reaches the other host."""
        ip, port, rip, rport = t4
        if t4 not in self.pending:
            return  # the sender gave up meanwhile
        reverse = (rip, rport, ip, port)
        back = self.one_way(ip, rip)
        if reverse in self.pending:  # simultaneous open: SYN-ACK back, then the ACK
            self.at(self.now + back, lambda: self._synack_arrives(t4))
            self.at(self.now + 2 * back, lambda: self._synack_arrives(reverse))
            return
        if reverse in self.sockets:  # a SYN for an established connection: ignored
            return
        listener = self.listeners.get((rip, rport))
        if listener is not None:
            self.at(self.now + back, lambda: self._synack_arrives(t4))
            self.at(
                self.now + 2 * back,
                lambda: self._accept(listener.owner, (ip, port), (rip, rport)),
            )
            return
        receiver = self._owner_of(rip)
        if rip in self.nat_drop and reverse not in self.mappings:
            self.dropped[receiver] = self.dropped.get(receiver, 0) + 1
            return  # the NAT drops it: the sender's attempt times out
        self.refused[self._owner_of(ip)] = self.refused.get(self._owner_of(ip), 0) + 1
        self.mappings.discard(t4)  # the RST closes the sender's own NAT mapping
        self.at(self.now + back, lambda: self._refused(t4))

    def _synack_arrives(self, t4: Tuple4) -> None:
        endpoint = self.pending.pop(t4, None)
        if endpoint is None:
            return
        self.sockets[t4] = endpoint
        self._deliver(endpoint.owner, Opened(endpoint.conn, (t4[2], t4[3]), (t4[0], t4[1])))

    def _refused(self, t4: Tuple4) -> None:
        endpoint = self.pending.pop(t4, None)
        if endpoint is not None:
            self.by_conn.pop((endpoint.owner, endpoint.conn), None)
            self._deliver(endpoint.owner, Closed.failed(endpoint.conn, "refused"))

    def _data_arrives(self, t4: Tuple4, data: bytes) -> None:
        endpoint = self.sockets.get((t4[2], t4[3], t4[0], t4[1]))
        if endpoint is not None:
            self._deliver(endpoint.owner, Received(endpoint.conn, data))

    def _fin_arrives(self, t4: Tuple4) -> None:
        reverse = (t4[2], t4[3], t4[0], t4[1])
        endpoint = self.sockets.get(reverse)
        if endpoint is not None:
            self._deliver(endpoint.owner, Closed.eof(endpoint.conn))


CLIENT_IP = "198.51.100.10"
PEER_IP = "203.0.113.20"


def pairing(
    r_client: float,
    r_peer: float,
    r_between: float,
    *,
    nat_drop: frozenset[str] = frozenset(),
    **options: object,
) -> Result:
    """Simulate one pairing: the Client registers first (at 0), the Peer once the Client waits.

    ``r_client``, ``r_peer``: each peer's round trip to the Mediator; ``r_between``: the round
    trip between the peers. ``nat_drop``: "client" and/or "peer" sit behind NATs that drop
    unsolicited SYNs. ``options``: :class:`~p2psc.core.peer.PeerConfig` fields for both peers.
    Times in the result are virtual seconds from the Peer's start.
    """
    latency = {
        frozenset((CLIENT_IP, MEDIATOR[0])): r_client / 2,
        frozenset((PEER_IP, MEDIATOR[0])): r_peer / 2,
        frozenset((CLIENT_IP, PEER_IP)): r_between / 2,
    }
    nats = frozenset({"client": CLIENT_IP, "peer": PEER_IP}[n] for n in nat_drop)
    sim = Sim(latency, nat_drop=nats)
    ka, kb = Keypair.generate(), Keypair.generate()
    settings: dict[str, object] = {"candidates": (), "timeout": 60.0, **options}
    client = PeerDriver(PeerCore(peer_config(ka, kb.public_key, MEDIATOR, **settings)))  # type: ignore[arg-type]
    peer = PeerDriver(PeerCore(peer_config(kb, ka.public_key, MEDIATOR, **settings)))  # type: ignore[arg-type]
    peer_start = 3 * r_client + 1.0
    sim.add_peer("client", CLIENT_IP, client, 0.0)
    sim.add_peer("peer", PEER_IP, peer, peer_start)
    sim.run(until=peer_start + 60.0)

    def since(name: str) -> float | None:
        when = sim.done.get(name)
        return None if when is None else when - peer_start

    first = sim.first_syn_to.get(("peer", CLIENT_IP))
    return Result(
        since("client"),
        since("peer"),
        client.result,
        peer.result,
        sim.syns,
        sim.refused,
        sim.dropped,
        None if first is None else first - peer_start,
    )


def established(result: Result) -> bool:
    """Both sides hold an authenticated direct connection."""
    return isinstance(result.client_result, Established) and isinstance(
        result.peer_result, Established
    )


__all__ = ["MEDIATOR", "P2pscError", "Result", "Sim", "established", "pairing"]
