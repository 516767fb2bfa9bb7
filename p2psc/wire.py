"""The p2psc version 1 wire format: frames, the nine messages, and a streaming decoder.

The layout is *declared* with construct (:data:`FRAME`, :data:`PAYLOADS`): that declaration is the
reference, and ``spec/protocol.md`` describes it in prose. Production encode/decode use a
hand-written ``struct`` path because construct, even compiled, is several times slower than the
10 us per-frame budget allows; tests check that both paths agree byte for byte and on every
rejection.

Frame: ``magic "P2" | version u8 | type u8 | length u16 (big-endian) | payload``. Decoding is
strict: anything that is not exactly one valid frame raises :class:`~p2psc.errors.ProtocolError`
(or :class:`~p2psc.errors.UnsupportedVersion`) with a reason a human understands.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar, TypeVar, Union

import construct as c

from p2psc.errors import ProtocolError, UnsupportedVersion
from p2psc.keys import KEY_SIZE, NONCE_SIZE, SEALED_NONCE_SIZE

__all__ = [
    "ADDRESS",
    "EXTENSIONS",
    "FRAME",
    "FRAME_COMPILED",
    "HEADER",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_CANDIDATES",
    "MAX_EXTENSIONS",
    "MAX_PAYLOAD",
    "MAX_REASON_TEXT",
    "MESSAGE_CLASSES",
    "NOISE_MESSAGE_MIN",
    "OPTIONAL_ADDRESS",
    "PAIRING_ID_SIZE",
    "PAYLOADS",
    "PROTOCOL_VERSION",
    "REASON",
    "Address",
    "Advertise",
    "AdvertiseAbort",
    "AdvertiseChallenge",
    "AdvertiseResponse",
    "AdvertiseRetry",
    "ExtensionType",
    "Extensions",
    "FrameDecoder",
    "HandshakeInit",
    "HandshakeResponse",
    "Message",
    "MessageType",
    "PeerDisconnect",
    "PeerIdentification",
    "Ping",
    "Pong",
    "Reason",
    "Status",
    "StatusCode",
    "candidates_extension",
    "construct_decode",
    "construct_encode",
    "coordinated",
    "decode",
    "dial_delay_extension",
    "encode",
]

PROTOCOL_VERSION = 1
MAGIC = b"P2"
HEADER_SIZE = 6
MAX_PAYLOAD = 4096
MAX_REASON_TEXT = 1024
FAMILY_NONE = 0
FAMILY_IPV4 = 4
FAMILY_IPV6 = 6
PAIRING_ID_SIZE = 16
"""Bytes of the fresh pairing id the Mediator puts in PeerDisconnect and PeerIdentification."""
NOISE_MESSAGE_MIN = 48
MAX_EXTENSIONS = 8
"""Items an extension area may hold (Advertise, PeerDisconnect, PeerIdentification)."""
MAX_CANDIDATES = 8
"""Addresses a CANDIDATES extension may hold (8 IPv6 addresses: 152 bytes)."""
MIN_KEEPALIVE_MS = 1000
"""Smallest interval a Ping may announce (ms): a keepalive more frequent than once a second
refreshes no NAT binding that once a second would not, and only costs the Mediator."""
MAX_KEEPALIVE_MS = 3_600_000
"""Largest interval a Ping may announce (ms): one hour, the Mediator's default wait_timeout."""
"""Smallest Noise KK handshake message: an ephemeral key (32) and an empty payload's tag (16)."""


class MessageType(IntEnum):
    """Type byte of a frame; numbers kept from the original C++ library."""

    ADVERTISE = 0
    ADVERTISE_CHALLENGE = 1
    ADVERTISE_RESPONSE = 2
    ADVERTISE_ABORT = 3
    ADVERTISE_RETRY = 4
    PEER_DISCONNECT = 5
    PEER_IDENTIFICATION = 6
    HANDSHAKE_INIT = 7
    HANDSHAKE_RESPONSE = 8
    # 9 and 10 (wave 1's PeerResponse, PeerAcknowledgement) are retired: never reuse them.
    PING = 11
    PONG = 12
    STATUS = 13


class Reason(IntEnum):
    """Reason codes of AdvertiseAbort/AdvertiseRetry (u16). Unknown codes stay plain ints."""

    UNSPECIFIED = 0
    UNSUPPORTED_VERSION = 1
    IDENTITY_CHECK_FAILED = 2
    DUPLICATE_REGISTRATION = 3
    SELF_PAIRING = 4
    BUSY = 5
    TIMEOUT = 6
    MALFORMED = 7
    PEER_GONE = 8
    SHUTTING_DOWN = 9
    TLS_REQUIRED = 10
    SILENT = 11
    PARTNER_LOST = 12
    """After a coordinated introduction, the partner's connection to the Mediator closed or went
    silent before it reported leaving the punch (spec/protocol.md section 4.11)."""
    REGISTRY_UNAVAILABLE = 16
    """A fleet's shared registry could not be reached, or lost a waiting registration
    (AdvertiseRetry: register again after a backoff). spec/mediator.md section 10."""


class ExtensionType(IntEnum):
    """Types of the extension area items (protocol.md section 3.4). Unknown types are kept as
    raw bytes and ignored, so a later revision can add one without a layout change."""

    CANDIDATES = 1
    DIAL_DELAY = 2
    """In PeerDisconnect: ``u16`` milliseconds after which the Peer should make its first dials,
    so that they leave when the Client's do (protocol.md "Timed first dial")."""
    COORDINATE = 3
    """Empty value. In Advertise: "I implement the coordinated introduction" (section 4.11); in
    PeerDisconnect/PeerIdentification: "this pairing is coordinated" (the Mediator echoes it only
    when both partners offered it)."""


class StatusCode(IntEnum):
    """The ``status`` byte of a Status frame (peer -> Mediator, coordinated pairings only)."""

    PUNCHING = 1
    """The Peer's confirmation of PeerDisconnect: it listens and punches (keeps the connection)."""
    DIRECT = 2
    """Left the punch: a direct connection is established."""
    RELAY = 3
    """Left the punch: going to the relay."""
    GAVE_UP = 4
    """Left the punch: no connection (punch deadline, or failed)."""


Extensions = tuple[tuple[int, bytes], ...]
"""An extension area: (type, value) items, types strictly increasing, at most MAX_EXTENSIONS."""

_REASONS: dict[int, Reason] = {int(r): r for r in Reason}
_TYPES: dict[int, MessageType] = {int(t): t for t in MessageType}

# --------------------------------------------------------------------------------------------
# The declared layout (construct). This is the reference the fast path below must agree with.
# --------------------------------------------------------------------------------------------

