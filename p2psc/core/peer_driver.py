"""The one driver of a peer attempt that every adapter shares (asyncio, blocking, trio).

Why: a :class:`~p2psc.core.peer.PeerCore` speaks events and actions; an adapter must still keep
its timers, name accepted connections, ignore the close reports of connections the core itself
closed, bound the whole attempt, and know when the attempt is over. Written once here (sans-IO:
no sockets, no clock, no event loop), each adapter only moves bytes and time, in the style of
aioquic's ``QuicConnection``: events and ``now`` in, I/O operations and one deadline out.

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
  it read but did not report to ``result.channel`` before anything read later.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2psc.core.io import (
    Close,
    Closed,
    Connect,
    ConnId,
    Failed,
    Listen,
    Opened,
    Received,
    Send,
    SetTimer,
    TimerFired,
)
from p2psc.core.peer import FIRST_ACCEPTED, Established, PeerAction, PeerCore
from p2psc.errors import HandshakeTimeout, P2pscError

__all__ = ["OUTER_MARGIN", "IoOp", "PeerDriver"]

OUTER_MARGIN = 2.0
"""Seconds the outer bound adds to ``timeout``: the core fails first, this only catches bugs."""

IoOp = Send | Close | Listen | Connect
"""What an adapter executes: the core's actions less timers (the driver keeps those) and less
the outcome (``result``)."""


@dataclass
class PeerDriver:
    """Runs one :class:`PeerCore` attempt for an adapter; see the module docstring."""

    core: PeerCore

    def __post_init__(self) -> None:
        self.result: Established | P2pscError | None = None
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
        """Fire every timer that is due (and the outer bound). Harmless when nothing is due."""
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
        """When to call :meth:`tick` next (None: the attempt is over)."""
        if self.result is not None:
            return None
        due = [self.bound] if self.bound is not None else []
        return min(due + list(self.timers.values()), default=None)

    @property
    def closing(self) -> frozenset[ConnId]:
        """Once ``result`` is set: the connections the adapter must still close."""
        kept = self.result.conn if isinstance(self.result, Established) else None
        return frozenset(self.live - {kept})

    # --- internals --------------------------------------------------------------------------

    def _feed(self, event: Opened | Received | Closed | TimerFired, now: float) -> list[IoOp]:
        if self.result is not None:
            return [Close(event.conn, "attempt is over")] if isinstance(event, Opened) else []
        return self._run(self.core.handle(event, now), now)

    def _run(self, actions: list[PeerAction], now: float) -> list[IoOp]:
        del now
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
            elif isinstance(action, Established):
                self.result = action
                self.timers.clear()
            elif isinstance(action, Failed):
                self.result = action.error
                self.timers.clear()
        return ops


def _pair(name: tuple[str, int]) -> tuple[str, int]:
    return str(name[0]), int(name[1])
