"""RelayCore: the relay (issue 14; spec/relay.md) as one sans-IO object, events in, actions out.

Why a relay: where no direct TCP connection forms (two NATs that answer unsolicited SYNs with
RST, a NAT that randomises ports), both peers connect *out* to the relay, and it splices the two
connections. The Noise KK channel runs end to end through it, so the relay forwards ciphertext
it can neither read nor change undetected.

What the core decides (the adapter, :mod:`p2psc.aio.relay`, only moves bytes and time):

- **Who is spliced.** Each connection proves it owns the key it names (a nonce sealed to it,
  HPKE, under :func:`p2psc.relay_wire.challenge_info`: a relay-only context, so no Mediator
  challenge opens as a relay one or vice versa) and names the pairing (the Mediator's 16-byte
  pairing id) and its partner's key. Two authenticated connections are spliced only when each
  names the other's key and both name the same pairing id; nothing else is ever joined.
- **Limits** (:class:`RelayConfig`): unauthenticated connections in total and their deadline;
  relay connections per address, in total and per proven key; per circuit a duration, a byte
  budget (both directions together) and a rate (a token bucket per direction: over it, the core
  asks the adapter to stop reading that side until the bucket refills, so a fast sender is
  slowed, never cut). A circuit that reaches its duration or byte budget ends with a RelayAbort
  (``RELAY_LIMIT``) that both peers read as a typed error.
- **Where a circuit may be cut.** The relay follows the framing of what it forwards (the one
  Noise handshake frame each way, then channel records, whose 2-byte lengths are in clear) and
  forwards whole records only (the start of one is held until it is complete), so a limit ends
  each direction right after a whole record: :data:`~p2psc.relay_wire.END_MARKER` (a record
  length of 0, which no record has) and a RelayAbort frame, and the receiving channel reports
  :class:`~p2psc.errors.RelayLimitReached` instead of a cut record. (A record the sender had
  only partly sent when the limit struck is dropped: it was never the receiver's.)
- **Timers**: one per connection (the adapter's :class:`~p2psc.core.io.SetTimer`), at the
  earliest of its step deadline, its circuit's end, its rate-limit resume time.

Control flow is :class:`p2psc.machines.relay.RelaySession`, stepped through its compiled table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from p2psc import relay_wire as rw
from p2psc import wire
from p2psc.core.admission import Admission, origin_of
from p2psc.core.io import Close, Closed, ConnId, Event, Opened, Received, Send, SetTimer, TimerFired
from p2psc.errors import P2pscError, ProtocolError
from p2psc.keys import (
    HPKE,
    NONCE_SIZE,
    NonceCrypto,
    NonceSource,
    PublicKey,
    nonces_equal,
    system_nonces,
)
from p2psc.machines.compiler import MachineTable, compile_machine
from p2psc.machines.relay import RelaySession

__all__ = [
    "PauseReading",
    "RelayAction",
    "RelayConfig",
    "RelayCore",
    "RelayNote",
    "RelaySnapshot",
    "ResumeReading",
    "ShutdownWrite",
]

TABLE: MachineTable = compile_machine(RelaySession)
MiB = 1 << 20


@dataclass(frozen=True, slots=True)
class PauseReading:
    """Stop reading from ``conn`` (its circuit's rate bucket is empty) until ResumeReading."""

    conn: ConnId


@dataclass(frozen=True, slots=True)
class ResumeReading:
    """Read from ``conn`` again."""

    conn: ConnId


@dataclass(frozen=True, slots=True)
class ShutdownWrite:
    """End our sending side of ``conn`` (TCP FIN) and keep reading: its partner ended its
    stream cleanly, so this side gets the same end; the other direction goes on."""

    conn: ConnId


@dataclass(frozen=True, slots=True)
class RelayNote:
    """A line for the operator's log: ``kind`` (``spliced``, ``ended``, ``refused``...), the
    connection and a short text."""

    kind: str
    conn: ConnId
    text: str


RelayAction = Send | Close | SetTimer | PauseReading | ResumeReading | ShutdownWrite | RelayNote

SessionRow = tuple[
    ConnId,
    str,  # the RelaySession state
    str,  # origin (what per-address limits count it under)
    float | None,  # deadline
    bytes,  # a partial frame
    bytes,  # our_key (b"" before an admitted RelayRequest)
    bytes,  # their_key
    bytes,  # pairing id
    bytes,  # the nonce while challenged
    bool,  # requested
    bool,  # authenticated
    ConnId | None,  # its circuit (named by the circuit's first connection)
]
DirectionRow = tuple[
    ConnId, ConnId, bytes, bool, float, float, float | None, bool, bool
]  # _Direction's fields in order
CircuitRow = tuple[
    ConnId, ConnId, float, float | None, int, str | None, tuple[DirectionRow, ...]
]  # a, b, started, deadline, bytes, ending, directions
RelaySnapshot = tuple[tuple[SessionRow, ...], tuple[CircuitRow, ...]]
"""What :meth:`RelayCore.snapshot` returns."""


@dataclass(frozen=True)
class RelayConfig:
    """Every limit of a relay; spec/relay.md section 5 says why each default is what it is.

    ``max_rate`` is bytes per second per direction (0: unlimited), with a bucket of ``burst``
    bytes; ``max_bytes`` counts both directions of a circuit together (0: unlimited);
    ``max_duration`` is seconds from the splice (0: unlimited)."""

    request_timeout: float = 10.0
    wait_timeout: float = 30.0
    max_duration: float = 3600.0
    max_bytes: int = 1024 * MiB
    max_rate: int = 4 * MiB
    burst: int = 1 * MiB
    max_pending: int = 1024
    max_connections: int = 4096
    max_per_address: int = 64
    max_per_key: int = 16
    challenge_rate: float = 50.0
    challenge_burst: int = 200
    crypto: NonceCrypto = HPKE
    nonce_source: NonceSource = system_nonces

    def __post_init__(self) -> None:
        if min(self.request_timeout, self.wait_timeout) <= 0:
            raise ValueError("request_timeout and wait_timeout must be > 0")
        if min(self.max_duration, self.max_bytes, self.max_rate) < 0:
            raise ValueError("max_duration, max_bytes and max_rate must be >= 0 (0: no limit)")
        if self.max_rate and self.burst < 1:
            raise ValueError("burst must be at least 1 byte")
        if min(self.max_pending, self.max_connections, self.max_per_address, self.max_per_key) < 1:
            raise ValueError("connection limits must be at least 1")


@dataclass(slots=True)
class _Direction:
    """One direction of a circuit (bytes read from ``src``, written to ``dst``)."""

    src: ConnId
    dst: ConnId
    held: bytes = b""
    """The start of a frame or record not yet complete: held back (at most one record), so
    that everything forwarded is whole and a limit can end the stream at a boundary."""
    in_frame: bool = True
    """Before the first record: the Noise handshake frame (6-byte header) comes first."""
    tokens: float = 0.0
    refill_at: float = 0.0
    paused_until: float | None = None
    done: bool = False
    eof: bool = False


@dataclass(slots=True)
class _Circuit:
    a: ConnId
    b: ConnId
    started: float
    deadline: float | None
    bytes: int = 0
    ending: str | None = None
    directions: dict[ConnId, _Direction] = field(default_factory=dict)


@dataclass(slots=True)
class _Session:
    state: str
    address: str
    deadline: float | None
    rx: bytes = b""
    our_key: bytes = b""
    their_key: bytes = b""
    pairing_id: bytes = b""
    nonce: bytes = b""
    requested: bool = False
    authenticated: bool = False
    circuit: _Circuit | None = None


class RelayCore:
    """Every connection of one relay; see the module docstring."""

    def __init__(self, config: RelayConfig | None = None) -> None:
        self.config = config or RelayConfig()
        self.sessions: dict[ConnId, _Session] = {}
        self.waiting: dict[tuple[bytes, bytes, bytes], ConnId] = {}
        """(pairing id, key, partner key) -> the authenticated connection waiting for it."""
        self.per_address: dict[str, int] = {}
        self.per_key: dict[bytes, int] = {}
        self.admitted = 0
        self.circuits = 0
        self.spliced_total = 0
        self.relayed_bytes = 0
        self._pending = 0
        self._budget = Admission(self.config.challenge_rate, self.config.challenge_burst)
        """Only its per-origin challenge budget is used (the Mediator's token bucket)."""

    # --- public ---------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Connections that have not sent their RelayRequest yet."""
        return self._pending

    def partner_of(self, conn: ConnId) -> ConnId | None:
        """The other side of ``conn``'s circuit (None: not spliced)."""
        session = self.sessions.get(conn)
        if session is None or session.circuit is None:
            return None
        circuit = session.circuit
        return circuit.b if conn == circuit.a else circuit.a

    def handle(self, event: Event, now: float) -> list[RelayAction]:
        """Feed one event; return the actions to execute, in order."""
        if isinstance(event, Opened):
            return self._opened(event, now)
        session = self.sessions.get(event.conn)
        if session is None:
            return []
        if isinstance(event, Received):
            if session.state == "spliced":
                return self._forward(event.conn, session, event.data, now)
            return self._bytes(event.conn, session, event.data, now)
        if isinstance(event, Closed):
            return self._closed(event.conn, session, event, now)
        assert isinstance(event, TimerFired)
        return self._timer(event.conn, session, now)

    def shutdown(self) -> list[RelayAction]:
        """Close everything (the relay stops)."""
        actions: list[RelayAction] = []
        for conn in sorted(self.sessions):
            session = self.sessions.get(conn)
            if session is not None:
                actions += self._end(
                    conn,
                    session,
                    "shutdown",
                    wire.Reason.SHUTTING_DOWN,
                    "the relay is shutting down",
                )
        return actions

    # --- snapshots --------------------------------------------------------------------------

    def snapshot(self) -> RelaySnapshot:
        """Everything that determines future behaviour, as nested tuples (hashable): each
        session and each circuit. Counters follow from the sessions; left out, as at the
        Mediator (:meth:`p2psc.core.mediator.MediatorCore.snapshot`): the per-origin challenge
        budgets (rate state; a rebuilt core starts with full budgets) and the operator's
        statistics (``spliced_total``, ``relayed_bytes``), which decide nothing."""
        sessions = tuple(
            (
                conn,
                s.state,
                s.address,
                s.deadline,
                s.rx,
                s.our_key,
                s.their_key,
                s.pairing_id,
                s.nonce,
                s.requested,
                s.authenticated,
                None if s.circuit is None else s.circuit.a,
            )
            for conn, s in sorted(self.sessions.items())
        )
        circuits = {s.circuit.a: s.circuit for s in self.sessions.values() if s.circuit}
        return sessions, tuple(
            (
                c.a,
                c.b,
                c.started,
                c.deadline,
                c.bytes,
                c.ending,
                tuple(_direction_row(d) for _, d in sorted(c.directions.items())),
            )
            for _, c in sorted(circuits.items())
        )

    @classmethod
    def from_snapshot(cls, snapshot: RelaySnapshot, config: RelayConfig | None = None) -> RelayCore:
        """Rebuild a core from :meth:`snapshot` output (the explorer's relay model does)."""
        sessions, circuits = snapshot
        core = cls(config)
        by_a: dict[ConnId, _Circuit] = {}
        for a, b, started, deadline, count, ending, directions in circuits:
            circuit = by_a[a] = _Circuit(a, b, started, deadline, count, ending)
            for src, dst, held, in_frame, tokens, refill_at, paused, done, eof in directions:
                circuit.directions[src] = _Direction(
                    src, dst, held, in_frame, tokens, refill_at, paused, done, eof
                )
        core.circuits = len(by_a)
        for row in sessions:
            (
                conn,
                state,
                address,
                deadline,
                rx,
                our,
                their,
                pairing,
                nonce,
                requested,
                auth,
                first,
            ) = row
            session = _Session(state, address, deadline, rx, our, their, pairing, nonce)
            session.requested, session.authenticated = requested, auth
            if first is not None:
                session.circuit = by_a[first]
            core.sessions[conn] = session
            if not requested:
                core._pending += 1
            if our:  # admitted at its request
                core._count(session, +1)
            if auth:
                core.per_key[our] = core.per_key.get(our, 0) + 1
            if state == "waiting":
                core.waiting[(pairing, our, their)] = conn
        return core

    # --- admission and authentication -----------------------------------------------------

    def _opened(self, event: Opened, now: float) -> list[RelayAction]:
        if self.pending >= self.config.max_pending:
            return [Close(event.conn, "too many unauthenticated relay connections")]
        deadline = now + self.config.request_timeout
        origin = origin_of(event.remote[0])  # an IPv6 /64 counts as one address
        self.sessions[event.conn] = _Session(TABLE.initial, origin, deadline)
        self._pending += 1
        return [SetTimer(event.conn, deadline)]

    def _bytes(self, conn: ConnId, session: _Session, data: bytes, now: float) -> list[RelayAction]:
        buf = session.rx + data
        try:
            taken = rw.take_relay_frame(buf)
        except ProtocolError as error:
            return self._end(conn, session, "bad_input", wire.Reason.MALFORMED, error.reason)
        if taken is None:
            if len(buf) > wire.HEADER_SIZE + wire.MAX_PAYLOAD:  # cannot happen: bounded above
                return self._end(conn, session, "bad_input", wire.Reason.MALFORMED, "oversized")
            session.rx = buf
            return []
        message, rest = taken
        session.rx = b""
        if rest:
            # Nothing may follow a request or a response before the relay answers it.
            return self._end(
                conn, session, "bad_input", wire.Reason.MALFORMED, "bytes before the relay's answer"
            )
        if session.state == "awaiting_request" and isinstance(message, rw.RelayRequest):
            return self._request(conn, session, message, now)
        if session.state == "challenged" and isinstance(message, rw.RelayResponse):
            return self._response(conn, session, message, now)
        return self._end(
            conn,
            session,
            "bad_input",
            wire.Reason.MALFORMED,
            f"{type(message).__name__} not expected in state {session.state}",
        )

    def _request(
        self, conn: ConnId, session: _Session, message: rw.RelayRequest, now: float
    ) -> list[RelayAction]:
        config = self.config
        sealed = b""
        nonce = b""

        def guard(name: str) -> bool:
            nonlocal sealed, nonce
            if name == "version_supported":
                return message.version == wire.PROTOCOL_VERSION
            if name == "self_pairing":
                return message.our_key == message.their_key
            if name == "admitted":
                return (
                    self.admitted < config.max_connections
                    and self.per_address.get(session.address, 0) < config.max_per_address
                )
            if name == "challenge_budget":
                return self._budget.take_challenge(session.address, now)
            assert name == "key_usable"
            nonce = config.nonce_source(NONCE_SIZE)
            info = rw.challenge_info(message.our_key, message.their_key, message.pairing_id)
            try:
                sealed = config.crypto.seal(PublicKey.from_raw(message.our_key), nonce, info)
            except P2pscError:
                return False
            return len(nonce) == NONCE_SIZE

        self._pending -= 1  # whatever the outcome, it is no longer a silent connection
        session.requested = True
        transition = TABLE.step(session.state, "request", guard)
        if transition.target == "closed":
            code, text = self._refusal(transition.guards[0].name if transition.guards else "")
            session.state = "closed"
            return self._drop(conn, session, code, text, "refused")
        session.state = transition.target
        session.our_key = message.our_key
        session.their_key = message.their_key
        session.pairing_id = message.pairing_id
        session.nonce = nonce
        session.deadline = now + config.request_timeout
        self._count(session, +1)
        return [Send(conn, rw.RelayChallenge(sealed).encode()), SetTimer(conn, session.deadline)]

    @staticmethod
    def _refusal(guard: str) -> tuple[int, str]:
        return {
            "version_supported": (wire.Reason.UNSUPPORTED_VERSION, "unsupported protocol version"),
            "self_pairing": (wire.Reason.SELF_PAIRING, "a key cannot be relayed to itself"),
            "admitted": (
                rw.RelayReason.RELAY_REFUSED,
                "too many relay connections (per address or in total)",
            ),
            "key_usable": (wire.Reason.IDENTITY_CHECK_FAILED, "cannot seal a nonce to this key"),
            "nonce_matches": (wire.Reason.IDENTITY_CHECK_FAILED, "wrong RelayResponse"),
            "challenge_budget": (
                rw.RelayReason.RELAY_REFUSED,
                "too many challenges for this address; retry later",
            ),
            "key_admitted": (
                rw.RelayReason.RELAY_REFUSED,
                "too many relay connections for this key",
            ),
        }.get(guard, (wire.Reason.UNSPECIFIED, "refused"))

    def _response(
        self, conn: ConnId, session: _Session, message: rw.RelayResponse, now: float
    ) -> list[RelayAction]:
        config = self.config
        partner_key = (session.pairing_id, session.their_key, session.our_key)
        partner = self.waiting.get(partner_key)

        def guard(name: str) -> bool:
            if name == "nonce_matches":
                return nonces_equal(message.nonce, session.nonce)
            if name == "key_admitted":
                return self.per_key.get(session.our_key, 0) < config.max_per_key
            assert name == "partner_waiting"
            return partner is not None

        transition = TABLE.step(session.state, "response", guard)
        session.nonce = b""
        if transition.target == "closed":
            code, text = self._refusal(transition.guards[0].name if transition.guards else "")
            session.state = "closed"
            return self._drop(conn, session, code, text, "refused")
        session.state = transition.target
        session.authenticated = True
        self.per_key[session.our_key] = self.per_key.get(session.our_key, 0) + 1
        if transition.target == "waiting":
            actions: list[RelayAction] = []
            mine = (session.pairing_id, session.our_key, session.their_key)
            older = self.waiting.get(mine)
            if older is not None and older in self.sessions:  # the same key reconnected
                old = self.sessions[older]
                old.state = TABLE.step(old.state, "replaced").target
                actions += self._drop(
                    older,
                    old,
                    wire.Reason.DUPLICATE_REGISTRATION,
                    "replaced by a newer connection of the same key for this pairing",
                    "replaced",
                )
            self.waiting[mine] = conn
            session.deadline = now + config.wait_timeout
            return [*actions, SetTimer(conn, session.deadline)]
        assert partner is not None
        del self.waiting[partner_key]
        other = self.sessions[partner]
        other.state = TABLE.step(other.state, "partner_arrived").target
        return self._splice(partner, other, conn, session, now)

    # --- circuits ---------------------------------------------------------------------------

    def _splice(
        self, a: ConnId, sa: _Session, b: ConnId, sb: _Session, now: float
    ) -> list[RelayAction]:
        config = self.config
        deadline = now + config.max_duration if config.max_duration else None
        circuit = _Circuit(a, b, now, deadline)
        for src, dst in ((a, b), (b, a)):
            circuit.directions[src] = _Direction(
                src, dst, tokens=float(config.burst), refill_at=now
            )
        sa.circuit = sb.circuit = circuit
        sa.deadline = sb.deadline = None
        self.circuits += 1
        self.spliced_total += 1
        hello = rw.RelayConnected(int(config.max_duration), config.max_bytes).encode()
        return [
            Send(a, hello),
            Send(b, hello),
            RelayNote("spliced", b, f"circuit {a}<->{b} for pairing {sa.pairing_id.hex()}"),
            *self._arm(a, sa, now),
            *self._arm(b, sb, now),
        ]

    def _forward(
        self, conn: ConnId, session: _Session, data: bytes, now: float
    ) -> list[RelayAction]:
        circuit = session.circuit
        assert circuit is not None
        direction = circuit.directions[conn]
        if direction.done:
            return []  # this side already got its end marker: what it still sends is dropped
        actions: list[RelayAction] = []
        config = self.config
        first = direction.in_frame
        whole = self._whole(direction, data)
        over = bool(config.max_bytes) and circuit.bytes + len(whole) > config.max_bytes
        if over:  # only the whole records that fit in the budget
            whole = whole[: _fitting(whole, config.max_bytes - circuit.bytes, first)]
        if whole:
            actions.append(Send(direction.dst, whole))
            circuit.bytes += len(whole)
            self.relayed_bytes += len(whole)
        if config.max_rate:
            self._refill(direction, now)
            direction.tokens -= len(data)
            if direction.tokens < 0 and direction.paused_until is None:
                direction.paused_until = now + (-direction.tokens) / config.max_rate
                actions.append(PauseReading(conn))
                actions += self._arm(conn, session, now)
        if over or (config.max_bytes and circuit.bytes >= config.max_bytes):
            why = f"the circuit's data limit ({config.max_bytes} bytes) is reached"
            actions += self._end_circuit(circuit, why)
        return actions

    @staticmethod
    def _whole(direction: _Direction, data: bytes) -> bytes:
        """The complete frames and records of ``held + data``; keeps the incomplete rest.

        The framing: the one Noise handshake frame (6-byte header, payload length in bytes
        4-5), then channel records (2-byte length). Only lengths are read: nothing is decrypted
        or changed. What is held is less than one record (a length over the record maximum
        still ends at 65535 bytes), so a circuit holds at most ~64 KiB per direction."""
        buf = direction.held + data if direction.held else data
        end, pos = len(buf), 0
        while True:
            if direction.in_frame:
                if end - pos < wire.HEADER_SIZE:
                    break
                stop = pos + wire.HEADER_SIZE + ((buf[pos + 4] << 8) | buf[pos + 5])
            else:
                if end - pos < 2:
                    break
                stop = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
            if stop > end:
                break
            pos = stop
            direction.in_frame = False
        if pos == end:
            direction.held = b""
            return buf
        direction.held = buf[pos:]
        return buf[:pos]

    def _refill(self, direction: _Direction, now: float) -> None:
        config = self.config
        elapsed = max(0.0, now - direction.refill_at)
        direction.tokens = min(float(config.burst), direction.tokens + elapsed * config.max_rate)
        direction.refill_at = now

    def _end_circuit(self, circuit: _Circuit, why: str) -> list[RelayAction]:
        """A limit: each side gets, after the last whole record forwarded to it, the end marker
        and RelayAbort(RELAY_LIMIT); the partial record held back is dropped; both are closed."""
        circuit.ending = why
        actions: list[RelayAction] = [RelayNote("limit", circuit.a, why)]
        trailer = rw.END_MARKER + rw.RelayAbort(rw.RelayReason.RELAY_LIMIT, why).encode()
        for direction in circuit.directions.values():
            direction.done = True
            direction.held = b""
            actions.append(Send(direction.dst, trailer))
        return actions + self._close_circuit(circuit, "limit_reached", why)

    def _close_circuit(self, circuit: _Circuit, event: str, why: str) -> list[RelayAction]:
        actions: list[RelayAction] = []
        for conn in (circuit.a, circuit.b):
            session = self.sessions.get(conn)
            if session is None:
                continue
            session.state = TABLE.step(session.state, event).target
            actions += self._forget(conn, session)
            actions.append(Close(conn, why))
        self.circuits -= 1
        actions.append(
            RelayNote(
                "ended",
                circuit.a,
                f"circuit {circuit.a}<->{circuit.b}: {why}; {circuit.bytes} bytes",
            )
        )
        return actions

    # --- timers and closes ------------------------------------------------------------------

    def _arm(self, conn: ConnId, session: _Session, now: float) -> list[RelayAction]:
        del now
        due = [session.deadline] if session.deadline is not None else []
        circuit = session.circuit
        if circuit is not None:
            if circuit.deadline is not None:
                due.append(circuit.deadline)
            paused = circuit.directions[conn].paused_until
            if paused is not None:
                due.append(paused)
        return [SetTimer(conn, min(due) if due else None)]

    def _timer(self, conn: ConnId, session: _Session, now: float) -> list[RelayAction]:
        circuit = session.circuit
        if circuit is None:
            if session.deadline is None:
                return []
            if now < session.deadline:
                return [SetTimer(conn, session.deadline)]
            if session.state == "waiting":
                return self._end(
                    conn,
                    session,
                    "timeout",
                    rw.RelayReason.RELAY_NO_PARTNER,
                    f"the partner did not reach the relay within {self.config.wait_timeout:g} s",
                )
            return self._end(
                conn,
                session,
                "timeout",
                wire.Reason.TIMEOUT,
                "no relay message before the deadline",
            )
        actions: list[RelayAction] = []
        direction = circuit.directions[conn]
        if direction.paused_until is not None and now >= direction.paused_until:
            direction.paused_until = None
            self._refill(direction, now)
            actions.append(ResumeReading(conn))
        if circuit.deadline is not None and now >= circuit.deadline:
            why = f"the circuit's duration limit ({self.config.max_duration:g} s) is reached"
            return actions + self._end_circuit(circuit, why)
        if conn in self.sessions:
            actions += self._arm(conn, session, now)
        return actions

    def _closed(
        self, conn: ConnId, session: _Session, event: Closed, now: float
    ) -> list[RelayAction]:
        del now
        circuit = session.circuit
        kind = "eof" if event.clean else "lost"
        if circuit is None:
            session.state = TABLE.step(session.state, kind).target
            return [*self._forget(conn, session, closed=True), Close(conn, kind)]
        direction = circuit.directions[conn]
        if event.clean and not direction.eof:
            # A clean end of one direction (after its channel close record): pass the FIN on,
            # keep the other direction until it ends too.
            direction.eof = True
            if not all(d.eof for d in circuit.directions.values()):
                return [ShutdownWrite(direction.dst)]
            return self._close_circuit(circuit, "eof", "both sides ended their streams")
        # A reset or error: the other side gets the close (its channel reports the cut).
        session.state = TABLE.step(session.state, kind).target
        actions = [*self._forget(conn, session, closed=True), Close(conn, kind)]
        other = circuit.b if conn == circuit.a else circuit.a
        other_session = self.sessions.get(other)
        if other_session is not None:
            other_session.state = TABLE.step(other_session.state, "partner_gone").target
            actions += self._forget(other, other_session)
            actions.append(Close(other, "the partner's connection ended"))
        self.circuits -= 1
        actions.append(
            RelayNote(
                "ended",
                conn,
                f"circuit {circuit.a}<->{circuit.b}: a side was lost ({event.error}); "
                f"{circuit.bytes} bytes",
            )
        )
        return actions

    def _end(
        self, conn: ConnId, session: _Session, event: str, code: int, text: str
    ) -> list[RelayAction]:
        if session.circuit is not None:
            return self._close_circuit(session.circuit, event, text)
        session.state = TABLE.step(session.state, event).target
        return self._drop(conn, session, code, text, event)

    def _drop(
        self, conn: ConnId, session: _Session, code: int, text: str, kind: str
    ) -> list[RelayAction]:
        actions = self._forget(conn, session)
        return [
            *actions,
            Send(conn, rw.RelayAbort(code, text).encode()),
            Close(conn, text),
            RelayNote(kind, conn, f"{rw.reason_name(code)}: {text}"),
        ]

    def _forget(self, conn: ConnId, session: _Session, closed: bool = False) -> list[RelayAction]:
        if self.sessions.pop(conn, None) is not None and not session.requested:
            self._pending -= 1
        if session.our_key:  # admitted at the request
            self._count(session, -1)
            mine = (session.pairing_id, session.our_key, session.their_key)
            if self.waiting.get(mine) == conn:
                del self.waiting[mine]
        return [] if closed else [SetTimer(conn, None)]

    def _count(self, session: _Session, delta: int) -> None:
        self.admitted += delta
        self.per_address[session.address] = self.per_address.get(session.address, 0) + delta
        if not self.per_address[session.address]:
            del self.per_address[session.address]
        if delta < 0 and session.authenticated:  # counted per key from its proof on
            left = self.per_key[session.our_key] - 1
            if left:
                self.per_key[session.our_key] = left
            else:
                del self.per_key[session.our_key]


def _direction_row(d: _Direction) -> DirectionRow:
    return (d.src, d.dst, d.held, d.in_frame, d.tokens, d.refill_at, d.paused_until, d.done, d.eof)


def _fitting(whole: bytes, budget: int, first_is_frame: bool) -> int:
    """How many bytes of ``whole`` (complete frames/records) fit in ``budget`` without cutting
    one: the end of the last unit that ends at or before ``budget``."""
    pos, end = 0, len(whole)
    in_frame = first_is_frame
    while pos < end:
        if in_frame:
            stop = pos + wire.HEADER_SIZE + ((whole[pos + 4] << 8) | whole[pos + 5])
        else:
            stop = pos + 2 + ((whole[pos] << 8) | whole[pos + 1])
        if stop > budget:
            break
        pos, in_frame = stop, False
    return pos
