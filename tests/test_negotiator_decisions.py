"""The local decisions of a Negotiator are asked exactly when spec/negotiator.md says.

``should_accept`` is asked once per offer (section 4.2, also when our own proposal lost the
tie-break, 4.4) and ``wants_to_initiate`` once per protocol per round, in rank order, stopping at
the first yes (section 3). Callables with state ("accept the first offer, refuse the second")
are legitimate: an application may accept one transfer at a time. The core must not ask twice
and must not ask when no offer is made.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from hypothesis import given
from hypothesis import strategies as st
from negotiator_helpers import exchange

from p2psc.core.negotiator import (
    ACCEPT,
    KEEPALIVE,
    REJECT,
    Negotiated,
    Negotiator,
    ProtocolSpec,
    Sleep,
)


class Script:
    """A stateful decision: answers from a list, one per call, and counts the calls."""

    def __init__(self, answers: list[bool]) -> None:
        self._answers: Iterator[bool] = iter(answers)
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        return next(self._answers, False)


def test_accept_the_first_offer_refuse_the_second() -> None:
    """The case from the issue: a callable that accepts once, then refuses."""
    answers = Script([True, False])
    offerer = Negotiator([ProtocolSpec(1, "transfer", wants_to_initiate=True)])
    answerer = Negotiator([ProtocolSpec(1, "transfer", should_accept=answers)])
    first = exchange(offerer, answerer)
    assert [type(o) for o in first] == [Negotiated, Negotiated]
    offerer.protocol_done()
    answerer.protocol_done()
    second = exchange(offerer, answerer)
    assert [type(o) for o in second] == [Sleep, Sleep]
    assert answers.calls == 2


@given(
    answers=st.lists(st.booleans(), min_size=1, max_size=8),
    lost_tie_break=st.booleans(),
)
def test_should_accept_is_asked_once_per_offer(answers: list[bool], lost_tie_break: bool) -> None:
    """Each round the offerer initiates ``big``; the answerer either idles (4.2) or initiates a
    lower-priority protocol that loses the tie-break (4.4). Either way it answers ``big`` by
    exactly one call of its ``should_accept``, and the outcome follows that one answer."""
    script = Script(answers)
    offerer = Negotiator(
        [ProtocolSpec(1, "small", priority=1), ProtocolSpec(2, "big", priority=5)],
        keepalive_interval=1.5,
    )
    answerer = Negotiator(
        [
            ProtocolSpec(1, "small", priority=1, wants_to_initiate=lost_tie_break),
            ProtocolSpec(2, "big", priority=5, should_accept=script),
        ],
        keepalive_interval=1.5,
    )
    for round_no, accepted in enumerate(answers, start=1):
        to_answerer = offerer.start_round(propose=2)
        to_offerer = answerer.start_round()
        assert to_offerer == bytes([1 if lost_tie_break else KEEPALIVE])
        reply = answerer.receive_data(to_answerer)
        assert reply == bytes([ACCEPT if accepted else REJECT])
        assert offerer.receive_data(to_offerer) == b""
        assert offerer.receive_data(reply) == b""
        assert script.calls == round_no
        if accepted:
            assert answerer.outcome == Negotiated(answerer.protocols[2], False)
            assert offerer.outcome == Negotiated(offerer.protocols[2], True)
        else:
            assert answerer.outcome == offerer.outcome == Sleep(1.5)
    assert script.calls == len(answers)


@given(answers=st.lists(st.booleans(), min_size=1, max_size=6))
def test_should_accept_is_never_asked_without_an_offer(answers: list[bool]) -> None:
    """Idle rounds, our own accepted initiates and same-id collisions ask nobody."""
    script = Script(answers)
    a = Negotiator([ProtocolSpec(1, "chat", should_accept=script, wants_to_initiate=True)])
    b = Negotiator([ProtocolSpec(1, "chat", should_accept=script, wants_to_initiate=True)])
    outcomes = exchange(a, b)  # same-id RUN collision: no answer is needed
    assert outcomes == (Negotiated(a.protocols[1], True), Negotiated(b.protocols[1], True))
    a.protocol_done()
    b.protocol_done()
    a.start_round(propose=None)
    b.start_round(propose=None)
    a.receive_data(bytes([KEEPALIVE]))
    b.receive_data(bytes([KEEPALIVE]))
    assert script.calls == 0


def _recorder(calls: list[int], pid: int, answer: bool) -> Callable[[], bool]:
    def wants() -> bool:
        calls.append(pid)
        return answer

    return wants


@given(
    wants=st.lists(st.booleans(), min_size=1, max_size=6),
    priorities=st.lists(st.integers(-3, 3), min_size=6, max_size=6),
)
def test_wants_to_initiate_is_asked_in_rank_order_once(
    wants: list[bool], priorities: list[int]
) -> None:
    """Section 3: ask in collision-winner order (higher priority, then lower id), each protocol
    at most once, stop at the first yes, and initiate that one (KEEPALIVE if none)."""
    calls: list[int] = []
    specs = [
        ProtocolSpec(
            pid, f"p{pid}", priority=priorities[pid], wants_to_initiate=_recorder(calls, pid, w)
        )
        for pid, w in enumerate(wants)
    ]
    ranked = sorted(specs, key=lambda s: (-s.priority, s.id))
    first_yes = next((s.id for s in ranked if wants[s.id]), None)
    asked = [s.id for s in ranked]
    if first_yes is not None:
        asked = asked[: asked.index(first_yes) + 1]
    sent = Negotiator(specs).start_round()
    assert sent == bytes([KEEPALIVE if first_yes is None else first_yes])
    assert calls == asked
