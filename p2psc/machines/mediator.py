"""The Mediator's per-connection session, declared once as a python-statemachine class.

Why a class: it is the single source of truth for the mediator's control flow. The
:class:`~p2psc.core.mediator.MediatorCore` never instantiates it; it steps a compiled table
(:func:`p2psc.machines.compiler.compile_machine`) keeping only the state *name* per connection,
so a waiting registration costs a few hundred bytes instead of ~17 KB. ``p2psc diagrams`` renders
it into ``spec/diagrams/MediatorSession.md``, which ``spec/mediator.md`` embeds by reference.

Guards are evaluated by the core, by name (transitions are tried in declaration order):

- ``version_supported``: the Advertise carries protocol version 1.
- ``transport_allowed``: the connection is TLS, or the mediator does not require TLS.
- ``challenge_budget``: the sender's origin (address or IPv6 prefix) may still be sent an
  HPKE-sealed challenge (a token bucket; TLS connections paid for theirs at the handshake).
- ``self_pairing``: the Advertise names the sender's own key as the one it wants.
- ``key_usable``: a nonce could be sealed to the advertised key (HPKE rejects a few degenerate
  X25519 points; a key nobody can own fails the identity check at once).
- ``nonce_matches``: the AdvertiseResponse equals the nonce we sealed (constant-time compare).
- ``partner_waiting``: the key we were asked for is registered *and* wants us back.
- ``registry_full``: the global or per-address cap on waiting registrations is reached.
- ``duplicate``: the same (our_key, their_key) is already registered; the newer wins.
- ``ping_allowed``: a Ping arrived at least ``MIN_PING_GAP`` after this session's previous
  one (a conforming advertiser pings at most once a second; faster is a flood).
- ``confirms``: a Status frame from the Peer of a coordinated pairing says PUNCHING (the
  explicit confirmation of PeerDisconnect, spec/mediator.md section 4.3).
- ``reports_done``: a Status frame while coordinating says DIRECT, RELAY or GAVE_UP.
- ``coordinated``: both partners offered the COORDINATE capability (the pairing is coordinated).
"""

from __future__ import annotations

from statemachine import State, StateMachine

__all__ = ["MediatorSession"]


class MediatorSession(StateMachine):
    """One connection to the Mediator: verify the advertiser's key, register it, pair it.

    The earlier registrant of a pair becomes the *Client* (``confirming``), the later one the
    *Peer* (``disconnecting``). The Peer gets PeerDisconnect; only its clean close (EOF) makes
    the Client's session take ``partner_confirmed`` and send PeerIdentification. Every other
    way out is a close, with AdvertiseAbort/AdvertiseRetry first where the core can still send.

    A *coordinated* pairing (both offered COORDINATE, spec/mediator.md section 4.3) differs:
    the Peer confirms with Status(PUNCHING) instead of a close (a close is "the Peer is gone"),
    and both sessions stay open in ``coordinating`` while the peers punch, until each reports
    that it left the punch (``status [reports_done]``); a close, silence or violation before
    that tells the partner at once (``partner_lost``: AdvertiseAbort PARTNER_LOST).
    """

    awaiting_advertise = State(initial=True)
    challenged = State()
    waiting = State()
    disconnecting = State()
    confirming = State()
    coordinating = State()
    closed = State(final=True)

    # Admission: over the pending-connection limits the connection is refused at once.
    busy = awaiting_advertise.to(closed)

    # Over a pending limit, a newcomer evicts the oldest unverified connection (core/admission).
    evicted = awaiting_advertise.to(closed) | challenged.to(closed)

    advertise = (
        awaiting_advertise.to(closed, unless="version_supported")
        | awaiting_advertise.to(closed, unless="transport_allowed")
        | awaiting_advertise.to(closed, cond="self_pairing")
        | awaiting_advertise.to(closed, unless="challenge_budget")
        | awaiting_advertise.to(closed, unless="key_usable")
        | awaiting_advertise.to(challenged)
    )

    response = (
        challenged.to(closed, unless="nonce_matches")
        | challenged.to(disconnecting, cond="partner_waiting")
        | challenged.to(closed, cond="registry_full")
        | challenged.to(waiting, cond="duplicate")
        | challenged.to(waiting)
    )

    # Keepalive (spec/mediator.md section 4.1): a waiting advertiser's Ping is answered with a
    # Pong and moves its liveness deadline; a Ping that crossed PeerDisconnect (the Peer) or
    # arrives while the Client's Peer confirms is harmless and allowed. Pings faster than the
    # floor are a violation (they would only make the Mediator write).
    ping = (
        waiting.to.itself(cond="ping_allowed")  # type: ignore[no-untyped-call]
        | waiting.to(closed)
        | disconnecting.to.itself(cond="ping_allowed")  # type: ignore[no-untyped-call]
        | disconnecting.to(closed)
        | confirming.to.itself(cond="ping_allowed")  # type: ignore[no-untyped-call]
        | confirming.to(closed)
        | coordinating.to.itself(cond="ping_allowed")  # type: ignore[no-untyped-call]
        | coordinating.to(closed)
    )

    # Coordinated pairings (section 4.3): the Peer's Status(PUNCHING) is its confirmation; a
    # Status(DIRECT|RELAY|GAVE_UP) while coordinating ends that side's session cleanly. Any
    # other Status (a second PUNCHING, a done status before the confirmation, any Status in an
    # uncoordinated pairing) breaks the protocol.
    status = (
        disconnecting.to(coordinating, cond="confirms")
        | disconnecting.to(closed)
        | coordinating.to(closed, cond="reports_done")
        | coordinating.to(closed)
    )

    # Events caused by another session.
    replaced = waiting.to(closed)
    partner_arrived = waiting.to(confirming)
    partner_confirmed = confirming.to(coordinating, cond="coordinated") | confirming.to(closed)
    partner_lost = confirming.to(closed) | disconnecting.to(closed) | coordinating.to(closed)
    # The partner reported that it left the punch: its end is no longer news to us.
    partner_done = coordinating.to.itself()  # type: ignore[no-untyped-call]
    # A fleet's shared registry no longer holds the registration (expired, store restarted).
    registry_lost = waiting.to(closed)

    # The connection itself: a clean EOF, a reset/error, a deadline, bytes that break the
    # protocol, and the mediator shutting down.
    eof = (
        awaiting_advertise.to(closed)
        | challenged.to(closed)
        | waiting.to(closed)
        | disconnecting.to(closed)
        | confirming.to(closed)
        | coordinating.to(closed)
    )
    lost = (
        awaiting_advertise.to(closed)
        | challenged.to(closed)
        | waiting.to(closed)
        | disconnecting.to(closed)
        | confirming.to(closed)
        | coordinating.to(closed)
    )
    timeout = (
        awaiting_advertise.to(closed)
        | challenged.to(closed)
        | waiting.to(closed)
        | disconnecting.to(closed)
        | confirming.to(closed)
        | coordinating.to(closed)
    )
    bad_input = (
        awaiting_advertise.to(closed)
        | challenged.to(closed)
        | waiting.to(closed)
        | disconnecting.to(closed)
        | confirming.to(closed)
        | coordinating.to(closed)
    )
    shutdown = (
        awaiting_advertise.to(closed)
        | challenged.to(closed)
        | waiting.to(closed)
        | disconnecting.to(closed)
        | confirming.to(closed)
        | coordinating.to(closed)
    )
