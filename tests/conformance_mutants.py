"""Deliberately broken mediators: proof that the conformance harness can fail.

Each mutant is our real :class:`MediatorCore` (or the legacy-aware one) with exactly one rule of
spec/mediator.md or spec/legacy.md broken, by overriding one method (or handing it a sloppy
registry). ``tests/test_conformance.py`` runs the harness against each and asserts that exactly
the scenarios checking that rule fail.

Not a test module (no ``test_`` prefix). The overrides reach into the core's private methods on
purpose: a mutant is a white-box edit of the reference implementation.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import queue
import threading
from collections.abc import Callable, Iterator

from p2psc import wire
from p2psc.aio.mediator import serve_mediator
from p2psc.core.io import Action, Close, Closed, ConnId, Event, Send, SetTimer
from p2psc.core.mediator import (
    CONFIRMING,
    DISCONNECTING,
    TABLE,
    MediatorConfig,
    MediatorCore,
    _Session,
)
from p2psc.core.registry import InMemoryRegistry, RegistryKey
from p2psc.errors import ProtocolError, UnsupportedVersion
from p2psc.legacy import codec
from p2psc.legacy.mediator import LegacyAwareMediatorCore
from p2psc.machines.compiler import Transition

# --- version 1 ---------------------------------------------------------------------------------


class EarlyIdentification(MediatorCore):
    """Sends PeerIdentification together with PeerDisconnect, without waiting for the Peer to
    confirm: breaks the ordering guarantee (§4)."""

    def _pair(
        self, conn: ConnId, session: _Session, transition: Transition, now: float, out: list[Action]
    ) -> None:
        super()._pair(conn, session, transition, now, out)
        if session.state == DISCONNECTING and session.partner is not None:
            identification = wire.PeerIdentification(
                1,
                session.nonce or bytes(16),
                wire.Address.from_tuple(session.remote),
                session.local,
            )
            out.append(Send(session.partner, identification.encode()))

    def _confirmed(self, conn: ConnId, session: _Session, now: float, out: list[Action]) -> None:
        client_conn = session.partner
        client = self._sessions.get(client_conn) if client_conn is not None else None
        TABLE.step(session.state, "eof")
        self._close(conn, session, out, "eof")
        if client is not None and client_conn is not None:
            TABLE.step(client.state, "partner_confirmed", lambda name: False)
            client.partner = None
            self._close(client_conn, client, out, "already introduced")


class SloppyRegistry(InMemoryRegistry):
    """Finds a "partner" for anyone some waiting registration wants, whatever *they* want."""

    def _wanting(self, key: bytes) -> RegistryKey | None:
        return next((k for k, _ in self.items() if k[1] == key), None)

    def lookup(self, our_key: bytes, their_key: bytes) -> int | None:
        exact = super().lookup(our_key, their_key)
        if exact is not None:
            return exact
        found = self._wanting(their_key)
        return None if found is None else super().lookup(*found)

    def claim(self, our_key: bytes, their_key: bytes) -> int | None:
        exact = super().claim(our_key, their_key)
        if exact is not None:
            return exact
        found = self._wanting(our_key)
        return None if found is None else super().claim(found[1], found[0])


class NoMutualIntent(MediatorCore):
    """Pairs a registration with anyone waiting for its key: mutual intent not required (§1)."""

    def __init__(self, config: MediatorConfig | None = None) -> None:
        super().__init__(config, registry=SloppyRegistry())


class NoIdentityCheck(MediatorCore):
    """Accepts any AdvertiseResponse: the identity check is skipped (§3 step 3)."""

    def _on_response(
        self,
        conn: ConnId,
        session: _Session,
        message: wire.AdvertiseResponse,
        now: float,
        out: list[Action],
    ) -> None:
        forged = wire.AdvertiseResponse(session.nonce or bytes(32))
        super()._on_response(conn, session, forged, now, out)


class IgnoresOversized(MediatorCore):
    """Does not check the announced payload length: waits for 4097+ bytes instead of closing
    as soon as the header arrives (§6)."""

    @staticmethod
    def _next_frame(session: _Session) -> bytes | None:
        buf = session.buf
        if buf[: min(len(buf), 2)] != wire.MAGIC[: min(len(buf), 2)]:
            raise ProtocolError("bad magic")
        if len(buf) > 2 and buf[2] != wire.PROTOCOL_VERSION:
            raise UnsupportedVersion("bad version")
        if len(buf) < wire.HEADER_SIZE:
            return None
        end = wire.HEADER_SIZE + int.from_bytes(buf[4:6], "big")
        if len(buf) < end:
            return None
        session.buf = buf[end:]
        return buf[:end]


class KeepsGarbage(MediatorCore):
    """Drops bytes it cannot use instead of closing the connection (§7)."""

    def _bad(self, conn: ConnId, session: _Session, reason: str, out: list[Action]) -> None:
        session.buf = b""


class CrossedUnderLoad(MediatorCore):
    """Mixes up partners when many pairings are in flight (as a shared "last Client" variable
    would): the Peer is given another confirming Client's address (§4).

    "Many" is 4 other Clients confirming at once, which only ``pairing-concurrent-pairs`` reaches
    when scenarios run one at a time (the test runs this mutant with ``jobs=1``)."""

    def _pair(
        self, conn: ConnId, session: _Session, transition: Transition, now: float, out: list[Action]
    ) -> None:
        others = [s for c, s in self._sessions.items() if s.state == CONFIRMING]
        super()._pair(conn, session, transition, now, out)
        if len(others) < 4 or session.state != DISCONNECTING:
            return
        for index, action in enumerate(out):
            if isinstance(action, Send) and action.conn == conn:
                message = wire.decode(action.data)
                if isinstance(message, wire.PeerDisconnect):
                    wrong = wire.Address.from_tuple(others[-1].remote)
                    crossed = wire.PeerDisconnect(
                        message.pairing_id, message.peer, wrong, message.client_local
                    )
                    out[index] = Send(conn, crossed.encode())


class ForgetfulRegistry(InMemoryRegistry):
    """Never reports the registration it replaced."""

    def register(self, our_key: bytes, their_key: bytes, handle: int) -> int | None:
        super().register(our_key, their_key, handle)
        return None


class NoDuplicateHandling(MediatorCore):
    """Leaves the older of two identical registrations open instead of closing it (§5)."""

    def __init__(self, config: MediatorConfig | None = None) -> None:
        super().__init__(config, registry=ForgetfulRegistry())


class NoIdleTimeout(MediatorCore):
    """Never times out a connection that sends nothing (§6 advertise_timeout)."""

    def _on_timer(self, conn: ConnId, now: float, out: list[Action]) -> None:
        session = self._sessions.get(conn)
        if session is not None and session.state == "awaiting_advertise":
            return
        super()._on_timer(conn, now, out)


class ResetConfirms(MediatorCore):
    """Takes a reset of the Peer's connection as its confirmation (§4 (c))."""

    def _on_closed(
        self, conn: ConnId, clean: bool, error: str | None, now: float, out: list[Action]
    ) -> None:
        super()._on_closed(conn, True, None, now, out)


