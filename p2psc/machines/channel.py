"""The lifecycle of an established secure channel (spec/channel.md), declared once.

:class:`p2psc.core.channel.SecureChannel` steps the compiled table of :class:`ChannelMachine`
on the events that change what the channel may still do; data records do not change it and are
not stepped (the record layer's hot path stays a plain loop). Each direction ends on its own: our
authenticated close (``close_sent``) and the peer's (``close_received``) are a half close each, as
``shutdown(SHUT_WR)`` is for TCP. A bad record, bytes after the peer's close, or a transport that
ends without the peer's close record (``transport_cut``) kill the channel: ``failed`` is final,
and the channel refuses everything from then on.
"""

from __future__ import annotations

from statemachine import State, StateMachine

__all__ = ["ChannelMachine"]


class ChannelMachine(StateMachine):
    """Both directions open, then each closed by its own authenticated close record."""

    open = State(initial=True)
    sent_close = State()
    received_close = State()
    both_closed = State()
    failed = State(final=True)

    close_sent = open.to(sent_close) | received_close.to(both_closed)
    close_received = open.to(received_close) | sent_close.to(both_closed)
    transport_ended = received_close.to.itself() | both_closed.to.itself()  # type: ignore[no-untyped-call]
    transport_cut = open.to(failed) | sent_close.to(failed)
    bad_record = (
        open.to(failed) | sent_close.to(failed) | received_close.to(failed) | both_closed.to(failed)
    )