_KEY = c.Bytes(KEY_SIZE)
_NONCE = c.Bytes(NONCE_SIZE)
_SEALED = c.Bytes(SEALED_NONCE_SIZE)
_PAIRING_ID = c.Bytes(PAIRING_ID_SIZE)

ADDRESS = c.Struct(
    "family" / c.Int8ub,
    "host" / c.Switch(c.this.family, {FAMILY_IPV4: c.Bytes(4), FAMILY_IPV6: c.Bytes(16)}),
    "port" / c.Int16ub,
)
"""A required address: family 4 or 6, packed host, port. Other families fail in validation."""

OPTIONAL_ADDRESS = c.Struct(
    "family" / c.Int8ub,
    "host" / c.Switch(c.this.family, {FAMILY_IPV4: c.Bytes(4), FAMILY_IPV6: c.Bytes(16)}),
    "port" / c.If(c.this.family != FAMILY_NONE, c.Int16ub),
)
"""An optional address: family 0 alone means absent."""

REASON = c.Struct("code" / c.Int16ub, "text" / c.Prefixed(c.Int16ub, c.GreedyBytes))

EXTENSIONS = c.GreedyRange(
    c.Struct("type" / c.Int8ub, "value" / c.Prefixed(c.Int8ub, c.GreedyBytes))
)
"""The extension area: ``type u8 | length u8 | value`` items to the end of the payload."""

PAYLOADS: dict[MessageType, c.Construct] = {
    MessageType.ADVERTISE: c.Struct(
        "version" / c.Int8ub,
        "our_key" / _KEY,
        "their_key" / _KEY,
        "local" / OPTIONAL_ADDRESS,
        "extensions" / EXTENSIONS,
        c.Terminated,
    ),
    MessageType.ADVERTISE_CHALLENGE: c.Struct("encrypted_nonce" / _SEALED, c.Terminated),
    MessageType.ADVERTISE_RESPONSE: c.Struct("nonce" / _NONCE, c.Terminated),
    MessageType.ADVERTISE_ABORT: c.Struct("reason" / REASON, c.Terminated),
    MessageType.ADVERTISE_RETRY: c.Struct("reason" / REASON, c.Terminated),
    MessageType.PEER_DISCONNECT: c.Struct(
        "pairing_id" / _PAIRING_ID,
        "peer" / ADDRESS,
        "client" / ADDRESS,
        "client_local" / OPTIONAL_ADDRESS,
        "extensions" / EXTENSIONS,
        c.Terminated,
    ),
    MessageType.PEER_IDENTIFICATION: c.Struct(
        "version" / c.Int8ub,
        "pairing_id" / _PAIRING_ID,
        "peer" / ADDRESS,
        "peer_local" / OPTIONAL_ADDRESS,
        "extensions" / EXTENSIONS,
        c.Terminated,
    ),
    # Noise messages: at least NOISE_MESSAGE_MIN bytes (checked by the message classes).
    MessageType.HANDSHAKE_INIT: c.Struct("noise" / c.GreedyBytes),
    MessageType.HANDSHAKE_RESPONSE: c.Struct("noise" / c.GreedyBytes),
    MessageType.PING: c.Struct("token" / c.Int32ub, "interval_ms" / c.Int32ub, c.Terminated),
    MessageType.PONG: c.Struct("token" / c.Int32ub, c.Terminated),
    MessageType.STATUS: c.Struct("status" / c.Int8ub, c.Terminated),
}
"""Payload layout per message type."""

HEADER = c.Struct(
    "magic" / c.Const(MAGIC),
    "version" / c.Int8ub,
    "type" / c.Int8ub,
    "length" / c.Int16ub,
)
"""The fixed 6-byte frame header."""

FRAME = c.Struct(
    "magic" / c.Const(MAGIC),
    "version" / c.Int8ub,
    "type" / c.Int8ub,
    "payload"
    / c.Prefixed(c.Int16ub, c.Switch(c.this.type, {int(k): v for k, v in PAYLOADS.items()})),
    c.Terminated,
)
"""A whole frame: header fields with the length as the payload's prefix."""

FRAME_COMPILED: Any = FRAME.compile()
"""construct's compiled parser/builder of :data:`FRAME` (faster than the interpreted one)."""

# --------------------------------------------------------------------------------------------
# Addresses
# --------------------------------------------------------------------------------------------


_ntop = socket.inet_ntop
_pton = socket.inet_pton
_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6


def _normalise_host(host: str) -> tuple[str, int, bytes]:
    """Return (canonical text, family, packed bytes) or raise ProtocolError."""
    if not isinstance(host, str):
        raise ProtocolError(f"address host must be text, got {type(host).__name__}")
    # Fast path (the mediator converts every observed address): text that inet_pton accepts
    # *and* that inet_ntop prints back unchanged is already canonical, and ipaddress accepts
    # exactly that text with the same result, so it can skip ipaddress (~5 us). Anything else
    # (non-canonical spellings, scope ids, garbage) takes the strict ipaddress path below.
    family = _AF_INET6 if ":" in host else _AF_INET
    try:
        packed = _pton(family, host)
        if _ntop(family, packed) == host:
            return host, FAMILY_IPV6 if family == _AF_INET6 else FAMILY_IPV4, packed
    except (OSError, ValueError):
        pass
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ProtocolError(f"not an IPv4 or IPv6 address: {host!r}") from None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id is not None:
            raise ProtocolError(f"IPv6 scope ids cannot be carried on the wire: {host!r}")
        # inet_ntop's text (RFC 5952; IPv4-mapped as ::ffff:a.b.c.d) is also what decoding
        # produces, so a decoded Address compares equal to the one that was encoded.
        return _ntop(_AF_INET6, ip.packed), FAMILY_IPV6, ip.packed
    return _ntop(_AF_INET, ip.packed), FAMILY_IPV4, ip.packed


