"""The fleet model: two real FleetCore instances over one shared registry (spec/mediator.md §10).

Actors: instances ``I0`` and ``I1`` (:class:`p2psc.core.fleet.FleetCore`, the real cores), the
shared store (a dict that executes the registry actions with exactly the semantics of the Lua
scripts of :mod:`p2psc.aio.fleet`, each one atomic), and two scripted advertisers ``A`` (at
``I0``) and ``B`` (at ``I1``) who want each other: each starts whenever the explorer decides,
answers its challenge, closes after PeerDisconnect (its confirmation) and waits for its outcome.

Channels, each FIFO and each interleaved freely with all others: advertiser <-> instance (one
TCP connection each way), instance -> store (the instance's command connection), store ->
instance answers (the same connection, so in order), and one notice channel per instance
(pub/sub). Answers and notices travel on different connections, so a notice can overtake the
answer to its target's own claim: the model explores that. Timers fire only when nothing else
can happen (earliest first). With ``lossy``, once per run the notice at the head of a channel
may be lost, and once per run one may be delivered twice; a refresh of an instance's waiting
registrations may happen once per instance at any moment (faults: progress never depends on
them).

Properties (the mediation model's, for a fleet):

- M1 exactly once: at most one PeerDisconnect and one PeerIdentification are sent in the whole
  fleet, and only to A or B (who want each other), never both to the same one;
- M2 ordering: PeerIdentification is sent only after the Peer was sent PeerDisconnect *and*
  its clean close was delivered to its instance;
- M3 outcomes: in every final state every advertiser that started has an outcome; in a run
  without faults in which both started, one is introduced as the Client and the other as the
  Peer;
- M4 no leaks: at the end no instance holds a session, an outstanding claim, a remote partner
  or a held notice, and the store holds no live registration (tombstones expire by TTL).

Mutants (:data:`MUTANTS`): ``non-atomic-claim`` (the store reads the partner's entry and
writes in two separate steps: two racing registrations both register and never pair, M3),
``confirm-early`` (the Peer's instance sends the confirmation with PeerDisconnect, so the
Client is introduced on an unconfirmed notification, M2) and ``no-hold`` (a notice that
overtakes its target's registration answer is acted on at once, M3).
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from p2psc.models.explorer import Coverage, Step
from p2psc.models.network import recording
from p2psc.models.symbolic_crypto import SymbolicCrypto, fixed_nonces

import p2psc.core.mediator as mediator_module
from p2psc import wire
from p2psc.core.fleet import (
    CLAIMED,
    FULL,
    REGISTERED,
    FleetCore,
    Notice,
    Notify,
    RefreshAnswer,
    RegistryAnswer,
    RegistryClaim,
    RegistryRefresh,
    RegistryUnregister,
    encode_notice,
    encode_record,
    registry_key,
    token,
)
from p2psc.core.io import Close, Closed, Opened, Received, Send, SetTimer, TimerFired
from p2psc.core.mediator import MediatorConfig
from p2psc.machines.compiler import compile_machine
from p2psc.machines.mediator import MediatorSession

__all__ = ["MUTANTS", "FleetModel", "build"]

INSTANCES = ("00000000000000a0", "00000000000000a1")
NAMES = ("A", "B")
KEYS = (bytes([1]) * 32, bytes([2]) * 32)
HOME = (0, 1)
"""The instance each advertiser connects to: A at I0, B at I1 (every pairing crosses)."""
CONN = (1, 2)
"""Each advertiser's connection id at its instance."""
CONFIG = MediatorConfig(
    advertise_timeout=5.0, response_timeout=5.0, wait_timeout=60.0, confirm_timeout=5.0
)
PREFIX = "p2psc:"
_TAG, _KEY, _NONCE = 2, 32, 32  # models.symbolic_crypto's sealed layout


