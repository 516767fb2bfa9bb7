"""INSECURE LEGACY: sans-IO core of a protocol version 0 peer (what the C++ client does).

Why a separate core: a version 0 peer differs from a version 1 peer in more than its codec. It
learns its role from the mediator, the Peer *listens* on the port named in ``PeerDisconnect``
(after its mediator connection was closed) instead of punching, and the Client connects to the
``ip``/``port`` of ``PeerIdentification`` with a few retries. Keeping that behaviour here keeps
the version 1 core free of legacy branches. Control flow is the compiled
:class:`p2psc.legacy.machines.LegacyPeerMachine`; this module only evaluates its guards and
turns transitions into actions.

Connection names (:data:`p2psc.core.io.ConnId`): the core names the mediator connection
:data:`MEDIATOR`, its listener :data:`LISTENER` and its outgoing peer connection
:data:`PEER_OUT`; the adapter names connections accepted on the listener from
:data:`FIRST_ACCEPTED` upwards (both as in the version 1 core, so the shared
:class:`p2psc.core.peer_driver.AttemptDriver` runs this core too). The single handshake timer is
:data:`TIMER` (not a connection).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from p2psc.core import peer as v1_peer
from p2psc.core.attempt import failed_state, restore_error
from p2psc.core.io import (
    Action,
    Close,
    Closed,
    Connect,
    ConnId,
    Event,
    Failed,
    Listen,
    Opened,
    Send,
    SetTimer,
    TimerFired,
)
from p2psc.errors import (
    AdvertiseAborted,
    AdvertiseRetryExhausted,
    CryptoError,
    HandshakeTimeout,
    IdentityCheckFailed,
    InvalidTransition,
    MediatorClosed,
    MediatorUnreachable,
    P2pscError,
    PeerUnreachable,
    ProtocolError,
)
from p2psc.legacy import codec
from p2psc.legacy.crypto import (
    RSA_PKCS1V15,
    LegacyCrypto,
    NonceSource,
    RsaKeypair,
    RsaPublicKey,
    new_nonce,
    nonces_equal,
)
from p2psc.legacy.machines import LegacyPeerMachine
from p2psc.machines.compiler import compile_machine

__all__ = [
    "FIRST_ACCEPTED",
    "LISTENER",
    "MEDIATOR",
    "PEER_OUT",
    "TIMER",
    "Established",
    "LegacyPeerConfig",
    "LegacyPeerCore",
    "LegacyPeerSnapshot",
]

TIMER: ConnId = 0
MEDIATOR: ConnId = 1
LISTENER: ConnId = v1_peer.LISTENER
PEER_OUT: ConnId = 3
FIRST_ACCEPTED: ConnId = v1_peer.FIRST_ACCEPTED

_TABLE = compile_machine(LegacyPeerMachine)


@dataclass(frozen=True, slots=True)
class Established:
    """The handshake succeeded on ``conn``; ``leftover`` = application bytes already received.
    The adapter hands ``conn`` to the caller and closes everything else, but not before
    ``send_after`` (the core's clock): until then no application byte may be sent, so that a
    C++ Client, which parses each ``read()`` as exactly one object, reads PeerAcknowledgement
    alone (spec/legacy.md section 5)."""

    conn: ConnId
    role: str
    leftover: bytes = b""
    send_after: float = 0.0


LegacyAction = Action | Established


@dataclass(frozen=True)
class LegacyPeerConfig:
    """Who we are, whom we want, where the mediator is, and how long each step may take."""

    keypair: RsaKeypair
    their_key: RsaPublicKey
    mediator: tuple[str, int]
    step_timeout: float = 10.0
    pairing_timeout: float = 300.0
    connect_timeout: float = 5.0
    retry_interval: float = 0.05
    ack_grace: float = 0.25
    """As the Peer: seconds between PeerAcknowledgement and the first application byte."""
    crypto: LegacyCrypto = RSA_PKCS1V15
    nonce_source: NonceSource = secrets.token_bytes

    @property
    def timeout(self) -> float:
        """The longest an attempt can take with every step at its deadline (two steps with the
        mediator, the pairing, the connect, two steps with the other peer): the driver's outer
        bound (:class:`p2psc.core.peer_driver.AttemptDriver`) starts from it."""
        return self.pairing_timeout + self.connect_timeout + 4 * self.step_timeout


@dataclass(frozen=True, slots=True)
class LegacyPeerSnapshot:
    """Everything that distinguishes one core state from another (hashable)."""

    state: str
    role: str | None
    open_conns: frozenset[ConnId]
    active: ConnId | None
    buffered: bytes
    our_nonce: str | None
    local: tuple[str, int] | None
    peer_address: tuple[str, int] | None
    connect_deadline: float | None
    retry_pending: bool
    error: tuple[str, str] | None


class LegacyPeerCore:
    """One legacy pairing attempt, driven by events; see the module docstring."""

    def __init__(self, config: LegacyPeerConfig) -> None:
        self.config = config
        self.state = _TABLE.initial
        self.role: str | None = None
        self.open_conns: frozenset[ConnId] = frozenset()
        self.active: ConnId | None = None
        self._decoder = codec.LegacyDecoder()
        self.our_nonce: str | None = None
        self.local: tuple[str, int] | None = None
        self.peer_address: tuple[str, int] | None = None
        self.connect_deadline: float | None = None
        self.retry_pending = False
        self.error: P2pscError | None = None

    # --- snapshots ------------------------------------------------------------------------

    def snapshot(self) -> LegacyPeerSnapshot:
        return LegacyPeerSnapshot(
            state=self.state,
            role=self.role,
            open_conns=self.open_conns,
            active=self.active,
            buffered=self._decoder.snapshot(),
            our_nonce=self.our_nonce,
            local=self.local,
            peer_address=self.peer_address,
            connect_deadline=self.connect_deadline,
            retry_pending=self.retry_pending,
            error=None if self.error is None else (type(self.error).__name__, self.error.reason),
        )

    @classmethod
    def from_snapshot(
        cls, snapshot: LegacyPeerSnapshot, config: LegacyPeerConfig
    ) -> LegacyPeerCore:
        core = cls(config)
        core.state = snapshot.state
        core.role = snapshot.role
        core.open_conns = snapshot.open_conns
        core.active = snapshot.active
        core._decoder = codec.LegacyDecoder.from_snapshot(snapshot.buffered)
        core.our_nonce = snapshot.our_nonce
        core.local = snapshot.local
        core.peer_address = snapshot.peer_address
        core.connect_deadline = snapshot.connect_deadline
        core.retry_pending = snapshot.retry_pending
        if snapshot.error is not None:
            core.error = restore_error(*snapshot.error)
        return core

    @property
    def finished(self) -> bool:
        return _TABLE.is_final(self.state)

    # --- driving --------------------------------------------------------------------------

    def start(self, now: float) -> list[LegacyAction]:
        """Connect to the mediator."""
        self._step("start")
        return [
            Connect(MEDIATOR, self.config.mediator),
            SetTimer(TIMER, now + self.config.step_timeout),
        ]

    def handle(self, event: Event, now: float) -> list[LegacyAction]:
        """Feed one event; return the actions to execute, in order."""
        if self.finished:
            return [Close(event.conn)] if isinstance(event, Opened) else []
        try:
            return self._handle(event, now)
        except (ProtocolError, CryptoError) as error:
            return self._fail(error, "malformed")

    def _handle(self, event: Event, now: float) -> list[LegacyAction]:
        if isinstance(event, TimerFired):
            if event.conn != TIMER:
                return []
            if self.state == "connecting_peer" and self.retry_pending:
                self._step("retry_due")
                self.retry_pending = False
                deadline = self.connect_deadline if self.connect_deadline is not None else now
                return [Connect(PEER_OUT, self._peer()), SetTimer(TIMER, deadline)]
            return self._timeout()
        if isinstance(event, Opened):
            return self._opened(event, now)
        if isinstance(event, Closed):
            return self._closed(event, now)
        if event.conn != self.active:
            return []
        if self.state == "awaiting_acknowledgement":
            message, leftover = self._decoder.feed_last(event.data)
            if message is None:
                return []
            return self._message(message, now, leftover)
        actions: list[LegacyAction] = []
        for message in self._decoder.feed(event.data):
            actions += self._message(message, now, b"")
        return actions

    # --- events ---------------------------------------------------------------------------

    def _opened(self, event: Opened, now: float) -> list[LegacyAction]:
        if event.conn == MEDIATOR and self.state == "connecting_mediator":
            self._step("mediator_opened")
            self.open_conns |= {MEDIATOR}
            self.active = MEDIATOR
            self.local = event.local
            advertise = codec.Advertise(
                codec.LEGACY_VERSION,
                self.config.keypair.public_key.to_wire(),
                self.config.their_key.to_wire(),
            )
            return [
                Send(MEDIATOR, codec.encode(advertise)),
                SetTimer(TIMER, now + self.config.step_timeout),
            ]
        if event.conn == PEER_OUT and self.state == "connecting_peer":
            self._step("peer_connected")
            self.open_conns |= {PEER_OUT}
            self._switch(PEER_OUT)
            self.our_nonce = new_nonce(self.config.nonce_source)
            challenge = codec.PeerChallenge(
                self.config.crypto.encrypt(self.config.their_key, self.our_nonce)
            )
            return [
                Send(PEER_OUT, codec.encode(challenge)),
                SetTimer(TIMER, now + self.config.step_timeout),
            ]
        if event.conn >= FIRST_ACCEPTED and self.state == "listening":
            self._step("peer_accepted")
            self.open_conns = (self.open_conns - {LISTENER}) | {event.conn}
            self._switch(event.conn)
            return [
                Close(LISTENER, "accepted the Client"),
                SetTimer(TIMER, now + self.config.step_timeout),
            ]
        return [Close(event.conn, "not expected")]

    def _closed(self, event: Closed, now: float) -> list[LegacyAction]:
        if event.conn == PEER_OUT and self.state == "connecting_peer":
            deadline = self.connect_deadline if self.connect_deadline is not None else now
            can_retry = now + self.config.retry_interval < deadline
            self._step("connect_refused", {"can_retry": can_retry})
            if can_retry:
                self.retry_pending = True
                return [SetTimer(TIMER, now + self.config.retry_interval)]
            return self._finish_failed(
                PeerUnreachable(f"cannot connect to the Peer at {self._peer()}: {event.error}")
            )
        if event.conn == MEDIATOR and self.state == "connecting_mediator":
            self._step("lost")
            return self._finish_failed(MediatorUnreachable(f"mediator: {event.error}"))
        if event.conn == LISTENER and self.state == "listening":
            self.open_conns -= {LISTENER}
            self._step("lost")
            return self._finish_failed(
                PeerUnreachable(f"cannot listen for the Client: {event.error}")
            )
        if event.conn != self.active or event.conn not in self.open_conns:
            return []
        self.open_conns -= {event.conn}
        self._step("lost")
        error: P2pscError
        if event.conn == MEDIATOR:
            error = MediatorClosed("the mediator closed the connection before pairing us")
        else:
            error = IdentityCheckFailed("the other peer closed the connection during the handshake")
        return self._finish_failed(error)

    def _timeout(self) -> list[LegacyAction]:
        state = self.state
        self._step("timeout")
        if state == "connecting_mediator":
            return self._finish_failed(MediatorUnreachable("no connection to the mediator"))
        if state in ("listening", "connecting_peer"):
            return self._finish_failed(
                PeerUnreachable(f"no connection with the other peer ({state})")
            )
        if state == "awaiting_pairing":
            return self._finish_failed(
                HandshakeTimeout(
                    f"the mediator did not pair us within {self.config.pairing_timeout:g} s "
                    "(is the other peer registered, asking for our key?)"
                )
            )
        return self._finish_failed(
            HandshakeTimeout(
                f"legacy handshake step {state} did not finish within "
                f"{self.config.step_timeout:g} s"
            )
        )

    def _message(
        self, message: codec.LegacyMessage, now: float, leftover: bytes
    ) -> list[LegacyAction]:
        config = self.config
        if isinstance(message, codec.AdvertiseChallenge):
            nonce = self._try_decrypt(message.encrypted_nonce)
            self._step("advertise_challenge", {"decrypt_ok": nonce is not None})
            if nonce is None:
                return self._finish_failed(
                    IdentityCheckFailed("cannot decrypt the mediator's challenge with our key")
                )
            return [
                Send(MEDIATOR, codec.encode(codec.AdvertiseResponse(nonce))),
                SetTimer(TIMER, now + config.pairing_timeout),
            ]
        if isinstance(message, codec.AdvertiseAbort):
            self._step("advertise_abort")
            return self._finish_failed(AdvertiseAborted(f"mediator: {message.reason}"))
        if isinstance(message, codec.AdvertiseRetry):
            self._step("advertise_retry")
            return self._finish_failed(AdvertiseRetryExhausted(f"mediator: {message.reason}"))
        if isinstance(message, codec.PeerDisconnect):
            self._step("peer_disconnect")
            self.role = "peer"
            self.open_conns = (self.open_conns - {MEDIATOR}) | {LISTENER}
            self._switch(None)
            return [
                Close(MEDIATOR, "PeerDisconnect: listening for the Client"),
                Listen(LISTENER, message.port),
                SetTimer(TIMER, now + config.connect_timeout),
            ]
        if isinstance(message, codec.PeerIdentification):
            self._step("peer_identification")
            self.role = "client"
            self.peer_address = (message.ip, message.port)
            self.connect_deadline = now + config.connect_timeout
            self.open_conns -= {MEDIATOR}
            self._switch(None)
            return [
                Close(MEDIATOR, "PeerIdentification: connecting to the Peer"),
                Connect(PEER_OUT, self.peer_address),
                SetTimer(TIMER, self.connect_deadline),
            ]
        if isinstance(message, codec.PeerChallenge):
            nonce = self._try_decrypt(message.encrypted_nonce)
            self._step("peer_challenge", {"decrypt_ok": nonce is not None})
            if nonce is None:
                return self._finish_failed(
                    IdentityCheckFailed("cannot decrypt the Client's challenge with our key")
                )
            self.our_nonce = new_nonce(config.nonce_source)
            reply = codec.PeerChallengeResponse(
                config.crypto.encrypt(config.their_key, self.our_nonce), nonce
            )
            assert self.active is not None
            return [
                Send(self.active, codec.encode(reply)),
                SetTimer(TIMER, now + config.step_timeout),
            ]
        if isinstance(message, codec.PeerResponse):
            ok = self.our_nonce is not None and nonces_equal(
                message.decrypted_nonce, self.our_nonce
            )
            self._step("peer_response", {"nonce_ok": ok})
            if not ok:
                return self._finish_failed(
                    IdentityCheckFailed("the Client does not own the key we asked for")
                )
            conn = self.active
            assert conn is not None
            return [
                Send(conn, codec.encode(codec.PeerAcknowledgement())),
                SetTimer(TIMER, None),
                Established(conn, "peer", send_after=now + config.ack_grace),
            ]
        if isinstance(message, codec.PeerChallengeResponse):
            ok = self.our_nonce is not None and nonces_equal(
                message.decrypted_nonce, self.our_nonce
            )
            theirs = self._try_decrypt(message.encrypted_nonce) if ok else None
            self._step("challenge_response", {"nonce_ok": ok, "decrypt_ok": theirs is not None})
            if theirs is None:
                return self._finish_failed(
                    IdentityCheckFailed("the Peer does not own the key we asked for")
                )
            return [
                Send(PEER_OUT, codec.encode(codec.PeerResponse(theirs))),
                SetTimer(TIMER, now + config.step_timeout),
            ]
        if isinstance(message, codec.PeerAcknowledgement):
            self._step("acknowledgement")
            conn = self.active
            assert conn is not None
            return [SetTimer(TIMER, None), Established(conn, "client", leftover)]
        # A well-formed message that only a mediator sends (Advertise, AdvertiseResponse).
        raise InvalidTransition(LegacyPeerMachine.__name__, self.state, type(message).__name__)

    # --- helpers --------------------------------------------------------------------------

    def _step(self, event: str, guards: dict[str, bool] | None = None) -> None:
        values = guards or {}
        self.state = _TABLE.step(self.state, event, values.__getitem__).target

    def _switch(self, conn: ConnId | None) -> None:
        self.active = conn
        self._decoder = codec.LegacyDecoder()

    def _peer(self) -> tuple[str, int]:
        assert self.peer_address is not None
        return self.peer_address

    def _try_decrypt(self, encrypted: str) -> str | None:
        try:
            return self.config.crypto.decrypt(self.config.keypair, encrypted)
        except CryptoError:
            return None

    def _fail(self, error: P2pscError, event: str) -> list[LegacyAction]:
        if not self.finished:
            self.state = failed_state(_TABLE, self.state, event)
        return self._finish_failed(error)

    def _finish_failed(self, error: P2pscError) -> list[LegacyAction]:
        self.error = error
        actions: list[LegacyAction] = [
            Close(conn, error.reason) for conn in sorted(self.open_conns)
        ]
        self.open_conns = frozenset()
        self.active = None
        actions += [SetTimer(TIMER, None), Failed(error)]
        return actions
