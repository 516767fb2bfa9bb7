"""TLS to the Mediator for every peer adapter: a :class:`PeerDriver` whose Mediator
connections run inside TLS (issue 21; spec/mediator.md section 6.3).

Why here and not in ``p2psc.core``: TLS draws its randomness from OpenSSL, and the cores take
none from anywhere but their injected sources; and why not in each adapter: the asyncio, blocking
and trio adapters would each write it again. So this module wraps the shared driver: bytes of a
Mediator connection pass through a :class:`p2psc.tls.TlsClientSession` (``ssl.MemoryBIO``, no
socket) on their way in and out, and the core never knows. The direct connections are not
touched (they carry the Noise channel). A Peer confirms PeerDisconnect with ``close_notify``
followed by its TCP close, as spec/mediator.md asks. A TLS failure (verification included) ends
the attempt with :class:`~p2psc.errors.MediatorTlsError` (or its subclass
:class:`~p2psc.errors.TlsVerificationFailed`).
"""

from __future__ import annotations

import dataclasses
import ssl
from typing import Unpack

from p2psc.core.io import Close, ConnId, Send
from p2psc.core.peer import MEDIATOR_BASE, PUNCH_BASE, PeerCore, PeerOptions, peer_config
from p2psc.core.peer_driver import IoOp, PeerDriver
from p2psc.errors import MediatorTlsError
from p2psc.interfaces import local_addresses
from p2psc.keys import Keypair, PublicKey
from p2psc.tls import TlsClientSession, client_context, parse_mediator_address

__all__ = ["TlsPeerDriver", "make_driver", "mediator_target", "prepare"]


def _is_mediator(conn: ConnId) -> bool:
    return MEDIATOR_BASE <= conn < PUNCH_BASE


class TlsPeerDriver(PeerDriver):
    """A :class:`PeerDriver` that speaks TLS on its Mediator connections (same interface)."""

    def __init__(
        self,
        core: PeerCore,
        context: ssl.SSLContext,
        server_hostname: str | None,
        *,
        pinned: str | bytes | None = None,
    ) -> None:
        super().__init__(core)
        self.context = context
        self.server_hostname = server_hostname
        self.pinned = pinned
        self.sessions: dict[ConnId, TlsClientSession] = {}

    def opened(
        self, conn: ConnId, remote: tuple[str, int], local: tuple[str, int], now: float
    ) -> list[IoOp]:
        if not _is_mediator(conn) or conn not in self.live:
            return super().opened(conn, remote, local, now)
        session = TlsClientSession(self.context, self.server_hostname, pinned=self.pinned)
        self.sessions[conn] = session
        first = [Send(conn, session.start())]
        return first + self._wrap(super().opened(conn, remote, local, now))

    def received(self, conn: ConnId, data: bytes, now: float) -> list[IoOp]:
        session = self.sessions.get(conn)
        if session is None:
            return self._wrap(super().received(conn, data, now))
        try:
            plain = session.receive(data)
        except MediatorTlsError as error:
            return self._tls_failed(conn, error)
        ops: list[IoOp] = []
        out = session.data_to_send()
        if out:
            ops.append(Send(conn, out))
        if plain:
            ops += self._wrap(super().received(conn, plain, now))
        return ops

    def closed(self, conn: ConnId, error: str | None, now: float) -> list[IoOp]:
        self.sessions.pop(conn, None)
        return self._wrap(super().closed(conn, error, now))

    def tick(self, now: float) -> list[IoOp]:
        return self._wrap(super().tick(now))

    def start(self, now: float) -> list[IoOp]:
        return self._wrap(super().start(now))

    def accepted(
        self, remote: tuple[str, int], local: tuple[str, int], now: float
    ) -> tuple[ConnId, list[IoOp]]:
        conn, ops = super().accepted(remote, local, now)
        return conn, self._wrap(ops)

    # --- internals --------------------------------------------------------------------------

    def _wrap(self, ops: list[IoOp]) -> list[IoOp]:
        """Encrypt what the core sends to the Mediator; close_notify before closing it."""
        out: list[IoOp] = []
        for op in ops:
            session = self.sessions.get(op.conn) if isinstance(op, Send | Close) else None
            if session is None:
                out.append(op)
            elif isinstance(op, Send):
                try:
                    data = session.send(op.data)
                except MediatorTlsError as error:
                    return out + self._tls_failed(op.conn, error)
                if data:
                    out.append(Send(op.conn, data))
            else:
                del self.sessions[op.conn]
                closing = session.close()
                if closing:
                    out.append(Send(op.conn, closing))
                out.append(op)
        return out

    def _tls_failed(self, conn: ConnId, error: MediatorTlsError) -> list[IoOp]:
        """TLS to the Mediator broke: the attempt fails with that error (no fallback to clear
        text: an attacker could force it)."""
        self.sessions.pop(conn, None)
        if self.result is None:
            self.result = error
            self.timers.clear()
        self.live.discard(conn)
        return [Close(conn, error.reason)]


def mediator_target(
    mediator: tuple[str, int] | str, *, tls: bool = False
) -> tuple[tuple[str, int], bool]:
    """``(host, port)`` and whether to use TLS, from ``(host, port)``, ``"host:port"``,
    ``"tls://host:port"`` or ``"tcp://host:port"`` (``tls`` is the default without a scheme)."""
    if isinstance(mediator, tuple):
        return (str(mediator[0]), int(mediator[1])), tls
    parsed = parse_mediator_address(mediator, tls=tls)
    return parsed.address, parsed.tls


def make_driver(
    core: PeerCore,
    *,
    tls: bool,
    ca: str | None = None,
    pin: str | bytes | None = None,
) -> PeerDriver:
    """The driver an adapter runs: TLS to the Mediator when ``tls`` (verified against the system
    trust store and the host name, or ``ca`` (a PEM file), or exactly the certificate whose
    SHA-256 fingerprint is ``pin``), else the plain :class:`PeerDriver`."""
    if not tls:
        if ca is not None or pin is not None:
            raise ValueError("mediator_ca and mediator_pin need TLS (a tls:// mediator address)")
        return PeerDriver(core)
    context = client_context(cafile=ca, pinned=pin)
    host = core.config.mediator[0]
    return TlsPeerDriver(core, context, host, pinned=pin)


def prepare(
    keypair: Keypair,
    peer_key: PublicKey | bytes | str,
    mediator: tuple[str, int] | str,
    *,
    tls: bool = False,
    mediator_ca: str | None = None,
    mediator_pin: str | None = None,
    **options: Unpack[PeerOptions],
) -> PeerDriver:
    """What every adapter's ``connect()`` does before it moves a byte: parse the Mediator
    address (``tls://`` included), build the :class:`~p2psc.core.peer.PeerConfig` and the
    driver (with TLS to the Mediator when asked). Raises ``ValueError``/``KeyFileError`` for
    unusable arguments, before any socket exists."""
    address, use_tls = mediator_target(mediator, tls=tls)
    options.setdefault("relay", "auto")  # the user-facing default (issue 14; spec/relay.md)
    config = peer_config(keypair, peer_key, address, **options)
    if config.candidates is None:  # every usable address of this host (spec: "Candidates")
        config = dataclasses.replace(config, candidates=local_addresses())
    return make_driver(PeerCore(config), tls=use_tls, ca=mediator_ca, pin=mediator_pin)
