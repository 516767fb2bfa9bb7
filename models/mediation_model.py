"""The mediation model: the real MediatorCore and real PeerCores, over a modelled network.

Actors: ``mediator`` (:class:`p2psc.core.mediator.MediatorCore`), ``A`` and ``B`` (each wants
the other) and, optionally, ``C`` (wants ``A``, who does not want ``C``), all three
:class:`p2psc.core.peer.PeerCore`. Each peer starts (registers) whenever the explorer decides, so
every registration order is covered; every interleaving of deliveries is explored; the direct
connection between the paired peers is a modelled link (a Connect reaches a peer only while it
listens on that port: no NAT in the model, so an outgoing punch towards a non-listening Client is
refused and retried by the core); the peers then run the real Noise handshake over it. Timers fire
when the network is quiet (earliest first); with ``faults``, once per run, any timer may fire
early (an arbitrary delay elsewhere) or any connection may drop, at any moment. The Mediator's
challenges use :class:`models.symbolic_crypto.SymbolicCrypto`; the direct handshake is the real
Noise KK (X25519, ChaCha20-Poly1305) with fixed ephemerals, so states stay deterministic.

Properties (``spec/properties.md``):

- M1 mutual intent: the mediator only introduces (PeerDisconnect / PeerIdentification) two
  peers that each asked for the other, and a peer only establishes with the key it asked for;
- M2 ordering: PeerIdentification naming a Peer is sent only after that Peer was sent
  PeerDisconnect *and* closed its own end of the mediator connection (its confirmation);
- M3 outcomes: in every final state every peer that started has an outcome (Established or
  Failed with a reason); A and B are both established over the same connection, or both
  failed, or the one that established sees its connection closed by the other (it is told by
  EOF/reset: after the last handshake message nothing else can be agreed on); C failed; and
  in a run without any fault where A and B both started before either gave up, both are
  established (the pairing is not only safe but completes);
- M4 no leaks: every registry entry belongs to a session in state ``waiting`` and vice versa
  (every state), and the mediator holds no session nor registration at the end;
- K1 keepalive (option ``keepalive``): the peers ping while they wait (every 5 s, the overall
  deadline is 20 s);
  without a fault the modelled network delivers everything before time passes, so in a run
  without a fault neither side may take the other for silent: no peer fails with MediatorSilent
  and the Mediator never sends AdvertiseAbort(SILENT). (A fault, an early timer standing for a
  delay elsewhere, may legitimately make either side see silence.)
- L1 liveness after the introduction (option ``coordinate``: peers offer COORDINATE, the
  Mediator coordinates, spec/mediator.md section 4.3): (a) in every state, a session in
  ``coordinating`` that still has a partner has a live partner session: when one side's
  connection ends before its done status the survivor is told in the same step
  (PARTNER_LOST), never left to its punch timeout; (b) a peer that receives PARTNER_LOST while
  punching fails with PartnerLost in that step, never punches on. (The fault-free completion
  of M3 also checks the other half of the rule: a done status never makes the survivor abort,
  whoever finishes the handshake first.)
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

from p2psc.models.crypto_memo import CryptoMemo
from p2psc.models.explorer import Coverage, Step
from p2psc.models.network import Net, Packed, PackedNetwork
from p2psc.models.symbolic_crypto import SymbolicCrypto, fixed_nonces

import p2psc.core.mediator as mediator_module
import p2psc.core.peer as peer_module
from p2psc import wire
from p2psc.core.io import Action, Close, Connect, Event, Failed, Listen, Send
from p2psc.core.mediator import MediatorConfig, MediatorCore, MediatorSnapshot
from p2psc.core.peer import FIRST_ACCEPTED, LISTENER, Established, PeerConfig, PeerCore
from p2psc.errors import MediatorSilent, PartnerLost
from p2psc.keys import Keypair, PublicKey
from p2psc.machines.compiler import compile_machine
from p2psc.machines.handshake import ClientCandidate, PeerCandidate, Registration, Rendezvous
from p2psc.machines.mediator import MediatorSession

__all__ = ["Book", "MediationModel", "build"]

MEDIATOR = 0
NAMES = ("mediator", "A", "B", "C", "D")
MEDIATOR_ADDR = ("10.0.0.1", 7000)
WANTS = {1: 2, 2: 1, 3: 1, 4: 2}
"""Who wants whom: A and B each other; C wants A and D wants B, and nobody wants them back."""
MEDIATOR_CONFIG = MediatorConfig(
    advertise_timeout=5.0, response_timeout=5.0, wait_timeout=60.0, confirm_timeout=5.0
)
PEER_TIMING: dict[str, Any] = {
    "timeout": 20.0,
    "step_timeout": 5.0,
    "punch_timeout": 3.0,
    "punch_interval": 1.0,
    "punch_backoff": 1.0,
    "punch_max_interval": 1.0,
    "punch_attempt_timeout": 2.0,  # under punch_timeout, so attempts time out (no TCP resends here)
    "advertise_retries": 0,
    "keepalive_interval": None,
    "coordinate": False,
}
"""Coarse peer timing keeps the number of distinct deadlines (hence states) small."""
KEEPALIVE_TIMING: dict[str, Any] = {"keepalive_interval": 5.0}
"""With ``keepalive``: the peers ping every 5 s while they wait (three Pings before the
overall deadline). Off by default: it triples the state space."""
COORDINATE_TIMING: dict[str, Any] = {"coordinate": True}
"""With ``coordinate``: the peers offer COORDINATE (the Mediator coordinates by default)."""
LIMITS_TIMING: dict[str, Any] = {"advertise_retries": 1, "retry_backoff": 1.0}
"""With ``limits``: one AdvertiseRetry is honoured (after a 1 s backoff), the second is not."""
GARBAGE = b"\x00 not a p2psc frame"
"""With ``garbage``: the bytes injected (once per run) into a connection (bad magic)."""


def peer_address(actor: int) -> tuple[str, int]:
    """Observed (and local: no NAT in the model) address of a peer's connections."""
    return (f"10.0.0.{10 + actor}", 40000 + actor)


