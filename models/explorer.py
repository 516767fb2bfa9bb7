"""A generic breadth-first explicit-state model checker (anchors: Stateright, TLC, SPIN).

Why breadth-first: the first violation found is at the smallest depth, so the counterexample
printed is a shortest trace, and parent pointers (one dict entry per state, which is also the
deduplication set) are all that is needed to rebuild it.

A :class:`Model` supplies hashable global states, their successors (each labelled with a
:class:`Step` saying who did what), a safety invariant checked in *every* reached state, and a
terminal check: a *final* state must be an allowed outcome (otherwise it is a deadlock, e.g. both
sides waiting for each other, or a run that ended badly). A state is final when it has no
successor, or when only faults (a dropped connection, a timer firing early: steps the environment
may take but need not) could move it on: otherwise a deadlock would hide behind the fault that
could break it. The engine knows nothing about cores or networks; models build their states from
core snapshots, channels, timers and dropped connections (see :mod:`models.network`).

Coverage: a model may return a :class:`Coverage` listing the transitions declared by the
compiled machine tables and the ones its cores actually took; the report lists the declared
transitions that no explored run ever took (dead spec, or a scenario the model does not cover).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Generic, Protocol, TypeVar

from p2psc.errors import InvalidTransition
from p2psc.machines.compiler import GuardOracle, MachineTable, Transition

__all__ = [
    "Coverage",
    "Model",
    "RecordingTable",
    "Result",
    "Step",
    "Violation",
    "coverage_percent",
    "explore",
    "format_report",
    "mermaid_trace",
    "text_trace",
]

S = TypeVar("S", bound=Hashable)
DEFER_CHUNK = 1024
"""States of a level expanded before the real core steps their deferred states wait for are
computed in one batch (see :data:`_MARK`)."""

_MARK: tuple[object] = (object(),)
"""Between a chunk of a level and the states it deferred, and after those: for a model that
defers a state whose real core steps are not computed yet (``successors_or_defer(state,
wanted)`` returns None and notes the steps in ``wanted``), the explorer runs the noted steps in
one batch (``run_deferred(wanted)``) at the first mark and expands the deferred states after it.

Why: a core step is about twice as cheap in a batch as alone in the middle of a search (see
``PackedNetwork.run_deferred``). Exact: every state of a level is expanded once, with the same
successors; only the order within the level changes (hence which of several equally short
traces reaches a state first, and the order snapshots are interned in). One flat loop with
marks, rather than a generator of (state, successors): a generator's resumption per state cost
4% of the mediation model's run."""


@dataclass(frozen=True, slots=True)
class Step:
    """One labelled transition of the global system, for traces and diagrams.

    ``kind`` is ``"deliver"`` (``source`` sent ``text`` to ``actor``, who now handles it),
    ``"timer"`` (a deadline of ``actor`` fired), ``"drop"`` (the connection between ``actor``
    and ``source`` failed), ``"app"`` (``actor`` took an application decision) or ``"init"``.
    ``fault`` marks a step of the environment that may happen but need not (a dropped
    connection, a timer firing early): progress must never depend on one.
    """

    kind: str
    actor: str
    text: str
    source: str | None = None
    fault: bool = False

    def __str__(self) -> str:
        if self.kind == "deliver":
            return f"{self.source} -> {self.actor}: {self.text}"
        if self.kind == "drop":
            return f"connection {self.actor} <-> {self.source} dropped ({self.text})"
        return f"{self.actor}: {self.kind} {self.text}"


