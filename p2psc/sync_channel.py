"""Blocking adapter of the secure channel: :class:`SecureSocket`, a socket-like object.

It wraps a connected, blocking TCP socket whose handshake is done, the way
:class:`ssl.SSLSocket` wraps one after TLS: ``sendall``/``send`` seal records, ``recv``/
``recv_into`` return decrypted bytes, ``b""`` means the peer's authenticated close record
arrived, and everything else that ends or breaks the stream raises a typed
:class:`~p2psc.errors.ChannelError`. All protocol decisions live in
:class:`~p2psc.core.channel.SecureChannel`; this module only moves bytes.

Differences from a plain socket, and why:

- **Blocking only.** ``setblocking(False)`` and ``settimeout(0)`` raise ``ValueError``: a
  non-blocking ``send`` would have to report a partial record, which the caller could only retry
  by re-sending bytes that are already encrypted under a consumed nonce. Timeouts (> 0) work: a
  ``recv`` that times out consumed nothing; a ``send`` that times out keeps its unsent
  ciphertext and flushes it before anything else, so the stream stays whole (the data counts as
  accepted, as with ``sendall``'s partial progress on a plain socket).
- **select() readiness means raw bytes**, as for ``SSLSocket``: ``fileno()`` is the TCP socket,
  and decrypted bytes may already wait in this object. Check :meth:`pending` before waiting.
- **shutdown(SHUT_WR)** sends the authenticated close record, then the TCP half close;
  **close()** also sends it (once, best effort) so the peer sees a clean end, not a truncation.
- A bad record shuts the TCP connection down (both directions) at once; the error is raised by
  this and every later ``recv``, and ``send`` raises :class:`~p2psc.errors.ChannelClosed`.

One thread may send while another receives (the two directions share no state but the failure
flag); two threads receiving at once, or sending at once, are serialised by locks.
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
from collections import deque
from types import TracebackType
from typing import Any

from p2psc.core.channel import SecureChannel
from p2psc.errors import ChannelClosed, ChannelError

__all__ = ["RECV_SIZE", "SecureSocket"]

RECV_SIZE = 2**18
"""Raw bytes read from the socket per system call (asyncio's selector loop uses the same)."""

_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)


