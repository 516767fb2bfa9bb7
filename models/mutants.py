"""Deliberately broken variants of the cores: the explorer must catch every one of them.

Why: a model checker that never fails proves nothing. Each mutant breaks exactly one property
of ``spec/properties.md`` with a small, plausible bug (the kind a refactor introduces); the tests
assert that the real cores pass and that every mutant yields a counterexample. Mutants subclass
the real cores and override one private hook, so they track the real code.

Negotiator (property N1 agreement, N2 no deadlock):

- ``tie-local``: on a priority tie each side prefers its *own* protocol (instead of the lower
  id): both wait for an ACCEPT/REJECT that never comes (N2).
- ``tie-yield``: on a priority tie each side yields to the *peer's* protocol: both answer and
  each runs a different protocol (N1).
- ``drop-early-byte``: the peer's byte of its next round, arriving while we still sleep, is
  discarded instead of kept: the peer waits for our answer forever (N2).

Mediator (properties M1..M4):

- ``no-mutual``: the registry pairs a newcomer with whoever registered under the wanted key,
  without checking that it wants the newcomer back (M1).
- ``identify-early``: PeerIdentification goes to the Client together with PeerDisconnect,
  before the Peer confirmed (M2).
- ``forget-client``: on the Peer's confirmation the mediator closes the Peer's session but
  never introduces nor releases the Client, which is left waiting (M3).
- ``leaky-registry``: closing a waiting session leaves its registry entry behind (M4).
- ``mute-pings``: the Mediator accepts a waiting peer's Ping but never answers it: the peer
  takes the live Mediator for silent (K1).

Liveness after the introduction (property L1, option ``coordinate``):

- ``quiet-loss``: the Mediator closes a coordinating session that ends before its done status
  without telling the partner, which is left punching until its own deadline (L1).
- ``punch-on``: a peer takes PARTNER_LOST like any other end of the coordination and keeps
  punching towards a partner that is gone (L1).

Peer keepalive (property K1):

- ``slow-pings``: a peer announces a quarter of the interval it really pings at: the Mediator
  takes it for silent and closes its registration (K1).

Peer (property M3, with faults):

- ``keep-open``: a peer that fails keeps its candidate connections open, so a partner that
  already committed is never told (M3).

Direct handshake with a stranger (properties D2..D4, ``models.direct_model``):

- ``commit-on-init``: the Peer commits on the first HandshakeInit that verifies, without the
  Client's key confirmation: a copied HandshakeInit makes it commit to the stranger (D2).
- ``no-binding``: the Noise prologue leaves out the pairing id: the HandshakeInit recorded in an
  earlier pairing of the same keys verifies and is answered (D4).
- ``global-cap``: wave 1's global candidate cap that refuses newcomers: a stranger's silent
  connections lock the Client out (D3).

Record layer against an adversary on the wire (properties C1..C4, ``models.channel_model``):

- ``skip-lost-record``: the receiver tolerates lost records (it tries the next two nonces when
  a record fails authentication): a dropped record goes unnoticed and the application misses a
  message (C1).
- ``eof-is-close``: a transport FIN without the close record is taken as a clean end: a forged
  FIN truncates the stream unnoticed (C2).
- ``close-not-recorded``: sealing the close record does not step the lifecycle machine, so the
  channel still counts as open for sending (C3).
- ``fin-only-close``: closing sends no close record, only the FIN: every clean close fails
  on the other side as a truncation (C4).
"""

from __future__ import annotations

from collections.abc import Iterator

from p2psc.models.channel_model import ChannelModel
from p2psc.models.direct_model import DirectModel
from p2psc.models.mediation_model import MediationModel
from p2psc.models.negotiator_model import NegotiatorPairModel
from p2psc.models.relay_model import RelayModel

from p2psc import wire
from p2psc.core.channel import SecureChannel
from p2psc.core.io import Close, Send, SetTimer
from p2psc.core.mediator import MediatorAction, MediatorConfig, MediatorCore
from p2psc.core.negotiator import Negotiator
from p2psc.core.peer import PeerAction, PeerCore, prologue
from p2psc.core.registry import InMemoryRegistry, RegistryKey
from p2psc.errors import NoiseError, P2pscError
from p2psc.noise import CipherState, HandshakeState

__all__ = [
    "CHANNEL_MUTANTS",
    "MEDIATION_MUTANTS",
    "NEGOTIATOR_MUTANTS",
    "channel_mutant",
    "mediation_mutant",
    "negotiator_mutant",
]


# --- negotiator ---------------------------------------------------------------------------


class TieLocalNegotiator(Negotiator):
    """On equal priority, our own proposal wins (on both sides: each waits for the other)."""

    __slots__ = ()

    def _guard(self, name: str) -> bool:
        if name == "our_protocol_wins":
            ours = self.protocols.by_id[self._proposed]  # type: ignore[index]
            theirs = self.protocols.by_id[self._byte]
            if ours.priority == theirs.priority:
                return True
        return super()._guard(name)


