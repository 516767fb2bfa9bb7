"""Readable, complete Mermaid state diagrams of any python-statemachine class.

Why not the library's own renderer: it keeps one arrow per (source, target, event), so guarded
alternatives of one event to the same target vanish, and Mermaid then draws one self-loop per
state, so every other self-loop label is lost. Here every declared transition of the compiled
table (:func:`p2psc.machines.compiler.compile_machine`) is kept, and the picture is made
readable by rules that need nothing machine-specific:

- **One arrow per (source, target)**, its events stacked one per line, so no label is lost.
- **``[else]``** marks an unguarded transition that is tried after guarded ones of the same
  event and state (the fall-through branch of the declaration order).
- **Self-loops are written inside their state** (``↻ event``): Mermaid draws one loop per
  state and places its label badly.
- **Failure is a note, not arrows**: a final state whose name says failure (fail, error,
  abort) gets no arrows; the note beside it lists every way in, grouped by the states they
  apply to, computed as "from every state but ..." when that is shorter (h11 draws no arrow
  into ERROR either). Into other final states, an unguarded event from at least
  :data:`FOLD_MIN_SOURCES` states is folded into such a note too.
- **Outcome states are coloured**: failure red, other final states green (grey where folded
  aborts also end there), with a legend.
- **Top to bottom**, states in declaration order, so the main path runs straight down.

:func:`diagram` gives the structure (what the completeness test compares with the class);
:func:`mermaid` writes it out; :func:`page` wraps it in the Markdown page of ``spec/diagrams``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2psc.machines.compiler import MachineTable, Transition, compile_machine

__all__ = [
    "FOLD_MIN_SOURCES",
    "Diagram",
    "Edge",
    "Fold",
    "SpecReference",
    "diagram",
    "fold_lines",
    "index_page",
    "label",
    "mermaid",
    "page",
    "spec_reference",
    "wrap",
]

FOLD_MIN_SOURCES = 3
"""An unguarded event into a final state from this many states or more is folded into a note."""

_FAILURE = re.compile(r"fail|error|abort", re.IGNORECASE)


@dataclass(frozen=True)
class Edge:
    """One arrow: every transition from ``source`` to ``target``, one label line each."""

    source: str
    target: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Fold:
    """Labels written once in a note beside ``target`` instead of an arrow from each source."""

    target: str
    events: tuple[str, ...]
    sources: frozenset[str]
    exceptions: tuple[str, ...]
    """States that could take part (not final, not ``target``) but do not have these events."""


@dataclass(frozen=True)
class Diagram:
    """What is drawn for one machine; every declared transition is in exactly one edge or fold."""

    name: str
    states: tuple[str, ...]
    titles: dict[str, str]
    initial: str
    finals: frozenset[str]
    edges: tuple[Edge, ...]
    folds: tuple[Fold, ...]
    stays: dict[str, tuple[str, ...]]
    """State -> labels of its self-loops, written inside the state (``↻ event``)."""
    kinds: dict[str, str]
    """State -> ``"failure"``, ``"success"`` or ``"end"`` for final states."""


def label(transition: Transition, fall_through: bool) -> str:
    """``event``, ``event [guard & !other]`` or ``event [else]``."""
    if transition.guards:
        return f"{transition.event} [{' & '.join(map(str, transition.guards))}]"
    return f"{transition.event} [else]" if fall_through else transition.event


def _labels(table: MachineTable) -> list[tuple[Transition, str]]:
    """Every transition with its label; an unguarded one after a guarded one of the same
    (state, event) is the fall-through branch."""
    out = []
    for transition in table.transitions:
        earlier = table.candidates(transition.source, transition.event)
        position = earlier.index(transition)
        fall_through = not transition.guards and any(t.guards for t in earlier[:position])
        out.append((transition, label(transition, fall_through)))
    return out


def _is_failure(state: str, title: str) -> bool:
    return bool(_FAILURE.search(state) or _FAILURE.search(title))


def diagram(machine_class: type) -> Diagram:
    """Lay out ``machine_class``: edges with stacked labels, self-loops inside their state,
    notes for the ways into failure states and for aborts shared by many states."""
    table = compile_machine(machine_class)
    machine: Any = machine_class
    titles = {state.id: str(state.name) for state in machine.states}
    order = {state: i for i, state in enumerate(table.states)}
    labelled = _labels(table)
    failures = {s for s in table.finals if _is_failure(s, titles[s])}

    # Into a failure state nothing is drawn as an arrow (like h11's ERROR: the note beside it
    # lists every way in); into another final state, an unguarded event from many states is.
    into: dict[tuple[str, str], set[str]] = {}
    for transition, text in labelled:
        if transition.target in table.finals and transition.source != transition.target:
            into.setdefault((text, transition.target), set()).add(transition.source)
    folded = {
        key: frozenset(group)
        for key, group in into.items()
        if key[1] in failures or ("[" not in key[0] and len(group) >= FOLD_MIN_SOURCES)
    }
    by_group: dict[tuple[str, frozenset[str]], list[str]] = {}
    for (text, target), group in folded.items():
        by_group.setdefault((target, group), []).append(text)
    folds = []
    for (target, group), texts in by_group.items():
        eligible = [s for s in table.states if s not in table.finals and s != target]
        exceptions = tuple(s for s in eligible if s not in group)
        folds.append(Fold(target, tuple(texts), group, exceptions))
    folds.sort(key=lambda f: (order[f.target], -len(f.sources), min(order[s] for s in f.sources)))

    stays: dict[str, list[str]] = {}
    lines: dict[tuple[str, str], list[str]] = {}
    for transition, text in labelled:
        if transition.source == transition.target:
            stays.setdefault(transition.source, []).append(text)
        elif transition.source not in folded.get((text, transition.target), ()):
            lines.setdefault((transition.source, transition.target), []).append(text)
    edges = tuple(
        Edge(source, target, tuple(texts))
        for (source, target), texts in sorted(
            lines.items(), key=lambda item: (order[item[0][0]], order[item[0][1]])
        )
    )

    folded_into = {f.target for f in folds}
    kinds = {}
    for state in table.finals:
        if state in failures:
            kinds[state] = "failure"
        else:
            kinds[state] = "end" if state in folded_into else "success"
    return Diagram(
        name=table.name,
        states=table.states,
        titles=titles,
        initial=table.initial,
        finals=table.finals,
        edges=edges,
        folds=tuple(folds),
        stays={state: tuple(texts) for state, texts in stays.items()},
        kinds=kinds,
    )


_STYLES = {  # Mermaid class names (``end`` alone would be a keyword)
    "failure": "fill:#fde0dc,stroke:#c62828,stroke-width:3px,color:#000",
    "success": "fill:#dcf2dc,stroke:#2e7d32,stroke-width:3px,color:#000",
    "end": "fill:#eceff1,stroke:#455a64,stroke-width:3px,color:#000",
}


def _node(state: str) -> str:
    """Mermaid id of a state: prefixed, so no state name can be a Mermaid keyword."""
    return f"s_{state}"


def _list(names: Sequence[str], titles: dict[str, str]) -> str:
    return ", ".join(titles[name] for name in names)


def fold_lines(fold: Fold, titles: dict[str, str], states: Sequence[str]) -> tuple[str, str]:
    """Two lines of a note: ``• event, other`` and ``from every state but X, Y`` (or ``from``
    the sources, when that list is shorter)."""
    if not fold.exceptions:
        where = "from every state"
    elif len(fold.exceptions) < len(fold.sources):
        where = f"from every state but {_list(fold.exceptions, titles)}"
    else:
        where = f"from {_list([s for s in states if s in fold.sources], titles)}"
    return f"• {', '.join(fold.events)}", where


WRAP = 22
"""Label lines longer than this break before the guard (the next line starts with ``[``) or
before a `` & `` (the next line starts with ``& ``)."""


def wrap(line: str) -> list[str]:
    """Split a long label over lines, so one label cannot widen the whole diagram."""
    event, bracket, guards = line.partition(" [")
    pieces = [event]
    if bracket:
        first, *rest = guards.split(" & ")
        pieces += [f"[{first}", *(f"& {part}" for part in rest)]
    lines = [pieces[0]]
    for piece in pieces[1:]:
        if len(lines[-1]) + 1 + len(piece) > WRAP:
            lines.append(piece)
        else:
            lines[-1] += f" {piece}"
    return lines


def mermaid(d: Diagram) -> str:
    """The ``stateDiagram-v2`` source of a laid-out diagram."""
    out = ["stateDiagram-v2", "    direction TB"]
    for kind, style in _STYLES.items():
        out.append(f"    classDef outcome_{kind} {style}")
    for state in d.states:
        out.append(f'    state "{d.titles[state]}" as {_node(state)}')
    for state, texts in d.stays.items():
        for text in texts:
            first, *rest = wrap(text)
            out.append(f"    {_node(state)} : ↻ {first}")
            out.extend(f"    {_node(state)} : {part}" for part in rest)
    out.append(f"    [*] --> {_node(d.initial)}")
    for edge in d.edges:
        text = "<br/>".join(part for line in edge.lines for part in wrap(line))
        out.append(f"    {_node(edge.source)} --> {_node(edge.target)} : {text}")
    by_target: dict[str, list[Fold]] = {}
    for fold in d.folds:
        by_target.setdefault(fold.target, []).append(fold)
    drawn_into = {edge.target for edge in d.edges}
    for target, folds in by_target.items():
        out.append(f"    note left of {_node(target)}")
        also = "Also into" if target in drawn_into else "Into"
        out.append(f"        {also} {d.titles[target]}")
        for fold in folds:
            out.extend(f"        {line}" for line in fold_lines(fold, d.titles, d.states))
        out.append("    end note")
    for state in d.states:
        if state in d.kinds:
            out.append(f"    class {_node(state)} outcome_{d.kinds[state]}")
    return "\n".join(out)


@dataclass(frozen=True)
class SpecReference:
    """Where the specification describes a machine: a document and the section that names it."""

    document: str
    heading: str
    anchor: str


def _slug(heading: str) -> str:
    """The anchor MkDocs (Python-Markdown's toc) and GitHub give a heading."""
    text = re.sub(r"[^\w\s-]", "", heading).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _documents(spec_dir: Path) -> list[Path]:
    """The spec documents in the order spec/README.md lists them, then any others by name."""
    index = spec_dir / "README.md"
    listed = re.findall(r"\]\(([\w-]+\.md)\)", index.read_text()) if index.is_file() else []
    ordered = [spec_dir / name for name in dict.fromkeys(listed) if (spec_dir / name).is_file()]
    rest = sorted(p for p in spec_dir.glob("*.md") if p not in ordered and p.name != "README.md")
    return ordered + rest


def spec_reference(machine_class: type, spec_dir: Path) -> SpecReference | None:
    """The section that first names the class: in the first document (in the index's order)
    that names it, the heading above the first mention (None when no document names it)."""
    word = re.compile(rf"\b{re.escape(machine_class.__name__)}\b")
    document = next((p for p in _documents(spec_dir) if word.search(p.read_text())), None)
    if document is None:
        return None
    heading, anchor, in_fence = "", "", False
    for line in document.read_text().splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        elif not in_fence and line.startswith("#"):
            heading = line.lstrip("#").strip()
            # Under the title the whole document is meant: link it without an anchor.
            anchor = "" if line.startswith("# ") else _slug(heading)
        if word.search(line):
            break
    return SpecReference(document.name, heading, anchor)


_LEGEND = """\
**Reading the diagram.** Each arrow carries every event that takes that step, one per line:
`event [guard]` is taken when the guard holds (`!guard`: when it does not; `&`: both), and
`event [else]` when none of the guarded lines above it for that event and state was. Transitions
are tried in the order the class declares them. `↻ event` inside a state keeps the machine in
that state. The note beside a final state lists the ways into it that are not drawn as
arrows: every way into a failure, and the events that end many states at once (errors,
deadlines, closed connections), with the states they do not apply to. Final states have a
thick border:
<span style="background:#fde0dc;border:2px solid #c62828;padding:0 .3em">failure</span>,
<span style="background:#dcf2dc;border:2px solid #2e7d32;padding:0 .3em">success</span>,
<span style="background:#eceff1;border:2px solid #455a64;padding:0 .3em">end</span>
(reached both ways)."""


def _purpose(machine_class: type) -> str:
    doc = (machine_class.__doc__ or "").strip()
    first = doc.split("\n\n", 1)[0]
    return " ".join(first.split()) if first else f"The {machine_class.__name__} machine."


def page(machine_class: type, spec_dir: Path) -> str:
    """The Markdown page of ``spec/diagrams/<Name>.md``: two sentences, the diagram, a legend."""
    d = diagram(machine_class)
    ref = spec_reference(machine_class, spec_dir)
    if ref is None:
        implements = "No document of the specification names this machine yet."
    else:
        target = f"../{ref.document}" + (f"#{ref.anchor}" if ref.anchor else "")
        where = ref.heading if not ref.anchor else f"{ref.document}, {ref.heading}"
        implements = f"It implements [{where}]({target})."
    purpose = _purpose(machine_class)
    if not purpose.endswith("."):
        purpose += "."
    return "\n".join(
        [
            f"# {machine_class.__name__}",
            "",
            f"{purpose} {implements}",
            "",
            "```mermaid",
            mermaid(d),
            "```",
            "",
            _LEGEND,
            "",
            f"Generated by `p2psc diagrams` from `{machine_class.__module__}."
            f"{machine_class.__name__}`; do not edit by hand.",
            "",
        ]
    )


def index_page(machine_classes: dict[str, type]) -> str:
    """``spec/diagrams/README.md``: one line per machine, with what it is for."""
    lines = [
        "# State diagrams",
        "",
        "One page per machine class of `p2psc.machines.MACHINES`, generated by `p2psc diagrams`",
        "from the class itself (a test fails when a page is stale, or when a declared transition",
        "is missing from its diagram). Do not edit these pages by hand.",
        "",
    ]
    for name, machine_class in machine_classes.items():
        lines.append(f"- [{name}]({name}.md): {_purpose(machine_class)}")
    lines.append("")
    return "\n".join(lines)
