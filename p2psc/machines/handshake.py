"""A version 1 peer's control flow, declared as small python-statemachine classes.

A peer does not choose its role: the Mediator assigns it. So the peer side is composed of:

- :class:`Registration` (both roles): connect to the Mediator, advertise, answer its challenge,
  wait for the partner (AdvertiseRetry with bounded, backed-off retries; AdvertiseAbort), and end
  *introduced* as the Client (PeerIdentification) or as the Peer (PeerDisconnect).
- :class:`Rendezvous` (both roles): hole punching and candidate selection. Every direct
  connection that forms, outgoing or accepted, is a *candidate*; strangers can reach a listening
  port, so a candidate proves itself only through the Noise handshake. ``Rendezvous`` ends
  ``established`` when one candidate is *confirmed* (key confirmation, see below), else ``failed``.
- One candidate machine per direct connection, by role: :class:`ClientCandidate` (the Client is
  the Noise initiator: it sends HandshakeInit on every candidate and is confirmed by a valid
  HandshakeResponse) and :class:`PeerCandidate` (the responder: answers a valid HandshakeInit and
  is confirmed only by the Client's first valid transport record). Neither side commits before
  key confirmation, so a replayed or relayed message never makes either side commit.

:class:`p2psc.core.peer.PeerCore` runs the compiled tables; it evaluates guards by name:

- ``challenge_opens``: the Mediator's sealed nonce opened with our key under the expected info.
- ``can_retry``: AdvertiseRetry arrived and another attempt fits the retry budget and deadline.
- ``version_supported``: PeerIdentification names protocol version 1.
- ``addresses_usable``: every address the Mediator sent can be a partner (not unspecified,
  multicast, broadcast; loopback only when the Mediator itself is on loopback).
- ``can_listen``: the adapter reported the local port of the Mediator connection (the Peer must
  listen on it before its close confirms PeerDisconnect).
- ``mediator_answered``: our previous keepalive Ping (if any) was answered with its Pong.
- ``pong_expected``: a Pong arrived for the Ping we have outstanding (same token).
- ``can_go_on``: our listener failed, and we are the Client (for whom it is an extra).
- ``response_valid``: a HandshakeResponse completed the Noise handshake (authenticated by the
  Peer's static key, bound to this pairing by the prologue).
- ``init_valid``: a HandshakeInit decrypted under this pairing's prologue and the Client's key.
- ``record_valid``: the first transport record decrypted and is the empty key confirmation.
- ``relayed_path``: the confirmed candidate is the relay connection (spec/relay.md).
"""

from __future__ import annotations

from statemachine import State, StateMachine

__all__ = ["ClientCandidate", "PeerCandidate", "Registration", "Rendezvous"]


class Registration(StateMachine):
    """Register with the Mediator until it introduces us to the partner (either role)."""

    idle = State(initial=True)
    connecting_mediator = State()
    advertising = State()
    waiting = State()
    backing_off = State()
    client = State(final=True)
    peer = State(final=True)
    failed = State(final=True)

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
    # Keepalive while waiting (spec/mediator.md section 4.1): every interval a Ping, answered by
    # a Pong before the next one is due; an unanswered Ping means the Mediator (or a NAT on the
    # way) is gone, whatever the partner did.
    keepalive_due = waiting.to.itself(cond="mediator_answered") | waiting.to(failed)  # type: ignore[no-untyped-call]
    pong = waiting.to.itself(cond="pong_expected") | waiting.to(failed)  # type: ignore[no-untyped-call]
    peer_identification = waiting.to(
        client, cond="version_supported and addresses_usable"
    ) | waiting.to(failed)
    peer_disconnect = waiting.to(peer, cond="addresses_usable and can_listen") | waiting.to(failed)

    timeout = (
        connecting_mediator.to(failed)
        | advertising.to(failed)
        | waiting.to(failed)
        | backing_off.to(failed)
    )
    lost = connecting_mediator.to(failed) | advertising.to(failed) | waiting.to(failed)
    malformed = advertising.to(failed) | waiting.to(failed)


