"""The sans-IO vocabulary shared by every connection-oriented core: events in, actions out.

A core never touches a socket or a clock. Its adapter turns what happened into an event
(:class:`Opened`, :class:`Received`, :class:`Closed`, :class:`TimerFired`), hands it to the core
together with ``now`` (seconds, any monotonic origin), and executes the actions the core returns,
in order. Connections are named by small integers (:data:`ConnId`) that the adapter allocates.

All classes are frozen, slotted and hashable, so the explorer can store them in states.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from p2psc.errors import P2pscError

__all__ = [
    "Action",
    "Close",
    "CloseKind",
    "Closed",
    "ConnId",
    "Connect",
    "Event",
    "Failed",
    "Listen",
    "Opened",
    "Received",
    "Send",
    "SetTimer",
    "TimerFired",
]

ConnId = int
"""Adapter-chosen name of one TCP connection (or one listening socket)."""


# --- events: adapter -> core -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Opened:
    """A connection exists: accepted (``remote`` = observed peer address) or connected out."""

    conn: ConnId
    remote: tuple[str, int]
    local: tuple[str, int] | None = None


@dataclass(frozen=True, slots=True)
class Received:
    """Bytes arrived on ``conn`` (any chunking: cores must reassemble frames)."""

    conn: ConnId
    data: bytes


class CloseKind(enum.Enum):
    """How a connection ended: the distinction the protocols rely on, never a free string."""

    EOF = "eof"
    """The other side ended its stream cleanly (TCP FIN read as end of file; over TLS, its
    close_notify too). At the Mediator this is the Peer's confirmation of PeerDisconnect."""
    ERROR = "error"
    """Anything else: a reset, a refused or failed connect, a timeout, a broken TLS session."""


@dataclass(frozen=True, slots=True)
class Closed:
    """``conn`` is gone. ``kind`` says how (:class:`CloseKind`); ``error`` is a short human
    reason, for logs and messages only: no core decides anything on its text.

    ``Closed(conn)`` and ``Closed.eof(conn)`` report a clean end of stream; ``Closed(conn,
    "reason")`` and ``Closed.failed(conn, "reason")`` anything else (a reset must never be
    reported as EOF: at the Mediator that would forge the Peer's confirmation)."""

    conn: ConnId
    error: str | None = None
    kind: CloseKind | None = None

    def __post_init__(self) -> None:
        if self.kind is None:
            kind = CloseKind.EOF if self.error is None else CloseKind.ERROR
            object.__setattr__(self, "kind", kind)

    @property
    def clean(self) -> bool:
        """True for a clean end of stream (:attr:`CloseKind.EOF`)."""
        return self.kind is CloseKind.EOF

    @classmethod
    def eof(cls, conn: ConnId) -> Closed:
        """The other side ended its stream cleanly."""
        return cls(conn, None, CloseKind.EOF)

    @classmethod
    def failed(cls, conn: ConnId, reason: str) -> Closed:
        """The connection broke, or never formed; ``reason`` says how."""
        return cls(conn, reason or "failed", CloseKind.ERROR)


@dataclass(frozen=True, slots=True)
class TimerFired:
    """The deadline set by :class:`SetTimer` for ``conn`` has passed."""

    conn: ConnId


Event = Opened | Received | Closed | TimerFired


# --- actions: core -> adapter ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Write ``data`` to ``conn`` (as one write: legacy clients rely on it)."""

    conn: ConnId
    data: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """Close ``conn`` cleanly (after flushing earlier sends). ``reason`` is for logs.

    ``fin_with_send``: the :class:`Send` right before this Close (same conn, same action list)
    and the FIN must leave in ONE TCP segment, so the other side sees the message and the end
    of the stream at once (a legacy C++ Peer closes and rebinds its port the moment it has read
    PeerDisconnect: spec/legacy.md section 3)."""

    conn: ConnId
    reason: str = ""
    fin_with_send: bool = False


@dataclass(frozen=True, slots=True)
class SetTimer:
    """Fire :class:`TimerFired` for ``conn`` at ``deadline`` (same clock as ``now``); a later
    SetTimer for the same ``conn`` replaces it, ``deadline=None`` cancels it."""

    conn: ConnId
    deadline: float | None


@dataclass(frozen=True, slots=True)
class Listen:
    """Open a listening socket named ``conn`` on local ``port`` (SO_REUSEADDR/SO_REUSEPORT)."""

    conn: ConnId
    port: int


@dataclass(frozen=True, slots=True)
class Connect:
    """Open an outgoing connection named ``conn`` to ``remote``, from local ``from_port`` when
    given (same port as the mediator connection, for hole punching)."""

    conn: ConnId
    remote: tuple[str, int]
    from_port: int | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """The core's job failed for good; ``error`` is the typed exception to hand the caller."""

    error: P2pscError

    def __hash__(self) -> int:
        return hash((type(self.error), self.error.reason))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Failed)
            and type(other.error) is type(self.error)
            and other.error.reason == self.error.reason
        )


Action = Send | Close | SetTimer | Listen | Connect | Failed