class VagueReasons(MediatorCore):
    """Sends UNSPECIFIED instead of the specific reason code, except UNSUPPORTED_VERSION: only
    recommended scenarios fail, so the run still passes (with warnings)."""

    def handle(self, event: Event, now: float) -> list[Action]:
        actions = super().handle(event, now)
        for index, action in enumerate(actions):
            if isinstance(action, Send) and action.data[3:4] == b"\x03":
                abort = wire.decode(action.data)
                assert isinstance(abort, wire.AdvertiseAbort)
                if abort.code != wire.Reason.UNSUPPORTED_VERSION:
                    vague = wire.AdvertiseAbort(wire.Reason.UNSPECIFIED, abort.text)
                    actions[index] = Send(action.conn, vague.encode())
        return actions


def early_deadlines(config: MediatorConfig) -> MediatorCore:
    """Every deadline at 60% of the configured value the harness is told (§2: never early)."""
    return MediatorCore(
        dataclasses.replace(
            config,
            advertise_timeout=config.advertise_timeout * 0.6,
            response_timeout=config.response_timeout * 0.6,
            confirm_timeout=config.confirm_timeout * 0.6,
        )
    )


def early_confirm(config: MediatorConfig) -> MediatorCore:
    """Only the confirmation deadline, at 0.1 s whatever is configured."""
    return MediatorCore(dataclasses.replace(config, confirm_timeout=0.1))


