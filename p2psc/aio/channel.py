"""asyncio adapter of the secure channel: a StreamReader/StreamWriter pair over AEAD records.

:func:`secure_streams` takes over a connected transport the way asyncio's own ``start_tls``
does: it installs a protocol of its own with ``transport.set_protocol`` and gives the
application a second, encrypting transport underneath a standard
:class:`asyncio.StreamReaderProtocol`. Layers, as in ``asyncio.sslproto``::

    StreamReader/StreamWriter  <->  StreamReaderProtocol  <->  _AppTransport   (plaintext)
                                                                     |
                                    socket  <->  raw transport <-> _RawProtocol (records)

All protocol decisions (record format, limits, what is an error) live in
:class:`~p2psc.core.channel.SecureChannel`; this module only moves bytes and flow-control
signals:

- **Reading.** Raw bytes go through :meth:`SecureChannel.feed`; chunks reach the reader. The
  reader sees EOF only after the authenticated close record. Any
  :class:`~p2psc.errors.ChannelError` (a tampered record, a raw FIN or reset without the close
  record = :class:`~p2psc.errors.TruncatedStream`, ...) is set on the reader (``read()`` and
  ``drain()`` raise it) and the transport is aborted.
- **Backpressure, receiving.** The StreamReader pauses its transport when its buffer passes twice
  its limit; here that pause reaches the raw transport, so the kernel's receive window fills and
  TCP stops the sender. Memory stays bounded by the limit plus one read and one record.
- **Backpressure, sending.** The raw transport's ``pause_writing``/``resume_writing`` reach the
  StreamReaderProtocol, so ``await writer.drain()`` blocks while the socket's send buffer is full.
- **Closing.** ``writer.write_eof()`` sends the close record then a TCP half close;
  ``writer.close()`` sends the close record (once) and closes after the buffer drains.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, cast

from p2psc.core.channel import SecureChannel
from p2psc.errors import ChannelClosed, ChannelError

__all__ = ["DEFAULT_LIMIT", "open_secure_streams_from_socket", "secure_streams"]

DEFAULT_LIMIT = 2**16
"""The StreamReader limit (asyncio's default): the reader pauses the socket past twice this."""


class _RawProtocol(asyncio.Protocol):
    """Protocol on the real transport: records in, plaintext to the application protocol."""

    def __init__(
        self,
        channel: SecureChannel,
        app_protocol: asyncio.StreamReaderProtocol,
        leftover: bytes,
    ) -> None:
        self._channel = channel
        self._app = app_protocol
        self._leftover = leftover
        self._raw: asyncio.Transport | None = None
        self.app_transport: _AppTransport | None = None
        self._error: ChannelError | None = None
        self._keep_open = False  # what the application protocol answered to our EOF
        self._lost = False

    # --- installed on the raw transport -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        transport = cast(asyncio.Transport, transport)
        self._raw = transport
        self.app_transport = _AppTransport(transport, self._channel, self)
        self._app.connection_made(self.app_transport)
        if not transport.is_reading():
            transport.resume_reading()
        leftover, self._leftover = self._leftover, b""
        if leftover:
            self.data_received(leftover)

    def data_received(self, data: bytes) -> None:
        if self._error is not None or self._lost:
            return
        try:
            items = self._channel.feed(data)
        except ChannelError as exc:
            self._fail(exc)
            return
        app = self._app
        for item in items:
            if isinstance(item, bytes):
                app.data_received(item)
            else:  # END_OF_STREAM, always last
                self._keep_open = bool(app.eof_received())

    def eof_received(self) -> bool:
        if self._error is not None:
            return False
        try:
            self._channel.transport_eof()
        except ChannelError as exc:
            self._fail(exc)
            return False
        # A clean end (the close record came first): stay open for our own writes if the
        # application protocol asked for it, exactly as a plain TCP half close would.
        return self._keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        app_transport = self.app_transport
        local_close = app_transport is not None and app_transport.closing_by_app
        if self._error is None and not self._channel.peer_closed and not local_close:
            error = self._channel.transport_lost("lost")
            error.__cause__ = exc
            self._error = error
        self._app.connection_lost(self._error if self._error is not None else exc)

    def pause_writing(self) -> None:
        self._app.pause_writing()

    def resume_writing(self) -> None:
        self._app.resume_writing()

    # --- failure ------------------------------------------------------------------------------

    def _fail(self, error: ChannelError) -> None:
        """Stop everything: nothing more reaches the reader; it gets ``error`` once the raw
        transport reports the connection lost (abort makes that happen on the next tick)."""
        self._error = error
        if self._raw is not None:
            self._raw.abort()


class _AppTransport(asyncio.Transport):
    """The transport the StreamReaderProtocol and StreamWriter see: writes become records."""

    def __init__(
        self, raw: asyncio.Transport, channel: SecureChannel, protocol: _RawProtocol
    ) -> None:
        super().__init__()
        self._raw = raw
        self._channel = channel
        self._protocol = protocol
        self._eof_written = False
        self.closing_by_app = False

    # --- writing ------------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if self._eof_written:
            raise ChannelClosed("write() after write_eof() or close()")
        if self._raw.is_closing() or self._channel.failed is not None:
            return  # as asyncio's transports do after a close; drain() raises the error
        self._raw.write(self._channel.seal(data))

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        if self._eof_written:
            return
        self._eof_written = True
        if self._raw.is_closing() or self._channel.failed is not None:
            return
        self._raw.write(self._channel.seal_close())
        if self._raw.can_write_eof():
            self._raw.write_eof()

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        if self.closing_by_app:
            return
        self.closing_by_app = True
        if not self._eof_written and not self._raw.is_closing():
            self._eof_written = True
            if self._channel.failed is None and not self._channel.closed:
                self._raw.write(self._channel.seal_close())
        self._raw.close()

    def abort(self) -> None:
        self.closing_by_app = True
        self._eof_written = True
        self._raw.abort()

    def is_closing(self) -> bool:
        return self.closing_by_app or self._raw.is_closing()

    # --- flow control, passed through -------------------------------------------------------

    def pause_reading(self) -> None:
        if not self._raw.is_closing():
            self._raw.pause_reading()

    def resume_reading(self) -> None:
        if not self._raw.is_closing():
            self._raw.resume_reading()

    def is_reading(self) -> bool:
        return self._raw.is_reading()

    def get_write_buffer_size(self) -> int:
        return self._raw.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._raw.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._raw.set_write_buffer_limits(high, low)

    # --- everything else ----------------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "p2psc_channel":
            return self._channel
        return self._raw.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        raise NotImplementedError("the secure channel's application protocol is fixed")

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol._app


def _build(
    channel: SecureChannel, leftover: bytes, limit: int
) -> tuple[asyncio.StreamReader, asyncio.StreamReaderProtocol, _RawProtocol]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    app_protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    return reader, app_protocol, _RawProtocol(channel, app_protocol, bytes(leftover))


def _writer(
    raw_protocol: _RawProtocol,
    app_protocol: asyncio.StreamReaderProtocol,
    reader: asyncio.StreamReader,
) -> asyncio.StreamWriter:
    assert raw_protocol.app_transport is not None
    return asyncio.StreamWriter(
        raw_protocol.app_transport, app_protocol, reader, asyncio.get_running_loop()
    )


def secure_streams(
    transport: asyncio.Transport,
    channel: SecureChannel,
    leftover: bytes = b"",
    *,
    limit: int = DEFAULT_LIMIT,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Take over a connected ``transport`` and return streams that carry ``channel``.

    ``leftover`` holds raw bytes that already arrived after the handshake (they are decoded
    first). From now on this module owns the transport: the caller must not read from or write
    to it. Must be called from a coroutine or callback running in the transport's loop."""
    reader, app_protocol, raw_protocol = _build(channel, leftover, limit)
    transport.set_protocol(raw_protocol)
    raw_protocol.connection_made(transport)
    return reader, _writer(raw_protocol, app_protocol, reader)


async def open_secure_streams_from_socket(
    sock: socket.socket,
    channel: SecureChannel,
    leftover: bytes = b"",
    limit: int = DEFAULT_LIMIT,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Like :func:`secure_streams`, for a connected socket not yet owned by a transport (the
    blocking handshake's socket, say): ``loop.create_connection(..., sock=sock)`` wraps it."""
    reader, app_protocol, raw_protocol = _build(channel, leftover, limit)
    await asyncio.get_running_loop().create_connection(lambda: raw_protocol, sock=sock)
    return reader, _writer(raw_protocol, app_protocol, reader)
