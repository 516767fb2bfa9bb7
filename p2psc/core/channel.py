"""The record layer of the secure channel, sans-IO: application bytes in, AEAD records out.

After the Noise handshake (:mod:`p2psc.noise`) every application byte travels in records::

    record    = length (2 bytes, big-endian) || ciphertext
    ciphertext = ChaCha20-Poly1305(k, nonce = the CipherState counter, ad = empty,
                                   plaintext = type (1 byte) || data)
    type      = 0 DATA | 1 CLOSE (CLOSE carries no data)

``spec/channel.md`` is the normative text; this module is its implementation. Why this shape:

- **The length is outside the AEAD, the nonce is implicit.** The receiver must know where a
  record ends before it can authenticate it; a forged length can only make the next tag fail (or
  exceed the limit, which is refused from the two bytes alone). The nonce is the record's
  position in the stream, so a reordered, replayed, dropped or injected record fails its tag:
  one error, :class:`~p2psc.errors.RecordTampered`, covers them all.
- **An authenticated close.** TCP's FIN is not authenticated; an attacker can forge one. The
  CLOSE record is the only end of stream the application sees as EOF; a transport that ends
  without it is :class:`~p2psc.errors.TruncatedStream`.
- **Bounded memory.** The receiver holds at most one incomplete record
  (:data:`MAX_RECORD_WIRE` - 1 bytes); everything complete is decrypted and handed out at once.
- **Fail closed.** The first bad record kills the channel: nothing of it (nor anything decoded
  after it) reaches the application, and every later call raises again.

The two directions share no state except the failure flag, so a blocking adapter may seal in
one thread while it feeds in another, as with a socket.
"""

from __future__ import annotations

from typing import Final

from p2psc.errors import (
    ChannelClosed,
    ChannelError,
    DataAfterClose,
    NoiseError,
    RecordMalformed,
    RecordTampered,
    RecordTooLarge,
    RelayLimitReached,
    TruncatedStream,
)
from p2psc.machines.channel import ChannelMachine
from p2psc.machines.compiler import MachineTable, compile_machine
from p2psc.noise import TAGLEN, CipherState

__all__ = [
    "END_OF_STREAM",
    "HEADER_LEN",
    "MAX_RECORD_CIPHERTEXT",
    "MAX_RECORD_DATA",
    "MAX_RECORD_WIRE",
    "MIN_RECORD_CIPHERTEXT",
    "TYPE_CLOSE",
    "TYPE_DATA",
    "EndOfStream",
    "SecureChannel",
]

HEADER_LEN: Final = 2
"""The length prefix: two bytes, big-endian, the ciphertext length that follows."""
TYPE_DATA: Final = 0
"""Record type of application data (possibly empty: the Client's key confirmation)."""
TYPE_CLOSE: Final = 1
"""Record type of the authenticated end of stream; carries no data."""
MAX_RECORD_DATA: Final = 32768
"""Application bytes per record, at most.

Why 32 KiB: per-record cost (one AEAD call, a nonce, a header: a few microseconds in Python) is
amortised over the data, so bigger records are faster, but a receiver must buffer a whole record
before it can authenticate it. 32 KiB keeps that buffer small while a 64 KiB application write
still costs two AEAD calls, as many as Noise's 65535-byte maximum would need (65536 > 65518)."""
MIN_RECORD_CIPHERTEXT: Final = 1 + TAGLEN
"""The shortest valid ciphertext: the type byte and the tag (17)."""
MAX_RECORD_CIPHERTEXT: Final = MAX_RECORD_DATA + 1 + TAGLEN
"""The longest valid ciphertext (32785): below Noise's 65535-byte message limit."""
MAX_RECORD_WIRE: Final = HEADER_LEN + MAX_RECORD_CIPHERTEXT
"""The longest record on the wire (32787): the receive buffer never holds a whole one."""

_RELAY_END_MAX: Final = 6 + 4 + 1024
"""At most this much of a relay's end message is kept (a RelayAbort frame's size)."""
_DATA_BYTE: Final = b"\x00"
_CLOSE_BYTE: Final = b"\x01"
_NO_AD: Final = b""


class EndOfStream:
    """The marker :meth:`SecureChannel.feed` returns after the last chunk when the peer's
    authenticated close record arrives. Test with ``item is END_OF_STREAM`` or
    ``isinstance(item, EndOfStream)``; there is one instance."""

    __slots__ = ()
    _instance: EndOfStream | None = None

    def __new__(cls) -> EndOfStream:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "END_OF_STREAM"


END_OF_STREAM: Final = EndOfStream()
"""The single :class:`EndOfStream` instance."""

CHANNEL_TABLE: MachineTable = compile_machine(ChannelMachine)
_CAN_SEND: Final = frozenset({"open", "received_close"})
_SENT_CLOSE: Final = frozenset({"sent_close", "both_closed"})
_RECEIVED_CLOSE: Final = frozenset({"received_close", "both_closed"})