@dataclass
class World:
    """Everything of one global state; :meth:`key` is its hashable identity."""

    cores: list[FleetCore]
    now: float = 0.0
    timers: dict[tuple[int, int], float] = field(default_factory=dict)
    store: dict[str, bytes] = field(default_factory=dict)
    to_instance: list[tuple[tuple[str, bytes], ...]] = field(default_factory=lambda: [(), ()])
    """Per advertiser: ("data", bytes) / ("close", b"") on its way to its instance."""
    to_advertiser: list[tuple[tuple[str, bytes], ...]] = field(default_factory=lambda: [(), ()])
    """Per advertiser: ("msg", frame) / ("eof", b"") from its instance."""
    ops: list[tuple[Any, ...]] = field(default_factory=lambda: [(), ()])
    """Per instance: registry actions on their way to the store (a half-done non-atomic
    claim is ("checked", action, partner entry))."""
    answers: list[tuple[Any, ...]] = field(default_factory=lambda: [(), ()])
    notices: list[tuple[bytes, ...]] = field(default_factory=lambda: [(), ()])
    started: list[bool] = field(default_factory=lambda: [False, False])
    outcome: list[str | None] = field(default_factory=lambda: [None, None])
    told: list[str | None] = field(default_factory=lambda: [None, None])
    """What each advertiser was sent: "disconnect" or "identification"."""
    confirmed: list[bool] = field(default_factory=lambda: [False, False])
    """The advertiser's clean close after PeerDisconnect reached its instance."""
    disconnects: int = 0
    identifications: int = 0
    violation: str | None = None
    lost: bool = False
    duplicated: bool = False
    refreshed: list[bool] = field(default_factory=lambda: [False, False])

    @property
    def faulted(self) -> bool:
        return self.lost or self.duplicated

    def key(self) -> Hashable:
        cores = tuple(
            (
                core.snapshot(),
                tuple(sorted(core._claiming.items())),
                tuple(sorted(core._remote.items())),
                tuple(sorted((k, tuple(v)) for k, v in core._early.items())),
            )
            for core in self.cores
        )
        return (
            cores,
            self.now,
            tuple(sorted(self.timers.items())),
            tuple(sorted(self.store.items())),
            tuple(self.to_instance),
            tuple(self.to_advertiser),
            tuple(self.ops),
            tuple(self.answers),
            tuple(self.notices),
            tuple(self.started),
            tuple(self.outcome),
            tuple(self.told),
            tuple(self.confirmed),
            self.disconnects,
            self.identifications,
            self.violation,
            self.lost,
            self.duplicated,
            tuple(self.refreshed),
        )


class State:
    """A world with its key: equal and hashed by the key (the explorer stores these)."""

    __slots__ = ("_hash", "key", "world")

    def __init__(self, world: World) -> None:
        self.world = world
        self.key = world.key()
        self._hash = hash(self.key)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, State) and self.key == other.key


class ConfirmEarly(FleetCore):
    """Mutant: the Peer's instance sends the confirmation (``F``) together with PeerDisconnect,
    so the Client is introduced on an unconfirmed notification."""

    def _pair_remote(
        self,
        conn: int,
        session: Any,
        transition: Any,
        record: bytes,
        now: float,
        out: list[Any],
    ) -> None:
        super()._pair_remote(conn, session, transition, record, now, out)
        partner = self._remote.get(conn)
        if partner is not None:
            body = encode_record(self.instance, conn, session.remote, session.local, session.cands)
            notice = encode_notice(b"F", partner[1], session.nonce + body[1:])
            out.append(Notify(partner[0], notice))


class NoHold(FleetCore):
    """Mutant: a notice that overtakes the answer to its target's own claim is acted on at
    once instead of being held (the bug the first Redis benchmark found, then with a claim
    notice; now the confirmation can overtake the answer the same way)."""

    def _on_notice(self, message: bytes, now: float, out: list[Any]) -> None:
        target = int(message[1:17], 16)
        held = self._claiming.pop(target, None)
        try:
            super()._on_notice(message, now, out)
        finally:
            if held is not None:
                self._claiming[target] = held


MUTANTS: dict[str, str] = {
    "non-atomic-claim": "the store checks the partner's entry and writes ours in two steps (M3)",
    "confirm-early": "the confirmation is sent with PeerDisconnect, before the Peer's close (M2)",
    "no-hold": "a notice that overtakes its target's registration answer is not held (M3)",
}


