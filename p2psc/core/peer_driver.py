"""The one driver of a peer attempt that every adapter shares (asyncio, blocking, trio, legacy).

Why: a peer core speaks events and actions; an adapter must still keep its timers, name accepted
connections, ignore the close reports of connections the core itself closed, bound the whole
attempt, and know when the attempt is over. Written once here (sans-IO: no sockets, no clock,
no event loop), each adapter only moves bytes and time, in the style of aioquic's
``QuicConnection``: events and ``now`` in, I/O operations and one deadline out.

:class:`AttemptDriver` drives any core of the :class:`DrivenCore` shape: the version 1
:class:`~p2psc.core.peer.PeerCore` (:class:`PeerDriver` is ``AttemptDriver[PeerCore]``) and the
version 0 :class:`~p2psc.legacy.peer.LegacyPeerCore` (``AttemptDriver(LegacyPeerCore(...))``).

An adapter's loop, in full::

    driver = PeerDriver(PeerCore(config))
    ops = driver.start(now())
    while driver.result is None:
        execute(ops)                               # Connect, Listen, Send, Close, in order
        wait for a socket event or driver.next_deadline()
        ops = driver.opened(...) | accepted(...) | received(...) | closed(...) | tick(now())
    driver.result: Established (hand its conn to the application) or a P2pscError to raise

What the adapter owes the driver (the contract; spec/embedding.md has the table):

- execute the operations in order, without blocking on the network (a ``Send`` is queued);
- ``Listen`` must listen before the next operation runs (the Peer's listener must exist before
  its Mediator connection's close, which follows it, reaches the Mediator);
- every socket it opens for the attempt is bound with SO_REUSEADDR/SO_REUSEPORT to the local
  port the core names (:mod:`p2psc.sockets` has the helpers), from the local IP of the Mediator
  connection;
- report each connection that opens (``opened`` for a ``Connect``, ``accepted`` for one taken
  on the listener, with both addresses), bytes in arrival order, and the end of a connection
  (``closed``: ``None`` for a clean EOF, else a short reason); a failed ``Listen`` is
  ``closed(LISTENER, reason)`` (:data:`p2psc.core.peer.LISTENER`);
- call ``tick(now)`` at or after ``next_deadline()`` (early or repeated calls are harmless);
- after ``result`` is set: close every socket of the attempt except ``result.conn`` (the
  ``closing`` set names them), and feed ``result.leftover`` plus any bytes of ``result.conn``
  it read but did not report to the application's side of ``result.conn`` before anything read
  later;
- an outcome with a hand-over time (:class:`HeldOutcome`: the legacy Peer's, which must not
  let the caller write right behind PeerAcknowledgement) is returned to the caller only once
  ``ready``: ``next_deadline()`` then names that time, and the ``tick`` at or after it sets
  ``ready``. The connection is the application's from ``result`` on (bytes that arrive
  meanwhile are the caller's, not the driver's). Without a hand-over time ``ready`` is set
  with ``result``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, runtime_checkable

from p2psc.core.io import (
    Action,
    Close,
    Closed,
    Connect,
    ConnId,
    Event,
    Failed,
    Listen,
    Opened,
    Received,
    Send,
    SetTimer,
    TimerFired,
)
from p2psc.core.peer import FIRST_ACCEPTED, PeerCore
from p2psc.errors import HandshakeTimeout, P2pscError

__all__ = [
    "OUTER_MARGIN",
    "AttemptDriver",
    "DrivenCore",
    "HeldOutcome",
    "IoOp",
    "Outcome",
    "PeerDriver",
]

OUTER_MARGIN = 2.0
"""Seconds the outer bound adds to ``timeout``: the core fails first, this only catches bugs."""

IoOp = Send | Close | Listen | Connect
"""What an adapter executes: the core's actions less timers (the driver keeps those) and less
the outcome (``result``)."""


class Outcome(Protocol):
    """What a core emits when its attempt succeeded: its ``Established`` (version 1:
    :class:`p2psc.core.peer.Established`; version 0: :class:`p2psc.legacy.peer.Established`).
    Adapters narrow ``result`` to their core's class with ``isinstance``."""

    @property
    def conn(self) -> ConnId: ...

    @property
    def leftover(self) -> bytes: ...


@runtime_checkable
class HeldOutcome(Outcome, Protocol):
    """An outcome the caller may have only from ``send_after`` on (same clock as ``now``)."""

    @property
    def send_after(self) -> float: ...


class _Bounded(Protocol):
    @property
    def timeout(self) -> float:
        """Seconds the whole attempt may take (the driver's outer bound adds OUTER_MARGIN)."""
        ...


class DrivenCore(Protocol):
    """The shape of a core the driver runs: a config with an overall ``timeout``, ``start``
    and ``handle`` returning :class:`~p2psc.core.io.Action` s and at most one outcome. The core
    names its own connections below :data:`~p2psc.core.peer.FIRST_ACCEPTED`, its listener
    :data:`~p2psc.core.peer.LISTENER`; the driver names accepted connections from
    ``FIRST_ACCEPTED`` up."""

    @property
    def config(self) -> _Bounded: ...

    def start(self, now: float) -> Sequence[Action | Outcome]: ...

    def handle(self, event: Event, now: float) -> Sequence[Action | Outcome]: ...


CoreT = TypeVar("CoreT", bound=DrivenCore)