class Rendezvous(StateMachine):
    """Hole punching and candidate selection, after the introduction (either role).

    ``punching`` loops while attempts are due or fail, candidates open, are rejected (garbage,
    a handshake that does not verify, silence past the candidate deadline) or evicted (a bounded
    number per source address and in total; the silent ones first), until one candidate is
    confirmed (``established``) or the punch deadline passes (``failed``). The listener stays
    open until the commit.

    With a relay (issue 14, spec/relay.md), ``relay_due`` (the punch deadline with
    ``relay="auto"``, at once with ``"only"``) moves to ``relaying``: the :class:`RelayLeg`
    runs, and once spliced the relay connection is one more candidate. The Client drops every
    direct candidate when it moves (it decides the path: it never confirms a direct candidate
    from ``relaying``); the Peer keeps its answered ones, because a Client that confirmed one
    before its own deadline is on its way there. ``relayed_path``: the confirmed candidate is
    the relay connection (``relayed``, else ``established``: direct)."""

    punching = State(initial=True)
    relaying = State()
    established = State(final=True)
    relayed = State(final=True)
    failed = State(final=True)

    attempt_due = punching.to.itself()  # type: ignore[no-untyped-call]
    attempt_failed = punching.to.itself()  # type: ignore[no-untyped-call]
    direct_opened = punching.to.itself() | relaying.to.itself()  # type: ignore[no-untyped-call]
    candidate_rejected = punching.to.itself() | relaying.to.itself()  # type: ignore[no-untyped-call]
    candidate_evicted = punching.to.itself() | relaying.to.itself()  # type: ignore[no-untyped-call]
    listen_failed = (
        punching.to.itself(cond="can_go_on")  # type: ignore[no-untyped-call]
        | punching.to(failed)
        | relaying.to.itself()  # type: ignore[no-untyped-call]
    )
    relay_due = punching.to(relaying)
    relay_progress = relaying.to.itself()  # type: ignore[no-untyped-call]
    relay_spliced = relaying.to.itself()  # type: ignore[no-untyped-call]
    relay_failed = relaying.to(failed)
    # A coordinated pairing (spec/mediator.md section 4.3) keeps the Mediator connection while
    # punching: a Ping every second, its Pong; the Mediator may report the partner gone
    # (PARTNER_LOST: fail at once, no relay); anything else ending that connection (its close,
    # another AdvertiseAbort, bytes that break the protocol) only ends the coordination.
    # Leaving ``punching`` sends our last Status (DIRECT, RELAY or GAVE_UP) before the close.
    coordinate_due = punching.to.itself()  # type: ignore[no-untyped-call]
    mediator_pong = punching.to.itself()  # type: ignore[no-untyped-call]
    coordination_over = punching.to.itself()  # type: ignore[no-untyped-call]
    partner_lost = punching.to(failed)
    confirmed = (
        punching.to(established)
        | relaying.to(relayed, cond="relayed_path")
        | relaying.to(established)
    )
    timeout = punching.to(failed) | relaying.to(failed)


class ClientCandidate(StateMachine):
    """One direct connection on the Client (Noise initiator): HandshakeInit went out when it
    opened; a valid HandshakeResponse confirms it (the Client then sends its key-confirmation
    record and commits). Anything else rejects this candidate only."""

    awaiting_response = State(initial=True)
    confirmed = State(final=True)
    rejected = State(final=True)

    handshake_response = awaiting_response.to(confirmed, cond="response_valid") | (
        awaiting_response.to(rejected)
    )
    bad_message = awaiting_response.to(rejected)
    silent = awaiting_response.to(rejected)
    closed = awaiting_response.to(rejected)


class PeerCandidate(StateMachine):
    """One direct connection on the Peer (Noise responder): a valid HandshakeInit is answered
    with HandshakeResponse (``answered``); only the Client's first transport record, valid under
    the keys of that answer, confirms it. A relayed HandshakeInit can be answered but never
    confirmed: whoever relayed it cannot produce the record."""

    awaiting_init = State(initial=True)
    answered = State()
    confirmed = State(final=True)
    rejected = State(final=True)

    handshake_init = awaiting_init.to(answered, cond="init_valid") | awaiting_init.to(rejected)
    first_record = answered.to(confirmed, cond="record_valid") | answered.to(rejected)
    # Not from ``answered``: past the HandshakeInit the bytes are a transport record, and any
    # bytes are one (garbage is a ``first_record`` that does not decrypt).
    bad_message = awaiting_init.to(rejected)
    silent = awaiting_init.to(rejected) | answered.to(rejected)
    closed = awaiting_init.to(rejected) | answered.to(rejected)