class FleetModel:
    """See the module docstring."""

    actors: Sequence[str] = ("I0", "I1", "store", *NAMES)

    def __init__(self, *, lossy: bool = False, mutant: str | None = None) -> None:
        if mutant is not None and mutant not in MUTANTS:
            raise ValueError(f"unknown fleet mutant {mutant!r}")
        self.lossy = lossy
        self.atomic = mutant != "non-atomic-claim"
        classes = {"confirm-early": ConfirmEarly, "no-hold": NoHold}
        self.core_class: type[FleetCore] = classes.get(mutant or "", FleetCore)
        self.name = "fleet" + (f" --mutant {mutant}" if mutant else "")
        self._coverage = Coverage([compile_machine(MediatorSession)])
        self._recording = recording(((mediator_module, "TABLE"),), self._coverage)

    # --- explorer protocol ----------------------------------------------------------------

    def initial_states(self) -> list[State]:
        cores = [
            self.core_class(
                CONFIG,
                instance=instance,
                nonce_source=fixed_nonces(instance.encode()),
                crypto=SymbolicCrypto(),
            )
            for instance in INSTANCES
        ]
        return [State(World(cores))]

    def coverage(self) -> Coverage | None:
        return self._coverage

    def describe(self, state: State) -> str:
        w = state.world
        sessions = [
            {conn: core.state_of(conn) for conn in CONN if core.state_of(conn)} for core in w.cores
        ]
        store = sorted(k[-1:] + v[:1].decode() for k, v in w.store.items())
        return f"sessions {sessions} store {store} outcomes {w.outcome} told {w.told}"

    def invariant(self, state: State) -> str | None:
        w = state.world
        if w.violation:
            return w.violation
        if w.disconnects > 1 or w.identifications > 1:
            return "M1: a pair was introduced more than once"
        if w.told[0] is not None and w.told[0] == w.told[1]:
            return f"M1: both advertisers were sent {w.told[0]}"
        return None

    def terminal(self, state: State) -> str | None:
        w = state.world
        for i, name in enumerate(NAMES):
            if w.started[i] and w.outcome[i] is None:
                return f"M3: {name} started and has no outcome"
        if all(w.started) and not w.faulted and sorted(map(str, w.outcome)) != ["client", "peer"]:
            return f"M3: a run without faults did not pair A and B: {w.outcome}"
        for index, core in enumerate(w.cores):
            if core.sessions or core._claiming or core._remote or core._early:
                return f"M4: instance I{index} still holds state"
        live = [k for k, v in w.store.items() if v.startswith(b"R")]
        if live:
            return f"M4: the store still holds a live registration {live}"
        return None

    def successors(self, state: State) -> list[tuple[Step, State]]:
        w = state.world
        moves: list[tuple[Step, State]] = []
        faults: list[tuple[Step, State]] = []

        def go(step: Step, apply: Any, *args: Any) -> None:
            world = copy.deepcopy(w)
            with self._recording:
                apply(world, *args)
            (faults if step.fault else moves).append((step, State(world)))

        for i, name in enumerate(NAMES):
            if not w.started[i]:
                go(Step("app", name, f"starts at I{HOME[i]}"), self._start, i)
            if w.to_instance[i]:
                kind = w.to_instance[i][0][0]
                go(Step("deliver", f"I{HOME[i]}", kind, name), self._to_instance, i)
            if w.to_advertiser[i]:
                go(Step("deliver", name, w.to_advertiser[i][0][0], f"I{HOME[i]}"), self._to_adv, i)
        for j in range(2):
            if w.ops[j]:
                head = w.ops[j][0]
                text = "claim (write half)" if isinstance(head, tuple) else type(head).__name__
                go(Step("deliver", "store", text, f"I{j}"), self._op, j)
            if w.answers[j]:
                go(Step("deliver", f"I{j}", "answer", "store"), self._answer, j)
            if w.notices[j]:
                text = f"notice {w.notices[j][0][:1].decode()}"
                go(Step("deliver", f"I{j}", text, "store"), self._notice, j)
                if self.lossy and not w.lost:
                    go(Step("app", f"I{j}", f"{text} lost", fault=True), self._lose, j)
                if self.lossy and not w.duplicated:
                    go(Step("app", f"I{j}", f"{text} twice", fault=True), self._duplicate, j)
            if self.lossy and not w.refreshed[j] and w.cores[j].refresh():
                go(Step("app", f"I{j}", "refreshes", fault=True), self._refresh, j)
        if not moves and w.timers:
            (j, conn), deadline = min(w.timers.items(), key=lambda item: item[1])
            go(Step("timer", f"I{j}", f"conn {conn} at {deadline}"), self._fire, j, conn)
        return moves + faults

    # --- steps ----------------------------------------------------------------------------

    def _run(self, w: World, j: int, actions: list[Any]) -> None:
        """Route an instance's actions: to advertisers, timers, the store."""
        for action in actions:
            if isinstance(action, Send):
                i = CONN.index(action.conn)
                message = wire.decode(action.data)
                if isinstance(message, wire.PeerDisconnect):
                    w.disconnects += 1
                    w.told[i] = "disconnect"
                elif isinstance(message, wire.PeerIdentification):
                    w.identifications += 1
                    w.told[i] = "identification"
                    other = 1 - i
                    if not (w.told[other] == "disconnect" and w.confirmed[other]):
                        w.violation = "M2: PeerIdentification before the Peer confirmed"
                w.to_advertiser[i] += (("msg", action.data),)
            elif isinstance(action, Close):
                i = CONN.index(action.conn)
                w.to_advertiser[i] += (("eof", b""),)
                w.timers.pop((j, action.conn), None)
            elif isinstance(action, SetTimer):
                if action.deadline is None:
                    w.timers.pop((j, action.conn), None)
                else:
                    w.timers[(j, action.conn)] = action.deadline
            elif isinstance(action, Notify):
                w.ops[j] += (action,)
            else:
                w.ops[j] += (action,)

    def _start(self, w: World, i: int) -> None:
        w.started[i] = True
        j = HOME[i]
        self._run(
            w, j, w.cores[j].handle(Opened(CONN[i], (f"198.51.100.{i + 1}", 4000 + i)), w.now)
        )
        advertise = wire.Advertise(1, KEYS[i], KEYS[1 - i], None).encode()
        w.to_instance[i] += (("data", advertise),)

    def _to_instance(self, w: World, i: int) -> None:
        (kind, data), w.to_instance[i] = w.to_instance[i][0], w.to_instance[i][1:]
        j = HOME[i]
        if kind == "data":
            self._run(w, j, w.cores[j].handle(Received(CONN[i], data), w.now))
        else:
            if w.told[i] == "disconnect" and w.cores[j].state_of(CONN[i]) == "disconnecting":
                w.confirmed[i] = True
            self._run(w, j, w.cores[j].handle(Closed(CONN[i], None), w.now))

    def _to_adv(self, w: World, i: int) -> None:
        (kind, data), w.to_advertiser[i] = w.to_advertiser[i][0], w.to_advertiser[i][1:]
        if w.outcome[i] is not None:
            return
        if kind == "eof":
            w.outcome[i] = "failed: closed"
            return
        message = wire.decode(data)
        if isinstance(message, wire.AdvertiseChallenge):
            nonce = message.encrypted_nonce[_TAG + _KEY : _TAG + _KEY + _NONCE]
            w.to_instance[i] += (("data", wire.AdvertiseResponse(nonce).encode()),)
        elif isinstance(message, wire.PeerDisconnect):
            w.outcome[i] = "peer"
            w.to_instance[i] += (("close", b""),)
        elif isinstance(message, wire.PeerIdentification):
            w.outcome[i] = "client"
        else:
            w.outcome[i] = f"failed: {type(message).__name__}"

    def _op(self, w: World, j: int) -> None:
        op, rest = w.ops[j][0], w.ops[j][1:]
        if isinstance(op, tuple):  # the second half of a non-atomic claim
            _, action, partner = op
            w.ops[j] = rest
            self._claim_write(w, j, action, partner)
            return
        if isinstance(op, RegistryClaim):
            theirs = registry_key(PREFIX, op.their, op.our)
            partner = w.store.get(theirs)
            if not self.atomic:
                w.ops[j] = (("checked", op, partner), *rest)
                return
            w.ops[j] = rest
            self._claim_write(w, j, op, partner)
            return
        w.ops[j] = rest
        if isinstance(op, Notify):
            w.notices[INSTANCES.index(op.instance)] += (op.message,)
        elif isinstance(op, RegistryUnregister):
            key = registry_key(PREFIX, op.our, op.their)
            value = w.store.get(key, b"")
            if value[1:33] == token(INSTANCES[j], op.conn).encode():
                if value[:1] == b"R":
                    del w.store[key]
                elif value[:1] == b"T" and len(value) == 65:  # claimed: tell the Peer
                    del w.store[key]
                    owner = INSTANCES.index(value[33:49].decode())
                    w.notices[owner] += (encode_notice(b"G", int(value[49:65], 16)),)
        elif isinstance(op, RegistryRefresh):
            held = w.store.get(registry_key(PREFIX, op.our, op.their))
            mine = token(INSTANCES[j], op.conn).encode()
            if held is None:
                status = "lost"
            elif held[1:33] == mine:
                status = "kept" if held[:1] == b"R" else "claimed"
            else:
                status = "replaced"
            w.answers[j] += (RefreshAnswer(op.conn, status),)

    def _claim_write(self, w: World, j: int, op: RegistryClaim, partner: bytes | None) -> None:
        """The claim script (p2psc.aio.fleet.CLAIM) from the point where the partner's entry
        was read (every instance subscribes, so every owner is alive)."""
        theirs = registry_key(PREFIX, op.their, op.our)
        if partner is not None and partner[:1] == b"R":
            w.store[theirs] = b"T" + partner[1:33] + op.record[1:33]
            w.answers[j] += (RegistryAnswer(op.conn, CLAIMED, partner),)
            return
        if not op.may_register:
            w.answers[j] += (RegistryAnswer(op.conn, FULL),)
            return
        ours = registry_key(PREFIX, op.our, op.their)
        old = w.store.get(ours)
        w.store[ours] = op.record
        replaced = old is not None and old[:1] == b"R" and old[1:33] != op.record[1:33]
        if replaced and old is not None:
            owner = INSTANCES.index(old[1:17].decode())
            w.notices[owner] += (encode_notice(b"D", int(old[17:33], 16)),)
        w.answers[j] += (RegistryAnswer(op.conn, REGISTERED, replaced=replaced),)

    def _answer(self, w: World, j: int) -> None:
        answer, w.answers[j] = w.answers[j][0], w.answers[j][1:]
        self._run(w, j, w.cores[j].fleet_event(answer, w.now))

    def _notice(self, w: World, j: int) -> None:
        notice, w.notices[j] = w.notices[j][0], w.notices[j][1:]
        self._run(w, j, w.cores[j].fleet_event(Notice(notice), w.now))

    def _lose(self, w: World, j: int) -> None:
        w.notices[j] = w.notices[j][1:]
        w.lost = True

    def _duplicate(self, w: World, j: int) -> None:
        w.notices[j] = (w.notices[j][0], *w.notices[j])
        w.duplicated = True

    def _refresh(self, w: World, j: int) -> None:
        w.refreshed[j] = True
        self._run(w, j, w.cores[j].refresh())

    def _fire(self, w: World, j: int, conn: int) -> None:
        deadline = w.timers.pop((j, conn))
        w.now = max(w.now, deadline)
        self._run(w, j, w.cores[j].handle(TimerFired(conn), w.now))


def build(*, lossy: bool = False, mutant: str | None = None, faults: bool = False) -> FleetModel:
    """Entry point of the ``fleet`` configurations (``faults`` is an alias of ``lossy``)."""
    return FleetModel(lossy=lossy or faults, mutant=mutant)
