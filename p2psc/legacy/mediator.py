"""INSECURE LEGACY: serve protocol version 0 (C++ p2psc) clients through the version 1 core.

Why a subclass and not a second mediator: registration, limits, deadlines, pairing and the
session machine (:class:`p2psc.machines.mediator.MediatorSession`) must be the same for both
protocols, so :class:`LegacyAwareMediatorCore` *is* a :class:`p2psc.core.mediator.MediatorCore`
with a second codec in front of it. Per connection, the first byte decides the protocol
(``{`` or JSON whitespace: version 0; anything else: version 1, untouched). For a version 0
connection:

* **in**: each JSON message is decoded by :class:`p2psc.legacy.codec.LegacyDecoder` (partial
  bytes live in the session's ``buf``) and handed to the core's own Advertise/AdvertiseResponse
  steps as a version 1 message. RSA keys become 32-byte *registry keys*
  ``SHA-256(LEGACY_DOMAIN || PKCS#1 DER)``, so legacy and version 1 registrations can never
  find each other (pairing them would need a version 1 peer owning the X25519 private key of a
  hash output); pairing across protocols is also refused explicitly. The decimal nonce of
  AdvertiseResponse is the version 1 nonce written in decimal.
* **crypto**: while the core handles a legacy message, its nonce "sealing" encrypts the nonce
  (as a decimal string) to the connection's RSA key with PKCS#1 v1.5; the 80-byte placeholder the
  core puts in its AdvertiseChallenge frame never leaves the process.
* **out**: every frame the core sends to a legacy connection is translated into the one JSON
  message of version 0 (AdvertiseChallenge, AdvertiseAbort/Retry with the reason text,
  PeerDisconnect ``{port}``, PeerIdentification ``{version: 0, ip, port}``); one message per write.
* **timing**: right after PeerDisconnect the Peer's connection is closed (the C++ Peer binds the
  port it is given); after ``introduce_delay`` seconds the core is told the Peer "confirmed" (as a
  version 1 Peer does by closing), which sends PeerIdentification to the Client.

Nothing here reads a clock or a random source; the RSA crypto is injected (:class:`LegacyCrypto`).
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields

from p2psc import wire
from p2psc.core.io import Close, Closed, ConnId, Event, Received, Send, SetTimer, TimerFired
from p2psc.core.mediator import (
    MediatorAction,
    MediatorConfig,
    MediatorCore,
    MediatorNote,
    MediatorSnapshot,
    NoteObserver,
)
from p2psc.core.registry import Registry
from p2psc.errors import CryptoError, ProtocolError
from p2psc.keys import (
    HPKE,
    SEALED_NONCE_SIZE,
    NonceCrypto,
    NonceSource,
    PublicKey,
    system_nonces,
)
from p2psc.legacy import codec
from p2psc.legacy.crypto import RSA_PKCS1V15, LegacyCrypto, RsaPublicKey

__all__ = [
    "DEFAULT_INTRODUCE_DELAY",
    "LEGACY_DOMAIN",
    "LegacyAwareMediatorCore",
    "LegacyAwareSnapshot",
    "LegacyNote",
    "legacy_registry_key",
]

LEGACY_DOMAIN = b"p2psc legacy v0 RSA key\x00"
"""Domain separation of legacy registry keys from version 1 keys."""

DEFAULT_INTRODUCE_DELAY = 0.25
"""Seconds between closing the legacy Peer's connection and sending PeerIdentification."""

LegacyAwareSnapshot = tuple[
    MediatorSnapshot,
    tuple[ConnId, ...],
    tuple[tuple[ConnId, tuple[ConnId, float]], ...],
    tuple[ConnId, ...],
]
"""(base snapshot, legacy connections, Client -> (Peer, deadline) introductions pending, Peers
whose connection we closed)."""

_NONCE_DIGITS_MAX = 78  # 2**256 - 1 has 78 decimal digits


@dataclass(frozen=True, slots=True)
class LegacyNote(MediatorNote):
    """A note about legacy registrations: the keys' fingerprints as ``p2psc keygen --rsa`` and
    ``p2psc connect --legacy`` print them (SHA-256 of the PKCS#1 DER), since the registry keys
    in ``our_key``/``their_key`` are hashes an operator cannot match to a key file."""

    our_fingerprint: str | None = None
    their_fingerprint: str | None = None


