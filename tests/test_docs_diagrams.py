"""The generated state diagrams show every declared transition, and nothing that is not declared.

The committed pages in ``spec/diagrams/`` are parsed back from their Mermaid text (independently
of the generator's own structures) and compared with the transitions each registered machine
class declares: every (source, target, event, guard) must be an arrow label or a line of a note,
``[else]`` exactly on fall-through branches. Any machine added to
:data:`p2psc.machines.MACHINES` is checked with no change here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from statemachine import State, StateMachine

from p2psc.machines import machine_classes
from p2psc.machines.compiler import compile_machine
from p2psc.statediagram import FOLD_MIN_SOURCES, diagram, mermaid, page

SPEC = Path(__file__).resolve().parents[1] / "spec"
MACHINES = machine_classes()

Drawn = tuple[str, str, str, str]
"""(source, target, event, guards) where guards is ``"a & !b"``, ``""`` or ``"else"``."""


def _declared(machine_class: type) -> set[Drawn]:
    table = compile_machine(machine_class)
    out = set()
    for t in table.transitions:
        earlier = table.candidates(t.source, t.event)
        fall_through = any(e.guards for e in earlier[: earlier.index(t)])
        guards = " & ".join(map(str, t.guards)) or ("else" if fall_through else "")
        out.add((t.source, t.target, t.event, guards))
    return out


_LINE = re.compile(r"^(?P<event>\w+)(?: \[(?P<guards>[^\]]+)\])?$")


def _parse_label(text: str) -> list[tuple[str, str]]:
    """``a<br/>b [g<br/>& h]`` -> [("a", ""), ("b", "g & h")]: a line starting with ``& `` or
    ``[`` goes on with the line before it."""
    lines: list[str] = []
    for part in text.split("<br/>"):
        if part.startswith(("& ", "[")) and lines:
            lines[-1] += f" {part}"
        else:
            lines.append(part)
    out = []
    for line in lines:
        match = _LINE.match(line)
        assert match, f"unreadable label line {line!r}"
        out.append((match["event"], match["guards"] or ""))
    return out


def _parse(source: str) -> tuple[dict[str, str], set[Drawn]]:
    """States (id -> title) and every transition a reader can see in a Mermaid diagram."""
    titles: dict[str, str] = {}
    drawn: set[Drawn] = set()
    stays: dict[str, list[str]] = {}
    lines = iter(source.splitlines())
    for raw in lines:
        line = raw.strip()
        if m := re.match(r'^state "(?P<title>[^"]+)" as s_(?P<id>\w+)$', line):
            titles[m["id"]] = m["title"]
        elif m := re.match(r"^s_(?P<id>\w+) : (?P<text>.+)$", line):
            # A self-loop written inside its state: "↻ label", continued by "& ..." lines.
            state_lines = stays.setdefault(m["id"], [])
            if m["text"].startswith("↻ "):
                state_lines.append(m["text"].removeprefix("↻ "))
            else:
                assert m["text"].startswith(("& ", "[")) and state_lines, line
                state_lines[-1] += "<br/>" + m["text"]
        elif m := re.match(r"^s_(?P<src>\w+) --> s_(?P<dst>\w+) : (?P<label>.+)$", line):
            for event, guards in _parse_label(m["label"]):
                drawn.add((m["src"], m["dst"], event, guards))
        elif m := re.match(r"^note (?:left|right) of s_(?P<target>\w+)$", line):
            body = []
            for note_line in lines:
                if note_line.strip() == "end note":
                    break
                body.append(note_line.strip())
            drawn |= _parse_note(m["target"], body, titles)
    for state, texts in stays.items():
        for text in texts:
            drawn |= {(state, state, e, g) for e, g in _parse_label(text)}
    return titles, drawn


def _parse_note(target: str, body: list[str], titles: dict[str, str]) -> set[Drawn]:
    by_title = {title: state for state, title in titles.items()}
    assert body[0] in (f"Also into {titles[target]}", f"Into {titles[target]}")
    drawn = set()
    assert len(body) % 2 == 1, body  # the title, then two lines per group
    for labels, where in zip(body[1::2], body[2::2], strict=True):
        assert labels.startswith("• ") and where.startswith("from "), (labels, where)
        labels = labels.removeprefix("• ")
        if where == "from every state" or where.startswith("from every state but "):
            but = where.removeprefix("from every state").removeprefix(" but ")
            excluded = {by_title[name] for name in but.split(", ") if name}
            sources = set(titles) - excluded - {target}
        else:
            sources = {by_title[name] for name in where.removeprefix("from ").split(", ")}
        for text in labels.split(", "):
            drawn |= {(s, target, e, g) for s in sources for e, g in _parse_label(text)}
    return drawn


def _committed_mermaid(name: str) -> str:
    text = (SPEC / "diagrams" / f"{name}.md").read_text()
    match = re.search(r"```mermaid\n(.*?)\n```", text, re.DOTALL)
    assert match, f"no Mermaid block in spec/diagrams/{name}.md"
    return match.group(1)


def _finals(machine_class: type) -> frozenset[str]:
    return compile_machine(machine_class).finals


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_every_declared_transition_is_drawn_and_nothing_else(name: str) -> None:
    machine_class = MACHINES[name]
    titles, drawn = _parse(_committed_mermaid(name))
    table = compile_machine(machine_class)
    assert set(titles) == set(table.states)
    # "from every state" in a note means every state that is not final.
    drawn = {d for d in drawn if d[0] not in table.finals}
    declared = _declared(machine_class)
    assert declared - drawn == set(), "declared but not drawn"
    assert drawn - declared == set(), "drawn but not declared"


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_one_arrow_per_pair_of_states(name: str) -> None:
    pairs = re.findall(r"^\s*s_(\w+) --> s_(\w+) :", _committed_mermaid(name), re.MULTILINE)
    assert len(pairs) == len(set(pairs))


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_each_page_says_what_the_machine_is_for_and_which_spec_section_it_implements(
    name: str,
) -> None:
    text = (SPEC / "diagrams" / f"{name}.md").read_text()
    intro = text.split("```mermaid", 1)[0]
    link = re.search(r"It implements \[[^\]]+\]\(\.\./(?P<doc>[\w-]+\.md)(#[\w-]+)?\)\.", intro)
    assert link, f"spec/diagrams/{name}.md does not name the spec section it implements"
    assert (SPEC / link["doc"]).is_file()
    assert "Reading the diagram" in text  # the legend


class _Toy(StateMachine):
    """A machine made to exercise every rule: folds with exceptions, self-loops, else."""

    a = State(initial=True)
    b = State()
    c = State()
    d = State()
    failed = State(final=True)
    done = State(final=True)

    go = a.to(b, cond="ready") | a.to(c)
    tick = b.to.itself() | c.to.itself()  # type: ignore[no-untyped-call]
    poke = b.to.itself() | b.to(d, cond="x and not y")  # type: ignore[no-untyped-call]
    finish = d.to(done)
    lost = a.to(failed) | b.to(failed) | c.to(failed) | d.to(failed)
    timeout = b.to(failed) | c.to(failed) | d.to(failed)
    reset = a.to(failed) | c.to(failed)


def test_rules_on_a_toy_machine() -> None:
    d = diagram(_Toy)
    source = mermaid(d)
    _, drawn = _parse(source)
    assert {x for x in drawn if x[0] not in d.finals} == _declared(_Toy)
    # Self-loops are written inside their state; the guarded poke is an arrow.
    assert "s_b : ↻ tick\n    s_b : ↻ poke" in source and "s_c : ↻ tick" in source
    assert "s_a --> s_c : go [else]" in source
    assert "s_b --> s_d : poke [x & !y]" in source
    # Every way into the failure state is in its note, grouped by the states it applies to.
    assert "s_failed :" not in source and "--> s_failed" not in source
    assert "Into Failed" in source
    assert "• lost\n        from every state\n" in source
    assert "• timeout\n        from every state but A\n" in source
    assert "• reset\n        from A, C\n" in source
    assert d.kinds == {"failed": "failure", "done": "success"}


class _Ending(StateMachine):
    """Into a final state that is not a failure only shared unguarded events are folded."""

    a = State(initial=True)
    b = State()
    c = State()
    closed = State(final=True)

    step = a.to(b) | b.to(c)
    finish = c.to(closed)
    eof = a.to(closed) | b.to(closed) | c.to(closed)
    give_up = a.to(closed, cond="tired") | b.to(closed, cond="tired") | c.to(closed, cond="tired")


def test_only_unguarded_events_from_many_states_fold_into_other_final_states() -> None:
    d = diagram(_Ending)
    source = mermaid(d)
    assert FOLD_MIN_SOURCES == 3
    assert "Also into Closed\n        • eof\n        from every state" in source
    assert "s_c --> s_closed : finish<br/>give_up [tired]" in source
    assert d.kinds == {"closed": "end"}
    _, drawn = _parse(source)
    assert {x for x in drawn if x[0] not in d.finals} == _declared(_Ending)


def test_a_broken_generator_would_be_caught() -> None:
    """The parser sees a lost label, an extra label and a wrong exception."""
    source = mermaid(diagram(_Toy))
    declared = _declared(_Toy)
    for broken in (
        source.replace("s_b : ↻ poke\n", ""),
        source.replace("go [else]", "go"),
        source.replace(
            "• timeout\n        from every state but A", "• timeout\n        from every state"
        ),
    ):
        _, drawn = _parse(broken)
        assert {x for x in drawn if x[0] not in _finals(_Toy)} != declared


def test_a_page_for_an_unreferenced_machine_says_so(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# spec\n")
    assert "No document of the specification names this machine yet." in page(_Toy, tmp_path)
    (tmp_path / "x.md").write_text("# X\n\n## 2. Toys\n\nThe `_Toy` machine.\n")
    assert "It implements [x.md, 2. Toys](../x.md#2-toys)." in page(_Toy, tmp_path)
