"""FleetCore: a MediatorCore whose registry is shared by several instances (spec/mediator.md §10).

Why a subclass and not a synchronous :class:`~p2psc.core.registry.Registry`: a shared store
answers over the network, and the core is sans-IO. So the one step that needs the shared store,
"pair with the waiting partner or register" (the ``response`` transition of
:class:`~p2psc.machines.mediator.MediatorSession`), is split in two: the core checks the nonce
when the AdvertiseResponse arrives and emits a :class:`RegistryClaim` action; the adapter runs it
atomically in the store (one Lua script in Redis) and feeds the outcome back as a
:class:`RegistryAnswer` event, at which point the core takes the ``response`` transition with
the store's answer as its guards (``partner_waiting``: a partner was claimed; ``registry_full``:
the local waiting limit, or the store was unreachable; ``duplicate``: a registration was
replaced). While the answer is outstanding the session stays ``challenged`` (with its deadline
running as the backstop) and any byte it sends is a violation, as in ``waiting``.

Everything that crosses instances is a :class:`Notify` action (one message to one instance's
channel) and comes back as a :class:`Notice` event; refreshing the registrations' TTLs is a
:class:`RegistryRefresh` action per waiting session (:meth:`FleetCore.refresh`) whose outcome is
a :class:`RefreshAnswer`. Notices are idempotent and may be lost: every session that waits on
another instance has a deadline (``confirm_timeout``), and the refresh finds a claim whose notice
was lost.

Identities: an instance has a random 8-byte id (chosen by the adapter; the core draws nothing),
a registration is ``instance id + connection id`` (connection ids are never reused within a
process). The records stored in the registry and the notices are byte strings laid out in
:func:`encode_record` and :func:`encode_notice`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

from p2psc import wire
from p2psc.core.io import Close, ConnId, Send, SetTimer
from p2psc.core.mediator import (
    CHALLENGED,
    CLOSED,
    CONFIRMING,
    DISCONNECTING,
    WAITING,
    MediatorAction,
    MediatorConfig,
    MediatorCore,
    NoteObserver,
    _abort,
    _forwarded,
    _retry,
    _Session,
    _step,
    _uncoordinated,
)
from p2psc.errors import ProtocolError
from p2psc.keys import HPKE, NonceCrypto, NonceSource, nonces_equal, system_nonces
from p2psc.machines.compiler import GuardOracle, Transition

__all__ = [
    "CLAIMED",
    "ERROR",
    "FULL",
    "REGISTERED",
    "FleetAction",
    "FleetCore",
    "FleetEvent",
    "Notice",
    "Notify",
    "RefreshAnswer",
    "RegistryAnswer",
    "RegistryClaim",
    "RegistryRefresh",
    "RegistryUnregister",
    "decode_record",
    "encode_notice",
    "encode_record",
    "registry_key",
]

_R = wire.Reason

# RegistryAnswer outcomes
REGISTERED = "registered"
"""No partner waited: the registration is stored (it may have replaced an identical one)."""
CLAIMED = "claimed"
"""The partner's registration was claimed (atomically removed): this session is the Peer."""
FULL = "full"
"""No partner waited and registering was not allowed (the local waiting limit)."""
ERROR = "error"
"""The store could not be reached or failed: nothing is known to have changed."""

# RefreshAnswer statuses
KEPT = "kept"
LOST = "lost"
TAKEN = "claimed"
REPLACED = "replaced"

# Notice kinds (first byte)
N_CONFIRMED = b"F"
"""To the Client's instance: the Peer closed after PeerDisconnect; introduce it."""
N_GONE = b"G"
"""To the partner's instance: the sender's side of this pairing failed (or never existed);
sent by the Peer's instance, or by the unregister script when a claimed Client ends before
its introduction (its tombstone names the Peer)."""
N_REPLACED = b"D"
"""To the older registration's instance: a newer identical registration replaced it."""

_GONE_CODES: dict[int, str] = {
    _R.PEER_GONE: "partner lost: its side of the pairing failed on another mediator instance",
    _R.TIMEOUT: "partner timeout: the Peer did not confirm PeerDisconnect before the deadline",
    _R.SHUTTING_DOWN: "partner's mediator instance is shutting down",
}
"""The codes a ``G`` notice may carry (its body, decimal; none: PEER_GONE) and their texts."""

TOKEN_SIZE = 32
"""A registration's token: instance id (16 hex digits) + connection id (16 hex digits)."""


def registry_key(prefix: str, our: bytes, their: bytes) -> str:
    """Where ``(our, their)`` is stored: both directions of a pair share the hash tag (the
    sorted pair), so they live in one Redis Cluster slot and one script can touch both."""
    low, high = (our, their) if our < their else (their, our)
    return f"{prefix}reg:{{{low.hex()}{high.hex()}}}:{0 if our < their else 1}"