class Book(NamedTuple):
    """Model bookkeeping carried in the global state (hashable)."""

    started: tuple[bool, ...]
    outcomes: tuple[str | None, ...]  # None, "established" or "failed"
    established: tuple[tuple[int, int, int] | None, ...]  # (conn, other actor, its conn)
    listeners: tuple[tuple[int, int, int], ...]  # (actor, conn, port)
    told_disconnect: tuple[bool, ...]
    alone: bool  # A or B gave up before the other one had even started
    violation: str | None
    shut_down: bool = False  # the operator shut the Mediator down (option ``shutdown``)
    silent: str | None = None  # K1: who took whom for silent (judged with the faults left)
    confirmed: tuple[bool, ...] = ()  # M2 (coordinated): the Peer sent Status(PUNCHING)


def _replace_at(values: tuple[Any, ...], index: int, value: Any) -> tuple[Any, ...]:
    return (*values[:index], value, *values[index + 1 :])


class MediationModel(PackedNetwork):
    """See the module docstring; mutants swap in a broken ``mediator_class`` or ``peer_class``."""

    actors: Sequence[str]

    def __init__(
        self,
        *,
        third: bool = True,
        faults: bool = False,
        peers: int | None = None,
        mediator_class: type[MediatorCore] = MediatorCore,
        peer_class: type[PeerCore] = PeerCore,
        config: MediatorConfig = MEDIATOR_CONFIG,
        name: str = "mediation",
        limits: bool = False,
        garbage: bool = False,
        shutdown: bool = False,
        keepalive: bool = False,
        coordinate: bool = False,
    ) -> None:
        if peers is None:
            peers = 3 if third else 2
        if not 2 <= peers <= 4:
            raise ValueError("peers must be 2..4 (A and B, then C who wants A, D who wants B)")
        self.count = peers + 1
        settings = [f"{self.count - 1} peers"]
        settings += ["faults"] * faults + ["limits"] * limits + ["garbage"] * garbage
        settings += ["shutdown"] * shutdown + ["keepalive"] * keepalive
        settings += ["coordinate"] * coordinate
        self.name = f"{name} ({', '.join(settings)})"
        if limits:
            config = replace(config, max_pending=1, max_waiting=1)
        timing = {
            **PEER_TIMING,
            **(LIMITS_TIMING if limits else {}),
            **(KEEPALIVE_TIMING if keepalive else {}),
            **(COORDINATE_TIMING if coordinate else {}),
        }
        self.names = NAMES[: self.count]
        self.actors = self.names
        machines = (MediatorSession, Registration, Rendezvous, ClientCandidate, PeerCandidate)
        tables = [compile_machine(cls) for cls in machines]
        super().__init__(
            faults=1 if faults or garbage else 0,
            coverage=Coverage(tables),
            patches=(
                (mediator_module, "TABLE"),
                (peer_module, "REGISTRATION_TABLE"),
                (peer_module, "RENDEZVOUS_TABLE"),
                (peer_module, "CLIENT_CANDIDATE_TABLE"),
                (peer_module, "PEER_CANDIDATE_TABLE"),
            ),
        )
        self.crypto = SymbolicCrypto()
        self.crypto_memo = CryptoMemo()
        """Exact caches of the direct handshake's X25519 and HKDF (models.crypto_memo)."""
        self.garbage = GARBAGE if garbage else None
        # Under the limits a registration refused with BUSY may legitimately end failed, and
        # a shutdown ends every registration.
        self.completes = not (limits or shutdown)
        self.can_shut_down = shutdown
        self._shutdowns: dict[tuple[int, float], tuple[int, tuple[Action, ...]]] = {}
        self._shutdown_step = Step("app", "mediator", "operator shuts the mediator down")
        self.drops_and_early_timers = faults
        self.mediator_class = mediator_class
        self.peer_class = peer_class
        self.config = config
        self.keypairs = {i: Keypair.from_private_raw(bytes([i]) * 32) for i in range(1, 5)}
        self.keys = {i: kp.public_key.raw for i, kp in self.keypairs.items()}
        self.by_address = {peer_address(i): i for i in range(1, 5)}
        self.peer_configs = {
            i: PeerConfig(
                self.keypairs[i],
                PublicKey.from_raw(self.keys[WANTS[i]]),
                MEDIATOR_ADDR,
                crypto=self.crypto,
                nonce_source=fixed_nonces(NAMES[i].encode()),
                **timing,
            )
            for i in range(1, self.count)
        }
        self._mediator_nonces = fixed_nonces(b"mediator")
        self._steps = [self._mediator_step] + [self._peer_step(i) for i in range(1, self.count)]
        empty = mediator_class(config, crypto=self.crypto).snapshot()
        snapshots = tuple(PeerCore(self.peer_configs[i]).snapshot() for i in range(1, self.count))
        self._starts: dict[tuple[int, int, float], tuple[int, tuple[Action, ...]]] = {}
        self._packed_starts: dict[tuple[int, int, float], tuple[int, int]] = {}
        self._started_extra: dict[tuple[int, int], int] = {}
        self._start_steps = [Step("app", name, "start: connect to the mediator") for name in NAMES]
        self._consistent: dict[int, str | None] = {}  # M4 per mediator local id
        self._quiet_books: set[int] = set()
        """Extra ids whose book records neither a violation nor a silence (K1)."""
        self._no_app_moves: set[int] = set()  # extra ids in which nobody can start
        self._initial = Net(
            snaps=tuple(self.intern(snapshot) for snapshot in (empty, *snapshots)),
            links=(),
            timers=(),
            clock=0.0,
            faults=self.fault_budget,
            extra=Book(
                started=(True,) + (False,) * (self.count - 1),
                outcomes=(None,) * self.count,
                established=(None,) * self.count,
                listeners=(),
                told_disconnect=(False,) * self.count,
                alone=False,
                violation=None,
                confirmed=(False,) * self.count,
            ),
        )
        self.outcome_counts: dict[tuple[str | None, ...], int] = {}

    # --- explorer interface -------------------------------------------------------------------

    def initial_states(self) -> list[Packed]:
        return [self.pack(self._initial)]

    def coverage(self) -> Coverage | None:
        return self._coverage

    def describe(self, packed: Packed) -> str:
        state = self.unpack(packed)
        book = _book(state)
        outcomes = ", ".join(
            f"{self.names[i]}={book.outcomes[i] or ('waiting' if book.started[i] else 'idle')}"
            for i in range(1, self.count)
        )
        sessions, registry, *_ = self._mediator_snapshot(state)
        live = ", ".join(f"conn {row[0]}:{row[1]}" for row in sessions) or "none"
        return f"{outcomes}; mediator sessions: {live}; registry entries: {len(registry)}"

    def invariant(self, state: Packed) -> str | None:
        extra = state[-1]
        if extra not in self._quiet_books:  # most books record no violation and no silence
            book = self._extras.values[extra]
            violation = book.violation
            if violation is not None:
                return violation  # type: ignore[no-any-return]
            # K1 needs the faults left, which bookkeeping cannot see (its results are memoised
            # without them): a silence recorded while no fault had happened yet is the violation.
            if book.silent is not None:
                if state[-2] >= self.fault_budget:
                    return f"K1: {book.silent}"
            else:
                self._quiet_books.add(extra)
        local = state[MEDIATOR]  # M4 depends on the Mediator's snapshot only: memoised per id
        consistent = self._consistent.get(local, "")
        if consistent == "":
            snap = self.snap_of(state, MEDIATOR)
            snapshot = self.snapshot(snap)
            consistent = _registry_consistent(snapshot) or _partners_live(snapshot)
            self._consistent[local] = consistent
        return consistent

    def terminal(self, packed: Packed) -> str | None:
        state = self.unpack(packed)
        book = _book(state)
        key = book.outcomes[1:]
        self.outcome_counts[key] = self.outcome_counts.get(key, 0) + 1
        for i in range(1, self.count):
            if book.outcomes[i] is None:
                return f"M3: {self.names[i]} was never told the outcome (left waiting)"
        for i in range(3, self.count):
            if book.outcomes[i] != "failed":
                return f"M3: {self.names[i]}, whom nobody wants, ended {book.outcomes[i]}"
        problem = self._pair_outcome(state, book)
        if problem is not None:
            return problem
        sessions, registry, *_ = self._mediator_snapshot(state)
        if sessions or registry:
            return f"M4: mediator leaks {len(sessions)} sessions and {len(registry)} registrations"
        return None

    def _pair_outcome(self, state: Net, book: Book) -> str | None:
        a, b = book.outcomes[1], book.outcomes[2]
        if (
            self.completes
            and state.faults >= self.fault_budget
            and not book.alone
            and (a, b) != ("established",) * 2
        ):
            return (
                f"M3: no fault occurred and A and B both registered before either gave up, "
                f"yet A {a} and B {b}"
            )
        if a == "failed" and b == "failed":
            return None
        if a == "established" and b == "established":
            ea, eb = book.established[1], book.established[2]
            assert ea is not None and eb is not None
            if ea[1:] == (2, eb[0]) and eb[1:] == (1, ea[0]):
                return None
            return "M3: A and B established on different connections"
        winner = 1 if a == "established" else 2
        record = book.established[winner]
        assert record is not None
        conn = record[0]
        for link in state.links:
            if link.x == winner and link.xc == conn and link.y_open:
                break
            if link.y == winner and link.yc == conn and link.x_open:
                break
        else:
            return None  # the other side closed it: the established side was told by EOF
        return (
            f"M3: {self.names[winner]} is established but {self.names[3 - winner]} failed "
            "and keeps the connection open"
        )

    def _mediator_snapshot(self, state: Net) -> MediatorSnapshot:
        snapshot: MediatorSnapshot = self.snapshot(state.snaps[MEDIATOR])
        return snapshot

    # --- network hooks ------------------------------------------------------------------------

    def step_fn(self, actor: int) -> Any:
        return self._steps[actor]

    def _mediator_step(
        self, snap: Hashable, event: Event, now: float
    ) -> tuple[Hashable, tuple[Action, ...]]:
        core = self.mediator_class.from_snapshot(
            snap,  # type: ignore[arg-type]
            self.config,
            nonce_source=self._mediator_nonces,
            crypto=self.crypto,
        )
        actions = core.handle(event, now)
        return core.snapshot(), tuple(actions)

    def _peer_step(self, actor: int) -> Any:
        config = self.peer_configs[actor]

        def step(snap: Any, event: Event, now: float) -> tuple[Hashable, tuple[Any, ...]]:
            with self.crypto_memo:
                core = self.peer_class.from_snapshot(snap, config)
                actions = core.handle(event, now)
            return core.snapshot(), tuple(actions)

        return step

    def address_of(self, actor: int) -> tuple[str, int]:
        return MEDIATOR_ADDR if actor == MEDIATOR else peer_address(actor)

    def resolve(self, actor: int, action: Connect, state: Net) -> tuple[int, int] | None:
        remote = (action.remote[0], action.remote[1])
        if remote == MEDIATOR_ADDR:
            used = {link.yc for link in state.links if link.y == MEDIATOR}
            for conn in range(10 * actor, 10 * actor + 10):
                if conn not in used:
                    return MEDIATOR, conn
            return None
        target = self.by_address.get(remote)
        if target is None or target >= self.count:
            return None
        if not any(a == target and p == remote[1] for a, _, p in _book(state).listeners):
            return None
        used = {link.yc for link in state.links if link.y == target}
        conn = FIRST_ACCEPTED
        while conn in used:
            conn += 1
        return target, conn

    def label(self, data: bytes) -> str:
        name = self._labels.get(data)
        if name is None:
            try:
                message = wire.decode(data)
                name = type(message).__name__
                if isinstance(message, wire.AdvertiseAbort | wire.AdvertiseRetry):
                    name += f"({wire.Reason(message.code).name})"
            except Exception:  # a label must never fail
                name = f"{len(data)} bytes"
            self._labels[data] = name
        return name

    def app_steps(self, state: Net) -> list[tuple[Step, Net]]:
        book = _book(state)
        out = []
        for i in range(1, self.count):
            if book.started[i]:
                continue
            hit = self._start(i, state.snaps[i], state.clock)
            base = state._replace(extra=book._replace(started=_replace_at(book.started, i, True)))
            nxt = self.apply(base, i, hit[0], hit[1])
            out.append((Step("app", self.names[i], "start: connect to the mediator"), nxt))
        if self.can_shut_down and not book.shut_down:
            after, actions = self._shut_down(state.snaps[MEDIATOR], state.clock)
            base = state._replace(extra=book._replace(shut_down=True))
            out.append((self._shutdown_step, self.apply(base, MEDIATOR, after, actions)))
        return out

    def _shut_down(self, snap: int, clock: float) -> tuple[int, tuple[Action, ...]]:
        """The Mediator's snapshot id and actions after ``shutdown`` (memoised)."""
        hit = self._shutdowns.get((snap, clock))
        if hit is None:
            with self._recording:
                core = self.mediator_class.from_snapshot(
                    self.snapshot(snap),
                    self.config,
                    nonce_source=self._mediator_nonces,
                    crypto=self.crypto,
                )
                actions = tuple(core.shutdown(clock))
            hit = self._shutdowns[(snap, clock)] = (self.intern(core.snapshot()), actions)
        return hit

    def app_moves(self, state: Packed) -> list[tuple[Step, Packed]]:
        """:meth:`app_steps` on packed states: each peer that has not started may start."""
        n = self.count
        extra = state[-1]
        if extra in self._no_app_moves:
            return []
        links, clock, faults, _ = state[n:]
        book: Book = self._extras.values[extra]
        if all(book.started) and (book.shut_down or not self.can_shut_down):
            self._no_app_moves.add(extra)
            return []
        out = []
        for i in range(1, n):
            if book.started[i]:
                continue
            key = (i, state[i], clock)
            hit = self._packed_starts.get(key)
            if hit is None:
                after, actions = self._start(i, self.snap_of(state, i), clock)
                ident = self._actions_id(i, actions)
                hit = self._packed_starts[key] = (self.advance(state[i], after, ident), ident)
            started = self._started_extra.get((extra, i))
            if started is None:
                flags = _replace_at(book.started, i, True)
                started = self._extras(book._replace(started=flags))[0]
                self._started_extra[(extra, i)] = started
            nxt = self.act(state, i, hit[0], hit[1], links, clock, faults, started)
            out.append((self._start_steps[i], nxt))
        if self.can_shut_down and not book.shut_down:
            after, actions = self._shut_down(self.snap_of(state, MEDIATOR), clock)
            done = self._extras(book._replace(shut_down=True))[0]
            ident = self._actions_id(MEDIATOR, actions)
            local = self.advance(state[MEDIATOR], after, ident)
            nxt = self.act(state, MEDIATOR, local, ident, links, clock, faults, done)
            out.append((self._shutdown_step, nxt))
        return out

    def bookkeeping(self, actor: int, actions: tuple[Action, ...]) -> bool:
        """Which actions :meth:`on_actions` looks at (see there): the Mediator's pairing
        messages; a peer's listeners (set up, or closed: the only conn a peer listens on is
        :data:`~p2psc.core.peer.LISTENER`) and outcomes."""
        if actor == MEDIATOR:
            return any(
                len(data) >= 4
                and (
                    data[3]
                    in (wire.MessageType.PEER_DISCONNECT, wire.MessageType.PEER_IDENTIFICATION)
                    or _silent_abort(data)
                )
                for action in actions
                if (data := getattr(action, "data", None)) is not None
            )
        return any(
            isinstance(action, Listen | Established | Failed)
            or (isinstance(action, Close) and (action.conn == LISTENER or _lost(action.reason)))
            or (isinstance(action, Send) and action.data == _PUNCHING)
            for action in actions
        )

    def bookkeeping_reads_links(self, actor: int, actions: tuple[Action, ...]) -> bool:
        """The Mediator's pairing messages are judged by who owns the connection (M1, M2) and
        an ``Established`` by the link it names (M3); a peer's listeners and failures are not."""
        return actor == MEDIATOR or any(isinstance(action, Established) for action in actions)

    def _start(self, i: int, snap: int, clock: float) -> tuple[int, tuple[Action, ...]]:
        key = (i, snap, clock)
        hit = self._starts.get(key)
        if hit is None:
            # Rebuilt inside the recording: a PeerCore keeps the table it was built with.
            with self._recording:
                core = self.peer_class.from_snapshot(self.snapshot(snap), self.peer_configs[i])
                actions: tuple[Action, ...] = tuple(core.start(clock))  # type: ignore[arg-type]
            hit = self._starts[key] = (self.intern(core.snapshot()), actions)
        return hit

    def on_actions(
        self, state: Net, actor: int, actions: tuple[Action, ...], extra: Hashable
    ) -> Hashable:
        book = extra
        assert isinstance(book, Book)
        if actor == MEDIATOR:
            return self._mediator_sent(state, actions, book)
        gave_up = any(isinstance(a, Failed) and isinstance(a.error, PartnerLost) for a in actions)
        for action in actions:
            if (
                isinstance(action, Close)
                and _lost(action.reason)
                and not gave_up
                and book.violation is None
            ):
                book = book._replace(
                    violation=f"L1: {self.names[actor]} was told PARTNER_LOST while punching "
                    f"but did not fail with PartnerLost ({action.reason})"
                )
            if isinstance(action, Listen):
                listeners = (*book.listeners, (actor, action.conn, action.port))
                book = book._replace(listeners=tuple(sorted(listeners)))
            elif isinstance(action, Close):
                if any(entry[:2] == (actor, action.conn) for entry in book.listeners):
                    listeners = tuple(e for e in book.listeners if e[:2] != (actor, action.conn))
                    book = book._replace(listeners=listeners)
            elif isinstance(action, Established):
                book = self._established(state, book, actor, action)
            elif isinstance(action, Send) and action.data == _PUNCHING:
                if book.violation is None and not any(e[0] == actor for e in book.listeners):
                    book = book._replace(
                        violation=f"M2: {self.names[actor]} confirmed PeerDisconnect with "
                        "Status(PUNCHING) before it listened"
                    )
                book = book._replace(confirmed=_replace_at(book.confirmed, actor, True))

            elif (
                isinstance(action, Failed)
                and isinstance(action.error, MediatorSilent)
                and book.silent is None
            ):
                book = book._replace(
                    silent=f"{self.names[actor]} took the live Mediator for silent "
                    f"({action.error.reason})"
                )
            if isinstance(action, Failed) and book.outcomes[actor] is None:
                book = book._replace(outcomes=_replace_at(book.outcomes, actor, "failed"))
                if actor in (1, 2) and not book.started[3 - actor]:
                    book = book._replace(alone=True)
        return book

    # --- property bookkeeping -----------------------------------------------------------------

    @staticmethod
    def _owner(state: Net, mediator_conn: int) -> int | None:
        for link in state.links:
            if link.y == MEDIATOR and link.yc == mediator_conn:
                return link.x
        return None

    def _mediator_sent(self, state: Net, actions: tuple[Action, ...], book: Book) -> Book:
        for action in actions:
            data = getattr(action, "data", None)
            if data is None or len(data) < 4:
                continue
            if _silent_abort(data) and book.silent is None:
                receiver = self._owner(state, action.conn)  # type: ignore[union-attr]
                who = "a peer" if receiver is None else self.names[receiver]
                book = book._replace(
                    silent=f"the Mediator closed {who} as SILENT although it pinged on time"
                )
                continue
            if data[3] not in (
                wire.MessageType.PEER_DISCONNECT,
                wire.MessageType.PEER_IDENTIFICATION,
            ):
                continue
            receiver = self._owner(state, action.conn)  # type: ignore[union-attr]
            if receiver is None:
                continue
            message = wire.decode(data)
            if isinstance(message, wire.PeerDisconnect):
                other = self.by_address.get(message.client.to_tuple())
                book = book._replace(
                    told_disconnect=_replace_at(book.told_disconnect, receiver, True)
                )
            else:
                assert isinstance(message, wire.PeerIdentification)
                other = self.by_address.get(message.peer.to_tuple())
                if other is not None and book.violation is None:
                    confirmed = book.told_disconnect[other] and (
                        not any(
                            link.x == other and link.y == MEDIATOR and link.x_open
                            for link in state.links
                        )
                        or (wire.coordinated(message.extensions) and book.confirmed[other])
                    )
                    if not confirmed:
                        book = book._replace(
                            violation=f"M2: PeerIdentification sent to {self.names[receiver]} "
                            f"before {self.names[other]} confirmed PeerDisconnect"
                        )
            if book.violation is None and (
                other is None or WANTS.get(receiver) != other or WANTS.get(other) != receiver
            ):
                who = "an unknown address" if other is None else self.names[other]
                book = book._replace(
                    violation=f"M1: the mediator introduced {self.names[receiver]} to {who} "
                    "without mutual intent"
                )
        return book

    def _established(self, state: Net, book: Book, actor: int, action: Established) -> Book:
        if book.violation is None and action.peer_key.raw != self.keys[WANTS[actor]]:
            book = book._replace(
                violation=f"M1: {self.names[actor]} established with a key it did not ask for"
            )
        record = (action.conn, -1, -1)
        for link in state.links:
            if link.x == actor and link.xc == action.conn:
                record = (action.conn, link.y, link.yc)
            elif link.y == actor and link.yc == action.conn:
                record = (action.conn, link.x, link.xc)
        return book._replace(
            outcomes=_replace_at(book.outcomes, actor, "established"),
            established=_replace_at(book.established, actor, record),
        )


