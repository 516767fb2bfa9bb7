"""The relay messages (issue 14; spec/relay.md): same frame header as every version 1 message.

Why a module of its own: the relay protocol is a separate conversation on its own connection (a
peer talks to the relay only after the Mediator introduced it), so its five messages never
appear where :func:`p2psc.wire.decode` runs, and :mod:`p2psc.wire` stays the Mediator/peer
format. The frame is the same (``"P2" | version 1 | type | length u16 | payload``); types 14-19
and reasons 13-15 are allocated to the relay.

- ``RelayRequest`` (14) peer -> relay: version, our key, the partner's key, the pairing id.
- ``RelayChallenge`` (15) relay -> peer: a nonce sealed (HPKE) to our key; its ``info`` is
  :func:`challenge_info`, which differs from every Mediator challenge's info, so neither can
  be opened as the other (domain separation).
- ``RelayResponse`` (16) peer -> relay: the opened nonce.
- ``RelayConnected`` (17) relay -> peer: spliced with the partner; every later byte is the
  partner's. Carries the circuit's limits (informational).
- ``RelayAbort`` (18) relay -> peer: refused or ended, with a reason. 19 is reserved.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, Union

from p2psc import wire
from p2psc.errors import ProtocolError, UnsupportedVersion
from p2psc.keys import KEY_SIZE, NONCE_SIZE, SEALED_NONCE_SIZE, nonce_info

__all__ = [
    "END_MARKER",
    "RELAY_TYPES",
    "RelayAbort",
    "RelayChallenge",
    "RelayConnected",
    "RelayMessage",
    "RelayMessageType",
    "RelayReason",
    "RelayRequest",
    "RelayResponse",
    "challenge_info",
    "decode_relay",
    "is_relay_request_start",
    "reason_name",
    "take_relay_frame",
]


class RelayMessageType(IntEnum):
    """Frame types of the relay protocol (14-19; 19 reserved)."""

    RELAY_REQUEST = 14
    RELAY_CHALLENGE = 15
    RELAY_RESPONSE = 16
    RELAY_CONNECTED = 17
    RELAY_ABORT = 18


class RelayReason(IntEnum):
    """Reason codes only the relay uses (the others are :class:`p2psc.wire.Reason`)."""

    RELAY_LIMIT = 13
    """A circuit limit (duration or data) ended the circuit."""
    RELAY_NO_PARTNER = 14
    """The partner did not reach the relay for this pairing in time."""
    RELAY_REFUSED = 15
    """Over capacity: circuits per key, per address or in total."""


RELAY_TYPES = frozenset(int(t) for t in RelayMessageType)

END_MARKER = b"\x00\x00"
"""What the relay writes into a spliced stream, at a record boundary, before a RelayAbort
frame: a record length of 0, which no channel record can have (spec/channel.md), so a relayed
channel tells a relay's end of circuit from data."""

_HDR = struct.Struct(">2sBBH")
_LIMITS = struct.Struct(">IQ")


def challenge_info(our_key: bytes, their_key: bytes, pairing_id: bytes) -> bytes:
    """HPKE ``info`` of a RelayChallenge: ``"p2psc v1 RelayChallenge\\0" | our key | their key |
    pairing id``. The Mediator seals under ``"p2psc v1 AdvertiseChallenge\\0" | ...``, so a
    challenge of one never opens as the other: a relay cannot use a peer to answer a Mediator's
    challenge, nor a Mediator a relay's."""
    return nonce_info("RelayChallenge", our_key, their_key) + bytes(pairing_id)


def reason_name(code: int) -> str:
    """``RELAY_LIMIT``, ``TIMEOUT``, ... or ``reason N``."""
    for enum in (RelayReason, wire.Reason):
        try:
            return enum(code).name
        except ValueError:
            continue
    return f"reason {code}"


def _frame(mtype: int, payload: bytes) -> bytes:
    return _HDR.pack(wire.MAGIC, wire.PROTOCOL_VERSION, mtype, len(payload)) + payload


