"""INSECURE LEGACY: the control flow of a protocol version 0 peer, as a declarative machine.

One class covers both roles, because a legacy peer learns its role only from the mediator:
``PeerDisconnect`` makes it the *Peer* (it listens on the given port and is challenged),
``PeerIdentification`` makes it the *Client* (it connects and challenges). The sans-IO
:class:`p2psc.legacy.peer.LegacyPeerCore` steps through the compiled table of this class; guards
are evaluated by the core by name. Any message, close or timeout not declared here is refused
by the table (``InvalidTransition``) and fails the handshake cleanly.
"""

from __future__ import annotations

from statemachine import State, StateMachine

__all__ = ["LegacyPeerMachine"]


class LegacyPeerMachine(StateMachine):
    """A legacy (version 0, INSECURE) peer: register with the mediator, then either listen and
    answer the Client's challenge (Peer role) or connect and challenge the Peer (Client role).

    Guards: ``decrypt_ok`` (the encrypted nonce we received opened to a decimal nonce),
    ``nonce_ok`` (the nonce sent back equals ours), ``can_retry`` (a refused connect to the Peer
    may be retried before the deadline).
    """

    idle = State(initial=True)
    connecting_mediator = State()
    awaiting_challenge = State()
    awaiting_pairing = State()
    listening = State()
    awaiting_peer_challenge = State()
    awaiting_peer_response = State()
    connecting_peer = State()
    awaiting_challenge_response = State()
    awaiting_acknowledgement = State()
    established = State(final=True)
    failed = State(final=True)

    start = idle.to(connecting_mediator)
    mediator_opened = connecting_mediator.to(awaiting_challenge)
    advertise_challenge = awaiting_challenge.to(awaiting_pairing, cond="decrypt_ok") | (
        awaiting_challenge.to(failed, unless="decrypt_ok")
    )
    advertise_abort = awaiting_challenge.to(failed) | awaiting_pairing.to(failed)
    advertise_retry = awaiting_challenge.to(failed) | awaiting_pairing.to(failed)

    # Peer role: the later registrant listens on the port it is given.
    peer_disconnect = awaiting_pairing.to(listening)
    peer_accepted = listening.to(awaiting_peer_challenge)
    peer_challenge = awaiting_peer_challenge.to(awaiting_peer_response, cond="decrypt_ok") | (
        awaiting_peer_challenge.to(failed, unless="decrypt_ok")
    )
    peer_response = awaiting_peer_response.to(established, cond="nonce_ok") | (
        awaiting_peer_response.to(failed, unless="nonce_ok")
    )

    # Client role: the earlier registrant connects to the Peer and challenges it.
    peer_identification = awaiting_pairing.to(connecting_peer)
    peer_connected = connecting_peer.to(awaiting_challenge_response)
    connect_refused = connecting_peer.to.itself(  # type: ignore[no-untyped-call]
        cond="can_retry"
    ) | connecting_peer.to(failed, unless="can_retry")
    retry_due = connecting_peer.to.itself()  # type: ignore[no-untyped-call]
    challenge_response = awaiting_challenge_response.to(
        awaiting_acknowledgement, cond="nonce_ok and decrypt_ok"
    ) | awaiting_challenge_response.to(failed)
    acknowledgement = awaiting_acknowledgement.to(established)

    # Anything that ends the attempt early: a deadline, a lost connection, a bad message.
    timeout = (
        connecting_mediator.to(failed)
        | awaiting_challenge.to(failed)
        | awaiting_pairing.to(failed)
        | listening.to(failed)
        | awaiting_peer_challenge.to(failed)
        | awaiting_peer_response.to(failed)
        | connecting_peer.to(failed)
        | awaiting_challenge_response.to(failed)
        | awaiting_acknowledgement.to(failed)
    )
    lost = (
        connecting_mediator.to(failed)
        | listening.to(failed)
        | awaiting_challenge.to(failed)
        | awaiting_pairing.to(failed)
        | awaiting_peer_challenge.to(failed)
        | awaiting_peer_response.to(failed)
        | awaiting_challenge_response.to(failed)
        | awaiting_acknowledgement.to(failed)
    )
    malformed = (
        awaiting_challenge.to(failed)
        | awaiting_pairing.to(failed)
        | awaiting_peer_challenge.to(failed)
        | awaiting_peer_response.to(failed)
        | awaiting_challenge_response.to(failed)
        | awaiting_acknowledgement.to(failed)
    )
