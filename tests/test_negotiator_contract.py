"""What the Negotiator promises beyond the decisions: byte values, reasons, snapshots, config.

- The byte values are the table of spec/negotiator.md section 1 (read from the spec).
- Every refused byte, in every state, fails with the reason an operator reads in the log; the
  texts are written down once here (``expected_reason``) and checked for all 256 byte values.
- A round leaves nothing behind: between rounds the snapshot is a fresh negotiator's, so a
  restored core and a long-lived one behave alike.
- Configuration: the default keepalive interval, a negative one refused, values immutable.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from negotiator_helpers import exchange

from p2psc.core import negotiator as core
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
    describe_byte,
)
from p2psc.errors import NegotiationError

SPEC = (Path(__file__).resolve().parents[1] / "spec" / "negotiator.md").read_text(encoding="utf-8")
FRESH = NegotiatorSnapshot("Initial", None, None, False, b"", None)


def test_byte_values_are_the_spec_table() -> None:
    rows = dict(re.findall(r"^\| ([\d.]+) \| [`*]?([\w ]+?)[`*]? \|", SPEC, flags=re.MULTILINE))
    assert rows["0..252"] == "protocol id" and core.MAX_PROTOCOL_ID == 252
    assert {rows["253"]: 253, rows["254"]: 254, rows["255"]: 255} == {
        "REJECT": REJECT,
        "ACCEPT": ACCEPT,
        "KEEPALIVE": KEEPALIVE,
    }


@given(st.integers(0, 255))
def test_describe_byte_names_every_value(byte: int) -> None:
    names = {REJECT: "REJECT", ACCEPT: "ACCEPT", KEEPALIVE: "KEEPALIVE"}
    assert describe_byte(byte) == names.get(byte, f"protocol id {byte}")


# --- reasons ---------------------------------------------------------------------------------

CHAT = ProtocolSpec(1, "chat", priority=1)
SYNC = ProtocolSpec(2, "sync", priority=2)
KNOWN = {1, 2}


def _in(state: str) -> Negotiator:
    """A negotiator (knowing ids 1 and 2) brought to ``state`` by legal bytes."""
    n = Negotiator([CHAT, SYNC], keepalive_interval=1.0)
    if state == "Initial":
        pass
    elif state == "Initial+early":
        n.receive_data(bytes([KEEPALIVE]))  # the peer's next round byte, kept
    elif state == "SentKeepalive":
        n.start_round(propose=None)
    elif state == "SentInitiate":
        n.start_round(propose=2)
    elif state == "WaitForAcceptReject":
        n.start_round(propose=2)
        n.receive_data(bytes([KEEPALIVE]))
    elif state == "Sleep":
        n.start_round(propose=None)
        n.receive_data(bytes([KEEPALIVE]))
    elif state == "ProtocolNegotiated":
        n.start_round(propose=None)
        n.receive_data(b"\x01")
    assert n.state == state.split("+")[0], (n.state, state)
    return n


def expected_reason(state: str, byte: int) -> str | None:
    """The NegotiationError reason for ``byte`` in ``state`` (None: the byte is allowed)."""
    what = describe_byte(byte)
    name = state.split("+")[0]
    initiate = byte <= core.MAX_PROTOCOL_ID
    if state == "ProtocolNegotiated":
        return f"{what} received after the protocol was negotiated (bytes belong to it)"
    if state in ("Initial", "Sleep") and byte not in (ACCEPT, REJECT):
        return None  # the peer's next round byte, kept unchecked until our round starts
    if initiate and byte not in KNOWN:
        return f"unknown {what} received in {name}"
    if name in ("Initial", "Sleep") and byte in (ACCEPT, REJECT):
        return f"{what} received between rounds: nothing was initiated"
    if state == "Initial+early":
        return f"peer sent {what} while its previous round byte was still unanswered"
    if name == "WaitForAcceptReject":
        return (
            None
            if byte in (ACCEPT, REJECT)
            else f"{what} received in {name}: expected ACCEPT or REJECT"
        )
    if name in ("SentKeepalive", "SentInitiate") and byte in (ACCEPT, REJECT):
        return f"{what} received in {name}: nothing was initiated to answer"
    return None


STATES = [
    "Initial",
    "Initial+early",
    "SentKeepalive",
    "SentInitiate",
    "WaitForAcceptReject",
    "Sleep",
    "ProtocolNegotiated",
]


@pytest.mark.parametrize("state", STATES)
def test_every_byte_in_every_state_is_allowed_or_refused_with_its_reason(state: str) -> None:
    for byte in range(256):
        n = _in(state)
        reason = expected_reason(state, byte)
        if reason is None:
            n.receive_data(bytes([byte]))
            assert n.state != "Failed", (state, byte)
            continue
        with pytest.raises(NegotiationError) as caught:
            n.receive_data(bytes([byte]))
        assert caught.value.reason == reason
        assert n.snapshot() == NegotiatorSnapshot("Failed", None, None, False, b"", reason)
        assert n.outcome == NegotiationError(reason) or str(n.outcome) == str(
            NegotiationError(reason)
        )
        assert not n.waiting and n.trailing_data == b""
        # Failed is final and keeps the first reason, whatever is called next.
        calls: list[Callable[[], object]] = [
            lambda n=n: n.receive_data(b"\x01"),
            lambda n=n: n.receive_data(b""),
            lambda n=n: n.start_round(),
            lambda n=n: n.protocol_done(),
        ]
        for call in calls:
            with pytest.raises(NegotiationError) as again:
                call()
            assert again.value.reason == reason or "nothing negotiated" in again.value.reason
        assert n.fail("later").reason == reason
        assert n.snapshot().error == reason


def test_a_failed_snapshot_without_reason_still_reports_one() -> None:
    n = Negotiator.from_snapshot(NegotiatorSnapshot("Failed", None, None, False, b"", None), [CHAT])
    assert isinstance(n.outcome, NegotiationError) and n.outcome.reason == "negotiation failed"
    for call in (n.start_round, lambda: n.receive_data(b"\x01")):
        with pytest.raises(NegotiationError) as caught:
            call()
        assert caught.value.reason == "negotiation failed"


@pytest.mark.parametrize(
    ("state", "call", "reason"),
    [
        (
            "SentKeepalive",
            "start_round",
            "start_round() called in SentKeepalive: a round is under way",
        ),
        (
            "SentInitiate",
            "start_round",
            "start_round() called in SentInitiate: a round is under way",
        ),
        (
            "WaitForAcceptReject",
            "start_round",
            "start_round() called in WaitForAcceptReject: a round is under way",
        ),
        ("Initial", "protocol_done", "protocol_done() called in Initial: nothing negotiated"),
        ("Sleep", "protocol_done", "protocol_done() called in Sleep: nothing negotiated"),
        ("Initial", "propose 9", "cannot propose unknown protocol 9"),
    ],
)
def test_misuse_is_refused_with_its_reason_and_changes_nothing(
    state: str, call: str, reason: str
) -> None:
    n = _in(state)
    before = n.snapshot()
    with pytest.raises(NegotiationError) as caught:
        if call == "propose 9":
            n.start_round(propose=9)
        else:
            getattr(n, call)()
    assert caught.value.reason == reason
    assert n.snapshot() == before


# --- a round leaves nothing behind ----------------------------------------------------------


@given(
    proposals=st.lists(
        st.tuples(st.sampled_from([None, 1, 2]), st.sampled_from([None, 1, 2])),
        min_size=1,
        max_size=6,
    ),
    accept=st.booleans(),
)
def test_between_rounds_the_snapshot_is_a_fresh_one(
    proposals: list[tuple[int | None, int | None]], accept: bool
) -> None:
    """After each round (and protocol_done or the wake-up), both snapshots are a new
    negotiator's: no proposal, no negotiated id, no initiated flag, nothing buffered."""
    specs = [
        ProtocolSpec(1, "chat", priority=1, should_accept=accept),
        ProtocolSpec(2, "sync", priority=2, should_accept=accept, simultaneous=Simultaneous.FAIL),
    ]
    a, b = Negotiator(specs, keepalive_interval=0.5), Negotiator(specs, keepalive_interval=0.5)
    for pa, pb in proposals:
        to_b, to_a = a.start_round(propose=pa), b.start_round(propose=pb)
        while to_a or to_b:
            to_a, to_b = (
                b.receive_data(to_b) if to_b else b"",
                a.receive_data(to_a) if to_a else b"",
            )
        for n in (a, b):
            outcome = n.outcome
            if isinstance(outcome, Negotiated):
                assert n.snapshot().negotiated == outcome.protocol.id
                assert n.snapshot().initiated_by_us == outcome.initiated_by_us
                n.protocol_done()
                assert n.snapshot() == FRESH
            else:
                assert outcome == Sleep(0.5)
                assert n.snapshot() == FRESH._replace(state="Sleep")
            assert not n.waiting and n.proposed is None