def _check(value: object, size: int, name: str) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        raise ProtocolError(f"{name} must be {size} bytes")


def _fixed(p: bytes, size: int, name: str) -> None:
    if len(p) != size:
        kind = "truncated" if len(p) < size else "trailing bytes in"
        raise ProtocolError(f"{name}: {kind} payload ({len(p)} bytes, expected {size})")


@dataclass(frozen=True, slots=True)
class RelayRequest:
    """peer -> relay: "I own ``our_key`` and want the circuit of ``pairing_id`` with
    ``their_key``"."""

    TYPE: ClassVar[int] = RelayMessageType.RELAY_REQUEST
    version: int
    our_key: bytes
    their_key: bytes
    pairing_id: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.version, int) or not 0 <= self.version <= 255:
            raise ProtocolError("RelayRequest.version must be 0..255")
        _check(self.our_key, KEY_SIZE, "RelayRequest.our_key")
        _check(self.their_key, KEY_SIZE, "RelayRequest.their_key")
        _check(self.pairing_id, wire.PAIRING_ID_SIZE, "RelayRequest.pairing_id")

    def encode(self) -> bytes:
        payload = bytes((self.version,)) + self.our_key + self.their_key + self.pairing_id
        return _frame(self.TYPE, payload)

    @classmethod
    def from_payload(cls, p: bytes) -> RelayRequest:
        _fixed(p, 1 + 2 * KEY_SIZE + wire.PAIRING_ID_SIZE, "RelayRequest")
        return cls(p[0], p[1:33], p[33:65], p[65:81])


@dataclass(frozen=True, slots=True)
class RelayChallenge:
    """relay -> peer: a nonce sealed to the requester's key under :func:`challenge_info`."""

    TYPE: ClassVar[int] = RelayMessageType.RELAY_CHALLENGE
    encrypted_nonce: bytes

    def __post_init__(self) -> None:
        _check(self.encrypted_nonce, SEALED_NONCE_SIZE, "RelayChallenge.encrypted_nonce")

    def encode(self) -> bytes:
        return _frame(self.TYPE, self.encrypted_nonce)

    @classmethod
    def from_payload(cls, p: bytes) -> RelayChallenge:
        _fixed(p, SEALED_NONCE_SIZE, "RelayChallenge")
        return cls(p)


@dataclass(frozen=True, slots=True)
class RelayResponse:
    """peer -> relay: the opened nonce (proves ownership of ``our_key``)."""

    TYPE: ClassVar[int] = RelayMessageType.RELAY_RESPONSE
    nonce: bytes

    def __post_init__(self) -> None:
        _check(self.nonce, NONCE_SIZE, "RelayResponse.nonce")

    def encode(self) -> bytes:
        return _frame(self.TYPE, self.nonce)

    @classmethod
    def from_payload(cls, p: bytes) -> RelayResponse:
        _fixed(p, NONCE_SIZE, "RelayResponse")
        return cls(p)


@dataclass(frozen=True, slots=True)
class RelayConnected:
    """relay -> peer: spliced; from the next byte on the stream is the partner's. The circuit's
    limits (seconds, bytes both ways together; 0 = none) are for information only."""

    TYPE: ClassVar[int] = RelayMessageType.RELAY_CONNECTED
    max_duration: int = 0
    max_bytes: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.max_duration < 2**32 or not 0 <= self.max_bytes < 2**64:
            raise ProtocolError("RelayConnected limits out of range")

    def encode(self) -> bytes:
        return _frame(self.TYPE, _LIMITS.pack(self.max_duration, self.max_bytes))

    @classmethod
    def from_payload(cls, p: bytes) -> RelayConnected:
        _fixed(p, _LIMITS.size, "RelayConnected")
        return cls(*_LIMITS.unpack(p))