class TieYieldNegotiator(Negotiator):
    """On equal priority, the peer's proposal wins (on both sides: each runs the other's)."""

    __slots__ = ()

    def _guard(self, name: str) -> bool:
        if name == "our_protocol_wins":
            ours = self.protocols.by_id[self._proposed]  # type: ignore[index]
            theirs = self.protocols.by_id[self._byte]
            if ours.priority == theirs.priority:
                return False
        return super()._guard(name)


class DropEarlyByteNegotiator(Negotiator):
    """Discards the peer's round byte that arrives before our own round started (instead of
    keeping it, spec/negotiator.md 6.1): the peer then waits for an answer forever."""

    __slots__ = ()

    def _receive_byte(self, byte: int) -> bytes:
        if self._state in ("Initial", "Sleep"):
            return b""
        return super()._receive_byte(byte)


NEGOTIATOR_MUTANTS: dict[str, tuple[type[Negotiator], str]] = {
    "tie-local": (TieLocalNegotiator, "N2"),
    "tie-yield": (TieYieldNegotiator, "N1"),
    "drop-early-byte": (DropEarlyByteNegotiator, "N2"),
}
"""Mutant name -> (negotiator class, the property it must break)."""


def negotiator_mutant(
    name: str,
    *,
    protocols: int = 2,
    rounds: int = 2,
    faults: bool = False,
    mixed_sets: bool = False,
) -> NegotiatorPairModel:
    cls, _ = NEGOTIATOR_MUTANTS[name]
    return NegotiatorPairModel(
        protocols=protocols,
        rounds=rounds,
        faults=faults,
        mixed_sets=mixed_sets,
        negotiator_class=cls,
        name=f"negotiator[mutant {name}]",
    )


# --- mediator -----------------------------------------------------------------------------


class _SloppyRegistry(InMemoryRegistry):
    """Finds a partner by the wanted key alone, ignoring whom that partner wants."""

    __slots__ = ()

    def _any(self, key: bytes) -> RegistryKey | None:
        for entry, _ in self.items():
            if entry[0] == key:
                return entry
        return None

    def lookup(self, our_key: bytes, their_key: bytes) -> int | None:
        exact = super().lookup(our_key, their_key)
        if exact is not None:
            return exact
        entry = self._any(our_key)
        return None if entry is None else super().lookup(*entry)

    def claim(self, our_key: bytes, their_key: bytes) -> int | None:
        entry = self._any(their_key)
        if entry is None:
            return None
        handle = super().lookup(*entry)
        self.unregister(entry[0], entry[1], handle if handle is not None else -1)
        return handle


class _LeakyRegistry(InMemoryRegistry):
    """Never forgets an entry when its session goes away."""

    __slots__ = ()

    def unregister(self, our_key: bytes, their_key: bytes, handle: int) -> bool:
        return False


class NoMutualMediator(MediatorCore):
    def __init__(self, config: MediatorConfig | None = None, **kwargs: object) -> None:
        super().__init__(config, registry=_SloppyRegistry(), **kwargs)  # type: ignore[arg-type]


class LeakyMediator(MediatorCore):
    def __init__(self, config: MediatorConfig | None = None, **kwargs: object) -> None:
        super().__init__(config, registry=_LeakyRegistry(), **kwargs)  # type: ignore[arg-type]


class IdentifyEarlyMediator(MediatorCore):
    """Sends PeerIdentification to the Client in the same step as PeerDisconnect."""

    def _pair(self, conn, session, transition, now, out):  # type: ignore[no-untyped-def]
        super()._pair(conn, session, transition, now, out)
        if session.partner is not None:
            early = wire.PeerIdentification(
                version=wire.PROTOCOL_VERSION,
                pairing_id=session.nonce or bytes(wire.PAIRING_ID_SIZE),
                peer=wire.Address.from_tuple(session.remote),
                peer_local=session.local,
            )
            out.append(Send(session.partner, early.encode()))


class ForgetClientMediator(MediatorCore):
    """On the Peer's confirmation: closes the Peer's session, forgets to answer the Client."""

    def _confirmed(self, conn, session, now, out):  # type: ignore[no-untyped-def]
        client_conn = session.partner
        self._close(conn, session, out, "eof: confirmed")
        if client_conn is not None:
            client = self._sessions.get(client_conn)
            if client is not None:
                client.deadline = None
                out.append(SetTimer(client_conn, None))


class MutePingsMediator(MediatorCore):
    """Accepts Pings (the deadline moves) but never sends the Pong."""

    def _on_ping(self, conn, session, ping, now, out):  # type: ignore[no-untyped-def]
        answer: list[MediatorAction] = []
        kept = super()._on_ping(conn, session, ping, now, answer)
        out.extend(a for a in answer if not isinstance(a, Send))
        return kept