@given(script=st.lists(st.sampled_from([None, 1, 2]), min_size=1, max_size=8))
def test_waiting_is_true_exactly_while_the_round_needs_a_peer_byte(
    script: list[int | None],
) -> None:
    n = Negotiator([CHAT, SYNC])
    assert not n.waiting
    for proposal in script:
        n.start_round(propose=proposal)
        assert n.waiting and n.outcome is None and n.proposed == proposal
        n.receive_data(bytes([KEEPALIVE]))
        if proposal is not None:  # our initiate waits for the peer's verdict
            assert n.waiting and n.outcome is None and n.proposed == proposal
            n.receive_data(bytes([REJECT]))
        assert not n.waiting and n.outcome == Sleep(10.0)


# --- configuration -----------------------------------------------------------------------------


def test_keepalive_interval_default_zero_and_negative() -> None:
    assert Negotiator([CHAT]).keepalive_interval == 10.0
    assert Negotiator.from_snapshot(FRESH, [CHAT]).keepalive_interval == 10.0
    assert Negotiator([CHAT], keepalive_interval=0).keepalive_interval == 0
    for bad in (-0.001, -1, -10.0):
        with pytest.raises(ValueError, match=r"^keepalive_interval must be >= 0$"):
            Negotiator([CHAT], keepalive_interval=bad)