@dataclass
class AttemptDriver(Generic[CoreT]):
    """Runs one attempt of a :class:`DrivenCore` for an adapter; see the module docstring."""

    core: CoreT

    def __post_init__(self) -> None:
        self.result: Outcome | P2pscError | None = None
        self.hand_over_at: float | None = None
        """With a :class:`HeldOutcome`: when ``ready`` turns true (``None`` once it has)."""
        self.timers: dict[ConnId, float] = {}
        self.bound: float | None = None
        self.next_accepted: ConnId = FIRST_ACCEPTED
        self.live: set[ConnId] = set()
        """Connections (and the listener) the adapter holds for the attempt right now."""

    # --- adapter -> driver ------------------------------------------------------------------

    def start(self, now: float) -> list[IoOp]:
        """Begin the attempt; the outer bound is ``now + timeout + OUTER_MARGIN``."""
        self.bound = now + self.core.config.timeout + OUTER_MARGIN
        return self._run(self.core.start(now), now)

    def opened(
        self, conn: ConnId, remote: tuple[str, int], local: tuple[str, int], now: float
    ) -> list[IoOp]:
        """An outgoing ``Connect`` for ``conn`` succeeded."""
        if conn not in self.live:  # closed or given up meanwhile: the adapter must drop it
            return [Close(conn, "not expected")]
        return self._feed(Opened(conn, _pair(remote), _pair(local)), now)

    def accepted(
        self, remote: tuple[str, int], local: tuple[str, int], now: float
    ) -> tuple[ConnId, list[IoOp]]:
        """A connection was accepted on the listener: its name, and what to do."""
        conn = self.next_accepted
        self.next_accepted += 1
        self.live.add(conn)
        return conn, self._feed(Opened(conn, _pair(remote), _pair(local)), now)

    def received(self, conn: ConnId, data: bytes, now: float) -> list[IoOp]:
        """Bytes arrived on ``conn``, in order."""
        if conn not in self.live or not data:
            return []
        return self._feed(Received(conn, bytes(data)), now)

    def closed(self, conn: ConnId, error: str | None, now: float) -> list[IoOp]:
        """``conn`` ended (a failed connect, EOF ``None``, reset or error). A close the core
        asked for itself is not reported to it again."""
        if conn not in self.live:
            return []
        self.live.discard(conn)
        return self._feed(Closed(conn, error), now)

    def tick(self, now: float) -> list[IoOp]:
        """Fire every timer that is due (and the outer bound, and the hand-over time of a held
        outcome). Harmless when nothing is due."""
        if self.hand_over_at is not None and now >= self.hand_over_at:
            self.hand_over_at = None
        ops: list[IoOp] = []
        if self.bound is not None and now >= self.bound and self.result is None:
            self.result = HandshakeTimeout(
                f"connect did not finish within {self.core.config.timeout + OUTER_MARGIN:.1f} s"
            )
            return [Close(conn, "outer bound") for conn in sorted(self.live)]
        for timer, due in sorted(self.timers.items(), key=lambda item: item[1]):
            if self.result is not None:
                break
            if due <= now and self.timers.get(timer) == due:
                del self.timers[timer]
                ops += self._feed(TimerFired(timer), now)
        return ops

    def next_deadline(self) -> float | None:
        """When to call :meth:`tick` next (None: the attempt is over and ``ready``)."""
        if self.result is not None:
            return self.hand_over_at
        due = [self.bound] if self.bound is not None else []
        return min(due + list(self.timers.values()), default=None)

    @property
    def ready(self) -> bool:
        """The attempt is over and its result may go to the caller now."""
        return self.result is not None and self.hand_over_at is None

    @property
    def closing(self) -> frozenset[ConnId]:
        """Once ``result`` is set: the connections the adapter must still close."""
        result = self.result
        kept = None if result is None or isinstance(result, P2pscError) else result.conn
        return frozenset(self.live - {kept})

    # --- internals --------------------------------------------------------------------------

    def _feed(self, event: Opened | Received | Closed | TimerFired, now: float) -> list[IoOp]:
        if self.result is not None:
            return [Close(event.conn, "attempt is over")] if isinstance(event, Opened) else []
        return self._run(self.core.handle(event, now), now)

    def _run(self, actions: Sequence[Action | Outcome], now: float) -> list[IoOp]:
        ops: list[IoOp] = []
        for action in actions:
            if isinstance(action, SetTimer):
                if action.deadline is None:
                    self.timers.pop(action.conn, None)
                else:
                    self.timers[action.conn] = action.deadline
            elif isinstance(action, Connect | Listen):
                self.live.add(action.conn)
                ops.append(action)
            elif isinstance(action, Close):
                if action.conn in self.live:
                    self.live.discard(action.conn)
                    ops.append(action)
            elif isinstance(action, Send):
                ops.append(action)
            elif isinstance(action, Failed):
                self.result = action.error
                self.timers.clear()
            else:  # the outcome
                self.result = action
                self.timers.clear()
                if isinstance(action, HeldOutcome) and action.send_after > now:
                    self.hand_over_at = action.send_after
        return ops


class PeerDriver(AttemptDriver[PeerCore]):
    """The driver of a version 1 :class:`~p2psc.core.peer.PeerCore` attempt (its outcome,
    :class:`~p2psc.core.peer.Established`, is never held: ``ready`` comes with ``result``)."""


def _pair(name: tuple[str, int]) -> tuple[str, int]:
    """``(host, port)`` of a socket address; an IPv4-mapped IPv6 host (a connection accepted on
    the dual-stack listener) as the IPv4 address it is."""
    host = str(name[0])
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, int(name[1])
