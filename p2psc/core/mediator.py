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

import functools
import ipaddress
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from p2psc import wire
from p2psc.core.io import (
    Action,
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

__all__ = [
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
CLOSED = "closed"
_PENDING = frozenset({AWAITING_ADVERTISE, CHALLENGED})
_COUNTED = {AWAITING_ADVERTISE: "pending", CHALLENGED: "pending", WAITING: "waiting"}
"""Which counter (see MediatorCore._count) a state is counted in; other states are in none."""
_FRAMING = frozenset({AWAITING_ADVERTISE, CHALLENGED})

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
}


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

    def __post_init__(self) -> None:
        for name in ("advertise_timeout", "response_timeout", "confirm_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.wait_timeout is not None and not self.wait_timeout > 0:
            raise ValueError("wait_timeout must be > 0 or None")
        for name in ("max_pending", "max_pending_per_ip", "max_waiting", "max_waiting_per_ip"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


@dataclass(frozen=True, slots=True)
class MediatorNote:
    """Something worth a log line: registrations, pairings, failures (with reason)."""

    kind: str
    """refused | rejected | challenged | registered | replaced | paired | introduced |
    failed | closed"""
    conn: ConnId
    remote: tuple[str, int] | None = None
    our_key: bytes | None = None
    their_key: bytes | None = None
    partner: ConnId | None = None
    reason: str = ""


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
]
MediatorSnapshot = tuple[tuple[SessionRow, ...], tuple[tuple[RegistryKey, int], ...], bool]
"""What :meth:`MediatorCore.snapshot` returns: sessions by conn, registry entries, shutting down."""


class _Session:
    """Per-connection state; deliberately tiny (a waiting registration budget is 4 KiB)."""

    __slots__ = ("buf", "deadline", "local", "nonce", "our", "partner", "remote", "state", "their")

    def __init__(self, state: str, remote: tuple[str, int], deadline: float | None) -> None:
        self.state = state
        self.remote = remote
        self.deadline = deadline
        self.buf = b""
        self.local: wire.Address | None = None
        self.our = b""
        self.their = b""
        self.nonce: bytes | None = None
        self.partner: ConnId | None = None

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
        )


@functools.lru_cache(maxsize=4096)
def _ipv6_source(host: str) -> str:
    try:
        address = ipaddress.IPv6Address(host.partition("%")[0])
    except ValueError:
        return host
    if address.ipv4_mapped is not None:  # an IPv4 client of a dual-stack socket
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


def _source(host: str) -> str:
    """The "source IP" the per-address limits count (spec/mediator.md §6): an IPv4 address
    itself, an IPv6 address's /64 prefix (one host is usually given a whole /64, so counting
    per /128 would let it fill the registry from addresses it gets for free)."""
    return host if ":" not in host else _ipv6_source(host)


def _version_unsupported(name: str) -> bool:
    return name != "version_supported"


def _abort(code: int, text: str) -> bytes:
    return wire.AdvertiseAbort(code=code, text=text).encode()


def _retry(code: int, text: str) -> bytes:
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
        self._pending = 0
        self._pending_by_ip: dict[str, int] = {}
        self._waiting_by_ip: dict[str, int] = {}
        self._shutting_down = False

    # --- introspection ------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Unverified connections (awaiting Advertise or the AdvertiseResponse)."""
        return self._pending

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
        """Everything that determines future behaviour, as nested tuples (hashable).

        The registry is included as its sorted entries; counters are derived from sessions.
        """
        sessions = tuple(s.as_tuple(conn) for conn, s in sorted(self._sessions.items()))
        registry = tuple(sorted(self._registry.items()))
        return (sessions, registry, self._shutting_down)

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
        sessions, registry, shutting_down = snapshot
        core = cls(config, nonce_source=nonce_source, crypto=crypto, observer=observer)
        core._shutting_down = bool(shutting_down)
        for row in sessions:
            conn, state, remote, deadline, buf, local, our, their, nonce, partner = row
            session = _Session(state, remote, deadline)
            session.buf, session.local, session.our, session.their = buf, local, our, their
            session.nonce, session.partner = nonce, partner
            core._sessions[conn] = session
            core._count(session, +1)
        for (our, their), handle in registry:
            core._registry.register(our, their, handle)
        return core

    # --- the one entry point --------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Action]:
        """Apply one adapter event at time ``now``; return the actions to execute, in order."""
        out: list[Action] = []
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
            self._on_closed(closed.conn, closed.error, now, out)
        elif kind is TimerFired:
            self._on_timer(event.conn, now, out)
        return out

    def shutdown(self, now: float) -> list[Action]:
        """Abort every session with SHUTTING_DOWN and refuse new connections from now on."""
        del now  # no deadline involved; kept for a uniform signature
        self._shutting_down = True
        out: list[Action] = []
        for conn in sorted(self._sessions):
            session = self._sessions.get(conn)
            if session is not None:
                text = "mediator shutting down"
                code = _R.SHUTTING_DOWN
                self._fail(conn, session, "shutdown", code, text, out, partner_code=code)
        return out

    # --- bookkeeping ----------------------------------------------------------------------

    def _count(self, session: _Session, delta: int) -> None:
        """Keep the pending / per-IP counters in step with ``session.state``."""
        state = session.state
        if state in _PENDING:
            table = self._pending_by_ip
            self._pending += delta
        elif state == WAITING:
            table = self._waiting_by_ip
        else:
            return
        ip = _source(session.remote[0])
        count = table.get(ip, 0) + delta
        if count > 0:
            table[ip] = count
        else:
            table.pop(ip, None)

    def _move(self, session: _Session, transition: Transition) -> None:
        target = transition.target
        counted = _COUNTED.get(session.state)
        if counted is _COUNTED.get(target):  # e.g. pending -> pending: no counter changes
            session.state = target
            return
        if counted is not None:
            self._count(session, -1)
        session.state = target
        if target in _COUNTED:
            self._count(session, +1)

    def _note(self, kind: str, conn: ConnId, session: _Session | None, reason: str = "") -> None:
        observer = self._observer
        if observer is None:
            return
        kinds = self._note_kinds
        if kinds is not None and kind not in kinds:
            return
        if session is None:
            observer(MediatorNote(kind, conn, reason=reason))
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
                )
            )

    def _close(self, conn: ConnId, session: _Session, out: list[Action], reason: str) -> None:
        """Forget ``session`` completely (registry entry included) and emit its Close."""
        state = session.state
        if state in _COUNTED:
            if state == WAITING:
                self._registry.unregister(session.our, session.their, conn)
            self._count(session, -1)
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
        out: list[Action],
        *,
        partner_code: int = _R.PEER_GONE,
    ) -> None:
        """Take ``event`` (a way to ``closed``), send AdvertiseAbort(code) when ``code`` is set,
        close, and if the session was in a pairing, fail the partner too."""
        _step(session.state, event)
        partner_conn = session.partner if session.state in (DISCONNECTING, CONFIRMING) else None
        if code is not None:
            out.append(Send(conn, _abort(code, text)))
        if event not in ("eof",):
            self._note("failed", conn, session, f"{event}: {text}")
        self._close(conn, session, out, f"{event}: {text}")
        if partner_conn is not None:
            partner = self._sessions.get(partner_conn)
            if partner is not None:
                _step(partner.state, "partner_lost")
                self._note("failed", partner_conn, partner, f"partner {event}: {text}")
                out.append(Send(partner_conn, _abort(partner_code, f"partner {event}: {text}")))
                self._close(partner_conn, partner, out, f"partner_lost: {event}")

    # --- events ---------------------------------------------------------------------------

    def _on_opened(
        self, conn: ConnId, remote: tuple[str, int], now: float, out: list[Action]
    ) -> None:
        if conn in self._sessions:
            return  # adapter bug: never reuse a live id; ignore rather than corrupt state
        remote = (remote[0], remote[1])
        ip = _source(remote[0])
        config = self.config
        if self._shutting_down:
            refusal: tuple[int, str] | None = (_R.SHUTTING_DOWN, "mediator shutting down")
        elif self._pending >= config.max_pending:
            refusal = (_R.BUSY, "too many unverified connections, retry later")
        elif self._pending_by_ip.get(ip, 0) >= config.max_pending_per_ip:
            refusal = (_R.BUSY, "too many unverified connections from your address")
        else:
            refusal = None
        if refusal is not None:
            _step(AWAITING_ADVERTISE, "busy")
            out.append(Send(conn, _retry(*refusal)))
            out.append(Close(conn, f"busy: {refusal[1]}"))
            self._note("refused", conn, None, refusal[1])
            return
        deadline = now + config.advertise_timeout
        session = _Session(AWAITING_ADVERTISE, remote, deadline)
        self._sessions[conn] = session
        self._count(session, +1)
        out.append(SetTimer(conn, deadline))

    def _on_closed(self, conn: ConnId, error: str | None, now: float, out: list[Action]) -> None:
        session = self._sessions.get(conn)
        if session is None:
            return
        if error is None and session.state == DISCONNECTING:
            self._confirmed(conn, session, now, out)
            return
        if error is None:
            text = "closed by the other side"
            if session.buf:
                text += " in the middle of a frame"
            self._fail(conn, session, "eof", None, text, out)
        else:
            self._fail(conn, session, "lost", None, error, out)

    def _on_timer(self, conn: ConnId, now: float, out: list[Action]) -> None:
        session = self._sessions.get(conn)
        if session is None:
            return
        if session.deadline is None or now < session.deadline:
            out.append(SetTimer(conn, session.deadline))  # early or stale timer: re-arm
            return
        step = {
            AWAITING_ADVERTISE: "no complete Advertise before the deadline",
            CHALLENGED: "no complete AdvertiseResponse before the deadline",
            WAITING: "the wanted peer did not register before the deadline",
            DISCONNECTING: "the Peer did not close after PeerDisconnect before the deadline",
            CONFIRMING: "the Peer did not confirm PeerDisconnect before the deadline",
        }[session.state]
        self._fail(conn, session, "timeout", _R.TIMEOUT, step, out, partner_code=_R.TIMEOUT)

    def _on_received(self, conn: ConnId, data: bytes, now: float, out: list[Action]) -> None:
        session = self._sessions.get(conn)
        if session is None or not data:
            return
        if session.state not in _FRAMING:
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

    def _bad(self, conn: ConnId, session: _Session, reason: str, out: list[Action]) -> None:
        self._fail(conn, session, "bad_input", _R.MALFORMED, reason, out)

    def _reject_version(
        self, conn: ConnId, session: _Session, reason: str, out: list[Action]
    ) -> None:
        transition = _step(session.state, "advertise", _version_unsupported)
        assert transition.target == CLOSED
        out.append(Send(conn, _abort(_R.UNSUPPORTED_VERSION, reason)))
        self._note("rejected", conn, session, f"unsupported version: {reason}")
        self._close(conn, session, out, f"advertise: {reason}")

    def _on_advertise(
        self,
        conn: ConnId,
        session: _Session,
        message: wire.Advertise,
        now: float,
        out: list[Action],
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
            if name == "self_pairing":
                return our == their
            raise InvalidTransition("MediatorSession", session.state, f"guard {name}")

        transition = _step(session.state, "advertise", oracle)
        session.our, session.their, session.local = our, their, message.local
        if transition.target == CLOSED:
            code, text = _GUARD_FAILURE[transition.guards[0].name]
            out.append(Send(conn, _abort(code, text)))
            self._note("rejected", conn, session, text)
            self._close(conn, session, out, f"advertise: {text}")
            return
        self._move(session, transition)
        deadline = session.deadline = now + self.config.response_timeout
        if type(sealed) is bytes and len(sealed) == SEALED_NONCE_SIZE:
            challenge = _CHALLENGE_HEADER + sealed  # what AdvertiseChallenge(sealed).encode() is
        else:
            challenge = wire.AdvertiseChallenge(encrypted_nonce=sealed).encode()  # (it raises)
        out.append(Send(conn, challenge))
        out.append(SetTimer(conn, deadline))
        if self._observer is not None:
            self._note("challenged", conn, session)

    def _on_response(
        self,
        conn: ConnId,
        session: _Session,
        message: wire.AdvertiseResponse,
        now: float,
        out: list[Action],
    ) -> None:
        registry = self._registry
        config = self.config
        our, their = session.our, session.their
        ip = _source(session.remote[0])
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
                same_ip = older is not None and _source(older.remote[0]) == ip
                return not same_ip and self._waiting_by_ip.get(ip, 0) >= config.max_waiting_per_ip
            raise InvalidTransition("MediatorSession", session.state, f"guard {name}")

        transition = _step(session.state, "response", oracle)
        session.nonce = None
        if transition.target == CLOSED:
            code, text = _GUARD_FAILURE[transition.guards[0].name]
            payload = _retry(code, text) if code == _R.BUSY else _abort(code, text)
            out.append(Send(conn, payload))
            self._note("rejected", conn, session, text)
            self._close(conn, session, out, f"response: {text}")
            return
        if transition.target == DISCONNECTING:
            self._pair(conn, session, transition, now, out)
            return
        # waiting: register (replacing an older identical registration, if any)
        self._move(session, transition)
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
                self._count(older, -1)
                older.state = CLOSED
                self._sessions.pop(previous, None)
                out.append(Close(previous, "replaced: duplicate registration"))
        wait = config.wait_timeout
        session.deadline = None if wait is None else now + wait
        out.append(SetTimer(conn, session.deadline))
        self._note("registered", conn, session)

    def _pair(
        self, conn: ConnId, session: _Session, transition: Transition, now: float, out: list[Action]
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
        try:
            disconnect = wire.PeerDisconnect(
                pairing_id=pairing_id,
                peer=wire.Address.from_tuple(session.remote),
                client=wire.Address.from_tuple(client.remote),
                client_local=client.local,
            ).encode()
        except ProtocolError as error:  # an observed address the wire cannot carry
            self._registry.register(client.our, client.their, client_conn)
            self._bad(conn, session, f"cannot encode PeerDisconnect: {error.reason}", out)
            return
        self._move(session, transition)
        partner_step = _step(client.state, "partner_arrived")
        self._count(client, -1)  # it left the registry through claim()
        client.state = partner_step.target
        session.partner, client.partner = client_conn, conn
        session.nonce = pairing_id  # the Client's PeerIdentification carries the same id
        deadline = now + self.config.confirm_timeout
        session.deadline = client.deadline = deadline
        out.append(Send(conn, disconnect))
        out.append(SetTimer(conn, deadline))
        out.append(SetTimer(client_conn, deadline))
        self._note("paired", conn, session)

    def _confirmed(self, conn: ConnId, session: _Session, now: float, out: list[Action]) -> None:
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
            ).encode()
        except ProtocolError as error:
            self._close(conn, session, out, "eof: confirmed")
            self._bad(client_conn, client, f"cannot encode PeerIdentification: {error.reason}", out)
            return
        self._close(conn, session, out, "eof: PeerDisconnect confirmed")
        _step(client.state, "partner_confirmed")
        out.append(Send(client_conn, identification))
        self._note("introduced", client_conn, client)
        client.partner = None
        self._close(client_conn, client, out, "partner_confirmed: PeerIdentification sent")
