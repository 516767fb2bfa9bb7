"""A minimal, honest peer for the mediator side of the mediation model (a stand-in).

Why it exists: the mediation model checks the *mediator's* properties (mutual intent, the
PeerDisconnect-before-PeerIdentification order, no registry leaks) against every interleaving;
those need peers that speak the mediator handshake and nothing more. When the real
:class:`p2psc.core.peer.PeerCore` is available the model drives it instead (see
:mod:`models.mediation_model`); this stand-in keeps the mediator checks runnable without it and
is deliberately tiny: Advertise, answer the challenge with the symbolic crypto, then either
listen-and-close (PeerDisconnect: we are the Peer) or close (PeerIdentification: the Client).

Snapshot: ``(phase, outcome)``; phases ``idle, connecting, advertised, registered, done``.
Outcomes are reported as actions: :class:`Introduced` on success, :class:`Failed` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2psc import wire
from p2psc.core.io import (
    Action,
    Close,
    Closed,
    Connect,
    Event,
    Failed,
    Listen,
    Opened,
    Received,
    Send,
)
from p2psc.errors import ConnectError, CryptoError, ProtocolError
from p2psc.keys import Keypair, NonceCrypto, nonce_info

__all__ = ["MEDIATOR_CONN", "Introduced", "ScriptedPeer"]

MEDIATOR_CONN = 1
LISTENER_CONN = 2

Snapshot = tuple[str, str | None]


@dataclass(frozen=True, slots=True)
class Introduced:
    """The mediator introduced us: ``role`` is ``"peer"`` (PeerDisconnect) or ``"client"``;
    ``other`` is the other side's observed address."""

    role: str
    other: tuple[str, int]


class ScriptedPeer:
    """Pure step function over :data:`Snapshot` (one instance per modelled peer)."""

    def __init__(
        self,
        keypair: Keypair,
        their_key: bytes,
        mediator: tuple[str, int],
        crypto: NonceCrypto,
    ) -> None:
        self.keypair = keypair
        self.our_key = keypair.public_key.raw
        self.their_key = their_key
        self.mediator = mediator
        self.crypto = crypto

    initial: Snapshot = ("idle", None)

    def start(self, snap: Snapshot) -> tuple[Snapshot, tuple[Action | Introduced, ...]]:
        if snap[0] != "idle":
            return snap, ()
        return ("connecting", None), (Connect(MEDIATOR_CONN, self.mediator),)

    def step(
        self, snap: Snapshot, event: Event
    ) -> tuple[Snapshot, tuple[Action | Introduced, ...]]:
        phase = snap[0]
        if phase in ("idle", "done") or getattr(event, "conn", None) != MEDIATOR_CONN:
            return snap, ()
        if isinstance(event, Opened) and phase == "connecting":
            advertise = wire.Advertise(version=1, our_key=self.our_key, their_key=self.their_key)
            return ("advertised", None), (Send(MEDIATOR_CONN, advertise.encode()),)
        if isinstance(event, Closed):
            reason = event.error or "mediator closed the connection"
            return ("done", "failed"), (Failed(ConnectError(reason)),)
        if not isinstance(event, Received):
            return snap, ()
        try:
            message = wire.decode(event.data)
        except ProtocolError as error:
            return self._fail(error.reason)
        if isinstance(message, wire.AdvertiseChallenge) and phase == "advertised":
            info = nonce_info("AdvertiseChallenge", self.our_key, self.their_key)
            try:
                nonce = self.crypto.open(self.keypair, message.encrypted_nonce, info)
            except CryptoError as error:
                return self._fail(error.reason)
            response = wire.AdvertiseResponse(nonce=nonce)
            return ("registered", None), (Send(MEDIATOR_CONN, response.encode()),)
        if isinstance(message, wire.PeerDisconnect) and phase == "registered":
            port = message.peer.port
            return ("done", "peer"), (
                Listen(LISTENER_CONN, port),
                Close(MEDIATOR_CONN, "PeerDisconnect: listening"),
                Introduced("peer", message.client.to_tuple()),
            )
        if isinstance(message, wire.PeerIdentification) and phase == "registered":
            return ("done", "client"), (
                Close(MEDIATOR_CONN, "PeerIdentification"),
                Introduced("client", message.peer.to_tuple()),
            )
        if isinstance(message, wire.AdvertiseAbort | wire.AdvertiseRetry):
            return self._fail(f"{type(message).__name__}({message.code}): {message.text}")
        return self._fail(f"unexpected {type(message).__name__} in phase {phase}")

    @staticmethod
    def _fail(reason: str) -> tuple[Snapshot, tuple[Action | Introduced, ...]]:
        return ("done", "failed"), (Close(MEDIATOR_CONN, reason), Failed(ConnectError(reason)))
