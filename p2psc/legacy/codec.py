"""INSECURE LEGACY: the JSON messages of protocol version 0 (the original C++ p2psc client).

Why this exists: the original library's clients speak one compact JSON object per message,
``{"type": N, "payload": {...}}``, with no length prefix and no delimiter, and read each message
with a single ``read()`` of up to 1024 bytes. To serve them unmodified we need

* an **encoder** that emits exactly one object per call (the caller writes it with one write,
  and never two back to back to a legacy client), and
* an **incremental decoder** that finds the end of one top-level object by scanning (strings,
  escapes and nesting aware), with a strict size limit, because nothing else tells where a
  message ends.

The version 0 protocol is lock-step (every message is answered before the next is sent), and the
C++ parser rejects two objects in one read. Our decoder therefore rejects any non-whitespace byte
that follows a complete object before that object was handed out (:class:`LegacyCoalesced`);
``spec/legacy.md`` explains why. :meth:`LegacyDecoder.feed_last` is the one exception: after the
handshake's last message the connection carries application bytes, which it returns untouched.

Parsing tolerates whitespace, key order and extra fields (as the C++ parser does) but is strict
about everything else: valid UTF-8, valid JSON, no duplicate keys, no NaN/Infinity, integers
where integers are due (``true`` is not ``1``), known type numbers, nesting depth <= 16.
Every failure is a :class:`p2psc.errors.LegacyProtocolError` (a ``ProtocolError``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from enum import IntEnum
from typing import Any, ClassVar

from p2psc.errors import LegacyCoalesced, LegacyOversized, LegacyProtocolError

__all__ = [
    "LEGACY_READ_SIZE",
    "LEGACY_VERSION",
    "MAX_DEPTH",
    "MAX_OBJECT_SIZE",
    "Advertise",
    "AdvertiseAbort",
    "AdvertiseChallenge",
    "AdvertiseResponse",
    "AdvertiseRetry",
    "LegacyDecoder",
    "LegacyMessage",
    "LegacyType",
    "PeerAcknowledgement",
    "PeerChallenge",
    "PeerChallengeResponse",
    "PeerDisconnect",
    "PeerIdentification",
    "PeerResponse",
    "decode",
    "encode",
    "looks_legacy",
]

LEGACY_VERSION = 0
"""The protocol version the original C++ client puts in Advertise and PeerIdentification."""

MAX_OBJECT_SIZE = 4096
"""Largest accepted JSON object in bytes, leading whitespace included. An Advertise with two
RSA-4096 PEM keys is about 1.7 KiB, with RSA-2048 keys about 0.95 KiB."""

MAX_DEPTH = 16
"""Deepest accepted nesting. The messages need 2; the limit keeps ``json.loads`` far from
Python's recursion limit whatever the input."""

LEGACY_READ_SIZE = 1024
"""The C++ client reads up to this many bytes per message and reads again only when a read
returned exactly this many. :func:`encode` never produces a message whose length is a multiple
of it (it pads with one space), so such a client never waits for bytes that do not come."""

_WHITESPACE = frozenset(b" \t\r\n")
_STRING_SPECIAL = re.compile(rb'["\\]')
"""Inside a string only a quote (its end) or a backslash (an escape) matters."""
_WHOLE_STRING = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
"""The rest of a string after its opening quote, escapes included, up to its closing quote."""
_STRUCTURAL = re.compile(rb'[{}\[\]"]')
"""Outside strings only braces, brackets and quotes move the scanner."""


class LegacyType(IntEnum):
    """Message type numbers: the same as version 1 (DESIGN.md section 5)."""

    ADVERTISE = 0
    ADVERTISE_CHALLENGE = 1
    ADVERTISE_RESPONSE = 2
    ADVERTISE_ABORT = 3
    ADVERTISE_RETRY = 4
    PEER_DISCONNECT = 5
    PEER_IDENTIFICATION = 6
    PEER_CHALLENGE = 7
    PEER_CHALLENGE_RESPONSE = 8
    PEER_RESPONSE = 9
    PEER_ACKNOWLEDGEMENT = 10


# --- messages ----------------------------------------------------------------------------
# Field names and order are the JSON keys of the original client; str fields are JSON strings,
# int fields JSON integers. Keys are PEM text, nonces base64 or decimal text, as on the wire.


