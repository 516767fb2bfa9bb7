"""Sans-IO core of a version 1 peer: both roles of ``connect()``, from the Mediator to a channel.

Why one core for two roles: a peer learns whether it is the *Client* or the *Peer* only from the
Mediator's first pairing message. Control flow is composed of the compiled machines of
:mod:`p2psc.machines.handshake`: :class:`~p2psc.machines.handshake.Registration` until the
Mediator introduces us, then :class:`~p2psc.machines.handshake.Rendezvous` (punching and
candidate selection) with one :class:`~p2psc.machines.handshake.ClientCandidate` or
:class:`~p2psc.machines.handshake.PeerCandidate` per direct connection. This module only
evaluates guards and turns transitions into actions; it never touches a socket or a clock
(``now`` comes with every event) and draws nonces and Noise ephemerals from an injected source.

Connection and timer names (:data:`~p2psc.core.io.ConnId`): mediator attempt ``k`` is
``MEDIATOR_BASE + k``; our listener (either role) is :data:`LISTENER`; outgoing direct attempts are
numbered from :data:`PUNCH_BASE`; the adapter names connections accepted on the listener from
:data:`FIRST_ACCEPTED` upwards. Timers: :data:`TIMER` (the current step's deadline, never later
than the overall deadline), :data:`RETRY_TIMER` (AdvertiseRetry backoff),
:data:`KEEPALIVE_TIMER` (the next keepalive Ping while waiting for the partner),
:data:`CANDIDATE_TIMER` (the earliest candidate deadline) and ``PUNCH_TIMER_BASE + i`` (the
retry/attempt clock of direct target ``i``). The core remembers every deadline it set: a
:class:`~p2psc.core.io.TimerFired` that arrives early is answered by re-arming the same timer,
and one for a timer that is not (or no longer) set is ignored, so early or duplicate timer
events are harmless.

Hole punching (DESIGN.md section 7): both sides connect out from the local port of their
Mediator connection to every known address of the other side (observed, and local when given),
one attempt in flight per address, each attempt bounded by ``punch_attempt_timeout``, failed
attempts retried after ``punch_interval * punch_backoff**n`` (capped at ``punch_max_interval``)
until ``punch_timeout``. The attempt bound (4 s) outlasts TCP's own recovery of a simultaneous
open, whose lost SYN or SYN-ACK the kernel resends 1 s and 3 s after the first: dropping the
attempt earlier (it was 2 s) closed connections the other side already held as established,
one lost ACK from done (seen under 3% loss in the namespace tests). Both roles also listen on
that port, because a NAT that answers unsolicited SYNs with RST lets a connection form only
towards a side that listens.

The direct handshake is ``Noise_KK_25519_ChaChaPoly_SHA256`` (spec/protocol.md, "The direct
handshake"). The Client is the initiator: it sends the same HandshakeInit on every candidate and
commits to the first that answers with a HandshakeResponse completing the handshake, then sends
its key-confirmation record there. The Peer answers every valid HandshakeInit (with a fresh
ephemeral each) and commits only to the candidate whose first transport record is valid. The
prologue binds the protocol version, the Mediator's fresh pairing id and both keys, so nothing
from another pairing verifies. Strangers cannot evict the partner: candidates are bounded per
source address and in total, and when a bound is reached the oldest *silent* accepted candidate
is evicted (outgoing connections, which only we open, are never evicted); every candidate must
complete its step before ``candidate_timeout``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field
from typing import TypedDict, Unpack

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from p2psc import relay_wire as rw
from p2psc import wire
from p2psc.core.attempt import failed_state, restore_error
from p2psc.core.channel import HEADER_LEN, MIN_RECORD_CIPHERTEXT, SecureChannel
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
    MediatorSilent,
    MediatorUnreachable,
    P2pscError,
    PartnerLost,
    PeerUnreachable,
    ProtocolError,
    RelayRefused,
    RelayTimeout,
    RelayUnreachable,
    UnsupportedVersion,
    UnusableAddress,
)
from p2psc.keys import (
    HPKE,
    Keypair,
    NonceCrypto,
    NonceSource,
    PublicKey,
    system_nonces,
)
from p2psc.keys import nonce_info as _info
from p2psc.machines.compiler import MachineTable, compile_machine
from p2psc.machines.handshake import ClientCandidate, PeerCandidate, Registration, Rendezvous
from p2psc.machines.relay import RelayLeg
from p2psc.noise import HandshakeSnapshot, HandshakeState

__all__ = [
    "CANDIDATE_TIMER",
    "FIRST_ACCEPTED",
    "KEEPALIVE_TIMER",
    "LISTENER",
    "MEDIATOR_BASE",
    "PROLOGUE_LABEL",
    "PUNCH_BASE",
    "PUNCH_TIMER_BASE",
    "RETRY_TIMER",
    "SESSION_SECRET_INFO",
    "TIMER",
    "Candidate",
    "Established",
    "PeerAction",
    "PeerConfig",
    "PeerCore",
    "PeerOptions",
    "PeerSnapshot",
    "Slot",
    "address_usable",
    "advertised_candidates",
    "parse_host_port",
    "peer_config",
    "prologue",
    "session_secret",
    "take_frame",
    "target_order",
]

TIMER: ConnId = 0
RETRY_TIMER: ConnId = 1
LISTENER: ConnId = 2
CANDIDATE_TIMER: ConnId = 3
PUNCH_TIMER_BASE: ConnId = 4
KEEPALIVE_TIMER: ConnId = 15
MEDIATOR_BASE: ConnId = 16
PUNCH_BASE: ConnId = 64
FIRST_ACCEPTED: ConnId = 1 << 20
MAX_ADVERTISE_RETRIES = 32
MAX_TARGETS = 2 + wire.MAX_CANDIDATES
"""Direct targets: the observed address, the advertised local one, and the candidates."""
EPHEMERAL_SIZE = 32

PROLOGUE_LABEL = b"p2psc v1 Noise_KK prologue\x00"
"""First bytes of the Noise prologue (followed by version, pairing id, Client key, Peer key)."""
RELAYED_PROLOGUE_LABEL = b"p2psc v1 Noise_KK relayed prologue\x00"
"""The same for a handshake through a relay (spec/relay.md section 4): a handshake message of
one path never verifies on the other, so both sides agree on the path they ended on."""
RELAY_CONN: ConnId = 1 << 19
"""The connection to the relay (issue 14). Outgoing direct attempts never reach this number."""
RELAY_MODES = ("never", "auto", "only")
COORDINATE_PING = 1.0
"""Seconds between our Pings while a coordinated pairing punches (spec/mediator.md section
4.3): the Mediator takes twice that without one as our silence, and tells our partner."""
SESSION_SECRET_INFO = b"p2psc v1 session secret\x00"
"""HKDF ``info`` of the session secret derived from the Noise handshake hash."""

REGISTRATION_TABLE: MachineTable = compile_machine(Registration)
RENDEZVOUS_TABLE: MachineTable = compile_machine(Rendezvous)
RELAY_LEG_TABLE: MachineTable = compile_machine(RelayLeg)
CLIENT_CANDIDATE_TABLE: MachineTable = compile_machine(ClientCandidate)
PEER_CANDIDATE_TABLE: MachineTable = compile_machine(PeerCandidate)


def prologue(
    pairing_id: bytes, client_key: bytes, peer_key: bytes, *, relayed: bool = False
) -> bytes:
    """The Noise prologue both sides must agree on (spec/protocol.md): a message of another
    pairing, another pair of keys or another protocol version never verifies; nor one of the
    other path (``relayed``: :data:`RELAYED_PROLOGUE_LABEL`, spec/relay.md)."""
    label = RELAYED_PROLOGUE_LABEL if relayed else PROLOGUE_LABEL
    return label + bytes((wire.PROTOCOL_VERSION,)) + pairing_id + client_key + peer_key


def session_secret(handshake_hash: bytes) -> bytes:
    """32 bytes for applications, from the Noise handshake hash (channel binding): identical on
    both sides, unique per session, forward secret (the hash covers the ephemeral DH)."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=SESSION_SECRET_INFO)
    return hkdf.derive(handshake_hash)


