"""The protocol Negotiator's control flow (seed 003), as one declarative machine.

One round: each side sends exactly one byte (a protocol id to *initiate* it, or KEEPALIVE),
then reads the other side's byte; depending on the pair, one side may answer ACCEPT or REJECT.
The round ends in ``ProtocolNegotiated`` (the protocol takes over the connection) or ``Sleep``
(nothing to run: wait, then start a new round). Every byte that the rules do not allow leads to
``Failed``, which the core reports as :class:`p2psc.errors.NegotiationError`.

The sans-IO :class:`p2psc.core.negotiator.Negotiator` steps through the compiled table of this
class and answers the guards by name from its protocol table, the byte just received and the
protocol it proposed this round. ``spec/negotiator.md`` is the normative prose for this machine.
"""

from __future__ import annotations

from statemachine import State, StateMachine

__all__ = ["NegotiatorMachine"]


class NegotiatorMachine(StateMachine):
    """One side of a connection deciding, one byte at a time, which protocol runs next.

    Events: ``start`` (we send our byte); ``keepalive``, ``initiate`` (a byte 0..252),
    ``accept``, ``reject`` (one byte from the peer); ``answer`` (we answer the peer's
    initiate); ``wake`` (the sleep after a round without protocol is over); ``protocol_done``
    (the negotiated protocol released the connection); ``fail`` (a violation, EOF or timeout).

    Guards: ``we_initiate`` (a protocol wants to be initiated this round),
    ``is_known_protocol`` (the byte is an id in our table),
    ``same_protocol`` (the peer initiated the id we initiated), ``simultaneous_runs`` (that
    protocol's policy on a simultaneous initiate is RUN), ``our_protocol_wins`` (different ids:
    ours has the higher priority, or equal priority and the lower id), ``should_accept`` (the
    protocol we were asked to run accepts), ``can_buffer`` (no early byte of the peer's next
    round is pending yet).
    """

    Initial = State("Initial", initial=True)
    SentKeepalive = State("Sent keepalive")
    SentInitiate = State("Sent initiate")
    ReceivedInitiate = State("Received initiate")
    WaitForAcceptReject = State("Wait for accept/reject")
    Sleep = State("Sleep")
    ProtocolNegotiated = State("Protocol negotiated")
    Failed = State("Failed", final=True)

    # Our byte: the id of the protocol we initiate, or KEEPALIVE.
    start = Initial.to(SentInitiate, cond="we_initiate") | Initial.to(
        SentKeepalive, unless="we_initiate"
    )

    # The peer's byte, one event per kind of byte (the core classifies it).
    keepalive = (
        SentKeepalive.to(Sleep)  # both idle
        | SentInitiate.to(WaitForAcceptReject)  # the peer must answer our initiate
        # Between rounds the peer may already have sent its next round's byte: keep one.
        | Initial.to.itself(cond="can_buffer")  # type: ignore[no-untyped-call]
        | Sleep.to.itself(cond="can_buffer")  # type: ignore[no-untyped-call]
    )
    initiate = (
        SentKeepalive.to(ReceivedInitiate, cond="is_known_protocol")
        # Both initiated in the same round: a collision.
        | SentInitiate.to(
            ProtocolNegotiated, cond="is_known_protocol and same_protocol and simultaneous_runs"
        )
        | SentInitiate.to(
            Sleep, cond="is_known_protocol and same_protocol and not simultaneous_runs"
        )
        | SentInitiate.to(
            WaitForAcceptReject,
            cond="is_known_protocol and not same_protocol and our_protocol_wins",
        )
        | SentInitiate.to(
            ReceivedInitiate,
            cond="is_known_protocol and not same_protocol and not our_protocol_wins",
        )
        | Initial.to.itself(cond="can_buffer")  # type: ignore[no-untyped-call]
        | Sleep.to.itself(cond="can_buffer")  # type: ignore[no-untyped-call]
    )
    accept = WaitForAcceptReject.to(ProtocolNegotiated)
    reject = WaitForAcceptReject.to(Sleep)

    # Our verdict on the peer's initiate (the byte we send is ACCEPT or REJECT).
    answer = ReceivedInitiate.to(ProtocolNegotiated, cond="should_accept") | ReceivedInitiate.to(
        Sleep, unless="should_accept"
    )
    wake = Sleep.to(Initial)
    protocol_done = ProtocolNegotiated.to(Initial)

    # Anything not enabled above (an unknown id, ACCEPT with nothing initiated, any byte once
    # the protocol owns the connection, a second early byte) is a protocol violation; so are
    # EOF and a silent peer. The core then takes this event and reports NegotiationError.
    fail = (
        Initial.to(Failed)
        | SentKeepalive.to(Failed)
        | SentInitiate.to(Failed)
        | ReceivedInitiate.to(Failed)
        | WaitForAcceptReject.to(Failed)
        | Sleep.to(Failed)
        | ProtocolNegotiated.to(Failed)
    )