def _silent_abort(data: bytes) -> bool:
    """``data`` is an AdvertiseAbort(SILENT) frame."""
    return (
        len(data) >= 8
        and data[3] == wire.MessageType.ADVERTISE_ABORT
        and int.from_bytes(data[6:8], "big") == wire.Reason.SILENT
    )


_PUNCHING = wire.Status(wire.StatusCode.PUNCHING).encode()


def _lost(reason: str) -> bool:
    """A Close reason that mentions PARTNER_LOST (L1 (b): only with a Failed(PartnerLost))."""
    return "PARTNER_LOST" in reason


def _partners_live(snapshot: Any) -> str | None:
    """L1 (a) in every state: a coordinating session's partner, if any, is a live session."""
    sessions = {row[0]: row for row in snapshot[0]}
    for row in sessions.values():
        if row[1] == "coordinating" and row[9] is not None and row[9] not in sessions:
            return (
                f"L1: coordinating conn {row[0]}'s partner (conn {row[9]}) is gone, and it "
                "was not told (PARTNER_LOST)"
            )
    return None


def _book(state: Net) -> Book:
    book = state.extra
    assert isinstance(book, Book)
    return book


def _registry_consistent(snapshot: Any) -> str | None:
    """M4 in every state: registry entries <-> sessions in state ``waiting``."""
    sessions, registry, *_ = snapshot
    waiting = {row[0]: row for row in sessions if row[1] == "waiting"}
    handles = set()
    for (our, their), handle in registry:
        row = waiting.get(handle)
        if row is None:
            return f"M4: registry entry for conn {handle} has no waiting session (leak)"
        if (row[6], row[7]) != (our, their):
            return f"M4: registry entry for conn {handle} names other keys than its session"
        handles.add(handle)
    missing = set(waiting) - handles
    if missing:
        return f"M4: waiting sessions {sorted(missing)} are not in the registry"
    return None


def build(
    *,
    faults: bool = False,
    mutant: str | None = None,
    third: bool = True,
    peers: int | None = None,
    limits: bool = False,
    garbage: bool = False,
    shutdown: bool = False,
    keepalive: bool = False,
    coordinate: bool = False,
) -> MediationModel:
    """Entry point of ``p2psc explore mediation`` (A, B and, with ``third``, C)."""
    if mutant is not None:
        from p2psc.models.mutants import mediation_mutant

        return mediation_mutant(mutant, faults=faults, third=third)
    return MediationModel(
        third=third,
        peers=peers,
        faults=faults,
        limits=limits,
        garbage=garbage,
        shutdown=shutdown,
        keepalive=keepalive,
        coordinate=coordinate,
    )
