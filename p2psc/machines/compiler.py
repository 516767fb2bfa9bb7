"""Compile a python-statemachine class into an immutable transition table.

Why: the python-statemachine classes in :mod:`p2psc.machines` are the single source of truth
for control flow (they also render the diagrams in ``spec/diagrams/``), but an instance costs
about 17 KB and ~100 us per event. A mediator with 100k waiting peers, or an explorer visiting
millions of states, cannot afford that. So each class is compiled once into a
:class:`MachineTable`; cores keep only a state *name* (a ``str``) per session and step it with
:meth:`MachineTable.step`, asking the core for guard values by name.

Guards are the names given as ``cond=`` / ``unless=`` in the class. A ``cond`` may also be a
conjunction such as ``"a and not b"``; anything richer (``or``, parentheses) is rejected at
compile time because the core could not evaluate it by name. Transitions are tried in
declaration order, exactly as python-statemachine does, and the first whose guards all hold is
taken. :func:`reference_path` runs the class itself with the same oracle, for differential
tests.
"""

from __future__ import annotations

import functools
import re
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from p2psc.errors import InvalidTransition

__all__ = [
    "Guard",
    "GuardOracle",
    "MachineTable",
    "Transition",
    "compile_machine",
    "reference_path",
]

GuardOracle = Callable[[str], bool]
"""Answers a guard by name: ``oracle("peer_wants_us") -> bool``."""

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class Guard:
    """One literal of a transition's condition: ``name`` must evaluate to ``expected``."""

    name: str
    expected: bool

    def __str__(self) -> str:
        return self.name if self.expected else f"!{self.name}"


@dataclass(frozen=True, slots=True)
class Transition:
    """One declared transition: on ``event`` in ``source``, if all ``guards`` hold, go to
    ``target``. ``index`` is its position in declaration order (stable ids for coverage)."""

    index: int
    source: str
    event: str
    target: str
    guards: tuple[Guard, ...]

    def enabled(self, oracle: GuardOracle) -> bool:
        # A plain loop: cores call this on every guarded event; all() over a generator
        # expression costs a generator frame per call.
        for guard in self.guards:  # noqa: SIM110 (all() over a generator is slower here)
            if oracle(guard.name) != guard.expected:
                return False
        return True

    def __str__(self) -> str:
        cond = f" [{' & '.join(map(str, self.guards))}]" if self.guards else ""
        return f"{self.source} --{self.event}{cond}--> {self.target}"


@dataclass(frozen=True)
class MachineTable:
    """The compiled, immutable form of one machine class."""

    name: str
    states: tuple[str, ...]
    initial: str
    finals: frozenset[str]
    events: tuple[str, ...]
    transitions: tuple[Transition, ...]
    guard_names: frozenset[str]
    _index: Mapping[tuple[str, str], tuple[Transition, ...]] = field(repr=False, compare=False)

    def candidates(self, state: str, event: str) -> tuple[Transition, ...]:
        """The transitions declared for ``event`` in ``state``, in declaration order."""
        return self._index.get((state, event), ())

    def allows(self, state: str, event: str) -> bool:
        """Whether ``event`` has any declared transition out of ``state`` (guards ignored)."""
        return (state, event) in self._index

    def step(self, state: str, event: str, oracle: GuardOracle | None = None) -> Transition:
        """Take ``event`` in ``state``: return the first enabled transition.

        Raises :class:`InvalidTransition` when no transition is declared or none is enabled;
        cores turn that into a clean close of the offending connection.
        """
        for transition in self._index.get((state, event), ()):
            if not transition.guards:
                return transition
            if oracle is None:
                raise ValueError(f"{self.name}: {transition} needs a guard oracle")
            if transition.enabled(oracle):
                return transition
        raise InvalidTransition(self.name, state, event)

    def is_final(self, state: str) -> bool:
        return state in self.finals


def _parse_condition(text: str, expected: bool) -> tuple[Guard, ...]:
    """Turn ``"a"``, ``"!a"``, ``"not a"`` or ``"a and not b"`` into guard literals."""
    literals = []
    for raw in text.split(" and "):
        part = raw.strip()
        positive = expected
        if part.startswith("!"):
            positive, part = not positive, part[1:].strip()
        elif part.startswith("not "):
            positive, part = not positive, part[4:].strip()
        if not _NAME.match(part):
            raise ValueError(f"unsupported guard expression {text!r}: use names joined by 'and'")
        literals.append(Guard(part, positive))
    if not expected and len(literals) > 1:
        raise ValueError(f"'unless' with a conjunction is ambiguous: {text!r}")
    return tuple(literals)


@functools.cache
def compile_machine(machine_class: type) -> MachineTable:
    """Compile ``machine_class`` (a python-statemachine ``StateMachine``) once; cached."""
    machine: Any = machine_class  # the library's class attributes are not statically typed
    states = tuple(state.id for state in machine.states)
    initial = next(state.id for state in machine.states if state.initial)
    finals = frozenset(state.id for state in machine.states if state.final)
    transitions: list[Transition] = []
    for state in machine.states:
        for declared in state.transitions:
            guards: list[Guard] = []
            for spec in declared.cond:
                guards.extend(_parse_condition(str(spec.attr_name), bool(spec.expected_value)))
            for event in declared.events:
                transitions.append(
                    Transition(
                        index=len(transitions),
                        source=declared.source.id,
                        event=str(event.id),
                        target=declared.target.id,
                        guards=tuple(guards),
                    )
                )
    index: dict[tuple[str, str], list[Transition]] = {}
    for transition in transitions:
        index.setdefault((transition.source, transition.event), []).append(transition)
    events = tuple(dict.fromkeys(t.event for t in transitions))
    return MachineTable(
        name=machine_class.__name__,
        states=states,
        initial=initial,
        finals=finals,
        events=events,
        transitions=tuple(transitions),
        guard_names=frozenset(g.name for t in transitions for g in t.guards),
        _index=types.MappingProxyType({k: tuple(v) for k, v in index.items()}),
    )


def reference_path(
    machine_class: type, events: Iterable[str], oracle: GuardOracle
) -> list[str | None]:
    """Run ``events`` through a real instance of ``machine_class``; return the state after each.

    ``None`` marks an event the class refused (where :meth:`MachineTable.step` raises); the
    state is then unchanged. Used by differential tests against the compiled table.
    """
    table = compile_machine(machine_class)
    model = types.SimpleNamespace(
        **{name: functools.partial(_ask, oracle, name) for name in table.guard_names}
    )
    instance: Any = machine_class(model=model)
    path: list[str | None] = []
    for event in events:
        try:
            instance.send(event)
        except Exception as refused:  # the library's TransitionNotAllowed and friends
            if type(refused).__name__ not in {"TransitionNotAllowed", "InvalidDefinition"}:
                raise
            path.append(None)
            continue
        path.append(str(instance.current_state_value))
    return path


def _ask(oracle: GuardOracle, name: str, *_args: object, **_kwargs: object) -> bool:
    return oracle(name)