def token(instance: str, conn: ConnId) -> str:
    return f"{instance}{conn:016x}"


def encode_record(
    instance: str,
    conn: ConnId,
    remote: tuple[str, int],
    local: wire.Address | None,
    cands: bytes = b"",
) -> bytes:
    """``R`` + token + JSON ``[host, port, local host, local port]`` (+ the CANDIDATES item's
    value in hex when the advertiser sent one): what a waiting registration stores, and what
    the partner's instance needs to send PeerDisconnect or PeerIdentification."""
    tail: list[object] = [remote[0], remote[1], None if local is None else local.host]
    tail.append(None if local is None else local.port)
    if cands:
        tail.append(cands.hex())
    return b"R" + token(instance, conn).encode() + json.dumps(tail).encode()


def decode_record(
    record: bytes,
) -> tuple[str, ConnId, tuple[str, int], wire.Address | None, bytes]:
    """Inverse of :func:`encode_record`; ValueError (or ProtocolError) on anything else."""
    if record[:1] not in (b"R", b"F") or len(record) < 1 + TOKEN_SIZE:
        raise ValueError("not a fleet record")
    text = record[1 : 1 + TOKEN_SIZE].decode("ascii")
    instance, conn = text[:16], int(text[16:], 16)
    fields = json.loads(record[1 + TOKEN_SIZE :])
    if not isinstance(fields, list) or len(fields) not in (4, 5):
        raise ValueError("not a fleet record")
    host, port, local_host, local_port = fields[:4]
    local = None if local_host is None else wire.Address(str(local_host), int(local_port))
    cands = bytes.fromhex(str(fields[4])) if len(fields) == 5 else b""
    return instance, conn, (str(host), int(port)), local, cands


def encode_notice(kind: bytes, target: ConnId, body: bytes = b"") -> bytes:
    """``kind`` + target connection id (16 hex digits) + body."""
    return kind + f"{target:016x}".encode() + body


# --- actions (core -> adapter) and events (adapter -> core) ---------------------------------


@dataclass(frozen=True, slots=True)
class RegistryClaim:
    """Atomically: if ``(their, our)`` is registered by a live instance (its channel has a
    subscriber), claim it (replace it with a tombstone naming its owner and this Peer) and
    answer CLAIMED with it; else, when ``may_register``, store ``record`` at ``(our, their)``
    with the TTL (notify a replaced owner ``D``) and answer REGISTERED; else FULL."""

    conn: ConnId
    our: bytes
    their: bytes
    record: bytes
    may_register: bool


@dataclass(frozen=True, slots=True)
class RegistryUnregister:
    """Delete ``(our, their)`` if it still holds this registration's token (compare-and-delete)."""

    conn: ConnId
    our: bytes
    their: bytes


@dataclass(frozen=True, slots=True)
class RegistryRefresh:
    """Extend ``(our, their)``'s TTL if it still holds this registration; say what it holds."""

    conn: ConnId
    our: bytes
    their: bytes


@dataclass(frozen=True, slots=True)
class Notify:
    """Publish ``message`` on ``instance``'s channel (fire and forget; may be lost)."""

    instance: str
    message: bytes


@dataclass(frozen=True, slots=True)
class RegistryAnswer:
    """The outcome of :class:`RegistryClaim` for ``conn``: ``outcome`` is REGISTERED, CLAIMED,
    FULL or ERROR; ``partner`` the claimed record (CLAIMED); ``replaced`` whether an identical
    registration was replaced (REGISTERED)."""

    conn: ConnId
    outcome: str
    partner: bytes = b""
    replaced: bool = False


@dataclass(frozen=True, slots=True)
class RefreshAnswer:
    """What ``(our, their)`` held at a refresh: ``kept`` (ours, TTL extended), ``claimed`` (our
    tombstone: a Peer claimed it), ``replaced`` (another registration), ``lost`` (nothing: it
    expired or the store restarted); ``error``: the store could not be reached."""

    conn: ConnId
    status: str


@dataclass(frozen=True, slots=True)
class Notice:
    """A message another instance (or this one) published on this instance's channel."""

    message: bytes


FleetAction = MediatorAction | RegistryClaim | RegistryUnregister | RegistryRefresh | Notify
FleetEvent = RegistryAnswer | RefreshAnswer | Notice