@dataclass(frozen=True, slots=True)
class Established:
    """The handshake succeeded on ``conn``: it now belongs to the application.

    Every application byte on ``conn`` goes through ``channel`` (a
    :class:`~p2psc.core.channel.SecureChannel` past the handshake and the key confirmation).
    ``leftover`` holds raw bytes that arrived after the last handshake record and that the
    adapter must feed to ``channel`` before anything it reads later; bytes the adapter read
    from ``conn`` but has not yet handed to the core follow them. The core has already asked to
    close everything else."""

    conn: ConnId
    peer_key: PublicKey
    role: str
    session_secret: bytes
    channel: SecureChannel = field(compare=False, hash=False)
    leftover: bytes = b""
    handshake_hash: bytes = b""
    path: str = "direct"


PeerAction = Action | Established


@dataclass(frozen=True)
class PeerConfig:
    """Who we are, whom we want, where the Mediator is, and every deadline and bound.

    ``timeout`` bounds the whole attempt; every step deadline is clipped to it. See the module
    docstring for the hole punching parameters. ``candidate_timeout`` bounds each candidate's
    wait for its next handshake message; ``max_candidates`` bounds accepted candidates in total
    and ``max_candidates_per_source`` per source IP address. ``keepalive_interval`` (seconds,
    None: off) is how often a waiting peer pings the Mediator (spec/mediator.md section 4.1):
    below common NAT idle timeouts, so the binding of the Mediator connection stays, and an
    unanswered Ping fails the attempt with :class:`~p2psc.errors.MediatorSilent` after one more
    interval. ``timed_dial``: the Peer delays its first dials by its round trip to the Mediator
    (at most ``punch_max_interval``), so that they leave about when the Client's do
    (spec/protocol.md, "Punching schedule"). ``candidates``: our other local IP addresses (of
    both families) to advertise besides the Mediator connection's, with its port; the adapters
    fill None with the host's usable addresses (:mod:`p2psc.interfaces`), ``()`` sends none."""

    keypair: Keypair
    peer_key: PublicKey
    mediator: tuple[str, int]
    timeout: float = 30.0
    step_timeout: float = 10.0
    punch_timeout: float = 10.0
    punch_interval: float = 0.05
    punch_backoff: float = 2.0
    punch_max_interval: float = 1.0
    punch_attempt_timeout: float = 4.0
    advertise_retries: int = 3
    retry_backoff: float = 0.5
    candidate_timeout: float = 5.0
    max_candidates: int = 32
    max_candidates_per_source: int = 4
    send_local: bool = True
    crypto: NonceCrypto = HPKE
    nonce_source: NonceSource = system_nonces
    keepalive_interval: float | None = 15.0
    timed_dial: bool = True
    candidates: tuple[str, ...] | None = None
    relay: str = "never"
    relay_address: tuple[str, int] | None = None
    coordinate: bool = True
    """Offer the COORDINATE capability (spec/mediator.md section 4.3): when the Mediator echoes
    it, keep the Mediator connection while punching, so that a partner that dies after the
    introduction is reported at once (PartnerLost) instead of at the punch timeout."""

    def __post_init__(self) -> None:
        if self.relay not in RELAY_MODES:
            raise ValueError(f"relay must be one of {', '.join(RELAY_MODES)}, not {self.relay!r}")
        for host in self.candidates or ():
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise ValueError(f"candidates must be IP addresses, got {host!r}") from None
        interval = self.keepalive_interval
        if interval is not None and not (
            wire.MIN_KEEPALIVE_MS <= round(interval * 1000) <= wire.MAX_KEEPALIVE_MS
        ):
            raise ValueError("keepalive_interval must be None (off) or 1..3600 seconds")
        if not 0 <= self.advertise_retries <= MAX_ADVERTISE_RETRIES:
            raise ValueError(f"advertise_retries must be in 0..{MAX_ADVERTISE_RETRIES}")
        if self.punch_interval <= 0 or self.punch_backoff < 1 or self.punch_attempt_timeout <= 0:
            raise ValueError("punch_interval and punch_attempt_timeout > 0, punch_backoff >= 1")
        if self.max_candidates < 1 or self.max_candidates_per_source < 1:
            raise ValueError("max_candidates and max_candidates_per_source must be at least 1")
        if self.candidate_timeout <= 0 or self.timeout <= 0 or self.step_timeout <= 0:
            raise ValueError("timeout, step_timeout and candidate_timeout must be > 0")


@dataclass(frozen=True, slots=True)
class Slot:
    """One direct target: the attempt in flight (if any), failures so far, and whether a
    connection to it already formed (then it is not punched again)."""

    conn: ConnId | None = None
    failures: int = 0
    done: bool = False


@dataclass(frozen=True, slots=True)
class Candidate:
    """One direct connection under test. ``source`` is the remote IP of an accepted one (None
    for outgoing ones, which strangers cannot create), ``order`` its arrival rank (eviction takes
    the oldest silent one), ``handshake`` the Peer's completed responder state once answered."""

    state: str
    source: str | None
    order: int
    deadline: float
    handshake: HandshakeSnapshot | None = None


@dataclass(frozen=True, slots=True)
class PeerSnapshot:
    """Everything that distinguishes one core state from another (hashable)."""

    table: str
    state: str
    role: str | None
    deadline: float | None
    attempt: int
    mediator: ConnId | None
    mediator_loopback: bool
    local: tuple[str, int] | None
    open_conns: frozenset[ConnId]
    rx: tuple[tuple[ConnId, bytes], ...]
    targets: tuple[tuple[str, int], ...]
    slots: tuple[Slot, ...]
    next_conn: ConnId
    candidates: tuple[tuple[ConnId, Candidate], ...]
    next_order: int
    pairing_id: bytes
    initiator: HandshakeSnapshot | None
    init_frame: bytes
    timers: tuple[tuple[ConnId, float], ...]
    rejected: tuple[int, str]
    error: tuple[str, str, int | None] | None
    timing: tuple[float | None, float | None] = (None, None)
    """(when our Advertise went out, our measured round trip to the Mediator)."""
    keepalive: tuple[int, int | None, float | None, float | None] = (0, None, None, None)
    """(next Ping token, token of the Ping awaiting its Pong, when the Mediator last spoke,
    when our registration was answered)."""
    relay: tuple[str | None, bytes, HandshakeSnapshot | None, bytes] = (None, b"", None, b"")
    coordination: float | None = None
    """When a coordinated introduction arrived, while its Mediator connection is kept (None:
    no coordination, or it ended)."""


def take_frame(buf: bytes) -> tuple[bytes, wire.Message, bytes] | None:
    """Split the first whole frame off ``buf``: (frame, message, rest), or None if incomplete.

    Why not :meth:`wire.FrameDecoder.feed` alone: after the last handshake frame the stream
    belongs to the channel, so we must stop exactly at that frame's end and hand the rest over.
    The header is still validated by a FrameDecoder (same rules, same errors), as soon as the
    bytes that can be checked are in, so garbage is refused early and memory stays bounded.
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


def target_order(
    observed: wire.Address, local: wire.Address | None, candidates: tuple[wire.Address, ...]
) -> tuple[tuple[str, int], ...]:
    """The partner's addresses in the order we dial them (spec/protocol.md, "Candidates"):
    the observed address (the one that crosses NATs), the advertised local address (same NAT),
    then the candidates of the observed address's family, then those of the other family, each
    group in the partner's order; duplicates once; at most MAX_TARGETS."""
    family = observed.family
    ordered = [observed, *([local] if local is not None else [])]
    ordered += [c for c in candidates if c.family == family]
    ordered += [c for c in candidates if c.family != family]
    targets: list[tuple[str, int]] = []
    for address in ordered:
        if address.to_tuple() not in targets:
            targets.append(address.to_tuple())
    return tuple(targets[:MAX_TARGETS])


def advertised_candidates(hosts: tuple[str, ...], local: tuple[str, int]) -> list[wire.Address]:
    """Our candidates as advertised: each usable address of ``hosts`` (any family) with the
    port of the Mediator connection, except that connection's own address; not loopback,
    link-local (no scope can be carried), unspecified or multicast; at most MAX_CANDIDATES."""
    out: list[wire.Address] = []
    for host in hosts:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            continue
        if ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast:
            continue
        try:
            address = wire.Address(str(ip), local[1])
        except ProtocolError:
            continue
        if address.host != local[0] and address not in out:
            out.append(address)
    return out[: wire.MAX_CANDIDATES]


