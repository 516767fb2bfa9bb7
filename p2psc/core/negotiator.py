"""Sans-IO protocol Negotiator: decide, one byte at a time, which protocol runs next.

Why sans-IO: the same core runs under the asyncio runner (:mod:`p2psc.aio.negotiator`), under
any other framework an embedder uses, and under the exhaustive explorer (``models/``), which
snapshots and restores it millions of times. It never reads a clock or a socket: every method
takes the bytes that arrived and *returns the bytes to send*, h11-style::

    n = Negotiator([ProtocolSpec(1, "chat", priority=5, wants_to_initiate=True)],
                   keepalive_interval=10.0)
    send(n.start_round())              # our one byte: a protocol id or KEEPALIVE
    while n.outcome is None:
        send(n.receive_data(recv()))   # may answer ACCEPT/REJECT; raises NegotiationError
    match n.outcome:
        case Negotiated(protocol, initiated_by_us): run it, then n.start_round() again
        case Sleep(seconds): wait, then n.start_round() again

After :class:`Negotiated` the connection is the protocol's: bytes that came in the same
``receive_data`` call after the deciding byte are in :attr:`Negotiator.trailing_data`. An
embedder that receives data while idle (callbacks rather than reads) calls
:meth:`Negotiator.protocol_done` when the protocol ended, so that the peer's next round byte,
which may arrive before our own ``start_round``, is kept rather than refused.

Control flow is the compiled :class:`p2psc.machines.negotiator.NegotiatorMachine`; this module
only answers its guards (from the protocol table, the byte just received and the protocol we
proposed) and turns transitions into bytes. The rules are normative in ``spec/negotiator.md``.

Byte values: protocol ids ``0..252``, :data:`REJECT` 253, :data:`ACCEPT` 254, :data:`KEEPALIVE`
255. Decisions both sides must compute identically: the winner of a simultaneous initiate of
different ids is the higher priority, and on equal priority the *lower id*; a simultaneous
initiate of the same id runs or fails by that protocol's :class:`Simultaneous` policy. A failed
round (REJECT, or a same-id collision whose policy is FAIL) ends in :class:`Sleep` on *both*
sides, exactly like an idle round, so a peer that keeps proposing something the other side
refuses costs one round per keepalive interval, not a busy loop.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

from p2psc.errors import InvalidTransition, NegotiationError
from p2psc.machines.compiler import MachineTable, compile_machine
from p2psc.machines.negotiator import NegotiatorMachine

__all__ = [
    "ACCEPT",
    "ASK",
    "KEEPALIVE",
    "MAX_PROTOCOL_ID",
    "REJECT",
    "Negotiated",
    "Negotiator",
    "NegotiatorSnapshot",
    "Outcome",
    "ProtocolSpec",
    "ProtocolTable",
    "Simultaneous",
    "Sleep",
    "describe_byte",
]

MAX_PROTOCOL_ID = 252
REJECT = 253
ACCEPT = 254
KEEPALIVE = 255

_TABLE = compile_machine(NegotiatorMachine)
_INITIAL = "Initial"
_SENT_KEEPALIVE = "SentKeepalive"
_SENT_INITIATE = "SentInitiate"
_RECEIVED_INITIATE = "ReceivedInitiate"
_WAIT = "WaitForAcceptReject"
_SLEEP = "Sleep"
_NEGOTIATED = "ProtocolNegotiated"
_FAILED = "Failed"
_WAITING = frozenset({_SENT_KEEPALIVE, _SENT_INITIATE, _WAIT})

_Steps = Mapping[tuple[str, str], tuple[tuple[tuple[tuple[str, bool], ...], str], ...]]


def _flatten(table: MachineTable) -> _Steps:
    """The compiled table as ``(state, event) -> ((guard literals, target), ...)`` in
    declaration order: the same table, in plain tuples, so the hot path of :meth:`_step` is a
    dict lookup and a loop (the explorer steps cores millions of times)."""
    steps: dict[tuple[str, str], list[tuple[tuple[tuple[str, bool], ...], str]]] = {}
    for t in table.transitions:
        literals = tuple((g.name, g.expected) for g in t.guards)
        steps.setdefault((t.source, t.event), []).append((literals, t.target))
    return MappingProxyType({key: tuple(value) for key, value in steps.items()})


_STEPS = _flatten(_TABLE)
_COMPILED = _TABLE

_ACCEPT_BYTE = bytes([ACCEPT])
_REJECT_BYTE = bytes([REJECT])
_KEEPALIVE_BYTE = bytes([KEEPALIVE])
_ID_BYTES = tuple(bytes([i]) for i in range(256))
_EVENT_OF_BYTE = ("initiate",) * (MAX_PROTOCOL_ID + 1) + ("reject", "accept", "keepalive")
"""The machine event for each received byte value."""


class Simultaneous(enum.Enum):
    """What a protocol does when both sides initiate it in the same round (both sides agree,
    because both look at the same protocol's policy)."""

    RUN = "run"
    """Run it; both sides report ``initiated_by_us=True`` (e.g. a symmetric chat)."""
    FAIL = "fail"
    """The round fails and both sides sleep (e.g. both want to be the learner of a resync)."""


class _Ask(enum.Enum):
    ASK = "ask"


ASK = _Ask.ASK
"""Default of :meth:`Negotiator.start_round`: ask each protocol's ``wants_to_initiate``."""

Decision = bool | Callable[[], bool]
"""A fixed answer, or a callable asked when the answer is needed."""


def _decide(decision: Decision) -> bool:
    return decision() if callable(decision) else bool(decision)


@dataclass(frozen=True, slots=True)
class ProtocolSpec:
    """One protocol the negotiator can start. Both sides MUST use the same ``id``,
    ``priority`` and ``simultaneous`` policy for it (they are part of the application
    protocol); ``name``, ``wants_to_initiate`` and ``should_accept`` are local."""

    id: int
    name: str
    priority: int = 0
    wants_to_initiate: Decision = False
    """Asked at the start of each round (highest priority first, stopping at the first yes)."""
    should_accept: Decision = True
    """Asked when the peer initiates this protocol and we must answer ACCEPT or REJECT."""
    simultaneous: Simultaneous = Simultaneous.RUN

    def rank(self) -> tuple[int, int]:
        """Smaller ranks win collisions: higher priority first, then the lower id."""
        return (-self.priority, self.id)


class ProtocolTable:
    """A validated, immutable protocol set. Build it once and share it between negotiators
    (the explorer restores many negotiators from snapshots against one table)."""

    __slots__ = ("by_id", "by_name", "by_rank")

    def __init__(self, protocols: Iterable[ProtocolSpec]) -> None:
        by_id: dict[int, ProtocolSpec] = {}
        by_name: dict[str, ProtocolSpec] = {}
        for spec in protocols:
            if not isinstance(spec.id, int) or not 0 <= spec.id <= MAX_PROTOCOL_ID:
                raise ValueError(f"protocol id must be 0..{MAX_PROTOCOL_ID}: {spec.id!r}")
            if spec.id in by_id:
                raise ValueError(f"duplicate protocol id {spec.id}")
            if spec.name in by_name:
                raise ValueError(f"duplicate protocol name {spec.name!r}")
            by_id[spec.id] = spec
            by_name[spec.name] = spec
        self.by_id: Mapping[int, ProtocolSpec] = MappingProxyType(by_id)
        self.by_name: Mapping[str, ProtocolSpec] = MappingProxyType(by_name)
        self.by_rank: tuple[ProtocolSpec, ...] = tuple(sorted(by_id.values(), key=_rank_of))

    def __getitem__(self, key: int | str) -> ProtocolSpec:
        return self.by_name[key] if isinstance(key, str) else self.by_id[key]

    def __contains__(self, key: object) -> bool:
        return key in self.by_id or key in self.by_name

    def __len__(self) -> int:
        return len(self.by_id)

    def winner(self, a: int, b: int) -> int:
        """The id that wins a simultaneous initiate of ``a`` and ``b`` (both known)."""
        return a if self.by_id[a].rank() <= self.by_id[b].rank() else b


def _rank_of(spec: ProtocolSpec) -> tuple[int, int]:
    return spec.rank()


@dataclass(frozen=True, slots=True)
class Negotiated:
    """The round chose ``protocol``; it now owns the connection. ``initiated_by_us`` is True on
    the side that sent the protocol's id (on both sides after a same-id RUN collision)."""

    protocol: ProtocolSpec
    initiated_by_us: bool


@dataclass(frozen=True, slots=True)
class Sleep:
    """The round ended without a protocol (idle, rejected, or a same-id FAIL collision):
    wait ``seconds``, then start a new round."""

    seconds: float


Outcome = Negotiated | Sleep | NegotiationError


class NegotiatorSnapshot(NamedTuple):
    """Everything that distinguishes one negotiator state from another; a plain, hashable
    tuple ``(state, proposed, negotiated, initiated_by_us, buffered, error)``:

    - ``state``: the machine state name (``"Initial"``, ``"SentKeepalive"``, ...; never
      ``"ReceivedInitiate"``, which is left within the same call).
    - ``proposed``: the id we sent this round (only in SentInitiate / WaitForAcceptReject; it
      freezes the ``wants_to_initiate`` answer so restores are deterministic), else None.
    - ``negotiated``: the agreed id in ProtocolNegotiated, else None.
    - ``initiated_by_us``: in ProtocolNegotiated, whether we sent the id; else False.
    - ``buffered``: in Initial/Sleep, the peer's early byte of its next round (at most one);
      in ProtocolNegotiated, trailing bytes that belong to the protocol; else ``b""``.
    - ``error``: the NegotiationError reason in Failed, else None.

    Configuration (protocol table, keepalive interval) is not part of it: pass it to
    :meth:`Negotiator.from_snapshot`.
    """

    state: str
    proposed: int | None
    negotiated: int | None
    initiated_by_us: bool
    buffered: bytes
    error: str | None


def describe_byte(byte: int) -> str:
    """Human name of a negotiator byte, for logs and error reasons."""
    if byte == KEEPALIVE:
        return "KEEPALIVE"
    if byte == ACCEPT:
        return "ACCEPT"
    if byte == REJECT:
        return "REJECT"
    return f"protocol id {byte}"


class Negotiator:
    """One side of one connection; see the module docstring for the calling pattern.

    Methods return the bytes to send, in order (usually one byte, sometimes none, at most two:
    our round byte followed by the answer to a peer byte that arrived early). A byte that the
    rules forbid moves the negotiator to ``Failed`` and raises :class:`NegotiationError`; the
    caller closes the connection. Calling a method in a state where it makes no sense (e.g.
    :meth:`start_round` while waiting for the peer) also raises NegotiationError but leaves the
    state unchanged, since the peer did nothing wrong.
    """

    __slots__ = (
        "_accepts",
        "_buffered",
        "_byte",
        "_error",
        "_initiated_by_us",
        "_negotiated",
        "_proposed",
        "_state",
        "keepalive_interval",
        "protocols",
    )

    def __init__(
        self,
        protocols: ProtocolTable | Iterable[ProtocolSpec],
        *,
        keepalive_interval: float = 10.0,
    ) -> None:
        if keepalive_interval < 0:
            raise ValueError("keepalive_interval must be >= 0")
        self.protocols = (
            protocols if isinstance(protocols, ProtocolTable) else ProtocolTable(protocols)
        )
        self.keepalive_interval = keepalive_interval
        self._state = _COMPILED.initial
        self._proposed: int | None = None
        self._negotiated: int | None = None
        self._initiated_by_us = False
        self._buffered = b""
        self._error: str | None = None
        self._byte = -1  # the byte being decided on; only meaningful inside receive steps
        self._accepts = False  # should_accept's one answer to the offer being decided on

    # --- snapshots ------------------------------------------------------------------------

    def snapshot(self) -> NegotiatorSnapshot:
        return NegotiatorSnapshot(
            self._state,
            self._proposed,
            self._negotiated,
            self._initiated_by_us,
            self._buffered,
            self._error,
        )

    def restore(self, snapshot: NegotiatorSnapshot) -> None:
        """Put this negotiator in ``snapshot``'s state (same configuration); cheap."""
        (
            self._state,
            self._proposed,
            self._negotiated,
            self._initiated_by_us,
            self._buffered,
            self._error,
        ) = snapshot

    @classmethod
    def from_snapshot(
        cls,
        snapshot: NegotiatorSnapshot,
        protocols: ProtocolTable | Iterable[ProtocolSpec],
        *,
        keepalive_interval: float = 10.0,
    ) -> Negotiator:
        negotiator = cls(protocols, keepalive_interval=keepalive_interval)
        negotiator.restore(snapshot)
        return negotiator

    # --- observing ------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """The machine state name (see :class:`NegotiatorMachine`)."""
        return self._state

    @property
    def outcome(self) -> Outcome | None:
        """How the current round ended, or None while it is under way (or not started)."""
        if self._state == _NEGOTIATED:
            assert self._negotiated is not None
            return Negotiated(self.protocols.by_id[self._negotiated], self._initiated_by_us)
        if self._state == _SLEEP:
            return Sleep(self.keepalive_interval)
        if self._state == _FAILED:
            return NegotiationError(self._error or "negotiation failed")
        return None

    @property
    def waiting(self) -> bool:
        """True while the round needs a byte from the peer."""
        return self._state in _WAITING

    @property
    def proposed(self) -> int | None:
        """The protocol id we initiated in the round under way, if any."""
        return self._proposed

    @property
    def trailing_data(self) -> bytes:
        """After :class:`Negotiated`: bytes that arrived after the deciding byte in the same
        :meth:`receive_data` call. They belong to the protocol; hand them to it."""
        return self._buffered if self._state == _NEGOTIATED else b""

    # --- driving --------------------------------------------------------------------------

    def start_round(self, propose: int | _Ask | None = ASK) -> bytes:
        """Start a round (from Initial, after Sleep, or after the protocol finished) and
        return the bytes to send: our one byte, plus our answer if the peer's byte of this
        round already arrived.

        ``propose``: ASK (default) asks the protocols' ``wants_to_initiate`` in rank order and
        initiates the first that says yes; an id initiates that protocol; None sends KEEPALIVE.
        """
        state = self._state
        if state == _FAILED:
            raise NegotiationError(self._error or "negotiation failed")
        if state == _SLEEP:
            self._state = self._step(state, "wake")
        elif state == _NEGOTIATED:
            self.protocol_done()
        elif state != _INITIAL:
            raise NegotiationError(f"start_round() called in {state}: a round is under way")
        if propose is ASK:
            proposed = self._ask_protocols()
        elif propose is None or propose in self.protocols.by_id:
            proposed = propose
        else:
            raise NegotiationError(f"cannot propose unknown protocol {propose!r}")
        self._proposed = proposed
        self._state = self._step(self._state, "start")
        out = _KEEPALIVE_BYTE if proposed is None else _ID_BYTES[proposed]
        if self._buffered:
            early, self._buffered = self._buffered, b""
            out += self._receive_byte(early[0])
        return out

    def protocol_done(self) -> bytes:
        """The negotiated protocol released the connection (on both sides: the protocol itself
        must define its end). From now on a byte from the peer is its next round's byte and is
        kept until :meth:`start_round`. Needed only by embedders that receive data while idle
        (callbacks); :meth:`start_round` calls it itself. Returns ``b""``."""
        if self._state != _NEGOTIATED:
            raise NegotiationError(f"protocol_done() called in {self._state}: nothing negotiated")
        self._state = self._step(self._state, "protocol_done")
        self._buffered = b""  # trailing data was the protocol's
        self._negotiated = None
        self._initiated_by_us = False
        return b""

    def receive_data(self, data: bytes) -> bytes:
        """Feed bytes from the peer (any chunking); return the bytes to send (ACCEPT/REJECT or
        nothing). Raises :class:`NegotiationError` on a byte the rules forbid.

        Bytes after the deciding byte of a round are kept as :attr:`trailing_data`; feeding
        more data once the outcome is :class:`Negotiated` is an error (they are the
        protocol's bytes, not ours)."""
        if self._state == _FAILED:
            raise NegotiationError(self._error or "negotiation failed")
        if not data:
            return b""
        if self._state == _NEGOTIATED:
            self._receive_byte(data[0])  # no transition for it: fails and raises
        out = b""
        for index, byte in enumerate(data):
            if self._state == _NEGOTIATED:
                self._buffered = data[index:]
                break
            out += self._receive_byte(byte)
        return out

    def fail(self, reason: str) -> NegotiationError:
        """Mark the negotiation failed (the machine's ``fail`` event), also for reasons found
        outside the core (EOF, a silent peer); returns the error to raise or log."""
        if self._state != _FAILED:
            self._state = self._step(self._state, "fail")
            self._error = reason
            # Failed keeps only its reason (NegotiatorSnapshot's documented fields): a stale
            # early byte or negotiated id would make equal failures differ.
            self._proposed = self._negotiated = None
            self._initiated_by_us = False
            self._buffered = b""
        return NegotiationError(self._error or reason)

    # --- internals ------------------------------------------------------------------------

    def _ask_protocols(self) -> int | None:
        for spec in self.protocols.by_rank:
            if _decide(spec.wants_to_initiate):
                return spec.id
        return None

    def _receive_byte(self, byte: int) -> bytes:
        source = self._state
        self._byte = byte
        try:
            target = self._step(source, _EVENT_OF_BYTE[byte])
        except InvalidTransition:
            raise self.fail(self._failure_reason(source, byte)) from None
        if target == source:  # Initial/Sleep: the peer's early byte of its next round
            self._buffered = _ID_BYTES[byte]
            return b""
        self._state = target
        if target == _WAIT:
            return b""
        proposed, self._proposed = self._proposed, None
        if target == _RECEIVED_INITIATE:
            # Ask should_accept exactly once per offer (spec/negotiator.md 4.2): the machine
            # has one guarded transition per answer and may look at the guard more than once,
            # which a callable with state (accept the first offer, refuse the next) must not
            # see. The guard below reads this one answer.
            self._accepts = _decide(self.protocols.by_id[byte].should_accept)
            target = self._step(target, "answer")
            self._state = target
            if target == _NEGOTIATED:
                self._negotiated, self._initiated_by_us = byte, False
                return _ACCEPT_BYTE
            return _REJECT_BYTE
        if target == _NEGOTIATED:
            self._negotiated, self._initiated_by_us = proposed, True
        return b""

    def _failure_reason(self, state: str, byte: int) -> str:
        what = describe_byte(byte)
        if state == _NEGOTIATED:
            return f"{what} received after the protocol was negotiated (bytes belong to it)"
        if byte <= MAX_PROTOCOL_ID and byte not in self.protocols.by_id:
            return f"unknown {what} received in {state}"
        if state in (_INITIAL, _SLEEP) and byte in (ACCEPT, REJECT):
            return f"{what} received between rounds: nothing was initiated"
        if state in (_INITIAL, _SLEEP):
            return f"peer sent {what} while its previous round byte was still unanswered"
        if state == _WAIT:
            return f"{what} received in {state}: expected ACCEPT or REJECT"
        return f"{what} received in {state}: nothing was initiated to answer"

    def _step(self, state: str, event: str) -> str:
        """Take ``event`` in ``state`` through the compiled table: the first transition whose
        guards all hold (as :meth:`MachineTable.step`); raise InvalidTransition if none.

        Seam for tools: when the module attribute ``_TABLE`` has been swapped for another
        object with a ``step`` method (the explorer's coverage recorder does this), the core
        steps through that object instead of the flattened fast path."""
        table = _TABLE
        if table is not _COMPILED:
            return table.step(state, event, self._guard).target
        for literals, target in _STEPS.get((state, event), ()):
            for name, expected in literals:
                if self._guard(name) != expected:
                    break
            else:
                return target
        raise InvalidTransition(_COMPILED.name, state, event)

    def _guard(self, name: str) -> bool:
        """Answer one guard of :class:`NegotiatorMachine` by name. Guards about the received
        byte are False for a byte that is not a known protocol id (the machine asks
        ``is_known_protocol`` first anyway)."""
        byte = self._byte
        by_id = self.protocols.by_id
        if name == "is_known_protocol":
            return byte in by_id
        if name == "we_initiate":
            return self._proposed is not None
        if name == "same_protocol":
            return byte == self._proposed
        if name == "can_buffer":
            return not self._buffered
        spec = by_id.get(byte)
        if spec is None:
            return False
        if name == "simultaneous_runs":
            return spec.simultaneous is Simultaneous.RUN
        if name == "our_protocol_wins":
            ours = by_id.get(self._proposed) if self._proposed is not None else None
            return ours is not None and ours.rank() < spec.rank()
        if name == "should_accept":
            return self._accepts  # asked once per offer, in _receive_byte
        raise KeyError(f"NegotiatorMachine has no guard {name!r}")