def _step(state: str, event: str) -> str:
    return CHANNEL_TABLE.step(state, event).target


class SecureChannel:
    """Both directions of an established channel: ``send`` seals, ``recv`` opens.

    ``send`` and ``recv`` are the two :class:`~p2psc.noise.CipherState` objects of
    :meth:`~p2psc.noise.HandshakeState.split` for this side; the channel owns them from now on.
    """

    __slots__ = (
        "_buf",
        "_failed",
        "_need",
        "_records_received",
        "_records_sent",
        "_recv",
        "_relay_end",
        "_relayed",
        "_send",
        "_state",
    )

    def __init__(self, send: CipherState, recv: CipherState, *, relayed: bool = False) -> None:
        self._send = send
        self._recv = recv
        self._relayed = relayed
        """Over a relay (spec/relay.md): a record length of 0 is the relay's end marker."""
        self._relay_end: bytearray | None = None
        """The relay's end marker arrived: the (unauthenticated) RelayAbort frame after it."""
        self._buf = bytearray()
        self._need = HEADER_LEN
        self._state = CHANNEL_TABLE.initial
        """State of :class:`~p2psc.machines.channel.ChannelMachine` (stepped on lifecycle
        events only: data records do not change it)."""
        self._failed: ChannelError | None = None
        self._records_sent = 0
        self._records_received = 0

    # --- state --------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Raw bytes received but not yet decoded: part of one record, so always less than
        :data:`MAX_RECORD_WIRE`. Adapters count it towards their receive buffer."""
        return len(self._buf)

    @property
    def closed(self) -> bool:
        """True once :meth:`seal_close` ran: we sent our end of stream."""
        return self._state in _SENT_CLOSE

    @property
    def peer_closed(self) -> bool:
        """True once the peer's authenticated close record arrived."""
        return self._state in _RECEIVED_CLOSE

    @property
    def failed(self) -> ChannelError | None:
        """The error that killed the channel, or None while it is healthy."""
        return self._failed

    @property
    def records_sent(self) -> int:
        """Records sealed so far (DATA and CLOSE)."""
        return self._records_sent

    @property
    def records_received(self) -> int:
        """Authentic records opened so far. The peer core commits when the Client's first one
        (its key confirmation) arrives, even when it carried no data."""
        return self._records_received

    # --- sending ------------------------------------------------------------------------------

    def seal(self, data: bytes | bytearray | memoryview) -> bytes:
        """Records carrying ``data`` (split at :data:`MAX_RECORD_DATA`), ready for the wire.

        Empty ``data`` gives one empty DATA record: the Client's key confirmation."""
        if self._state not in _CAN_SEND:
            raise self._closed_error()
        view = memoryview(data)
        size = len(view)
        encrypt = self._send.encrypt_with_ad
        if size <= MAX_RECORD_DATA:
            ciphertext = encrypt(_NO_AD, _DATA_BYTE + view)
            self._records_sent += 1
            return len(ciphertext).to_bytes(2, "big") + ciphertext
        parts: list[bytes] = []
        for start in range(0, size, MAX_RECORD_DATA):
            ciphertext = encrypt(_NO_AD, _DATA_BYTE + view[start : start + MAX_RECORD_DATA])
            parts.append(len(ciphertext).to_bytes(2, "big"))
            parts.append(ciphertext)
            self._records_sent += 1
        return b"".join(parts)

    def seal_close(self) -> bytes:
        """The authenticated end of stream. After it, :meth:`seal` raises
        :class:`~p2psc.errors.ChannelClosed`; receiving goes on (a half close, like
        ``shutdown(SHUT_WR)``)."""
        if self._state not in _CAN_SEND:
            raise self._closed_error()
        ciphertext = self._send.encrypt_with_ad(_NO_AD, _CLOSE_BYTE)
        self._state = _step(self._state, "close_sent")
        self._records_sent += 1
        return len(ciphertext).to_bytes(2, "big") + ciphertext

    def _closed_error(self) -> ChannelClosed:
        if self._failed is not None:
            return ChannelClosed(f"the channel failed: {self._failed.reason}")
        return ChannelClosed("the channel is closed for sending")

    # --- receiving ----------------------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes | EndOfStream]:
        """Decode raw bytes from the transport, in any chunking.

        Returns the application chunks of every record completed by ``data``, in order, then
        :data:`END_OF_STREAM` if the close record arrived. A bad record raises a
        :class:`~p2psc.errors.ChannelError` and nothing decoded in this call is returned: the
        channel is dead and the caller closes the transport."""
        if self._failed is not None:
            raise self._again()
        if self._relay_end is not None:
            raise self._relay_ended(data)
        if self._state in _RECEIVED_CLOSE:
            if data:
                raise self._fail(DataAfterClose(f"{len(data)} bytes after the close record"))
            return []
        buf = self._buf
        if buf:
            # Append in place (amortised O(1)) and decode only once the record is complete, so
            # a peer dribbling one byte per segment costs no quadratic copying.
            buf += data
            if len(buf) < self._need:
                return []
            data = buf
        view = memoryview(data)
        out: list[bytes | EndOfStream] = []
        end = len(view)
        pos = 0
        decrypt = self._recv.decrypt_with_ad
        while end - pos >= HEADER_LEN:
            length = (view[pos] << 8) | view[pos + 1]
            if length > MAX_RECORD_CIPHERTEXT:
                raise self._fail(
                    RecordTooLarge(f"record of {length} bytes > {MAX_RECORD_CIPHERTEXT}")
                )
            if length < MIN_RECORD_CIPHERTEXT:
                if length == 0 and self._relayed:
                    # The relay ended the circuit here (at a record boundary): hand out what
                    # came before it; the next call raises RelayLimitReached.
                    self._relay_end = bytearray(view[pos + HEADER_LEN : end][:_RELAY_END_MAX])
                    self._buf = bytearray()
                    return out
                raise self._fail(RecordTampered(f"record of {length} bytes cannot be authentic"))
            stop = pos + HEADER_LEN + length
            if stop > end:
                break
            try:
                plaintext = decrypt(_NO_AD, view[pos + HEADER_LEN : stop])
            except NoiseError as exc:
                raise self._fail(
                    RecordTampered(
                        f"record {self._records_received} failed authentication "
                        "(tampered, reordered, replayed or injected)"
                    )
                ) from exc
            pos = stop
            self._records_received += 1
            kind = plaintext[0]
            if kind == TYPE_DATA:
                if len(plaintext) > 1:
                    out.append(plaintext[1:])
            elif kind == TYPE_CLOSE:
                if len(plaintext) != 1:
                    raise self._fail(RecordMalformed("a close record that carries data"))
                self._state = _step(self._state, "close_received")
                if pos != end:
                    raise self._fail(DataAfterClose(f"{end - pos} bytes after the close record"))
                out.append(END_OF_STREAM)
                break
            else:
                raise self._fail(RecordMalformed(f"unknown record type {kind}"))
        rest = end - pos
        if rest == 0:
            self._buf = bytearray()
        else:
            # Keep the tail (less than one record) in a fresh buffer: ``data`` may be the
            # caller's reusable receive buffer, and the old one may still be exported.
            self._buf = bytearray(view[pos:])
            self._need = (
                HEADER_LEN + ((view[pos] << 8) | view[pos + 1])
                if rest >= HEADER_LEN
                else HEADER_LEN
            )
        return out

    def transport_eof(self) -> None:
        """The transport's byte stream ended. Fine after the close record; otherwise the
        stream was cut: raises :class:`~p2psc.errors.TruncatedStream` (or the earlier error)."""
        if self._failed is not None:
            raise self._again()
        if self._relay_end is not None:
            raise self._relay_ended(b"")
        if self._state in _RECEIVED_CLOSE:
            self._state = _step(self._state, "transport_ended")
            return
        partial = f" inside a record ({len(self._buf)} bytes of it)" if self._buf else ""
        error = TruncatedStream(f"the stream ended without a close record{partial}")
        raise self._fail(error, "transport_cut")

    def transport_lost(self, what: str) -> ChannelError:
        """The transport was reset or lost (not a clean end): the error the reader gets.

        The relay's end marker, when it came earlier, still decides (``RelayLimitReached``):
        the relay ends a circuit with the marker, a FIN and, after its linger, a close that a
        peer still writing sees as a reset; the records before the marker were whole. Else
        :class:`~p2psc.errors.TruncatedStream` with ``what`` happened."""
        if self._failed is not None:
            return self._again()
        if self._relay_end is not None:
            return self._relay_ended(b"")
        return TruncatedStream(f"the connection was {what} before the close record")

    def _relay_ended(self, data: bytes | bytearray | memoryview) -> ChannelError:
        """The relay's end marker came earlier: its RelayAbort says why (not authenticated)."""
        from p2psc.relay_wire import reason_name

        assert self._relay_end is not None
        frame = bytes(self._relay_end + bytes(data))[:_RELAY_END_MAX]
        why, code = "no reason given", None
        if len(frame) >= 10 and frame[3] == 18:  # a RelayAbort frame: header, code, text
            code = (frame[6] << 8) | frame[7]
            size = (frame[8] << 8) | frame[9]
            text = frame[10 : 10 + size].decode("utf-8", "replace")
            why = f"{reason_name(code)}: {text}"
        error = RelayLimitReached(f"the relay ended the circuit ({why})")
        error.code = code
        return self._fail(error, "transport_cut")

    def _fail(self, error: ChannelError, event: str = "bad_record") -> ChannelError:
        self._state = _step(self._state, event)
        self._failed = error
        self._buf = bytearray()
        return error

    def _again(self) -> ChannelError:
        assert self._failed is not None
        return type(self._failed)(self._failed.reason)