@dataclass(frozen=True, slots=True)
class Advertise:
    """Peer -> mediator: register ``our_key``, ask to be paired with ``their_key`` (PEM text)."""

    TYPE: ClassVar[LegacyType] = LegacyType.ADVERTISE
    version: int
    our_key: str
    their_key: str


@dataclass(frozen=True, slots=True)
class AdvertiseChallenge:
    """Mediator -> peer: a decimal nonce, RSA PKCS#1 v1.5 encrypted to ``our_key``, base64."""

    TYPE: ClassVar[LegacyType] = LegacyType.ADVERTISE_CHALLENGE
    encrypted_nonce: str


@dataclass(frozen=True, slots=True)
class AdvertiseResponse:
    """Peer -> mediator: the decrypted decimal nonce."""

    TYPE: ClassVar[LegacyType] = LegacyType.ADVERTISE_RESPONSE
    nonce: str


@dataclass(frozen=True, slots=True)
class AdvertiseAbort:
    """Mediator -> peer: registration refused for good; ``reason`` is free text."""

    TYPE: ClassVar[LegacyType] = LegacyType.ADVERTISE_ABORT
    reason: str


@dataclass(frozen=True, slots=True)
class AdvertiseRetry:
    """Mediator -> peer: registration refused for now (busy); ``reason`` is free text."""

    TYPE: ClassVar[LegacyType] = LegacyType.ADVERTISE_RETRY
    reason: str


@dataclass(frozen=True, slots=True)
class PeerDisconnect:
    """Mediator -> later registrant: close the mediator connection and listen on ``port``."""

    TYPE: ClassVar[LegacyType] = LegacyType.PEER_DISCONNECT
    port: int


@dataclass(frozen=True, slots=True)
class PeerIdentification:
    """Mediator -> earlier registrant: connect to the peer at ``ip``:``port``."""

    TYPE: ClassVar[LegacyType] = LegacyType.PEER_IDENTIFICATION
    version: int
    ip: str
    port: int


@dataclass(frozen=True, slots=True)
class PeerChallenge:
    """Client -> peer: a decimal nonce encrypted to the peer's key."""

    TYPE: ClassVar[LegacyType] = LegacyType.PEER_CHALLENGE
    encrypted_nonce: str


@dataclass(frozen=True, slots=True)
class PeerChallengeResponse:
    """Peer -> client: its own nonce encrypted to the client's key, and the client's nonce."""

    TYPE: ClassVar[LegacyType] = LegacyType.PEER_CHALLENGE_RESPONSE
    encrypted_nonce: str
    decrypted_nonce: str


@dataclass(frozen=True, slots=True)
class PeerResponse:
    """Client -> peer: the peer's decrypted nonce."""

    TYPE: ClassVar[LegacyType] = LegacyType.PEER_RESPONSE
    decrypted_nonce: str


@dataclass(frozen=True, slots=True)
class PeerAcknowledgement:
    """Peer -> client: both identities are proven; application bytes may follow."""

    TYPE: ClassVar[LegacyType] = LegacyType.PEER_ACKNOWLEDGEMENT


LegacyMessage = (
    Advertise
    | AdvertiseChallenge
    | AdvertiseResponse
    | AdvertiseAbort
    | AdvertiseRetry
    | PeerDisconnect
    | PeerIdentification
    | PeerChallenge
    | PeerChallengeResponse
    | PeerResponse
    | PeerAcknowledgement
)

_CLASSES: dict[int, type[LegacyMessage]] = {
    cls.TYPE: cls
    for cls in (
        Advertise,
        AdvertiseChallenge,
        AdvertiseResponse,
        AdvertiseAbort,
        AdvertiseRetry,
        PeerDisconnect,
        PeerIdentification,
        PeerChallenge,
        PeerChallengeResponse,
        PeerResponse,
        PeerAcknowledgement,
    )
}

_FIELDS: dict[type[LegacyMessage], tuple[tuple[str, type], ...]] = {
    cls: tuple((f.name, int if f.type in ("int", int) else str) for f in fields(cls))
    for cls in _CLASSES.values()
}
"""(name, JSON type) of each payload field, in order, per message class."""

