"""Shared test helpers: wire two sans-IO negotiators back to back through an in-memory pipe.

The expected outcome of a round is computed here from the rules of ``spec/negotiator.md``
(not from the core), so the tests compare the core against an independent statement of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2psc.core.negotiator import (
    Negotiated,
    Negotiator,
    Outcome,
    ProtocolSpec,
    Simultaneous,
    Sleep,
)


def exchange(a: Negotiator, b: Negotiator, max_hops: int = 8) -> tuple[Outcome, Outcome]:
    """Both sides start a round at once; deliver bytes until both have an outcome."""
    to_b = a.start_round()
    to_a = b.start_round()
    for _ in range(max_hops):
        if not to_a and not to_b:
            break
        out_b = b.receive_data(to_b) if to_b else b""
        out_a = a.receive_data(to_a) if to_a else b""
        to_a, to_b = out_b, out_a
    else:
        raise AssertionError("bytes still in flight after max_hops")
    assert a.outcome is not None and b.outcome is not None, (a.state, b.state)
    return a.outcome, b.outcome


def summary(outcome: Outcome | None) -> tuple[str, int | None, bool | None]:
    """A comparable form of an outcome: (kind, protocol id, initiated_by_us)."""
    if isinstance(outcome, Negotiated):
        return ("negotiated", outcome.protocol.id, outcome.initiated_by_us)
    if isinstance(outcome, Sleep):
        return ("sleep", None, None)
    return ("none" if outcome is None else "error", None, None)


@dataclass(frozen=True)
class Expected:
    """What the spec says both sides end with: ``protocol`` None means both sleep."""

    protocol: int | None
    initiated_by_a: bool
    initiated_by_b: bool


def expected_round(
    table: dict[int, ProtocolSpec],
    a_proposes: int | None,
    b_proposes: int | None,
    a_accepts: bool,
    b_accepts: bool,
) -> Expected:
    """The rules of the spec, written out independently of the core.

    ``a_accepts``/``b_accepts``: what that side's ``should_accept`` answers (only asked if
    that side has to answer)."""
    sleep = Expected(None, False, False)
    if a_proposes is None and b_proposes is None:
        return sleep
    if a_proposes is None or b_proposes is None:
        initiator_is_a = a_proposes is not None
        proposal = a_proposes if initiator_is_a else b_proposes
        answer = b_accepts if initiator_is_a else a_accepts
        return Expected(proposal, initiator_is_a, not initiator_is_a) if answer else sleep
    if a_proposes == b_proposes:
        runs = table[a_proposes].simultaneous is Simultaneous.RUN
        return Expected(a_proposes, True, True) if runs else sleep
    pa, pb = table[a_proposes], table[b_proposes]
    # Higher priority wins; on equal priority the lower id wins.
    a_wins = pa.priority > pb.priority if pa.priority != pb.priority else pa.id < pb.id
    if a_wins:
        return Expected(a_proposes, True, False) if b_accepts else sleep
    return Expected(b_proposes, False, True) if a_accepts else sleep


def check_agreement(a: Outcome, b: Outcome, expected: Expected) -> None:
    """Both sides reached the outcome the spec names."""
    if expected.protocol is None:
        assert isinstance(a, Sleep) and isinstance(b, Sleep), (a, b)
        return
    assert isinstance(a, Negotiated) and isinstance(b, Negotiated), (a, b)
    assert a.protocol.id == b.protocol.id == expected.protocol
    assert (a.initiated_by_us, b.initiated_by_us) == (
        expected.initiated_by_a,
        expected.initiated_by_b,
    )
