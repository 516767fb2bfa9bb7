"""The relay's control flow (issue 14; spec/relay.md), as python-statemachine classes.

- :class:`RelaySession`: one connection *at the relay*. The relay checks that the requester owns
  the key it names (a nonce sealed to it, as at the Mediator, under a relay-only context), then
  parks it until the partner of the same pairing arrives, and splices the two.
- :class:`RelayLeg`: one connection *of a peer* to the relay, until it is spliced; from then on
  it is a candidate like a direct connection (:mod:`p2psc.machines.handshake`) and the Noise
  handshake runs end to end over it.

Guards (evaluated by :class:`p2psc.core.relay.RelayCore` and :class:`p2psc.core.peer.PeerCore`):

- ``version_supported``: the RelayRequest names protocol version 1.
- ``self_pairing``: the RelayRequest names the requester's own key as its partner.
- ``admitted``: another relay connection fits the limits per address and in total.
- ``challenge_budget``: the requester's origin (address, IPv6 /64) may still be sent a sealed
  challenge (a token bucket, as at the Mediator: a client that never answers does not get
  unlimited HPKE seals).
- ``key_admitted``: another relay connection fits the limit per (now proven) key.
- ``key_usable``: a nonce could be sealed to the named key.
- ``nonce_matches``: the RelayResponse equals the sealed nonce (constant-time compare).
- ``partner_waiting``: the partner's connection is authenticated and waiting, for the same
  pairing id, naming our key as its partner.
- ``challenge_opens`` (peer side): the RelayChallenge opened with our key under the relay's
  context (pairing id and both keys included).
"""

from __future__ import annotations

from statemachine import State, StateMachine

__all__ = ["RelayLeg", "RelaySession"]


class RelaySession(StateMachine):
    """One connection at the relay: authenticate, wait for the partner, splice, end.

    ``spliced`` is not stepped per byte: forwarding, counting and the rate limit are the core's
    bookkeeping; only what ends or changes the session is an event here."""

    awaiting_request = State(initial=True)
    challenged = State()
    waiting = State()
    spliced = State()
    closed = State(final=True)

    request = (
        awaiting_request.to(closed, unless="version_supported")
        | awaiting_request.to(closed, cond="self_pairing")
        | awaiting_request.to(closed, unless="admitted")
        | awaiting_request.to(closed, unless="challenge_budget")
        | awaiting_request.to(closed, unless="key_usable")
        | awaiting_request.to(challenged)
    )
    response = (
        challenged.to(closed, unless="nonce_matches")
        | challenged.to(closed, unless="key_admitted")
        | challenged.to(spliced, cond="partner_waiting")
        | challenged.to(waiting)
    )
    partner_arrived = waiting.to(spliced)
    replaced = waiting.to(closed)
    limit_reached = spliced.to(closed)
    partner_gone = spliced.to(closed)

    eof = (
        awaiting_request.to(closed)
        | challenged.to(closed)
        | waiting.to(closed)
        | (spliced.to(closed))
    )
    lost = (
        awaiting_request.to(closed)
        | challenged.to(closed)
        | waiting.to(closed)
        | (spliced.to(closed))
    )
    timeout = awaiting_request.to(closed) | challenged.to(closed) | waiting.to(closed)
    bad_input = awaiting_request.to(closed) | challenged.to(closed) | waiting.to(closed)
    shutdown = (
        awaiting_request.to(closed)
        | challenged.to(closed)
        | waiting.to(closed)
        | (spliced.to(closed))
    )


class RelayLeg(StateMachine):
    """A peer's connection to the relay, from the connect to the splice.

    Once ``spliced``, the connection becomes a Noise candidate (the Client sends its relayed
    HandshakeInit, the Peer waits for one). A RelayAbort, a close, bytes that are not the next
    relay message, or the step deadline end the leg (``failed``)."""

    connecting = State(initial=True)
    requesting = State()
    answered = State()
    spliced = State(final=True)
    failed = State(final=True)

    opened = connecting.to(requesting)
    challenge = requesting.to(answered, cond="challenge_opens") | requesting.to(failed)
    connected = answered.to(spliced)
    abort = requesting.to(failed) | answered.to(failed)
    lost = connecting.to(failed) | requesting.to(failed) | answered.to(failed)
    bad_message = requesting.to(failed) | answered.to(failed)
    timeout = connecting.to(failed) | requesting.to(failed) | answered.to(failed)