def test_protocol_spec_defaults() -> None:
    """A bare ProtocolSpec: priority 0, never initiates, accepts every offer, runs a same-id
    collision (the docstrings' defaults)."""
    spec = ProtocolSpec(7, "plain")
    assert (spec.priority, spec.wants_to_initiate, spec.should_accept) == (0, False, True)
    assert spec.simultaneous is Simultaneous.RUN and spec.rank() == (0, 7)
    a, b = Negotiator([spec]), Negotiator([spec])
    assert a.start_round() == bytes([KEEPALIVE])
    outcomes = exchange(Negotiator([dataclasses.replace(spec, wants_to_initiate=True)]), b)
    assert (
        outcomes == (Negotiated(spec, True), Negotiated(spec, False))
        or outcomes[1].protocol.id == 7
    )  # type: ignore[union-attr]
    assert a.protocols.winner(7, 7) == 7


@pytest.mark.parametrize(
    ("specs", "reason"),
    [
        ([ProtocolSpec(253, "a")], "protocol id must be 0..252: 253"),
        ([ProtocolSpec(-1, "a")], "protocol id must be 0..252: -1"),
        ([ProtocolSpec("1", "a")], "protocol id must be 0..252: '1'"),  # type: ignore[arg-type]
        ([ProtocolSpec(1, "a"), ProtocolSpec(1, "b")], "duplicate protocol id 1"),
        ([ProtocolSpec(1, "a"), ProtocolSpec(2, "a")], "duplicate protocol name 'a'"),
    ],
)
def test_bad_tables_are_refused_with_their_reason(specs: list[ProtocolSpec], reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        ProtocolTable(specs)
    assert str(caught.value) == reason


@given(ids=st.lists(st.integers(0, 252), min_size=1, max_size=6, unique=True), data=st.data())
def test_table_lookups(ids: list[int], data: st.DataObject) -> None:
    specs = [ProtocolSpec(i, f"p{i}", priority=data.draw(st.integers(-2, 2))) for i in ids]
    table = ProtocolTable(specs)
    assert len(table) == len(ids)
    assert list(table.by_rank) == sorted(specs, key=lambda s: (-s.priority, s.id))
    for spec in specs:
        assert table[spec.id] is spec and table[spec.name] is spec
        assert spec.id in table and spec.name in table
        assert table.winner(spec.id, table.by_rank[0].id) == table.by_rank[0].id
    assert 253 not in table and "nope" not in table
    assert Negotiator(table).protocols is table


@pytest.mark.parametrize(
    "value",
    [ProtocolSpec(1, "chat"), Negotiated(ProtocolSpec(1, "chat"), True), Sleep(1.0)],
    ids=lambda v: type(v).__name__,
)
def test_values_are_frozen_hashable_and_slotted(value: object) -> None:
    twin = dataclasses.replace(value)  # type: ignore[type-var]
    assert twin == value and hash(twin) == hash(value) and len({twin, value}) == 1
    assert not hasattr(value, "__dict__")
    for f in dataclasses.fields(value):  # type: ignore[arg-type]
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, f.name, getattr(value, f.name))


