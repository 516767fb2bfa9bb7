"""The mediation model: the real MediatorCore with two mutual peers and a third one.

Actors: ``mediator`` (:class:`p2psc.core.mediator.MediatorCore`), ``A`` and ``B`` (each wants
the other) and, optionally, ``C`` (wants ``A``, who does not want ``C``). Each peer registers
whenever the explorer decides (so every registration order is covered), every message
interleaving is explored, and with faults any connection may drop once and any timer may fire at
any moment. Peers are the real :class:`p2psc.core.peer.PeerCore` when it is available (then the
direct connection between the two peers is a modelled link and the peers run the real peer
handshake over it), otherwise :class:`models.scripted_peer.ScriptedPeer` (mediator handshake
only). Crypto is :class:`models.symbolic_crypto.SymbolicCrypto`.

Properties (``spec/properties.md``):

- M1 mutual intent: the mediator only introduces (PeerDisconnect / PeerIdentification) two
  peers that each asked for the other, and a peer only ends connected to the key it asked for;
- M2 ordering: PeerIdentification naming a Peer is sent only after that Peer was sent
  PeerDisconnect *and* closed its own end of the mediator connection (its confirmation);
- M3 outcomes: in every final state A and B are both connected or both failed with a reason,
  and C (if present) was told why not; nobody is left waiting;
- M4 no leaks: every registry entry belongs to a session in state ``waiting`` and vice versa
  (every state), and the mediator holds no session nor registration at the end.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, NamedTuple

import p2psc.core.mediator as mediator_module
from models.explorer import Coverage, Step
from models.network import Net, Network
from models.scripted_peer import Introduced, ScriptedPeer
from models.symbolic_crypto import SymbolicCrypto, fixed_nonces
from p2psc import wire
from p2psc.core.io import Action, Close, Connect, Event, Failed, Listen
from p2psc.core.mediator import MediatorConfig, MediatorCore
from p2psc.keys import Keypair
from p2psc.machines.compiler import compile_machine
from p2psc.machines.mediator import MediatorSession

__all__ = ["Book", "MediationModel", "build"]

MEDIATOR = 0
NAMES = ("mediator", "A", "B", "C")
MEDIATOR_ADDR = ("10.0.0.1", 7000)
WANTS = {1: 2, 2: 1, 3: 1}
CONFIG = MediatorConfig(
    advertise_timeout=5.0, response_timeout=5.0, wait_timeout=60.0, confirm_timeout=5.0
)


def peer_address(actor: int) -> tuple[str, int]:
    """Observed (and local: no NAT in the model) address of a peer's connections."""
    return (f"10.0.0.{10 + actor}", 40000 + actor)


class Book(NamedTuple):
    """Model bookkeeping carried in the global state (hashable)."""

    started: tuple[bool, ...]
    outcomes: tuple[str | None, ...]
    listeners: tuple[tuple[int, int, int], ...]  # (actor, conn, port)
    told_disconnect: tuple[bool, ...]
    violation: str | None


def _replace_at(values: tuple[Any, ...], index: int, value: Any) -> tuple[Any, ...]:
    return (*values[:index], value, *values[index + 1 :])