# Range checks per int field (the C++ side stores them as uint8/uint16).
_INT_RANGES: dict[str, tuple[int, int]] = {"version": (0, 255), "port": (1, 65535)}


# --- encoding ----------------------------------------------------------------------------


def encode(message: LegacyMessage) -> bytes:
    """One compact JSON object ``{"type":N,"payload":{...}}`` (ASCII), to be sent in ONE write.

    The length is never a multiple of :data:`LEGACY_READ_SIZE` (see there)."""
    payload: dict[str, Any] = {f.name: getattr(message, f.name) for f in fields(message)}
    for name, value in payload.items():
        _check_field(type(message).__name__, name, value, type(value))
    data = json.dumps(
        {"type": int(message.TYPE), "payload": payload},
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    ).encode("ascii")
    if len(data) % LEGACY_READ_SIZE == 0:
        data = data[:-1] + b" }"
    return data


# --- decoding ----------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _check_field(message: str, name: str, value: Any, expected: type) -> None:
    if expected is int:
        if type(value) is not int:
            raise LegacyProtocolError(f"{message}.{name} must be a JSON integer")
        low, high = _INT_RANGES.get(name, (0, 2**31 - 1))
        if not low <= value <= high:
            raise LegacyProtocolError(f"{message}.{name} = {value} is outside {low}..{high}")
    elif type(value) is not str:
        raise LegacyProtocolError(f"{message}.{name} must be a JSON string")


def decode(data: bytes) -> LegacyMessage:
    """Exactly one JSON object (surrounding whitespace allowed) -> its typed message.

    Raises :class:`LegacyProtocolError` for anything else."""
    if len(data) > MAX_OBJECT_SIZE:
        raise LegacyOversized(f"legacy message of {len(data)} bytes exceeds {MAX_OBJECT_SIZE}")
    try:
        text = data.decode("utf-8")
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise LegacyProtocolError(f"malformed legacy JSON: {error}") from None
    if not isinstance(obj, dict):
        raise LegacyProtocolError("a legacy message must be a JSON object")
    kind = obj.get("type")
    if type(kind) is not int:
        raise LegacyProtocolError("legacy message without an integer 'type'")
    cls = _CLASSES.get(kind)
    if cls is None:
        raise LegacyProtocolError(f"unknown legacy message type {kind}")
    payload = obj.get("payload")
    if not isinstance(payload, dict):
        raise LegacyProtocolError(f"{cls.__name__} without a 'payload' object")
    values: dict[str, Any] = {}
    for name, expected in _FIELDS[cls]:
        if name not in payload:
            raise LegacyProtocolError(f"{cls.__name__} without payload field {name!r}")
        value = payload[name]
        _check_field(cls.__name__, name, value, expected)
        values[name] = value
    return cls(**values)


def looks_legacy(first_byte: int) -> bool:
    """Whether a connection whose first byte is ``first_byte`` speaks version 0 (JSON).

    Version 1 frames start with ``P`` (magic ``P2``); a JSON object starts with ``{``, possibly
    after JSON whitespace."""
    return first_byte == 0x7B or first_byte in _WHITESPACE