class RecordingTable:
    """Stands in for a :class:`MachineTable` and records every transition its ``step`` returns.

    ``step`` has exactly the semantics of :meth:`MachineTable.step` (the first declared
    transition whose guard literals all hold, else :class:`InvalidTransition`) but walks a
    flattened copy of the index, because every memo-missing core step of an exploration goes
    through it. Other attributes are the table's.
    """

    __slots__ = ("_index", "_table", "_taken")

    def __init__(self, table: MachineTable, taken: set[int]) -> None:
        self._table = table
        self._taken = taken
        index: dict[tuple[str, str], list[tuple[tuple[tuple[str, bool], ...], Transition]]] = {}
        for transition in table.transitions:
            literals = tuple((guard.name, guard.expected) for guard in transition.guards)
            index.setdefault((transition.source, transition.event), []).append(
                (literals, transition)
            )
        self._index = {key: tuple(value) for key, value in index.items()}

    def step(self, state: str, event: str, oracle: GuardOracle | None = None) -> Transition:
        for literals, transition in self._index.get((state, event), ()):
            if literals and oracle is None:
                raise ValueError(f"{self._table.name}: {transition} needs a guard oracle")
            for name, expected in literals:
                if oracle(name) != expected:  # type: ignore[misc]
                    break
            else:
                self._taken.add(transition.index)
                return transition
        raise InvalidTransition(self._table.name, state, event)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)


class Coverage:
    """Declared machine transitions versus the ones taken while exploring.

    Models call :meth:`take` (by transition index) or :meth:`take_pair` (by source/target state
    names, for cores that do not report which transition they took), or let the cores step
    through :meth:`recorder` proxies, which record exactly the transitions taken.
    """

    __slots__ = ("_recorders", "tables", "taken")

    def __init__(self, tables: Iterable[MachineTable]) -> None:
        self.tables: dict[str, MachineTable] = {table.name: table for table in tables}
        self.taken: dict[str, set[int]] = {name: set() for name in self.tables}
        self._recorders: dict[str, RecordingTable] = {}

    def recorder(self, table: MachineTable) -> RecordingTable:
        """A proxy for ``table`` (one of ours) that records each transition its ``step`` takes."""
        if isinstance(table, RecordingTable):
            return table
        recorder = self._recorders.get(table.name)
        if recorder is None or recorder._table is not table:
            recorder = RecordingTable(table, self.taken[table.name])
            self._recorders[table.name] = recorder
        return recorder

    def take(self, machine: str, index: int) -> None:
        self.taken[machine].add(index)

    def take_transition(self, transition: Transition, machine: str) -> None:
        self.taken[machine].add(transition.index)

    def take_pair(self, machine: str, source: str, target: str, event: str | None = None) -> None:
        """Mark every declared transition ``source -> target`` (of ``event`` when given)."""
        for transition in self.tables[machine].transitions:
            if (
                transition.source == source
                and transition.target == target
                and (event is None or transition.event == event)
            ):
                self.taken[machine].add(transition.index)

    @property
    def declared(self) -> int:
        return sum(len(table.transitions) for table in self.tables.values())

    @property
    def covered(self) -> int:
        return sum(len(indices) for indices in self.taken.values())

    def missing(self) -> list[tuple[str, Transition]]:
        """Declared transitions never taken, in declaration order."""
        return [
            (name, transition)
            for name, table in self.tables.items()
            for transition in table.transitions
            if transition.index not in self.taken[name]
        ]


class Model(Protocol[S]):
    """What the explorer needs from a model of a concurrent system."""

    name: str
    actors: Sequence[str]

    def initial_states(self) -> Iterable[S]:
        """Every initial global state (several: one per configuration explored)."""
        ...

    def successors(self, state: S) -> Sequence[tuple[Step, S]]:
        """Every (step, next state) enabled in ``state``, fault steps (``Step.fault``) after
        all others. No successor, or only faults, means the system itself cannot move on: the
        state is *final* and must pass :meth:`terminal` (its faults are still explored)."""
        ...

    def invariant(self, state: S) -> str | None:
        """``None`` when every safety property holds in ``state``, else what is violated."""
        ...

    def terminal(self, state: S) -> str | None:
        """For a final state: ``None`` if it is an allowed outcome, else why not."""
        ...

    def describe(self, state: S) -> str:
        """A short human description of ``state`` (printed under a counterexample)."""
        ...

    def coverage(self) -> Coverage | None:
        """Declared versus taken machine transitions, or ``None`` if the model has no tables."""
        ...