class MediationModel(Network):
    """See the module docstring; ``mediator_class`` lets mutants swap in a broken mediator."""

    actors: Sequence[str]

    def __init__(
        self,
        *,
        third: bool = True,
        faults: bool = False,
        mediator_class: type[MediatorCore] = MediatorCore,
        config: MediatorConfig = CONFIG,
        name: str = "mediation",
    ) -> None:
        self.name = name
        self.count = 4 if third else 3
        self.names = NAMES[: self.count]
        self.actors = self.names
        self.table = compile_machine(MediatorSession)
        super().__init__(faults=1 if faults else 0, coverage=Coverage([self.table]))
        self._patches = ((mediator_module, "TABLE"),)
        self.crypto = SymbolicCrypto()
        self.mediator_class = mediator_class
        self.config = config
        self.keypairs = {i: Keypair.from_private_raw(bytes([i]) * 32) for i in range(1, 4)}
        self.keys = {i: kp.public_key.raw for i, kp in self.keypairs.items()}
        self.by_key = {key: i for i, key in self.keys.items()}
        self.by_address = {peer_address(i): i for i in range(1, 4)}
        self.peers = {
            i: ScriptedPeer(self.keypairs[i], self.keys[WANTS[i]], MEDIATOR_ADDR, self.crypto)
            for i in range(1, self.count)
        }
        self._mediator_nonces = fixed_nonces(b"mediator")
        empty = MediatorCore(config, crypto=self.crypto).snapshot()
        self._initial = Net(
            snaps=(empty, *(ScriptedPeer.initial for _ in range(1, self.count))),
            links=(),
            timers=(),
            clock=0.0,
            faults=self.fault_budget,
            extra=Book(
                started=(True,) + (False,) * (self.count - 1),
                outcomes=(None,) * self.count,
                listeners=(),
                told_disconnect=(False,) * self.count,
                violation=None,
            ),
        )

    # --- explorer interface -------------------------------------------------------------------

    def initial_states(self) -> list[Net]:
        return [self._initial]

    def coverage(self) -> Coverage | None:
        return self._coverage

    def describe(self, state: Net) -> str:
        book = state.extra
        assert isinstance(book, Book)
        outcomes = ", ".join(
            f"{self.names[i]}={book.outcomes[i] or ('waiting' if book.started[i] else 'idle')}"
            for i in range(1, self.count)
        )
        sessions, registry, _ = state.snaps[MEDIATOR]  # type: ignore[misc]
        live = ", ".join(f"conn {row[0]}:{row[1]}" for row in sessions) or "none"
        return f"{outcomes}; mediator sessions: {live}; registry entries: {len(registry)}"

    def invariant(self, state: Net) -> str | None:
        book = state.extra
        assert isinstance(book, Book)
        if book.violation is not None:
            return book.violation
        return self._registry_consistent(state.snaps[MEDIATOR])

    def terminal(self, state: Net) -> str | None:
        book = state.extra
        assert isinstance(book, Book)
        for i in range(1, self.count):
            if book.outcomes[i] is None:
                return f"{self.names[i]} was never told the outcome (left waiting)"
        a, b = book.outcomes[1], book.outcomes[2]
        if (a == "failed") != (b == "failed"):
            return f"A and B disagree: A {a}, B {b}"
        if self.count > 3 and book.outcomes[3] != "failed":
            return f"C, whom nobody wants, ended {book.outcomes[3]}"
        sessions, registry, _ = state.snaps[MEDIATOR]  # type: ignore[misc]
        if sessions or registry:
            return f"mediator leaks {len(sessions)} sessions and {len(registry)} registrations"
        return None

    # --- network hooks ------------------------------------------------------------------------

    def step_fn(self, actor: int) -> Any:
        if actor == MEDIATOR:
            return self._mediator_step
        peer = self.peers[actor]

        def step(snap: Hashable, event: Event, now: float) -> tuple[Hashable, tuple[Any, ...]]:
            return peer.step(snap, event)  # type: ignore[arg-type]

        return step

    def _mediator_step(
        self, snap: Hashable, event: Event, now: float
    ) -> tuple[Hashable, tuple[Action, ...]]:
        core = self.mediator_class.from_snapshot(
            snap, self.config, nonce_source=self._mediator_nonces, crypto=self.crypto
        )
        actions = core.handle(event, now)
        return core.snapshot(), tuple(actions)

    def address_of(self, actor: int) -> tuple[str, int]:
        return MEDIATOR_ADDR if actor == MEDIATOR else peer_address(actor)

    def resolve(self, actor: int, action: Connect, state: Net) -> tuple[int, int] | None:
        if tuple(action.remote) == MEDIATOR_ADDR:
            used = {link.yc for link in state.links if link.y == MEDIATOR}
            for conn in range(10 * actor, 10 * actor + 10):
                if conn not in used:
                    return MEDIATOR, conn
            return None
        target = self.by_address.get(tuple(action.remote))  # type: ignore[arg-type]
        book = state.extra
        assert isinstance(book, Book)
        if target is None or target >= self.count:
            return None
        port = action.remote[1]
        if not any(a == target and p == port for a, _, p in book.listeners):
            return None
        used = {link.yc for link in state.links if link.y == target}
        used |= {link.xc for link in state.links if link.x == target}
        conn = next(c for c in range(16, 64) if c not in used)
        return target, conn

    def label(self, data: bytes) -> str:
        name = self._labels.get(data)
        if name is None:
            try:
                message = wire.decode(data)
                name = type(message).__name__
                if isinstance(message, wire.AdvertiseAbort | wire.AdvertiseRetry):
                    name += f"({wire.Reason(message.code).name})"
            except Exception:
                name = f"{len(data)} bytes"
            self._labels[data] = name
        return name

    def app_steps(self, state: Net) -> list[tuple[Step, Net]]:
        book = state.extra
        assert isinstance(book, Book)
        out = []
        for i in range(1, self.count):
            if book.started[i]:
                continue
            snap, actions = self.peers[i].start(state.snaps[i])  # type: ignore[arg-type]
            base = state._replace(extra=book._replace(started=_replace_at(book.started, i, True)))
            out.append(
                (Step("app", self.names[i], "start: register"), self.apply(base, i, snap, actions))
            )  # type: ignore[arg-type]
        return out

    def on_actions(
        self, state: Net, actor: int, actions: tuple[Action, ...], extra: Hashable
    ) -> Hashable:
        book = extra
        assert isinstance(book, Book)
        if actor == MEDIATOR:
            return self._mediator_sent(state, actions, book)
        for action in actions:
            if isinstance(action, Listen):
                listeners = (*book.listeners, (actor, action.conn, action.port))
                book = book._replace(listeners=tuple(sorted(listeners)))
            elif isinstance(action, Close):
                listeners = tuple(
                    entry for entry in book.listeners if entry[:2] != (actor, action.conn)
                )
                book = book._replace(listeners=listeners)
            elif isinstance(action, Introduced):
                book = self._introduced(book, actor, action)
            elif isinstance(action, Failed) and book.outcomes[actor] is None:
                book = book._replace(outcomes=_replace_at(book.outcomes, actor, "failed"))
        return book

    # --- property bookkeeping -----------------------------------------------------------------

    def _owner(self, state: Net, mediator_conn: int) -> int | None:
        for link in state.links:
            if link.y == MEDIATOR and link.yc == mediator_conn:
                return link.x
        return None

    def _mediator_sent(self, state: Net, actions: tuple[Action, ...], book: Book) -> Book:
        for action in actions:
            data = getattr(action, "data", None)
            if data is None or len(data) < 4:
                continue
            kind = data[3]
            if kind not in (wire.MessageType.PEER_DISCONNECT, wire.MessageType.PEER_IDENTIFICATION):
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
                    confirmed = book.told_disconnect[other] and not any(
                        link.x == other and link.y == MEDIATOR and link.x_open
                        for link in state.links
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
                    violation=f"M1: mediator introduced {self.names[receiver]} to {who} "
                    f"without mutual intent"
                )
        return book

    def _introduced(self, book: Book, actor: int, action: Introduced) -> Book:
        other = self.by_address.get(action.other)
        if book.violation is None and other != WANTS[actor]:
            who = "an unknown address" if other is None else self.names[other]
            book = book._replace(
                violation=f"M1: {self.names[actor]} was introduced to {who}, "
                f"but asked for {self.names[WANTS[actor]]}"
            )
        return book._replace(outcomes=_replace_at(book.outcomes, actor, action.role))

    @staticmethod
    def _registry_consistent(snapshot: Hashable) -> str | None:
        sessions, registry, _ = snapshot  # type: ignore[misc]
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
    *, protocols: int | None = None, faults: bool = False, mutant: str | None = None
) -> MediationModel:
    """Entry point of ``p2psc explore mediation`` (``protocols`` is ignored here)."""
    del protocols
    if mutant is not None:
        from models.mutants import mediation_mutant

        return mediation_mutant(mutant, faults=faults)
    return MediationModel(faults=faults)