class _NamingObserver:
    """Passes notes on, as :class:`LegacyNote` when they name legacy registry keys."""

    __slots__ = ("inner", "kinds", "names")

    def __init__(self, inner: NoteObserver, names: dict[bytes, str]) -> None:
        self.inner = inner
        self.names = names
        kinds = getattr(inner, "kinds", None)
        if kinds is not None:  # the core reads it once: keep the observer's choice of kinds
            self.kinds = kinds

    def __call__(self, note: MediatorNote) -> None:
        names = self.names
        ours = names.get(note.our_key) if note.our_key else None
        theirs = names.get(note.their_key) if note.their_key else None
        if ours is not None or theirs is not None:
            fields = {f.name: getattr(note, f.name) for f in dataclass_fields(MediatorNote)}
            note = LegacyNote(**fields, our_fingerprint=ours, their_fingerprint=theirs)
        self.inner(note)


def legacy_registry_key(key: RsaPublicKey) -> bytes:
    """The 32-byte registry key of a legacy RSA identity."""
    return hashlib.sha256(LEGACY_DOMAIN + key.der).digest()


def _nonce_to_decimal(nonce: bytes) -> str:
    return str(int.from_bytes(nonce, "big"))


def _decimal_to_nonce(text: str, size: int) -> bytes | None:
    if not (0 < len(text) <= _NONCE_DIGITS_MAX and text.isascii() and text.isdigit()):
        return None
    value = int(text)
    if value >= 1 << (8 * size):
        return None
    return value.to_bytes(size, "big")


def _legacy_ip(host: str) -> str:
    """IPv4-mapped IPv6 addresses as dotted IPv4 (the C++ client parses IPv4 text)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


class _DialectCrypto:
    """The core's NonceCrypto: version 1 HPKE, except while a legacy message is handled."""

    def __init__(self, inner: NonceCrypto, core: LegacyAwareMediatorCore) -> None:
        self.inner = inner
        self.core = core

    def seal(self, recipient: PublicKey, nonce: bytes, info: bytes) -> bytes:
        context = self.core._context
        if context is None:
            return self.inner.seal(recipient, nonce, info)
        conn, rsa_key = context
        if legacy_registry_key(rsa_key) != recipient.raw:
            raise CryptoError("legacy challenge for a key this connection did not advertise")
        encrypted = self.core._legacy_crypto.encrypt(rsa_key, _nonce_to_decimal(nonce))
        self.core._challenges[conn] = encrypted
        return bytes(SEALED_NONCE_SIZE)  # placeholder: replaced by `encrypted` on the way out

    def open(self, keypair: object, sealed: bytes, info: bytes) -> bytes:
        raise CryptoError("a mediator never opens nonces")