class SecureSocket:
    """A blocking, socket-like object over a :class:`SecureChannel` and a connected socket.

    ``leftover`` holds raw bytes that already arrived after the handshake; they are decoded
    before anything is read from the socket. The object owns ``sock`` from now on."""

    def __init__(self, sock: socket.socket, channel: SecureChannel, leftover: bytes = b"") -> None:
        if sock.gettimeout() == 0.0:
            raise ValueError("SecureSocket needs a blocking socket (a timeout > 0 is fine)")
        self._sock = sock
        self._channel = channel
        self._chunks: deque[bytes] = deque()
        self._offset = 0  # bytes of _chunks[0] already returned
        self._buffered = 0
        self._eof = False
        self._backlog = b""  # sealed bytes a timed-out send left unsent
        self._recv_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._closed = False
        if leftover:
            self._feed(leftover)

    # --- receiving ----------------------------------------------------------------------------

    def pending(self) -> int:
        """Decrypted bytes ready to be returned without touching the socket (SSLSocket's
        ``pending``): when positive, ``recv`` will not block, whatever ``select`` says."""
        return self._buffered

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Up to ``bufsize`` decrypted bytes; ``b""`` once the peer's close record arrived."""
        if flags:
            raise ValueError("recv flags are not supported on a SecureSocket")
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        with self._recv_lock:
            if bufsize == 0:
                return b""
            while not self._chunks:
                if self._eof:
                    return b""
                self._fill()
            return self._take(bufsize)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        """Like :meth:`recv`, into ``buffer`` (a writable bytes-like object)."""
        view = memoryview(buffer).cast("B")
        if nbytes < 0:
            raise ValueError("negative buffersize in recv_into")
        size = nbytes or len(view)
        if size > len(view):
            raise ValueError("buffer too small for requested bytes")
        data = self.recv(size, flags)
        view[: len(data)] = data
        return len(data)

    def _fill(self) -> None:
        """One raw read, decoded. Raises the channel's error (after shutting the connection
        down) or the socket's own (a timeout consumed nothing)."""
        if self._channel.failed is not None:
            self._channel.feed(b"")  # raises the recorded error again
        try:
            raw = self._sock.recv(RECV_SIZE)
        except ConnectionError as exc:  # a reset: cut like a FIN, and as unauthenticated
            try:
                self._channel.transport_eof()
            except ChannelError as error:
                self._kill()
                raise error from exc
            raise
        if not raw:
            try:
                self._channel.transport_eof()
            except ChannelError:
                self._kill()
                raise
            self._eof = True
            return
        self._feed(raw)

    def _feed(self, raw: bytes) -> None:
        try:
            items = self._channel.feed(raw)
        except ChannelError:
            self._kill()
            raise
        for item in items:
            if isinstance(item, bytes):
                self._chunks.append(item)
                self._buffered += len(item)
            else:
                self._eof = True

    def _take(self, limit: int) -> bytes:
        chunk = self._chunks[0]
        start = self._offset
        available = len(chunk) - start
        if available <= limit:
            self._chunks.popleft()
            self._offset = 0
            data = chunk if start == 0 else chunk[start:]
        else:
            data = chunk[start : start + limit]
            self._offset = start + limit
        self._buffered -= len(data)
        return data

    def _kill(self) -> None:
        """The stream is broken: cut the connection both ways so the peer learns at once."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    # --- sending ------------------------------------------------------------------------------

    def sendall(self, data: bytes | bytearray | memoryview, flags: int = 0) -> None:
        """Encrypt and send all of ``data`` (in records of at most 32 KiB each)."""
        if flags:
            raise ValueError("send flags are not supported on a SecureSocket")
        with self._send_lock:
            if self._backlog:
                self._write(b"")
            if not data:
                return
            self._write(self._channel.seal(data))

    def send(self, data: bytes | bytearray | memoryview, flags: int = 0) -> int:
        """Send ``data``; always all of it (a record cannot be half sent), returns its length."""
        self.sendall(data, flags)
        return len(data)

    def _write(self, records: bytes) -> None:
        """Send the backlog, then ``records``; on a timeout keep what is unsent for next time."""
        if self._sock.gettimeout() is None and not self._backlog:
            self._sock.sendall(records)  # no timeout, no partial progress to account for
            return
        out = memoryview(self._backlog + records if self._backlog else records)
        self._backlog = b""
        sent = 0
        try:
            while sent < len(out):
                sent += self._sock.send(out[sent:])
        except TimeoutError:
            self._backlog = bytes(out[sent:])
            raise

    # --- file-like access -----------------------------------------------------------------------

    def makefile(
        self,
        mode: str = "r",
        buffering: int | None = None,
        *,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> Any:
        """A file object over this socket, as :meth:`socket.socket.makefile` returns: binary
        (``"rb"``, ``"wb"``, ``"rwb"``) or text modes. Closing the file leaves the socket
        open; close the SecureSocket to end the connection."""
        if not set(mode) <= {"r", "w", "b"}:
            raise ValueError(f"invalid mode {mode!r} (only r, w, b)")
        reading, writing, binary = "r" in mode, "w" in mode, "b" in mode
        if not reading and not writing:
            raise ValueError("mode must contain r or w")
        raw = _SecureSocketIO(self, reading, writing)
        if buffering is None:
            buffering = -1
        if buffering < 0:
            buffering = io.DEFAULT_BUFFER_SIZE
        if buffering == 0:
            if not binary:
                raise ValueError("unbuffered streams must be binary")
            return raw
        buffered: io.BufferedIOBase
        if reading and writing:
            buffered = io.BufferedRWPair(raw, raw, buffering)
        elif reading:
            buffered = io.BufferedReader(raw, buffering)
        else:
            buffered = io.BufferedWriter(raw, buffering)
        if binary:
            return buffered
        text = io.TextIOWrapper(buffered, encoding, errors, newline)  # type: ignore[type-var]
        text.mode = mode  # type: ignore[misc]
        return text

    # --- socket plumbing ------------------------------------------------------------------------

    def shutdown(self, how: int) -> None:
        """``SHUT_WR`` (or ``SHUT_RDWR``) sends the close record, then shuts TCP down."""
        if how in (socket.SHUT_WR, socket.SHUT_RDWR):
            with self._send_lock:
                if not self._channel.closed and self._channel.failed is None:
                    self._write(self._channel.seal_close())
                elif self._backlog:
                    self._write(b"")
        self._sock.shutdown(how)

    def close(self) -> None:
        """Send the close record if not sent yet, then close the socket.

        The close record is sent only if the kernel takes it at once (never blocking: a peer
        that stopped reading must not make ``close`` hang), and only after any ciphertext a
        timed-out send left behind; otherwise the peer sees a truncated stream, which is the
        truth: not everything was delivered."""
        if self._closed:
            return
        self._closed = True
        try:
            with self._send_lock:
                if not self._channel.closed and self._channel.failed is None:
                    record = self._channel.seal_close()
                    if not self._backlog:
                        self._sock.send(record, _DONTWAIT)
        except (OSError, ChannelClosed):
            pass  # the peer is gone, the buffer is full, or the channel is dead
        finally:
            self._sock.close()

    def __enter__(self) -> SecureSocket:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def channel(self) -> SecureChannel:
        """The record layer (for its state: ``peer_closed``, ``failed``, counters)."""
        return self._channel

    def fileno(self) -> int:
        """The TCP socket's descriptor. Readable means raw bytes arrived, which may not make a
        whole record; and decrypted bytes may wait here already: see :meth:`pending`."""
        return self._sock.fileno()

    def settimeout(self, value: float | None) -> None:
        """A timeout in seconds, or None to block; 0 (non-blocking) is refused."""
        if value is not None and value <= 0:
            raise ValueError("SecureSocket is blocking: use a timeout > 0 or None")
        self._sock.settimeout(value)

    def gettimeout(self) -> float | None:
        return self._sock.gettimeout()

    def setblocking(self, flag: bool) -> None:
        """Only ``setblocking(True)`` (no timeout) is supported."""
        if not flag:
            raise ValueError("SecureSocket is blocking only: use settimeout() for deadlines")
        self._sock.setblocking(True)

    def getpeername(self) -> Any:
        return self._sock.getpeername()

    def getsockname(self) -> Any:
        return self._sock.getsockname()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd={self._sock.fileno()}"
        return f"<SecureSocket {state}>"


class _SecureSocketIO(io.RawIOBase):
    """Raw I/O over a SecureSocket for :meth:`SecureSocket.makefile` (as socket.SocketIO)."""

    def __init__(self, sock: SecureSocket, reading: bool, writing: bool) -> None:
        super().__init__()
        self._secure = sock
        self._reading = reading
        self._writing = writing

    def readinto(self, buffer: Any) -> int:
        self._checkClosed()
        if not self._reading:
            raise io.UnsupportedOperation("not readable")
        return self._secure.recv_into(buffer)

    def write(self, data: Any) -> int:
        self._checkClosed()
        if not self._writing:
            raise io.UnsupportedOperation("not writable")
        size: int = memoryview(data).nbytes
        self._secure.sendall(data)
        return size

    def readable(self) -> bool:
        return self._reading

    def writable(self) -> bool:
        return self._writing

    def fileno(self) -> int:
        return self._secure.fileno()