@dataclass(frozen=True)
class Violation(Generic[S]):
    """A property violated in ``states[-1]``: ``kind`` is ``"invariant"`` (a safety invariant
    fails in that state) or ``"terminal"`` (a final state that is not an allowed outcome: a
    deadlock, or a run that ended badly)."""

    kind: str
    message: str
    steps: tuple[Step, ...]
    states: tuple[S, ...]

    @property
    def state(self) -> S:
        return self.states[-1]


@dataclass
class Result(Generic[S]):
    """What one exploration found and what it cost. ``terminals`` counts the final states
    (no successor, or only faults: see :meth:`Model.successors`)."""

    model: str
    states: int = 0
    transitions: int = 0
    depth: int = 0
    terminals: int = 0
    elapsed: float = 0.0
    bounded: bool = False
    violation: Violation[S] | None = None
    coverage: Coverage | None = None
    actors: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.violation is None

    @property
    def states_per_second(self) -> float:
        return self.states / self.elapsed if self.elapsed > 0 else float("inf")


def explore(
    model: Model[S],
    *,
    max_depth: int | None = None,
    max_states: int = 50_000_000,
    progress: Callable[[Result[S], int], None] | None = None,
    progress_interval: float = 1.0,
    symmetry: bool = False,
) -> Result[S]:
    """Breadth-first search of every state of ``model`` reachable from its initial states.

    Stops at the first violation (a shortest one: invariant violations found while expanding
    level ``d`` lie at depth ``d + 1``, so the rest of level ``d`` is still scanned for a bad
    terminal state at depth ``d`` first). ``max_depth`` bounds the search (states at that depth are
    not expanded and ``bounded`` is set); ``max_states`` caps memory. ``progress(result,
    frontier_size)`` is called about every ``progress_interval`` seconds.

    ``symmetry``: when the model has a ``canonical(state)`` method (the representative of the
    state's class under the model's symmetries, e.g. renaming interchangeable actors), only one
    state per class is stored and expanded. Sound when every property is invariant under those
    symmetries (the model's duty; a test compares reduced and unreduced runs). A counterexample
    is then a trace of representatives: each step leads to a state *equivalent* to the next one
    (``Result.notes`` says so).
    """
    # Why the cyclic GC is off during a search: ``parents`` and the models' memo tables soon
    # hold millions of small acyclic tuples, and the collector traverses every container that
    # survives a collection: full collections cost a third of the negotiator model's run, and
    # the young ones, which still see every new memo entry twice, a tenth of the mediation
    # model's cold run. Refcounting frees everything acyclic as usual; the few cycles a core
    # step makes (an exception's traceback) wait for the collector, re-enabled on return (a
    # test counts them: a few hundred objects per model run).
    enabled = gc.isenabled()
    gc.disable()
    try:
        canonical = getattr(model, "canonical", None) if symmetry else None
        return _explore(model, max_depth, max_states, progress, progress_interval, canonical)
    finally:
        if enabled:
            gc.enable()