def address_usable(host: str, port: int, loopback_ok: bool) -> str | None:
    """Why ``host:port`` cannot be a partner's address (None when it can): unspecified,
    multicast or broadcast addresses and port 0 never can; loopback only when the Mediator
    itself is reached over loopback (else a Mediator could point us at our own host's services).
    IPv4-mapped IPv6 addresses are judged as the IPv4 address they map."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if not 0 < port < 65536:
        return "port 0"
    if ip.is_unspecified:
        return "unspecified address"
    if ip.is_multicast:
        return "multicast address"
    if isinstance(ip, ipaddress.IPv4Address) and ip == ipaddress.IPv4Address("255.255.255.255"):
        return "broadcast address"
    if ip.is_loopback and not loopback_ok:
        return "loopback address, but the Mediator is not on loopback"
    return None


def _is_loopback(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


class PeerOptions(TypedDict, total=False):
    """The optional fields of :class:`PeerConfig`, for typed ``**options`` (a test keeps the
    two in step)."""

    timeout: float
    step_timeout: float
    punch_timeout: float
    punch_interval: float
    punch_backoff: float
    punch_max_interval: float
    punch_attempt_timeout: float
    advertise_retries: int
    retry_backoff: float
    candidate_timeout: float
    max_candidates: int
    max_candidates_per_source: int
    send_local: bool
    crypto: NonceCrypto
    nonce_source: NonceSource
    keepalive_interval: float | None
    timed_dial: bool
    candidates: tuple[str, ...] | None
    relay: str
    relay_address: tuple[str, int] | str | None
    coordinate: bool


def peer_config(
    keypair: Keypair,
    peer_key: PublicKey | bytes | str,
    mediator: tuple[str, int] | str,
    **options: Unpack[PeerOptions],
) -> PeerConfig:
    """Build a :class:`PeerConfig` from what users have at hand: ``peer_key`` as a PublicKey,
    32 raw bytes or text (hex or PEM); ``mediator`` as ``(host, port)`` or ``"host:port"``
    (``"[v6]:port"``). ``options`` are the other :class:`PeerConfig` fields
    (:class:`PeerOptions`). Raises KeyFileError / ValueError / TypeError for unusable input."""
    if isinstance(peer_key, bytes):
        key = PublicKey.from_raw(peer_key)
    elif isinstance(peer_key, str):
        key = PublicKey.parse(peer_key)
    else:
        key = peer_key
    config = PeerConfig(keypair, key, parse_host_port(mediator), **options)  # type: ignore[arg-type]
    if isinstance(config.relay_address, str):
        config = dataclasses.replace(config, relay_address=parse_host_port(config.relay_address))
    return config


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


_COORDINATE: wire.Extensions = ((int(wire.ExtensionType.COORDINATE), b""),)
_STATUS_PUNCHING = wire.Status(wire.StatusCode.PUNCHING).encode()

_MEDIATOR_EVENTS: dict[type, str] = {
    wire.AdvertiseChallenge: "advertise_challenge",
    wire.AdvertiseRetry: "advertise_retry",
    wire.AdvertiseAbort: "advertise_abort",
    wire.PeerIdentification: "peer_identification",
    wire.PeerDisconnect: "peer_disconnect",
    wire.Pong: "pong",
}


def _abort_text(message: wire.AdvertiseAbort, waiting: bool) -> str:
    """What an AdvertiseAbort means to us, in words that claim only what it says: before the
    Mediator accepted our registration it is a refusal; after that (we were waiting) it ended
    the registration or the pairing, and a PEER_GONE text describes our partner, not us."""
    said = f"{_reason_name(message.code)}: {message.text}"
    if not waiting:
        return f"the Mediator refused our registration ({said})"
    if message.code == wire.Reason.PEER_GONE:
        return f"the Mediator paired us, then our partner went away ({said})"
    return f"the Mediator ended our accepted registration ({said})"


def _reason_name(code: int) -> str:
    try:
        return wire.Reason(code).name
    except ValueError:
        return f"reason {code}"


def _step(table: MachineTable, state: str, event: str, **guards: bool) -> str:
    return table.step(state, event, guards.__getitem__).target


class PeerCore:
    """One pairing attempt, driven by events; see the module docstring."""

    def __init__(self, config: PeerConfig) -> None:
        self.config = config
        self.table = REGISTRATION_TABLE
        self.state = REGISTRATION_TABLE.initial
        self.role: str | None = None
        self.deadline: float | None = None
        self.attempt = 0
        self.mediator: ConnId | None = None
        self.mediator_loopback = False
        self.local: tuple[str, int] | None = None
        self.open_conns: frozenset[ConnId] = frozenset()
        self.rx: dict[ConnId, bytes] = {}
        self.targets: tuple[tuple[str, int], ...] = ()
        self.slots: tuple[Slot, ...] = ()
        self.next_conn: ConnId = PUNCH_BASE
        self.candidates: dict[ConnId, Candidate] = {}
        self.next_order = 0
        self.pairing_id = b""
        self.initiator: HandshakeState | None = None
        self.init_frame = b""
        self.timers: dict[ConnId, float] = {}
        self.rejected: tuple[int, str] = (0, "")
        self.error: P2pscError | None = None
        self.ping_token = 0
        """The token of our next keepalive Ping."""
        self.ping_outstanding: int | None = None
        """The token of the Ping still waiting for its Pong."""
        self.heard: float | None = None
        """When the Mediator last sent us anything (for honest error texts)."""
        self.waiting_since: float | None = None
        """When we started waiting for the partner (our AdvertiseResponse went out)."""
        self.advertised_at: float | None = None
        """When our Advertise went out (the round trip is measured to the challenge)."""
        self.rtt: float | None = None
        """Our round trip to the Mediator: Advertise out, AdvertiseChallenge in."""
        self.relay_state: str | None = None
        """State of the :class:`~p2psc.machines.relay.RelayLeg` (None: no relay attempt)."""
        self.relay_rx = b""
        self.relay_initiator: HandshakeState | None = None
        self.relay_init_frame = b""
        self.coordinated: float | None = None
        """While a coordinated pairing keeps the Mediator connection: when we were introduced."""

    # --- snapshots ------------------------------------------------------------------------

    def snapshot(self) -> PeerSnapshot:
        return PeerSnapshot(
            table=self.table.name,
            state=self.state,
            role=self.role,
            deadline=self.deadline,
            attempt=self.attempt,
            mediator=self.mediator,
            mediator_loopback=self.mediator_loopback,
            local=self.local,
            open_conns=self.open_conns,
            rx=tuple(sorted(self.rx.items())),
            targets=self.targets,
            slots=self.slots,
            next_conn=self.next_conn,
            candidates=tuple(sorted(self.candidates.items())),
            next_order=self.next_order,
            pairing_id=self.pairing_id,
            initiator=None if self.initiator is None else self.initiator.snapshot(),
            init_frame=self.init_frame,
            timers=tuple(sorted(self.timers.items())),
            rejected=self.rejected,
            error=None
            if self.error is None
            else (type(self.error).__name__, self.error.reason, self.error.code),
            timing=(self.advertised_at, self.rtt),
            keepalive=(self.ping_token, self.ping_outstanding, self.heard, self.waiting_since),
            relay=(
                self.relay_state,
                self.relay_rx,
                None if self.relay_initiator is None else self.relay_initiator.snapshot(),
                self.relay_init_frame,
            ),
            coordination=self.coordinated,
        )

    @classmethod
    def from_snapshot(cls, snapshot: PeerSnapshot, config: PeerConfig) -> PeerCore:
        core = cls(config)
        rendezvous = snapshot.table == RENDEZVOUS_TABLE.name
        core.table = RENDEZVOUS_TABLE if rendezvous else REGISTRATION_TABLE
        core.state = snapshot.state
        core.role = snapshot.role
        core.deadline = snapshot.deadline
        core.attempt = snapshot.attempt
        core.mediator = snapshot.mediator
        core.mediator_loopback = snapshot.mediator_loopback
        core.local = snapshot.local
        core.open_conns = snapshot.open_conns
        core.rx = dict(snapshot.rx)
        core.targets = snapshot.targets
        core.slots = snapshot.slots
        core.next_conn = snapshot.next_conn
        core.candidates = dict(snapshot.candidates)
        core.next_order = snapshot.next_order
        core.pairing_id = snapshot.pairing_id
        if snapshot.initiator is not None:
            core.initiator = HandshakeState.from_snapshot(snapshot.initiator)
        core.init_frame = snapshot.init_frame
        core.timers = dict(snapshot.timers)
        core.rejected = snapshot.rejected
        core.advertised_at, core.rtt = snapshot.timing
        (core.ping_token, core.ping_outstanding, core.heard, core.waiting_since) = (
            snapshot.keepalive
        )
        if snapshot.error is not None:
            core.error = restore_error(*snapshot.error)
        core.relay_state, core.relay_rx, relay_initiator, core.relay_init_frame = snapshot.relay
        if relay_initiator is not None:
            core.relay_initiator = HandshakeState.from_snapshot(relay_initiator)
        core.coordinated = snapshot.coordination
        return core

    @property
    def finished(self) -> bool:
        """True once the attempt ended (Established or Failed was emitted)."""
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
        if conn == RELAY_CONN and conn not in self.candidates:
            return self._relay_bytes(conn, event.data, now)
        if conn in self.candidates:
            return self._candidate_bytes(conn, event.data, now)
        if conn == self.mediator:
            self.heard = now
            if self.coordinated is not None:
                return self._coordination_bytes(conn, self.rx.get(conn, b"") + event.data, now)
        return self._mediator_bytes(conn, self.rx.get(conn, b"") + event.data, now)

    # --- timers ---------------------------------------------------------------------------

    def _set_timer(self, timer: ConnId, deadline: float | None) -> SetTimer:
        if deadline is None:
            self.timers.pop(timer, None)
        else:
            self.timers[timer] = deadline
        return SetTimer(timer, deadline)

    def _timer(self, timer: ConnId, now: float) -> list[PeerAction]:
        due = self.timers.get(timer)
        if due is None:
            return []  # cancelled, replaced or already handled: a stale event
        if now < due:
            return [SetTimer(timer, due)]  # early: the deadline has not passed yet
        del self.timers[timer]
        if timer == TIMER and self.state == "punching" and self.config.relay == "auto":
            return self._start_relay(now)
        if timer == TIMER:
            return self._timeout()
        if timer == RETRY_TIMER:
            self._step("retry_due")
            self.attempt += 1
            return self._connect_mediator(now)
        if timer == CANDIDATE_TIMER:
            return self._silent_candidates(now)
        if timer == KEEPALIVE_TIMER and self.coordinated is not None:
            return self._coordinate_due(now)
        if timer == KEEPALIVE_TIMER:
            return self._keepalive_due(now)
        index = timer - PUNCH_TIMER_BASE
        slot = self.slots[index]
        if slot.conn is not None:  # the attempt took too long: drop it, retry later
            self._step("attempt_failed")
            self._forget(slot.conn)
            self._set_slot(index, Slot(None, slot.failures + 1))
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
            error = HandshakeTimeout(self._waiting_text(where))
        elif state == "backing_off":
            error = HandshakeTimeout("the deadline passed while waiting to retry the Mediator")
        elif state == "relaying":
            error = self._relay_timeout()
        else:
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
        return self._finish_failed(error)

    # --- the Mediator -----------------------------------------------------------------------

    def _connect_mediator(self, now: float) -> list[PeerAction]:
        conn = MEDIATOR_BASE + self.attempt
        self.mediator = conn
        return [
            Connect(conn, self.config.mediator),
            self._set_timer(TIMER, self._clip(now + self.config.step_timeout)),
        ]

    def _mediator_opened(self, event: Opened, now: float) -> list[PeerAction]:
        conn = event.conn
        self._step("mediator_opened")
        self.open_conns |= {conn}
        self.local = event.local
        self.mediator_loopback = _is_loopback(event.remote[0])
        local: wire.Address | None = None
        if self.config.send_local and event.local is not None:
            try:
                local = wire.Address.from_tuple(event.local)
            except ProtocolError:
                local = None
        candidates: list[wire.Address] = []
        if self.config.send_local and event.local is not None and not self.mediator_loopback:
            # (over loopback both peers are on this host: other addresses add nothing)
            candidates = advertised_candidates(self.config.candidates or (), event.local)
        advertise = wire.Advertise(
            wire.PROTOCOL_VERSION,
            self.config.keypair.public_key.raw,
            self.config.peer_key.raw,
            local,
            wire.candidates_extension(candidates) + (_COORDINATE if self.config.coordinate else ()),
        )
        self.advertised_at = now
        return [
            Send(conn, advertise.encode()),
            self._set_timer(TIMER, self._clip(now + self.config.step_timeout)),
        ]

    def _mediator_bytes(self, conn: ConnId, buf: bytes, now: float) -> list[PeerAction]:
        actions: list[PeerAction] = []
        while not self.finished and conn == self.mediator:
            taken = take_frame(buf)
            if taken is None:
                self.rx[conn] = buf
                return actions
            _, message, buf = taken
            self.rx[conn] = buf
            actions += self._mediator_message(conn, message, now)
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
            if self.advertised_at is not None:
                self.rtt = max(0.0, now - self.advertised_at)
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
            actions: list[PeerAction] = [
                Send(conn, wire.AdvertiseResponse(nonce).encode()),
                self._set_timer(TIMER, self._clip(None)),
            ]
            self.waiting_since = now
            if config.keepalive_interval is not None:
                self.ping_outstanding = None
                actions.append(self._set_timer(KEEPALIVE_TIMER, now + config.keepalive_interval))
            return actions
        if isinstance(message, wire.Pong):
            expected = self.ping_outstanding == message.token
            self._step(event, pong_expected=expected)
            if not expected:
                raise ProtocolError(
                    f"the Mediator sent Pong {message.token}, but the Ping awaiting an answer "
                    f"is {self.ping_outstanding}"
                )
            self.ping_outstanding = None
            return []
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
            self.timers.pop(KEEPALIVE_TIMER, None)
            return [
                SetTimer(KEEPALIVE_TIMER, None),
                Close(conn, "AdvertiseRetry: backing off"),
                self._set_timer(RETRY_TIMER, now + wait),
                self._set_timer(TIMER, self._clip(None)),
            ]
        if isinstance(message, wire.AdvertiseAbort):
            waiting = self.state == "waiting"
            self._step(event)
            return self._finish_failed(
                AdvertiseAborted(_abort_text(message, waiting), code=message.code)
            )
        if isinstance(message, wire.PeerIdentification):
            supported = message.version == wire.PROTOCOL_VERSION
            unusable = self._unusable(message.peer, message.peer_local, *message.candidates)
            self._step(event, version_supported=supported, addresses_usable=unusable is None)
            if not supported:
                return self._finish_failed(
                    UnsupportedVersion(
                        f"PeerIdentification names protocol version {message.version}"
                    )
                )
            if unusable is not None:
                return self._finish_failed(unusable)
            return self._introduced(conn, "client", message, now)
        assert isinstance(message, wire.PeerDisconnect)
        unusable = self._unusable(message.client, message.client_local, *message.candidates)
        can_listen = self.local is not None  # the adapter reported the Mediator connection's port
        self._step(event, addresses_usable=unusable is None, can_listen=can_listen)
        if unusable is not None:
            return self._finish_failed(unusable)
        if not can_listen:
            return self._finish_failed(
                PeerUnreachable("the local port of the Mediator connection is unknown")
            )
        return self._introduced(conn, "peer", message, now)

    def _unusable(self, *addresses: wire.Address | None) -> P2pscError | None:
        for address in addresses:
            if address is None:
                continue
            why = address_usable(address.host, address.port, self.mediator_loopback)
            if why is not None:
                return UnusableAddress(
                    f"the Mediator named {address.host}:{address.port} as our partner's "
                    f"address: {why}"
                )
        return None

    def _introduced(
        self,
        conn: ConnId,
        role: str,
        message: wire.PeerIdentification | wire.PeerDisconnect,
        now: float,
    ) -> list[PeerAction]:
        """Registration is over: listen, drop the Mediator connection, start punching.

        The Peer listens *before* its close reaches the Mediator (the close is its confirmation
        that it listens: spec/mediator.md, the ordering guarantee)."""
        config = self.config
        self.role = role
        self.pairing_id = message.pairing_id
        self.table, self.state = RENDEZVOUS_TABLE, RENDEZVOUS_TABLE.initial
        actions: list[PeerAction] = []
        if self.local is not None:  # without it the Client connects out only (unbound attempts)
            actions.append(Listen(LISTENER, self.local[1]))
            self.open_conns |= {LISTENER}
        if config.coordinate and wire.coordinated(message.extensions):
            # Coordinated (spec/mediator.md section 4.3): keep the Mediator connection; the
            # Peer confirms with Status(PUNCHING) (after Listen: the ordering guarantee).
            self.coordinated = now
            if role == "peer":
                actions.append(Send(conn, _STATUS_PUNCHING))
            actions.append(self._set_timer(KEEPALIVE_TIMER, now + COORDINATE_PING))
            self.ping_outstanding = None
        else:
            actions.append(Close(conn, f"{type(message).__name__}: punching"))
            if KEEPALIVE_TIMER in self.timers:
                actions.append(self._set_timer(KEEPALIVE_TIMER, None))
            self._forget(conn)
            self.mediator = None
        if isinstance(message, wire.PeerIdentification):
            ours, theirs = config.keypair.public_key.raw, config.peer_key.raw
            self.initiator = HandshakeState.initiator(
                config.keypair.to_private_raw(),
                theirs,
                self._prologue(ours, theirs),
                self._ephemeral(),
            )
            self.init_frame = wire.HandshakeInit(self.initiator.write_message(b"")).encode()
            return actions + self._start_punching(
                message.peer, message.peer_local, now, message.candidates
            )
        return actions + self._start_punching(
            message.client, message.client_local, now, message.candidates, message.dial_delay
        )

    # --- coordination (spec/mediator.md section 4.3) ---------------------------------------

    def _coordinate_due(self, now: float) -> list[PeerAction]:
        """Ping the Mediator while punching (it takes silence for our death). Unanswered Pings
        are not our concern: losing the Mediator only ends the coordination."""
        assert self.mediator is not None
        self._step("coordinate_due")
        token = self.ping_token
        self.ping_token = (token + 1) & 0xFFFFFFFF
        ping = wire.Ping(token, round(COORDINATE_PING * 1000))
        return [
            Send(self.mediator, ping.encode()),
            self._set_timer(KEEPALIVE_TIMER, now + COORDINATE_PING),
        ]

    def _coordination_bytes(self, conn: ConnId, buf: bytes, now: float) -> list[PeerAction]:
        """The Mediator spoke while we punch: Pongs, or an AdvertiseAbort. PARTNER_LOST fails
        the attempt at once; anything else (another reason, bytes that break the protocol)
        only ends the coordination: a Mediator can make us give up, never connect elsewhere."""
        while True:
            try:
                taken = take_frame(buf)
            except ProtocolError as error:
                return self._end_coordination(f"the Mediator broke the protocol: {error.reason}")
            if taken is None:
                self.rx[conn] = buf
                return []
            _, message, buf = taken
            if isinstance(message, wire.Pong):
                self._step("mediator_pong")
                continue
            if isinstance(message, wire.AdvertiseAbort):
                if message.code == wire.Reason.PARTNER_LOST:
                    return self._partner_lost(message, now)
                return self._end_coordination(
                    f"the Mediator ended it ({_reason_name(message.code)}: {message.text})"
                )
            return self._end_coordination(
                f"the Mediator sent {type(message).__name__}, which it must not while we punch"
            )

    def _end_coordination(self, why: str) -> list[PeerAction]:
        """The Mediator connection ended (or broke the protocol): punch on without it."""
        conn = self.mediator
        self._step("coordination_over")
        self.coordinated = None
        self.mediator = None
        actions: list[PeerAction] = [self._set_timer(KEEPALIVE_TIMER, None)]
        if conn is not None and conn in self.open_conns:
            self._forget(conn)
            actions.append(Close(conn, f"coordination over: {why}"))
        return actions

    def _leave_punch(self, status: wire.StatusCode) -> list[PeerAction]:
        """We leave the punch: our last Status to the Mediator, then its close."""
        conn = self.mediator
        if self.coordinated is None or conn is None or conn not in self.open_conns:
            return []
        self.coordinated = None
        self.mediator = None
        self._forget(conn)
        self.timers.pop(KEEPALIVE_TIMER, None)
        return [
            Send(conn, wire.Status(status).encode()),
            Close(conn, f"left the punch: {status.name}"),
            SetTimer(KEEPALIVE_TIMER, None),
        ]

    def _partner_lost(self, message: wire.AdvertiseAbort, now: float) -> list[PeerAction]:
        since = self.coordinated if self.coordinated is not None else now
        self._step("partner_lost")
        self.coordinated = None
        other = "Client" if self.role == "peer" else "Peer"
        return self._finish_failed(
            PartnerLost(
                f"the Mediator reports our {other} gone {1000 * (now - since):.0f} ms after our "
                f"introduction (of a {self.config.punch_timeout:g} s punch timeout): "
                f"PARTNER_LOST: {message.text}",
                code=message.code,
            )
        )

    # --- keepalive (spec/mediator.md section 4.1) -------------------------------------------

    def _keepalive_due(self, now: float) -> list[PeerAction]:
        """Time for the next Ping: the previous one must have been answered, else the Mediator
        connection is dead (the Mediator, or a NAT binding on the way, is gone)."""
        interval = self.config.keepalive_interval
        assert interval is not None and self.mediator is not None
        answered = self.ping_outstanding is None
        self._step("keepalive_due", mediator_answered=answered)
        if not answered:
            host, port = self.config.mediator
            silent = now - (self.heard if self.heard is not None else now)
            return self._finish_failed(
                MediatorSilent(
                    f"no answer from the mediator {host}:{port} for {silent:.1f} s: our "
                    f"keepalive Ping of {interval:g} s ago is unanswered (the mediator, or a "
                    "NAT binding on the way, is gone; whether our partner registered is unknown)"
                )
            )
        token = self.ping_token
        self.ping_token = (token + 1) & 0xFFFFFFFF
        self.ping_outstanding = token
        ping = wire.Ping(token, round(interval * 1000))
        return [
            Send(self.mediator, ping.encode()),
            self._set_timer(KEEPALIVE_TIMER, now + interval),
        ]

    def _waiting_text(self, where: str) -> str:
        """Why waiting ended at the deadline, saying only what we observed."""
        fingerprint = self.config.peer_key.fingerprint()
        assert self.deadline is not None
        since = self.waiting_since if self.waiting_since is not None else self.deadline
        waited = f"{self.deadline - since:.1f} s"
        if self.config.keepalive_interval is None:
            return (
                f"the {where} did not introduce peer {fingerprint} within {waited} (keepalive "
                "off: whether the mediator still held our registration is unknown)"
            )
        heard = (
            ""
            if self.heard is None
            else f"; it last answered {self.deadline - self.heard:.1f} s ago"
        )
        return (
            f"peer {fingerprint} did not register with the {where} within {waited} (the "
            f"mediator kept answering our keepalive{heard})"
        )

    # --- punching ---------------------------------------------------------------------------

    def _start_punching(
        self,
        observed: wire.Address,
        local: wire.Address | None,
        now: float,
        candidates: tuple[wire.Address, ...] = (),
        scheduled: float | None = None,
    ) -> list[PeerAction]:
        if self.config.relay == "only":
            return self._start_relay(now)
        self.targets = target_order(observed, local, candidates)
        self.slots = tuple(Slot() for _ in self.targets)
        actions: list[PeerAction] = [
            self._set_timer(TIMER, self._clip(now + self.config.punch_timeout))
        ]
        delay = self._dial_delay(scheduled)
        for index in range(len(self.targets)):
            if delay > 0:  # the first attempt is due when the Client hears of us
                actions.append(self._set_timer(PUNCH_TIMER_BASE + index, now + delay))
            else:
                actions += self._attempt(index, now)
        return actions

    def _dial_delay(self, scheduled: float | None = None) -> float:
        """How long the Peer waits before its first dials (the Client dials at once).

        The Client learns our address only after our close reached the Mediator and its
        PeerIdentification reached the Client: our one-way time to the Mediator plus the
        Client's. The Mediator, which measured both round trips, names that time in
        PeerDisconnect (DIAL_DELAY, ``scheduled``); without it we estimate it as our own round
        trip. Dialling earlier wastes the first SYN on a Client that does not listen yet: a
        public Client's host refuses it, and the refusal also closes our own NAT's mapping
        (issue 13). Bounded by ``punch_max_interval`` (a Mediator can delay us that much at
        most), and 0 for the Client, with ``timed_dial`` off, or without either figure."""
        config = self.config
        if self.role != "peer" or not config.timed_dial:
            return 0.0
        estimate = scheduled if scheduled is not None else self.rtt
        if estimate is None:
            return 0.0
        return min(estimate, config.punch_max_interval)

    def _attempt(self, index: int, now: float) -> list[PeerAction]:
        conn = self.next_conn
        self.next_conn += 1
        self._set_slot(index, Slot(conn, self.slots[index].failures))
        from_port = None if self.local is None else self.local[1]
        return [
            Connect(conn, self.targets[index], from_port),
            self._set_timer(PUNCH_TIMER_BASE + index, now + self.config.punch_attempt_timeout),
        ]

    def _retry_timer(self, index: int, now: float) -> SetTimer:
        config = self.config
        failures = self.slots[index].failures
        wait = min(
            config.punch_max_interval,
            config.punch_interval * config.punch_backoff ** min(failures - 1, 64),
        )
        return self._set_timer(PUNCH_TIMER_BASE + index, now + wait)

    # --- connections ----------------------------------------------------------------------

    def _opened(self, event: Opened, now: float) -> list[PeerAction]:
        conn = event.conn
        if conn == RELAY_CONN and self.relay_state == "connecting":
            return self._relay_opened(conn, now)
        if conn == self.mediator and self.state == "connecting_mediator":
            return self._mediator_opened(event, now)
        if self.table.name == RENDEZVOUS_TABLE.name:
            index = self._slot_of(conn)
            if index is not None or (conn >= FIRST_ACCEPTED and LISTENER in self.open_conns):
                self._step("direct_opened")
                actions: list[PeerAction] = []
                source: str | None = None
                if index is not None:  # this target is reached: no more attempts towards it
                    self._set_slot(index, Slot(None, self.slots[index].failures, True))
                    actions.append(self._set_timer(PUNCH_TIMER_BASE + index, None))
                else:
                    source = event.remote[0]
                return actions + self._add_candidate(conn, source, now)
        return [Close(conn, "not expected")]

    def _add_candidate(self, conn: ConnId, source: str | None, now: float) -> list[PeerAction]:
        """Keep ``conn`` as a candidate, within the bounds (module docstring); the Client sends
        its HandshakeInit at once (the same on every candidate: only the Peer can answer it)."""
        actions: list[PeerAction] = []
        if source is not None:
            config = self.config
            same = [c for c, cand in self.candidates.items() if cand.source == source]
            accepted = [c for c, cand in self.candidates.items() if cand.source is not None]
            for pool, bound, what in (
                (same, config.max_candidates_per_source, f"from {source}"),
                (accepted, config.max_candidates, "in total"),
            ):
                if len([c for c in pool if c in self.candidates]) < bound:
                    continue
                victim = self._silent_victim(pool)
                if victim is None:
                    return [Close(conn, f"too many candidate connections {what}")]
                actions += self._evict(victim, f"evicted: too many candidates {what}")
        self.open_conns |= {conn}
        initial = (
            CLIENT_CANDIDATE_TABLE if self.role == "client" else PEER_CANDIDATE_TABLE
        ).initial
        self.candidates[conn] = Candidate(
            initial, source, self.next_order, now + self.config.candidate_timeout
        )
        self.next_order += 1
        if self.role == "client":
            actions.append(
                Send(conn, self.relay_init_frame if conn == RELAY_CONN else self.init_frame)
            )
        return [*actions, self._candidate_timer()]

    def _silent_victim(self, pool: list[ConnId]) -> ConnId | None:
        """The accepted candidate in ``pool`` to evict: one that has not said anything valid
        yet, from an address the Mediator did not name for our partner if there is one (a
        stranger elsewhere cannot push out the partner's connection before its first message
        arrives), the oldest first."""
        initial = (
            CLIENT_CANDIDATE_TABLE if self.role == "client" else PEER_CANDIDATE_TABLE
        ).initial
        partner_hosts = {host for host, _ in self.targets}
        silent = [
            (cand.source in partner_hosts, cand.order, conn)
            for conn in pool
            if (cand := self.candidates.get(conn)) is not None
            and cand.source is not None
            and cand.state == initial
        ]
        return min(silent)[2] if silent else None

    def _evict(self, conn: ConnId, why: str) -> list[PeerAction]:
        table = CLIENT_CANDIDATE_TABLE if self.role == "client" else PEER_CANDIDATE_TABLE
        _step(table, self.candidates[conn].state, "silent")
        self._step("candidate_evicted")
        self._forget(conn)
        return [Close(conn, why)]

    def _candidate_timer(self) -> SetTimer:
        deadlines = [cand.deadline for cand in self.candidates.values()]
        return self._set_timer(CANDIDATE_TIMER, min(deadlines) if deadlines else None)

    def _silent_candidates(self, now: float) -> list[PeerAction]:
        actions: list[PeerAction] = []
        for conn, cand in sorted(self.candidates.items()):
            if cand.deadline <= now:
                actions += self._reject(conn, "silent", "silent past the candidate deadline")
        return [*actions, self._candidate_timer()]

    def _closed(self, event: Closed, now: float) -> list[PeerAction]:
        conn = event.conn
        why = event.error or "closed"
        if conn == RELAY_CONN and (conn in self.open_conns or self.relay_state == "connecting"):
            return self._relay_closed(conn, why)
        if conn == self.mediator and self.state == "connecting_mediator":
            self._step("lost")
            host, port = self.config.mediator
            return self._finish_failed(MediatorUnreachable(f"mediator {host}:{port}: {why}"))
        if self.table.name == RENDEZVOUS_TABLE.name:
            if conn == self.mediator and self.coordinated is not None:
                return self._end_coordination(f"the Mediator closed the connection ({why})")
            index = self._slot_of(conn)
            if index is not None:
                self._step("attempt_failed")
                self._forget(conn)
                self._set_slot(index, Slot(None, self.slots[index].failures + 1))
                return [self._retry_timer(index, now)]
            if conn in self.candidates:
                return self._reject(conn, "closed", f"closed ({why})", gone=True)
            if conn == LISTENER and conn in self.open_conns:
                self._forget(conn)
                # The Client's listener is an extra for RST-answering NATs: it goes on without
                # it. The Peer's is how the Client reaches it (the ordering guarantee).
                self._step("listen_failed", can_go_on=self.role == "client")
                if self.role == "client" or self.state == "relaying":
                    return []
                return self._finish_failed(PeerUnreachable(f"cannot listen for the Client: {why}"))
            return []
        if conn not in self.open_conns:
            return []
        partial = " in the middle of a frame" if self.rx.get(conn) else ""
        self._forget(conn)
        self._step("lost")
        return self._finish_failed(
            MediatorClosed(f"the Mediator closed the connection before pairing us{partial}")
        )

    # --- the direct handshake ---------------------------------------------------------------

    def _candidate_bytes(self, conn: ConnId, data: bytes, now: float) -> list[PeerAction]:
        """Bytes on a candidate: the next handshake message, checked; anything else rejects the
        candidate (and only it: anyone can reach a listening port)."""
        cand = self.candidates[conn]
        buf = self.rx.get(conn, b"") + data
        if cand.state == "answered":
            return self._first_record(conn, cand, buf, now)
        try:
            taken = take_frame(buf)
        except ProtocolError as error:
            return self._reject(conn, "bad_message", f"malformed: {error.reason}")
        if taken is None:
            self.rx[conn] = buf
            return []
        _, message, rest = taken
        if self.role == "client":
            if not isinstance(message, wire.HandshakeResponse):
                return self._reject(conn, "bad_message", f"sent {type(message).__name__}")
            return self._handshake_response(conn, message, rest)
        if not isinstance(message, wire.HandshakeInit):
            return self._reject(conn, "bad_message", f"sent {type(message).__name__}")
        return self._handshake_init(conn, cand, message, rest, now)

    def _handshake_response(
        self, conn: ConnId, message: wire.HandshakeResponse, rest: bytes
    ) -> list[PeerAction]:
        """The Client's check: the response completes the Noise handshake (only the owner of
        the Peer's key, answering this pairing's HandshakeInit, can produce it). Tried on a copy,
        so a forged response leaves our handshake state as it was."""
        initiator = self.relay_initiator if conn == RELAY_CONN else self.initiator
        assert initiator is not None
        handshake = initiator.copy()
        try:
            handshake.read_message(message.noise)
            valid = True
        except CryptoError:
            valid = False
        cand = self.candidates[conn]
        state = _step(
            CLIENT_CANDIDATE_TABLE, cand.state, "handshake_response", response_valid=valid
        )
        if not valid:
            return self._reject(
                conn,
                None,
                f"its HandshakeResponse does not verify: it does not own key "
                f"{self.config.peer_key.fingerprint()} or answers another pairing",
                identity=True,
            )
        self.candidates[conn] = Candidate(state, cand.source, cand.order, cand.deadline)
        send, recv = handshake.split()
        channel = SecureChannel(send, recv, relayed=conn == RELAY_CONN)
        confirmation = channel.seal(b"")
        actions = self._commit(conn)
        actions.append(Send(conn, confirmation))
        return actions + self._established(conn, channel, rest, handshake.handshake_hash)

    def _handshake_init(
        self,
        conn: ConnId,
        cand: Candidate,
        message: wire.HandshakeInit,
        rest: bytes,
        now: float,
    ) -> list[PeerAction]:
        """The Peer's answer to a HandshakeInit that verifies under this pairing's prologue
        (a fresh responder state and ephemeral per candidate). Answering commits to nothing."""
        config = self.config
        ours, client = config.keypair.public_key.raw, config.peer_key.raw
        handshake = HandshakeState.responder(
            config.keypair.to_private_raw(),
            client,
            self._prologue(client, ours, relayed=conn == RELAY_CONN),
            self._ephemeral(),
        )
        try:
            handshake.read_message(message.noise)
            valid = True
        except CryptoError:
            valid = False
        state = _step(PEER_CANDIDATE_TABLE, cand.state, "handshake_init", init_valid=valid)
        if not valid:
            return self._reject(
                conn,
                None,
                "its HandshakeInit does not verify: not the Client, or another pairing",
                identity=True,
            )
        reply = wire.HandshakeResponse(handshake.write_message(b"")).encode()
        deadline = now + config.candidate_timeout
        cand = Candidate(state, cand.source, cand.order, deadline, handshake.snapshot())
        self.candidates[conn] = cand
        self.rx[conn] = b""
        actions: list[PeerAction] = [Send(conn, reply), self._candidate_timer()]
        if rest:
            actions += self._first_record(conn, cand, rest, now)
        return actions

    def _first_record(
        self, conn: ConnId, cand: Candidate, buf: bytes, now: float
    ) -> list[PeerAction]:
        """The Peer's commit rule: the Client's first transport record (its key confirmation,
        an empty data record) decrypts under the keys of our answer on this candidate."""
        del now
        if len(buf) < HEADER_LEN:
            self.rx[conn] = buf
            return []
        # The confirmation is an empty DATA record: its length is known, so anything else is
        # refused from its two length bytes and at most one such record is ever buffered.
        if int.from_bytes(buf[:HEADER_LEN], "big") != MIN_RECORD_CIPHERTEXT:
            _step(PEER_CANDIDATE_TABLE, cand.state, "first_record", record_valid=False)
            return self._reject(
                conn, None, "its first record is not the Client's key confirmation", identity=True
            )
        end = HEADER_LEN + MIN_RECORD_CIPHERTEXT
        if len(buf) < end:
            self.rx[conn] = buf
            return []
        assert cand.handshake is not None
        handshake = HandshakeState.from_snapshot(cand.handshake)
        channel = SecureChannel(*handshake.split(), relayed=conn == RELAY_CONN)
        try:
            items = channel.feed(buf[:end])
            valid = all(isinstance(item, bytes) and not item for item in items)
        except P2pscError:
            valid = False
        state = _step(PEER_CANDIDATE_TABLE, cand.state, "first_record", record_valid=valid)
        if not valid:
            return self._reject(
                conn, None, "its first record is not the Client's key confirmation", identity=True
            )
        self.candidates[conn] = Candidate(state, cand.source, cand.order, cand.deadline)
        actions = self._commit(conn)
        return actions + self._established(conn, channel, buf[end:], handshake.handshake_hash)

    def _reject(
        self, conn: ConnId, event: str | None, why: str, identity: bool = False, gone: bool = False
    ) -> list[PeerAction]:
        """Drop one candidate. ``event`` is its machine's event (None when the caller already
        stepped it); identity failures are remembered for the final error message; ``gone``:
        the connection is already closed (nothing to close)."""
        cand = self.candidates.get(conn)
        if cand is not None and event is not None:
            table = CLIENT_CANDIDATE_TABLE if self.role == "client" else PEER_CANDIDATE_TABLE
            _step(table, cand.state, event)
        self._step("candidate_rejected")
        self._forget(conn)
        if identity:
            count, _ = self.rejected
            self.rejected = (count + 1, why)
        return [] if gone else [Close(conn, f"candidate rejected: {why}")]

    def _commit(self, keep: ConnId) -> list[PeerAction]:
        """Commit to ``keep``: close every other connection (the listener too) and cancel
        every timer."""
        actions: list[PeerAction] = self._leave_punch(wire.StatusCode.DIRECT)
        in_flight = frozenset(slot.conn for slot in self.slots if slot.conn is not None)
        for index, slot in enumerate(self.slots):
            self._set_slot(index, Slot(None, slot.failures, True))
        for conn in sorted((self.open_conns | in_flight) - {keep}):
            actions.append(Close(conn, "another direct connection won"))
        actions += [self._set_timer(timer, None) for timer in sorted(self.timers)]
        self._step("confirmed", relayed_path=keep == RELAY_CONN)
        self.open_conns = frozenset({keep})
        self.candidates = {}
        self.rx = {}
        return actions

    def _established(
        self, conn: ConnId, channel: SecureChannel, leftover: bytes, handshake_hash: bytes
    ) -> list[PeerAction]:
        assert self.role is not None
        self.open_conns = frozenset()
        return [
            Established(
                conn,
                self.config.peer_key,
                self.role,
                session_secret(handshake_hash),
                channel,
                bytes(leftover),
                handshake_hash,
                "relayed" if conn == RELAY_CONN else "direct",
            )
        ]

    # --- helpers --------------------------------------------------------------------------

    def _step(self, event: str, **guards: bool) -> None:
        self.state = _step(self.table, self.state, event, **guards)

    def _prologue(self, client_key: bytes, peer_key: bytes, *, relayed: bool = False) -> bytes:
        """This pairing's Noise prologue (:func:`prologue`) for the direct or relayed path."""
        return prologue(self.pairing_id, client_key, peer_key, relayed=relayed)

    def _clip(self, deadline: float | None) -> float:
        assert self.deadline is not None
        return self.deadline if deadline is None else min(deadline, self.deadline)

    def _ephemeral(self) -> bytes:
        key = self.config.nonce_source(EPHEMERAL_SIZE)
        if len(key) != EPHEMERAL_SIZE:
            raise CryptoError(f"nonce source returned {len(key)} bytes, not {EPHEMERAL_SIZE}")
        return bytes(key)

    def _try_open(self, sealed: bytes, info: bytes) -> bytes | None:
        try:
            return self.config.crypto.open(self.config.keypair, sealed, info)
        except CryptoError:
            return None

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
        self.candidates.pop(conn, None)
        self.rx.pop(conn, None)

    def _fail(self, error: P2pscError, event: str) -> list[PeerAction]:
        if not self.finished:
            self.state = failed_state(self.table, self.state, event)
        return self._finish_failed(error)

    def _finish_failed(self, error: P2pscError) -> list[PeerAction]:
        self.error = error
        actions: list[PeerAction] = self._leave_punch(wire.StatusCode.GAVE_UP)
        in_flight = frozenset(slot.conn for slot in self.slots if slot.conn is not None)
        conns = self.open_conns | in_flight
        actions += [Close(conn, error.reason) for conn in sorted(conns)]
        actions += [self._set_timer(timer, None) for timer in sorted(self.timers)]
        self.open_conns = frozenset()
        self.candidates = {}
        self.rx = {}
        self.mediator = None
        return [*actions, Failed(error)]

    # --- the relay (issue 14; spec/relay.md) ------------------------------------------------

    def _relay_address(self) -> tuple[str, int]:
        return self.config.relay_address or self.config.mediator

    def _start_relay(self, now: float) -> list[PeerAction]:
        """Move to the relay: stop dialling; the Client (who decides the path) and a peer in
        ``relay="only"`` mode also drop every direct candidate and the listener; connect to the
        relay. The deadline is the overall one from here."""
        del now
        self._step("relay_due")
        actions: list[PeerAction] = self._leave_punch(wire.StatusCode.RELAY)
        for index, slot in enumerate(self.slots):
            if slot.conn is not None:
                self.open_conns -= {slot.conn}
                actions.append(Close(slot.conn, "moving to the relay"))
            self._set_slot(index, Slot(None, slot.failures, True))
        punch_timers = range(PUNCH_TIMER_BASE, PUNCH_TIMER_BASE + MAX_TARGETS)
        actions += [self._set_timer(t, None) for t in sorted(self.timers) if t in punch_timers]
        if self.role == "client" or self.config.relay == "only":
            for conn in sorted(self.candidates):
                table = CLIENT_CANDIDATE_TABLE if self.role == "client" else PEER_CANDIDATE_TABLE
                if table.allows(self.candidates[conn].state, "silent"):
                    _step(table, self.candidates[conn].state, "silent")
                self._forget(conn)
                actions.append(Close(conn, "moving to the relay"))
            if LISTENER in self.open_conns:
                self._forget(LISTENER)
                actions.append(Close(LISTENER, "moving to the relay"))
            actions.append(self._set_timer(CANDIDATE_TIMER, None))
        if self.role == "client":
            config = self.config
            ours, theirs = config.keypair.public_key.raw, config.peer_key.raw
            self.relay_initiator = HandshakeState.initiator(
                config.keypair.to_private_raw(),
                theirs,
                self._prologue(ours, theirs, relayed=True),
                self._ephemeral(),
            )
            handshake = wire.HandshakeInit(self.relay_initiator.write_message(b""))
            self.relay_init_frame = handshake.encode()
        self.relay_state = RELAY_LEG_TABLE.initial
        self.relay_rx = b""
        return [
            *actions,
            Connect(RELAY_CONN, self._relay_address()),
            self._set_timer(TIMER, self._clip(None)),
        ]

    def _relay_step(self, event: str, **guards: bool) -> str:
        assert self.relay_state is not None
        self.relay_state = _step(RELAY_LEG_TABLE, self.relay_state, event, **guards)
        return self.relay_state

    def _relay_opened(self, conn: ConnId, now: float) -> list[PeerAction]:
        del now
        self._relay_step("opened")
        self._step("relay_progress")
        self.open_conns |= {conn}
        config = self.config
        request = rw.RelayRequest(
            wire.PROTOCOL_VERSION,
            config.keypair.public_key.raw,
            config.peer_key.raw,
            self.pairing_id,
        )
        return [Send(conn, request.encode())]

    def _relay_bytes(self, conn: ConnId, data: bytes, now: float) -> list[PeerAction]:
        """Relay messages until RelayConnected; the bytes after it are the partner's."""
        buf = self.relay_rx + data
        actions: list[PeerAction] = []
        while self.relay_state in ("requesting", "answered"):
            try:
                taken = rw.take_relay_frame(buf, mediator_ok=True)
            except ProtocolError as error:
                self._relay_step("bad_message")
                return actions + self._relay_failed(
                    RelayUnreachable(f"the relay at {self._relay_where()} sent {error.reason}")
                )
            if taken is None:
                self.relay_rx = buf
                return actions
            message, buf = taken
            self.relay_rx = b""
            actions += self._relay_message(conn, message, buf, now)
            if self.relay_state == "spliced":
                break
        return actions

    def _relay_where(self) -> str:
        host, port = self._relay_address()
        return f"{host}:{port}"

    def _relay_message(
        self, conn: ConnId, message: object, rest: bytes, now: float
    ) -> list[PeerAction]:
        config = self.config
        ours, theirs = config.keypair.public_key.raw, config.peer_key.raw
        if isinstance(message, rw.RelayChallenge) and self.relay_state == "requesting":
            info = rw.challenge_info(ours, theirs, self.pairing_id)
            nonce = self._try_open(message.encrypted_nonce, info)
            self._relay_step("challenge", challenge_opens=nonce is not None)
            if nonce is None:
                return self._relay_failed(
                    IdentityCheckFailed(
                        f"cannot open the relay's challenge ({self._relay_where()}) with our "
                        "key: it was not sealed to our key for this pairing"
                    )
                )
            self._step("relay_progress")
            return [Send(conn, rw.RelayResponse(nonce).encode())]
        if isinstance(message, rw.RelayConnected) and self.relay_state == "answered":
            self._relay_step("connected")
            self._step("relay_spliced")
            self.open_conns -= {conn}  # _add_candidate adds it back, as a candidate
            actions = self._add_candidate(conn, None, now)
            if rest:
                actions += self._candidate_bytes(conn, rest, now)
            return actions
        if isinstance(message, rw.RelayAbort) and self.relay_state in ("requesting", "answered"):
            self._relay_step("abort")
            return self._relay_failed(
                RelayRefused(
                    f"the relay at {self._relay_where()} refused the circuit: "
                    f"{rw.reason_name(message.code)}: {message.text}",
                    code=message.code,
                )
            )
        if isinstance(message, wire.AdvertiseAbort):
            self._relay_step("bad_message")
            return self._relay_failed(
                RelayUnreachable(
                    f"{self._relay_where()} does not relay (it answered like a Mediator: "
                    f"{_reason_name(message.code)}: {message.text})"
                )
            )
        self._relay_step("bad_message")
        return self._relay_failed(
            RelayUnreachable(
                f"the relay at {self._relay_where()} sent {type(message).__name__} "
                f"in state {self.relay_state}"
            )
        )

    def _relay_closed(self, conn: ConnId, why: str) -> list[PeerAction]:
        """The relay connection ended before a commit (during the leg, or as a candidate)."""
        if conn in self.candidates:
            table = CLIENT_CANDIDATE_TABLE if self.role == "client" else PEER_CANDIDATE_TABLE
            _step(table, self.candidates[conn].state, "closed")
            self._forget(conn)
            return self._relay_failed(
                RelayUnreachable(
                    f"the relay at {self._relay_where()} closed the circuit before the "
                    f"handshake completed ({why})"
                ),
                gone=True,
            )
        self._forget(conn)
        state = self.relay_state
        if self.relay_state not in ("spliced", "failed"):
            self._relay_step("lost")
        if state == "connecting":
            error: P2pscError = RelayUnreachable(
                f"no relay at {self._relay_where()}: {why} (and no direct connection formed)"
            )
        else:
            error = RelayUnreachable(f"the relay at {self._relay_where()} closed ({why})")
        return self._relay_failed(error, gone=True)

    def _relay_failed(self, error: P2pscError, gone: bool = False) -> list[PeerAction]:
        """The relay path failed. The attempt fails with ``error``, unless we are the Peer
        with an answered direct candidate: its Client may have committed to it (then the key
        confirmation is on its way), so we wait for it until the deadline."""
        actions: list[PeerAction] = []
        if not gone and RELAY_CONN in self.open_conns | set(self.candidates):
            self._forget(RELAY_CONN)
            actions.append(Close(RELAY_CONN, error.reason))
        self.candidates.pop(RELAY_CONN, None)
        if isinstance(error, RelayUnreachable) and self.config.relay == "auto":
            other = "Client" if self.role == "peer" else "Peer"
            targets = ", ".join(f"{h}:{p}" for h, p in self.targets)
            error = RelayUnreachable(
                f"no direct TCP connection with the {other} ({targets}) within "
                f"{self.config.punch_timeout:g} s, and no relayed one: {error.reason}"
            )
        answered = any(c.state == "answered" for c in self.candidates.values())
        if self.role == "peer" and answered:
            self.rejected = (self.rejected[0], f"{self.rejected[1]}; relay: {error.reason}")
            return actions
        self._step("relay_failed")
        return actions + self._finish_failed(error)

    def _relay_timeout(self) -> P2pscError:
        where = self._relay_where()
        state = self.relay_state
        if state is not None and RELAY_LEG_TABLE.allows(state, "timeout"):
            self._relay_step("timeout")
        if state == "connecting":
            return RelayUnreachable(f"no connection to the relay at {where} before the deadline")
        if state in ("requesting", "answered"):
            return RelayTimeout(
                f"peer {self.config.peer_key.fingerprint()} did not join us at the relay "
                f"{where} before the deadline"
            )
        count, why = self.rejected
        if count:
            return IdentityCheckFailed(
                f"no valid relayed handshake: {count} candidate(s) failed the check ({why})"
            )
        return RelayTimeout(f"the relayed handshake through {where} did not complete in time")
