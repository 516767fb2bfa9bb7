"""MediatorCore: every connection to the Mediator and the registry, as one sans-IO object.

Why one object for all sessions: pairing is an interaction *between* sessions (B's verified
registration moves A's session; A's disappearance must close B), so the core that owns all of
them can apply both sides of every step atomically, in one :meth:`MediatorCore.handle` call.
The adapter (:mod:`p2psc.aio.mediator`) only moves bytes, timers and closes.

Control flow is :class:`p2psc.machines.mediator.MediatorSession`, stepped through its compiled
table; per connection the core keeps one small ``__slots__`` object (state name, observed
address, the two keys, a nonce while challenged, the partner's connection id, a partial-frame
buffer and a deadline). Nothing here reads a clock or a random source: ``now`` comes with each
event and nonces come from the injected ``nonce_source``; the crypto is injected too, so the
explorer can run the real core with a symbolic crypto and rebuild it from :meth:`snapshot`.

See ``spec/mediator.md`` for the normative behaviour this implements.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType

from p2psc import wire
from p2psc.core.admission import Admission, AdmissionSnapshot, origin_of
from p2psc.core.io import (
    Close,
    Closed,
    ConnId,
    Event,
    Opened,
    Received,
    Send,
    SetTimer,
    TimerFired,
)
from p2psc.core.registry import InMemoryRegistry, Registry, RegistryKey
from p2psc.errors import InvalidTransition, P2pscError, ProtocolError, UnsupportedVersion
from p2psc.keys import (
    HPKE,
    NONCE_SIZE,
    SEALED_NONCE_SIZE,
    NonceCrypto,
    NonceSource,
    PublicKey,
    nonce_info,
    nonces_equal,
    system_nonces,
)
from p2psc.machines.compiler import GuardOracle, MachineTable, Transition, compile_machine
from p2psc.machines.mediator import MediatorSession

MediatorAction = Send | Close | SetTimer
"""What :class:`MediatorCore` emits: it never connects, listens, or fails as a whole (the
adapter executes exactly these three; spec/embedding.md section 3)."""

__all__ = [
    "MediatorAction",
    "MediatorConfig",
    "MediatorCore",
    "MediatorNote",
    "MediatorSnapshot",
    "NoteObserver",
    "SessionRow",
]

TABLE = compile_machine(MediatorSession)

_Steps = Mapping[tuple[str, str], tuple[tuple[tuple[tuple[str, bool], ...], Transition], ...]]


def _flatten(table: MachineTable) -> _Steps:
    """The compiled table as ``(state, event) -> ((guard literals, transition), ...)`` in
    declaration order: the same table in plain tuples, so :func:`_step` is one dict lookup and
    a loop (every event of every connection steps it)."""
    steps: dict[tuple[str, str], list[tuple[tuple[tuple[str, bool], ...], Transition]]] = {}
    for t in table.transitions:
        literals = tuple((g.name, g.expected) for g in t.guards)
        steps.setdefault((t.source, t.event), []).append((literals, t))
    return MappingProxyType({key: tuple(value) for key, value in steps.items()})


_STEPS = dict(_flatten(TABLE))  # a plain dict: its .get is cheaper than a mappingproxy's
_COMPILED = TABLE


def _step(state: str, event: str, oracle: GuardOracle | None = None) -> Transition:
    """Take ``event`` in ``state``: :meth:`MachineTable.step` on the flattened copy of the
    compiled table (same transitions, same order, same errors).

    Seam for tools: when the module attribute ``TABLE`` has been swapped for another object
    with a ``step`` method (the explorer's coverage recorder does this), the core steps
    through that object instead of the flattened fast path.
    """
    table = TABLE
    if table is not _COMPILED:
        return table.step(state, event, oracle)
    for literals, transition in _STEPS.get((state, event), ()):
        if not literals:
            return transition
        if oracle is None:
            raise ValueError(f"{table.name}: {transition} needs a guard oracle")
        for name, expected in literals:
            if oracle(name) != expected:
                break
        else:
            return transition
    raise InvalidTransition(table.name, state, event)


# State names (interned by the table; sessions share these very objects).
AWAITING_ADVERTISE = "awaiting_advertise"
CHALLENGED = "challenged"
WAITING = "waiting"
DISCONNECTING = "disconnecting"
CONFIRMING = "confirming"
COORDINATING = "coordinating"
CLOSED = "closed"
_PENDING = frozenset({AWAITING_ADVERTISE, CHALLENGED})
_COUNTED = {AWAITING_ADVERTISE: "pending", CHALLENGED: "pending", WAITING: "waiting"}
"""Which counter (see MediatorCore._count) a state is counted in; other states are in none."""
_FRAMING = frozenset({AWAITING_ADVERTISE, CHALLENGED})
_KEEPALIVE = frozenset({WAITING, DISCONNECTING, CONFIRMING, COORDINATING})
"""States in which a version 1 advertiser may send Ping (and, coordinated, Status) frames."""
_PAIRING = frozenset({DISCONNECTING, CONFIRMING, COORDINATING})
"""States in which a session has a partner whose end it must hear of."""
COORDINATE_GRACE = 3.0
"""Seconds a coordinating session may stay silent before its first Ping (spec/mediator.md
section 4.3: peers ping every second while coordinating; later, twice the announced interval)."""
_STATUS_HEADER = wire.MAGIC + bytes((wire.PROTOCOL_VERSION, wire.MessageType.STATUS, 0, 1))
MIN_PING_GAP = 0.5
"""Seconds a session's Ping must follow its previous one (spec/mediator.md section 4.1): Pings
announce at least 1 s, so twice that rate is a flood, refused as MALFORMED."""
_PING_HEADER = wire.MAGIC + bytes((wire.PROTOCOL_VERSION, wire.MessageType.PING, 0, 8))

_R = wire.Reason
_HEADER_SIZE = wire.HEADER_SIZE
_MAX_PAYLOAD = wire.MAX_PAYLOAD
_VERSION = wire.PROTOCOL_VERSION
_MAGIC0, _MAGIC1 = wire.MAGIC
_FRAME_START = wire.MAGIC + bytes((_VERSION,))
_MAX_FRAME = _HEADER_SIZE + _MAX_PAYLOAD
_CHALLENGE_HEADER = wire.AdvertiseChallenge(bytes(SEALED_NONCE_SIZE)).encode()[:_HEADER_SIZE]
_GUARD_FAILURE: dict[str, tuple[int, str]] = {
    # guard name -> (reason code, text) for the advertise/response transitions that close.
    "version_supported": (_R.UNSUPPORTED_VERSION, "only protocol version 1 is supported"),
    "self_pairing": (_R.SELF_PAIRING, "our_key and their_key are the same key"),
    "key_usable": (_R.IDENTITY_CHECK_FAILED, "cannot seal a nonce to the advertised key"),
    "nonce_matches": (_R.IDENTITY_CHECK_FAILED, "AdvertiseResponse does not match the nonce"),
    "registry_full": (_R.BUSY, "too many waiting registrations, retry later"),
    "transport_allowed": (_R.TLS_REQUIRED, "this mediator requires TLS (connect with tls://)"),
    "challenge_budget": (_R.BUSY, "too many challenges for your address, retry later"),
}
_GUARD_CAUSE: dict[str, str] = {
    "version_supported": "unsupported_version",
    "self_pairing": "self_pairing",
    "key_usable": "bad_key",
    "nonce_matches": "identity_check_failed",
    "registry_full": "waiting_full",
    "transport_allowed": "tls_required",
    "challenge_budget": "challenge_rate",
}
"""guard name -> the short, bounded label of a rejection (metrics label, log field)."""


@dataclass(frozen=True, slots=True)
class MediatorConfig:
    """Deadlines (seconds) and limits of one mediator. Defaults are documented in spec/mediator.md.

    Every limit answers overload with AdvertiseRetry(BUSY) and a close; none lets memory grow.
    """

    advertise_timeout: float = 10.0
    """From accepting a connection to a complete Advertise frame (whole step, not per byte)."""
    response_timeout: float = 10.0
    """From sending AdvertiseChallenge to a complete AdvertiseResponse frame."""
    wait_timeout: float | None = 3600.0
    """How long a verified registration may wait for its partner (None: no limit)."""
    confirm_timeout: float = 10.0
    """From sending PeerDisconnect to the Peer closing its connection (the confirmation)."""
    max_pending: int = 4096
    """Unverified connections (before a correct AdvertiseResponse), all sources together."""
    max_pending_per_ip: int = 256
    """Unverified connections from one source IP address."""
    max_waiting: int = 100_000
    """Verified registrations waiting for their partner, all sources together."""
    max_waiting_per_ip: int = 10_000
    """Verified waiting registrations from one source IP address (NATs share addresses)."""
    max_connections: int | None = None
    """Connections in any state (one file descriptor each). None: no cap beyond the pending
    and waiting limits; the server derives one from RLIMIT_NOFILE. Over it, a newcomer evicts
    an unverified connection, or is refused when there is none."""
    ipv4_prefix: int = 32
    """Per-address limits count IPv4 sources per /ipv4_prefix network (32: per address)."""
    ipv6_prefix: int = 64
    """Per-address limits count IPv6 sources per /ipv6_prefix network (one host often owns a
    whole /64, so counting exact addresses would let it open unlimited connections)."""
    challenge_rate: float = 50.0
    """HPKE-sealed challenges per second and origin, refilled continuously ..."""
    challenge_burst: int = 200
    """... up to this many at once; an Advertise over the budget gets AdvertiseRetry(BUSY)."""
    require_tls: bool = False
    """Refuse version 1 Advertise frames that did not arrive over TLS (TLS_REQUIRED)."""
    coordinate: bool = True
    """Echo the COORDINATE capability when both partners offer it (spec/mediator.md section
    4.3): keep both connections while they punch and tell the survivor when one goes away."""
    coordinate_timeout: float = 20.0
    """How long a coordinated pairing's connections are held after the introduction (longer
    than the peers' punch timeout, 10 s by default); at the end they are closed with
    AdvertiseAbort(TIMEOUT), which does not stop the punch."""

    def __post_init__(self) -> None:
        for name in (
            "advertise_timeout",
            "response_timeout",
            "confirm_timeout",
            "coordinate_timeout",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.wait_timeout is not None and not self.wait_timeout > 0:
            raise ValueError("wait_timeout must be > 0 or None")
        for name in (
            "max_pending",
            "max_pending_per_ip",
            "max_waiting",
            "max_waiting_per_ip",
            "challenge_burst",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.max_connections is not None and self.max_connections < 1:
            raise ValueError("max_connections must be >= 1 or None")
        if not 0 <= self.ipv4_prefix <= 32 or not 0 <= self.ipv6_prefix <= 128:
            raise ValueError("ipv4_prefix must be 0..32 and ipv6_prefix 0..128")
        if not self.challenge_rate > 0:
            raise ValueError("challenge_rate must be > 0")


@dataclass(frozen=True, slots=True)
class MediatorNote:
    """Something worth a log line: registrations, pairings, failures (with reason)."""

    kind: str
    """refused | evicted | rejected | challenged | registered | replaced | paired |
    introduced | failed | closed"""
    conn: ConnId
    remote: tuple[str, int] | None = None
    our_key: bytes | None = None
    their_key: bytes | None = None
    partner: ConnId | None = None
    reason: str = ""
    cause: str = ""
    """A short label from a fixed set (for metrics and log filters): for refused/evicted
    ``pending_origin``, ``pending_global``, ``connections``, ``shutting_down``; for rejected
    the failed check (``identity_check_failed``, ``waiting_full``...); for failed the event
    (``timeout``, ``eof``, ``lost``, ``bad_input``, ``shutdown``, ``partner_...``); for paired
    and introduced ``coordinated`` when the pairing is coordinated (mediator.md section 4.3),
    else empty."""


NoteObserver = Callable[[MediatorNote], None]
"""Receives the core's notes. An observer that has a ``kinds`` attribute (a collection of note
kinds) is sent only notes of those kinds, and the core does not build the others at all: a
logging observer lists the kinds its log level shows, so a quiet mediator pays nothing per
event for notes nobody reads."""

SessionRow = tuple[
    ConnId,  # conn
    str,  # state
    tuple[str, int],  # observed remote address
    float | None,  # deadline
    bytes,  # partial frame
    "wire.Address | None",  # advertised local address
    bytes,  # our_key ("" before Advertise)
    bytes,  # their_key
    bytes | None,  # nonce while challenged; the Peer's session: the pairing id while pairing
    ConnId | None,  # partner while pairing
    bool,  # arrived over TLS
    float | None,  # wait_timeout's end while waiting (the deadline may be earlier: keepalive)
    float | None,  # when the last Ping arrived (None: none yet)
    bytes,  # the CANDIDATES extension value of the Advertise (b"": none)
    float | None,  # round trip: when challenged, the challenge's send time; then the measurement
    bool,  # offered COORDINATE; once paired: the pairing is coordinated
]
MediatorSnapshot = tuple[
    tuple[SessionRow, ...], tuple[tuple[RegistryKey, int], ...], bool, AdmissionSnapshot
]
"""What :meth:`MediatorCore.snapshot` returns: sessions by conn, registry entries, shutting
down, and the eviction order of unverified connections (not the per-origin challenge budgets:
see :meth:`p2psc.core.admission.Admission.snapshot`)."""


class _Session:
    """Per-connection state; deliberately tiny (a waiting registration budget is 4 KiB)."""

    __slots__ = (
        "buf",
        "cands",
        "coord",
        "deadline",
        "local",
        "nonce",
        "origin",
        "our",
        "partner",
        "pinged",
        "remote",
        "rtt",
        "secure",
        "state",
        "their",
        "wait_end",
    )

    def __init__(
        self, state: str, remote: tuple[str, int], deadline: float | None, origin: str
    ) -> None:
        self.state = state
        self.remote = remote
        self.origin = origin
        """What per-address limits count this session under (see admission.origin_of)."""
        self.secure = False
        """The connection is TLS (the adapter called MediatorCore.start_tls)."""
        self.deadline = deadline
        self.buf = b""
        self.local: wire.Address | None = None
        self.our = b""
        self.their = b""
        self.nonce: bytes | None = None
        self.partner: ConnId | None = None
        self.wait_end: float | None = None
        """While waiting: when wait_timeout ends (``deadline`` is earlier when the advertiser's
        keepalive is due before that)."""
        self.pinged: float | None = None
        """When this session's last Ping arrived (keepalive, spec/mediator.md section 4.1)."""
        self.cands = b""
        """The advertiser's other local addresses: the raw CANDIDATES extension value of its
        Advertise (at most 152 bytes), forwarded to its partner unchanged."""
        self.rtt: float | None = None
        """While challenged: when the AdvertiseChallenge went out; from the AdvertiseResponse
        on: the round trip measured between the two (the dial schedule, section 4.2)."""
        self.coord = False
        """Before pairing: its Advertise offered COORDINATE. Once paired: the pairing is
        coordinated (both offered it and this mediator coordinates). While coordinating,
        ``wait_end`` is the end of the hold (``coordinate_timeout`` after the introduction)."""

    @classmethod
    def from_row(cls, row: SessionRow, origin: str) -> _Session:
        """The session :meth:`as_tuple` described (rows of older snapshots, without the round
        trip or the coordination flag, are accepted)."""
        session = cls.__new__(cls)
        if len(row) < 16:
            row = (*row[:14], row[14] if len(row) > 14 else None, False)
        (
            _,
            session.state,
            session.remote,
            session.deadline,
            session.buf,
            session.local,
            session.our,
            session.their,
            session.nonce,
            session.partner,
            session.secure,
            session.wait_end,
            session.pinged,
            session.cands,
            session.rtt,
            coord,
        ) = row
        session.coord = bool(coord)
        session.origin = origin
        return session

    def as_tuple(self, conn: ConnId) -> SessionRow:
        return (
            conn,
            self.state,
            self.remote,
            self.deadline,
            self.buf,
            self.local,
            self.our,
            self.their,
            self.nonce,
            self.partner,
            self.secure,
            self.wait_end,
            self.pinged,
            self.cands,
            self.rtt,
            self.coord,
        )