class NewcomerRegistry(InMemoryRegistry):
    """Finds a waiting registration of the key a newcomer wants, whatever *that* one wants."""

    def _of(self, owner: bytes) -> RegistryKey | None:
        return next((k for k, _ in self.items() if k[0] == owner), None)

    def lookup(self, our_key: bytes, their_key: bytes) -> int | None:
        exact = super().lookup(our_key, their_key)
        if exact is not None:
            return exact
        found = self._of(our_key)
        return None if found is None else super().lookup(*found)

    def claim(self, our_key: bytes, their_key: bytes) -> int | None:
        exact = super().claim(our_key, their_key)
        if exact is not None:
            return exact
        found = self._of(their_key)
        return None if found is None else super().claim(found[1], found[0])


class NewcomerPairs(MediatorCore):
    """Pairs a newcomer C (wanting A) with a waiting A that wants B (§1 mutual intent)."""

    def __init__(self, config: MediatorConfig | None = None) -> None:
        super().__init__(config, registry=NewcomerRegistry())


class StaleTimer(MediatorCore):
    """Leaves the Peer's response_timeout running after pairing (§2: entering a state replaces
    the deadline): the Peer is aborted early, counted from its challenge."""

    def _pair(
        self, conn: ConnId, session: _Session, transition: Transition, now: float, out: list[Action]
    ) -> None:
        old = session.deadline
        super()._pair(conn, session, transition, now, out)
        if session.state == DISCONNECTING:
            session.deadline = old
            out[:] = [a for a in out if not (isinstance(a, SetTimer) and a.conn == conn)]


class EchoesCloses(MediatorCore):
    """Our core behind an adapter that reports every close the core made as a Closed event:
    harmless (the core has forgotten those connections), so it must pass everything."""

    def handle(self, event: Event, now: float) -> list[Action]:
        actions = super().handle(event, now)
        for action in list(actions):
            if isinstance(action, Close):
                actions += super().handle(Closed(action.conn, None), now)
        return actions


class DropsCandidates(MediatorCore):
    """Forwards no CANDIDATES: the partner never learns the other addresses (§1)."""

    def _on_advertise(  # type: ignore[no-untyped-def]
        self, conn, session, message, now, out
    ) -> None:
        plain = wire.Advertise(message.version, message.our_key, message.their_key, message.local)
        super()._on_advertise(conn, session, plain, now, out)


class NoKeepalive(MediatorCore):
    """A Mediator from before keepalives: any byte after the handshake, a Ping too, is a
    violation (§4.1)."""

    def _speaks_v1(self, conn: ConnId) -> bool:
        return False


class NoSilenceDetection(MediatorCore):
    """Answers Pings but never moves the waiting deadline: a waiting advertiser that stops
    pinging stays registered until wait_timeout (§4.1 rule 3)."""

    def _on_ping(
        self, conn: ConnId, session: _Session, ping: wire.Ping, now: float, out: list[Action]
    ) -> bool:
        kept = super()._on_ping(conn, session, ping, now, out)  # type: ignore[arg-type]
        if kept and session.state == "waiting" and session.deadline != session.wait_end:
            session.deadline = session.wait_end
            out[:] = [a for a in out if not (isinstance(a, SetTimer) and a.conn == conn)]
            out.append(SetTimer(conn, session.deadline))
        return kept