def _explore(
    model: Model[S],
    max_depth: int | None,
    max_states: int,
    progress: Callable[[Result[S], int], None] | None,
    progress_interval: float,
    canonical: Callable[[S], S] | None = None,
) -> Result[S]:
    parents: dict[S, tuple[S | None, Step | None]] = {}
    result: Result[S] = Result(model=model.name, actors=tuple(model.actors))
    if canonical is not None:
        result.notes.append(
            "symmetry reduction: one state per class of interchangeable actors (a trace steps "
            "through representatives: each step reaches a state equivalent to the next)"
        )
    started = time.perf_counter()
    invariant = model.invariant
    successors = model.successors
    defer: Callable[[S, dict[Any, None] | None], Sequence[tuple[Step, S]] | None] | None = None
    run_deferred: Callable[[dict[Any, None]], None] | None = None
    if getattr(model, "prefetching", False):
        run_deferred = getattr(model, "run_deferred", None)
        if run_deferred is not None:
            defer = getattr(model, "successors_or_defer", None)

    def finish(violation: Violation[S] | None = None) -> Result[S]:
        result.elapsed = time.perf_counter() - started
        result.states = len(parents)
        result.violation = violation
        result.coverage = model.coverage()
        return result

    def trace_to(state: S) -> tuple[tuple[Step, ...], tuple[S, ...]]:
        steps: list[Step] = []
        states: list[S] = [state]
        parent, step = parents[state]
        while parent is not None and step is not None:
            steps.append(step)
            states.append(parent)
            parent, step = parents[parent]
        steps.reverse()
        states.reverse()
        return tuple(steps), tuple(states)

    frontier: list[S] = []
    for state in model.initial_states():
        if canonical is not None:
            state = canonical(state)
        if state in parents:
            continue
        parents[state] = (None, None)
        message = invariant(state)
        if message is not None:
            return finish(Violation("invariant", message, *trace_to(state)))
        frontier.append(state)

    depth = 0
    transitions = 0
    terminals = 0
    wanted: dict[Any, None] = {}
    mark = _MARK[0]
    next_report = started + progress_interval
    expanded = 0
    while frontier:
        if max_depth is not None and depth >= max_depth:
            result.bounded = True
            break
        following: list[S] = []
        append = following.append
        pending: Violation[S] | None = None  # an invariant violation one level deeper
        if defer is None:
            items: Iterable[Any] = frontier
        else:
            # Per chunk: its states, a mark, the states it deferred, a mark (see _MARK).
            chunks = [frontier[i : i + DEFER_CHUNK] for i in range(0, len(frontier), DEFER_CHUNK)]
            later: list[list[S]] = [[] for _ in chunks]
            items = chain.from_iterable(
                part
                for chunk, waiting in zip(chunks, later, strict=True)
                for part in (chunk, _MARK, waiting, _MARK)
            )
            asking: dict[Any, None] | None = wanted
            chunk_index = 0
        for state in items:
            if defer is None:
                nexts = successors(state)
            elif state is mark:
                if asking is not None:  # the chunk is done: its deferred states are next
                    run_deferred(wanted)  # type: ignore[misc]  # set with defer
                    asking = None
                else:  # the next chunk starts
                    asking = wanted
                    chunk_index += 1
                continue
            else:
                deferred = defer(state, asking)
                if deferred is None:
                    later[chunk_index].append(state)
                    continue
                nexts = deferred
            expanded += 1
            if progress is not None and not expanded & 0x3FF:
                now = time.perf_counter()
                if now >= next_report:
                    next_report = now + progress_interval
                    result.states, result.transitions, result.depth = (
                        len(parents),
                        transitions,
                        depth,
                    )
                    result.elapsed = now - started
                    progress(result, len(frontier) + len(following))
            if not nexts or nexts[0][0].fault:  # final: nothing but a fault could move it on
                terminals += 1
                message = model.terminal(state)
                if message is not None:
                    result.transitions, result.depth, result.terminals = (
                        transitions,
                        depth,
                        terminals,
                    )
                    return finish(Violation("terminal", message, *trace_to(state)))
                if not nexts:
                    continue
            if pending is not None:
                continue  # only looking for a shallower deadlock now
            transitions += len(nexts)
            for step, target in nexts:
                if canonical is not None:
                    target = canonical(target)
                if target in parents:
                    continue
                parents[target] = (state, step)
                message = invariant(target)
                if message is not None:
                    pending = Violation("invariant", message, *trace_to(target))
                    break
                append(target)
            if len(parents) >= max_states:
                result.bounded = True
                result.notes.append(f"stopped at the state budget ({max_states:,} states)")
                following = []
                break
        if pending is not None:
            result.transitions, result.depth, result.terminals = transitions, depth + 1, terminals
            return finish(pending)
        if following:
            depth += 1
        frontier = following
    result.transitions, result.depth, result.terminals = transitions, depth, terminals
    return finish()


