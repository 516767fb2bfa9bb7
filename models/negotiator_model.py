"""The negotiator pair model: two real :class:`~p2psc.core.negotiator.Negotiator` cores on one
connection, over every configuration and every interleaving.

Configurations (one initial state each): every protocol set drawn from ``protocols`` ids
(1..3), every priority from :data:`PRIORITIES` per protocol (ties included), every
simultaneous-initiate policy (RUN/FAIL) per protocol. Both sides know the same set (the spec
requires both sides to agree on ids, priorities and policies); ``mixed_sets`` explores every
pair of *different* sets too. Choices: each side starts each round with KEEPALIVE or any
protocol it knows (``app`` steps, at most ``rounds`` rounds per side), and answers ACCEPT *or*
REJECT whenever its core asks (the ``should_accept`` callable: both answers are explored). Bytes
travel one at a time in FIFO order each way; a side whose core raises
:class:`~p2psc.errors.NegotiationError` closes the connection and the other side sees EOF; with
``faults`` the connection may also drop once at any moment (both sides see EOF).

Properties (``spec/properties.md``):

- N1 agreement: every round that both sides completed has the same result on both sides (both
  slept; both run the same protocol, with one initiator, or both after a same-id RUN collision;
  both failed). Under ``faults`` a failure is compatible with anything (a dropped connection
  cannot be agreed on), but two completed results must still match.
- N2 no deadlock: in every final state each side has failed or finished all its rounds; never
  one or both waiting for a byte that will not come.

Speed: a global state is a flat tuple; each side's step is memoised on ``(side, protocol table,
snapshot, input)`` with its trace label, so the cores run once per distinct local step, not once
per global state, and the hot path only builds tuples.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import p2psc.core.negotiator as negotiator_module
from models.explorer import Coverage, Step
from models.network import recording
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

__all__ = ["PRIORITIES", "NegotiatorPairModel", "build"]

WAITING = frozenset({"SentKeepalive", "SentInitiate", "WaitForAcceptReject"})
IDLE = frozenset({"Initial", "Sleep", "ProtocolNegotiated"})
FAILED = "Failed"
NEGOTIATED = "ProtocolNegotiated"
EOF = -1
PRIORITIES = (0, 1, 2)
POLICIES = (Simultaneous.RUN, Simultaneous.FAIL)

# A global state is a flat tuple:
#   (config, snap_a, snap_b, to_a, to_b, eof_to_a, eof_to_b, rounds_a, rounds_b,
#    pending_a, pending_b, violation, faults_left)
# to_x: bytes in flight towards side x; eof_to_x: x will see EOF after them; rounds_x: rounds x
# may still start; pending_x: x's round results not yet compared with the other side's.
CFG, SA, SB, TA, TB, EA, EB, RA, RB, PA, PB, VIOL, FAULTS = range(13)
State = tuple[Any, ...]
Token = tuple[Any, ...]  # ("sleep",) | ("run", id, initiated_by_us) | ("failed",)
Move = tuple[
    Step, NegotiatorSnapshot, bytes, Token | None, bool
]  # step, snap', sent, token, failed
Moves = tuple[Move, ...]
ConfigSpec = tuple[tuple[int, ...], tuple[Simultaneous, ...], tuple[frozenset[int], frozenset[int]]]
"""(priority per id, policy per id, (ids A knows, ids B knows))."""

_SLEEP: Token = ("sleep",)
_FAILED: Token = ("failed",)
_SIDES = ("A", "B")


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
                prio = [0] * protocols
                pol = [Simultaneous.RUN] * protocols
                for pid, p, q in zip(members, prio_m, pol_m, strict=True):
                    prio[pid], pol[pid] = p, q
                out.append((tuple(prio), tuple(pol), (known, known)))
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
        if not 1 <= protocols <= 3:
            raise ValueError("protocols must be 1..3")
        self.name = name
        self.rounds = rounds
        self.faults = faults
        self.negotiator_class = negotiator_class
        self.table = compile_machine(NegotiatorMachine)
        self._coverage = Coverage([self.table])
        self._patches = ((negotiator_module, "_TABLE"),)
        self._answer = True
        self._asked = False
        # Distinct protocol tables (configurations share them) -> one reusable core each.
        self._table_keys: dict[Hashable, int] = {}
        self._cores: list[Negotiator] = []
        self._known: list[tuple[int, ...]] = []
        self.config_specs = list(
            configs if configs is not None else configurations(protocols, mixed_sets)
        )
        self._config_tables: list[tuple[int, int]] = [
            (self._table_for(prio, pol, ka), self._table_for(prio, pol, kb))
            for prio, pol, (ka, kb) in self.config_specs
        ]
        self._memo_receive: dict[tuple[int, NegotiatorSnapshot, int], Moves] = {}
        self._memo_start: dict[tuple[int, NegotiatorSnapshot], Moves] = {}
        self._drop_step = Step("drop", "A", "connection lost", "B")

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

    # --- memoised local steps -------------------------------------------------------------

    def _run(
        self,
        table: int,
        snap: NegotiatorSnapshot,
        action: Callable[[Negotiator], bytes],
        starting: bool,
    ) -> list[tuple[str, NegotiatorSnapshot, bytes, Token | None]]:
        """Run ``action`` on the core of ``table`` restored to ``snap``; if the core asked
        whether to accept, run it again with the other answer. Returns (answer label,
        snapshot', bytes to send, completed-round token or None) per outcome."""
        core = self._cores[table]
        results = []
        for answer in (True, False):
            self._answer, self._asked = answer, False
            core.restore(snap)
            try:
                with recording(self._patches, self._coverage):
                    out = action(core)
            except NegotiationError:
                out = b""
            after = core.snapshot()
            label = "" if not self._asked else (" -> ACCEPT" if answer else " -> REJECT")
            in_round = starting or snap[0] in WAITING
            results.append((label, after, out, _token(in_round, after)))
            if not self._asked:
                break
        return results

    def _receive(self, table: int, snap: NegotiatorSnapshot, byte: int) -> Moves:
        key = (table, snap, byte)
        hit = self._memo_receive.get(key)
        if hit is None:
            if byte == EOF:
                results = self._run(table, snap, _eof, False)
            else:
                data = bytes((byte,))
                results = self._run(table, snap, lambda core: core.receive_data(data), False)
            hit = tuple(
                (
                    tuple(
                        Step("deliver", _SIDES[side], _byte_name(byte) + label, _SIDES[1 - side])
                        for side in (0, 1)
                    ),
                    after,
                    out,
                    token,
                    after[0] == FAILED,
                )
                for label, after, out, token in results
            )
            self._memo_receive[key] = hit
        return hit

    def _start(self, table: int, snap: NegotiatorSnapshot) -> Moves:
        key = (table, snap)
        hit = self._memo_start.get(key)
        if hit is None:
            moves: list[Move] = []
            for propose in (None, *self._known[table]):
                results = self._run(table, snap, lambda core, p=propose: core.start_round(p), True)
                what = "KEEPALIVE" if propose is None else f"initiate {propose}"
                for label, after, out, token in results:
                    steps = tuple(
                        Step("app", _SIDES[side], f"start round: {what}{label}") for side in (0, 1)
                    )
                    moves.append((steps, after, out, token, after[0] == FAILED))
            hit = tuple(moves)
            self._memo_start[key] = hit
        return hit

    # --- explorer interface ---------------------------------------------------------------

    def initial_states(self) -> list[State]:
        states = []
        faults = 1 if self.faults else 0
        for index, (table_a, table_b) in enumerate(self._config_tables):
            snap_a = self.negotiator_class(self._cores[table_a].protocols).snapshot()
            snap_b = self.negotiator_class(self._cores[table_b].protocols).snapshot()
            rounds = self.rounds
            states.append(
                (
                    index,
                    snap_a,
                    snap_b,
                    b"",
                    b"",
                    False,
                    False,
                    rounds,
                    rounds,
                    (),
                    (),
                    None,
                    faults,
                )
            )
        return states

    def successors(self, state: State) -> list[tuple[Step, State]]:
        out: list[tuple[Step, State]] = []
        tables = self._config_tables[state[CFG]]
        apply = self._apply
        for side in (0, 1):
            snap = state[SA + side]
            sname = snap[0]
            table = tables[side]
            inbound = state[TA + side]
            eof = state[EA + side]
            rounds = state[RA + side]
            # Deliver the next byte (or the EOF) towards this side. A side that failed closed
            # the connection and reads nothing; a side running a protocol does not read.
            if sname != FAILED and sname != NEGOTIATED and (inbound or eof):
                if inbound:
                    moves = self._receive(table, snap, inbound[0])
                    rest, after_eof = inbound[1:], eof
                else:
                    moves = self._receive(table, snap, EOF)
                    rest, after_eof = b"", False
                for steps, after, sent, token, failed in moves:
                    out.append(
                        (
                            steps[side],
                            apply(state, side, after, sent, token, failed, rest, after_eof, rounds),
                        )
                    )
            if rounds > 0 and sname in IDLE:
                for steps, after, sent, token, failed in self._start(table, snap):
                    out.append(
                        (
                            steps[side],
                            apply(
                                state, side, after, sent, token, failed, inbound, eof, rounds - 1
                            ),
                        )
                    )
        if state[FAULTS] > 0 and not (state[EA] or state[EB]):
            a_open = state[SA][0] != FAILED
            b_open = state[SB][0] != FAILED
            if a_open and b_open:
                dropped = list(state)
                dropped[TA], dropped[TB] = b"", b""
                dropped[EA], dropped[EB] = True, True
                dropped[FAULTS] = -1  # the connection is dead: later sends are lost
                out.append((self._drop_step, tuple(dropped)))
        return out

    def _apply(
        self,
        state: State,
        side: int,
        after: NegotiatorSnapshot,
        sent: bytes,
        token: Token | None,
        failed: bool,
        inbound: bytes,
        eof: bool,
        rounds: int,
    ) -> State:
        """The state after ``side`` moved to ``after`` and sent ``sent`` (the hot path)."""
        if side == 0:
            cfg, _, sb, _, tb, _, eb, _, rb, pa, pb, viol, faults = state
            other_failed = sb[0] == FAILED
            if failed:  # the runner closes the connection: it reads nothing more
                inbound, eof = b"", False
                if not other_failed:
                    eb = True
            elif sent and not other_failed and faults >= 0:
                tb += sent
            if token is not None:
                pa, pb, viol = self._match((*pa, token), pb, viol)
            return (cfg, after, sb, inbound, tb, eof, eb, rounds, rb, pa, pb, viol, faults)
        cfg, sa, _, ta, _, ea, _, ra, _, pa, pb, viol, faults = state
        other_failed = sa[0] == FAILED
        if failed:
            inbound, eof = b"", False
            if not other_failed:
                ea = True
        elif sent and not other_failed and faults >= 0:
            ta += sent
        if token is not None:
            pa, pb, viol = self._match(pa, (*pb, token), viol)
        return (cfg, sa, after, ta, inbound, ea, eof, ra, rounds, pa, pb, viol, faults)

    def _match(
        self, pa: tuple[Token, ...], pb: tuple[Token, ...], viol: str | None
    ) -> tuple[tuple[Token, ...], tuple[Token, ...], str | None]:
        """Compare the round results both sides have completed; keep the unmatched rest."""
        while pa and pb:
            a, b = pa[0], pb[0]
            if viol is None and not _agree(a, b, self.faults):
                viol = f"N1: round results differ: A {_tok(a)}, B {_tok(b)}"
            pa, pb = pa[1:], pb[1:]
        return pa, pb, viol

    def invariant(self, state: State) -> str | None:
        violation: str | None = state[VIOL]
        return violation

    def terminal(self, state: State) -> str | None:
        for side in (0, 1):
            name = state[SA + side][0]
            if name in WAITING:
                other = state[SA + 1 - side][0]
                return (
                    f"N2: deadlock: {_SIDES[side]} waits in {name} "
                    f"while {_SIDES[1 - side]} is in {other}"
                )
        return None

    def describe(self, state: State) -> str:
        sides = "; ".join(
            f"{_SIDES[s]}: {state[SA + s][0]}"
            + (f"({state[SA + s][2]})" if state[SA + s][2] is not None else "")
            + f", {state[RA + s]} rounds left"
            for s in (0, 1)
        )
        return f"{self.describe_config(state[CFG])}; {sides}"

    def coverage(self) -> Coverage | None:
        return self._coverage


def _token(in_round: bool, after: NegotiatorSnapshot) -> Token | None:
    """The result of the round this step completed, if it completed one: a round is under way
    while the state is in WAITING and ends when it leaves it; outside a round only a failure
    (an early byte that breaks the rules, or EOF) counts as a result."""
    state = after[0]
    if state in WAITING:
        return None
    if state == FAILED:
        return _FAILED
    if not in_round:
        return None
    if state == NEGOTIATED:
        return ("run", after[2], after[3])
    return _SLEEP


def _eof(core: Negotiator) -> bytes:
    if core.state != FAILED:
        core.fail("the peer closed the connection")
    return b""


def _tok(token: Token) -> str:
    if token[0] == "run":
        return f"run {token[1]} ({'initiator' if token[2] else 'responder'})"
    return str(token[0])


def _agree(a: Token, b: Token, faults: bool) -> bool:
    if faults and (a is _FAILED or b is _FAILED):
        return True
    if a[0] != b[0]:
        return False
    if a[0] == "run":
        return bool(a[1] == b[1] and (a[2] or b[2]))
    return True


def build(
    *, protocols: int | None = None, faults: bool = False, mutant: str | None = None
) -> NegotiatorPairModel:
    """Entry point of ``p2psc explore negotiator``."""
    if mutant is not None:
        from models.mutants import negotiator_mutant

        return negotiator_mutant(mutant, protocols=protocols or 3, faults=faults)
    return NegotiatorPairModel(protocols=protocols or 3, rounds=3, faults=faults)