def _forwarded(cands: bytes) -> wire.Extensions:
    """The extension area of a pairing message: the partner's CANDIDATES, if it sent any
    (already checked when its Advertise was decoded)."""
    return ((int(wire.ExtensionType.CANDIDATES), cands),) if cands else ()


def _dial_schedule(peer_rtt: float | None, client_rtt: float | None) -> wire.Extensions:
    """The DIAL_DELAY item of a PeerDisconnect (spec/mediator.md section 4.2): the Client hears
    PeerIdentification half the Peer's round trip (its confirmation) plus half the Client's
    after the Peer read PeerDisconnect, so the Peer dials after that long and the first SYNs of
    both cross in flight. Nothing when either round trip is unknown."""
    if peer_rtt is None or client_rtt is None:
        return ()
    return wire.dial_delay_extension(round((peer_rtt + client_rtt) * 500))


_COORDINATE_ITEM: wire.Extensions = ((int(wire.ExtensionType.COORDINATE), b""),)


def _partner_text(event: str, text: str) -> str:
    """What the surviving side of a failed pairing is told: whose connection did what (the
    text is the partner's, not the recipient's: spec/mediator.md section 4)."""
    how = {
        "eof": "was closed",
        "lost": "was lost",
        "timeout": "timed out",
        "bad_input": "broke the protocol",
        "ping": "broke the protocol",
        "status": "broke the protocol",
        "shutdown": "was shut down",
    }.get(event, event)
    return f"your partner's connection to the mediator {how} ({text})"