@dataclass(frozen=True, slots=True)
class Address:
    """An IP endpoint: normalised IPv4/IPv6 text and a port in 1..65535."""

    host: str
    port: int

    def __post_init__(self) -> None:
        text, _family, _packed = _normalise_host(self.host)
        if text != self.host:
            object.__setattr__(self, "host", text)
        if not isinstance(self.port, int) or isinstance(self.port, bool):
            raise ProtocolError(f"port must be an integer, got {self.port!r}")
        if not 1 <= self.port <= 65535:
            raise ProtocolError(f"port {self.port} is outside 1..65535")

    @property
    def family(self) -> int:
        """4 or 6, as on the wire."""
        return FAMILY_IPV6 if ":" in self.host else FAMILY_IPV4

    @classmethod
    def parse(cls, text: str) -> Address:
        """Parse ``1.2.3.4:5`` or ``[::1]:5``."""
        text = text.strip()
        if text.startswith("["):
            host, sep, rest = text[1:].partition("]")
            if not sep or not rest.startswith(":"):
                raise ProtocolError(f"expected [IPv6]:port, got {text!r}")
            port_text = rest[1:]
        else:
            host, sep, port_text = text.rpartition(":")
            if not sep or ":" in host:
                raise ProtocolError(f"expected host:port or [IPv6]:port, got {text!r}")
        if not port_text.isdigit() or not port_text.isascii():
            raise ProtocolError(f"port must be decimal digits, got {port_text!r}")
        return cls(host, int(port_text))

    @classmethod
    def from_tuple(cls, sockaddr: tuple[Any, ...]) -> Address:
        """From a socket address tuple: (host, port) or (host, port, flowinfo, scope_id)."""
        if len(sockaddr) == 2:  # fast path: (canonical host text, port), as sockets report it
            host, port = sockaddr
            if type(host) is str and type(port) is int and 0 < port <= 65535:
                family = _AF_INET6 if ":" in host else _AF_INET
                try:
                    if _ntop(family, _pton(family, host)) == host:
                        return _trusted_address(host, port)
                except (OSError, ValueError):
                    pass
        if len(sockaddr) < 2:
            raise ProtocolError(f"not a socket address: {sockaddr!r}")
        if len(sockaddr) >= 4 and sockaddr[3]:
            raise ProtocolError(f"IPv6 scope ids cannot be carried on the wire: {sockaddr!r}")
        port = sockaddr[1]
        if not isinstance(port, int):
            raise ProtocolError(f"not a socket address: {sockaddr!r}")
        return cls(str(sockaddr[0]), port)

    def to_tuple(self) -> tuple[str, int]:
        """(host, port) for socket.connect / asyncio."""
        return (self.host, self.port)

    def packed(self) -> bytes:
        """The host as 4 or 16 network-order bytes."""
        if ":" in self.host:
            return socket.inet_pton(socket.AF_INET6, self.host)
        return socket.inet_pton(socket.AF_INET, self.host)

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


_new = object.__new__
_setattr = object.__setattr__  # how a frozen dataclass's own __init__ sets its fields


def _trusted_address(host: str, port: int) -> Address:
    """Build an Address from already-canonical decoded parts (skips re-validation of the host)."""
    if port == 0:
        raise ProtocolError("address port 0 is not allowed")
    addr = _new(Address)
    _setattr(addr, "host", host)
    _setattr(addr, "port", port)
    return addr


_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_HDR = struct.Struct(">2sBBH")


def _address_bytes(addr: Address | None) -> bytes:
    if addr is None:
        return b"\x00"
    if ":" in addr.host:
        return b"\x06" + socket.inet_pton(socket.AF_INET6, addr.host) + _U16.pack(addr.port)
    return b"\x04" + socket.inet_pton(socket.AF_INET, addr.host) + _U16.pack(addr.port)


def _take_address(p: bytes, off: int, optional: bool, what: str) -> tuple[Address | None, int]:
    """Decode an address at ``off``; returns (address, new offset)."""
    n = len(p)
    if off >= n:
        raise ProtocolError(f"payload ends before the {what} address")
    fam = p[off]
    if fam == FAMILY_IPV4:
        end = off + 7
        if end > n:
            raise ProtocolError(f"payload ends inside the {what} IPv4 address")
        host = "%d.%d.%d.%d" % (p[off + 1], p[off + 2], p[off + 3], p[off + 4])  # noqa: UP031
    elif fam == FAMILY_IPV6:
        end = off + 19
        if end > n:
            raise ProtocolError(f"payload ends inside the {what} IPv6 address")
        host = _ntop(_AF_INET6, p[off + 1 : off + 17])
    elif fam == FAMILY_NONE and optional:
        return None, off + 1
    else:
        raise ProtocolError(f"{what} address has unknown family {fam} (expected 4 or 6)")
    port = (p[end - 2] << 8) | p[end - 1]
    if port == 0:
        raise ProtocolError(f"{what} address has port 0")
    return _trusted_address(host, port), end


def _end(p: bytes, off: int, name: str) -> None:
    if off != len(p):
        raise ProtocolError(f"{name}: {len(p) - off} trailing bytes after the last field")


def _take_extensions(p: bytes, off: int, name: str) -> Extensions:
    """The extension area from ``off`` to the end of the payload (checked)."""
    n = len(p)
    if off == n:
        return ()
    if n - off == 1:
        raise ProtocolError(f"{name}: 1 trailing bytes after the last field")
    items: list[tuple[int, bytes]] = []
    while off < n:
        if n - off < 2:
            raise ProtocolError(f"{name}: payload ends inside an extension header")
        kind, size = p[off], p[off + 1]
        end = off + 2 + size
        if end > n:
            raise ProtocolError(
                f"{name}: extension {kind} announces {size} bytes, {n - off - 2} remain"
            )
        items.append((kind, bytes(p[off + 2 : end])))
        off = end
    extensions = tuple(items)
    _check_extensions(extensions, name)
    return extensions


def _check_extensions(extensions: object, name: str) -> None:
    """Types 1..255, strictly increasing (each at most once), at most MAX_EXTENSIONS items of
    at most 255 bytes; a known type's value must have its layout."""
    if type(extensions) is not tuple:
        raise ProtocolError(f"{name}: extensions must be a tuple, got {type(extensions).__name__}")
    if len(extensions) > MAX_EXTENSIONS:
        raise ProtocolError(
            f"{name}: extensions: {len(extensions)} items, at most {MAX_EXTENSIONS}"
        )
    previous = 0
    for item in extensions:
        if (
            type(item) is not tuple
            or len(item) != 2
            or type(item[0]) is not int
            or type(item[1]) is not bytes
        ):
            raise ProtocolError(f"{name}: extensions are (type, bytes) pairs, got {item!r}")
        kind, value = item
        if not previous < kind <= 255:
            why = "type 0 is reserved" if kind == 0 else "types must be strictly increasing"
            raise ProtocolError(f"{name}: extension {why} (got {kind} after {previous})")
        if len(value) > 255:
            raise ProtocolError(f"{name}: extension {kind} has {len(value)} bytes, max 255")
        if kind == ExtensionType.CANDIDATES:
            _candidates(value, name)
        elif kind == ExtensionType.DIAL_DELAY and len(value) != 2:
            raise ProtocolError(f"{name}: DIAL_DELAY has {len(value)} bytes, expected 2 (u16 ms)")
        elif kind == ExtensionType.COORDINATE and value:
            raise ProtocolError(
                f"{name}: extension COORDINATE must be empty, has {len(value)} bytes"
            )
        previous = kind


