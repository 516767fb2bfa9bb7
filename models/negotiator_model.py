"""The negotiator pair model: two real :class:`~p2psc.core.negotiator.Negotiator` cores on one
connection, over every configuration and every interleaving.

Configurations (one initial state each): every protocol set drawn from ``protocols`` ids
(1..4), every priority from :data:`PRIORITIES` per protocol (ties included), every
simultaneous-initiate policy (RUN/FAIL) per protocol. Both sides know the same set (the spec
requires both sides to agree on ids, priorities and policies); ``mixed_sets`` explores every
pair of *different* sets too (a side that receives an id it does not know must fail cleanly).
Choices: each side starts each round with KEEPALIVE or any protocol it knows (``app`` steps, at
most ``rounds`` rounds per side), and answers ACCEPT *or* REJECT whenever its core asks (the
``should_accept`` callable: both answers are explored). Bytes travel one at a time in FIFO order
each way; a side whose core raises :class:`~p2psc.errors.NegotiationError` closes the connection
and the other side sees EOF after the bytes already in flight. With ``faults``, once per run:
the connection drops at any moment (both sides see EOF, bytes in flight are lost), or a side
that waits for a byte times out at any moment (its runner's deadline: it fails and closes).

Properties (``spec/properties.md``):

- N1 agreement: every round that both sides completed has the same result on both sides (both
  slept; both run the same protocol, with one initiator, or both after a same-id RUN collision;
  both failed). Under ``faults`` or ``mixed_sets`` one side's failure is compatible with
  anything (a dropped connection cannot be agreed on; nor can an id that only one side knows,
  which the other may already have accepted), but two completed results must still match.
- N2 no deadlock: in every final state each side has failed or finished all its rounds; never
  one or both waiting for a byte that will not come.

Speed (the explorer's budget is measured on this model). A global state is a tuple of five
small ints, ``(side A, side B, channel to A, channel to B, bookkeeping)``, each an *interned*
id (:mod:`models.interning`) of a richer hashable value:

- a *side* id stands for ``(protocol table, core snapshot)``;
- a *channel* id for ``(bytes in flight, whether EOF follows them)``;
- a *bookkeeping* id for ``(round results not yet compared, violation, faults left, rounds A
  may still start, rounds B may still start)``.

Interning is a bijection, so deduplicating ids is exactly deduplicating the full states; it only
makes a state cheap to hash and to build. Each local step (receive a byte, start a round, time
out) is computed once per side id by the real core and memoised with its trace labels; channel
operations and bookkeeping updates are memoised per id too, so the hot path is list indexing and
tuple building.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Sequence

from p2psc.models.explorer import Coverage, Step
from p2psc.models.interning import Interned
from p2psc.models.network import Recording

import p2psc.core.negotiator as negotiator_module
from p2psc.core.negotiator import (
    ACCEPT,
    KEEPALIVE,
    REJECT,
    Negotiator,
    NegotiatorSnapshot,
    ProtocolSpec,
    ProtocolTable,
    Simultaneous,
)
from p2psc.errors import NegotiationError
from p2psc.machines.compiler import compile_machine
from p2psc.machines.negotiator import NegotiatorMachine

__all__ = ["PRIORITIES", "NegotiatorPairModel", "build", "configurations"]

WAITING = frozenset({"SentKeepalive", "SentInitiate", "WaitForAcceptReject"})
IDLE = frozenset({"Initial", "Sleep", "ProtocolNegotiated"})
FAILED = "Failed"
NEGOTIATED = "ProtocolNegotiated"
EOF = -1
PRIORITIES = (0, 1, 2)
POLICIES = (Simultaneous.RUN, Simultaneous.FAIL)

SA, SB, CA, CB, BOOK = range(5)
"""Positions in a global state: side ids of A and B, channel ids towards A and B, bookkeeping."""
State = tuple[int, int, int, int, int]

# Round results as small ints (cheap to hash and compare): failed, slept, or ran protocol p
# (initiated by us or not) = T_RUN + 2 * p + initiated.
T_FAILED = 0
T_SLEEP = 1
T_RUN = 2

Move = tuple[Step, Step, int, bytes, int | None, bool]
"""(label as A's step, as B's step, side id after, bytes sent, token or None, failed)."""
Moves = tuple[Move, ...]
ConfigSpec = tuple[tuple[int, ...], tuple[Simultaneous, ...], tuple[frozenset[int], frozenset[int]]]
"""(priority per id, policy per id, (ids A knows, ids B knows))."""

Book = tuple[tuple[int, ...], str | None, int, int, int]
"""Bookkeeping: (unmatched round results, violation, faults left, rounds left A, rounds left B).
Unmatched results belong to the side that is ahead (at most one side is): A's tokens as ``t``,
B's as ``-1 - t``. Faults left: 1 while the one fault may still happen, 0 once it did (or none
allowed), -1 once the connection dropped (later sends are lost)."""

_SIDES = ("A", "B")
_EMPTY = 0
"""Channel id of the empty channel (no bytes, no EOF)."""


def _byte_name(byte: int) -> str:
    if byte == KEEPALIVE:
        return "KEEPALIVE"
    if byte == ACCEPT:
        return "ACCEPT"
    if byte == REJECT:
        return "REJECT"
    if byte == EOF:
        return "EOF"
    return f"initiate {byte}"


def configurations(protocols: int, mixed_sets: bool = False) -> list[ConfigSpec]:
    """Every protocol set of up to ``protocols`` ids (0..protocols-1) with every priority in
    PRIORITIES and every policy; both sides know the same set unless ``mixed_sets`` (then every
    pair of subsets, with every priority/policy of the full set)."""
    ids = tuple(range(protocols))
    subsets = [frozenset(c) for r in range(protocols + 1) for c in itertools.combinations(ids, r)]
    out: list[ConfigSpec] = []
    if mixed_sets:
        for prio in itertools.product(PRIORITIES, repeat=protocols):
            for pol in itertools.product(POLICIES, repeat=protocols):
                out.extend((prio, pol, (ka, kb)) for ka in subsets for kb in subsets)
        return out
    for known in subsets:
        members = sorted(known)
        for prio_m in itertools.product(PRIORITIES, repeat=len(members)):
            for pol_m in itertools.product(POLICIES, repeat=len(members)):
                priorities = [0] * protocols  # ids nobody knows: fixed, so configs stay unique
                policies = [Simultaneous.RUN] * protocols
                for pid, p, q in zip(members, prio_m, pol_m, strict=True):
                    priorities[pid], policies[pid] = p, q
                out.append((tuple(priorities), tuple(policies), (known, known)))
    return out


class NegotiatorPairModel:
    """See the module docstring. ``negotiator_class`` lets mutants swap in a broken core."""

    actors: Sequence[str] = _SIDES

    def __init__(
        self,
        *,
        protocols: int = 2,
        rounds: int = 2,
        faults: bool = False,
        mixed_sets: bool = False,
        negotiator_class: type[Negotiator] = Negotiator,
        configs: Sequence[ConfigSpec] | None = None,
        name: str = "negotiator",
    ) -> None:
        if not 1 <= protocols <= 4:
            raise ValueError("protocols must be 1..4")
        if rounds < 1:
            raise ValueError("rounds must be >= 1")
        plural = "s" if protocols != 1 else ""
        settings = [f"{protocols} protocol{plural}", f"{rounds} round{'s' if rounds != 1 else ''}"]
        settings += ["mixed sets"] * mixed_sets + ["faults"] * faults
        self.name = f"{name} ({', '.join(settings)})"
        self.rounds = rounds
        self.faults = faults
        self.negotiator_class = negotiator_class
        self.table = compile_machine(NegotiatorMachine)
        self._coverage = Coverage([self.table])
        self._recording = Recording(((negotiator_module, "_TABLE"),), self._coverage)
        self._answer = True
        self._asked = False
        # Distinct protocol tables (configurations share them) -> one reusable core each.
        self._table_keys: dict[Hashable, int] = {}
        self._cores: list[Negotiator] = []
        self._known: list[tuple[int, ...]] = []
        self._labels: dict[tuple[str, str], tuple[Step, Step]] = {}  # shared Step objects
        # Side ids: (table, snapshot), and what the hot path asks of each.
        self._sides = Interned()
        self._reads: list[bool] = []  # reads bytes: neither Failed nor ProtocolNegotiated
        self._idle: list[bool] = []  # may start a round (if it has rounds left)
        self._waiting: list[bool] = []  # waits for a byte of the peer
        self._failed: list[bool] = []
        self._receives: list[dict[int, Moves]] = []
        self._starts: list[Moves | None] = []
        self._timeouts: list[Moves | None] = []
        # Channel ids: (bytes in flight, EOF follows).
        self._channels = Interned()
        self._heads: list[tuple[int, int] | None] = []  # (byte or EOF, rest) or None if empty
        self._pushes: list[dict[bytes, int]] = []
        self._with_eof: list[int] = []
        self._channel((b"", False))  # id 0: _EMPTY
        # Bookkeeping ids.
        self._books = Interned()
        self._violations: list[str | None] = []
        self._faults_left: list[int] = []
        self._rounds_a: list[bool] = []  # A may start a round
        self._rounds_b: list[bool] = []
        self._started_a: list[int] = []  # bookkeeping id after A started a round (-1: unknown)
        self._started_b: list[int] = []
        self._results: list[dict[int, int]] = []  # token (B's as -1 - t) -> bookkeeping id
        self._mirrors: dict[int, int] = {}  # bookkeeping id -> the sides' roles swapped
        self.config_specs = list(
            configs if configs is not None else configurations(protocols, mixed_sets)
        )
        self._config_tables: list[tuple[int, int]] = [
            (self._table_for(prio, pol, ka), self._table_for(prio, pol, kb))
            for prio, pol, (ka, kb) in self.config_specs
        ]
        self._config_of: dict[tuple[int, int], int] = {}
        for index, tables in enumerate(self._config_tables):
            self._config_of.setdefault(tables, index)
        self._agree = _agreement(protocols, lenient=faults or mixed_sets)
        self._drop_step = Step("drop", "A", "connection lost", "B", fault=True)

    # --- configuration --------------------------------------------------------------------

    def _should_accept(self) -> bool:
        self._asked = True
        return self._answer

    def _table_for(
        self, prio: tuple[int, ...], pol: tuple[Simultaneous, ...], known: frozenset[int]
    ) -> int:
        key = (tuple(prio[i] for i in sorted(known)), tuple(pol[i] for i in sorted(known)), known)
        index = self._table_keys.get(key)
        if index is None:
            specs = [
                ProtocolSpec(
                    pid,
                    f"p{pid}",
                    priority=prio[pid],
                    should_accept=self._should_accept,
                    simultaneous=pol[pid],
                )
                for pid in sorted(known)
            ]
            index = len(self._cores)
            self._table_keys[key] = index
            self._cores.append(self.negotiator_class(ProtocolTable(specs)))
            self._known.append(tuple(sorted(known)))
        return index

    def describe_config(self, index: int) -> str:
        prio, pol, (ka, kb) = self.config_specs[index]
        protos = ", ".join(
            f"{pid}: priority {prio[pid]}, {pol[pid].value}" for pid in range(len(prio))
        )
        known = (
            f"both know {sorted(ka)}" if ka == kb else f"A knows {sorted(ka)}, B knows {sorted(kb)}"
        )
        return f"protocols [{protos}]; {known}"

    # --- interned ids ---------------------------------------------------------------------

    def _side(self, table: int, snap: NegotiatorSnapshot) -> int:
        side, new = self._sides((table, snap))
        if new:
            name = snap[0]
            self._reads.append(name != FAILED and name != NEGOTIATED)
            self._idle.append(name in IDLE)
            self._waiting.append(name in WAITING)
            self._failed.append(name == FAILED)
            self._receives.append({})
            self._starts.append(None)
            self._timeouts.append(None)
        return side

    def side_of(self, side: int) -> tuple[int, NegotiatorSnapshot]:
        """(protocol table, core snapshot) behind a side id."""
        value: tuple[int, NegotiatorSnapshot] = self._sides.values[side]
        return value

    def _channel(self, value: tuple[bytes, bool]) -> int:
        channel, new = self._channels(value)
        if new:
            self._heads.append(None)
            self._pushes.append({})
            self._with_eof.append(-1)
            data, eof = value
            if data:  # (interns the rest, so the lists above are extended first)
                self._heads[channel] = (data[0], self._channel((data[1:], eof)))
            elif eof:
                self._heads[channel] = (EOF, _EMPTY)
        return channel

    def _push(self, channel: int, sent: bytes) -> int:
        data, eof = self._channels.values[channel]
        pushed = self._channel((data + sent, eof))
        self._pushes[channel][sent] = pushed
        return pushed

    def _eof_after(self, channel: int) -> int:
        closing = self._with_eof[channel]
        if closing < 0:
            closing = self._channel((self._channels.values[channel][0], True))
            self._with_eof[channel] = closing
        return closing

    def _book(self, value: Book) -> int:
        book, new = self._books(value)
        if new:
            self._violations.append(value[1])
            self._faults_left.append(value[2])
            self._rounds_a.append(value[3] > 0)
            self._rounds_b.append(value[4] > 0)
            self._started_a.append(-1)
            self._started_b.append(-1)
            self._results.append({})
        return book

    def _started(self, book: int, side: int) -> int:
        """Bookkeeping after ``side`` (0: A, 1: B) started a round (one round fewer left)."""
        pending, viol, faults, rounds_a, rounds_b = self._books.values[book]
        if side == 0:
            after = self._started_a[book] = self._book(
                (pending, viol, faults, rounds_a - 1, rounds_b)
            )
        else:
            after = self._started_b[book] = self._book(
                (pending, viol, faults, rounds_a, rounds_b - 1)
            )
        return after

    def _result(self, book: int, signed: int) -> int:
        """Bookkeeping after a side completed a round: A's token ``t`` as ``t``, B's as
        ``-1 - t``. Compare it with the other side's oldest unmatched result, or keep it
        until the other side completes that round."""
        pending, viol, faults, rounds_a, rounds_b = self._books.values[book]
        if not pending or (pending[0] >= 0) == (signed >= 0):
            pending = (*pending, signed)
        else:
            a, b = (signed, -1 - pending[0]) if signed >= 0 else (pending[0], -1 - signed)
            if viol is None and not self._agree[a][b]:
                viol = f"N1: round results differ: A {_tok(a)}, B {_tok(b)}"
            pending = pending[1:]
        after = self._book((pending, viol, faults, rounds_a, rounds_b))
        self._results[book][signed] = after
        return after

    def _with_faults(self, book: int, faults: int) -> int:
        """The same bookkeeping with ``faults`` left (a fault happened)."""
        pending, viol, _, rounds_a, rounds_b = self._books.values[book]
        return self._book((pending, viol, faults, rounds_a, rounds_b))

    # --- memoised local steps -------------------------------------------------------------

    def _run(
        self,
        side: int,
        action: Callable[[Negotiator], bytes],
        starting: bool,
        kind: str,
        what: str,
    ) -> list[Move]:
        """Run ``action`` on the real core of ``side``'s table restored to its snapshot; if the
        core asked whether to accept, run it again with the other answer. One move each."""
        table, snap = self.side_of(side)
        core = self._cores[table]
        moves: list[Move] = []
        in_round = starting or snap[0] in WAITING
        with self._recording:
            for answer in (True, False):
                self._answer, self._asked = answer, False
                core.restore(snap)
                try:
                    out = action(core)
                except NegotiationError:
                    out = b""
                after = core.snapshot()
                label = what
                if self._asked:
                    label += " -> ACCEPT" if answer else " -> REJECT"
                step_a, step_b = self._steps(kind, label)
                target = self._side(table, after)
                token = _token(in_round, after)
                moves.append((step_a, step_b, target, out, token, after[0] == FAILED))
                if not self._asked:
                    break
        return moves

    def _steps(self, kind: str, label: str) -> tuple[Step, Step]:
        """The step labels for A and for B (shared objects: traces only need a few)."""
        steps = self._labels.get((kind, label))
        if steps is None:
            fault = kind == "timer"  # the runner's deadline, modelled as a fault
            if kind == "deliver":
                steps = (Step(kind, "A", label, "B"), Step(kind, "B", label, "A"))
            else:
                steps = (Step(kind, "A", label, fault=fault), Step(kind, "B", label, fault=fault))
            self._labels[(kind, label)] = steps
        return steps

    def _receive(self, side: int, byte: int) -> Moves:
        if byte == EOF:
            moves = self._run(side, _eof, False, "deliver", "EOF")
        else:
            data = bytes((byte,))

            def receive(core: Negotiator) -> bytes:
                return core.receive_data(data)

            moves = self._run(side, receive, False, "deliver", _byte_name(byte))
        hit = self._receives[side][byte] = tuple(moves)
        return hit

    def _start(self, side: int) -> Moves:
        moves: list[Move] = []
        for propose in (None, *self._known[self.side_of(side)[0]]):
            what = "KEEPALIVE" if propose is None else f"initiate {propose}"
            moves += self._run(side, _starter(propose), True, "app", f"start round: {what}")
        hit = self._starts[side] = tuple(moves)
        return hit

    def _timeout(self, side: int) -> Moves:
        moves = self._run(side, _timed_out, False, "timer", "no byte in time (fault)")
        hit = self._timeouts[side] = tuple(moves)
        return hit

    # --- explorer interface ---------------------------------------------------------------

    def initial_states(self) -> list[State]:
        states = []
        book = self._book(((), None, 1 if self.faults else 0, self.rounds, self.rounds))
        for table_a, table_b in self._config_tables:
            snap_a = self.negotiator_class(self._cores[table_a].protocols).snapshot()
            snap_b = self.negotiator_class(self._cores[table_b].protocols).snapshot()
            states.append((self._side(table_a, snap_a), self._side(table_b, snap_b), 0, 0, book))
        return states

    def successors(self, state: State) -> list[tuple[Step, State]]:
        """Every enabled step; the hot path of the explorer (written for speed, see above)."""
        sa, sb, ca, cb, book = state
        out: list[tuple[Step, State]] = []
        append = out.append
        failed = self._failed
        a_failed = failed[sa]
        b_failed = failed[sb]
        alive = self._faults_left[book] >= 0
        pushes = self._pushes
        with_eof = self._with_eof
        results = self._results
        # --- side A ---
        # Deliver the next byte (or the EOF) towards A. A side that failed closed the
        # connection and reads nothing; a side running a protocol does not read.
        head = self._heads[ca]
        if head is not None and self._reads[sa]:
            byte, rest = head
            moves = self._receives[sa].get(byte) or self._receive(sa, byte)
            for step, _, after, sent, token, now_failed in moves:
                inbound, outbound = rest, cb
                if now_failed:  # the runner closes the connection: it reads nothing more
                    inbound = _EMPTY
                    if not b_failed:
                        outbound = with_eof[cb] if with_eof[cb] >= 0 else self._eof_after(cb)
                elif sent and not b_failed and alive:
                    outbound = pushes[cb].get(sent) or self._push(cb, sent)
                after_book = book
                if token is not None:
                    after_book = results[book].get(token, -1)
                    if after_book < 0:
                        after_book = self._result(book, token)
                append((step, (after, sb, inbound, outbound, after_book)))
        if self._idle[sa] and self._rounds_a[book]:
            moves = self._starts[sa] or self._start(sa)
            started = self._started_a[book]
            if started < 0:
                started = self._started(book, 0)
            for step, _, after, sent, token, now_failed in moves:
                inbound, outbound = ca, cb
                if now_failed:
                    inbound = _EMPTY
                    if not b_failed:
                        outbound = with_eof[cb] if with_eof[cb] >= 0 else self._eof_after(cb)
                elif sent and not b_failed and alive:
                    outbound = pushes[cb].get(sent) or self._push(cb, sent)
                after_book = started
                if token is not None:
                    after_book = results[started].get(token, -1)
                    if after_book < 0:
                        after_book = self._result(started, token)
                append((step, (after, sb, inbound, outbound, after_book)))
        # --- side B (the mirror image; its round results are recorded as -1 - token) ---
        head = self._heads[cb]
        if head is not None and self._reads[sb]:
            byte, rest = head
            moves = self._receives[sb].get(byte) or self._receive(sb, byte)
            for _, step, after, sent, token, now_failed in moves:
                inbound, outbound = rest, ca
                if now_failed:
                    inbound = _EMPTY
                    if not a_failed:
                        outbound = with_eof[ca] if with_eof[ca] >= 0 else self._eof_after(ca)
                elif sent and not a_failed and alive:
                    outbound = pushes[ca].get(sent) or self._push(ca, sent)
                after_book = book
                if token is not None:
                    signed = -1 - token
                    after_book = results[book].get(signed, -1)
                    if after_book < 0:
                        after_book = self._result(book, signed)
                append((step, (sa, after, outbound, inbound, after_book)))
        if self._idle[sb] and self._rounds_b[book]:
            moves = self._starts[sb] or self._start(sb)
            started = self._started_b[book]
            if started < 0:
                started = self._started(book, 1)
            for _, step, after, sent, token, now_failed in moves:
                inbound, outbound = cb, ca
                if now_failed:
                    inbound = _EMPTY
                    if not a_failed:
                        outbound = with_eof[ca] if with_eof[ca] >= 0 else self._eof_after(ca)
                elif sent and not a_failed and alive:
                    outbound = pushes[ca].get(sent) or self._push(ca, sent)
                after_book = started
                if token is not None:
                    signed = -1 - token
                    after_book = results[started].get(signed, -1)
                    if after_book < 0:
                        after_book = self._result(started, signed)
                append((step, (sa, after, outbound, inbound, after_book)))
        if self._faults_left[book] > 0:
            out.extend(self._faults(state))
        return out

    def _faults(self, state: State) -> list[tuple[Step, State]]:
        """The one fault of a run: the connection drops, or a waiting side times out."""
        out: list[tuple[Step, State]] = []
        sa, sb, ca, cb, book = state
        if self._channels.values[ca][1] or self._channels.values[cb][1]:
            return out  # the connection is already closing
        if not (self._failed[sa] or self._failed[sb]):
            closed = self._channel((b"", True))
            dropped = self._with_faults(book, -1)  # dead: later sends are lost
            out.append((self._drop_step, (sa, sb, closed, closed, dropped)))
        used = self._with_faults(book, 0)
        for index, side in enumerate((sa, sb)):
            if not self._waiting[side]:
                continue
            for step_a, step_b, after, _, token, _ in self._timeouts[side] or self._timeout(side):
                # It reads nothing more; the other side sees EOF after what is in flight.
                after_book = used
                if token is not None:
                    after_book = self._result(used, token if index == 0 else -1 - token)
                if index == 0:
                    nxt = (after, sb, _EMPTY, self._eof_after(cb), after_book)
                    out.append((step_a, nxt))
                else:
                    nxt = (sa, after, self._eof_after(ca), _EMPTY, after_book)
                    out.append((step_b, nxt))
        return out

    def canonical(self, state: State) -> State:
        """The representative of ``state`` under the one symmetry of the model: swapping the
        two sides (their snapshots and tables, their inbound channels, their rounds left and the
        sign of their unmatched round results). Both N1 and N2 are symmetric, and every
        configuration's mirror image is a configuration too (the same set on both sides, or,
        with mixed sets, every ordered pair), so exploring one state of each pair is enough."""
        sa, sb, ca, cb, book = state
        mirrored = (sb, sa, cb, ca, self._mirror(book))
        return mirrored if mirrored < state else state

    def _mirror(self, book: int) -> int:
        mirror = self._mirrors.get(book)
        if mirror is None:
            pending, viol, faults, rounds_a, rounds_b = self._books.values[book]
            swapped = tuple(-1 - token for token in pending)
            mirror = self._mirrors[book] = self._book((swapped, viol, faults, rounds_b, rounds_a))
        return mirror

    def decode(self, state: State) -> tuple[Hashable, ...]:
        """The full state behind the ids: (side A, side B, channel to A, channel to B,
        bookkeeping), each as the value it was interned from."""
        sa, sb, ca, cb, book = state
        sides, channels = self._sides.values, self._channels.values
        return (sides[sa], sides[sb], channels[ca], channels[cb], self._books.values[book])

    def invariant(self, state: State) -> str | None:
        return self._violations[state[BOOK]]

    def terminal(self, state: State) -> str | None:
        for index in (0, 1):
            name = self.side_of(state[SA + index])[1][0]
            if name in WAITING:
                other = self.side_of(state[SA + 1 - index])[1][0]
                return (
                    f"N2: deadlock: {_SIDES[index]} waits in {name} "
                    f"while {_SIDES[1 - index]} is in {other}"
                )
        return None

    def describe(self, state: State) -> str:
        parts = []
        tables = []
        rounds = self._books.values[state[BOOK]][3:]
        for index in (0, 1):
            table, snap = self.side_of(state[SA + index])
            tables.append(table)
            negotiated = f"({snap[2]})" if snap[2] is not None else ""
            parts.append(f"{_SIDES[index]}: {snap[0]}{negotiated}, {rounds[index]} rounds left")
        config = self._config_of[(tables[0], tables[1])]
        return f"{self.describe_config(config)}; {'; '.join(parts)}"

    def coverage(self) -> Coverage | None:
        return self._coverage


def _token(in_round: bool, after: NegotiatorSnapshot) -> int | None:
    """The result of the round this step completed, if it completed one: a round is under way
    while the state is in WAITING and ends when it leaves it; outside a round only a failure
    (an early byte that breaks the rules, or EOF) counts as a result."""
    state = after[0]
    if state in WAITING:
        return None
    if state == FAILED:
        return T_FAILED
    if not in_round:
        return None
    if state == NEGOTIATED:
        assert after[2] is not None
        return T_RUN + 2 * after[2] + (1 if after[3] else 0)
    return T_SLEEP


def _agreement(protocols: int, *, lenient: bool) -> list[list[bool]]:
    """``table[a][b]``: whether round results ``a`` (A's) and ``b`` (B's) agree (N1).

    ``lenient`` (faults, or sides that know different sets): one side's failure agrees with
    anything, because the other side cannot know in time (a dropped connection; an id the
    failing side did not know, which the other side may already have accepted); it learns from
    the EOF that follows."""
    size = T_RUN + 2 * protocols
    table = [[False] * size for _ in range(size)]
    for a in range(size):
        for b in range(size):
            if lenient and (a == T_FAILED or b == T_FAILED):
                agree = True
            elif a < T_RUN or b < T_RUN:
                agree = a == b
            else:
                # The same protocol, and at least one initiator (both after a RUN collision).
                agree = (a - T_RUN) // 2 == (b - T_RUN) // 2 and bool((a | b) & 1)
            table[a][b] = agree
    return table


def _starter(propose: int | None) -> Callable[[Negotiator], bytes]:
    """Start a round proposing ``propose`` (None: KEEPALIVE)."""

    def start(core: Negotiator) -> bytes:
        return core.start_round(propose)

    return start


def _eof(core: Negotiator) -> bytes:
    if core.state != FAILED:
        core.fail("the peer closed the connection")
    return b""


def _timed_out(core: Negotiator) -> bytes:
    core.fail("no byte from the peer in time")
    return b""


def _tok(token: int) -> str:
    if token == T_FAILED:
        return "failed"
    if token == T_SLEEP:
        return "sleep"
    pid, initiated = divmod(token - T_RUN, 2)
    return f"run {pid} ({'initiator' if initiated else 'responder'})"


def build(
    *,
    protocols: int | None = None,
    faults: bool = False,
    mutant: str | None = None,
    mixed_sets: bool = False,
) -> NegotiatorPairModel:
    """Entry point of ``p2psc explore negotiator`` (three protocols, three rounds by default)."""
    if mutant is not None:
        from p2psc.models.mutants import negotiator_mutant

        return negotiator_mutant(
            mutant, protocols=protocols or 3, rounds=3, faults=faults, mixed_sets=mixed_sets
        )
    return NegotiatorPairModel(
        protocols=protocols or 3, rounds=3, faults=faults, mixed_sets=mixed_sets
    )