class SlowPingsPeer(PeerCore):
    """Announces a quarter of its real keepalive interval in every Ping."""

    def _keepalive_due(self, now: float) -> list[PeerAction]:
        actions = super()._keepalive_due(now)
        out: list[PeerAction] = []
        for action in actions:
            if isinstance(action, Send) and action.data[3] == wire.MessageType.PING:
                ping = wire.Ping.decode(action.data)
                quarter = max(wire.MIN_KEEPALIVE_MS, ping.interval_ms // 4)
                action = Send(action.conn, wire.Ping(ping.token, quarter).encode())
            out.append(action)
        return out


class QuietLossMediator(MediatorCore):
    """A coordinating session that ends before its done status is closed alone: its partner is
    not told (it punches on until its own deadline)."""

    def _fail(self, conn, session, event, code, text, out, **options):  # type: ignore[no-untyped-def]
        if session.state == "coordinating":
            session.partner = None
        super()._fail(conn, session, event, code, text, out, **options)


class PunchOnPeer(PeerCore):
    """Treats PARTNER_LOST like any other abort: ends the coordination and punches on."""

    def _partner_lost(self, message, now):  # type: ignore[no-untyped-def]
        return self._end_coordination(f"the Mediator ended it (PARTNER_LOST: {message.text})")


class KeepOpenPeer(PeerCore):
    """On failure, forgets to close its candidate connections (one of which the partner may
    have committed to)."""

    def _finish_failed(self, error: P2pscError) -> list[PeerAction]:
        candidates = set(self.candidates)
        actions = super()._finish_failed(error)
        return [a for a in actions if not (isinstance(a, Close) and a.conn in candidates)]


MEDIATION_MUTANTS: dict[str, tuple[type[MediatorCore] | type[PeerCore], str]] = {
    "no-mutual": (NoMutualMediator, "M1"),
    "identify-early": (IdentifyEarlyMediator, "M2"),
    "forget-client": (ForgetClientMediator, "M3"),
    "keep-open": (KeepOpenPeer, "M3"),
    "leaky-registry": (LeakyMediator, "M4"),
    "mute-pings": (MutePingsMediator, "K1"),
    "slow-pings": (SlowPingsPeer, "K1"),
    "quiet-loss": (QuietLossMediator, "L1"),
    "punch-on": (PunchOnPeer, "L1"),
}
"""Mutant name -> (broken mediator or peer class, the property it must break)."""

NEEDS_FAULTS = frozenset({"keep-open", "quiet-loss", "punch-on"})
COORDINATE = frozenset({"quiet-loss", "punch-on"})
"""Mutants of the liveness rule: their models run with ``coordinate`` (and faults: only a
dropped connection ends a coordinating session early in the model)."""
KEEPALIVE = frozenset({"mute-pings", "slow-pings"})
"""Mutants of the keepalive: their models run with ``keepalive`` (the peers ping)."""
"""Mutants whose bug only shows when a fault (drop, early timeout) happens."""


def mediation_mutant(name: str, *, faults: bool = False, third: bool = True) -> MediationModel:
    cls, _ = MEDIATION_MUTANTS[name]
    faults = faults or name in NEEDS_FAULTS
    label = f"mediation[mutant {name}]"
    keepalive = name in KEEPALIVE
    coordinate = name in COORDINATE
    if issubclass(cls, PeerCore):
        return MediationModel(
            third=third,
            faults=faults,
            peer_class=cls,
            name=label,
            keepalive=keepalive,
            coordinate=coordinate,
        )
    return MediationModel(
        third=third,
        faults=faults,
        mediator_class=cls,
        name=label,
        keepalive=keepalive,
        coordinate=coordinate,
    )


def all_mutants() -> Iterator[tuple[str, str, str]]:
    """(model, mutant, property) for every mutant."""
    for name, (_, prop) in NEGOTIATOR_MUTANTS.items():
        yield "negotiator", name, prop
    for name, (_, prop) in MEDIATION_MUTANTS.items():
        yield "mediation", name, prop
    for name, (_, prop) in DIRECT_MUTANTS.items():
        yield "direct", name, prop
    for name, (_, prop) in CHANNEL_MUTANTS.items():
        yield "channel", name, prop


class CommitOnInitPeer(PeerCore):
    """Commits to the first candidate whose HandshakeInit verifies, without waiting for the
    Client's key confirmation."""

    def _handshake_init(self, conn, cand, message, rest, now):  # type: ignore[no-untyped-def]
        actions = super()._handshake_init(conn, cand, message, rest, now)
        answered = self.candidates.get(conn)
        if self.finished or answered is None or answered.handshake is None:
            return actions
        handshake = HandshakeState.from_snapshot(answered.handshake)
        channel = SecureChannel(*handshake.split())
        hash_ = handshake.handshake_hash
        return actions + self._commit(conn) + self._established(conn, channel, b"", hash_)


class NoBindingPeer(PeerCore):
    """Leaves the pairing id out of the Noise prologue (both roles)."""

    def _prologue(self, client_key: bytes, peer_key: bytes, *, relayed: bool = False) -> bytes:
        return prologue(bytes(16), client_key, peer_key, relayed=relayed)


class GlobalCapPeer(PeerCore):
    """Wave 1's rule: a global cap on candidates that refuses newcomers (no eviction)."""

    def _add_candidate(self, conn, source, now):  # type: ignore[no-untyped-def]
        if source is not None:
            accepted = [c for c, cand in self.candidates.items() if cand.source is not None]
            if len(accepted) >= self.config.max_candidates:
                return [Close(conn, "too many candidate connections")]
        return super()._add_candidate(conn, source, now)


DIRECT_MUTANTS: dict[str, tuple[type[PeerCore], str]] = {
    "commit-on-init": (CommitOnInitPeer, "D2"),
    "no-binding": (NoBindingPeer, "D4"),
    "global-cap": (GlobalCapPeer, "D3"),
}
"""Mutant name -> (broken peer class, the property it must break) of the direct model."""


def direct_mutant(name: str, *, budget: int = 2) -> DirectModel:
    cls, _ = DIRECT_MUTANTS[name]
    return DirectModel(budget=budget, peer_class=cls, name=f"direct[mutant {name}]")


class PathUnboundPeer(PeerCore):
    """Leaves the path out of the Noise prologue: a relayed handshake uses the direct prologue
    (spec/relay.md section 4), so a handshake carried from one path to the other verifies."""

    def _prologue(self, client_key: bytes, peer_key: bytes, *, relayed: bool = False) -> bytes:
        return prologue(self.pairing_id, client_key, peer_key)


RELAY_MUTANTS: dict[str, tuple[type[PeerCore], str]] = {
    "path-unbound": (PathUnboundPeer, "R1"),
}
"""Mutant name -> (broken peer class, the property it must break) of the relay model (explored
with the bridging relay, ``--evil``)."""


def relay_mutant(name: str, *, faults: int = 1, evil: bool = True) -> RelayModel:
    cls, _ = RELAY_MUTANTS[name]
    return RelayModel(faults=faults, evil=True, peer_class=cls, name=f"relay[mutant {name}]")


# --- record layer -------------------------------------------------------------------------


class _WindowCipherState(CipherState):
    """Opens a record with the expected nonce or either of the next two (a "reordering
    window"): a lost record is skipped instead of failing the channel."""

    __slots__ = ()

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes | memoryview) -> bytes:
        start = self._n
        for n in range(start, start + 3):
            self._n = n
            try:
                return super().decrypt_with_ad(ad, ciphertext)
            except NoiseError:
                continue
        self._n = start
        return super().decrypt_with_ad(ad, ciphertext)