# --- the seam for tools ------------------------------------------------------------------------


class _Recorder:
    """Stands in for the compiled table, as the explorer's coverage recorder does."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, str, str]] = []

    def step(self, state: str, event: str, oracle: Callable[[str], bool]) -> object:
        transition = core._COMPILED.step(state, event, oracle)
        self.steps.append((state, event, transition.target))
        return transition


@given(st.lists(st.sampled_from([None, 1, 2]), min_size=1, max_size=5), st.booleans())
def test_a_swapped_table_sees_every_step_and_changes_nothing(
    proposals: list[int | None], accept: bool
) -> None:
    """With ``_TABLE`` swapped (spec: the explorer's coverage seam), the core steps through the
    replacement and behaves exactly as with its own fast path."""
    specs = [ProtocolSpec(1, "chat", should_accept=accept), ProtocolSpec(2, "sync", priority=3)]

    def play() -> list[object]:
        a, b = Negotiator(specs), Negotiator(specs)
        log: list[object] = []
        for proposal in proposals:
            to_b, to_a = a.start_round(propose=proposal), b.start_round(propose=None)
            log.append((to_b, to_a))
            while to_a or to_b:
                to_a, to_b = (
                    b.receive_data(to_b) if to_b else b"",
                    a.receive_data(to_a) if to_a else b"",
                )
                log.append((to_a, to_b))
            log.append((a.snapshot(), b.snapshot()))
        with pytest.raises(NegotiationError):
            a.receive_data(bytes([ACCEPT]))  # refused in Sleep and in ProtocolNegotiated
        log.append(a.snapshot())
        return log

    plain = play()
    recorder = _Recorder()
    saved = core._TABLE
    core._TABLE = recorder  # type: ignore[assignment]
    try:
        recorded = play()
    finally:
        core._TABLE = saved
    assert recorded == plain
    events = {event for _, event, _ in recorder.steps}
    assert {"start", "keepalive"} <= events
    assert ("fail" in events) and all(t for _, _, t in recorder.steps)


def test_the_guards_are_the_machines_and_no_other() -> None:
    n = Negotiator([CHAT])
    n._byte = 1  # a known id: the name is looked up, not short-cut
    with pytest.raises(KeyError) as caught:
        n._guard("nope")
    assert caught.value.args == ("NegotiatorMachine has no guard 'nope'",)
    n._byte = 200  # an unknown id: every guard about the received protocol is False
    for name in ("simultaneous_runs", "our_protocol_wins", "should_accept", "is_known_protocol"):
        assert n._guard(name) is False
