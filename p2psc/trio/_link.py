"""One non-blocking socket under trio, as the cores want it: sends that never block, a FIN close.

Why not ``trio.SocketStream`` during a handshake: a core's ``Send`` must be *queued* while the
adapter goes on executing the next operation (spec/embedding.md), and one core step may send
on several connections. So a :class:`Link` writes synchronously what the kernel takes at once
(always everything, for handshake-sized messages) and keeps any rest in an outbox that one
flusher task drains; ``close(flush=True)`` closes after that flush, with a FIN. Readiness comes
from ``trio.lowlevel.wait_readable``/``wait_writable`` on the plain socket, so a cancelled wait
consumes nothing: bytes not yet read stay in the kernel for whoever owns the socket next.

Every socket is closed through :func:`close_socket` (``notify_closing`` first, so a task still
waiting on it wakes with ``trio.ClosedResourceError`` instead of waiting on a dead descriptor).
"""

from __future__ import annotations

import socket

import trio

__all__ = ["READ_SIZE", "Link", "close_socket", "readable"]

READ_SIZE = 65536


def close_socket(sock: socket.socket) -> None:
    """Close ``sock`` now; tasks waiting on it wake with ``trio.ClosedResourceError``."""
    if sock.fileno() >= 0:
        trio.lowlevel.notify_closing(sock)
    sock.close()


async def readable(sock: socket.socket) -> None:
    """Wait until ``sock`` is readable; ClosedResourceError once it is closed (also when it was
    closed before the wait began: trio must never be asked to watch descriptor -1)."""
    if sock.fileno() < 0:
        raise trio.ClosedResourceError("socket closed")
    await trio.lowlevel.wait_readable(sock)


class Link:
    """A connected socket plus its outbox. ``reading`` is the cancel scope of a reader task that
    must stop before the socket closes (set by the owner; a reader without one stops when the
    socket is closed), and the flusher's scope exists only while there is something to flush:
    a mediator holds one Link per waiting registration, so each object counts."""

    __slots__ = ("closing", "flushing", "out", "reading", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.out = bytearray()
        """Bytes queued but not yet taken by the kernel."""
        self.reading: trio.CancelScope | None = None
        self.flushing: trio.CancelScope | None = None
        self.closing = False
        """Close once the outbox is empty (a ``Close`` arrived while bytes were queued)."""

    def send(self, data: bytes, nursery: trio.Nursery) -> None:
        """Queue ``data`` after what is queued; never waits. A broken connection is left to the
        reader to report (its next read fails or sees EOF)."""
        if self.out:
            self.out += data
            return
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            return
        if sent < len(data):
            self.out += data[sent:]
            self.flushing = trio.CancelScope()
            nursery.start_soon(self._flush, self.flushing)

    async def _flush(self, scope: trio.CancelScope) -> None:
        try:
            with scope:
                while self.out:
                    if self.sock.fileno() < 0:
                        raise trio.ClosedResourceError("socket closed")
                    await trio.lowlevel.wait_writable(self.sock)
                    try:
                        del self.out[: self.sock.send(self.out)]
                    except (BlockingIOError, InterruptedError):
                        continue
        except (OSError, trio.ClosedResourceError):
            self.out.clear()
        finally:  # also when the owner's nursery is cancelled: a closing link never leaks
            if self.closing:
                close_socket(self.sock)

    def close(self, *, flush: bool) -> None:
        """Stop reading and close: after the outbox drained when ``flush``, else at once."""
        if self.reading is not None:
            self.reading.cancel()
        if flush and self.out:
            self.closing = True
            return
        if self.flushing is not None:
            self.flushing.cancel()
        close_socket(self.sock)