class SkipLostRecordChannel(SecureChannel):
    """Tolerates lost records (see :class:`_WindowCipherState`)."""

    __slots__ = ()

    def __init__(self, send: CipherState, recv: CipherState) -> None:
        super().__init__(send, _WindowCipherState(recv.key, recv.n))


class EofIsCloseChannel(SecureChannel):
    """Takes a bare transport FIN for the authenticated close."""

    __slots__ = ()

    def transport_eof(self) -> None:
        if self.failed is None and not self.peer_closed:
            return
        super().transport_eof()


class CloseNotRecordedChannel(SecureChannel):
    """Seals the close record but leaves the lifecycle where it was."""

    __slots__ = ()

    def seal_close(self) -> bytes:
        state = self._state
        record = super().seal_close()
        self._state = state
        return record


class FinOnlyCloseChannel(SecureChannel):
    """Closes with the transport's FIN alone: no close record goes out."""

    __slots__ = ()

    def seal_close(self) -> bytes:
        super().seal_close()
        return b""


CHANNEL_MUTANTS: dict[str, tuple[type[SecureChannel], str]] = {
    "skip-lost-record": (SkipLostRecordChannel, "C1"),
    "eof-is-close": (EofIsCloseChannel, "C2"),
    "close-not-recorded": (CloseNotRecordedChannel, "C3"),
    "fin-only-close": (FinOnlyCloseChannel, "C4"),
}
"""Mutant name -> (broken channel class, the property it must break) of the channel model."""


def channel_mutant(name: str, *, budget: int = 2) -> ChannelModel:
    cls, _ = CHANNEL_MUTANTS[name]
    return ChannelModel(budget=budget, channel_class=cls, name=f"channel[mutant {name}]")
