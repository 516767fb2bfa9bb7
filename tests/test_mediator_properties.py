"""MediatorCore under random interleavings (hypothesis): the invariants of spec/mediator.md.

Six connections, three symbolic keys, and any order of: open, Advertise (any wanted key),
right or wrong AdvertiseResponse, garbage, clean close, reset, timer firing after time passes,
shutdown. After every step:

- the registry holds exactly the sessions in state ``waiting`` (never leaks, never stale);
- the pending / per-address counters match the sessions;
- nothing is sent to a connection after its Close;
- PeerDisconnect goes only to one side of a *mutual* pair, naming the other side's address;
- PeerIdentification goes only to the partner of a connection whose clean close is being
  handled, and only after that connection was sent PeerDisconnect (the ordering guarantee).

At the end, closing every connection leaves the core completely empty.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from mediator_helpers import SymbolicCrypto, counting_nonces, sym_key

from p2psc import wire
from p2psc.core.io import Action, Close, Closed, Event, Opened, Received, Send, TimerFired
from p2psc.core.mediator import MediatorConfig, MediatorCore

CONNS = range(1, 7)
KEYS = [sym_key(i) for i in range(3)]
CONFIG = MediatorConfig(
    advertise_timeout=5,
    response_timeout=5,
    wait_timeout=20,
    confirm_timeout=5,
    max_pending=4,
    max_pending_per_ip=3,
    max_waiting=3,
    max_waiting_per_ip=2,
)

# Fixed intents per connection: 1<->2 and 4<->5 are mutual, 3 duplicates 1, 6 asks for itself.
INTENT = {
    1: (KEYS[0], KEYS[1]),
    2: (KEYS[1], KEYS[0]),
    3: (KEYS[0], KEYS[1]),
    4: (KEYS[1], KEYS[2]),
    5: (KEYS[2], KEYS[1]),
    6: (KEYS[2], KEYS[2]),
}

_OPS: dict[str, st.SearchStrategy[tuple[object, ...]]] = {
    # "step": the next honest move of that connection (open, Advertise, right answer, or the
    # Peer's clean close after PeerDisconnect); weighted so pairings happen often.
    "step": st.tuples(
        st.just("step"), st.sampled_from([1, 2, 1, 2, 3, 4, 5, 6]), st.integers(0, 1)
    ),
    "respond": st.tuples(st.just("respond"), st.sampled_from(CONNS), st.booleans()),
    "garbage": st.tuples(st.just("garbage"), st.sampled_from(CONNS)),
    "close": st.tuples(st.just("close"), st.sampled_from(CONNS), st.booleans()),
    "tick": st.tuples(st.just("tick"), st.sampled_from(CONNS), st.sampled_from([1.0, 6.0, 25.0])),
    "shutdown": st.tuples(st.just("shutdown")),
}
_WEIGHTS = ["step"] * 40 + ["respond", "garbage", "close", "close", "tick", "tick"] + ["shutdown"]
op = st.sampled_from(_WEIGHTS).flatmap(_OPS.__getitem__)


class World:
    def __init__(self) -> None:
        self.core = MediatorCore(CONFIG, nonce_source=counting_nonces(), crypto=SymbolicCrypto())
        self.now = 0.0
        self.opened: dict[int, tuple[str, int]] = {}
        self.advertised: dict[int, tuple[bytes, bytes]] = {}
        self.challenge: dict[int, bytes] = {}
        self.closed: set[int] = set()
        self.disconnected: set[int] = set()  # got PeerDisconnect
        self.partner_of: dict[int, int] = {}

    def remote(self, conn: int, ip: int) -> tuple[str, int]:
        return (f"192.0.2.{ip + 1}", 40000 + conn)

    def run(self, event: Event) -> list[Action]:
        actions = self.core.handle(event, self.now)
        self.check(event, actions)
        return actions

    def check(self, event: Event | None, actions: list[Action]) -> None:
        for action in actions:
            conn = getattr(action, "conn", None)
            assert conn not in self.closed, f"{action} after Close"
            if isinstance(action, Close):
                self.closed.add(action.conn)
            if not isinstance(action, Send):
                continue
            message = wire.decode(action.data)
            if isinstance(message, wire.AdvertiseChallenge):
                self.challenge[action.conn] = message.encrypted_nonce[:32]
            elif isinstance(message, wire.PeerDisconnect):
                peer = action.conn
                client = next(c for c, r in self.opened.items() if r == message.client.to_tuple())
                assert message.peer.to_tuple() == self.opened[peer]
                p_our, p_their = self.advertised[peer]
                c_our, c_their = self.advertised[client]
                assert (c_our, c_their) == (p_their, p_our), "paired without mutual intent"
                self.disconnected.add(peer)
                self.partner_of[peer] = client
            elif isinstance(message, wire.PeerIdentification):
                assert isinstance(event, Closed) and event.error is None
                assert event.conn in self.disconnected, "introduced before PeerDisconnect"
                assert self.partner_of[event.conn] == action.conn
                assert message.peer.to_tuple() == self.opened[event.conn]
        self.check_state()

    def check_state(self) -> None:
        core = self.core
        sessions = core._sessions
        waiting = {(s.our, s.their): conn for conn, s in sessions.items() if s.state == "waiting"}
        assert dict(core._registry.items()) == waiting
        pending = [s for s in sessions.values() if s.state in ("awaiting_advertise", "challenged")]
        assert core.pending == len(pending) <= CONFIG.max_pending
        by_ip: dict[str, int] = {}
        for s in pending:
            by_ip[s.remote[0]] = by_ip.get(s.remote[0], 0) + 1
        assert core._pending_by_ip == by_ip
        waiting_by_ip: dict[str, int] = {}
        for s in sessions.values():
            if s.state == "waiting":
                waiting_by_ip[s.remote[0]] = waiting_by_ip.get(s.remote[0], 0) + 1
        assert core._waiting_by_ip == waiting_by_ip
        assert len(waiting) <= CONFIG.max_waiting
        assert set(sessions).isdisjoint(self.closed)

    def next_move(self, conn: int) -> str:
        if conn in self.closed:
            return "done"
        if conn not in self.opened:
            return "open"
        if conn not in self.advertised:
            return "advertise"
        if conn in self.disconnected:
            return "close"
        state = self.core.state_of(conn)
        return "respond" if state == "challenged" else "done"

    def apply(self, step: tuple[object, ...]) -> None:
        kind = step[0]
        if kind == "shutdown":
            self.check(None, self.core.shutdown(self.now))
            return
        conn = int(step[1])  # type: ignore[call-overload]
        if kind == "step":
            kind = self.next_move(conn)
            if kind == "open":
                self.opened[conn] = self.remote(conn, int(step[2]))  # type: ignore[call-overload]
                self.run(Opened(conn, self.opened[conn]))
                return
            if kind == "respond":
                step = ("respond", conn, True)
            elif kind == "close":
                step = ("close", conn, True)
            elif kind == "done":
                return
        if conn not in self.opened:
            return
        if kind == "advertise":
            self.advertised[conn] = INTENT[conn]
            our, their = INTENT[conn]
            self.run(Received(conn, wire.Advertise(1, our, their).encode()))
        elif kind == "respond":
            nonce = self.challenge.get(conn, bytes(32)) if step[2] else b"\xee" * 32
            self.run(Received(conn, wire.AdvertiseResponse(nonce).encode()))
        elif kind == "garbage":
            self.run(Received(conn, b"\x00garbage"))
        elif kind == "close":
            self.run(Closed(conn, None if step[2] else "reset"))
        elif kind == "tick":
            self.now += float(step[2])  # type: ignore[arg-type]
            self.run(TimerFired(conn))


@settings(max_examples=400, deadline=None)
@given(steps=st.lists(op, min_size=8, max_size=40))
def test_invariants_hold_in_every_interleaving(steps: list[tuple[object, ...]]) -> None:
    world = World()
    for step in steps:
        world.apply(step)
    for conn in CONNS:  # everyone hangs up: nothing may remain
        if conn in world.opened:
            world.run(Closed(conn, None))
    core = world.core
    assert core.sessions == 0 and core.waiting == 0 and core.pending == 0
    assert core._pending_by_ip == {} and core._waiting_by_ip == {}
    assert core.snapshot() == ((), (), core._shutting_down, ((), ()))


def test_a_pairing_is_reachable_by_the_strategy() -> None:
    """Guard against a vacuous property: the scripted happy path passes through `check`."""
    world = World()
    script: list[tuple[object, ...]] = [("step", 1, 0)] * 3 + [("step", 2, 1)] * 4
    for step in script:
        world.apply(step)
    assert world.disconnected == {2} and world.partner_of == {2: 1}
    assert 1 in world.closed and world.core.sessions == 0
