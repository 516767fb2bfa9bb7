"""The two roles of a version 1 peer, declared once as python-statemachine classes.

A peer does not choose its role: the Mediator assigns it. Both classes therefore share the same
first half (connect to the Mediator, advertise, answer its challenge, wait for the partner;
AdvertiseRetry with bounded, backed-off retries; AdvertiseAbort), with identical state and event
names. :class:`p2psc.core.peer.PeerCore` steps the compiled :class:`ClientHandshake` table until
the Mediator's first pairing message: ``PeerIdentification`` keeps it a *Client*, while
``PeerDisconnect`` moves :class:`ClientHandshake` to its final ``became_peer`` state, after which
the core continues in :class:`PeerHandshake` from ``waiting`` (a test checks the shared half of
both tables is identical, so the hand-over is exact).

Guards are evaluated by the core, by name:

- ``challenge_opens``: a sealed nonce (the Mediator's, or the Client's PeerChallenge) opened
  with our private key under the expected ``info``.
- ``can_retry``: an AdvertiseRetry arrived and another attempt fits both the retry budget and
  the overall deadline.
- ``version_supported``: PeerIdentification names protocol version 1.
- ``response_ok``: a candidate echoed our nonce (constant time) *and* its own sealed nonce
  opened: it is the Peer.
- ``nonce_ok``: the Client echoed the Peer's nonce (constant time).
"""

from __future__ import annotations

from statemachine import State, StateMachine

__all__ = ["ClientHandshake", "PeerHandshake"]


class ClientHandshake(StateMachine):
    """The earlier registrant: advertise, wait, get PeerIdentification, listen on the port of
    its Mediator connection and connect out from it to the Peer (simultaneous open, bounded
    retries), then challenge it: PeerChallenge, PeerChallengeResponse, PeerResponse,
    PeerAcknowledgement.

    ``punching`` loops on its own events while direct connections form (``direct_opened``:
    each one, outgoing or accepted, is a *candidate* and gets the same PeerChallenge), fail or
    answer wrongly (``candidate_rejected``, or ``challenge_response`` without ``response_ok``),
    until one answers with a valid PeerChallengeResponse (then ``confirming``) or the deadline
    passes (``timeout``). Why every candidate and not the first connection: a listening port,
    or a private ``peer_local`` address that exists in our own network too, can be reached by
    a host that is not the Peer; only the answer proves who is on the other end.
    """

    idle = State(initial=True)
    connecting_mediator = State()
    advertising = State()
    waiting = State()
    backing_off = State()
    punching = State()
    confirming = State()
    established = State(final=True)
    failed = State(final=True)
    became_peer = State(final=True)

    start = idle.to(connecting_mediator)
    mediator_opened = connecting_mediator.to(advertising)
    advertise_challenge = advertising.to(waiting, cond="challenge_opens") | advertising.to(failed)
    advertise_retry = (
        advertising.to(backing_off, cond="can_retry")
        | advertising.to(failed)
        | waiting.to(backing_off, cond="can_retry")
        | waiting.to(failed)
    )
    advertise_abort = advertising.to(failed) | waiting.to(failed)
    retry_due = backing_off.to(connecting_mediator)

    peer_disconnect = waiting.to(became_peer)
    peer_identification = waiting.to(punching, cond="version_supported") | waiting.to(failed)

    attempt_due = punching.to.itself()  # type: ignore[no-untyped-call]
    attempt_failed = punching.to.itself()  # type: ignore[no-untyped-call]
    direct_opened = punching.to.itself()  # type: ignore[no-untyped-call]
    candidate_rejected = punching.to.itself()  # type: ignore[no-untyped-call]
    listen_failed = punching.to.itself()  # type: ignore[no-untyped-call]
    challenge_response = punching.to(confirming, cond="response_ok") | punching.to.itself()  # type: ignore[no-untyped-call]
    acknowledgement = confirming.to(established)

    timeout = (
        connecting_mediator.to(failed)
        | advertising.to(failed)
        | waiting.to(failed)
        | backing_off.to(failed)
        | punching.to(failed)
        | confirming.to(failed)
    )
    lost = (
        connecting_mediator.to(failed)
        | advertising.to(failed)
        | waiting.to(failed)
        | confirming.to(failed)
    )
    malformed = advertising.to(failed) | waiting.to(failed) | confirming.to(failed)


class PeerHandshake(StateMachine):
    """The later registrant: advertise, get PeerDisconnect, listen on the Mediator-facing port
    *before* closing that connection, connect out to the Client from the same port, and answer
    the first valid PeerChallenge: PeerChallengeResponse, then PeerResponse, PeerAcknowledgement.

    In ``punching`` stray connections are tolerated: a candidate that sends garbage or a
    challenge that does not open is dropped (``candidate_rejected``), since anyone can reach a
    listening port; only the deadline ends the wait.
    """

    idle = State(initial=True)
    connecting_mediator = State()
    advertising = State()
    waiting = State()
    backing_off = State()
    punching = State()
    answering = State()
    established = State(final=True)
    failed = State(final=True)
    became_client = State(final=True)

    start = idle.to(connecting_mediator)
    mediator_opened = connecting_mediator.to(advertising)
    advertise_challenge = advertising.to(waiting, cond="challenge_opens") | advertising.to(failed)
    advertise_retry = (
        advertising.to(backing_off, cond="can_retry")
        | advertising.to(failed)
        | waiting.to(backing_off, cond="can_retry")
        | waiting.to(failed)
    )
    advertise_abort = advertising.to(failed) | waiting.to(failed)
    retry_due = backing_off.to(connecting_mediator)

    peer_identification = waiting.to(became_client)
    peer_disconnect = waiting.to(punching)

    attempt_due = punching.to.itself()  # type: ignore[no-untyped-call]
    attempt_failed = punching.to.itself()  # type: ignore[no-untyped-call]
    direct_opened = punching.to.itself()  # type: ignore[no-untyped-call]
    candidate_rejected = punching.to.itself()  # type: ignore[no-untyped-call]
    peer_challenge = punching.to(answering, cond="challenge_opens") | punching.to.itself()  # type: ignore[no-untyped-call]
    peer_response = answering.to(established, cond="nonce_ok") | answering.to(failed)

    timeout = (
        connecting_mediator.to(failed)
        | advertising.to(failed)
        | waiting.to(failed)
        | backing_off.to(failed)
        | punching.to(failed)
        | answering.to(failed)
    )
    lost = (
        connecting_mediator.to(failed)
        | advertising.to(failed)
        | waiting.to(failed)
        | punching.to(failed)
        | answering.to(failed)
    )
    malformed = advertising.to(failed) | waiting.to(failed) | answering.to(failed)