# --- reporting ---------------------------------------------------------------------------


def text_trace(violation: Violation[S], describe: Callable[[S], str] | None = None) -> str:
    """The counterexample as numbered lines, then the violated property and the final state."""
    lines = [f"counterexample ({violation.kind}, {len(violation.steps)} steps):"]
    for number, step in enumerate(violation.steps, 1):
        lines.append(f"  {number:3d}. {step}")
    lines.append(f"  violated: {violation.message}")
    if describe is not None:
        lines.append(f"  final state: {describe(violation.state)}")
    return "\n".join(lines)


def _mermaid_id(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)


def _mermaid_text(text: str) -> str:
    return text.replace(";", ",").replace("#", "").replace("\n", " ")


def mermaid_trace(violation: Violation[S], actors: Sequence[str]) -> str:
    """The counterexample as a Mermaid ``sequenceDiagram`` (paste into any Mermaid renderer)."""
    lines = ["sequenceDiagram"]
    named = list(actors)
    for step in violation.steps:
        for who in (step.actor, step.source):
            if who is not None and who not in named:
                named.append(who)
    for who in named:
        lines.append(f"    participant {_mermaid_id(who)} as {who}")
    for step in violation.steps:
        actor, text = _mermaid_id(step.actor), _mermaid_text(step.text)
        if step.kind == "deliver" and step.source is not None:
            lines.append(f"    {_mermaid_id(step.source)}->>{actor}: {text}")
        elif step.kind == "drop" and step.source is not None:
            lines.append(f"    {actor}-x{_mermaid_id(step.source)}: drop {text}")
        else:
            lines.append(f"    Note over {actor}: {step.kind} {text}")
    lines.append(
        f"    Note over {_mermaid_id(named[0])}: VIOLATED {_mermaid_text(violation.message)}"
    )
    return "\n".join(lines)


def coverage_percent(result: Result[Any]) -> float | None:
    """Declared machine transitions taken, in percent (None: the model declares none)."""
    coverage = result.coverage
    if coverage is None or not coverage.declared:
        return None
    return 100.0 * coverage.covered / coverage.declared


def format_report(
    result: Result[S],
    describe: Callable[[S], str] | None = None,
    where: Callable[[str, str], str | None] | None = None,
) -> str:
    """Human summary: counts, speed, coverage, and the counterexample if any. ``where(machine,
    transition)`` says which configuration takes a transition this run did not take, or why no
    model can (see :mod:`models.coverage`); it is printed under that transition."""
    lines = [
        f"model {result.model}: {'OK' if result.ok else 'VIOLATION'}",
        f"  states       {result.states:,}",
        f"  transitions  {result.transitions:,}",
        f"  depth        {result.depth}" + (" (bounded)" if result.bounded else ""),
        f"  final states {result.terminals:,}",
        f"  time         {result.elapsed:.2f} s ({result.states_per_second:,.0f} states/s)",
    ]
    coverage = result.coverage
    if coverage is not None and coverage.declared:
        percent = 100.0 * coverage.covered / coverage.declared
        lines.append(
            f"  coverage     {coverage.covered}/{coverage.declared} declared machine "
            f"transitions taken ({percent:.0f}%)"
        )
        for machine, transition in coverage.missing():
            lines.append(f"    never taken: {machine}: {transition}")
            hint = where(machine, str(transition)) if where is not None else None
            if hint is not None:
                lines.append(f"      ({hint})")
    lines.extend(f"  note: {note}" for note in result.notes)
    if result.violation is not None:
        lines.append(text_trace(result.violation, describe))
        lines.append("")
        lines.append("```mermaid")
        lines.append(mermaid_trace(result.violation, result.actors))
        lines.append("```")
    return "\n".join(lines)


def coverage_summary(coverage: Coverage) -> Mapping[str, tuple[int, int]]:
    """Per machine: (taken, declared)."""
    return {
        name: (len(coverage.taken[name]), len(table.transitions))
        for name, table in coverage.tables.items()
    }