def _candidates(value: bytes, name: str) -> tuple[Address, ...]:
    """The addresses of a CANDIDATES value: 1..MAX_CANDIDATES required addresses."""
    out: list[Address] = []
    off = 0
    while off < len(value):
        addr, off = _take_address(value, off, False, "candidate")
        assert addr is not None
        out.append(addr)
    if not 1 <= len(out) <= MAX_CANDIDATES:
        raise ProtocolError(f"{name}: {len(out)} candidates, expected 1..{MAX_CANDIDATES}")
    return tuple(out)


def _extensions_bytes(extensions: Extensions) -> bytes:
    return b"".join(bytes((kind, len(value))) + value for kind, value in extensions)


def candidates_extension(addresses: Sequence[Address]) -> Extensions:
    """The extension area carrying ``addresses`` as CANDIDATES (empty when there are none)."""
    if not addresses:
        return ()
    value = b"".join(_address_bytes(a) for a in addresses)
    return ((int(ExtensionType.CANDIDATES), value),)


def coordinated(extensions: Extensions) -> bool:
    """Whether an extension area holds the COORDINATE item (section 4.11)."""
    return any(kind == ExtensionType.COORDINATE for kind, _ in extensions)


def dial_delay_extension(ms: int) -> Extensions:
    """The extension item naming the Peer's first-dial delay, ``ms`` clipped to 0..65535."""
    return ((int(ExtensionType.DIAL_DELAY), min(max(ms, 0), 0xFFFF).to_bytes(2, "big")),)


def _candidates_of(extensions: Extensions) -> tuple[Address, ...]:
    for kind, value in extensions:
        if kind == ExtensionType.CANDIDATES:
            return _candidates(value, "CANDIDATES")
    return ()


def _fixed(p: bytes, sizes: tuple[int, ...], name: str) -> None:
    want = sum(sizes)
    if len(p) != want:
        kind = "truncated" if len(p) < want else "trailing bytes in"
        raise ProtocolError(f"{name}: {kind} payload ({len(p)} bytes, expected {want})")


def _check_bytes(value: object, size: int, field: str, name: str) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        got = len(value) if isinstance(value, bytes | bytearray) else type(value).__name__
        raise ProtocolError(f"{name}.{field} must be {size} bytes, got {got}")


