"""The sans-IO Negotiator: two cores back to back agree on every combination of the seed."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from negotiator_helpers import check_agreement, exchange, expected_round

from p2psc.core.negotiator import (
    ACCEPT,
    KEEPALIVE,
    REJECT,
    Negotiated,
    Negotiator,
    NegotiatorSnapshot,
    ProtocolSpec,
    ProtocolTable,
    Simultaneous,
    Sleep,
)
from p2psc.errors import NegotiationError, P2pscError

CHAT = ProtocolSpec(1, "chat", priority=5)
SYNC = ProtocolSpec(2, "sync", priority=9, simultaneous=Simultaneous.FAIL)
PING = ProtocolSpec(3, "ping", priority=5)
TABLE = {p.id: p for p in (CHAT, SYNC, PING)}


def side(*, propose: int | None = None, accept: bool = True, interval: float = 7.0) -> Negotiator:
    """A negotiator whose protocols all answer ``accept`` and which wants ``propose``."""
    specs = [
        ProtocolSpec(
            p.id,
            p.name,
            priority=p.priority,
            simultaneous=p.simultaneous,
            wants_to_initiate=p.id == propose,
            should_accept=accept,
        )
        for p in TABLE.values()
    ]
    return Negotiator(specs, keepalive_interval=interval)


COMBINATIONS = [
    pytest.param(None, None, True, True, id="both-keepalive"),
    pytest.param(1, None, True, True, id="a-initiates-accepted"),
    pytest.param(1, None, True, False, id="a-initiates-rejected"),
    pytest.param(None, 2, True, True, id="b-initiates-accepted"),
    pytest.param(None, 2, False, True, id="b-initiates-rejected"),
    pytest.param(1, 1, True, True, id="same-id-policy-run"),
    pytest.param(2, 2, True, True, id="same-id-policy-fail"),
    pytest.param(2, 1, True, True, id="different-a-higher-accepted"),
    pytest.param(2, 1, True, False, id="different-a-higher-rejected"),
    pytest.param(1, 2, True, True, id="different-b-higher-accepted"),
    pytest.param(1, 2, False, True, id="different-b-higher-rejected"),
    pytest.param(1, 3, True, True, id="equal-priority-a-lower-id"),
    pytest.param(3, 1, True, True, id="equal-priority-b-lower-id"),
    pytest.param(3, 1, False, True, id="equal-priority-b-lower-id-rejected"),
]


@pytest.mark.parametrize(("a_prop", "b_prop", "a_acc", "b_acc"), COMBINATIONS)
def test_every_seed_combination_agrees(
    a_prop: int | None, b_prop: int | None, a_acc: bool, b_acc: bool
) -> None:
    a, b = side(propose=a_prop, accept=a_acc), side(propose=b_prop, accept=b_acc)
    out_a, out_b = exchange(a, b)
    check_agreement(out_a, out_b, expected_round(TABLE, a_prop, b_prop, a_acc, b_acc))


def test_idle_round_bytes_and_sleep_interval() -> None:
    a, b = side(interval=3.5), side(interval=3.5)
    assert a.start_round() == bytes([KEEPALIVE])
    assert a.receive_data(bytes([KEEPALIVE])) == b""
    assert a.outcome == Sleep(3.5)
    assert b.start_round() == bytes([KEEPALIVE])


def test_initiate_accept_byte_sequence() -> None:
    a, b = side(propose=1), side()
    assert a.start_round() == b"\x01"
    assert b.start_round() == bytes([KEEPALIVE])
    assert b.receive_data(b"\x01") == bytes([ACCEPT])
    assert b.outcome == Negotiated(b.protocols[1], initiated_by_us=False)
    assert a.receive_data(bytes([KEEPALIVE])) == b""
    assert a.state == "WaitForAcceptReject" and a.outcome is None
    assert a.receive_data(bytes([ACCEPT])) == b""
    assert a.outcome == Negotiated(a.protocols[1], initiated_by_us=True)


def test_reject_sends_reject_and_both_sleep() -> None:
    a, b = side(propose=1), side(accept=False)
    a.start_round()
    b.start_round()
    assert b.receive_data(b"\x01") == bytes([REJECT])
    assert a.receive_data(bytes([KEEPALIVE, REJECT])) == b""  # coalesced in one read
    assert isinstance(a.outcome, Sleep) and isinstance(b.outcome, Sleep)


def test_losing_initiator_answers_for_the_winner() -> None:
    a, b = side(propose=2), side(propose=1)
    assert b.start_round() == b"\x01"
    assert b.receive_data(b"\x02") == bytes([ACCEPT])  # sync (9) beats chat (5)
    assert b.outcome == Negotiated(b.protocols[2], initiated_by_us=False)
    assert a.start_round() == b"\x02"
    assert a.receive_data(b"\x01") == b""  # we won: wait for their verdict
    assert a.state == "WaitForAcceptReject"
    assert a.receive_data(bytes([ACCEPT])) == b""
    assert a.outcome == Negotiated(a.protocols[2], initiated_by_us=True)


def test_several_rounds_in_a_row() -> None:
    wants = {"chat": [False, True, False], "sync": [False, False, True]}

    def turn(name: str) -> bool:
        return wants[name].pop(0)

    a = Negotiator(
        [
            ProtocolSpec(1, "chat", priority=5, wants_to_initiate=lambda: turn("chat")),
            ProtocolSpec(2, "sync", priority=9, wants_to_initiate=lambda: turn("sync")),
        ]
    )
    b = Negotiator([ProtocolSpec(1, "chat", priority=5), ProtocolSpec(2, "sync", priority=9)])
    kinds = []
    for _ in range(3):
        out_a, out_b = exchange(a, b)
        kinds.append((type(out_a).__name__, getattr(out_b, "protocol", None)))
    assert kinds == [
        ("Sleep", None),
        ("Negotiated", b.protocols[1]),
        ("Negotiated", b.protocols[2]),
    ]


def test_wants_to_initiate_asks_in_rank_order_and_stops_at_first_yes() -> None:
    asked: list[str] = []

    def ask(name: str, answer: bool) -> Callable[[], bool]:
        def decide() -> bool:
            asked.append(name)
            return answer

        return decide

    n = Negotiator(
        [
            ProtocolSpec(7, "low", priority=1, wants_to_initiate=ask("low", True)),
            ProtocolSpec(9, "high-b", priority=4, wants_to_initiate=ask("high-b", True)),
            ProtocolSpec(8, "high-a", priority=4, wants_to_initiate=ask("high-a", False)),
        ]
    )
    assert n.start_round() == b"\x09"
    assert asked == ["high-a", "high-b"]


def test_explicit_proposal_overrides_the_protocols() -> None:
    n = side(propose=1)
    assert n.start_round(propose=None) == bytes([KEEPALIVE])
    m = side()
    assert m.start_round(propose=3) == b"\x03"
    with pytest.raises(NegotiationError):
        side().start_round(propose=77)


# --- invalid bytes ---------------------------------------------------------------------------


def started(propose: int | None = None) -> Negotiator:
    n = side(propose=propose)
    n.start_round()
    return n


def waiting_for_verdict() -> Negotiator:
    n = started(1)
    n.receive_data(bytes([KEEPALIVE]))
    assert n.state == "WaitForAcceptReject"
    return n


def negotiated() -> Negotiator:
    n = started()
    n.receive_data(b"\x01")
    assert isinstance(n.outcome, Negotiated)
    return n


INVALID = [
    pytest.param(lambda: started(), b"\x63", "unknown protocol id 99", id="unknown-id-idle"),
    pytest.param(lambda: started(1), b"\xfc", "unknown protocol id 252", id="unknown-id-init"),
    pytest.param(lambda: started(), bytes([ACCEPT]), "nothing was initiated", id="accept-idle"),
    pytest.param(lambda: started(), bytes([REJECT]), "nothing was initiated", id="reject-idle"),
    pytest.param(lambda: started(1), bytes([ACCEPT]), "nothing was initiated", id="accept-init"),
    pytest.param(waiting_for_verdict, bytes([KEEPALIVE]), "expected ACCEPT", id="ka-verdict"),
    pytest.param(waiting_for_verdict, b"\x01", "expected ACCEPT", id="initiate-verdict"),
    pytest.param(negotiated, b"\x01", "after the protocol was negotiated", id="after-done"),
    pytest.param(lambda: side(), bytes([KEEPALIVE, 1]), "still unanswered", id="two-early"),
    pytest.param(lambda: side(), bytes([ACCEPT]), "between rounds", id="accept-between"),
]


@pytest.mark.parametrize(("make", "data", "reason"), INVALID)
def test_invalid_bytes_fail_with_negotiation_error(make: object, data: bytes, reason: str) -> None:
    n = make()  # type: ignore[operator]
    with pytest.raises(NegotiationError) as caught:
        n.receive_data(data)
    assert isinstance(caught.value, P2pscError)
    assert reason in caught.value.reason
    assert n.state == "Failed"
    assert isinstance(n.outcome, NegotiationError) and reason in n.outcome.reason
    # A failed negotiator stays failed: every later call raises, nothing is sent.
    with pytest.raises(NegotiationError):
        n.receive_data(bytes([KEEPALIVE]))
    with pytest.raises(NegotiationError):
        n.start_round()


def test_byte_after_sleep_is_kept_for_the_next_round() -> None:
    a, b = side(propose=1), side()
    exchange(side(), b)  # b sleeps after an idle round
    assert isinstance(b.outcome, Sleep)
    # a woke first and initiated: its byte reaches b while b still sleeps.
    assert a.start_round() == b"\x01"
    assert b.receive_data(b"\x01") == b""
    assert b.snapshot().buffered == b"\x01"
    # b's round starts: its keepalive plus the answer to the early byte, in order.
    assert b.start_round() == bytes([KEEPALIVE, ACCEPT])
    assert a.receive_data(bytes([KEEPALIVE, ACCEPT])) == b""
    assert isinstance(a.outcome, Negotiated) and a.outcome.initiated_by_us


def test_trailing_data_belongs_to_the_protocol() -> None:
    a = started(1)
    assert a.receive_data(bytes([KEEPALIVE, ACCEPT]) + b"hello") == b""
    assert isinstance(a.outcome, Negotiated)
    assert a.trailing_data == b"hello"
    a.start_round()
    assert a.trailing_data == b"" and a.snapshot().buffered == b""


def test_misuse_raises_but_keeps_state() -> None:
    n = started()
    with pytest.raises(NegotiationError, match="under way"):
        n.start_round()
    assert n.state == "SentKeepalive"
    assert n.receive_data(b"") == b""
    n.receive_data(bytes([KEEPALIVE]))
    assert isinstance(n.outcome, Sleep)


def test_fail_from_outside_reports_the_reason() -> None:
    n = started()
    error = n.fail("peer silent for 3s")
    assert error.reason == "peer silent for 3s" and n.state == "Failed"
    assert n.fail("again").reason == "peer silent for 3s"  # the first reason sticks


# --- configuration and snapshots -------------------------------------------------------------


@pytest.mark.parametrize(
    "specs",
    [
        [ProtocolSpec(253, "too-big")],
        [ProtocolSpec(-1, "negative")],
        [ProtocolSpec(1, "a"), ProtocolSpec(1, "b")],
        [ProtocolSpec(1, "a"), ProtocolSpec(2, "a")],
    ],
)
def test_bad_protocol_tables_are_refused(specs: list[ProtocolSpec]) -> None:
    with pytest.raises(ValueError):
        ProtocolTable(specs)


def test_table_winner_is_priority_then_lower_id() -> None:
    table = ProtocolTable(TABLE.values())
    assert table.winner(1, 2) == 2 and table.winner(2, 1) == 2
    assert table.winner(1, 3) == 1 and table.winner(3, 1) == 1
    assert table["sync"] is SYNC and 3 in table and "nope" not in table and len(table) == 3


def test_snapshots_are_plain_hashable_and_restore_exactly() -> None:
    table = ProtocolTable(TABLE.values())
    a = Negotiator(table, keepalive_interval=2.0)
    snaps: set[NegotiatorSnapshot] = {a.snapshot()}
    assert a.start_round(propose=1) == b"\x01"
    mid = a.snapshot()
    assert isinstance(mid, tuple) and hash(mid) == hash(tuple(mid))
    assert mid.state == "SentInitiate" and mid.proposed == 1
    snaps.add(mid)
    # Continue twice from the same snapshot: identical behaviour (determinism).
    results = []
    for _ in range(2):
        b = Negotiator.from_snapshot(mid, table, keepalive_interval=2.0)
        assert b.snapshot() == mid
        out = b.receive_data(bytes([KEEPALIVE]))
        results.append((out, b.snapshot(), b.receive_data(bytes([ACCEPT])), b.snapshot()))
    assert results[0] == results[1]
    assert results[0][3] == NegotiatorSnapshot("ProtocolNegotiated", None, 1, True, b"", None)
    snaps.update(r[1] for r in results)
    assert len(snaps) == 3


def test_proposal_is_frozen_in_the_snapshot() -> None:
    flips = iter([True, False])
    spec = ProtocolSpec(1, "chat", wants_to_initiate=lambda: next(flips))
    n = Negotiator([spec])
    n.start_round()
    restored = Negotiator.from_snapshot(n.snapshot(), [spec])
    assert restored.proposed == 1 and restored.state == "SentInitiate"


def test_protocol_done_then_early_byte_is_kept() -> None:
    n = negotiated()
    with pytest.raises(NegotiationError, match="nothing negotiated"):
        started().protocol_done()
    assert n.protocol_done() == b""
    assert n.state == "Initial"
    assert n.receive_data(bytes([KEEPALIVE])) == b""  # the peer's next round began first
    assert n.start_round(propose=None) == bytes([KEEPALIVE])
    assert isinstance(n.outcome, Sleep)
