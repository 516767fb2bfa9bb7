"""The direct-handshake model: the real Client and Peer cores after their introduction, and a
stranger who sees all traffic, opens connections to the Peer's listener and replays anything.

Why a model of its own: the mediation model has no adversary; this one has nothing but the
direct path, so the stranger's choices stay affordable. Actors: ``Client`` and ``Peer`` (real
:class:`p2psc.core.peer.PeerCore` instances, brought past the Mediator by a scripted
introduction with a fixed pairing id and fixed ephemerals), and ``Stranger``. The network:
the Client's connect attempts reach the Peer's listener while it listens (the Peer's own
attempts never complete: a NAT that drops SYNs); bytes on a connection arrive in order, one
``Send`` at a time; a close arrives after the bytes sent before it. The stranger has a budget of
actions; each is one of: open a connection to the Peer's listener (from its own address), or
send on one of its connections any chunk it has seen on any connection, or the HandshakeInit it
recorded in an earlier pairing of the same two keys. Timers fire when no byte or connect is in
flight, earliest first.

Properties (``spec/properties.md``, D1-D4):

- D1 authenticity: every Established names the partner's key; when both sides are established
  they hold the same handshake hash (the same keys; whatever relayed the bytes saw ciphertext);
- D2 no commit without key confirmation: whenever the Peer is established, the Client is
  established with the same handshake hash (the Client commits before it sends the confirmation);
- D3 the stranger cannot break the pairing: in every final state in which the stranger sent
  nothing it copied from this pairing, both sides are established (copies of this pairing's
  HandshakeInit can hold a candidate slot until its deadline; spec/properties.md says why that
  is the accepted limit);
- D4 nothing of another pairing is useful: the Peer never answers the recorded HandshakeInit of
  the earlier pairing.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from p2psc.models.crypto_memo import CryptoMemo
from p2psc.models.explorer import Coverage, Step

import p2psc.core.peer as peer_module
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
    TimerFired,
)
from p2psc.core.peer import (
    FIRST_ACCEPTED,
    LISTENER,
    MEDIATOR_BASE,
    Established,
    PeerConfig,
    PeerCore,
    PeerSnapshot,
)
from p2psc.keys import HPKE, Keypair, PublicKey, nonce_info
from p2psc.machines.compiler import compile_machine
from p2psc.machines.handshake import ClientCandidate, PeerCandidate, Rendezvous
from p2psc.noise import HandshakeState

__all__ = ["DirectModel", "build"]

CLIENT, PEER, STRANGER = 0, 1, 2
NAMES = ("Client", "Peer", "Stranger")
MEDIATOR_ADDR = ("198.51.100.1", 7000)
ADDRESS = {CLIENT: ("198.51.100.10", 40000), PEER: ("198.51.100.20", 50000)}
STRANGER_HOST = "198.51.100.66"
PAIRING_ID = bytes(range(16))
EARLIER_PAIRING_ID = bytes(range(16, 32))
TIMING: dict[str, Any] = {
    "timeout": 30.0,
    "step_timeout": 5.0,
    "punch_timeout": 10.0,
    "punch_interval": 4.0,
    "punch_backoff": 1.0,
    "punch_max_interval": 4.0,
    "punch_attempt_timeout": 60.0,  # the Peer's attempts never complete: keep them quiet
    "candidate_timeout": 20.0,  # silent strangers outlive the attempt: evictions must work
    "max_candidates": 2,
    "max_candidates_per_source": 2,
    "advertise_retries": 0,
}


def _fixed(label: bytes) -> Any:
    import hashlib

    seed = hashlib.sha256(b"p2psc direct model " + label).digest()
    return lambda size: (seed * (size // 32 + 1))[:size]


class Link(NamedTuple):
    """One TCP connection: ``a`` (the connecting side) and ``b``, their connection names, bytes
    in flight each way, whether each side still has it open."""

    a: int
    ac: int
    b: int
    bc: int
    ab: tuple[bytes, ...]
    ba: tuple[bytes, ...]
    a_open: bool
    b_open: bool


class Book(NamedTuple):
    established: tuple[bytes | None, bytes | None]  # handshake hash per real side
    failed: tuple[bool, bool]
    budget: int
    seen: frozenset[bytes]
    copied: bool  # the stranger sent something it saw in this pairing
    violation: str | None


class State(NamedTuple):
    snaps: tuple[PeerSnapshot, PeerSnapshot]
    links: tuple[Link, ...]
    connects: tuple[tuple[int, int], ...]  # (actor, conn) of Connects not yet resolved
    listening: bool  # the Peer's listener
    clock: float
    next_accept: int
    next_stranger: int
    book: Book


@dataclass
class DirectModel:
    """See the module docstring; mutants swap in a broken ``peer_class``."""

    budget: int = 2
    peer_class: type[PeerCore] = PeerCore
    name: str = "direct"

    def __post_init__(self) -> None:
        self.name = f"{self.name} (stranger budget {self.budget})"
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
                nonce_source=_fixed(NAMES[side].encode()),
                **TIMING,
            )
            for side in (CLIENT, PEER)
        }
        tables = [compile_machine(cls) for cls in (Rendezvous, ClientCandidate, PeerCandidate)]
        self._coverage = Coverage(tables)
        self._memo: dict[
            tuple[int, Hashable, Hashable, float], tuple[PeerSnapshot, tuple[Any, ...]]
        ] = {}
        self._crypto_memo = CryptoMemo()
        self.recorded_init = self._earlier_init()

    # --- setup ------------------------------------------------------------------------------

    def _earlier_init(self) -> bytes:
        """The Client's HandshakeInit of an earlier pairing of the same two keys, as the
        stranger recorded it (the mutant's prologue is used, so a mutant that drops the pairing
        id is judged by its own rule)."""
        core = self.peer_class(self.configs[CLIENT])
        core.pairing_id = EARLIER_PAIRING_ID
        client, peer = self.keys[CLIENT].public_key.raw, self.keys[PEER].public_key.raw
        handshake = HandshakeState.initiator(
            self.keys[CLIENT].to_private_raw(),
            peer,
            core._prologue(client, peer),
            bytes([0x77]) * 32,
        )
        return wire.HandshakeInit(handshake.write_message(b"")).encode()

    def _introduced(self, side: int) -> tuple[PeerSnapshot, list[Any]]:
        core = self.peer_class(self.configs[side])
        core.start(0.0)
        local = ADDRESS[side]
        core.handle(Opened(MEDIATOR_BASE, MEDIATOR_ADDR, local), 0.0)
        me, them = self.keys[side], self.keys[1 - side]
        info = nonce_info("AdvertiseChallenge", me.public_key.raw, them.public_key.raw)
        challenge = wire.AdvertiseChallenge(HPKE.seal(me.public_key, bytes(32), info))
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
        state = State(
            snaps=(client, peer),
            links=(),
            connects=(),
            listening=False,
            clock=0.0,
            next_accept=FIRST_ACCEPTED,
            next_stranger=1,
            book=Book((None, None), (False, False), self.budget, frozenset(), False, None),
        )
        state = self._apply(state, PEER, peer, tuple(p_actions))
        state = self._apply(state, CLIENT, client, tuple(c_actions))
        return [state]

    # --- explorer interface -----------------------------------------------------------------

    def coverage(self) -> Coverage:
        return self._coverage

    def describe(self, state: State) -> str:
        sides = ", ".join(f"{NAMES[s]}={self._outcome(state, s)}" for s in (CLIENT, PEER))
        return f"{sides}; links: {len(state.links)}; stranger budget {state.book.budget}"

    @staticmethod
    def _outcome(state: State, side: int) -> str:
        if state.book.established[side]:
            return "established"
        return "failed" if state.book.failed[side] else state.snaps[side].state

    def invariant(self, state: State) -> str | None:
        book = state.book
        if book.violation is not None:
            return book.violation
        client, peer = book.established
        if client is not None and peer is not None and client != peer:
            return "D1: both sides are established with different keys (handshake hashes)"
        if peer is not None and client != peer:
            return "D2: the Peer committed although the Client has not confirmed these keys"
        return None

    def terminal(self, state: State) -> str | None:
        book = state.book
        if book.copied:
            return None
        if not (book.established[CLIENT] and book.established[PEER]):
            outcome = [self._outcome(state, s) for s in (CLIENT, PEER)]
            return (
                "D3: the stranger only sent silence or messages of another pairing, yet the "
                f"Client is {outcome[0]} and the Peer {outcome[1]}"
            )
        return None

    def successors(self, state: State) -> list[tuple[Step, State]]:
        out: list[tuple[Step, State]] = []
        busy = False
        for actor, conn in state.connects:
            busy = True
            out.append(self._resolve_connect(state, actor, conn))
        for index, link in enumerate(state.links):
            for forward in (True, False):
                moved = self._deliver(state, index, link, forward)
                if moved is not None:
                    busy = True
                    out.append(moved)
        if state.book.budget > 0:
            out += self._stranger_moves(state)
        if not busy:
            fired = self._fire_timer(state)
            if fired is not None:
                out.append(fired)
        return out

    # --- steps ------------------------------------------------------------------------------

    def _step_core(
        self, actor: int, snap: PeerSnapshot, event: Any, now: float
    ) -> tuple[PeerSnapshot, tuple[Any, ...]]:
        key = (actor, snap, event, now)
        hit = self._memo.get(key)
        if hit is None:
            saved = {
                name: getattr(peer_module, name)
                for name in ("RENDEZVOUS_TABLE", "CLIENT_CANDIDATE_TABLE", "PEER_CANDIDATE_TABLE")
            }
            try:
                for name, table in saved.items():
                    setattr(peer_module, name, self._coverage.recorder(table))
                with self._crypto_memo:
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
                    book = book._replace(seen=book.seen | {action.data})
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
                book = self._established(book, actor, action)
            elif isinstance(action, Failed):
                failed = list(book.failed)
                failed[actor] = True
                book = book._replace(failed=(failed[0], failed[1]))
        links = [link for link in links if link.a_open or link.b_open or link.ab or link.ba]
        return state._replace(
            links=tuple(links), connects=tuple(connects), listening=listening, book=book
        )

    def _established(self, book: Book, actor: int, action: Established) -> Book:
        if action.peer_key.raw != self.keys[1 - actor].public_key.raw and book.violation is None:
            book = book._replace(violation=f"D1: {NAMES[actor]} established with a stranger's key")
        established = list(book.established)
        established[actor] = action.handshake_hash
        return book._replace(established=(established[0], established[1]))

    def _resolve_connect(self, state: State, actor: int, conn: int) -> tuple[Step, State]:
        connects = tuple(c for c in state.connects if c != (actor, conn))
        state = state._replace(connects=connects)
        if actor == PEER:  # the Peer's SYNs are dropped by the Client's NAT: never completes
            return Step("app", NAMES[actor], f"attempt {conn} stays in flight"), state
        if not state.listening:
            step = Step("deliver", NAMES[CLIENT], f"connect {conn} refused", source=NAMES[PEER])
            return step, self._feed(state, CLIENT, Closed(conn, "refused"))
        accepted = state.next_accept
        link = Link(CLIENT, conn, PEER, accepted, (), (), True, True)
        state = state._replace(links=(*state.links, link), next_accept=accepted + 1)
        state = self._feed(state, CLIENT, Opened(conn, ADDRESS[PEER], ADDRESS[CLIENT]))
        state = self._feed(state, PEER, Opened(accepted, ADDRESS[CLIENT], ADDRESS[PEER]))
        return Step(
            "deliver", NAMES[PEER], f"connection {conn} -> {accepted}", source=NAMES[CLIENT]
        ), state

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
            label = _label(data)
            step = Step("deliver", NAMES[receiver], label, source=NAMES[sender])
            if receiver == STRANGER:
                book = state.book._replace(seen=state.book.seen | {data})
                return step, state._replace(book=book)
            nxt = self._feed(state, receiver, Received(receiver_conn, data))
            if data == self.recorded_init and receiver == PEER and nxt.book.violation is None:
                before = dict(state.snaps[PEER].candidates).get(receiver_conn)
                answered = dict(nxt.snaps[PEER].candidates).get(receiver_conn)
                if (
                    before is not None
                    and before.state != "answered"
                    and answered is not None
                    and answered.state == "answered"
                ):
                    violation = "D4: the Peer answered the HandshakeInit of an earlier pairing"
                    nxt = nxt._replace(book=nxt.book._replace(violation=violation))
            return step, nxt
        if not sender_open and receiver_open:
            links[index] = link._replace(b_open=False) if forward else link._replace(a_open=False)
            state = state._replace(links=tuple(x for x in links if x.a_open or x.b_open))
            step = Step("deliver", NAMES[receiver], "close", source=NAMES[sender])
            if receiver == STRANGER:
                return step, state
            return step, self._feed(state, receiver, Closed(receiver_conn, None))
        return None

    def _stranger_moves(self, state: State) -> list[tuple[Step, State]]:
        out: list[tuple[Step, State]] = []
        book = state.book._replace(budget=state.book.budget - 1)
        if state.listening:
            conn = state.next_stranger
            accepted = state.next_accept
            link = Link(STRANGER, conn, PEER, accepted, (), (), True, True)
            nxt = state._replace(
                links=(*state.links, link),
                next_accept=accepted + 1,
                next_stranger=conn + 1,
                book=book,
            )
            source = (STRANGER_HOST, 6000 + conn)
            nxt = self._feed(nxt, PEER, Opened(accepted, source, ADDRESS[PEER]))
            out.append(
                (Step("app", "Stranger", f"opens a connection to the Peer ({accepted})"), nxt)
            )
        payloads = sorted(state.book.seen | {self.recorded_init})
        for index, link in enumerate(state.links):
            if link.a != STRANGER or not link.a_open or not link.b_open:
                continue
            for data in payloads:
                copied = data != self.recorded_init
                links = list(state.links)
                links[index] = link._replace(ab=(*link.ab, data))
                what = (
                    "the recorded HandshakeInit of an earlier pairing"
                    if not copied
                    else _label(data)
                )
                nxt = state._replace(
                    links=tuple(links), book=book._replace(copied=book.copied or copied)
                )
                out.append((Step("app", "Stranger", f"sends {what} on {link.ac}"), nxt))
        return out

    def _fire_timer(self, state: State) -> tuple[Step, State] | None:
        due: list[tuple[float, int, int]] = []
        for side in (CLIENT, PEER):
            snap = state.snaps[side]
            if state.book.established[side] or state.book.failed[side]:
                continue
            for timer, deadline in snap.timers:
                due.append((deadline, side, timer))
        if not due:
            return None
        deadline, side, timer = min(due)
        state = state._replace(clock=max(state.clock, deadline))
        return Step("timer", NAMES[side], f"timer {timer}"), self._feed(
            state, side, TimerFired(timer)
        )


def _find(links: list[Link], actor: int, conn: int) -> tuple[int | None, bool]:
    for index, link in enumerate(links):
        if link.a == actor and link.ac == conn:
            return index, True
        if link.b == actor and link.bc == conn:
            return index, False
    return None, False


def _label(data: bytes) -> str:
    if data[:2] == wire.MAGIC:
        try:
            return type(wire.decode(data)).__name__
        except Exception:  # a label must never fail
            return f"{len(data)} bytes"
    return f"record ({len(data)} bytes)"


def build(*, budget: int = 2, mutant: str | None = None) -> DirectModel:
    """Entry point of ``p2psc explore direct``."""
    if mutant is not None:
        from p2psc.models.mutants import direct_mutant

        return direct_mutant(mutant, budget=budget)
    return DirectModel(budget=budget)
