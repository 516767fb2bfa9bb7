"""The path-agreement model (issue 14; spec/relay.md section 5): the real Client and Peer cores
with ``relay="auto"``, a direct path that may or may not form, and the real relay.

Actors: ``Client`` and ``Peer`` (real :class:`p2psc.core.peer.PeerCore` instances, introduced
by a scripted Mediator with a fixed pairing id) and ``Relay``, the real
:class:`p2psc.core.relay.RelayCore` (sans-IO, rebuilt from its snapshot for every event like the
peers, with the symbolic crypto and a fixed nonce for its challenges; its limits are set in
:data:`RELAY_CONFIG` so that its timeouts and a circuit's end fall inside the model's time).
The network: each connect of the Client to the Peer's listener either connects or is refused
(both explored: a NAT that sometimes lets a SYN through); the Peer's own attempts never
complete; bytes on a connection arrive in order; timers (the peers' and the relay's) fire when
nothing is in flight (a timely network).

Faults (each a step the environment may take but need not; at most ``faults`` of them): a
connection is cut (both ends see a reset), or a timer fires while bytes are still in flight
(a late delivery). With ``evil``, the relay operator may instead *bridge*: once the Client's
leg has authenticated and waits, it takes that leg out of RelayCore, opens a connection to the
Peer's listener and splices the two (an attacker that forwards bytes between the two paths; a
scripted actor: it is the adversary, not our relay). With ``garbage``: a malformed frame is
injected into a relay leg (either direction), or a **stranger** connects to the relay (it
stays silent, closes, sends a malformed frame, or names the Client's keys and pairing in a
RelayRequest and then answers the challenge it cannot open wrongly or closes). With
``shutdown`` the operator may shut the relay down at any moment (it then refuses new legs).
With ``limits`` the relay admits one relay connection in total (the second leg is refused).

Properties:

- R1 path agreement: when both sides are established they hold the same path and the same
  handshake hash;
- R2 the Client decides: whenever the Peer is established, the Client is established on the
  same path with the same handshake hash;
- R3 liveness: a run without faults (and without a bridging relay; a stranger at the relay is
  allowed, it must not stop the pair) ends with both established. Not checked with ``limits``.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from p2psc.models.direct_model import Link, _find, _label
from p2psc.models.explorer import Coverage, Step
from p2psc.models.symbolic_crypto import SymbolicCrypto, fixed_nonces

import p2psc.core.peer as peer_module
import p2psc.core.relay as relay_module
from p2psc import relay_wire as rw
from p2psc import wire
from p2psc.core.io import (
    Close,
    Closed,
    Connect,
    Failed,
    Listen,
    Opened,
    Received,
    Send,
    SetTimer,
    TimerFired,
)
from p2psc.core.peer import (
    FIRST_ACCEPTED,
    LISTENER,
    MEDIATOR_BASE,
    RELAY_CONN,
    Established,
    PeerConfig,
    PeerCore,
    PeerSnapshot,
)
from p2psc.core.relay import RelayConfig, RelayCore, RelaySnapshot, ShutdownWrite
from p2psc.keys import Keypair, PublicKey, nonce_info
from p2psc.machines.compiler import compile_machine
from p2psc.machines.handshake import ClientCandidate, PeerCandidate, Rendezvous
from p2psc.machines.relay import RelayLeg, RelaySession

__all__ = ["RELAY_CONFIG", "RelayModel", "build"]

CLIENT, PEER, RELAY, STRANGER = 0, 1, 2, 3
NAMES = ("Client", "Peer", "Relay", "Stranger")
MEDIATOR_ADDR = ("198.51.100.1", 7000)
RELAY_ADDR = ("198.51.100.2", 7001)
ADDRESS = {
    CLIENT: ("198.51.100.10", 40000),
    PEER: ("198.51.100.20", 50000),
    STRANGER: ("203.0.113.66", 60000),
}
STRANGER_LEG = 2
"""The relay's connection id for the stranger's connection (the legs are 0 and 1: the side)."""
BRIDGE = -1
"""The bridging relay's own connection to the Peer's listener (not a RelayCore connection)."""
PAIRING_ID = bytes(range(16))
CRYPTO = SymbolicCrypto()
GARBAGE = b"\x00 not a p2psc frame"
"""With ``garbage``: the malformed frame injected into a leg or sent by the stranger."""
EOF = b""
"""A queued end of stream: the relay's half close (ShutdownWrite) reaches the peer after the
bytes before it, and the relay goes on reading that connection."""
TIMING: dict[str, Any] = {
    "timeout": 30.0,
    "step_timeout": 5.0,
    "punch_timeout": 10.0,
    "punch_interval": 4.0,
    "punch_backoff": 1.0,
    "punch_max_interval": 4.0,
    "punch_attempt_timeout": 60.0,  # the Peer's attempts never complete: keep them quiet
    "candidate_timeout": 20.0,
    "max_candidates": 2,
    "max_candidates_per_source": 2,
    "advertise_retries": 0,
    "relay": "auto",
    "relay_address": RELAY_ADDR,
}
RELAY_CONFIG = RelayConfig(
    request_timeout=2.0,
    wait_timeout=3.0,
    max_duration=1.0,
    max_bytes=0,
    max_rate=0,
    crypto=CRYPTO,
    nonce_source=fixed_nonces(b"Relay"),
)
"""The relay's limits in the model: its step and wait deadlines (2 s, 3 s) come before the
peers' leg deadline (``step_timeout`` 5 s), so a leg the relay gives up on is seen giving up;
a circuit lasts 1 s of model time (time moves only when nothing is in flight, so a circuit
ends after the relayed handshake of a run without faults: the duration limit); no byte or
rate limit (the end marker and the rate limit are :mod:`tests.test_relay_core`'s)."""
PEER_TABLES = (
    "RENDEZVOUS_TABLE",
    "CLIENT_CANDIDATE_TABLE",
    "PEER_CANDIDATE_TABLE",
    "RELAY_LEG_TABLE",
)


class Book(NamedTuple):
    established: tuple[tuple[bytes, str] | None, tuple[bytes, str] | None]
    failed: tuple[bool, bool]
    faults: int
    faulted: bool
    bridged: bool
    stranger: str
    """``none``, ``open`` (connected, said nothing), ``requested`` (sent a RelayRequest naming
    the Client's keys) or ``done``."""
    shut_down: bool
    violation: str | None


class State(NamedTuple):
    snaps: tuple[PeerSnapshot, PeerSnapshot]
    relay: RelaySnapshot
    relay_timers: tuple[tuple[int, float], ...]
    """The relay's armed timers: (connection, deadline), by connection."""
    links: tuple[Link, ...]
    connects: tuple[tuple[int, int], ...]
    listening: bool
    clock: float
    next_accept: int
    book: Book


@dataclass
class RelayModel:
    """See the module docstring; mutants swap in a broken ``peer_class``."""

    faults: int = 1
    evil: bool = False
    garbage: bool = False
    shutdown: bool = False
    limits: bool = False
    peer_class: type[PeerCore] = PeerCore
    name: str = "relay"

    def __post_init__(self) -> None:
        options = [f"faults {self.faults}"]
        options += ["bridging relay"] * self.evil + ["garbage"] * self.garbage
        options += ["shutdown"] * self.shutdown + ["limits"] * self.limits
        self.name = f"{self.name} ({', '.join(options)})"
        self.actors: Sequence[str] = NAMES if self.garbage else NAMES[:3]
        self.keys = {
            CLIENT: Keypair.from_private_raw(bytes([0x41]) * 32),
            PEER: Keypair.from_private_raw(bytes([0x42]) * 32),
        }
        self.configs = {
            side: PeerConfig(
                self.keys[side],
                PublicKey.from_raw(self.keys[1 - side].public_key.raw),
                MEDIATOR_ADDR,
                nonce_source=fixed_nonces(NAMES[side].encode()),
                crypto=CRYPTO,
                **TIMING,
            )
            for side in (CLIENT, PEER)
        }
        self.relay_config = (
            replace(RELAY_CONFIG, max_connections=1) if self.limits else RELAY_CONFIG
        )
        self.completes = not self.limits
        classes = (Rendezvous, ClientCandidate, PeerCandidate, RelayLeg, RelaySession)
        self._coverage = Coverage([compile_machine(cls) for cls in classes])
        self._memo: dict[tuple[int, Hashable, Hashable, float], tuple[PeerSnapshot, Any]] = {}
        self._relay_memo: dict[tuple[Hashable, Hashable, float], tuple[RelaySnapshot, Any]] = {}
        client, peer = (self.keys[side].public_key.raw for side in (CLIENT, PEER))
        self._impersonation = rw.RelayRequest(1, client, peer, PAIRING_ID).encode()
        self._wrong_answer = rw.RelayResponse(bytes(32)).encode()
        stranger = bytes([0x66]) * 32  # a key of its own (it holds it: not that it matters)
        self._other_version = rw.RelayRequest(2, stranger, peer, PAIRING_ID).encode()
        self._self_pairing = rw.RelayRequest(1, stranger, stranger, PAIRING_ID).encode()

    # --- setup ------------------------------------------------------------------------------

    def _introduced(self, side: int) -> tuple[PeerSnapshot, list[Any]]:
        core = self.peer_class(self.configs[side])
        core.start(0.0)
        local = ADDRESS[side]
        core.handle(Opened(MEDIATOR_BASE, MEDIATOR_ADDR, local), 0.0)
        me, them = self.keys[side], self.keys[1 - side]
        info = nonce_info("AdvertiseChallenge", me.public_key.raw, them.public_key.raw)
        challenge = wire.AdvertiseChallenge(CRYPTO.seal(me.public_key, bytes(32), info))
        core.handle(Received(MEDIATOR_BASE, challenge.encode()), 0.0)
        other = wire.Address(*ADDRESS[1 - side])
        message: wire.Message = (
            wire.PeerIdentification(1, PAIRING_ID, other)
            if side == CLIENT
            else wire.PeerDisconnect(PAIRING_ID, wire.Address(*local), other)
        )
        actions = core.handle(Received(MEDIATOR_BASE, message.encode()), 0.0)
        return core.snapshot(), actions

    def initial_states(self) -> list[State]:
        (client, c_actions), (peer, p_actions) = self._introduced(CLIENT), self._introduced(PEER)
        book = Book((None, None), (False, False), self.faults, False, False, "none", False, None)
        relay = RelayCore(self.relay_config).snapshot()
        state = State((client, peer), relay, (), (), (), False, 0.0, FIRST_ACCEPTED, book)
        state = self._apply(state, PEER, peer, tuple(p_actions))
        return [self._apply(state, CLIENT, client, tuple(c_actions))]

    # --- explorer interface -----------------------------------------------------------------

    def coverage(self) -> Coverage:
        return self._coverage

    def describe(self, state: State) -> str:
        sides = ", ".join(f"{NAMES[s]}={self._outcome(state, s)}" for s in (CLIENT, PEER))
        relay = ", ".join(f"{row[0]}:{row[1]}" for row in state.relay[0]) or "none"
        return f"{sides}; links: {len(state.links)}; relay sessions {relay}"

    @staticmethod
    def _outcome(state: State, side: int) -> str:
        done = state.book.established[side]
        if done is not None:
            return f"established ({done[1]})"
        return "failed" if state.book.failed[side] else state.snaps[side].state

    def invariant(self, state: State) -> str | None:
        book = state.book
        if book.violation is not None:
            return book.violation
        client, peer = book.established
        if client is not None and peer is not None and client != peer:
            return f"R1: the Client is established {client[1]} and the Peer {peer[1]}" + (
                "" if client[0] == peer[0] else " with different keys"
            )
        if peer is not None and client != peer:
            return "R2: the Peer committed to a path the Client has not confirmed"
        return None

    def terminal(self, state: State) -> str | None:
        book = state.book
        if book.faulted or book.bridged or not self.completes:
            return None
        if book.established[CLIENT] is None or book.established[PEER] is None:
            outcome = [self._outcome(state, s) for s in (CLIENT, PEER)]
            return f"R3: no fault, yet the Client is {outcome[0]} and the Peer {outcome[1]}"
        return None

    def successors(self, state: State) -> list[tuple[Step, State]]:
        out: list[tuple[Step, State]] = []
        busy = False
        for actor, conn in state.connects:
            busy = True
            out += self._resolve_connect(state, actor, conn)
        for index, link in enumerate(state.links):
            for forward in (True, False):
                moved = self._deliver(state, index, link, forward)
                if moved is not None:
                    busy = True
                    out.append(moved)
        if not busy:
            fired = self._fire_timer(state)
            if fired is not None:
                out.append(fired)
        if state.book.faults > 0 or state.book.stranger in ("open", "requested"):
            out += self._faults(state, busy)  # faults last: the explorer's rule for final states
        return out

    # --- steps ------------------------------------------------------------------------------

    def _step_core(
        self, actor: int, snap: PeerSnapshot, event: Any, now: float
    ) -> tuple[PeerSnapshot, tuple[Any, ...]]:
        key = (actor, snap, event, now)
        hit = self._memo.get(key)
        if hit is None:
            saved = {name: getattr(peer_module, name) for name in PEER_TABLES}
            try:
                for name, table in saved.items():
                    setattr(peer_module, name, self._coverage.recorder(table))
                core = self.peer_class.from_snapshot(snap, self.configs[actor])
                actions = tuple(core.handle(event, now))
                hit = (core.snapshot(), actions)
            finally:
                for name, table in saved.items():
                    setattr(peer_module, name, table)
            self._memo[key] = hit
        return hit

    def _step_relay(
        self, snap: RelaySnapshot, event: Any, now: float
    ) -> tuple[RelaySnapshot, tuple[Any, ...]]:
        """The real RelayCore, rebuilt from ``snap``, handles ``event`` (``"shutdown"``: the
        operator stops it); memoised, the transitions it takes recorded."""
        key = (snap, event, now)
        hit = self._relay_memo.get(key)
        if hit is None:
            table = relay_module.TABLE
            relay_module.TABLE = self._coverage.recorder(table)  # type: ignore[assignment]
            try:
                core = RelayCore.from_snapshot(snap, self.relay_config)
                actions = core.shutdown() if event == "shutdown" else core.handle(event, now)
                hit = (core.snapshot(), tuple(actions))
            finally:
                relay_module.TABLE = table
            self._relay_memo[key] = hit
        return hit

    def _feed(self, state: State, actor: int, event: Any) -> State:
        if actor == RELAY:
            snap, actions = self._step_relay(state.relay, event, state.clock)
            return self._apply_relay(state, snap, actions)
        if actor == STRANGER:  # it reads what it gets and does not care
            return state
        peer_snap, peer_actions = self._step_core(actor, state.snaps[actor], event, state.clock)
        return self._apply(state, actor, peer_snap, peer_actions)

    def _apply(
        self, state: State, actor: int, snap: PeerSnapshot, actions: tuple[Any, ...]
    ) -> State:
        snaps = list(state.snaps)
        snaps[actor] = snap
        state = state._replace(snaps=(snaps[0], snaps[1]))
        links = list(state.links)
        book = state.book
        connects = list(state.connects)
        listening = state.listening
        for action in actions:
            if isinstance(action, Send):
                links = _send(links, actor, action.conn, action.data)
            elif isinstance(action, Close):
                if actor == PEER and action.conn == LISTENER:
                    listening = False
                    continue
                connects = [c for c in connects if c != (actor, action.conn)]
                links = _close(links, actor, action.conn)
            elif isinstance(action, Listen):
                if actor == PEER:
                    listening = True
            elif isinstance(action, Connect):
                if action.remote != MEDIATOR_ADDR:
                    connects.append((actor, action.conn))
            elif isinstance(action, Established):
                established = list(book.established)
                established[actor] = (action.handshake_hash, action.path)
                book = book._replace(established=(established[0], established[1]))
            elif isinstance(action, Failed):
                failed = list(book.failed)
                failed[actor] = True
                book = book._replace(failed=(failed[0], failed[1]))
        links = [link for link in links if link.a_open or link.b_open or link.ab or link.ba]
        return state._replace(
            links=tuple(links), connects=tuple(connects), listening=listening, book=book
        )

    def _apply_relay(self, state: State, snap: RelaySnapshot, actions: tuple[Any, ...]) -> State:
        links = list(state.links)
        timers = dict(state.relay_timers)
        for action in actions:
            if isinstance(action, Send):
                links = _send(links, RELAY, action.conn, action.data)
            elif isinstance(action, ShutdownWrite):
                links = _send(links, RELAY, action.conn, EOF)
            elif isinstance(action, Close):
                timers.pop(action.conn, None)
                links = _close(links, RELAY, action.conn)
            elif isinstance(action, SetTimer):
                if action.deadline is None:
                    timers.pop(action.conn, None)
                else:
                    timers[action.conn] = action.deadline
            # PauseReading/ResumeReading (no rate limit here) and RelayNote: nothing to model
        links = [link for link in links if link.a_open or link.b_open or link.ab or link.ba]
        return state._replace(
            relay=snap, relay_timers=tuple(sorted(timers.items())), links=tuple(links)
        )

    def _resolve_connect(self, state: State, actor: int, conn: int) -> list[tuple[Step, State]]:
        connects = tuple(c for c in state.connects if c != (actor, conn))
        state = state._replace(connects=connects)
        if conn == RELAY_CONN:
            if state.book.shut_down:  # the relay is gone: nothing listens there
                step = Step("deliver", NAMES[actor], "relay connection refused", NAMES[RELAY])
                return [(step, self._feed(state, actor, Closed(conn, "refused")))]
            link = Link(actor, conn, RELAY, actor, (), (), True, True)
            state = state._replace(links=(*state.links, link))
            state = self._feed(state, RELAY, Opened(actor, ADDRESS[actor], RELAY_ADDR))
            step = Step("deliver", NAMES[actor], "relay connection opens", source=NAMES[RELAY])
            return [(step, self._feed(state, actor, Opened(conn, RELAY_ADDR, ADDRESS[actor])))]
        if actor == PEER:  # the Peer's SYNs are dropped by the Client's NAT: never completes
            return [(Step("app", NAMES[actor], f"attempt {conn} stays in flight"), state)]
        refused = (
            Step("deliver", NAMES[CLIENT], f"connect {conn} refused", source=NAMES[PEER]),
            self._feed(state, CLIENT, Closed(conn, "refused")),
        )
        if not state.listening:
            return [refused]
        accepted = state.next_accept
        link = Link(CLIENT, conn, PEER, accepted, (), (), True, True)
        opened = state._replace(links=(*state.links, link), next_accept=accepted + 1)
        opened = self._feed(opened, CLIENT, Opened(conn, ADDRESS[PEER], ADDRESS[CLIENT]))
        opened = self._feed(opened, PEER, Opened(accepted, ADDRESS[CLIENT], ADDRESS[PEER]))
        step = Step("deliver", NAMES[PEER], f"connection {conn} -> {accepted}", NAMES[CLIENT])
        return [(step, opened), refused]

    def _deliver(
        self, state: State, index: int, link: Link, forward: bool
    ) -> tuple[Step, State] | None:
        queue = link.ab if forward else link.ba
        sender, receiver = (link.a, link.b) if forward else (link.b, link.a)
        receiver_conn = link.bc if forward else link.ac
        receiver_open = link.b_open if forward else link.a_open
        sender_open = link.a_open if forward else link.b_open
        links = list(state.links)
        if queue:
            data, rest = queue[0], queue[1:]
            links[index] = link._replace(ab=rest) if forward else link._replace(ba=rest)
            state = state._replace(links=tuple(links))
            step = Step("deliver", NAMES[receiver], _relay_label(data), source=NAMES[sender])
            if receiver == RELAY:
                return step, self._relay_receives(state, receiver_conn, data)
            if data == EOF:  # the end of the stream: the peer's side is gone (as on a close)
                links[index] = (
                    link._replace(ab=(), b_open=False)
                    if forward
                    else link._replace(ba=(), a_open=False)
                )
                links = [x for x in links if x.a_open or x.b_open or x.ab or x.ba]
                state = state._replace(links=tuple(links))
                return step, self._feed(state, receiver, Closed(receiver_conn, None))
            return step, self._feed(state, receiver, Received(receiver_conn, data))
        if not sender_open and receiver_open:
            links[index] = link._replace(b_open=False) if forward else link._replace(a_open=False)
            state = state._replace(links=tuple(x for x in links if x.a_open or x.b_open))
            step = Step("deliver", NAMES[receiver], "close", source=NAMES[sender])
            if receiver == RELAY:
                return step, self._relay_closes(state, receiver_conn, None)
            return step, self._feed(state, receiver, Closed(receiver_conn, None))
        return None

    # --- the relay --------------------------------------------------------------------------

    def _relay_receives(self, state: State, conn: int, data: bytes) -> State:
        if state.book.bridged and conn in (CLIENT, BRIDGE):  # the attacker forwards as it is
            links = _send(list(state.links), RELAY, BRIDGE if conn == CLIENT else CLIENT, data)
            return state._replace(links=tuple(links))
        return self._feed(state, RELAY, Received(conn, data))

    def _relay_closes(self, state: State, conn: int, error: str | None) -> State:
        if state.book.bridged and conn in (CLIENT, BRIDGE):  # the attacker closes the other
            links = _close(list(state.links), RELAY, BRIDGE if conn == CLIENT else CLIENT)
            links = [link for link in links if link.a_open or link.b_open or link.ab or link.ba]
            return state._replace(links=tuple(links))
        return self._feed(state, RELAY, Closed(conn, error))

    @staticmethod
    def _relay_state(state: State, conn: int) -> str | None:
        for row in state.relay[0]:
            if row[0] == conn:
                return row[1]
        return None

    # --- faults -----------------------------------------------------------------------------

    def _faults(self, state: State, busy: bool) -> list[tuple[Step, State]]:
        out = self._stranger_moves(state)
        if state.book.faults <= 0:
            return out
        book = state.book._replace(faults=state.book.faults - 1, faulted=True)
        for index, link in enumerate(state.links):
            if not (link.a_open and link.b_open):
                continue
            cut = state._replace(book=book)
            links = list(cut.links)
            del links[index]
            cut = cut._replace(links=tuple(links))
            for actor, conn in ((link.a, link.ac), (link.b, link.bc)):
                if actor == RELAY:
                    cut = self._relay_closes(cut, conn, "reset")
                else:
                    cut = self._feed(cut, actor, Closed(conn, "reset"))
            names = f"{NAMES[link.a]} {link.ac}"
            out.append((Step("drop", names, "reset", source=NAMES[link.b], fault=True), cut))
        if busy:  # a delay elsewhere: any actor's next timer may fire before what is in flight
            for actor in (CLIENT, PEER, RELAY):
                fired = self._fire_timer(state._replace(book=book), actor)
                if fired is not None:
                    step, nxt = fired
                    text = step.text + " (late network)"
                    out.append((Step("timer", step.actor, text, fault=True), nxt))
        if (
            self.evil
            and not state.book.bridged
            and state.listening
            and self._relay_state(state, CLIENT) == "waiting"
        ):
            out.append(self._bridge(state))
        if self.garbage:
            out += self._inject(state._replace(book=book))
            if state.book.stranger == "none":
                opened = state._replace(book=state.book._replace(faults=book.faults))
                opened = self._stranger_connects(opened)
                step = Step("app", "Stranger", "connects to the relay", fault=True)
                out.append((step, opened))
        if self.shutdown and not state.book.shut_down:
            down = state._replace(book=book._replace(shut_down=True))
            snap, actions = self._step_relay(down.relay, "shutdown", down.clock)
            step = Step("app", "Relay", "the operator shuts the relay down", fault=True)
            out.append((step, self._apply_relay(down, snap, actions)))
        return out

    def _inject(self, state: State) -> list[tuple[Step, State]]:
        """A malformed frame at the end of each direction of each live relay leg."""
        out = []
        for index, link in enumerate(state.links):
            if link.b != RELAY or link.a not in (CLIENT, PEER) or state.book.bridged:
                continue
            for forward in (True, False):
                if not (link.a_open if forward else link.b_open):
                    continue
                links = list(state.links)
                links[index] = (
                    link._replace(ab=(*link.ab, GARBAGE))
                    if forward
                    else link._replace(ba=(*link.ba, GARBAGE))
                )
                target = NAMES[RELAY] if forward else NAMES[link.a]
                text = f"a malformed frame injected towards the {target}"
                step = Step("app", target, text, source=NAMES[link.a], fault=True)
                out.append((step, state._replace(links=tuple(links))))
        return out

    def _stranger_connects(self, state: State) -> State:
        link = Link(STRANGER, 0, RELAY, STRANGER_LEG, (), (), True, True)
        state = state._replace(
            links=(*state.links, link), book=state.book._replace(stranger="open")
        )
        return self._feed(state, RELAY, Opened(STRANGER_LEG, ADDRESS[STRANGER], RELAY_ADDR))

    def _stranger_moves(self, state: State) -> list[tuple[Step, State]]:
        """The stranger's connection (faults that need not happen, so that a run in which it
        is merely silent still ends): what it may say next."""
        stage = state.book.stranger
        if stage not in ("open", "requested"):
            return []
        index, _ = _find(list(state.links), STRANGER, 0)
        if index is None or not state.links[index].a_open:
            return []
        moves: list[tuple[str, str, bytes | None]] = [("done", "closes its connection", None)]
        if stage == "open":
            moves += [("done", "sends a malformed frame", GARBAGE)]
            moves += [("requested", "sends RelayRequest naming the Client", self._impersonation)]
            moves += [("done", "sends a RelayRequest of version 2", self._other_version)]
            moves += [("done", "asks to be relayed to itself", self._self_pairing)]
        else:
            moves += [("done", "answers the challenge it cannot open", self._wrong_answer)]
        out = []
        for after, text, data in moves:
            links = list(state.links)
            links = _close(links, STRANGER, 0) if data is None else _send(links, STRANGER, 0, data)
            nxt = state._replace(links=tuple(links), book=state.book._replace(stranger=after))
            out.append((Step("app", "Stranger", text, fault=True), nxt))
        return out

    def _bridge(self, state: State) -> tuple[Step, State]:
        """The relay operator takes the Client's waiting leg out of RelayCore and splices it to
        a connection it opens to the Peer's listener."""
        book = state.book._replace(faults=state.book.faults - 1, bridged=True)
        snap, _ = self._step_relay(state.relay, Closed(CLIENT, "taken over"), state.clock)
        timers = tuple(t for t in state.relay_timers if t[0] != CLIENT)
        accepted = state.next_accept
        link = Link(RELAY, BRIDGE, PEER, accepted, (), (), True, True)
        nxt = state._replace(
            relay=snap,
            relay_timers=timers,
            links=(*state.links, link),
            next_accept=accepted + 1,
            book=book,
        )
        nxt = self._feed(nxt, PEER, Opened(accepted, RELAY_ADDR, ADDRESS[PEER]))
        links = _send(list(nxt.links), RELAY, CLIENT, rw.RelayConnected().encode())
        nxt = nxt._replace(links=tuple(links))
        step = Step("app", "Relay", "bridges the Client's leg to the Peer's listener", fault=True)
        return step, nxt

    def _fire_timer(self, state: State, only: int | None = None) -> tuple[Step, State] | None:
        """The earliest timer (of actor ``only``, if given) fires."""
        due: list[tuple[float, int, int]] = []
        for side in (CLIENT, PEER):
            if state.book.established[side] or state.book.failed[side] or only not in (None, side):
                continue
            for timer, deadline in state.snaps[side].timers:
                due.append((deadline, side, timer))
        if only in (None, RELAY):
            due += [(deadline, RELAY, conn) for conn, deadline in state.relay_timers]
        if not due:
            return None
        deadline, actor, timer = min(due)
        state = state._replace(clock=max(state.clock, deadline))
        if actor == RELAY:
            timers = tuple(t for t in state.relay_timers if t[0] != timer)
            state = state._replace(relay_timers=timers)
        step = Step("timer", NAMES[actor], f"timer {timer}")
        return step, self._feed(state, actor, TimerFired(timer))


def _send(links: list[Link], actor: int, conn: int, data: bytes) -> list[Link]:
    """Queue ``data`` from ``actor``'s end ``conn`` (nothing if that end is closed or gone; the
    stranger reads and ignores whatever it gets, so nothing is queued towards it)."""
    index, is_a = _find(links, actor, conn)
    if index is not None:
        link = links[index]
        if (link.b if is_a else link.a) == STRANGER:
            return links
        if is_a and link.a_open:
            links[index] = link._replace(ab=(*link.ab, data))
        elif not is_a and link.b_open:
            links[index] = link._replace(ba=(*link.ba, data))
    return links


def _close(links: list[Link], actor: int, conn: int) -> list[Link]:
    """``actor`` closes its end ``conn``: what was on its way to it is lost."""
    index, is_a = _find(links, actor, conn)
    if index is not None:
        link = links[index]
        links[index] = (
            link._replace(a_open=False, ba=()) if is_a else link._replace(b_open=False, ab=())
        )
    return links


def _relay_label(data: bytes) -> str:
    if data == EOF:
        return "end of stream (half close)"
    if data == GARBAGE:
        return "malformed frame"
    if data[:2] == wire.MAGIC and len(data) > 3 and data[3] in rw.RELAY_TYPES:
        return type(rw.decode_relay(data)).__name__
    if data[:2] == rw.END_MARKER:
        return "end marker + RelayAbort"
    return _label(data)


def build(
    *,
    faults: int = 1,
    evil: bool = False,
    garbage: bool = False,
    shutdown: bool = False,
    limits: bool = False,
    mutant: str | None = None,
) -> RelayModel:
    """Entry point of ``p2psc explore relay``."""
    if mutant is not None:
        from p2psc.models.mutants import relay_mutant

        return relay_mutant(mutant, faults=faults, evil=evil)
    return RelayModel(faults=faults, evil=evil, garbage=garbage, shutdown=shutdown, limits=limits)
