"""trio adapter of the secure channel: :class:`SecureStream`, a ``trio.abc.HalfCloseableStream``.

It wraps a connected ``trio.SocketStream`` whose handshake is done, the way ``trio.SSLStream``
wraps one after TLS. All protocol decisions (record format, limits, what is an error) live in
:class:`~p2psc.core.channel.SecureChannel`; this module only moves bytes:

- ``send_all`` seals records and writes them; ``send_eof`` writes the authenticated close record
  and then the TCP half close; after either, ``send_all`` raises
  :class:`~p2psc.errors.ChannelClosed`.
- ``receive_some`` returns decrypted bytes; ``b""`` only after the peer's authenticated close.
  Anything else that ends or breaks the stream raises a typed
  :class:`~p2psc.errors.ChannelError` (a FIN or reset without the close record:
  :class:`~p2psc.errors.TruncatedStream`; a tampered, reordered or replayed record:
  :class:`~p2psc.errors.RecordTampered`), the socket is closed at once, and every later call
  raises again. A send to a peer that vanished raises ``trio.BrokenResourceError``, as for any
  trio stream.
- **Backpressure** is trio's own: ``receive_some`` reads the socket only when called, so a reader
  that stops calling stops the sender through TCP; memory stays bounded by one read (64 KiB)
  plus one partial record in the channel. ``send_all`` returns once the kernel took the records.
- ``aclose`` sends the close record (at most :data:`CLOSE_TIMEOUT` seconds of waiting for room in
  the send buffer) and closes; cancelled, it still closes.
"""

from __future__ import annotations

import trio

from p2psc.core.channel import SecureChannel
from p2psc.errors import ChannelError

__all__ = ["CLOSE_TIMEOUT", "RECEIVE_SIZE", "SecureStream"]

RECEIVE_SIZE = 65536
"""Raw bytes read from the socket per ``receive_some`` call that needs to read."""
CLOSE_TIMEOUT = 2.0
"""Seconds ``aclose`` waits for the kernel to take the close record before closing anyway."""


class SecureStream(trio.abc.HalfCloseableStream):
    """AEAD records of ``channel`` over ``transport``.

    ``leftover`` holds raw bytes that arrived after the handshake (decoded before anything is
    read), ``unsent`` records the handshake queued but the kernel did not take yet (written
    before anything else). The stream owns ``transport`` from now on."""

    def __init__(
        self,
        transport: trio.SocketStream,
        channel: SecureChannel,
        leftover: bytes = b"",
        unsent: bytes = b"",
    ) -> None:
        self.transport = transport
        self.channel = channel
        self._raw = bytes(leftover)
        self._unsent = bytes(unsent)
        self._plain = bytearray()
        self._eof = False
        self._closed = False
        self._receiving = False
        self._sending = False

    # --- receiving ----------------------------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            if self._closed:
                raise trio.ClosedResourceError("the stream was closed")
            while not self._plain and not self._eof:
                await self._fill()
            await trio.lowlevel.checkpoint()  # a trio stream call always checkpoints
            size = len(self._plain) if max_bytes is None else min(max_bytes, len(self._plain))
            data = bytes(self._plain[:size])
            del self._plain[:size]
            return data
        finally:
            self._receiving = False

    async def _fill(self) -> None:
        """Read and decode once (or raise the channel's error)."""
        raw, self._raw = self._raw, b""
        try:
            if not raw:
                if self.channel.failed is None:
                    try:
                        raw = await self.transport.receive_some(RECEIVE_SIZE)
                    except trio.BrokenResourceError as reset:
                        raise self.channel.transport_lost("reset") from reset
                if not raw:
                    self.channel.transport_eof()  # raises unless the close record came first
                    self._eof = True
                    return
            for item in self.channel.feed(raw):
                if isinstance(item, bytes):
                    self._plain += item
                else:
                    self._eof = True
        except ChannelError:
            self.transport.socket.close()  # nothing more is read or written; later calls re-raise
            raise

    # --- sending ------------------------------------------------------------------------------

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            if self._closed:
                raise trio.ClosedResourceError("the stream was closed")
            records = self.channel.seal(data) if data else b""  # raises ChannelClosed if ended
            await self._write(records)
        finally:
            self._sending = False

    async def _write(self, records: bytes) -> None:
        records, self._unsent = self._unsent + records, b""
        if records:
            await self.transport.send_all(records)
        else:
            await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        """The authenticated end of our direction (close record, then TCP half close)."""
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            if self._closed:
                raise trio.ClosedResourceError("the stream was closed")
            if self.channel.closed:
                await trio.lowlevel.checkpoint()
                return
            await self._write(self.channel.seal_close())
            await self.transport.send_eof()
        finally:
            self._sending = False

    # --- closing ------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Send the close record (once; bounded wait) and close the connection."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        try:
            channel = self.channel
            if channel.failed is None and not channel.closed and not self._sending:
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await self._write(channel.seal_close())
        except (trio.BrokenResourceError, trio.ClosedResourceError, ChannelError):
            pass
        finally:
            await self.transport.aclose()