class FleetCore(MediatorCore):
    """All sessions of one instance of a fleet; the shared registry is reached through actions.

    Per session with a partner on another instance it keeps that partner's identity
    (instance id, connection id) in :attr:`_remote`; everything else is the base class's state.
    """

    def __init__(
        self,
        config: MediatorConfig | None = None,
        *,
        instance: str,
        nonce_source: NonceSource = system_nonces,
        crypto: NonceCrypto = HPKE,
        observer: NoteObserver | None = None,
    ) -> None:
        super().__init__(config, nonce_source=nonce_source, crypto=crypto, observer=observer)
        if len(instance) != 16 or any(c not in "0123456789abcdef" for c in instance):
            raise ValueError("instance must be 16 lower-case hex digits")
        self.instance = instance
        self._claiming: dict[ConnId, tuple[bytes, bytes]] = {}
        """Sessions whose RegistryClaim is outstanding (state challenged, nonce verified), with
        their keys: kept after the session closes, until the answer comes back (to undo it)."""
        self._remote: dict[ConnId, tuple[str, ConnId] | None] = {}
        """Sessions pairing with a partner on some instance: that partner (None: unknown, a
        claim found by a refresh whose notice was lost)."""
        self._waiting_count = 0
        self._early: dict[ConnId, list[bytes]] = {}
        """Notices for a registration whose RegistryAnswer has not arrived yet (the answer and
        the notices come over different connections, so a notice can overtake the answer
        that registered its target): held, and applied right after the answer."""
        self.notices_ignored = 0
        """Notices that matched no session in the state they address (late, duplicate, or
        malformed): counted, never acted on."""

    # --- introspection --------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """This instance's waiting registrations (the shared registry holds the fleet's)."""
        return self._waiting_count

    def _count(self, conn: ConnId, session: _Session, delta: int) -> None:
        if session.state == WAITING:
            self._waiting_count += delta
        super()._count(conn, session, delta)

    def refresh(self) -> list[FleetAction]:
        """One :class:`RegistryRefresh` per waiting registration (the adapter calls this a few
        times per TTL)."""
        return [
            RegistryRefresh(conn, s.our, s.their)
            for conn, s in self._sessions.items()
            if s.state == WAITING
        ]

    # --- hooks into the base class --------------------------------------------------------

    def _on_response(
        self,
        conn: ConnId,
        session: _Session,
        message: wire.AdvertiseResponse,
        now: float,
        out: list[Any],
    ) -> None:
        if conn in self._claiming:
            self._bad(conn, session, "AdvertiseResponse while the registry answers", out)
            return
        if not nonces_equal(message.nonce, session.nonce or b""):
            super()._on_response(conn, session, message, now, out)
            return
        session.nonce = None
        config = self.config
        may_register = (
            self.waiting < config.max_waiting
            and self._waiting_by_ip.get(session.origin, 0) < config.max_waiting_per_ip
        )
        self._claiming[conn] = (session.our, session.their)
        record = encode_record(self.instance, conn, session.remote, session.local, session.cands)
        claim = RegistryClaim(conn, session.our, session.their, record, may_register)
        out.append(claim)

    def _close(
        self, conn: ConnId, session: _Session, out: list[MediatorAction], reason: str
    ) -> None:
        state = session.state
        unknown = state == CONFIRMING and conn in self._remote and self._remote[conn] is None
        if state == WAITING or unknown:
            # (a claimed entry is a tombstone naming the Peer: the script tells its instance)
            cast(list[Any], out).append(RegistryUnregister(conn, session.our, session.their))
        self._remote.pop(conn, None)
        super()._close(conn, session, out, reason)

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
        partner = self._remote.get(conn)
        if partner is not None and session.state in (DISCONNECTING, CONFIRMING):
            del self._remote[conn]
            # the code the partner is aborted with, as on one instance (TIMEOUT when our
            # confirm deadline passed, SHUTTING_DOWN, else PEER_GONE)
            notice = encode_notice(N_GONE, partner[1], b"%d" % partner_code)
            cast(list[Any], out).append(Notify(partner[0], notice))
        super()._fail(
            conn, session, event, code, text, out, partner_code=partner_code, oracle=oracle
        )

    def _coordinates(self) -> bool:
        """A fleet never coordinates (spec/mediator.md section 10): partners may sit on
        different instances, and the notify path carries no coordination. It does not echo
        COORDINATE, so its pairings are exactly the uncoordinated ones."""
        return False

    def _confirmed(
        self, conn: ConnId, session: _Session, now: float, out: list[MediatorAction]
    ) -> None:
        if conn not in self._remote:
            super()._confirmed(conn, session, now, out)
            return
        partner = self._remote.pop(conn)
        _step(session.state, "eof")
        if partner is not None:
            body = encode_record(self.instance, conn, session.remote, session.local, session.cands)
            body = session.nonce + body[1:] if session.nonce else body[1:]
            notice = encode_notice(N_CONFIRMED, partner[1], body)
            cast(list[Any], out).append(Notify(partner[0], notice))
        self._close(conn, session, out, "eof: PeerDisconnect confirmed")

    # --- fleet events ---------------------------------------------------------------------

    def fleet_event(self, event: FleetEvent, now: float) -> list[FleetAction]:
        """Apply one answer or notice from the shared registry at time ``now``."""
        out: list[Any] = []
        if isinstance(event, RegistryAnswer):
            self._on_answer(event, now, out)
        elif isinstance(event, RefreshAnswer):
            self._on_refresh(event, now, out)
        else:
            try:
                self._on_notice(event.message, now, out)
            except (ValueError, ProtocolError, TypeError, KeyError):
                self.notices_ignored += 1
        return out

    def _on_answer(self, answer: RegistryAnswer, now: float, out: list[Any]) -> None:
        self._apply_answer(answer, now, out)
        for message in self._early.pop(answer.conn, ()):
            try:
                self._on_notice(message, now, out)
            except (ValueError, ProtocolError, TypeError, KeyError):
                self.notices_ignored += 1

    def _apply_answer(self, answer: RegistryAnswer, now: float, out: list[Any]) -> None:
        conn = answer.conn
        session = self._sessions.get(conn)
        if session is None or conn not in self._claiming or session.state != CHALLENGED:
            # The connection ended while the store answered: undo what the answer did.
            keys = self._claiming.pop(conn, None)
            if answer.outcome == REGISTERED and keys is not None:
                # (connection ids are not reused, so only this registration has its token)
                out.append(RegistryUnregister(conn, *keys))
            elif answer.outcome == CLAIMED:
                instance, client, _, _, _ = decode_record(answer.partner)
                out.append(Notify(instance, encode_notice(N_GONE, client)))
            return
        del self._claiming[conn]
        outcome = answer.outcome

        def oracle(name: str) -> bool:
            if name == "nonce_matches":
                return True
            if name == "partner_waiting":
                return outcome == CLAIMED
            if name == "registry_full":
                return outcome in (FULL, ERROR)
            if name == "duplicate":
                return answer.replaced
            raise ValueError(name)

        transition = _step(session.state, "response", oracle)
        if transition.target == DISCONNECTING:
            self._pair_remote(conn, session, transition, answer.partner, now, out)
            return
        if transition.target != WAITING:
            if outcome == ERROR:
                text = "the shared registry is unreachable, retry later"
                payload = _retry(_R.REGISTRY_UNAVAILABLE, text)
                cause = "registry_unavailable"
            else:
                text = "too many waiting registrations, retry later"
                payload, cause = _retry(_R.BUSY, text), "waiting_full"
            out.append(Send(conn, payload))
            self._note("rejected", conn, session, text, cause)
            self._close(conn, session, out, f"response: {text}")
            return
        self._move(conn, session, transition)
        wait = self.config.wait_timeout
        session.deadline = None if wait is None else now + wait
        out.append(SetTimer(conn, session.deadline))
        self._note("registered", conn, session)

    def _pair_remote(
        self,
        conn: ConnId,
        session: _Session,
        transition: Transition,
        record: bytes,
        now: float,
        out: list[Any],
    ) -> None:
        """This session is the Peer; the Client (``record``) waits on some instance, which
        learns of the pairing from the confirmation (``F``) or a failure (``G``)."""
        instance, client_conn, client_remote, client_local, client_cands = decode_record(record)
        pairing_id = self._nonce_source(wire.PAIRING_ID_SIZE)
        try:
            disconnect = wire.PeerDisconnect(
                pairing_id=pairing_id,
                peer=wire.Address.from_tuple(session.remote),
                client=wire.Address.from_tuple(client_remote),
                client_local=client_local,
                extensions=_forwarded(client_cands),
            ).encode()
        except ProtocolError as error:
            out.append(Notify(instance, encode_notice(N_GONE, client_conn)))
            self._bad(conn, session, f"cannot encode PeerDisconnect: {error.reason}", out)
            return
        self._move(conn, session, transition)
        self._remote[conn] = (instance, client_conn)
        session.nonce = pairing_id
        deadline = session.deadline = now + self.config.confirm_timeout
        out.append(Send(conn, disconnect))
        out.append(SetTimer(conn, deadline))
        self._note("paired", conn, session)

    def _on_refresh(self, answer: RefreshAnswer, now: float, out: list[Any]) -> None:
        session = self._sessions.get(answer.conn)
        if session is None or session.state != WAITING:
            return
        if answer.status == TAKEN:
            self._claimed(answer.conn, session, None, now, out)
        elif answer.status == REPLACED:
            self._replaced(answer.conn, session, out)
        elif answer.status == LOST:
            _step(session.state, "registry_lost")
            text = "the shared registry lost this registration (expired or restarted), retry"
            out.append(Send(answer.conn, _retry(_R.REGISTRY_UNAVAILABLE, text)))
            self._note("failed", answer.conn, session, text, "registry_lost")
            self._forget(answer.conn, session, out, f"registry_lost: {text}")

    def _claimed(
        self,
        conn: ConnId,
        session: _Session,
        peer: tuple[str, ConnId] | None,
        now: float,
        out: list[Any],
        *,
        arm: bool = True,
    ) -> None:
        """Our waiting registration was claimed: become the Client (``confirming``, with the
        confirm deadline unless ``arm`` is false: it is about to end)."""
        step = _step(session.state, "partner_arrived")
        self._count(conn, session, -1)  # it left the registry through the claim
        session.state = step.target
        self._remote[conn] = peer
        if arm:
            deadline = session.deadline = now + self.config.confirm_timeout
            out.append(SetTimer(conn, deadline))

    def _replaced(self, conn: ConnId, session: _Session, out: list[Any]) -> None:
        _step(session.state, "replaced")
        out.append(
            Send(conn, _abort(_R.DUPLICATE_REGISTRATION, "replaced by a newer registration"))
        )
        self._note("replaced", conn, session, "replaced by a newer registration")
        # The registry entry belongs to the newer registration: forget this one without it.
        self._forget(conn, session, out, "replaced: duplicate registration")

    def _forget(self, conn: ConnId, session: _Session, out: list[Any], reason: str) -> None:
        """Close a waiting session whose registry entry is not its own any more (replaced,
        or lost by the store): no RegistryUnregister."""
        self._count(conn, session, -1)
        session.state = CLOSED
        self._sessions.pop(conn, None)
        out.append(Close(conn, reason))
        self._note("closed", conn, session, reason)

    def _on_notice(self, message: bytes, now: float, out: list[Any]) -> None:
        kind, target = message[:1], int(message[1:17], 16)
        body = message[17:]
        if target in self._claiming:  # overtook the answer to the target's own claim
            held = self._early.setdefault(target, [])
            if len(held) < 4:  # (F, G, D: no more can be meant for one registration)
                held.append(message)
            else:
                self.notices_ignored += 1
            return
        session = self._sessions.get(target)
        if kind == N_CONFIRMED:
            pairing_id, record = body[: wire.PAIRING_ID_SIZE], b"F" + body[wire.PAIRING_ID_SIZE :]
            instance, peer_conn, peer_remote, peer_local, peer_cands = decode_record(record)
            if session is not None and session.state == WAITING:  # (the usual case)
                self._claimed(target, session, (instance, peer_conn), now, out, arm=False)
            if session is None or session.state != CONFIRMING:
                self.notices_ignored += 1
                return
            known = self._remote.get(target)
            if known is not None and known != (instance, peer_conn):
                self.notices_ignored += 1
                return
            identification = wire.PeerIdentification(
                version=wire.PROTOCOL_VERSION,
                pairing_id=pairing_id,
                peer=wire.Address.from_tuple(peer_remote),
                peer_local=peer_local,
                extensions=_forwarded(peer_cands),
            ).encode()
            _step(session.state, "partner_confirmed", _uncoordinated)
            self._remote.pop(target, None)
            out.append(Send(target, identification))
            self._note("introduced", target, session)
            self._close(target, session, out, "partner_confirmed: PeerIdentification sent")
            return
        if kind == N_GONE:
            if session is None or session.state not in (WAITING, CONFIRMING, DISCONNECTING):
                self.notices_ignored += 1
                return
            if session.state == WAITING:  # only its claimer knows a waiting registration's id
                self._claimed(target, session, None, now, out, arm=False)
            self._remote.pop(target, None)  # (do not notify it back)
            _step(session.state, "partner_lost")
            code = int(body) if body.isdigit() else _R.PEER_GONE
            if code not in _GONE_CODES:
                code = _R.PEER_GONE
            text = _GONE_CODES[code]
            self._note("failed", target, session, text, "partner_lost")
            out.append(Send(target, _abort(code, text)))
            self._close(target, session, out, "partner_lost: remote")
            return
        if kind == N_REPLACED:
            if session is not None and session.state == WAITING:
                self._replaced(target, session, out)
            else:
                self.notices_ignored += 1
            return
        raise ValueError("unknown notice kind")
