"""Sans-IO core of a version 1 peer: both roles of ``connect()``, from the Mediator to a socket.

Why one core for two roles: a peer learns whether it is the *Client* or the *Peer* only from the
Mediator's first pairing message, so the first half (advertise, answer the Mediator's challenge,
wait, retry on AdvertiseRetry) is shared. Control flow is the compiled
:class:`~p2psc.machines.handshake.ClientHandshake` table, handed over to
:class:`~p2psc.machines.handshake.PeerHandshake` when ``PeerDisconnect`` arrives. This module
only evaluates guards and turns transitions into actions; it never touches a socket or a clock
(``now`` comes in with every event) and draws nonces from an injected source.

Connection and timer names (:data:`~p2psc.core.io.ConnId`): mediator attempt ``k`` is
``MEDIATOR_BASE + k``; our listener (either role) is :data:`LISTENER`; outgoing direct attempts are
numbered from :data:`PUNCH_BASE`; the adapter names connections accepted on the listener from
:data:`FIRST_ACCEPTED` upwards. Timers: :data:`TIMER` (the current step's deadline, never later
than the overall deadline), :data:`RETRY_TIMER` (AdvertiseRetry backoff) and
``PUNCH_TIMER_BASE + i`` (the retry/attempt clock of direct target ``i``).

Hole punching (DESIGN.md section 7): both sides connect out from the local port of their
Mediator connection to every known address of the other side (observed, and local when given),
one attempt in flight per address, each attempt bounded by ``punch_attempt_timeout``, failed
attempts retried after ``punch_interval * punch_backoff**n`` (capped at ``punch_max_interval``)
until ``punch_timeout``. Both roles also listen on that port (the Peer before it closes its
Mediator connection, the Client when PeerIdentification arrives), because a NAT that answers
unsolicited SYNs with RST lets a connection form only towards a side that listens. Every
direct connection that forms, outgoing or accepted, is a *candidate* (at most
``max_candidates``): the Client sends the same PeerChallenge on each and commits to the first
that answers with a valid PeerChallengeResponse; the Peer commits to the first candidate that
carries a valid PeerChallenge and answers only there. Both sides agree without extra messages,
and a stranger reaching a listener, or a host that happens to own a private address we try,
cannot break the pairing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from p2psc import errors, wire
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
    UnsupportedVersion,
)
from p2psc.keys import (
    HPKE,
    NONCE_SIZE,
    Keypair,
    NonceCrypto,
    NonceSource,
    PublicKey,
    nonces_equal,
    system_nonces,
)
from p2psc.keys import nonce_info as _info
from p2psc.machines.compiler import MachineTable, compile_machine
from p2psc.machines.handshake import ClientHandshake, PeerHandshake

__all__ = [
    "FIRST_ACCEPTED",
    "LISTENER",
    "MEDIATOR_BASE",
    "PUNCH_BASE",
    "PUNCH_TIMER_BASE",
    "RETRY_TIMER",
    "SESSION_SECRET_INFO",
    "TIMER",
    "Established",
    "PeerAction",
    "PeerConfig",
    "PeerCore",
    "PeerSnapshot",
    "Slot",
    "derive_session_secret",
    "parse_host_port",
    "peer_config",
    "take_frame",
    "x25519_static",
]

TIMER: ConnId = 0
RETRY_TIMER: ConnId = 1
LISTENER: ConnId = 2
PUNCH_TIMER_BASE: ConnId = 4
MEDIATOR_BASE: ConnId = 16
PUNCH_BASE: ConnId = 64
FIRST_ACCEPTED: ConnId = 1 << 20
MAX_ADVERTISE_RETRIES = 32
MAX_TARGETS = 2

SESSION_SECRET_INFO = b"p2psc v1 session secret\x00"
"""HKDF ``info`` prefix of the session secret (followed by the Client's and the Peer's key)."""

CLIENT_TABLE: MachineTable = compile_machine(ClientHandshake)
PEER_TABLE: MachineTable = compile_machine(PeerHandshake)


def x25519_static(keypair: Keypair, other: PublicKey) -> bytes:
    """Static-static X25519 between our identity key and theirs (the secret part of the
    session secret: both nonces travel in clear once opened, this does not)."""
    try:
        return keypair.private_key.exchange(other.to_x25519())
    except Exception as exc:  # a low-order point yields an all-zero secret and ValueError
        raise CryptoError(f"cannot agree a secret with this key: {exc}") from None


StaticDH = Callable[[Keypair, PublicKey], bytes]


@dataclass(frozen=True, slots=True)
class Established:
    """The handshake succeeded on ``conn``: it now belongs to the application.

    ``leftover`` holds bytes the other side sent after its last handshake frame and that
    arrived coalesced with it; the adapter must deliver them first. The adapter hands ``conn``
    to the caller; the core has already asked to close everything else."""

    conn: ConnId
    peer_key: PublicKey
    role: str
    session_secret: bytes
    leftover: bytes = b""


PeerAction = Action | Established


@dataclass(frozen=True)
class PeerConfig:
    """Who we are, whom we want, where the Mediator is, and every deadline and retry bound.

    ``timeout`` bounds the whole attempt; every step deadline is clipped to it. See the module
    docstring for the hole punching parameters."""

    keypair: Keypair
    peer_key: PublicKey
    mediator: tuple[str, int]
    timeout: float = 30.0
    step_timeout: float = 10.0
    punch_timeout: float = 10.0
    punch_interval: float = 0.05
    punch_backoff: float = 2.0
    punch_max_interval: float = 1.0
    punch_attempt_timeout: float = 2.0
    advertise_retries: int = 3
    retry_backoff: float = 0.5
    max_candidates: int = 8
    send_local: bool = True
    crypto: NonceCrypto = HPKE
    nonce_source: NonceSource = system_nonces
    static_dh: StaticDH | None = field(default=x25519_static)

    def __post_init__(self) -> None:
        if not 0 <= self.advertise_retries <= MAX_ADVERTISE_RETRIES:
            raise ValueError(f"advertise_retries must be in 0..{MAX_ADVERTISE_RETRIES}")
        if self.punch_interval <= 0 or self.punch_backoff < 1 or self.punch_attempt_timeout <= 0:
            raise ValueError("punch_interval and punch_attempt_timeout > 0, punch_backoff >= 1")
        if self.max_candidates < 1:
            raise ValueError("max_candidates must be at least 1")


@dataclass(frozen=True, slots=True)
class Slot:
    """One direct target: the attempt in flight (if any), failures so far, and whether a
    connection to it already formed (then it is not punched again)."""

    conn: ConnId | None = None
    failures: int = 0
    done: bool = False


@dataclass(frozen=True, slots=True)
class PeerSnapshot:
    """Everything that distinguishes one core state from another (hashable)."""

    table: str
    state: str
    role: str | None
    deadline: float | None
    attempt: int
    mediator: ConnId | None
    local: tuple[str, int] | None
    open_conns: frozenset[ConnId]
    rx: tuple[tuple[ConnId, bytes], ...]
    targets: tuple[tuple[str, int], ...]
    slots: tuple[Slot, ...]
    next_conn: ConnId
    candidates: frozenset[ConnId]
    active: ConnId | None
    our_nonce: bytes | None
    their_nonce: bytes | None
    transcript: bytes
    rejected: tuple[int, str]
    error: tuple[str, str, int | None] | None


def take_frame(buf: bytes) -> tuple[bytes, wire.Message, bytes] | None:
    """Split the first whole frame off ``buf``: (frame, message, rest), or None if incomplete.

    Why not :meth:`wire.FrameDecoder.feed` alone: after the last handshake frame the stream
    belongs to the application, so we must stop exactly at that frame's end and hand the rest
    over. The header is still validated by a FrameDecoder (same rules, same errors), as soon as
    the bytes that can be checked are in, so garbage is refused early and memory stays bounded.
    """
    if len(buf) < wire.HEADER_SIZE:
        if buf:
            wire.FrameDecoder().feed(buf)  # raises on bad magic
        return None
    wire.FrameDecoder().feed(buf[: wire.HEADER_SIZE])  # raises on a bad header
    end = wire.HEADER_SIZE + int.from_bytes(buf[4:6], "big")
    if len(buf) < end:
        return None
    frame = bytes(buf[:end])
    return frame, wire.decode(frame), bytes(buf[end:])


def derive_session_secret(
    client_key: PublicKey,
    peer_key: PublicKey,
    client_nonce: bytes,
    peer_nonce: bytes,
    transcript: bytes,
    shared: bytes = b"",
) -> bytes:
    """HKDF-SHA256: ikm = shared | client_nonce | peer_nonce, salt = SHA-256(transcript),
    info = SESSION_SECRET_INFO | client key | peer key; 32 bytes (spec/protocol.md)."""
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=hashlib.sha256(transcript).digest(),
        info=SESSION_SECRET_INFO + client_key.raw + peer_key.raw,
    )
    return hkdf.derive(shared + client_nonce + peer_nonce)


def peer_config(
    keypair: Keypair,
    peer_key: PublicKey | bytes | str,
    mediator: tuple[str, int] | str,
    **options: object,
) -> PeerConfig:
    """Build a :class:`PeerConfig` from what users have at hand: ``peer_key`` as a PublicKey,
    32 raw bytes or text (hex or PEM); ``mediator`` as ``(host, port)`` or ``"host:port"``
    (``"[v6]:port"``). Raises KeyFileError / ValueError for unusable input."""
    if isinstance(peer_key, bytes):
        key = PublicKey.from_raw(peer_key)
    elif isinstance(peer_key, str):
        key = PublicKey.parse(peer_key)
    else:
        key = peer_key
    return PeerConfig(keypair, key, parse_host_port(mediator), **options)  # type: ignore[arg-type]


def parse_host_port(address: tuple[str, int] | str) -> tuple[str, int]:
    """``(host, port)`` from a tuple, ``"host:port"`` or ``"[v6]:port"`` (host may be a name)."""
    if isinstance(address, tuple):
        host, port = address
    else:
        text = address.strip()
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
        else:
            host, _, port_text = text.rpartition(":")
        if not port_text.isdigit():
            raise ValueError(f"expected HOST:PORT, got {address!r}")
        port = int(port_text)
    if not host or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT with a port in 1..65535, got {address!r}")
    return str(host), int(port)


_MEDIATOR_EVENTS: dict[type, str] = {
    wire.AdvertiseChallenge: "advertise_challenge",
    wire.AdvertiseRetry: "advertise_retry",
    wire.AdvertiseAbort: "advertise_abort",
    wire.PeerIdentification: "peer_identification",
    wire.PeerDisconnect: "peer_disconnect",
}


def _reason_name(code: int) -> str:
    try:
        return wire.Reason(code).name
    except ValueError:
        return f"reason {code}"


class PeerCore:
    """One pairing attempt, driven by events; see the module docstring."""

    def __init__(self, config: PeerConfig) -> None:
        self.config = config
        self.table = CLIENT_TABLE
        self.state = CLIENT_TABLE.initial
        self.role: str | None = None
        self.deadline: float | None = None
        self.attempt = 0
        self.mediator: ConnId | None = None
        self.local: tuple[str, int] | None = None
        self.open_conns: frozenset[ConnId] = frozenset()
        self.rx: dict[ConnId, bytes] = {}
        self.targets: tuple[tuple[str, int], ...] = ()
        self.slots: tuple[Slot, ...] = ()
        self.next_conn: ConnId = PUNCH_BASE
        self.candidates: frozenset[ConnId] = frozenset()
        self.active: ConnId | None = None
        self.our_nonce: bytes | None = None
        self.their_nonce: bytes | None = None
        self.transcript = b""
        self.rejected: tuple[int, str] = (0, "")
        self.error: P2pscError | None = None

    # --- snapshots ------------------------------------------------------------------------

    def snapshot(self) -> PeerSnapshot:
        return PeerSnapshot(
            table=self.table.name,
            state=self.state,
            role=self.role,
            deadline=self.deadline,
            attempt=self.attempt,
            mediator=self.mediator,
            local=self.local,
            open_conns=self.open_conns,
            rx=tuple(sorted(self.rx.items())),
            targets=self.targets,
            slots=self.slots,
            next_conn=self.next_conn,
            candidates=self.candidates,
            active=self.active,
            our_nonce=self.our_nonce,
            their_nonce=self.their_nonce,
            transcript=self.transcript,
            rejected=self.rejected,
            error=None
            if self.error is None
            else (type(self.error).__name__, self.error.reason, self.error.code),
        )

    @classmethod
    def from_snapshot(cls, snapshot: PeerSnapshot, config: PeerConfig) -> PeerCore:
        core = cls(config)
        core.table = PEER_TABLE if snapshot.table == PEER_TABLE.name else CLIENT_TABLE
        core.state = snapshot.state
        core.role = snapshot.role
        core.deadline = snapshot.deadline
        core.attempt = snapshot.attempt
        core.mediator = snapshot.mediator
        core.local = snapshot.local
        core.open_conns = snapshot.open_conns
        core.rx = dict(snapshot.rx)
        core.targets = snapshot.targets
        core.slots = snapshot.slots
        core.next_conn = snapshot.next_conn
        core.candidates = snapshot.candidates
        core.active = snapshot.active
        core.our_nonce = snapshot.our_nonce
        core.their_nonce = snapshot.their_nonce
        core.transcript = snapshot.transcript
        core.rejected = snapshot.rejected
        if snapshot.error is not None:
            name, reason, code = snapshot.error
            kind = getattr(errors, name, P2pscError)
            error: P2pscError = kind.__new__(kind)
            P2pscError.__init__(error, reason, code=code)
            core.error = error
        return core

    @property
    def finished(self) -> bool:
        return self.table.is_final(self.state)

    # --- driving --------------------------------------------------------------------------

    def start(self, now: float) -> list[PeerAction]:
        """Begin: connect to the Mediator. ``now + config.timeout`` is the overall deadline."""
        self.deadline = now + self.config.timeout
        self._step("start")
        return self._connect_mediator(now)

    def handle(self, event: Event, now: float) -> list[PeerAction]:
        """Feed one event; return the actions to execute, in order."""
        if self.finished:
            return [Close(event.conn, "attempt is over")] if isinstance(event, Opened) else []
        try:
            return self._handle(event, now)
        except (ProtocolError, CryptoError) as error:
            return self._fail(error, "malformed")

    def _handle(self, event: Event, now: float) -> list[PeerAction]:
        if isinstance(event, TimerFired):
            return self._timer(event.conn, now)
        if isinstance(event, Opened):
            return self._opened(event, now)
        if isinstance(event, Closed):
            return self._closed(event, now)
        conn = event.conn
        if conn not in self.open_conns:
            return []
        if conn in self.candidates and conn != self.active:
            return self._candidate_bytes(conn, event.data, now)
        return self._frames(conn, self.rx.get(conn, b"") + event.data, now)

    # --- timers ---------------------------------------------------------------------------

    def _timer(self, timer: ConnId, now: float) -> list[PeerAction]:
        if timer == TIMER:
            return self._timeout()
        if timer == RETRY_TIMER:
            if self.state != "backing_off":
                return []
            self._step("retry_due")
            self.attempt += 1
            return self._connect_mediator(now)
        index = timer - PUNCH_TIMER_BASE
        if self.state != "punching" or not 0 <= index < len(self.slots):
            return []
        slot = self.slots[index]
        if slot.done:
            return []
        if slot.conn is not None:  # the attempt took too long: drop it, retry later
            self._step("attempt_failed")
            self._forget(slot.conn)
            failed = Slot(None, slot.failures + 1)
            self._set_slot(index, failed)
            return [Close(slot.conn, "direct attempt timed out"), self._retry_timer(index, now)]
        self._step("attempt_due")
        return self._attempt(index, now)

    def _timeout(self) -> list[PeerAction]:
        state = self.state
        self._step("timeout")
        where = f"mediator {self.config.mediator[0]}:{self.config.mediator[1]}"
        error: P2pscError
        if state == "connecting_mediator":
            error = MediatorUnreachable(f"no connection to the {where} before the deadline")
        elif state == "advertising":
            error = HandshakeTimeout(f"the {where} did not challenge our Advertise in time")
        elif state == "waiting":
            error = HandshakeTimeout(
                f"peer {self.config.peer_key.fingerprint()} did not register with the {where} "
                "before the deadline"
            )
        elif state == "backing_off":
            error = HandshakeTimeout("the deadline passed while waiting to retry the Mediator")
        elif state == "punching":
            count, why = self.rejected
            targets = ", ".join(f"{h}:{p}" for h, p in self.targets)
            if count:
                error = IdentityCheckFailed(
                    f"no valid direct connection: {count} candidate(s) failed the check ({why})"
                )
            else:
                other = "Client" if self.role == "peer" else "Peer"
                error = PeerUnreachable(
                    f"no direct TCP connection with the {other} ({targets}) before the deadline"
                )
        else:
            error = HandshakeTimeout(f"the peer handshake timed out in state {state}")
        return self._finish_failed(error)

    # --- connections ----------------------------------------------------------------------

    def _connect_mediator(self, now: float) -> list[PeerAction]:
        conn = MEDIATOR_BASE + self.attempt
        self.mediator = conn
        return [
            Connect(conn, self.config.mediator),
            SetTimer(TIMER, self._clip(now + self.config.step_timeout)),
        ]

    def _opened(self, event: Opened, now: float) -> list[PeerAction]:
        conn = event.conn
        if conn == self.mediator and self.state == "connecting_mediator":
            self._step("mediator_opened")
            self.open_conns |= {conn}
            self.local = event.local
            local: wire.Address | None = None
            if self.config.send_local and event.local is not None:
                try:
                    local = wire.Address.from_tuple(event.local)
                except ProtocolError:
                    local = None
            advertise = wire.Advertise(
                wire.PROTOCOL_VERSION,
                self.config.keypair.public_key.raw,
                self.config.peer_key.raw,
                local,
            )
            return [
                Send(conn, advertise.encode()),
                SetTimer(TIMER, self._clip(now + self.config.step_timeout)),
            ]
        if self.state == "punching":
            index = self._slot_of(conn)
            if index is not None or (conn >= FIRST_ACCEPTED and LISTENER in self.open_conns):
                self._step("direct_opened")
                self.open_conns |= {conn}
                actions: list[PeerAction] = []
                if index is not None:  # this target is reached: no more attempts towards it
                    self._set_slot(index, Slot(None, self.slots[index].failures, True))
                    actions.append(SetTimer(PUNCH_TIMER_BASE + index, None))
                return actions + self._add_candidate(conn)
        return [Close(conn, "not expected")]

    def _add_candidate(self, conn: ConnId) -> list[PeerAction]:
        """Keep ``conn`` as a candidate; the Client challenges it at once (the same
        PeerChallenge on every candidate: only the real Peer can answer it)."""
        if len(self.candidates) >= self.config.max_candidates:
            self._forget(conn)
            return [Close(conn, "too many candidate connections")]
        self.candidates |= {conn}
        if self.role == "client":
            return [Send(conn, self.transcript)]  # before commit: exactly our PeerChallenge
        return []

    def _closed(self, event: Closed, now: float) -> list[PeerAction]:
        conn = event.conn
        why = event.error or "closed"
        if conn == self.mediator and self.state == "connecting_mediator":
            self._step("lost")
            host, port = self.config.mediator
            return self._finish_failed(MediatorUnreachable(f"mediator {host}:{port}: {why}"))
        if self.state == "punching":
            index = self._slot_of(conn)
            if index is not None:
                self._step("attempt_failed")
                self._forget(conn)
                self._set_slot(index, Slot(None, self.slots[index].failures + 1))
                return [self._retry_timer(index, now)]
            if conn in self.candidates:
                self._forget(conn)
                self._step("candidate_rejected")
                return []
            if conn == LISTENER and conn in self.open_conns:
                self._forget(conn)
                if self.role == "client":  # an extra for RST-answering NATs: go on without it
                    self._step("listen_failed")
                    return []
                self._step("lost")
                return self._finish_failed(PeerUnreachable(f"cannot listen for the Client: {why}"))
        if conn not in self.open_conns:
            return []
        partial = " in the middle of a frame" if self.rx.get(conn) else ""
        self._forget(conn)
        state = self.state
        self._step("lost")
        error: P2pscError
        if conn == self.mediator:
            error = MediatorClosed(f"the Mediator closed the connection before pairing us{partial}")
        elif state == "confirming":
            error = IdentityCheckFailed(
                f"the Peer closed the direct connection during the handshake{partial}"
            )
        else:
            error = IdentityCheckFailed(
                f"the Client closed the direct connection before answering our challenge{partial}"
            )
        return self._finish_failed(error)

    # --- frames ---------------------------------------------------------------------------

    def _frames(self, conn: ConnId, buf: bytes, now: float) -> list[PeerAction]:
        actions: list[PeerAction] = []
        while not self.finished and conn in self.open_conns:
            taken = take_frame(buf)
            if taken is None:
                self.rx[conn] = buf
                return actions
            frame, message, buf = taken
            self.rx[conn] = buf
            if conn == self.mediator:
                actions += self._mediator_message(conn, message, now)
            else:
                actions += self._direct_message(conn, frame, message, buf, now)
        return actions

    def _mediator_message(
        self, conn: ConnId, message: wire.Message, now: float
    ) -> list[PeerAction]:
        event = _MEDIATOR_EVENTS.get(type(message))
        if event is None:
            raise InvalidTransition(self.table.name, self.state, type(message).__name__)
        config = self.config
        ours, theirs = config.keypair.public_key.raw, config.peer_key.raw
        if isinstance(message, wire.AdvertiseChallenge):
            nonce = self._try_open(
                message.encrypted_nonce, _info("AdvertiseChallenge", ours, theirs)
            )
            self._step(event, challenge_opens=nonce is not None)
            if nonce is None:
                return self._finish_failed(
                    IdentityCheckFailed(
                        "cannot open the Mediator's challenge with our key: it was not sealed to "
                        "our key for this registration"
                    )
                )
            return [
                Send(conn, wire.AdvertiseResponse(nonce).encode()),
                SetTimer(TIMER, self._clip(None)),
            ]
        if isinstance(message, wire.AdvertiseRetry):
            wait = config.retry_backoff * (2**self.attempt)
            can_retry = self.attempt < config.advertise_retries and (now + wait < self._clip(None))
            self._step(event, can_retry=can_retry)
            text = f"{_reason_name(message.code)}: {message.text}"
            if not can_retry:
                return self._finish_failed(
                    AdvertiseRetryExhausted(
                        f"the Mediator asked us to retry later ({text}) after "
                        f"{self.attempt + 1} attempt(s)",
                        code=message.code,
                    )
                )
            self._forget(conn)
            self.mediator = None
            return [
                Close(conn, "AdvertiseRetry: backing off"),
                SetTimer(RETRY_TIMER, now + wait),
                SetTimer(TIMER, self._clip(None)),
            ]
        if isinstance(message, wire.AdvertiseAbort):
            self._step(event)
            return self._finish_failed(
                AdvertiseAborted(
                    f"the Mediator refused our registration: {_reason_name(message.code)}: "
                    f"{message.text}",
                    code=message.code,
                )
            )
        if isinstance(message, wire.PeerIdentification):
            supported = message.version == wire.PROTOCOL_VERSION
            self._step(event, version_supported=supported)
            if not supported:
                return self._finish_failed(
                    UnsupportedVersion(
                        f"PeerIdentification names protocol version {message.version}"
                    )
                )
            self.role = "client"
            actions: list[PeerAction] = []
            if self.local is not None:  # without it, connect out only (unbound attempts)
                actions.append(Listen(LISTENER, self.local[1]))
                self.open_conns |= {LISTENER}
            actions.append(Close(conn, "PeerIdentification: connecting to Peer"))
            self._forget(conn)
            self.mediator = None
            self.our_nonce = self._nonce()
            sealed = config.crypto.seal(
                config.peer_key, self.our_nonce, _info("PeerChallenge", theirs, ours)
            )
            self.transcript = wire.PeerChallenge(sealed).encode()
            return actions + self._start_punching(message.peer, message.peer_local, now)
        assert isinstance(message, wire.PeerDisconnect)
        self._step(event)  # ClientHandshake: waiting -> became_peer
        self.table, self.state = PEER_TABLE, "waiting"
        self._step(event)  # PeerHandshake: waiting -> punching
        self.role = "peer"
        if self.local is None:  # an adapter that did not report the local address
            return self._finish_failed(
                PeerUnreachable("the local port of the Mediator connection is unknown")
            )
        # Order matters: the listener exists before the Mediator sees our close (section 7).
        actions = [Listen(LISTENER, self.local[1]), Close(conn, "PeerDisconnect: listening")]
        self._forget(conn)
        self.mediator = None
        self.open_conns |= {LISTENER}
        return actions + self._start_punching(message.client, message.client_local, now)

    def _start_punching(
        self, observed: wire.Address, local: wire.Address | None, now: float
    ) -> list[PeerAction]:
        targets = [observed.to_tuple()]
        if local is not None and local.to_tuple() not in targets:
            targets.append(local.to_tuple())
        self.targets = tuple(targets[:MAX_TARGETS])
        self.slots = tuple(Slot() for _ in self.targets)
        actions: list[PeerAction] = [SetTimer(TIMER, self._clip(now + self.config.punch_timeout))]
        for index in range(len(self.targets)):
            actions += self._attempt(index, now)
        return actions

    def _attempt(self, index: int, now: float) -> list[PeerAction]:
        conn = self.next_conn
        self.next_conn += 1
        self._set_slot(index, Slot(conn, self.slots[index].failures))
        from_port = None if self.local is None else self.local[1]
        return [
            Connect(conn, self.targets[index], from_port),
            SetTimer(PUNCH_TIMER_BASE + index, now + self.config.punch_attempt_timeout),
        ]

    def _retry_timer(self, index: int, now: float) -> SetTimer:
        config = self.config
        failures = self.slots[index].failures
        wait = min(
            config.punch_max_interval,
            config.punch_interval * config.punch_backoff ** min(failures - 1, 64),
        )
        return SetTimer(PUNCH_TIMER_BASE + index, now + wait)

    def _stop_punching(self, keep: ConnId) -> list[PeerAction]:
        """Commit to ``keep``: close every other direct connection and cancel punch timers."""
        actions: list[PeerAction] = []
        in_flight = self._in_flight()
        for index, slot in enumerate(self.slots):
            actions.append(SetTimer(PUNCH_TIMER_BASE + index, None))
            self._set_slot(index, Slot(None, slot.failures, True))
        for conn in sorted((self.open_conns | in_flight) - {keep}):
            actions.append(Close(conn, "another direct connection won"))
        self.open_conns = frozenset({keep})
        self.candidates = frozenset()
        self.rx = {keep: self.rx.get(keep, b"")}
        self.active = keep
        return actions

    # --- the direct handshake ---------------------------------------------------------------

    def _candidate_bytes(self, conn: ConnId, data: bytes, now: float) -> list[PeerAction]:
        """Bytes on a candidate. Its first frame must prove the other key (a PeerChallenge that
        opens with ours, or for the Client a valid PeerChallengeResponse), else the candidate is
        dropped: anyone can reach a listening port."""
        buf = self.rx.get(conn, b"") + data
        try:
            taken = take_frame(buf)
        except ProtocolError as error:
            return self._reject(conn, f"malformed: {error.reason}", identity=False)
        if taken is None:
            self.rx[conn] = buf
            return []
        frame, message, rest = taken
        if self.role == "client":
            return self._candidate_response(conn, frame, message, rest, now)
        if not isinstance(message, wire.PeerChallenge):
            return self._reject(conn, f"sent {type(message).__name__} first", identity=False)
        config = self.config
        ours, client = config.keypair.public_key.raw, config.peer_key.raw
        nonce = self._try_open(message.encrypted_nonce, _info("PeerChallenge", ours, client))
        self._step("peer_challenge", challenge_opens=nonce is not None)
        if nonce is None:
            return self._reject(conn, "its PeerChallenge does not open with our key", True)
        actions = self._stop_punching(conn)
        self.their_nonce = nonce
        self.our_nonce = self._nonce()
        sealed = config.crypto.seal(
            config.peer_key, self.our_nonce, _info("PeerChallengeResponse", client, ours)
        )
        reply = wire.PeerChallengeResponse(sealed, nonce).encode()
        self.transcript = frame + reply
        actions += [Send(conn, reply), SetTimer(TIMER, self._clip(now + config.step_timeout))]
        self.rx[conn] = b""
        return actions + self._frames(conn, rest, now)

    def _candidate_response(
        self, conn: ConnId, frame: bytes, message: wire.Message, rest: bytes, now: float
    ) -> list[PeerAction]:
        """The Client's check of a candidate's answer: our nonce echoed (constant time) and
        the Peer's own nonce opened with our key. The first candidate that passes wins."""
        if not isinstance(message, wire.PeerChallengeResponse):
            return self._reject(conn, f"sent {type(message).__name__} first", identity=False)
        config = self.config
        ours, theirs = config.keypair.public_key.raw, config.peer_key.raw
        assert self.our_nonce is not None
        echoed = nonces_equal(message.decrypted_nonce, self.our_nonce)
        nonce = None
        if echoed:
            nonce = self._try_open(
                message.encrypted_nonce, _info("PeerChallengeResponse", ours, theirs)
            )
        self._step("challenge_response", response_ok=nonce is not None)
        if nonce is None:
            why = "its sealed nonce does not open" if echoed else "it returned a wrong nonce"
            return self._reject(
                conn, f"does not own key {config.peer_key.fingerprint()}: {why}", True
            )
        actions = self._stop_punching(conn)
        self.their_nonce = nonce
        reply = wire.PeerResponse(nonce).encode()
        self.transcript += frame + reply
        actions += [Send(conn, reply), SetTimer(TIMER, self._clip(now + config.step_timeout))]
        self.rx[conn] = b""
        return actions + self._frames(conn, rest, now)

    def _reject(self, conn: ConnId, why: str, identity: bool) -> list[PeerAction]:
        if not identity:
            self._step("candidate_rejected")
        self._forget(conn)
        count, last = self.rejected
        self.rejected = (count + 1, why) if identity else (count, last)
        return [Close(conn, f"candidate rejected: {why}")]

    def _direct_message(
        self, conn: ConnId, frame: bytes, message: wire.Message, rest: bytes, now: float
    ) -> list[PeerAction]:
        config = self.config
        if isinstance(message, wire.PeerAcknowledgement) and self.state == "confirming":
            self._step("acknowledgement")
            self.transcript += frame
            return self._established(conn, "client", rest)
        if isinstance(message, wire.PeerResponse) and self.state == "answering":
            assert self.our_nonce is not None
            ok = nonces_equal(message.decrypted_nonce, self.our_nonce)
            self._step("peer_response", nonce_ok=ok)
            if not ok:
                return self._finish_failed(
                    IdentityCheckFailed(
                        f"the Client does not own key {config.peer_key.fingerprint()}: "
                        "it returned a wrong nonce"
                    )
                )
            ack = wire.PeerAcknowledgement().encode()
            self.transcript += frame + ack
            return [Send(conn, ack), *self._established(conn, "peer", rest)]
        raise InvalidTransition(self.table.name, self.state, type(message).__name__)

    def _established(self, conn: ConnId, role: str, leftover: bytes) -> list[PeerAction]:
        config = self.config
        ours, theirs = config.keypair.public_key, config.peer_key
        client, peer = (ours, theirs) if role == "client" else (theirs, ours)
        assert self.our_nonce is not None and self.their_nonce is not None
        client_nonce, peer_nonce = (
            (self.our_nonce, self.their_nonce)
            if role == "client"
            else (self.their_nonce, self.our_nonce)
        )
        shared = b"" if config.static_dh is None else config.static_dh(config.keypair, theirs)
        secret = derive_session_secret(
            client, peer, client_nonce, peer_nonce, self.transcript, shared
        )
        self.rx = {}
        self.open_conns = frozenset()
        return [
            SetTimer(TIMER, None),
            Established(conn, theirs, role, secret, bytes(leftover)),
        ]

    # --- helpers --------------------------------------------------------------------------

    def _step(self, event: str, **guards: bool) -> None:
        self.state = self.table.step(self.state, event, guards.__getitem__).target

    def _clip(self, deadline: float | None) -> float:
        assert self.deadline is not None
        return self.deadline if deadline is None else min(deadline, self.deadline)

    def _nonce(self) -> bytes:
        nonce = self.config.nonce_source(NONCE_SIZE)
        if len(nonce) != NONCE_SIZE:
            raise CryptoError(f"nonce source returned {len(nonce)} bytes, not {NONCE_SIZE}")
        return bytes(nonce)

    def _try_open(self, sealed: bytes, info: bytes) -> bytes | None:
        try:
            return self.config.crypto.open(self.config.keypair, sealed, info)
        except CryptoError:
            return None

    def _in_flight(self) -> frozenset[ConnId]:
        """Direct attempts still connecting (not open yet, but the adapter holds a socket)."""
        return frozenset(slot.conn for slot in self.slots if slot.conn is not None)

    def _slot_of(self, conn: ConnId) -> int | None:
        for index, slot in enumerate(self.slots):
            if slot.conn == conn:
                return index
        return None

    def _set_slot(self, index: int, slot: Slot) -> None:
        slots = list(self.slots)
        slots[index] = slot
        self.slots = tuple(slots)

    def _forget(self, conn: ConnId) -> None:
        self.open_conns -= {conn}
        self.candidates -= {conn}
        self.rx.pop(conn, None)

    def _fail(self, error: P2pscError, event: str) -> list[PeerAction]:
        if not self.finished:
            if self.table.allows(self.state, event):
                self._step(event)
            else:
                self.state = "failed"
        return self._finish_failed(error)

    def _finish_failed(self, error: P2pscError) -> list[PeerAction]:
        self.error = error
        conns = self.open_conns | self._in_flight()
        actions: list[PeerAction] = [Close(conn, error.reason) for conn in sorted(conns)]
        timers = [TIMER, RETRY_TIMER] + [PUNCH_TIMER_BASE + i for i in range(len(self.slots))]
        actions += [SetTimer(timer, None) for timer in timers]
        self.open_conns = frozenset()
        self.candidates = frozenset()
        self.rx = {}
        self.active = None
        self.mediator = None
        return [*actions, Failed(error)]