class NoFloodFloor(MediatorCore):
    """Answers every Ping, however close to the previous one (§4.1 rule 4)."""

    def _on_ping(
        self, conn: ConnId, session: _Session, ping: wire.Ping, now: float, out: list[Action]
    ) -> bool:
        session.pinged = None
        return super()._on_ping(conn, session, ping, now, out)  # type: ignore[arg-type]


# --- coordinated pairings (§4.3) ----------------------------------------------------------------


def no_coordination(config: MediatorConfig) -> MediatorCore:
    """A Mediator that does not coordinate (conforming: the capability is optional)."""
    return MediatorCore(dataclasses.replace(config, coordinate=False))


class CoordinatedCloseConfirms(MediatorCore):
    """Echoes COORDINATE but still takes the Peer's clean close for its confirmation: a Peer
    killed right after PeerDisconnect is introduced to the Client (§4.3 rule 1)."""

    def _on_closed(
        self, conn: ConnId, clean: bool, error: str | None, now: float, out: list[Action]
    ) -> None:
        session = self._sessions.get(conn)
        if clean and session is not None and session.state == "disconnecting":
            session.coord = False
        super()._on_closed(conn, clean, error, now, out)  # type: ignore[arg-type]


class QuietPartnerLoss(MediatorCore):
    """A coordinating session that ends before its done status is closed alone: the partner is
    left punching until its own deadline (§4.3 rule 4)."""

    def _fail(self, conn, session, event, code, text, out, **options):  # type: ignore[no-untyped-def]
        if session.state == "coordinating":
            session.partner = None
        super()._fail(conn, session, event, code, text, out, **options)


class EchoesOneSided(MediatorCore):
    """Coordinates when only one partner offered COORDINATE: the other one, which never
    offered it, is sent an item it may not know and rules it does not follow (§4.3)."""

    def _pair(
        self, conn: ConnId, session: _Session, transition: Transition, now: float, out: list[Action]
    ) -> None:
        client_conn = self._registry.lookup(session.their, session.our)
        client = self._sessions.get(client_conn) if client_conn is not None else None
        if client is not None and (client.coord or session.coord):
            client.coord = session.coord = True
        super()._pair(conn, session, transition, now, out)


class DoneAbortsPartner(MediatorCore):
    """Takes a done status like a loss: the survivor is told PARTNER_LOST although its partner
    finished (§4.3 rule 3, the race of a handshake completing on one side first)."""

    def _on_status(self, conn, session, message, now, out):  # type: ignore[no-untyped-def]
        if session.state == "coordinating" and message.status != wire.StatusCode.PUNCHING:
            self._fail(conn, session, "eof", None, "reported done", out)
            return False
        return super()._on_status(conn, session, message, now, out)


# --- version 0 ---------------------------------------------------------------------------------


class LegacyEchoesCloses(LegacyAwareMediatorCore):
    """The legacy-aware core behind an adapter that reports every close the core made: the core
    ignores a report on the Peer socket it closed itself, so this passes everything."""

    def handle(self, event: Event, now: float) -> list[Action]:
        actions = super().handle(event, now)
        for action in list(actions):
            if isinstance(action, Close):
                actions += self.handle(Closed(action.conn, None), now)
        return actions


class LegacyEchoConfirms(LegacyAwareMediatorCore):
    """The same adapter in front of a legacy core that does not ignore it (as ours did before):
    the echoed close of the Peer counts as its confirmation and the Client is introduced at
    once, before the C++ Peer could bind its port (spec/legacy.md §3 step 4)."""

    def handle(self, event: Event, now: float) -> list[Action]:
        actions = super().handle(event, now)
        for action in list(actions):
            if isinstance(action, Close) and action.conn in self._gone:
                self._gone.discard(action.conn)
                actions += self.handle(Closed(action.conn, None), now)
        return actions


