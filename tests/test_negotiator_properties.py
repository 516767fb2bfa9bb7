"""Property: over random protocol sets, decisions, chunkings and start orders, two negotiators
back to back always reach the same outcome, and it is the one the spec's rules name."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from negotiator_helpers import check_agreement, expected_round

from p2psc.core.negotiator import (
    KEEPALIVE,
    MAX_PROTOCOL_ID,
    Negotiated,
    Negotiator,
    ProtocolSpec,
    ProtocolTable,
    Simultaneous,
)
from p2psc.errors import NegotiationError


@st.composite
def protocol_tables(draw: st.DrawFn) -> dict[int, ProtocolSpec]:
    ids = draw(st.lists(st.integers(0, MAX_PROTOCOL_ID), min_size=1, max_size=5, unique=True))
    return {
        pid: ProtocolSpec(
            pid,
            f"p{pid}",
            priority=draw(st.integers(0, 2)),  # small range: many priority ties
            simultaneous=draw(st.sampled_from(Simultaneous)),
        )
        for pid in ids
    }


class Side:
    """One negotiator whose wishes for the current round are set by the test."""

    def __init__(self, table: dict[int, ProtocolSpec]) -> None:
        self.propose: int | None = None
        self.accept = True
        specs = [
            ProtocolSpec(
                p.id,
                p.name,
                priority=p.priority,
                simultaneous=p.simultaneous,
                wants_to_initiate=lambda pid=p.id: self.propose == pid,
                should_accept=lambda: self.accept,
            )
            for p in table.values()
        ]
        self.core = Negotiator(specs, keepalive_interval=1.0)
        self.inbox = b""
        self.started = False


@settings(max_examples=300, deadline=None)
@given(table=protocol_tables(), data=st.data())
def test_random_sets_rounds_and_interleavings_agree(
    table: dict[int, ProtocolSpec], data: st.DataObject
) -> None:
    a, b = Side(table), Side(table)
    choice = st.one_of(st.none(), st.sampled_from(sorted(table)))
    for _round in range(data.draw(st.integers(1, 4))):
        for me in (a, b):
            me.propose, me.accept, me.started = data.draw(choice), data.draw(st.booleans()), False
            if isinstance(me.core.outcome, Negotiated):
                # The protocol ran and ended on both sides before either sends again.
                assert me.core.protocol_done() == b""
        for _step in range(40):  # a round needs at most 2 starts + 4 deliveries
            moves = [m for m in (a, b) if not m.started] + [m for m in (a, b) if m.inbox]
            if not moves:
                break
            me = data.draw(st.sampled_from(moves))
            other = b if me is a else a
            if not me.started and (not me.inbox or data.draw(st.booleans())):
                me.started = True
                other.inbox += me.core.start_round()
            else:
                cut = data.draw(st.integers(1, len(me.inbox)))  # any chunking
                chunk, me.inbox = me.inbox[:cut], me.inbox[cut:]
                other.inbox += me.core.receive_data(chunk)
        else:
            raise AssertionError("round did not settle")
        assert a.core.outcome is not None and b.core.outcome is not None
        check_agreement(
            a.core.outcome,
            b.core.outcome,
            expected_round(table, a.propose, b.propose, a.accept, b.accept),
        )


@given(table=protocol_tables(), byte=st.integers(0, 255), propose=st.booleans())
def test_a_byte_in_a_round_is_decided_or_refused(
    table: dict[int, ProtocolSpec], byte: int, propose: bool
) -> None:
    """Any byte either moves the round on or raises NegotiationError; never anything else."""
    n = Negotiator(ProtocolTable(table.values()))
    n.start_round(propose=min(table) if propose else None)
    legal = byte == KEEPALIVE or byte in table
    try:
        out = n.receive_data(bytes([byte]))
    except NegotiationError:
        assert not legal and n.state == "Failed"
    else:
        assert legal and len(out) <= 1 and n.state != "Failed"
