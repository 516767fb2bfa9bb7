"""INSECURE LEGACY: ``await connect_legacy(...)``, a protocol version 0 client over asyncio.

Why: Python programs that must pair with peers running the original C++ library (RSA keys,
JSON messages) need a client speaking that protocol. All protocol logic is in
:class:`p2psc.legacy.peer.LegacyPeerCore`, run by the shared
:class:`p2psc.core.peer_driver.AttemptDriver` and executed on real sockets by the asyncio
adapter of version 1 (:class:`p2psc.aio.connect.DriverAdapter`); this module only says what the
caller gets: the kept connection as a plain StreamReader/StreamWriter pair. Every wait has a
deadline (the core's timers, the driver's outer bound, the Peer's hand-over time), and
cancelling ``connect_legacy`` closes every socket it opened, as for version 1.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from p2psc.aio.connect import DriverAdapter, StreamConnection
from p2psc.core.peer_driver import AttemptDriver, Outcome
from p2psc.legacy.crypto import RsaKeypair, RsaPublicKey
from p2psc.legacy.peer import Established, LegacyPeerConfig, LegacyPeerCore

__all__ = ["LegacyConnection", "connect_legacy"]

READ_SIZE = 65536


@dataclass
class LegacyConnection(StreamConnection):
    """A direct connection to the peer whose key we asked for, after the legacy handshake.

    ``role`` is ``"client"`` (we connected) or ``"peer"`` (we listened). Bytes the other side
    sent right after the handshake are already in ``reader``. :meth:`close`,
    :meth:`wait_closed` and ``async with`` as for :class:`p2psc.aio.P2PConnection`."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    role: str
    peer_key: RsaPublicKey


async def connect_legacy(
    keypair: RsaKeypair,
    their_key: RsaPublicKey,
    mediator: tuple[str, int],
    *,
    step_timeout: float = 10.0,
    pairing_timeout: float = 300.0,
    connect_timeout: float = 5.0,
    ack_grace: float = 0.25,
) -> LegacyConnection:
    """Pair with ``their_key`` through the legacy (version 0) protocol at ``mediator``.

    As the Peer, the connection is returned ``ack_grace`` seconds after PeerAcknowledgement
    was sent, so that the caller's first bytes never reach a C++ Client in the same read
    (bytes the Client sends meanwhile are kept in ``reader``).
    Raises a :class:`p2psc.errors.ConnectError` subclass on failure."""
    config = LegacyPeerConfig(
        keypair=keypair,
        their_key=their_key,
        mediator=mediator,
        step_timeout=step_timeout,
        pairing_timeout=pairing_timeout,
        connect_timeout=connect_timeout,
        ack_grace=ack_grace,
    )

    def hand_over(transport: asyncio.Transport, result: Outcome) -> LegacyConnection:
        assert isinstance(result, Established)
        reader, writer = _plain_streams(transport, result.leftover)
        return LegacyConnection(reader, writer, result.role, their_key)

    return await DriverAdapter(AttemptDriver(LegacyPeerCore(config)), hand_over).connect()


def _plain_streams(
    transport: asyncio.Transport, leftover: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Take ``transport`` over as a stream pair; ``leftover`` comes first in the reader. Called
    in the loop callback that set the result, so no byte can arrive in between."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=READ_SIZE, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    reader.feed_data(leftover)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)