class LegacyKeepsPeerOpen(LegacyAwareMediatorCore):
    """Does not close a version 0 Peer's connection after PeerDisconnect (the C++ Peer then
    cannot bind its port; spec/legacy.md §3 step 3)."""

    def _translate_send(self, conn: ConnId, frame: bytes, fresh: list[ConnId]) -> list[Action]:
        actions = super()._translate_send(conn, frame, fresh)
        return [a for a in actions if isinstance(a, Send)]


class LegacyChatty(LegacyAwareMediatorCore):
    """Writes a goodbye AdvertiseAbort right behind PeerIdentification: two objects back to
    back, which the C++ client's single read cannot parse (spec/legacy.md §1.1)."""

    def _translate_send(self, conn: ConnId, frame: bytes, fresh: list[ConnId]) -> list[Action]:
        actions = super()._translate_send(conn, frame, fresh)
        if frame[3:4] == bytes((wire.MessageType.PEER_IDENTIFICATION,)):
            actions.append(Send(conn, codec.encode(codec.AdvertiseAbort("goodbye"))))
        return actions


V1_MUTANTS: dict[str, Callable[[MediatorConfig], MediatorCore]] = {
    "early-identification": EarlyIdentification,
    "no-mutual-intent": NoMutualIntent,
    "no-identity-check": NoIdentityCheck,
    "ignores-oversized": IgnoresOversized,
    "keeps-garbage": KeepsGarbage,
    "crossed-under-load": CrossedUnderLoad,
    "no-duplicate-handling": NoDuplicateHandling,
    "no-idle-timeout": NoIdleTimeout,
    "reset-confirms": ResetConfirms,
    "vague-reasons": VagueReasons,
    "early-deadlines": early_deadlines,
    "early-confirm": early_confirm,
    "newcomer-pairs": NewcomerPairs,
    "stale-timer": StaleTimer,
    "echoes-closes": EchoesCloses,
    "drops-candidates": DropsCandidates,
    "no-keepalive": NoKeepalive,
    "no-silence-detection": NoSilenceDetection,
    "no-flood-floor": NoFloodFloor,
    "no-coordination": no_coordination,
    "coordinated-close-confirms": CoordinatedCloseConfirms,
    "quiet-partner-loss": QuietPartnerLoss,
    "done-aborts-partner": DoneAbortsPartner,
    "echoes-one-sided": EchoesOneSided,
}
"""Version 1 mutant name -> factory taking the (short) test configuration."""

LEGACY_MUTANTS: dict[str, Callable[[MediatorConfig], MediatorCore]] = {
    "legacy-keeps-peer-open": LegacyKeepsPeerOpen,
    "legacy-chatty": LegacyChatty,
    "legacy-echo-confirms": LegacyEchoConfirms,
    "legacy-echoes-closes": LegacyEchoesCloses,
    "v1-only": MediatorCore,
}
"""Version 0 mutants (``v1-only`` is a mediator without version 0 support at all)."""


# --- serving a core from a background thread (for subprocess and pytest-plugin tests) ----------


@contextlib.contextmanager
def serve_in_thread(core: MediatorCore) -> Iterator[tuple[str, int]]:
    """Serve ``core`` on 127.0.0.1 from a thread with its own event loop; yield (host, port).

    Blocking callers (a subprocess, a synchronous pytest run) can then talk to it; the loop and
    the server are closed on exit, with a deadline on every step."""
    ready: queue.Queue[tuple[str, int] | BaseException] = queue.Queue()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        try:
            server = await serve_mediator("127.0.0.1", 0, core=core)
        except BaseException as error:
            ready.put(error)
            raise
        ready.put(server.address)
        try:
            await stop.wait()
        finally:
            await server.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        got = ready.get(timeout=10)
        if isinstance(got, BaseException):
            raise got
        yield got
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
