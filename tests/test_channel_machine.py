"""ChannelMachine, the lifecycle of a SecureChannel: the compiled table agrees with the class,
and the channel's observable state follows the machine."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psc.core.channel import CHANNEL_TABLE, SecureChannel
from p2psc.errors import ChannelClosed, DataAfterClose, TruncatedStream
from p2psc.machines import machine_classes
from p2psc.machines.channel import ChannelMachine
from p2psc.machines.compiler import reference_path
from p2psc.noise import CipherState

KEY_A, KEY_B = bytes(range(32)), bytes(range(1, 33))


def pair() -> tuple[SecureChannel, SecureChannel]:
    return (
        SecureChannel(CipherState(KEY_A), CipherState(KEY_B)),
        SecureChannel(CipherState(KEY_B), CipherState(KEY_A)),
    )


def test_registered() -> None:
    assert machine_classes()["ChannelMachine"] is ChannelMachine


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(CHANNEL_TABLE.events), max_size=8))
def test_compiled_table_agrees_with_the_class(events: list[str]) -> None:
    state = CHANNEL_TABLE.initial
    path: list[str | None] = []
    for event in events:
        try:
            state = CHANNEL_TABLE.step(state, event).target
        except Exception:
            path.append(None)
            continue
        path.append(state)
    assert path == reference_path(ChannelMachine, events, lambda name: True)


def test_half_closes_in_either_order_end_in_both_closed() -> None:
    for ours_first in (True, False):
        a, b = pair()
        if ours_first:
            b.feed(a.seal_close())
            assert (a._state, b._state) == ("sent_close", "received_close")
            assert a.feed(b.seal(b"still fine")) == [b"still fine"]
            a.feed(b.seal_close())
        else:
            a.feed(b.seal_close())
            assert a._state == "received_close"
            assert b.feed(a.seal(b"still fine")) == [b"still fine"]
            b.feed(a.seal_close())
        assert a._state == b._state == "both_closed" and a.closed and a.peer_closed
        a.transport_eof()  # fine after the peer's close
        assert a._state == "both_closed"
        with pytest.raises(ChannelClosed):
            a.seal(b"x")


@pytest.mark.parametrize("close_first", [False, True])
def test_a_cut_transport_fails_unless_the_peer_closed(close_first: bool) -> None:
    a, _ = pair()
    if close_first:
        a.seal_close()
    with pytest.raises(TruncatedStream):
        a.transport_eof()
    assert a._state == "failed" and a.failed is not None


def test_bytes_after_the_close_are_a_bad_record_in_any_closed_state() -> None:
    a, b = pair()
    b.feed(a.seal_close())
    b.seal_close()
    assert b._state == "both_closed"
    with pytest.raises(DataAfterClose):
        b.feed(b"x")
    assert b._state == "failed"