@dataclass(frozen=True, slots=True)
class RelayAbort:
    """relay -> peer: refused, or the circuit ended (``code``: :class:`RelayReason` or
    :class:`p2psc.wire.Reason`)."""

    TYPE: ClassVar[int] = RelayMessageType.RELAY_ABORT
    code: int
    text: str

    def __post_init__(self) -> None:
        wire.AdvertiseAbort(self.code, self.text)  # the same checks as the Mediator's reason

    def encode(self) -> bytes:
        return _frame(self.TYPE, wire.AdvertiseAbort(self.code, self.text).payload())

    @classmethod
    def from_payload(cls, p: bytes) -> RelayAbort:
        abort = wire.AdvertiseAbort.from_payload(p)
        return cls(int(abort.code), abort.text.replace("AdvertiseAbort", "RelayAbort"))


RelayMessage = Union[  # noqa: UP007
    RelayRequest, RelayChallenge, RelayResponse, RelayConnected, RelayAbort
]

_FROM_PAYLOAD = {
    int(cls.TYPE): cls.from_payload
    for cls in (RelayRequest, RelayChallenge, RelayResponse, RelayConnected, RelayAbort)
}


def is_relay_request_start(data: bytes) -> bool:
    """True when ``data`` (the first bytes of a connection, at least 4) start a RelayRequest:
    how a Mediator that also relays (``p2psc mediator --relay``) tells the two apart."""
    return (
        len(data) >= 4
        and data[:2] == wire.MAGIC
        and data[2] == wire.PROTOCOL_VERSION
        and data[3] == RelayMessageType.RELAY_REQUEST
    )


def take_relay_frame(
    buf: bytes, *, mediator_ok: bool = False
) -> tuple[RelayMessage | wire.Message, bytes] | None:
    """Split the first whole frame off ``buf``: (message, rest), or None when incomplete.

    Relay types only, unless ``mediator_ok`` (a peer talking to a server that turns out to be
    a Mediator without a relay gets an AdvertiseAbort: decoded so it can say so). Raises
    ProtocolError/UnsupportedVersion for anything else, as soon as the header shows it."""
    if (len(buf) >= 1 and buf[0] != 0x50) or (len(buf) >= 2 and buf[1] != 0x32):
        raise ProtocolError(f"bad magic {bytes(buf[:2])!r} (expected b'P2')")
    if len(buf) >= 3 and buf[2] != wire.PROTOCOL_VERSION:
        raise UnsupportedVersion(f"frame has protocol version {buf[2]}")
    if len(buf) >= 4 and buf[3] not in RELAY_TYPES and not mediator_ok:
        raise ProtocolError(f"unexpected message type {buf[3]} on a relay connection")
    if len(buf) < wire.HEADER_SIZE:
        return None
    length = (buf[4] << 8) | buf[5]
    if length > wire.MAX_PAYLOAD:
        raise ProtocolError(f"payload length {length} exceeds the maximum of {wire.MAX_PAYLOAD}")
    end = wire.HEADER_SIZE + length
    if len(buf) < end:
        return None
    frame, rest = bytes(buf[:end]), bytes(buf[end:])
    return decode_relay(frame, mediator_ok=mediator_ok), rest


def decode_relay(frame: bytes, *, mediator_ok: bool = False) -> RelayMessage | wire.Message:
    """Decode one whole frame of a relay type (or, with ``mediator_ok``, any version 1 type)."""
    if len(frame) < wire.HEADER_SIZE:
        raise ProtocolError(f"truncated frame: {len(frame)} bytes")
    from_payload = _FROM_PAYLOAD.get(frame[3])
    if from_payload is None:
        if mediator_ok:
            return wire.decode(frame)
        raise ProtocolError(f"unexpected message type {frame[3]} on a relay connection")
    if frame[:2] != wire.MAGIC or frame[2] != wire.PROTOCOL_VERSION:
        raise ProtocolError("bad frame header")
    if len(frame) != wire.HEADER_SIZE + ((frame[4] << 8) | frame[5]):
        raise ProtocolError("frame length does not match its header")
    message: RelayMessage = from_payload(frame[wire.HEADER_SIZE :])
    return message