def _uncoordinated(name: str) -> bool:
    """Guard oracle of an uncoordinated ``partner_confirmed`` (its one guard is false)."""
    del name
    return False


def _version_unsupported(name: str) -> bool:
    return name != "version_supported"


@lru_cache(maxsize=512)
def _abort(code: int, text: str) -> bytes:
    return wire.AdvertiseAbort(code=code, text=text).encode()


@lru_cache(maxsize=512)
def _retry(code: int, text: str) -> bytes:
    """(Cached, as _abort: most reasons are constant texts, and under a flood every eviction
    sends the same AdvertiseRetry; encoding it each time was a visible share of the cost.)"""
    return wire.AdvertiseRetry(code=code, text=text).encode()


class MediatorCore:
    """All sessions of one mediator: ``handle(event, now) -> actions``.

    Invariants (tested, and checked by the explorer):

    - a registration is in the registry iff its session is in state ``waiting``;
    - PeerIdentification is sent only in the step that handles the Peer's clean close after
      PeerDisconnect, so the Peer is always listening before the Client learns its address;
    - every session ends with exactly one :class:`Close` action and leaves no trace behind.
    """

    def __init__(
        self,
        config: MediatorConfig | None = None,
        *,
        nonce_source: NonceSource = system_nonces,
        crypto: NonceCrypto = HPKE,
        registry: Registry | None = None,
        observer: NoteObserver | None = None,
    ) -> None:
        self.config = config or MediatorConfig()
        self._nonce_source = nonce_source
        self._crypto = crypto
        self._registry: Registry = registry if registry is not None else InMemoryRegistry()
        self._plain_framing = type(self)._next_frame is MediatorCore._next_frame
        """Whether _on_received may cut a lone whole frame itself (a subclass may frame
        differently by overriding _next_frame)."""
        kinds: Collection[str] | None = getattr(observer, "kinds", None)
        self._note_kinds: frozenset[str] | None = None if kinds is None else frozenset(kinds)
        """Note kinds the observer wants (None: all); see :data:`NoteObserver`."""
        self._observer = None if self._note_kinds == frozenset() else observer
        """None when nobody reads notes, which every note site tests first."""
        self._sessions: dict[ConnId, _Session] = {}
        config = self.config
        self._admission = Admission(config.challenge_rate, config.challenge_burst)
        """Unverified connections: counts per origin, eviction order, challenge budgets."""
        self._waiting_by_ip: dict[str, int] = {}
        """Waiting registrations per origin (an address, or an IPv6 prefix)."""
        self._shutting_down = False
        self._now = 0.0
        """The time of the event being handled (for texts that say how long ago)."""

    # --- introspection ------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Unverified connections (awaiting Advertise or the AdvertiseResponse)."""
        return self._admission.total

    @property
    def _pending_by_ip(self) -> dict[str, int]:
        """Unverified connections per origin (read-only view for tests and diagnostics)."""
        return self._admission.counts

    def origin(self, ip: str) -> str:
        """The origin per-address limits count ``ip`` under (IPv6: its configured prefix)."""
        config = self.config
        return origin_of(ip, config.ipv4_prefix, config.ipv6_prefix)

    @property
    def waiting(self) -> int:
        """Verified registrations waiting for their partner."""
        return len(self._registry)

    @property
    def sessions(self) -> int:
        """Live connections of any state."""
        return len(self._sessions)

    def state_of(self, conn: ConnId) -> str | None:
        """The session state of ``conn`` (None once it is closed or unknown)."""
        session = self._sessions.get(conn)
        return None if session is None else session.state

    # --- snapshots ------------------------------------------------------------------------

    def snapshot(self) -> MediatorSnapshot:
        """Everything that determines future behaviour, as nested tuples (hashable), except
        the per-origin challenge budgets (rate state that outlives connections; a rebuilt core
        starts with full budgets).

        The registry is included as its sorted entries; counters are derived from sessions
        and the eviction order.
        """
        sessions = tuple(s.as_tuple(conn) for conn, s in sorted(self._sessions.items()))
        registry = tuple(sorted(self._registry.items()))
        return (sessions, registry, self._shutting_down, self._admission.snapshot())

    @classmethod
    def from_snapshot(
        cls,
        snapshot: MediatorSnapshot,
        config: MediatorConfig | None = None,
        *,
        nonce_source: NonceSource = system_nonces,
        crypto: NonceCrypto = HPKE,
        observer: NoteObserver | None = None,
    ) -> MediatorCore:
        """Rebuild a core (with an in-memory registry) from :meth:`snapshot` output."""
        sessions, registry, shutting_down, admission = snapshot
        core = cls(config, nonce_source=nonce_source, crypto=crypto, observer=observer)
        core._shutting_down = bool(shutting_down)
        # Written for speed (the explorer rebuilds a core at every real step it takes): one
        # unpacking per row, and the waiting count kept as _count would keep it.
        table = core._sessions
        waiting = core._waiting_by_ip
        origin = core.origin
        for row in sessions:
            session = _Session.from_row(row, origin(row[2][0]))
            table[row[0]] = session
            if session.state == WAITING:
                waiting[session.origin] = waiting.get(session.origin, 0) + 1
        core._admission.restore(admission)
        for (our, their), handle in registry:
            core._registry.register(our, their, handle)
        return core

    # --- the one entry point --------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[MediatorAction]:
        """Apply one adapter event at time ``now``; return the actions to execute, in order."""
        self._now = now
        out: list[MediatorAction] = []
        kind = type(event)
        # exact-type dispatch (cheaper than isinstance chains on the hot path)
        # (the annotated assignments narrow the union without typing.cast's call per event)
        if kind is Received:
            received: Received = event  # type: ignore[assignment]
            self._on_received(received.conn, received.data, now, out)
        elif kind is Opened:
            opened: Opened = event  # type: ignore[assignment]
            self._on_opened(opened.conn, opened.remote, now, out)
        elif kind is Closed:
            closed: Closed = event  # type: ignore[assignment]
            self._on_closed(closed.conn, closed.clean, closed.error, now, out)
        elif kind is TimerFired:
            self._on_timer(event.conn, now, out)
        return out

    def shutdown(self, now: float) -> list[MediatorAction]:
        """Abort every session with SHUTTING_DOWN and refuse new connections from now on."""
        self._now = now
        self._shutting_down = True
        out: list[MediatorAction] = []
        for conn in sorted(self._sessions):
            session = self._sessions.get(conn)
            if session is not None:
                text = "mediator shutting down"
                code = _R.SHUTTING_DOWN
                self._fail(conn, session, "shutdown", code, text, out, partner_code=code)
        return out

    # --- bookkeeping ----------------------------------------------------------------------

    def _count(self, conn: ConnId, session: _Session, delta: int) -> None:
        """Keep the pending / per-origin counters in step with ``session.state``."""
        state = session.state
        if state in _PENDING:
            if delta > 0:
                self._admission.add(conn, session.origin, challenged=state == CHALLENGED)
            else:
                self._admission.remove(conn, session.origin)
            return
        if state != WAITING:
            return
        table = self._waiting_by_ip
        origin = session.origin
        count = table.get(origin, 0) + delta
        if count > 0:
            table[origin] = count
        else:
            table.pop(origin, None)

    def _move(self, conn: ConnId, session: _Session, transition: Transition) -> None:
        target = transition.target
        counted = _COUNTED.get(session.state)
        if counted is _COUNTED.get(target):  # e.g. pending -> pending: no counter changes
            session.state = target
            return
        if counted is not None:
            self._count(conn, session, -1)
        session.state = target
        if target in _COUNTED:
            self._count(conn, session, +1)

    def _note(
        self,
        kind: str,
        conn: ConnId,
        session: _Session | None,
        reason: str = "",
        cause: str = "",
        remote: tuple[str, int] | None = None,
    ) -> None:
        observer = self._observer
        if observer is None:
            return
        kinds = self._note_kinds
        if kinds is not None and kind not in kinds:
            return
        if session is None:
            observer(MediatorNote(kind, conn, remote, reason=reason, cause=cause))
        else:
            observer(
                MediatorNote(
                    kind,
                    conn,
                    session.remote,
                    session.our or None,
                    session.their or None,
                    session.partner,
                    reason,
                    cause,
                )
            )

    def _close(
        self, conn: ConnId, session: _Session, out: list[MediatorAction], reason: str
    ) -> None:
        """Forget ``session`` completely (registry entry included) and emit its Close."""
        state = session.state
        if state in _COUNTED:
            if state == WAITING:
                self._registry.unregister(session.our, session.their, conn)
            self._count(conn, session, -1)
        session.state = CLOSED
        session.buf = b""
        session.nonce = None
        self._sessions.pop(conn, None)
        out.append(Close(conn, reason))
        if self._observer is not None:
            self._note("closed", conn, session, reason)

    def _fail(
        self,
        conn: ConnId,
        session: _Session,
        event: str,
        code: int | None,
        text: str,
        out: list[MediatorAction],
        *,
        partner_code: int = _R.PEER_GONE,
        oracle: GuardOracle | None = None,
    ) -> None:
        """Take ``event`` (a way to ``closed``), send AdvertiseAbort(code) when ``code`` is set,
        close, and if the session was in a pairing, fail the partner too."""
        _step(session.state, event, oracle)
        partner_conn = session.partner if session.state in _PAIRING else None
        partner_text = _partner_text(event, text)
        if session.state == COORDINATING:
            partner_text = self._lost_text(session, event, text, now=self._now)
            if partner_code == _R.PEER_GONE:
                partner_code = _R.PARTNER_LOST
        if code is not None:
            out.append(Send(conn, _abort(code, text)))
        if event not in ("eof",):
            self._note("failed", conn, session, f"{event}: {text}", event)
        self._close(conn, session, out, f"{event}: {text}")
        if partner_conn is not None:
            partner = self._sessions.get(partner_conn)
            if partner is not None:
                _step(partner.state, "partner_lost")
                self._note(
                    "failed", partner_conn, partner, f"partner {event}: {text}", f"partner_{event}"
                )
                out.append(Send(partner_conn, _abort(partner_code, partner_text)))
                self._close(partner_conn, partner, out, f"partner_lost: {event}")

    # --- events ---------------------------------------------------------------------------

    def _on_opened(
        self, conn: ConnId, remote: tuple[str, int], now: float, out: list[MediatorAction]
    ) -> None:
        if conn in self._sessions:
            return  # adapter bug: never reuse a live id; ignore rather than corrupt state
        host = remote[0]
        if host.startswith("::ffff:") and "." in host:
            # A dual-stack listener reports an IPv4 client as IPv4-mapped IPv6: the client's
            # address is the IPv4 one (what it must be told, and how limits count it).
            host = host[7:]
        remote = (host, remote[1])
        config = self.config
        origin = self.origin(remote[0])
        admission = self._admission
        victim: ConnId | None = None
        why = cause = ""
        refusal: tuple[int, str, str] | None = None
        if self._shutting_down:
            refusal = (_R.SHUTTING_DOWN, "mediator shutting down", "shutting_down")
        elif admission.counts.get(origin, 0) >= config.max_pending_per_ip:
            victim, cause = admission.oldest_of(origin), "pending_origin"
            why = "too many unverified connections from your address"
        elif admission.total >= config.max_pending:
            victim, cause = admission.oldest_of_largest(), "pending_global"
            why = "too many unverified connections"
        elif config.max_connections is not None and len(self._sessions) >= config.max_connections:
            victim, cause = admission.oldest_of_largest(), "connections"
            why = "too many connections"
            if victim is None:  # every connection is verified: nobody to evict
                refusal = (_R.BUSY, "too many connections, retry later", cause)
        if victim is not None:
            self._evict(victim, why, cause, out)
        if refusal is not None:
            _step(AWAITING_ADVERTISE, "busy")
            out.append(Send(conn, _retry(refusal[0], refusal[1])))
            out.append(Close(conn, f"busy: {refusal[1]}"))
            self._note("refused", conn, None, refusal[1], refusal[2], remote)
            return
        deadline = now + config.advertise_timeout
        session = _Session(AWAITING_ADVERTISE, remote, deadline, origin)
        self._sessions[conn] = session
        self._count(conn, session, +1)
        out.append(SetTimer(conn, deadline))

    def _evict(self, victim: ConnId, why: str, cause: str, out: list[MediatorAction]) -> None:
        """Close the unverified connection ``victim`` to make room for a newcomer."""
        session = self._sessions[victim]
        _step(session.state, "evicted")
        text = f"evicted: {why}, retry later"
        out.append(Send(victim, _retry(_R.BUSY, text)))
        self._note("evicted", victim, session, why, cause)
        self._close(victim, session, out, text)

    def _clear_exempt(self, conn: ConnId) -> bool:
        """Whether ``conn`` may register in clear although TLS is required (the version 0
        legacy path, which has no TLS, overrides this; ``--no-legacy`` turns it off)."""
        del conn
        return False

    def start_tls(self, conn: ConnId, now: float) -> list[MediatorAction]:
        """The adapter saw a TLS ClientHello as the first byte of ``conn``; may it run TLS?

        Yes (no actions) while the origin's challenge budget lasts: a TLS handshake costs the
        mediator a key exchange and a signature, more than the HPKE seal the budget bounds, so
        it is paid from the same budget. No: the connection is closed (nothing can be sent in
        clear to a TLS client). Either way the session stays counted as unverified, so TLS
        connections are limited and evicted exactly like plaintext ones.
        """
        session = self._sessions.get(conn)
        if session is None or session.state != AWAITING_ADVERTISE or session.buf:
            return []
        out: list[MediatorAction] = []
        if not self._admission.take_challenge(session.origin, now):
            text = "too many TLS handshakes from your address"
            _step(session.state, "bad_input")
            self._note("rejected", conn, session, text, "challenge_rate")
            self._close(conn, session, out, f"tls: {text}")
            return out
        session.secure = True
        return out

    def _on_closed(
        self, conn: ConnId, clean: bool, error: str | None, now: float, out: list[MediatorAction]
    ) -> None:
        session = self._sessions.get(conn)
        if session is None:
            return
        if clean and session.state == DISCONNECTING and not session.coord:
            # only a clean end is the confirmation (coordinated: only Status(PUNCHING) is)
            self._confirmed(conn, session, now, out)
            return
        if clean:
            text = "closed by the other side"
            if session.buf:
                text += " in the middle of a frame"
            self._fail(conn, session, "eof", None, text, out)
        else:
            self._fail(conn, session, "lost", None, error or "connection lost", out)

    def _on_timer(self, conn: ConnId, now: float, out: list[MediatorAction]) -> None:
        session = self._sessions.get(conn)
        if session is None:
            return
        if session.deadline is None or now < session.deadline:
            out.append(SetTimer(conn, session.deadline))  # early or stale timer: re-arm
            return
        end = session.wait_end
        if session.state == COORDINATING:
            self._coordination_timer(conn, session, now, out)
            return
        if session.state == WAITING and session.pinged is not None and (end is None or now < end):
            # The keepalive deadline (section 4.1), earlier than wait_timeout's end.
            silent = now - (session.pinged or now)
            text = f"no Ping from you for {silent:.1f} s (twice the interval you announced)"
            self._fail(conn, session, "timeout", _R.SILENT, text, out)
            return
        step = {
            AWAITING_ADVERTISE: "no complete Advertise before the deadline",
            CHALLENGED: "no complete AdvertiseResponse before the deadline",
            WAITING: "the wanted peer did not register before the deadline",
            DISCONNECTING: "the Peer did not close after PeerDisconnect before the deadline"
            if not session.coord
            else "the Peer did not confirm PeerDisconnect (Status PUNCHING) before the deadline",
            CONFIRMING: "the Peer did not confirm PeerDisconnect before the deadline",
        }[session.state]
        self._fail(conn, session, "timeout", _R.TIMEOUT, step, out, partner_code=_R.TIMEOUT)

    def _on_received(
        self, conn: ConnId, data: bytes, now: float, out: list[MediatorAction]
    ) -> None:
        session = self._sessions.get(conn)
        if session is None or not data:
            return
        if session.state not in _FRAMING:
            if session.state in _KEEPALIVE and self._speaks_v1(conn):
                self._keepalive_bytes(conn, session, data, now, out)
            else:
                self._bad(conn, session, f"unexpected bytes in state {session.state}", out)
            return
        # The common case, one whole frame and nothing buffered, skips the buffer: it is the
        # frame _next_frame would cut (same header checks), and the buffer stays empty.
        whole = (
            not session.buf
            and self._plain_framing
            and len(data) >= _HEADER_SIZE
            and data[:3] == _FRAME_START
            and len(data) == _HEADER_SIZE + ((data[4] << 8) | data[5]) <= _MAX_FRAME
        )
        if not whole:
            session.buf += data
        while True:
            try:
                if whole:
                    frame: bytes | None = data
                    whole = False
                else:
                    frame = self._next_frame(session)
                if frame is None:
                    return
                if (
                    frame[3] == 0  # Advertise: its version field is judged before its layout
                    and len(frame) > _HEADER_SIZE
                    and frame[_HEADER_SIZE] != _VERSION
                    and session.state == AWAITING_ADVERTISE
                ):
                    version = frame[_HEADER_SIZE]
                    text = f"Advertise version {version} is not supported (only 1)"
                    self._reject_version(conn, session, text, out)
                    return
                message = wire.decode(frame)
            except UnsupportedVersion as error:
                if session.state == AWAITING_ADVERTISE:
                    self._reject_version(conn, session, error.reason, out)
                else:
                    self._bad(conn, session, error.reason, out)
                return
            except ProtocolError as error:
                self._bad(conn, session, error.reason, out)
                return
            if isinstance(message, wire.Advertise) and session.state == AWAITING_ADVERTISE:
                self._on_advertise(conn, session, message, now, out)
            elif isinstance(message, wire.AdvertiseResponse) and session.state == CHALLENGED:
                if session.buf:  # refused before it can pair or register (spec §3 step 3)
                    self._bad(conn, session, "bytes after the AdvertiseResponse", out)
                    return
                self._on_response(conn, session, message, now, out)
            else:
                name = type(message).__name__
                self._bad(conn, session, f"{name} is not allowed in state {session.state}", out)
                return
            if not session.buf:
                return
            if session.state not in _FRAMING:
                break
        if conn in self._sessions:
            self._bad(conn, session, f"unexpected bytes in state {session.state}", out)

    # --- keepalive (spec/mediator.md section 4.1) --------------------------------------------

    def _speaks_v1(self, conn: ConnId) -> bool:
        """Whether ``conn`` is a version 1 session (the legacy core says no for version 0
        ones, which have no keepalive)."""
        del conn
        return True

    def _keepalive_bytes(
        self, conn: ConnId, session: _Session, data: bytes, now: float, out: list[MediatorAction]
    ) -> None:
        """Bytes after the handshake: only whole Ping (and Status) frames are allowed. Each
        header byte is judged as it arrives (both headers are fixed), so at most one 14-byte
        frame is buffered."""
        buf = session.buf + data
        while buf:
            have = min(len(buf), _HEADER_SIZE)
            status = have > 3 and buf[3] == wire.MessageType.STATUS
            header = _STATUS_HEADER if status else _PING_HEADER
            if buf[:have] != header[:have]:
                self._bad(conn, session, f"unexpected bytes in state {session.state}", out)
                return
            end = _HEADER_SIZE + (1 if status else 8)
            if len(buf) < end:
                break
            try:
                message = wire.decode(buf[:end])
            except ProtocolError as error:
                self._bad(conn, session, error.reason, out)
                return
            buf = buf[end:]
            if isinstance(message, wire.Status):
                session.buf = buf
                if not self._on_status(conn, session, message, now, out):
                    return
                continue
            assert isinstance(message, wire.Ping)
            if not self._on_ping(conn, session, message, now, out):
                return
        session.buf = buf

    def _on_ping(
        self,
        conn: ConnId,
        session: _Session,
        ping: wire.Ping,
        now: float,
        out: list[MediatorAction],
    ) -> bool:
        """Answer a Ping (False when it closed the session)."""
        last = session.pinged

        def oracle(name: str) -> bool:
            if name == "ping_allowed":
                return last is None or now - last >= MIN_PING_GAP
            raise InvalidTransition("MediatorSession", session.state, f"guard {name}")

        transition = _step(session.state, "ping", oracle)
        if transition.target == CLOSED:
            text = f"Pings {now - (last or now):.2f} s apart (at most one per {MIN_PING_GAP} s)"
            self._fail(conn, session, "ping", _R.MALFORMED, text, out, oracle=oracle)
            return False
        session.pinged = now
        if session.state == DISCONNECTING:
            return True  # the Peer closes next: nothing to answer, nothing to move
        out.append(Send(conn, wire.Pong(ping.token).encode()))
        if session.state in (WAITING, COORDINATING):
            alive = now + 2 * ping.interval_ms / 1000
            end = session.wait_end
            session.deadline = alive if end is None else min(alive, end)
            out.append(SetTimer(conn, session.deadline))
        return True

    # --- coordinated pairings (spec/mediator.md section 4.3) ---------------------------------

    def _coordinates(self) -> bool:
        """Whether this core may coordinate a pairing (a fleet does not: its partners may sit
        on different instances, spec/mediator.md section 10)."""
        return self.config.coordinate

    def _on_status(
        self,
        conn: ConnId,
        session: _Session,
        message: wire.Status,
        now: float,
        out: list[MediatorAction],
    ) -> bool:
        """A Status frame (False when it closed the session)."""
        state = session.state
        if state not in (DISCONNECTING, COORDINATING):
            self._bad(conn, session, f"Status is not allowed in state {state}", out)
            return False
        code = message.status
        coord = session.coord

        def oracle(name: str) -> bool:
            if name == "confirms":
                return coord and code == wire.StatusCode.PUNCHING
            if name == "reports_done":
                return code != wire.StatusCode.PUNCHING
            raise InvalidTransition("MediatorSession", state, f"guard {name}")

        transition = _step(state, "status", oracle)
        if transition.target == COORDINATING:
            self._confirmed_coordinated(conn, session, transition, now, out)
            return conn in self._sessions
        if transition.guards and transition.guards[0].name == "reports_done":
            # This side left the punch: close it; its end is no news to the partner.
            partner_conn = session.partner
            partner = self._sessions.get(partner_conn) if partner_conn is not None else None
            if partner is not None and partner.state == COORDINATING:
                _step(partner.state, "partner_done")
                partner.partner = None
            session.partner = None
            name = wire.StatusCode(code).name
            self._note("closed", conn, session, f"reported {name}")
            self._close(conn, session, out, f"status: {name}: left the punch")
            return False
        why = (
            "Status in a pairing that is not coordinated"
            if not coord
            else f"Status {code} is not allowed in state {state}"
        )
        self._fail(conn, session, "status", _R.MALFORMED, why, out, oracle=oracle)
        return False

    def _confirmed_coordinated(
        self,
        conn: ConnId,
        session: _Session,
        transition: Transition,
        now: float,
        out: list[MediatorAction],
    ) -> None:
        """The Peer of a coordinated pairing sent Status(PUNCHING): it listens. Introduce it,
        and hold both connections (``coordinating``) until each reports leaving the punch."""
        client_conn = session.partner
        client = self._sessions.get(client_conn) if client_conn is not None else None
        if client is None or client_conn is None or client.state != CONFIRMING:
            self._fail(conn, session, "timeout", _R.PARTNER_LOST, "the Client is gone", out)
            return
        try:
            identification = wire.PeerIdentification(
                version=wire.PROTOCOL_VERSION,
                pairing_id=session.nonce or b"",
                peer=wire.Address.from_tuple(session.remote),
                peer_local=session.local,
                extensions=_forwarded(session.cands) + _COORDINATE_ITEM,
            ).encode()
        except ProtocolError as error:
            self._fail(conn, session, "bad_input", _R.MALFORMED, "cannot introduce you", out)
            if client_conn in self._sessions:
                self._bad(client_conn, client, f"cannot encode PeerIdentification: {error}", out)
            return
        end = now + self.config.coordinate_timeout
        grace = min(now + COORDINATE_GRACE, end)
        self._move(conn, session, transition)
        client_step = _step(client.state, "partner_confirmed", lambda name: client.coord)
        client.state = client_step.target
        for side, who in ((conn, session), (client_conn, client)):
            who.wait_end, who.deadline, who.pinged = end, grace, None
            out.append(SetTimer(side, grace))
        out.append(Send(client_conn, identification))
        self._note("introduced", client_conn, client, cause="coordinated")

    def _lost_text(self, session: _Session, event: str, text: str, now: float) -> str:
        """What the survivor of a coordinated pairing is told (the partner's end, and when)."""
        how = {
            "eof": "closed",
            "lost": "was lost",
            "timeout": "went silent",
            "bad_input": "broke the protocol",
            "ping": "broke the protocol",
            "status": "broke the protocol",
            "shutdown": "was shut down",
        }.get(event, event)
        since = ""
        if session.wait_end is not None:
            ms = max(0.0, now - (session.wait_end - self.config.coordinate_timeout)) * 1000
            since = f" {ms:.0f} ms after the introduction"
        return (
            f"your partner's connection to the mediator {how}{since} without reporting that "
            f"it left the punch: it is gone ({text})"
        )

    def _coordination_timer(
        self, conn: ConnId, session: _Session, now: float, out: list[MediatorAction]
    ) -> None:
        """A coordinating session's deadline: the end of the hold, or silence."""
        end = session.wait_end
        if end is not None and now >= end:
            held = self.config.coordinate_timeout
            text = f"coordination ended after {held:g} s (the punch goes on without it)"
            self._fail(conn, session, "timeout", _R.TIMEOUT, text, out, partner_code=_R.TIMEOUT)
            return
        last = session.pinged
        silent = f"no Ping for {now - last:.1f} s" if last is not None else "no Ping at all"
        text = f"{silent} while coordinating (peers ping every second)"
        self._fail(conn, session, "timeout", _R.SILENT, text, out)

    # --- framing --------------------------------------------------------------------------

    @staticmethod
    def _next_frame(session: _Session) -> bytes | None:
        """Cut one whole frame off ``session.buf``; None while incomplete.

        Header fields are checked as soon as their bytes arrive, so garbage and oversized
        lengths are refused without waiting for (or buffering) a payload.
        """
        buf = session.buf
        have = len(buf)
        if have >= _HEADER_SIZE and buf[0] == _MAGIC0 and buf[1] == _MAGIC1 and buf[2] == _VERSION:
            # The common case (a whole, well-formed header): same checks, fewer slices.
            length = (buf[4] << 8) | buf[5]
            if length <= _MAX_PAYLOAD:
                end = _HEADER_SIZE + length
                if have == end:
                    session.buf = b""
                    return buf
                if have < end:
                    return None
                session.buf = buf[end:]
                return buf[:end]
        magic = wire.MAGIC
        if buf[: min(have, len(magic))] != magic[: min(have, len(magic))]:
            raise ProtocolError("bad magic: not a p2psc v1 frame")
        if have > 2 and buf[2] != wire.PROTOCOL_VERSION:
            raise UnsupportedVersion(f"frame version {buf[2]} is not supported (only 1)")
        if have < wire.HEADER_SIZE:
            return None
        length = int.from_bytes(buf[4:6], "big")
        if length > wire.MAX_PAYLOAD:
            raise ProtocolError(f"frame payload of {length} bytes exceeds {wire.MAX_PAYLOAD}")
        end = wire.HEADER_SIZE + length
        if have < end:
            return None
        session.buf = buf[end:]
        return buf[:end]

    # --- handshake steps --------------------------------------------------------------------

    def _bad(self, conn: ConnId, session: _Session, reason: str, out: list[MediatorAction]) -> None:
        self._fail(conn, session, "bad_input", _R.MALFORMED, reason, out)

    def _reject_version(
        self, conn: ConnId, session: _Session, reason: str, out: list[MediatorAction]
    ) -> None:
        transition = _step(session.state, "advertise", _version_unsupported)
        assert transition.target == CLOSED
        out.append(Send(conn, _abort(_R.UNSUPPORTED_VERSION, reason)))
        self._note(
            "rejected", conn, session, f"unsupported version: {reason}", "unsupported_version"
        )
        self._close(conn, session, out, f"advertise: {reason}")

    def _on_advertise(
        self,
        conn: ConnId,
        session: _Session,
        message: wire.Advertise,
        now: float,
        out: list[MediatorAction],
    ) -> None:
        our, their = message.our_key, message.their_key
        sealed = b""

        def oracle(name: str) -> bool:
            nonlocal sealed
            if name == "key_usable":
                nonce = self._nonce_source(NONCE_SIZE)
                try:
                    info = nonce_info("AdvertiseChallenge", our, their)
                    sealed = self._crypto.seal(PublicKey.from_raw(our), nonce, info)
                except (P2pscError, ValueError):
                    return False
                session.nonce = nonce
                return True
            if name == "version_supported":
                return message.version == wire.PROTOCOL_VERSION
            if name == "transport_allowed":
                return session.secure or not self.config.require_tls or self._clear_exempt(conn)
            if name == "challenge_budget":
                return session.secure or self._admission.take_challenge(session.origin, now)
            if name == "self_pairing":
                return our == their
            raise InvalidTransition("MediatorSession", session.state, f"guard {name}")

        transition = _step(session.state, "advertise", oracle)
        session.our, session.their, session.local = our, their, message.local
        for kind, value in message.extensions:
            if kind == wire.ExtensionType.CANDIDATES:
                session.cands = value
            elif kind == wire.ExtensionType.COORDINATE:
                session.coord = True
        if transition.target == CLOSED:
            guard = transition.guards[0].name
            code, text = _GUARD_FAILURE[guard]
            out.append(Send(conn, _retry(code, text) if code == _R.BUSY else _abort(code, text)))
            self._note("rejected", conn, session, text, _GUARD_CAUSE[guard])
            self._close(conn, session, out, f"advertise: {text}")
            return
        self._move(conn, session, transition)
        self._admission.challenged(conn, session.origin)
        deadline = session.deadline = now + self.config.response_timeout
        if type(sealed) is bytes and len(sealed) == SEALED_NONCE_SIZE:
            challenge = _CHALLENGE_HEADER + sealed  # what AdvertiseChallenge(sealed).encode() is
        else:
            challenge = wire.AdvertiseChallenge(encrypted_nonce=sealed).encode()  # (it raises)
        out.append(Send(conn, challenge))
        out.append(SetTimer(conn, deadline))
        session.rtt = now  # the round trip is measured to the response
        if self._observer is not None:
            self._note("challenged", conn, session)

    def _on_response(
        self,
        conn: ConnId,
        session: _Session,
        message: wire.AdvertiseResponse,
        now: float,
        out: list[MediatorAction],
    ) -> None:
        registry = self._registry
        config = self.config
        our, their = session.our, session.their
        origin = session.origin
        expected = session.nonce or b""

        def oracle(name: str) -> bool:
            if name == "nonce_matches":
                return nonces_equal(message.nonce, expected)
            if name == "partner_waiting":
                return registry.lookup(their, our) is not None
            if name == "duplicate":
                return registry.lookup(our, their) is not None
            if name == "registry_full":
                previous = registry.lookup(our, their)
                if previous is None and len(registry) >= config.max_waiting:
                    return True
                older = self._sessions.get(previous) if previous is not None else None
                same = older is not None and older.origin == origin
                return not same and self._waiting_by_ip.get(origin, 0) >= config.max_waiting_per_ip
            raise InvalidTransition("MediatorSession", session.state, f"guard {name}")

        transition = _step(session.state, "response", oracle)
        session.nonce = None
        if session.rtt is not None:
            session.rtt = max(0.0, now - session.rtt)
        if transition.target == CLOSED:
            guard = transition.guards[0].name
            code, text = _GUARD_FAILURE[guard]
            payload = _retry(code, text) if code == _R.BUSY else _abort(code, text)
            out.append(Send(conn, payload))
            self._note("rejected", conn, session, text, _GUARD_CAUSE[guard])
            self._close(conn, session, out, f"response: {text}")
            return
        if transition.target == DISCONNECTING:
            self._pair(conn, session, transition, now, out)
            return
        # waiting: register (replacing an older identical registration, if any)
        self._move(conn, session, transition)
        previous = registry.register(our, their, conn)
        if previous is not None and previous != conn:
            older = self._sessions.get(previous)
            if older is not None and older.state == WAITING:
                _step(older.state, "replaced")
                out.append(
                    Send(
                        previous,
                        _abort(_R.DUPLICATE_REGISTRATION, "replaced by a newer registration"),
                    )
                )
                self._note("replaced", previous, older, f"replaced by connection {conn}")
                # The registry entry now belongs to ``conn``: forget ``older`` without touching it.
                self._count(previous, older, -1)
                older.state = CLOSED
                self._sessions.pop(previous, None)
                out.append(Close(previous, "replaced: duplicate registration"))
        wait = config.wait_timeout
        session.deadline = session.wait_end = None if wait is None else now + wait
        out.append(SetTimer(conn, session.deadline))
        self._note("registered", conn, session)

    def _pair(
        self,
        conn: ConnId,
        session: _Session,
        transition: Transition,
        now: float,
        out: list[MediatorAction],
    ) -> None:
        """``session`` (the later registrant) becomes the Peer, the waiting partner the Client."""
        client_conn = self._registry.claim(session.our, session.their)
        client = self._sessions.get(client_conn) if client_conn is not None else None
        if client is None or client_conn is None or client.state != WAITING:
            # Registry out of step with sessions (shared backend lost a race): treat as a plain
            # registration attempt failing softly; the advertiser may retry.
            _step(session.state, "bad_input")
            out.append(Send(conn, _retry(_R.BUSY, "partner vanished while pairing, retry")))
            self._close(conn, session, out, "pairing race")
            return
        pairing_id = self._nonce_source(wire.PAIRING_ID_SIZE)
        coord = session.coord and client.coord and self._coordinates()
        try:
            disconnect = wire.PeerDisconnect(
                pairing_id=pairing_id,
                peer=wire.Address.from_tuple(session.remote),
                client=wire.Address.from_tuple(client.remote),
                client_local=client.local,
                extensions=_forwarded(client.cands)
                + _dial_schedule(session.rtt, client.rtt)
                + (_COORDINATE_ITEM if coord else ()),
            ).encode()
        except ProtocolError as error:  # an observed address the wire cannot carry
            self._registry.register(client.our, client.their, client_conn)
            self._bad(conn, session, f"cannot encode PeerDisconnect: {error.reason}", out)
            return
        self._move(conn, session, transition)
        partner_step = _step(client.state, "partner_arrived")
        self._count(client_conn, client, -1)  # it left the registry through claim()
        client.state = partner_step.target
        session.partner, client.partner = client_conn, conn
        session.coord = client.coord = coord
        session.nonce = pairing_id  # the Client's PeerIdentification carries the same id
        deadline = now + self.config.confirm_timeout
        session.deadline = client.deadline = deadline
        out.append(Send(conn, disconnect))
        out.append(SetTimer(conn, deadline))
        out.append(SetTimer(client_conn, deadline))
        self._note("paired", conn, session, cause="coordinated" if coord else "")

    def _confirmed(
        self, conn: ConnId, session: _Session, now: float, out: list[MediatorAction]
    ) -> None:
        """The Peer closed cleanly after PeerDisconnect: it is listening; introduce it."""
        del now
        client_conn = session.partner
        client = self._sessions.get(client_conn) if client_conn is not None else None
        _step(session.state, "eof")
        if client is None or client_conn is None:
            self._close(conn, session, out, "eof: confirmed, but the Client is gone")
            return
        try:
            identification = wire.PeerIdentification(
                version=wire.PROTOCOL_VERSION,
                pairing_id=session.nonce or b"",
                peer=wire.Address.from_tuple(session.remote),
                peer_local=session.local,
                extensions=_forwarded(session.cands),
            ).encode()
        except ProtocolError as error:
            self._close(conn, session, out, "eof: confirmed")
            self._bad(client_conn, client, f"cannot encode PeerIdentification: {error.reason}", out)
            return
        self._close(conn, session, out, "eof: PeerDisconnect confirmed")
        _step(client.state, "partner_confirmed", _uncoordinated)
        out.append(Send(client_conn, identification))
        self._note("introduced", client_conn, client)
        client.partner = None
        self._close(client_conn, client, out, "partner_confirmed: PeerIdentification sent")
