"""p2psc: peer-to-peer socket creation.

Two programs that know each other's public key ask a trusted Mediator to introduce them; the
Mediator verifies both identities and coordinates a TCP hole punch; they end up with one direct,
mutually authenticated connection, on which a Negotiator picks the application protocol.

Layers (h11-style): :mod:`p2psc.wire` and :mod:`p2psc.keys` are pure codecs and crypto;
:mod:`p2psc.machines` declares control flow; :mod:`p2psc.core` holds the sans-IO protocol cores;
:mod:`p2psc.aio` and :mod:`p2psc.sync` are thin adapters over real sockets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from p2psc.sync import connect as connect

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``p2psc.connect``: the blocking one-call interface (:func:`p2psc.sync.connect`), imported
    lazily so that ``import p2psc`` stays cheap."""
    if name == "connect":
        from p2psc.sync import connect

        return connect
    raise AttributeError(f"module 'p2psc' has no attribute {name!r}")