def _check_u8(value: object, field: str, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
        raise ProtocolError(f"{name}.{field} must be an integer 0..255, got {value!r}")


def _check_u32(value: object, field: str, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFFFFFF:
        raise ProtocolError(f"{name}.{field} must be an integer 0..2**32-1, got {value!r}")


def _check_addr(value: object, optional: bool, field: str, name: str) -> None:
    if value is None and optional:
        return
    if not isinstance(value, Address):
        raise ProtocolError(f"{name}.{field} must be an Address, got {type(value).__name__}")


def _frame(mtype: int, payload: bytes) -> bytes:
    return _HDR.pack(MAGIC, PROTOCOL_VERSION, mtype, len(payload)) + payload


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------


class _Codec:
    """Shared encode/decode of a message class (not a dataclass; holds no fields)."""

    __slots__ = ()
    TYPE: ClassVar[MessageType]

    def payload(self) -> bytes:
        """The payload bytes (without the header)."""
        raise NotImplementedError

    def encode(self) -> bytes:
        """The whole frame."""
        return _frame(self.TYPE, self.payload())


@dataclass(frozen=True, slots=True)
class Advertise(_Codec):
    """peer -> mediator: register ``our_key`` wishing to meet ``their_key``."""

    TYPE: ClassVar[MessageType] = MessageType.ADVERTISE
    version: int
    our_key: bytes
    their_key: bytes
    local: Address | None = None
    extensions: Extensions = ()

    def __post_init__(self) -> None:
        _check_u8(self.version, "version", "Advertise")
        _check_bytes(self.our_key, KEY_SIZE, "our_key", "Advertise")
        _check_bytes(self.their_key, KEY_SIZE, "their_key", "Advertise")
        _check_addr(self.local, True, "local", "Advertise")
        if self.extensions != ():
            _check_extensions(self.extensions, "Advertise")

    @property
    def candidates(self) -> tuple[Address, ...]:
        """The advertiser's other local addresses (the CANDIDATES extension), if any."""
        return _candidates_of(self.extensions)

    def payload(self) -> bytes:
        return (
            bytes((self.version,))
            + self.our_key
            + self.their_key
            + _address_bytes(self.local)
            + _extensions_bytes(self.extensions)
        )

    @classmethod
    def from_payload(cls, p: bytes) -> Advertise:
        if len(p) < 66:
            raise ProtocolError(f"Advertise: truncated payload ({len(p)} bytes, at least 66)")
        local, off = _take_address(p, 65, True, "local")
        extensions = _take_extensions(p, off, "Advertise")
        # Every field is valid by construction here, so skip __post_init__'s checks (the
        # mediator decodes one Advertise per registration).
        msg = _new(cls)
        _setattr(msg, "version", p[0])
        _setattr(msg, "our_key", p[1:33])
        _setattr(msg, "their_key", p[33:65])
        _setattr(msg, "local", local)
        _setattr(msg, "extensions", extensions)
        return msg

    @classmethod
    def decode(cls, frame: bytes) -> Advertise:
        return _decode_as(cls, frame)


@dataclass(frozen=True, slots=True)
class AdvertiseChallenge(_Codec):
    """mediator -> peer: a nonce sealed to the advertised ``our_key``."""

    TYPE: ClassVar[MessageType] = MessageType.ADVERTISE_CHALLENGE
    encrypted_nonce: bytes

    def __post_init__(self) -> None:
        _check_bytes(
            self.encrypted_nonce, SEALED_NONCE_SIZE, "encrypted_nonce", "AdvertiseChallenge"
        )

    def payload(self) -> bytes:
        return self.encrypted_nonce

    @classmethod
    def from_payload(cls, p: bytes) -> AdvertiseChallenge:
        _fixed(p, (SEALED_NONCE_SIZE,), "AdvertiseChallenge")
        return cls(p)

    @classmethod
    def decode(cls, frame: bytes) -> AdvertiseChallenge:
        return _decode_as(cls, frame)


@dataclass(frozen=True, slots=True)
class AdvertiseResponse(_Codec):
    """peer -> mediator: the opened nonce, proving ownership of ``our_key``."""

    TYPE: ClassVar[MessageType] = MessageType.ADVERTISE_RESPONSE
    nonce: bytes

    def __post_init__(self) -> None:
        _check_bytes(self.nonce, NONCE_SIZE, "nonce", "AdvertiseResponse")

    def payload(self) -> bytes:
        return self.nonce

    @classmethod
    def from_payload(cls, p: bytes) -> AdvertiseResponse:
        _fixed(p, (NONCE_SIZE,), "AdvertiseResponse")
        msg = _new(cls)  # valid by construction: skip __post_init__ (one per registration)
        _setattr(msg, "nonce", p)
        return msg

    @classmethod
    def decode(cls, frame: bytes) -> AdvertiseResponse:
        return _decode_as(cls, frame)


def _check_reason(code: object, text: object, name: str) -> None:
    if not isinstance(code, int) or isinstance(code, bool) or not 0 <= code <= 0xFFFF:
        raise ProtocolError(f"{name}.code must be an integer 0..65535, got {code!r}")
    if not isinstance(text, str):
        raise ProtocolError(f"{name}.text must be text, got {type(text).__name__}")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ProtocolError(f"{name}.text cannot be encoded as UTF-8") from None
    if size > MAX_REASON_TEXT:
        raise ProtocolError(f"{name}.text is {size} bytes of UTF-8, limit {MAX_REASON_TEXT}")


def _reason_payload(code: int, text: str) -> bytes:
    raw = text.encode("utf-8")
    return _U16.pack(code) + _U16.pack(len(raw)) + raw


def _reason_fields(p: bytes, name: str) -> tuple[int, str]:
    if len(p) < 4:
        raise ProtocolError(f"{name}: truncated payload ({len(p)} bytes, at least 4)")
    code = (p[0] << 8) | p[1]
    size = (p[2] << 8) | p[3]
    if size > MAX_REASON_TEXT:
        raise ProtocolError(f"{name}: reason text of {size} bytes exceeds {MAX_REASON_TEXT}")
    if len(p) != 4 + size:
        kind = "truncated" if len(p) < 4 + size else "trailing bytes in"
        raise ProtocolError(f"{name}: {kind} reason text ({len(p) - 4} bytes, declared {size})")
    try:
        text = p[4:].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(f"{name}: reason text is not valid UTF-8") from None
    return _REASONS.get(code, code), text


@dataclass(frozen=True, slots=True)
class AdvertiseAbort(_Codec):
    """mediator -> peer: registration refused for good (``code`` is a :class:`Reason`)."""

    TYPE: ClassVar[MessageType] = MessageType.ADVERTISE_ABORT
    code: int
    text: str

    def __post_init__(self) -> None:
        _check_reason(self.code, self.text, "AdvertiseAbort")

    def payload(self) -> bytes:
        return _reason_payload(self.code, self.text)

    @classmethod
    def from_payload(cls, p: bytes) -> AdvertiseAbort:
        return cls(*_reason_fields(p, "AdvertiseAbort"))

    @classmethod
    def decode(cls, frame: bytes) -> AdvertiseAbort:
        return _decode_as(cls, frame)


@dataclass(frozen=True, slots=True)
class AdvertiseRetry(_Codec):
    """mediator -> peer: registration refused for now; the peer may advertise again."""

    TYPE: ClassVar[MessageType] = MessageType.ADVERTISE_RETRY
    code: int
    text: str

    def __post_init__(self) -> None:
        _check_reason(self.code, self.text, "AdvertiseRetry")

    def payload(self) -> bytes:
        return _reason_payload(self.code, self.text)

    @classmethod
    def from_payload(cls, p: bytes) -> AdvertiseRetry:
        return cls(*_reason_fields(p, "AdvertiseRetry"))

    @classmethod
    def decode(cls, frame: bytes) -> AdvertiseRetry:
        return _decode_as(cls, frame)


@dataclass(frozen=True, slots=True)
class PeerDisconnect(_Codec):
    """mediator -> later registrant (the Peer): both observed addresses; go hole-punch.

    ``pairing_id`` is fresh per pairing and identical in the Client's PeerIdentification: both
    peers bind it into the Noise prologue, so no handshake message of another pairing (of the same
    two keys, or of others) is of any use in this one."""

    TYPE: ClassVar[MessageType] = MessageType.PEER_DISCONNECT
    pairing_id: bytes
    peer: Address
    client: Address
    client_local: Address | None = None
    extensions: Extensions = ()

    def __post_init__(self) -> None:
        local = self.client_local
        if self.extensions != ():
            _check_extensions(self.extensions, "PeerDisconnect")
        if (
            type(self.pairing_id) is bytes
            and len(self.pairing_id) == PAIRING_ID_SIZE
            and type(self.peer) is Address
            and type(self.client) is Address
            and (local is None or type(local) is Address)
        ):
            return  # the common case, in one test (the mediator builds one per pairing)
        _check_bytes(self.pairing_id, PAIRING_ID_SIZE, "pairing_id", "PeerDisconnect")
        _check_addr(self.peer, False, "peer", "PeerDisconnect")
        _check_addr(self.client, False, "client", "PeerDisconnect")
        _check_addr(local, True, "client_local", "PeerDisconnect")

    def payload(self) -> bytes:
        return (
            self.pairing_id
            + _address_bytes(self.peer)
            + _address_bytes(self.client)
            + _address_bytes(self.client_local)
            + _extensions_bytes(self.extensions)
        )

    @property
    def candidates(self) -> tuple[Address, ...]:
        """The Client's other local addresses (the CANDIDATES extension), if any."""
        return _candidates_of(self.extensions)

    @property
    def dial_delay(self) -> float | None:
        """Seconds after which the Mediator asks the Peer to dial (DIAL_DELAY), if it says."""
        for kind, value in self.extensions:
            if kind == ExtensionType.DIAL_DELAY:
                return int.from_bytes(value, "big") / 1000
        return None

    @classmethod
    def from_payload(cls, p: bytes) -> PeerDisconnect:
        if len(p) < PAIRING_ID_SIZE:  # (then two required addresses, an optional one)
            raise ProtocolError(
                f"PeerDisconnect: truncated payload ({len(p)} bytes, at least "
                f"{PAIRING_ID_SIZE + 15})"
            )
        peer, off = _take_address(p, PAIRING_ID_SIZE, False, "peer")
        client, off = _take_address(p, off, False, "client")
        client_local, off = _take_address(p, off, True, "client_local")
        extensions = _take_extensions(p, off, "PeerDisconnect")
        assert peer is not None and client is not None
        return cls(p[:PAIRING_ID_SIZE], peer, client, client_local, extensions)

    @classmethod
    def decode(cls, frame: bytes) -> PeerDisconnect:
        return _decode_as(cls, frame)


@dataclass(frozen=True, slots=True)
class PeerIdentification(_Codec):
    """mediator -> earlier registrant (the Client): the Peer's observed (and local) address and
    the pairing id (see :class:`PeerDisconnect`)."""

    TYPE: ClassVar[MessageType] = MessageType.PEER_IDENTIFICATION
    version: int
    pairing_id: bytes
    peer: Address
    peer_local: Address | None = None
    extensions: Extensions = ()

    def __post_init__(self) -> None:
        local = self.peer_local
        if self.extensions != ():
            _check_extensions(self.extensions, "PeerIdentification")
        if (
            type(self.version) is int
            and 0 <= self.version <= 255
            and type(self.pairing_id) is bytes
            and len(self.pairing_id) == PAIRING_ID_SIZE
            and type(self.peer) is Address
            and (local is None or type(local) is Address)
        ):
            return  # the common case, in one test (the mediator builds one per pairing)
        _check_u8(self.version, "version", "PeerIdentification")
        _check_bytes(self.pairing_id, PAIRING_ID_SIZE, "pairing_id", "PeerIdentification")
        _check_addr(self.peer, False, "peer", "PeerIdentification")
        _check_addr(local, True, "peer_local", "PeerIdentification")

    def payload(self) -> bytes:
        return (
            bytes((self.version,))
            + self.pairing_id
            + _address_bytes(self.peer)
            + _address_bytes(self.peer_local)
            + _extensions_bytes(self.extensions)
        )

    @property
    def candidates(self) -> tuple[Address, ...]:
        """The Peer's other local addresses (the CANDIDATES extension), if any."""
        return _candidates_of(self.extensions)

    @classmethod
    def from_payload(cls, p: bytes) -> PeerIdentification:
        if len(p) < 1 + PAIRING_ID_SIZE:  # (then a required address, an optional one)
            raise ProtocolError(
                f"PeerIdentification: truncated payload ({len(p)} bytes, at least "
                f"{1 + PAIRING_ID_SIZE + 8})"
            )
        peer, off = _take_address(p, 1 + PAIRING_ID_SIZE, False, "peer")
        peer_local, off = _take_address(p, off, True, "peer_local")
        extensions = _take_extensions(p, off, "PeerIdentification")
        assert peer is not None
        return cls(p[0], p[1 : 1 + PAIRING_ID_SIZE], peer, peer_local, extensions)

    @classmethod
    def decode(cls, frame: bytes) -> PeerIdentification:
        return _decode_as(cls, frame)


class _NoiseMessage(_Codec):
    """A Noise handshake message carried whole in one frame (its own bytes are authenticated
    by Noise; the frame only delimits it and names its place in the handshake)."""

    __slots__ = ()
    noise: bytes

    def _check(self) -> None:
        name = type(self).__name__
        if type(self.noise) is not bytes:
            raise ProtocolError(f"{name}.noise must be bytes, got {type(self.noise).__name__}")
        if not NOISE_MESSAGE_MIN <= len(self.noise) <= MAX_PAYLOAD:
            raise ProtocolError(
                f"{name}.noise: a Noise message of {len(self.noise)} bytes "
                f"(expected {NOISE_MESSAGE_MIN}..{MAX_PAYLOAD})"
            )

    def payload(self) -> bytes:
        return self.noise


@dataclass(frozen=True, slots=True)
class HandshakeInit(_NoiseMessage):
    """Client -> Peer, on every direct candidate: Noise KK message 1 (``-> e, es, ss``)."""

    TYPE: ClassVar[MessageType] = MessageType.HANDSHAKE_INIT
    noise: bytes

    def __post_init__(self) -> None:
        self._check()

    @classmethod
    def from_payload(cls, p: bytes) -> HandshakeInit:
        return cls(bytes(p))

    @classmethod
    def decode(cls, frame: bytes) -> HandshakeInit:
        return _decode_as(cls, frame)


@dataclass(frozen=True, slots=True)
class HandshakeResponse(_NoiseMessage):
    """Peer -> Client, on a candidate whose HandshakeInit was valid: Noise KK message 2
    (``<- e, ee, se``)."""

    TYPE: ClassVar[MessageType] = MessageType.HANDSHAKE_RESPONSE
    noise: bytes

    def __post_init__(self) -> None:
        self._check()

    @classmethod
    def from_payload(cls, p: bytes) -> HandshakeResponse:
        return cls(bytes(p))

    @classmethod
    def decode(cls, frame: bytes) -> HandshakeResponse:
        return _decode_as(cls, frame)


@dataclass(frozen=True, slots=True)
class Ping(_Codec):
    """advertiser -> Mediator while it waits (keepalive): "I am alive, answer ``token``; my next
    Ping follows within ``interval_ms``". Keeps the NAT binding of the Mediator connection warm
    and lets both ends notice a dead other end (spec/mediator.md section 4.1)."""

    TYPE: ClassVar[MessageType] = MessageType.PING
    token: int
    interval_ms: int

    def __post_init__(self) -> None:
        _check_u32(self.token, "token", "Ping")
        if (
            not isinstance(self.interval_ms, int)
            or isinstance(self.interval_ms, bool)
            or not MIN_KEEPALIVE_MS <= self.interval_ms <= MAX_KEEPALIVE_MS
        ):
            raise ProtocolError(
                f"Ping.interval_ms must be {MIN_KEEPALIVE_MS}..{MAX_KEEPALIVE_MS}, "
                f"got {self.interval_ms!r}"
            )

    def payload(self) -> bytes:
        return _U32.pack(self.token) + _U32.pack(self.interval_ms)

    @classmethod
    def from_payload(cls, p: bytes) -> Ping:
        _fixed(p, (4, 4), "Ping")
        return cls(_U32.unpack_from(p, 0)[0], _U32.unpack_from(p, 4)[0])

    @classmethod
    def decode(cls, frame: bytes) -> Ping:
        return _decode_as(cls, frame)


@dataclass(frozen=True, slots=True)
class Pong(_Codec):
    """Mediator -> advertiser: the answer to the Ping with the same ``token``."""

    TYPE: ClassVar[MessageType] = MessageType.PONG
    token: int

    def __post_init__(self) -> None:
        _check_u32(self.token, "token", "Pong")

    def payload(self) -> bytes:
        return _U32.pack(self.token)

    @classmethod
    def from_payload(cls, p: bytes) -> Pong:
        _fixed(p, (4,), "Pong")
        return cls(_U32.unpack_from(p, 0)[0])

    @classmethod
    def decode(cls, frame: bytes) -> Pong:
        return _decode_as(cls, frame)


@dataclass(frozen=True, slots=True)
class Status(_Codec):
    """peer -> Mediator, only in a coordinated pairing (spec/protocol.md section 4.11): the
    Peer's PUNCHING confirms PeerDisconnect (instead of a close); DIRECT, RELAY or GAVE_UP is
    the last frame of either side, sent when it leaves the punch, before it closes."""

    TYPE: ClassVar[MessageType] = MessageType.STATUS
    status: int

    def __post_init__(self) -> None:
        if type(self.status) not in (int, StatusCode) or self.status not in _STATUSES:
            raise ProtocolError(
                "Status.status must be 1..4 (PUNCHING, DIRECT, RELAY, GAVE_UP), "
                f"got {self.status!r}"
            )

    def payload(self) -> bytes:
        return bytes((self.status,))

    @classmethod
    def from_payload(cls, p: bytes) -> Status:
        _fixed(p, (1,), "Status")
        return cls(_STATUSES.get(p[0], p[0]))

    @classmethod
    def decode(cls, frame: bytes) -> Status:
        return _decode_as(cls, frame)


_STATUSES: dict[int, StatusCode] = {int(s): s for s in StatusCode}


Message = Union[  # noqa: UP007  (Union[...] reads better than nine `|` in a runtime alias)
    Advertise,
    AdvertiseChallenge,
    AdvertiseResponse,
    AdvertiseAbort,
    AdvertiseRetry,
    PeerDisconnect,
    PeerIdentification,
    HandshakeInit,
    HandshakeResponse,
    Ping,
    Pong,
    Status,
]

MESSAGE_CLASSES: dict[MessageType, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Advertise,
        AdvertiseChallenge,
        AdvertiseResponse,
        AdvertiseAbort,
        AdvertiseRetry,
        PeerDisconnect,
        PeerIdentification,
        HandshakeInit,
        HandshakeResponse,
        Ping,
        Pong,
        Status,
    )
}
"""Message class per type."""

_FROM_PAYLOAD: dict[int, Any] = {int(t): k.from_payload for t, k in MESSAGE_CLASSES.items()}

# --------------------------------------------------------------------------------------------
# Frame-level encode/decode (fast path)
# --------------------------------------------------------------------------------------------


def _check_header(buf: bytes | bytearray, off: int) -> tuple[int, int]:
    """Validate the 6 header bytes at ``off``; returns (type, payload length)."""
    if buf[off] != 0x50 or buf[off + 1] != 0x32:
        raise ProtocolError(f"bad magic {bytes(buf[off : off + 2])!r} (expected b'P2')")
    version = buf[off + 2]
    if version != PROTOCOL_VERSION:
        raise UnsupportedVersion(
            f"frame has protocol version {version}, this implementation speaks {PROTOCOL_VERSION}"
        )
    mtype = buf[off + 3]
    if mtype not in _FROM_PAYLOAD:
        raise ProtocolError(f"unknown message type {mtype}")
    length = (buf[off + 4] << 8) | buf[off + 5]
    if length > MAX_PAYLOAD:
        raise ProtocolError(f"payload length {length} exceeds the maximum of {MAX_PAYLOAD}")
    return mtype, length


def _check_partial_header(buf: bytes | bytearray, off: int, avail: int) -> None:
    """Check the first ``avail`` (< 6) header bytes, so that garbage is rejected at once rather
    than after the peer has sent a whole header (or never, if it stops)."""
    padded = bytes(buf[off : off + avail]) + b"\x00" * (HEADER_SIZE - avail)
    if avail < 3:
        if padded[0] != 0x50 or (avail == 2 and padded[1] != 0x32):
            raise ProtocolError(f"bad magic {padded[:avail]!r} (expected b'P2')")
        return
    if avail == 3:
        padded = padded[:3] + bytes((MessageType.ADVERTISE,)) + b"\x00\x00"
    # The length is never judged early: its two bytes are not all there yet (it is 0 here).
    _check_header(padded[:4] + b"\x00\x00", 0)


def encode(msg: Message) -> bytes:
    """Encode any message as one whole frame."""
    payload = msg.payload()
    if len(payload) > MAX_PAYLOAD:  # cannot happen with the current fields; guards extensions
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return _HDR.pack(MAGIC, PROTOCOL_VERSION, msg.TYPE, len(payload)) + payload


def decode(frame: bytes) -> Message:
    """Decode exactly one whole frame (no bytes missing, none left over)."""
    frame = bytes(frame)
    n = len(frame)
    if n >= HEADER_SIZE and frame[0] == 0x50 and frame[1] == 0x32 and frame[2] == PROTOCOL_VERSION:
        # A well-formed frame (the common case) in one pass; anything else takes the checks
        # below, in their order, for the first failing check's error.
        from_payload = _FROM_PAYLOAD.get(frame[3])
        length = (frame[4] << 8) | frame[5]
        if from_payload is not None and length <= MAX_PAYLOAD and n == HEADER_SIZE + length:
            fast: Message = from_payload(frame[HEADER_SIZE:])
            return fast
    if n < HEADER_SIZE:
        raise ProtocolError(f"truncated frame: {n} bytes, the header alone is {HEADER_SIZE}")
    mtype, length = _check_header(frame, 0)
    if n != HEADER_SIZE + length:
        if n < HEADER_SIZE + length:
            raise ProtocolError(f"truncated frame: payload has {n - HEADER_SIZE} of {length}")
        raise ProtocolError(f"{n - HEADER_SIZE - length} trailing bytes after the frame")
    msg: Message = _FROM_PAYLOAD[mtype](frame[HEADER_SIZE:])
    return msg


_M = TypeVar("_M")


def _decode_as(cls: type[_M], frame: bytes) -> _M:
    msg = decode(frame)
    if type(msg) is not cls:
        raise ProtocolError(f"expected {cls.__name__}, got {type(msg).__name__}")
    return msg


# --------------------------------------------------------------------------------------------
# The construct path (reference; also benchmarked)
# --------------------------------------------------------------------------------------------


def _addr_from_parsed(parsed: Any, optional: bool, what: str) -> Address | None:
    fam = parsed.family
    if fam == FAMILY_NONE and optional:
        return None
    if fam not in (FAMILY_IPV4, FAMILY_IPV6):
        raise ProtocolError(f"{what} address has unknown family {fam} (expected 4 or 6)")
    host = str(ipaddress.ip_address(parsed.host))
    if parsed.port == 0:
        raise ProtocolError(f"{what} address has port 0")
    return Address(host, parsed.port)


def _ext_from_parsed(parsed: Any, name: str) -> Extensions:
    extensions = tuple((int(item.type), bytes(item.value)) for item in parsed)
    _check_extensions(extensions, name)
    return extensions


def _ext_to_build(extensions: Extensions) -> list[dict[str, Any]]:
    return [{"type": kind, "value": value} for kind, value in extensions]


def _addr_to_build(addr: Address | None) -> dict[str, Any]:
    if addr is None:
        return {"family": FAMILY_NONE, "host": None, "port": None}
    return {"family": addr.family, "host": addr.packed(), "port": addr.port}


def construct_decode(frame: bytes, *, compiled: bool = True) -> Message:
    """Decode one frame with the declared construct layout (slow reference path)."""
    frame = bytes(frame)
    if len(frame) >= HEADER_SIZE:
        _, length = _check_header(frame, 0)  # same header messages and checks as the fast path
        # construct 2.10's compiled Prefixed does not notice a short read, so check here.
        if len(frame) < HEADER_SIZE + length:
            raise ProtocolError(
                f"truncated frame: payload has {len(frame) - HEADER_SIZE} of {length}"
            )
    parser = FRAME_COMPILED if compiled else FRAME
    try:
        parsed = parser.parse(frame)
        # construct 2.10's compiled parsers read Bytes/Prefixed with a bare io.read() and so
        # accept short fields; rebuilding and comparing restores the interpreted strictness.
        rebuilt_ok = not compiled or parser.build(parsed) == frame
    except c.ConstructError as exc:
        raise ProtocolError(f"malformed frame: {exc}") from None
    except Exception as exc:  # compiled parsers can leak plain Python errors on odd input
        raise ProtocolError(f"malformed frame: {exc}") from None
    if not rebuilt_ok:
        raise ProtocolError("malformed frame: a field is shorter than its declared size")
    if parsed.version != PROTOCOL_VERSION:
        raise UnsupportedVersion(f"frame has protocol version {parsed.version}")
    mtype = _TYPES.get(parsed.type)
    if mtype is None:
        raise ProtocolError(f"unknown message type {parsed.type}")
    p = parsed.payload
    name = mtype.name
    if mtype is MessageType.ADVERTISE:
        return Advertise(
            p.version,
            p.our_key,
            p.their_key,
            _addr_from_parsed(p.local, True, "local"),
            _ext_from_parsed(p.extensions, "Advertise"),
        )
    if mtype in (MessageType.ADVERTISE_ABORT, MessageType.ADVERTISE_RETRY):
        raw: bytes = p.reason.text
        if len(raw) > MAX_REASON_TEXT:
            raise ProtocolError(f"{name}: reason text too long")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(f"{name}: reason text is not valid UTF-8") from None
        code = _REASONS.get(p.reason.code, p.reason.code)
        if mtype is MessageType.ADVERTISE_ABORT:
            return AdvertiseAbort(code, text)
        return AdvertiseRetry(code, text)
    if mtype is MessageType.PEER_DISCONNECT:
        peer = _addr_from_parsed(p.peer, False, "peer")
        client = _addr_from_parsed(p.client, False, "client")
        assert peer is not None and client is not None
        return PeerDisconnect(
            p.pairing_id,
            peer,
            client,
            _addr_from_parsed(p.client_local, True, "client_local"),
            _ext_from_parsed(p.extensions, "PeerDisconnect"),
        )
    if mtype is MessageType.PEER_IDENTIFICATION:
        peer = _addr_from_parsed(p.peer, False, "peer")
        assert peer is not None
        return PeerIdentification(
            p.version,
            p.pairing_id,
            peer,
            _addr_from_parsed(p.peer_local, True, "peer_local"),
            _ext_from_parsed(p.extensions, "PeerIdentification"),
        )
    cls = MESSAGE_CLASSES[mtype]
    fields = {k: v for k, v in p.items() if not k.startswith("_")}
    msg: Message = cls(**fields)
    return msg


def construct_encode(msg: Message, *, compiled: bool = True) -> bytes:
    """Encode one message with the declared construct layout (slow reference path)."""
    payload: dict[str, Any]
    if isinstance(msg, Advertise):
        payload = {
            "version": msg.version,
            "our_key": msg.our_key,
            "their_key": msg.their_key,
            "local": _addr_to_build(msg.local),
            "extensions": _ext_to_build(msg.extensions),
        }
    elif isinstance(msg, AdvertiseAbort | AdvertiseRetry):
        payload = {"reason": {"code": msg.code, "text": msg.text.encode("utf-8")}}
    elif isinstance(msg, PeerDisconnect):
        payload = {
            "pairing_id": msg.pairing_id,
            "peer": _addr_to_build(msg.peer),
            "client": _addr_to_build(msg.client),
            "client_local": _addr_to_build(msg.client_local),
            "extensions": _ext_to_build(msg.extensions),
        }
    elif isinstance(msg, PeerIdentification):
        payload = {
            "version": msg.version,
            "pairing_id": msg.pairing_id,
            "peer": _addr_to_build(msg.peer),
            "peer_local": _addr_to_build(msg.peer_local),
            "extensions": _ext_to_build(msg.extensions),
        }
    else:
        payload = {name: getattr(msg, name) for name in msg.__dataclass_fields__}
    builder = FRAME_COMPILED if compiled else FRAME
    data: bytes = builder.build(
        {"version": PROTOCOL_VERSION, "type": int(msg.TYPE), "payload": payload}
    )
    return data


# --------------------------------------------------------------------------------------------
# Streaming decoder
# --------------------------------------------------------------------------------------------


class FrameDecoder:
    """Turn a byte stream cut anywhere into whole messages.

    Memory is bounded: the header is validated as soon as its 6 bytes are in, so a frame that
    announces more than MAX_PAYLOAD is rejected before its payload is buffered, and after each
    ``feed`` at most one incomplete frame (< HEADER_SIZE + MAX_PAYLOAD bytes) is kept.

    The first bad frame raises ProtocolError; the decoder then stays failed and raises the same
    error on every later ``feed`` (a connection with a bad frame must be closed, not resynced).
    Messages that preceded the bad frame in the same ``feed`` call are dropped with it.
    """

    __slots__ = ("_buf", "_error")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held of an incomplete frame."""
        return len(self._buf)

    @property
    def has_partial(self) -> bool:
        """True when bytes of an incomplete frame are pending (EOF now means a cut frame)."""
        return bool(self._buf)

    @property
    def failed(self) -> bool:
        """True after a bad frame; the decoder accepts nothing more."""
        return self._error is not None

    def feed(self, data: bytes) -> list[Message]:
        """Add bytes; return every message completed by them, in order."""
        if self._error is not None:
            raise type(self._error)(self._error.reason, code=self._error.code)
        buf = self._buf
        buf += data
        out: list[Message] = []
        off = 0
        n = len(buf)
        try:
            while True:
                avail = n - off
                if avail < HEADER_SIZE:
                    if avail:
                        _check_partial_header(buf, off, avail)
                    break
                mtype, length = _check_header(buf, off)
                end = off + HEADER_SIZE + length
                if end > n:
                    break
                out.append(_FROM_PAYLOAD[mtype](bytes(buf[off + HEADER_SIZE : end])))
                off = end
        except ProtocolError as exc:
            self._error = exc
            self._buf = bytearray()
            raise
        if off:
            del buf[:off]
        return out
