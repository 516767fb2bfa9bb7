"""The Mediator under trio: a thin adapter that moves bytes and time to a MediatorCore.

All protocol logic is in :class:`p2psc.legacy.mediator.LegacyAwareMediatorCore` (version 1 and
version 0) or :class:`p2psc.core.mediator.MediatorCore`; this module only executes its actions
(spec/embedding.md, section 3): one reader task per accepted connection, a
:class:`~p2psc.trio._link.Link` per socket (a ``Send`` never waits: the core sends to both
sessions of a pair in one step), and one timer task over a heap of deadlines (one per
connection; a stale heap entry is skipped, an early ``TimerFired`` the core re-arms).

Use it as a nursery task::

    server = await nursery.start(serve_mediator, "127.0.0.1", 0)
    ...  # server.port
    server.close()   # or cancel the nursery: both shut down cleanly

Shutting down aborts every session with AdvertiseAbort(SHUTTING_DOWN) (the core's
``shutdown``), flushes those frames for at most :data:`SHUTDOWN_FLUSH` seconds and closes every
socket.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import logging
import math
import socket

import trio

from p2psc.core.io import Close, Closed, Event, Opened, Received, Send, SetTimer, TimerFired
from p2psc.core.mediator import MediatorAction, MediatorConfig, MediatorCore, NoteObserver
from p2psc.core.registry import Registry
from p2psc.legacy.mediator import LegacyAwareMediatorCore
from p2psc.sockets import family_of
from p2psc.trio._link import READ_SIZE, Link, close_socket, readable

__all__ = ["SHUTDOWN_FLUSH", "MediatorServer", "serve_mediator"]

log = logging.getLogger("p2psc.mediator")

SHUTDOWN_FLUSH = 1.0
"""Seconds a shutdown waits for the last frames (AdvertiseAbort) to reach the kernel."""
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class MediatorServer:
    """A listening trio mediator: :attr:`address` to give to peers, :meth:`close` to stop."""

    def __init__(self, core: MediatorCore, listener: socket.socket) -> None:
        self.core = core
        self.listener = listener
        self.links: dict[int, Link] = {}
        self._ids = itertools.count(1)
        self._deadlines: dict[int, float] = {}
        self._heap: list[tuple[float, int]] = []
        self._timers_changed = trio.Event()
        self._stop = trio.Event()
        self._nursery: trio.Nursery | None = None

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the mediator listens on."""
        host, port = self.listener.getsockname()[:2]
        return str(host), int(port)

    @property
    def port(self) -> int:
        return self.address[1]

    @property
    def connections(self) -> int:
        """Open connections (any state)."""
        return len(self.links)

    def close(self) -> None:
        """Ask :func:`serve_mediator` to shut down cleanly and return."""
        self._stop.set()

    # --- tasks --------------------------------------------------------------------------------

    async def _accept(self, nursery: trio.Nursery) -> None:
        while True:
            await readable(self.listener)
            try:
                sock, address = self.listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue
            except OSError as error:
                if error.errno not in _OUT_OF_RESOURCES:
                    raise
                log.warning("mediator cannot accept (%s); pausing 0.1 s", error)
                await trio.sleep(0.1)
                continue
            sock.setblocking(False)
            conn = next(self._ids)
            self.links[conn] = link = Link(sock)
            nursery.start_soon(self._read, conn, link)
            # (an IPv4-mapped address from a dual-stack listener is the core's to unmap)
            self._event(Opened(conn, (str(address[0]), int(address[1]))))

    async def _read(self, conn: int, link: Link) -> None:
        """Until EOF or an error (reported), or until we close the socket (not reported; no
        cancel scope per connection: closing the socket wakes this task)."""
        sock = link.sock
        try:
            while True:  # (inlined: each nested coroutine frame costs every idle connection)
                if sock.fileno() < 0:
                    return
                await trio.lowlevel.wait_readable(sock)
                try:
                    data = sock.recv(READ_SIZE)
                except (BlockingIOError, InterruptedError):
                    continue
                if not data:
                    break
                self._event(Received(conn, data))  # (ignored by the core once it closed conn)
            why = None
        except trio.ClosedResourceError:
            return
        except OSError as error:
            why = str(error) or type(error).__name__
        if self.links.get(conn) is link:
            self._event(Closed(conn, why))
            self._drop(conn)

    async def _timers(self) -> None:
        while True:
            self._timers_changed = trio.Event()
            with trio.move_on_at(self._heap[0][0] if self._heap else math.inf):
                await self._timers_changed.wait()
            now = trio.current_time()
            while self._heap and self._heap[0][0] <= now:
                deadline, conn = heapq.heappop(self._heap)
                if self._deadlines.get(conn) == deadline:
                    del self._deadlines[conn]
                    self._event(TimerFired(conn))

    # --- executing the core -------------------------------------------------------------------

    def _event(self, event: Event) -> None:
        try:
            actions = self.core.handle(event, trio.current_time())
        except Exception:  # a core bug must not take the server down; contain it
            log.exception("mediator core failed on %r", event)
            self._drop(event.conn)
            return
        self._execute(actions)

    def _execute(self, actions: list[MediatorAction]) -> None:
        assert self._nursery is not None
        for action in actions:
            if isinstance(action, Send):
                link = self.links.get(action.conn)
                if link is not None:
                    link.send(action.data, self._nursery)
            elif isinstance(action, SetTimer):
                if action.conn not in self.links or action.deadline is None:
                    self._deadlines.pop(action.conn, None)
                    continue
                self._deadlines[action.conn] = action.deadline
                heapq.heappush(self._heap, (action.deadline, action.conn))
                if len(self._heap) > 2 * len(self._deadlines) + 64:  # stale entries: compact
                    self._heap = [(when, c) for c, when in self._deadlines.items()]
                    heapq.heapify(self._heap)
                if self._heap[0] == (action.deadline, action.conn):
                    self._timers_changed.set()
            elif isinstance(action, Close):
                self._drop(action.conn, flush=True)

    def _drop(self, conn: int, *, flush: bool = False) -> None:
        self._deadlines.pop(conn, None)
        link = self.links.pop(conn, None)
        if link is not None:
            link.close(flush=flush)

    async def _shutdown(self, flushing: trio.Nursery) -> None:
        """Abort every session (the core's shutdown), give the frames a moment, close all."""
        close_socket(self.listener)
        self._nursery = flushing
        self._execute(self.core.shutdown(trio.current_time()))
        for conn in list(self.links):  # defensive: the core closed them all
            self._drop(conn, flush=True)
        with trio.move_on_after(SHUTDOWN_FLUSH):
            while flushing.child_tasks:  # a Link whose frames the kernel has not taken yet
                await trio.sleep(0.01)
        flushing.cancel_scope.cancel()  # the rest is closed by each flusher's cleanup


async def serve_mediator(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    config: MediatorConfig | None = None,
    observer: NoteObserver | None = None,
    registry: Registry | None = None,
    backlog: int = 1024,
    core: MediatorCore | None = None,
    legacy: bool = True,
    task_status: trio.TaskStatus[MediatorServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host:port`` (port 0: any free port) and mediate until cancelled or
    :meth:`MediatorServer.close`; then shut down cleanly (see the module docstring).

    Arguments as for :func:`p2psc.aio.serve_mediator`; ``nursery.start`` returns the
    :class:`MediatorServer`."""
    mediator_core = core or (LegacyAwareMediatorCore if legacy else MediatorCore)(
        config, registry=registry, observer=observer
    )
    family = family_of(host)
    listener = socket.create_server(
        (host, port), family=family, backlog=backlog, dualstack_ipv6=host == "::"
    )
    listener.setblocking(False)
    server = MediatorServer(mediator_core, listener)
    try:
        async with trio.open_nursery() as nursery:
            server._nursery = nursery
            nursery.start_soon(server._accept, nursery)
            nursery.start_soon(server._timers)
            task_status.started(server)
            await server._stop.wait()
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as flushing:
                await server._shutdown(flushing)