class LegacyAwareMediatorCore(MediatorCore):
    """A :class:`MediatorCore` that also serves version 0 (JSON, RSA) connections."""

    def __init__(
        self,
        config: MediatorConfig | None = None,
        *,
        nonce_source: NonceSource = system_nonces,
        crypto: NonceCrypto = HPKE,
        registry: Registry | None = None,
        observer: NoteObserver | None = None,
        legacy_crypto: LegacyCrypto = RSA_PKCS1V15,
        introduce_delay: float = DEFAULT_INTRODUCE_DELAY,
    ) -> None:
        self._names: dict[bytes, str] = {}
        """Registry key -> RSA fingerprint of the legacy keys of live connections (for notes)."""
        self._named: dict[ConnId, tuple[bytes, bytes]] = {}
        if observer is not None:
            observer = _NamingObserver(observer, self._names)
        super().__init__(
            config, nonce_source=nonce_source, crypto=crypto, registry=registry, observer=observer
        )
        if not introduce_delay > 0:
            raise ValueError("introduce_delay must be > 0")
        self._crypto = _DialectCrypto(crypto, self)
        self._legacy_crypto = legacy_crypto
        self.introduce_delay = introduce_delay
        self._legacy: set[ConnId] = set()
        """Connections that speak version 0 (decided by their first byte)."""
        self._introduce: dict[ConnId, tuple[ConnId, float]] = {}
        """Legacy Client -> Peer whose (already closed) connection confirms at the timer."""
        self._context: tuple[ConnId, RsaPublicKey] | None = None
        """(connection, advertised RSA key) while the core handles a legacy Advertise."""
        self._challenges: dict[ConnId, str] = {}
        self._gone: set[ConnId] = set()
        """Legacy Peers whose socket we closed after PeerDisconnect; the session lives on."""
        self._refused: set[ConnId] = set()
        self._decoders: dict[ConnId, codec.LegacyDecoder] = {}
        """Per legacy connection, the decoder holding its partial message: kept across
        segments so every received byte is scanned once (a trickling sender costs linear
        time, issue 21). Its bytes appear as the session's ``buf`` only in snapshots."""

    # --- introspection and snapshots -------------------------------------------------------

    def is_legacy(self, conn: ConnId) -> bool:
        return conn in self._legacy

    def snapshot(self) -> LegacyAwareSnapshot:  # type: ignore[override]
        """The base snapshot plus the legacy bookkeeping (a different shape on purpose: a
        snapshot is opaque outside its own class)."""
        legacy = tuple(sorted(self._legacy))
        introduce = tuple(sorted(self._introduce.items()))
        # Each decoder's partial message goes in its session's buf, where a snapshot keeps a
        # partial message (and where from_snapshot's decoders will find it again).
        held = [c for c, d in self._decoders.items() if d.buffered and c in self._sessions]
        for conn in held:
            self._sessions[conn].buf = self._decoders[conn].snapshot()
        try:
            base = super().snapshot()
        finally:
            for conn in held:
                self._sessions[conn].buf = b""
        return (base, legacy, introduce, tuple(sorted(self._gone)))

    @classmethod
    def from_snapshot(  # type: ignore[override]
        cls,
        snapshot: LegacyAwareSnapshot,
        config: MediatorConfig | None = None,
        *,
        nonce_source: NonceSource = system_nonces,
        crypto: NonceCrypto = HPKE,
        observer: NoteObserver | None = None,
        legacy_crypto: LegacyCrypto = RSA_PKCS1V15,
        introduce_delay: float = DEFAULT_INTRODUCE_DELAY,
    ) -> LegacyAwareMediatorCore:
        inner, legacy, introduce, gone = snapshot
        base = MediatorCore.from_snapshot(inner, config, nonce_source=nonce_source, crypto=crypto)
        core = cls(
            config,
            nonce_source=nonce_source,
            crypto=crypto,
            observer=observer,
            legacy_crypto=legacy_crypto,
            introduce_delay=introduce_delay,
        )
        # adopt the rebuilt base state (sessions, registry, counters)
        for name in ("_sessions", "_registry", "_admission", "_waiting_by_ip"):
            setattr(core, name, getattr(base, name))
        core._shutting_down = base._shutting_down
        core._legacy = set(legacy)
        core._introduce = dict(introduce)
        core._gone = set(gone)
        return core

    # --- the entry points ------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[MediatorAction]:
        # Every event of every connection passes here, so the version 1 case costs a few
        # checks: the protocol is decided once, on a fresh connection's first bytes, and the
        # output is only rewritten while some version 0 connection exists.
        conn = event.conn
        kind = type(event)
        if self._gone and conn in self._gone:
            # We closed this Peer's socket ourselves; an adapter that reports that close (or
            # anything else on it) must not count as the Peer's confirmation: the Client is
            # introduced by the introduce timer only (spec/legacy.md §3 step 4).
            return []
        if kind is Received:
            received: Received = event  # type: ignore[assignment]  # (exact type checked)
            legacy = self._legacy
            if conn not in legacy and received.data:
                self._classify(conn, received.data[0])
            if conn in legacy:
                actions: list[MediatorAction] = []
                self._on_legacy_received(conn, received.data, now, actions)
            else:
                actions = super().handle(event, now)
        else:
            if kind is Closed and conn in self._decoders:
                # the core tells "closed in the middle of a frame" by the session's buf
                decoder = self._decoders.pop(conn)
                session = self._sessions.get(conn)
                if session is not None and decoder.has_partial:
                    session.buf = decoder.snapshot()
            if kind is TimerFired and conn in self._introduce:
                peer, deadline = self._introduce[conn]
                if now < deadline:  # an older, earlier timer handle: wait on
                    return [SetTimer(conn, deadline)]
                # The legacy Peer had its time to bind: confirm it as a v1 Peer's EOF would.
                del self._introduce[conn]
                event = Closed(peer, None)
            actions = super().handle(event, now)
        if self._legacy:
            actions = self._translate(actions, now)
        if kind is Closed and self._introduce:
            pending = self._introduce.pop(conn, None)  # the Client left during the delay
            if pending is not None:
                self._gone.discard(pending[0])
                self._forget(pending[0])
        if self._refused:
            for refused in sorted(self._refused):  # cross-protocol pairing (never reached)
                self._refused.discard(refused)
                actions += self.handle(Closed(refused, "refusing to pair across protocols"), now)
        return actions

    def shutdown(self, now: float) -> list[MediatorAction]:
        return self._translate(super().shutdown(now), now)

    # --- input ------------------------------------------------------------------------------

    def _speaks_v1(self, conn: ConnId) -> bool:
        return conn not in self._legacy  # version 0 has no keepalive: any byte is refused

    def _clear_exempt(self, conn: ConnId) -> bool:
        return conn in self._legacy  # version 0 has no TLS; --require-tls covers version 1

    def _classify(self, conn: ConnId, first: int) -> None:
        session = self._sessions.get(conn)
        if session is None or session.buf or session.state != "awaiting_advertise":
            return
        if codec.looks_legacy(first):
            self._legacy.add(conn)

    def _on_legacy_received(
        self, conn: ConnId, data: bytes, now: float, out: list[MediatorAction]
    ) -> None:
        """Bytes on a version 0 connection (version 1 ones go straight to the core)."""
        session = self._sessions.get(conn)
        if session is None or not data:
            return
        if session.state not in ("awaiting_advertise", "challenged"):
            self._on_received(conn, data, now, out)  # the core refuses bytes in later states
            return
        decoder = self._decoders.get(conn)
        if decoder is None:  # first bytes, or a core rebuilt from a snapshot
            decoder = self._decoders[conn] = codec.LegacyDecoder.from_snapshot(session.buf)
            session.buf = b""
        try:
            messages = decoder.feed(data)
        except ProtocolError as error:
            del self._decoders[conn]
            self._bad(conn, session, f"legacy: {error.reason}", out)
            return
        for message in messages:
            self._legacy_message(conn, message, now, out)

    def _legacy_message(
        self, conn: ConnId, message: codec.LegacyMessage, now: float, out: list[MediatorAction]
    ) -> None:
        session = self._sessions[conn]
        if isinstance(message, codec.Advertise) and session.state == "awaiting_advertise":
            try:
                ours = RsaPublicKey.from_wire(message.our_key)
                theirs = RsaPublicKey.from_wire(message.their_key)
            except ProtocolError as error:
                self._bad(conn, session, f"legacy Advertise: {error.reason}", out)
                return
            advertise = wire.Advertise(
                version=wire.PROTOCOL_VERSION if message.version == codec.LEGACY_VERSION else 0,
                our_key=legacy_registry_key(ours),
                their_key=legacy_registry_key(theirs),
            )
            self._name(conn, advertise.our_key, ours, advertise.their_key, theirs)
            self._context = (conn, ours)
            try:
                self._on_advertise(conn, session, advertise, now, out)
            finally:
                self._context = None
        elif isinstance(message, codec.AdvertiseResponse) and session.state == "challenged":
            expected = session.nonce or b""
            nonce = _decimal_to_nonce(message.nonce, len(expected) or 32)
            if nonce is None:  # not our kind of number: cannot match
                nonce = bytes(b ^ 0xFF for b in expected) or bytes(32)
            self._on_response(conn, session, wire.AdvertiseResponse(nonce=nonce), now, out)
        else:
            name = type(message).__name__
            self._bad(conn, session, f"legacy {name} is not allowed in state {session.state}", out)

    # --- output -----------------------------------------------------------------------------

    def _translate(self, actions: list[MediatorAction], now: float) -> list[MediatorAction]:
        """Rewrite what the core sends to legacy connections; schedule legacy introductions."""
        if not self._legacy:
            return actions
        out: list[MediatorAction] = []
        fresh: list[ConnId] = []  # Peers sent PeerDisconnect (and closed) in this batch
        for action in actions:
            conn = action.conn if isinstance(action, (Send, Close, SetTimer)) else None
            if conn is None:
                out.append(action)
            elif conn not in self._legacy:
                if isinstance(action, Send) and self._crosses(conn, action.data):
                    self._refused.add(conn)
                    continue
                out.append(action)
            elif conn in self._gone:
                # We closed this Peer's socket right after PeerDisconnect and the adapter forgot
                # it; the core's later sends and timers for it are moot, its Close ends it.
                if isinstance(action, Close):
                    self._gone.discard(conn)
                    self._forget(conn)
            elif isinstance(action, Send):
                out += self._translate_send(conn, action.data, fresh)
            else:
                out.append(action)
                if isinstance(action, Close):
                    self._forget(conn)
        # A legacy Client being introduced waits on the short introduce timer instead of the
        # confirmation deadline (the timer is its own: the Peer's connection is gone).
        for peer in fresh:
            client = next(c for c, (p, _) in self._introduce.items() if p == peer)
            deadline = now + self.introduce_delay
            self._introduce[client] = (peer, deadline)
            out = [a for a in out if not (isinstance(a, SetTimer) and a.conn == client)]
            out.append(SetTimer(client, deadline))
        return out

    def _crosses(self, conn: ConnId, frame: bytes) -> bool:
        """Whether a v1 PeerDisconnect would pair ``conn`` with a legacy partner."""
        if len(frame) < 4 or frame[3] != wire.MessageType.PEER_DISCONNECT:
            return False
        session = self._sessions.get(conn)
        return session is not None and session.partner in self._legacy

    def _translate_send(
        self, conn: ConnId, frame: bytes, fresh: list[ConnId]
    ) -> list[MediatorAction]:
        try:
            message = wire.decode(frame)
        except ProtocolError:  # cannot happen: the core encodes what it sends
            return [Close(conn, "legacy: untranslatable frame")]
        if isinstance(message, wire.AdvertiseChallenge):
            encrypted = self._challenges.pop(conn, None)
            if encrypted is None:
                return [Close(conn, "legacy: challenge without RSA encryption")]
            return [Send(conn, codec.encode(codec.AdvertiseChallenge(encrypted)))]
        if isinstance(message, wire.AdvertiseAbort):
            return [Send(conn, codec.encode(codec.AdvertiseAbort(message.text)))]
        if isinstance(message, wire.AdvertiseRetry):
            return [Send(conn, codec.encode(codec.AdvertiseRetry(message.text)))]
        if isinstance(message, wire.PeerDisconnect):
            session = self._sessions.get(conn)
            client = None if session is None else session.partner
            if client is None or client not in self._legacy:
                # Never reached (registry keys are disjoint), but never pair across protocols.
                self._refused.add(conn)
                return []
            fresh.append(conn)
            self._gone.add(conn)
            self._introduce[client] = (conn, 0.0)  # deadline set by _translate
            return [
                Send(conn, codec.encode(codec.PeerDisconnect(message.peer.port))),
                Close(
                    conn,
                    "legacy: closed after PeerDisconnect so the Peer can bind its port",
                    fin_with_send=True,
                ),
            ]
        if isinstance(message, wire.PeerIdentification):
            identification = codec.PeerIdentification(
                codec.LEGACY_VERSION, _legacy_ip(message.peer.host), message.peer.port
            )
            return [Send(conn, codec.encode(identification))]
        return [Close(conn, f"legacy: no version 0 form of {type(message).__name__}")]

    def _name(
        self, conn: ConnId, our: bytes, ours: RsaPublicKey, their: bytes, theirs: RsaPublicKey
    ) -> None:
        """Remember the fingerprints of a legacy connection's keys, for its notes. Entries of
        connections gone are dropped once they outnumber the live ones (bounded memory)."""
        if self._observer is None:
            return
        names = self._names
        if len(self._named) > 2 * len(self._sessions) + 64:
            self._named = {c: k for c, k in self._named.items() if c in self._sessions}
            live = {key for pair in self._named.values() for key in pair}
            for key in [k for k in names if k not in live]:
                del names[key]
        names[our] = ours.fingerprint()
        names[their] = theirs.fingerprint()
        self._named[conn] = (our, their)

    def _forget(self, conn: ConnId) -> None:
        self._legacy.discard(conn)
        self._decoders.pop(conn, None)
        self._challenges.pop(conn, None)
        self._introduce.pop(conn, None)