class LegacyDecoder:
    """Incremental decoder for a stream of legacy JSON objects with no delimiter.

    Memory is bounded by :data:`MAX_OBJECT_SIZE` (plus one read). Scanning is resumable, so
    every byte is examined once however the stream is split. After the first error the decoder
    is unusable: every later call raises the same error again.
    """

    __slots__ = ("_buffer", "_depth", "_error", "_escape", "_in_string", "_scanned", "_started")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._scanned = 0
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._started = False
        self._error: LegacyProtocolError | None = None

    @classmethod
    def from_snapshot(cls, buffered: bytes) -> LegacyDecoder:
        """A decoder holding ``buffered`` (a :meth:`snapshot`); the scan state is recomputed."""
        decoder = cls()
        decoder._buffer += buffered
        decoder._scan()
        return decoder

    def snapshot(self) -> bytes:
        """The bytes held; with :meth:`from_snapshot` this is the whole decoder state."""
        return bytes(self._buffer)

    @property
    def buffered(self) -> int:
        """Bytes held (part of an incomplete object, or whitespace)."""
        return len(self._buffer)

    @property
    def has_partial(self) -> bool:
        """An object has started but is not complete (for "closed mid-message")."""
        return self._started

    def feed(self, data: bytes) -> list[LegacyMessage]:
        """Add ``data``; return the completed message, if any (a list of zero or one).

        Raises :class:`LegacyCoalesced` when anything but whitespace follows a complete object
        in the buffer, :class:`LegacyOversized` past the size limit, and
        :class:`LegacyProtocolError` for malformed JSON or fields."""
        message, rest = self._feed(data)
        if message is None:
            return []
        if rest.strip(b" \t\r\n"):
            self._error = LegacyCoalesced(
                f"{len(rest)} more bytes followed a complete {type(message).__name__}; "
                "legacy peers send one message and wait for the answer"
            )
            raise self._error
        self._buffer += rest  # whitespace only: the next object's leading whitespace
        return [message]

    def feed_last(self, data: bytes) -> tuple[LegacyMessage | None, bytes]:
        """Like :meth:`feed`, for the last message of a handshake: the bytes after it are
        application data and are returned as they are (the decoder is then finished)."""
        message, rest = self._feed(data)
        return message, rest

    def _fail(self, error: LegacyProtocolError) -> LegacyProtocolError:
        self._error = error
        return error

    def _feed(self, data: bytes) -> tuple[LegacyMessage | None, bytes]:
        if self._error is not None:
            raise self._error
        buffer = self._buffer
        buffer += data
        end = self._scan()
        if end is None:
            if len(buffer) > MAX_OBJECT_SIZE:
                raise self._fail(
                    LegacyOversized(
                        f"legacy message exceeds {MAX_OBJECT_SIZE} bytes without ending"
                    )
                )
            return None, b""
        if end > MAX_OBJECT_SIZE:
            raise self._fail(
                LegacyOversized(f"legacy message of {end} bytes exceeds {MAX_OBJECT_SIZE}")
            )
        raw = bytes(buffer[:end])
        rest = bytes(buffer[end:])
        self._buffer = bytearray()
        self._scanned = 0
        self._started = False
        try:
            return decode(raw), rest
        except LegacyProtocolError as error:
            raise self._fail(error) from None

    def _scan(self) -> int | None:
        """Advance over the buffer; the end offset of the first complete object, or None."""
        buffer = self._buffer
        i = self._scanned
        limit = min(len(buffer), MAX_OBJECT_SIZE + 1)
        depth, in_string, escape, started = (
            self._depth,
            self._in_string,
            self._escape,
            self._started,
        )
        end: int | None = None
        while i < limit:
            if in_string:
                if escape:  # the byte after a backslash is never special
                    escape = False
                    i += 1
                    continue
                found = _STRING_SPECIAL.search(buffer, i, limit)
                if found is None:
                    i = limit
                    break
                i = found.end()
                if buffer[i - 1] == 0x5C:  # backslash
                    escape = True
                else:  # closing quote
                    in_string = False
                continue
            if started:
                found = _STRUCTURAL.search(buffer, i, limit)
                if found is None:
                    i = limit
                    break
                i = found.start()
            byte = buffer[i]
            i += 1
            if not started:
                if byte in _WHITESPACE:
                    continue
                if byte != 0x7B:
                    raise self._fail(
                        LegacyProtocolError(
                            f"a legacy message must start with '{{', not {bytes([byte])!r}"
                        )
                    )
                started = True
                depth = 1
                continue
            if byte == 0x22:
                whole = _WHOLE_STRING.match(buffer, i, limit)
                if whole is not None:  # the common case: the whole string is here
                    i = whole.end()
                else:
                    in_string = True
            elif byte in (0x7B, 0x5B):  # { [
                depth += 1
                if depth > MAX_DEPTH:
                    raise self._fail(
                        LegacyProtocolError(f"legacy JSON nested deeper than {MAX_DEPTH}")
                    )
            elif byte in (0x7D, 0x5D):  # } ]
                depth -= 1
                if depth == 0:
                    end = i
                    break
        self._scanned = i
        self._depth, self._in_string, self._escape, self._started = (
            depth,
            in_string,
            escape,
            started,
        )
        return end
