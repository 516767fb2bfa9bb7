"""The path-agreement model (issue 14; spec/relay.md section 5): the real Client and Peer cores
with ``relay="auto"``, a direct path that may or may not form, and a relay.

Actors: ``Client`` and ``Peer`` (real :class:`p2psc.core.peer.PeerCore` instances, introduced
by a scripted Mediator with a fixed pairing id), and ``Relay``: a minimal relay written here
(it challenges each leg with the symbolic crypto, waits for both, sends RelayConnected and
forwards bytes; :mod:`p2psc.core.relay` is tested on its own). The network: each connect of
the Client to the Peer's listener either connects or is refused (both explored: a NAT that
sometimes lets a SYN through); the Peer's own attempts never complete; bytes on a connection
arrive in order; timers fire when nothing is in flight (a timely network).

Faults (each a step the environment may take but need not; at most ``faults`` of them): a
connection is cut (both ends see a reset), or a timer fires while bytes are still in flight
(a late delivery). With ``evil``, the relay may instead *bridge*: it opens a connection to the
Peer's listener and splices the Client's relay leg to it (an attacker that forwards bytes
between the two paths).

Properties:

- R1 path agreement: when both sides are established they hold the same path and the same
  handshake hash;
- R2 the Client decides: whenever the Peer is established, the Client is established on the
  same path with the same handshake hash;
- R3 liveness: a run without faults (and without a bridging relay) ends with both established.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from p2psc.models.direct_model import Link, _find, _label
from p2psc.models.explorer import Coverage, Step
from p2psc.models.symbolic_crypto import SymbolicCrypto, fixed_nonces

import p2psc.core.peer as peer_module
from p2psc import relay_wire as rw
from p2psc import wire
from p2psc.core.io import Close, Closed, Connect, Failed, Listen, Opened, Received, Send, TimerFired
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
from p2psc.keys import Keypair, PublicKey, nonce_info
from p2psc.machines.compiler import compile_machine
from p2psc.machines.handshake import ClientCandidate, PeerCandidate, Rendezvous
from p2psc.machines.relay import RelayLeg

__all__ = ["RelayModel", "build"]

CLIENT, PEER, RELAY = 0, 1, 2
NAMES = ("Client", "Peer", "Relay")
MEDIATOR_ADDR = ("198.51.100.1", 7000)
RELAY_ADDR = ("198.51.100.2", 7001)
ADDRESS = {CLIENT: ("198.51.100.10", 40000), PEER: ("198.51.100.20", 50000)}
PAIRING_ID = bytes(range(16))
RELAY_NONCE = bytes([0x52]) * 32
CRYPTO = SymbolicCrypto()
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
TABLE_NAMES = (
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
    legs: tuple[str, str]
    """The relay's view of each side's leg: ``none``, ``requested``, ``ready`` (answered),
    ``spliced`` (to the partner's leg) or ``bridged`` (the Client's, to the Peer's listener)."""
    violation: str | None


class State(NamedTuple):
    snaps: tuple[PeerSnapshot, PeerSnapshot]
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
    peer_class: type[PeerCore] = PeerCore
    name: str = "relay"

    def __post_init__(self) -> None:
        self.name = f"{self.name} (faults {self.faults}{', bridging relay' if self.evil else ''})"
        self.actors: Sequence[str] = NAMES
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
        classes = (Rendezvous, ClientCandidate, PeerCandidate, RelayLeg)
        self._coverage = Coverage([compile_machine(cls) for cls in classes])
        self._memo: dict[tuple[int, Hashable, Hashable, float], tuple[PeerSnapshot, Any]] = {}

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
        book = Book((None, None), (False, False), self.faults, False, False, ("none", "none"), None)
        state = State((client, peer), (), (), False, 0.0, FIRST_ACCEPTED, book)
        state = self._apply(state, PEER, peer, tuple(p_actions))
        return [self._apply(state, CLIENT, client, tuple(c_actions))]

    # --- explorer interface -----------------------------------------------------------------

    def coverage(self) -> Coverage:
        return self._coverage

    def describe(self, state: State) -> str:
        sides = ", ".join(f"{NAMES[s]}={self._outcome(state, s)}" for s in (CLIENT, PEER))
        return f"{sides}; links: {len(state.links)}; relay legs {state.book.legs}"

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
        if book.faulted or book.bridged:
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
        if state.book.faults > 0:  # faults last: the explorer's rule for final states
            out += self._faults(state, busy)
        return out

    # --- steps ------------------------------------------------------------------------------

    def _step_core(
        self, actor: int, snap: PeerSnapshot, event: Any, now: float
    ) -> tuple[PeerSnapshot, tuple[Any, ...]]:
        key = (actor, snap, event, now)
        hit = self._memo.get(key)
        if hit is None:
            saved = {name: getattr(peer_module, name) for name in TABLE_NAMES}
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

    def _feed(self, state: State, actor: int, event: Any) -> State:
        snap, actions = self._step_core(actor, state.snaps[actor], event, state.clock)
        return self._apply(state, actor, snap, actions)

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
                index, is_a = _find(links, actor, action.conn)
                if index is not None:
                    link = links[index]
                    if is_a and link.a_open:
                        links[index] = link._replace(ab=(*link.ab, action.data))
                    elif not is_a and link.b_open:
                        links[index] = link._replace(ba=(*link.ba, action.data))
            elif isinstance(action, Close):
                if actor == PEER and action.conn == LISTENER:
                    listening = False
                    continue
                connects = [c for c in connects if c != (actor, action.conn)]
                index, is_a = _find(links, actor, action.conn)
                if index is not None:
                    link = links[index]
                    links[index] = (
                        link._replace(a_open=False, ba=())
                        if is_a
                        else link._replace(b_open=False, ab=())
                    )
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

    def _resolve_connect(self, state: State, actor: int, conn: int) -> list[tuple[Step, State]]:
        connects = tuple(c for c in state.connects if c != (actor, conn))
        state = state._replace(connects=connects)
        if conn == RELAY_CONN:  # the relay always answers
            link = Link(actor, conn, RELAY, actor, (), (), True, True)
            state = state._replace(links=(*state.links, link))
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
            return step, self._feed(state, receiver, Received(receiver_conn, data))
        if not sender_open and receiver_open:
            links[index] = link._replace(b_open=False) if forward else link._replace(a_open=False)
            state = state._replace(links=tuple(x for x in links if x.a_open or x.b_open))
            step = Step("deliver", NAMES[receiver], "close", source=NAMES[sender])
            if receiver == RELAY:
                return step, self._relay_closes(state, receiver_conn)
            return step, self._feed(state, receiver, Closed(receiver_conn, None))
        return None

    # --- the relay --------------------------------------------------------------------------

    def _relay_link(self, state: State, side: int) -> int | None:
        index, _ = _find(list(state.links), RELAY, side)
        return index

    def _relay_send(self, state: State, side: int, data: bytes) -> State:
        """Queue ``data`` from the relay towards ``side``'s relay leg (or, bridged, towards the
        Peer's accepted connection, named ``-1`` at the relay)."""
        index, _ = _find(list(state.links), RELAY, side)
        if index is None:
            return state
        links = list(state.links)
        link = links[index]
        if link.a == RELAY:
            if link.a_open:
                links[index] = link._replace(ab=(*link.ab, data))
        elif link.b_open:
            links[index] = link._replace(ba=(*link.ba, data))
        return state._replace(links=tuple(links))

    def _relay_receives(self, state: State, leg: int, data: bytes) -> State:
        book = state.book
        legs = list(book.legs)
        if leg == -1:  # the bridged connection to the Peer's listener: to the Client's leg
            return self._relay_send(state, CLIENT, data)
        stage = legs[leg]
        if stage == "spliced":
            return self._relay_send(state, 1 - leg, data)
        if stage == "bridged":
            return self._relay_send(state, -1, data)
        message = rw.decode_relay(data)
        if isinstance(message, rw.RelayRequest) and stage == "none":
            info = rw.challenge_info(message.our_key, message.their_key, message.pairing_id)
            sealed = CRYPTO.seal(PublicKey.from_raw(message.our_key), RELAY_NONCE, info)
            legs[leg] = "requested"
            state = state._replace(book=book._replace(legs=(legs[0], legs[1])))
            return self._relay_send(state, leg, rw.RelayChallenge(sealed).encode())
        if isinstance(message, rw.RelayResponse) and stage == "requested":
            legs[leg] = "ready"
            if legs[1 - leg] == "ready":
                legs = ["spliced", "spliced"]
            state = state._replace(book=book._replace(legs=(legs[0], legs[1])))
            if legs[leg] == "spliced":
                hello = rw.RelayConnected().encode()
                state = self._relay_send(state, leg, hello)
                state = self._relay_send(state, 1 - leg, hello)
            return state
        raise AssertionError(f"the model's relay got {message!r} in stage {stage}")

    def _relay_closes(self, state: State, leg: int) -> State:
        """A leg closed: the relay closes what it was spliced to."""
        legs = list(state.book.legs)
        targets: list[int] = []
        if leg == -1:
            targets = [CLIENT]
        elif legs[leg] == "spliced":
            targets = [1 - leg]
        elif legs[leg] == "bridged":
            targets = [-1]
        if leg in (CLIENT, PEER):
            legs[leg] = "closed"
        state = state._replace(book=state.book._replace(legs=(legs[0], legs[1])))
        links = list(state.links)
        for target in targets:
            index, is_a = _find(links, RELAY, target)
            if index is not None:
                link = links[index]
                links[index] = (
                    link._replace(a_open=False, ba=())
                    if is_a
                    else link._replace(b_open=False, ab=())
                )
        return state._replace(links=tuple(links))

    # --- faults -----------------------------------------------------------------------------

    def _faults(self, state: State, busy: bool) -> list[tuple[Step, State]]:
        out: list[tuple[Step, State]] = []
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
                    cut = self._relay_closes(cut, conn)
                else:
                    cut = self._feed(cut, actor, Closed(conn, "reset"))
            names = f"{NAMES[link.a]} {link.ac}"
            out.append((Step("drop", names, "reset", source=NAMES[link.b], fault=True), cut))
        if busy:
            fired = self._fire_timer(state._replace(book=book))
            if fired is not None:
                step, nxt = fired
                out.append(
                    (Step("timer", step.actor, step.text + " (late network)", fault=True), nxt)
                )
        if self.evil and state.book.legs[CLIENT] == "ready" and state.listening:
            out.append(self._bridge(state))
        return out

    def _bridge(self, state: State) -> tuple[Step, State]:
        """The relay splices the Client's leg to a connection it opens to the Peer's listener."""
        book = state.book._replace(
            faults=state.book.faults - 1, bridged=True, legs=("bridged", state.book.legs[PEER])
        )
        accepted = state.next_accept
        link = Link(RELAY, -1, PEER, accepted, (), (), True, True)
        nxt = state._replace(links=(*state.links, link), next_accept=accepted + 1, book=book)
        nxt = self._feed(nxt, PEER, Opened(accepted, RELAY_ADDR, ADDRESS[PEER]))
        nxt = self._relay_send(nxt, CLIENT, rw.RelayConnected().encode())
        step = Step("app", "Relay", "bridges the Client's leg to the Peer's listener", fault=True)
        return step, nxt

    def _fire_timer(self, state: State) -> tuple[Step, State] | None:
        due: list[tuple[float, int, int]] = []
        for side in (CLIENT, PEER):
            if state.book.established[side] or state.book.failed[side]:
                continue
            for timer, deadline in state.snaps[side].timers:
                due.append((deadline, side, timer))
        if not due:
            return None
        deadline, side, timer = min(due)
        state = state._replace(clock=max(state.clock, deadline))
        step = Step("timer", NAMES[side], f"timer {timer}")
        return step, self._feed(state, side, TimerFired(timer))


def _relay_label(data: bytes) -> str:
    if data[:2] == wire.MAGIC and len(data) > 3 and data[3] in rw.RELAY_TYPES:
        return type(rw.decode_relay(data)).__name__
    return _label(data)


def build(*, faults: int = 1, evil: bool = False, mutant: str | None = None) -> RelayModel:
    """Entry point of ``p2psc explore relay``."""
    if mutant is not None:
        from p2psc.models.mutants import relay_mutant

        return relay_mutant(mutant, faults=faults, evil=evil)
    return RelayModel(faults=faults, evil=evil)
