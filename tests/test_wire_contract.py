"""The wire module against the tables of spec/protocol.md, and the validation of every field.

The numbers (message types, reason codes, limits) are read from the spec's own tables, so a
constant changed in the code, or a row added to the spec without the code (or the reverse),
fails here; a new message type or reason is one new row in the spec and nothing here. Field
checks are generic over the message dataclasses: every address, byte-string, integer and text
field of every message (from the vector file, one valid instance per type) is tried with values
the spec rejects, so a message that gains a field is covered without a new test.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from p2psc import keys, wire
from p2psc.errors import ProtocolError, UnsupportedVersion
from p2psc.wire import Address, Message, construct_decode, decode

ROOT = Path(__file__).resolve().parents[1]
SPEC = (ROOT / "spec" / "protocol.md").read_text(encoding="utf-8")
VECTORS = json.loads((ROOT / "tests" / "vectors" / "frames.json").read_text(encoding="utf-8"))
SAMPLES: list[Message] = [decode(bytes.fromhex(v["hex"])) for v in VECTORS["frames"]]
"""One or more valid instances of every message type (the spec's own vectors)."""


def spec_table(*columns: str) -> list[dict[str, str]]:
    """The rows of the one table in spec/protocol.md whose header is exactly ``columns``."""
    header = "| " + " | ".join(columns) + " |"
    tables = SPEC.split(header + "\n")
    assert len(tables) == 2, f"expected exactly one table {header!r} in spec/protocol.md"
    rows = []
    for line in tables[1].splitlines()[1:]:  # [0] is the |---| line
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows.append(dict(zip(columns, cells, strict=True)))
    assert rows
    return rows


def upper_snake(camel: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).upper()


MESSAGES = spec_table("type", "message", "direction", "payload size")
REASONS = spec_table("code", "name", "meaning")


def test_message_types_are_the_spec_table() -> None:
    """Type numbers, enum names and classes are the rows of spec/protocol.md section 4."""
    spec = {int(row["type"]): row["message"] for row in MESSAGES}
    code = {int(t): cls.__name__ for t, cls in wire.MESSAGE_CLASSES.items()}
    assert code == spec
    assert {int(t): t.name for t in wire.MessageType} == {
        n: upper_snake(name) for n, name in spec.items()
    }
    for number, name in spec.items():
        cls = getattr(wire, name)
        assert number == cls.TYPE == wire.MessageType[upper_snake(name)]
        assert name in wire.__all__


def test_reason_codes_are_the_spec_table() -> None:
    """Every reason code of spec/protocol.md section 5, and no other, with its number."""
    assert {r.name: int(r) for r in wire.Reason} == {
        row["name"]: int(row["code"]) for row in REASONS
    }


def _one(pattern: str) -> str:
    found = re.findall(pattern, SPEC)
    assert len(found) == 1, (pattern, found)
    return str(found[0])


def _numbers(text: str) -> tuple[int, ...]:
    """``0..8, 11, 12`` -> (0, 1, ..., 8, 11, 12)."""
    out: list[int] = []
    for part in text.split(","):
        low, _, high = part.strip().partition("..")
        out += range(int(low), int(high or low) + 1)
    return tuple(out)


LIMITS: list[tuple[str, object, Callable[[], object]]] = [
    # (what, value in the code, how spec/protocol.md states it)
    ("header size", wire.HEADER_SIZE, lambda: int(_one(r"\| 6 \| length \| payload \|")[2])),
    ("magic", wire.MAGIC, lambda: _one(r"the ASCII bytes `(\w\w)`").encode("ascii")),
    (
        "version",
        wire.PROTOCOL_VERSION,
        lambda: int(_one(r"protocol version of this frame: \*\*(\d+)")),
    ),
    ("max payload", wire.MAX_PAYLOAD, lambda: int(_one(r"at most (\d+) bytes \(`MAX_PAYLOAD`\)"))),
    (
        "max reason text",
        wire.MAX_REASON_TEXT,
        lambda: int(_one(r"\| reason text \| at most (\d+) bytes")),
    ),
    (
        "key, nonce, sealed nonce sizes",
        (keys.KEY_SIZE, keys.NONCE_SIZE, keys.SEALED_NONCE_SIZE),
        lambda: tuple(map(int, re.findall(r"\d+", _one(r"\| exactly (\d+ / \d+ / \d+) bytes")))),
    ),
    (
        "address families",
        (wire.FAMILY_IPV4, wire.FAMILY_IPV6),
        lambda: tuple(map(int, re.findall(r"\*\*(\d)\*\*", _one(r"`u8`: (.*\(IPv6\))")))),
    ),
    (
        "absent optional address",
        wire.FAMILY_NONE,
        lambda: int(_one(r"the single byte \*\*(\d+)\*\*")),
    ),
    (
        "message types",
        tuple(sorted(int(t) for t in wire.MessageType)),
        lambda: _numbers(_one(r"\| message types \| ([0-9., ]+) \|")),
    ),
]


@pytest.mark.parametrize(("what", "code", "spec"), LIMITS, ids=[row[0] for row in LIMITS])
def test_limits_are_the_spec_values(what: str, code: object, spec: Callable[[], object]) -> None:
    assert code == spec(), what


def test_unknown_types_are_those_after_the_last() -> None:
    """The header check refuses exactly the types the spec does not define."""
    defined = {int(row["type"]) for row in MESSAGES}
    for mtype in range(256):
        frame = b"P2\x01" + bytes([mtype]) + b"\x00\x00"
        if mtype in defined:
            continue
        with pytest.raises(ProtocolError, match=f"^unknown message type {mtype}$"):
            decode(frame)


def _size_rule(cell: str) -> Callable[[Message], set[int] | range]:
    """The spec's "payload size" cell as a function of the message: ``80``, ``66, 72 or 84``,
    ``15..57`` or ``4 + text_length``."""
    if "text_length" in cell:
        base = int(cell.split("+")[0])
        return lambda m: {base + len(m.text.encode("utf-8"))}  # type: ignore[union-attr]
    if ".." in cell:
        low, high = map(int, cell.split(".."))
        return lambda m: range(low, high + 1)
    sizes = {int(n) for n in re.findall(r"\d+", cell)}
    return lambda m: sizes


SIZE_RULES = {row["message"]: _size_rule(row["payload size"]) for row in MESSAGES}
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
addresses = st.builds(Address, st.one_of(ipv4, ipv6), st.integers(1, 65535))


def _address_fields(cls: type) -> dict[str, bool]:
    """Address fields of a message class -> whether the field is optional."""
    return {
        f.name: "None" in str(f.type) for f in dataclasses.fields(cls) if "Address" in str(f.type)
    }


@st.composite
def varied(draw: st.DrawFn) -> Message:
    """A vector message with its address fields and reason text redrawn."""
    msg = draw(st.sampled_from(SAMPLES))
    changes: dict[str, Any] = {}
    for name, optional in _address_fields(type(msg)).items():
        changes[name] = draw(st.one_of(st.none(), addresses) if optional else addresses)
    if isinstance(msg, wire.AdvertiseAbort | wire.AdvertiseRetry):
        changes["text"] = draw(st.text(st.characters(codec="utf-8"), max_size=40))
    return dataclasses.replace(msg, **changes)


@given(varied())
def test_payload_sizes_are_the_spec_table(msg: Message) -> None:
    assert len(msg.payload()) in SIZE_RULES[type(msg).__name__](msg)
    assert decode(msg.encode()) == msg


# ------------------------------------------------------------------------ field validation

JUNK_ADDRESSES: list[object] = [
    "junk",
    "192.0.2.1:80",
    ("192.0.2.1", 80),
    7,
    b"\x04\xc0\x00\x02\x01",
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_address_field_refuses_what_is_not_an_address(msg: Message) -> None:
    for name, optional in _address_fields(type(msg)).items():
        for junk in JUNK_ADDRESSES:
            got = type(junk).__name__
            with pytest.raises(
                ProtocolError,
                match=rf"^{type(msg).__name__}\.{name} must be an Address, got {got}$",
            ):
                dataclasses.replace(msg, **{name: junk})
        if optional:
            assert getattr(dataclasses.replace(msg, **{name: None}), name) is None
        else:
            with pytest.raises(
                ProtocolError,
                match=rf"^{type(msg).__name__}\.{name} must be an Address, got NoneType$",
            ):
                dataclasses.replace(msg, **{name: None})


def test_advertise_local_is_checked() -> None:
    """The case issue 18 found: Advertise(local="junk") was accepted when the check was gone."""
    (advertise,) = [m for m in SAMPLES if isinstance(m, wire.Advertise)][:1]
    with pytest.raises(ProtocolError, match=r"^Advertise\.local must be an Address, got str$"):
        wire.Advertise(advertise.version, advertise.our_key, advertise.their_key, "junk")  # type: ignore[arg-type]


INT_LIMITS = {
    "version": (0, 255),
    "code": (0, 65535),
    "token": (0, 2**32 - 1),
    "interval_ms": (wire.MIN_KEEPALIVE_MS, wire.MAX_KEEPALIVE_MS),
    "status": (1, 4),
}
"""Range of each integer field by name (u8 / u16 / u32, or narrower)."""
VARIABLE_BYTES = {"noise": (wire.NOISE_MESSAGE_MIN, wire.MAX_PAYLOAD)}
"""Bytes fields of variable length by name: (shortest, longest) accepted."""


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_field_refuses_values_outside_its_encoding(msg: Message) -> None:
    cls = type(msg)
    for f in dataclasses.fields(cls):
        value = getattr(msg, f.name)
        kind = str(f.type)
        bad: list[object] = []
        if kind == "bytes" and f.name in VARIABLE_BYTES:
            low, high = VARIABLE_BYTES[f.name]
            for good in (bytes(low), bytes(high)):
                assert getattr(dataclasses.replace(msg, **{f.name: good}), f.name) == good
            bad = [bytes(low - 1), bytes(high + 1), bytearray(value), value.hex()]
        elif kind == "bytes":
            bad = [value + b"\x00", value[:-1], bytearray(value), value.hex()]
        elif kind == "int":
            low, top = INT_LIMITS[f.name]
            for good in (low, top):
                assert getattr(dataclasses.replace(msg, **{f.name: good}), f.name) == good
            bad = [low - 1, top + 1, True, float(value), str(value)]
        elif kind == "str":
            limit = wire.MAX_REASON_TEXT
            for good in ("", "é" * (limit // 2), "x" * limit):
                assert dataclasses.replace(msg, **{f.name: good}).payload().endswith(good.encode())
            bad = ["x" * (limit + 1), "é" * (limit // 2) + "x", "\ud800", b"text", None]
        for value in bad:
            with pytest.raises(ProtocolError, match=rf"^{cls.__name__}\.{f.name}"):
                dataclasses.replace(msg, **{f.name: value})


@pytest.mark.parametrize(
    "msg", [*SAMPLES, Address("192.0.2.1", 80)], ids=lambda m: type(m).__name__
)
def test_values_are_frozen_hashable_and_slotted(msg: object) -> None:
    """Messages and addresses are values: dict keys, set members, shared between sessions."""
    twin = dataclasses.replace(msg)  # type: ignore[type-var]
    assert twin == msg and hash(twin) == hash(msg) and twin is not msg
    assert len({msg, twin}) == 1
    assert not hasattr(msg, "__dict__")  # slots: a waiting registration keeps some of these
    for f in dataclasses.fields(msg):  # type: ignore[arg-type]
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(msg, f.name, getattr(msg, f.name))


# ------------------------------------------------------------------------ addresses


def _spellings(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[str]:
    text = str(ip)
    if ip.version == 4:
        return [text]
    return [text, text.upper(), ip.exploded, ip.exploded.upper()]


@given(st.ip_addresses(), st.integers(1, 65535), st.integers(0, 3))
@example(ipaddress.ip_address("192.0.2.1"), 1, 0)  # the lowest port
@example(ipaddress.ip_address("::ffff:192.0.2.1"), 65535, 1)  # IPv4-mapped stays family 6
def test_from_tuple_canonicalises_any_spelling(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int, spelling: int
) -> None:
    """Socket tuples of 2 or 4 items, canonical text or not, give the RFC 5952 text of the
    address (what inet_ntop prints, so decode(encode(a)) == a)."""
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    canonical = socket.inet_ntop(family, ip.packed)
    spellings = _spellings(ip)
    text = spellings[spelling % len(spellings)]
    sockaddr: tuple[Any, ...] = (text, port) if ip.version == 4 else (text, port, 0, 0)
    for form in (sockaddr, sockaddr[:2]):
        address = Address.from_tuple(form)
        assert (address.host, address.port) == (canonical, port)
        assert address == Address(text, port) == Address.parse(str(address))
        assert address.family == (6 if ip.version == 6 else 4)
        assert decode(wire.PeerIdentification(1, bytes(16), address).encode()).peer == address  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("sockaddr", "reason"),
    [
        (("192.0.2.1",), "not a socket address"),
        ((), "not a socket address"),
        (("192.0.2.1", "80"), "not a socket address"),
        (("192.0.2.1", 0), "port 0 is outside 1..65535"),
        (("192.0.2.1", 65536), "port 65536 is outside 1..65535"),
        (("192.0.2.1", True), "port must be an integer, got True"),
        (("fe80::1", 80, 0, 2), "IPv6 scope ids cannot be carried on the wire"),
        (("fe80::1%2", 80), "IPv6 scope ids cannot be carried on the wire"),
        (("localhost", 80), "not an IPv4 or IPv6 address: 'localhost'"),
        (("01.2.3.4", 80), "not an IPv4 or IPv6 address"),
        ((b"192.0.2.1", 80), "not an IPv4 or IPv6 address"),
    ],
)
def test_from_tuple_refuses(sockaddr: tuple[Any, ...], reason: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        Address.from_tuple(sockaddr)
    assert reason in caught.value.reason


# ------------------------------------------------------------------------ both decoders


def _address_frames() -> list[Any]:
    """(label, frame, optional) for every address of every vector with its family replaced by
    one the spec rejects there; built with the declared layout, so the layout may change."""
    out = []
    for vector in VECTORS["frames"]:
        frame = bytes.fromhex(vector["hex"])
        msg = decode(frame)
        for name, optional in _address_fields(type(msg)).items():
            for family in (5, 255) if optional else (0, 5, 255):
                parsed = wire.FRAME.parse(frame)
                field = parsed.payload[name]
                field.family, field.host = family, None
                field.port = 1 if family or not optional else None
                label = f"{vector['name']}.{name}={family}"
                out.append(pytest.param(label, wire.FRAME.build(parsed), optional, id=label))
    return out


@pytest.mark.parametrize(("label", "frame", "optional"), _address_frames())
def test_both_decoders_refuse_a_bad_address_family(
    label: str, frame: bytes, optional: bool
) -> None:
    """A required address with family 0 (absent) or any family but 4/6 is a ProtocolError on the
    fast path and on the construct path alike, with the same reason (never an AssertionError)."""
    family = int(label.rsplit("=", 1)[1])
    with pytest.raises(ProtocolError) as fast:
        decode(frame)
    assert f"address has unknown family {family} (expected 4 or 6)" in fast.value.reason
    for compiled in (True, False):
        with pytest.raises(ProtocolError) as ref:
            construct_decode(frame, compiled=compiled)
        assert ref.value.reason == fast.value.reason
    with pytest.raises(ProtocolError):
        wire.FrameDecoder().feed(frame)


def test_both_decoders_refuse_a_version_other_than_1() -> None:
    frame = bytearray(SAMPLES[0].encode())
    for version in (0, 2, 255):
        frame[2] = version
        with pytest.raises(UnsupportedVersion, match=f"version {version}"):
            decode(bytes(frame))
        with pytest.raises(UnsupportedVersion, match=f"version {version}"):
            construct_decode(bytes(frame))


# ------------------------------------------------------------------------ reasons
# A mediator sends a ProtocolError's reason back in AdvertiseAbort(MALFORMED), and both sides log
# it: the texts are part of what a user sees, so they are checked, exactly where the layout is
# fixed (the header) and by pattern where a message's fields may change.


def _frame(mtype: int, payload: bytes, length: int | None = None) -> bytes:
    size = len(payload) if length is None else length
    return b"P2\x01" + bytes([mtype]) + size.to_bytes(2, "big") + payload


HEADER_REASONS = [
    (b"P3\x01\x00\x00\x00", "bad magic b'P3' (expected b'P2')"),
    (b"Q2\x01\x00\x00\x00", "bad magic b'Q2' (expected b'P2')"),
    (b"P2\x02\x00\x00\x00", "frame has protocol version 2, this implementation speaks 1"),
    (b"P2\x01\xff\x00\x00", "unknown message type 255"),
    (b"P2\x01\x00\x10\x01" + bytes(4097), "payload length 4097 exceeds the maximum of 4096"),
    (b"P2\x01", "truncated frame: 3 bytes, the header alone is 6"),
    (_frame(2, bytes(5), 32), "truncated frame: payload has 5 of 32"),
    (_frame(2, bytes(32)) + b"\x00\x00", "2 trailing bytes after the frame"),
    # A length of 256 or more: the high byte counts 256 (not 512) bytes.
    (wire.AdvertiseAbort(1, "x" * 300).encode() + bytes(256), "256 trailing bytes after the frame"),
]


@pytest.mark.parametrize(("frame", "reason"), HEADER_REASONS, ids=[r for _, r in HEADER_REASONS])
def test_header_reasons(frame: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(frame)
    assert caught.value.reason == reason


def _patterns(msg: Message, cut: int) -> list[str]:
    name = type(msg).__name__
    fields = "|".join(_address_fields(type(msg))) or "-"
    return [
        rf"payload ends (before|inside) the ({fields}) (IPv4 |IPv6 )?address",
        rf"{name}: truncated payload \({cut} bytes, (expected|at least) \d+\)",
        rf"{name}: truncated reason text \({cut - 4} bytes, declared \d+\)",
        rf"{name}: empty payload",
        rf"{name}\.noise: a Noise message of {cut} bytes \(expected \d+\.\.\d+\)",
    ]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_cut_of_a_payload_names_what_is_missing(msg: Message) -> None:
    """A payload cut short anywhere is refused (a frame whose length says so), and the reason
    names the message and the part that is missing."""
    payload = msg.payload()
    extensions = getattr(msg, "extensions", ())
    fixed = len(payload) - sum(2 + len(value) for _, value in extensions)
    for cut in range(len(payload)):
        if cut >= fixed:  # in the extension area: whole items decode, cut ones do not
            try:
                shorter = decode(_frame(msg.TYPE, payload[:cut]))
            except ProtocolError as error:
                assert "extension" in error.reason or "trailing" in error.reason, error.reason
                continue
            assert shorter.payload() == payload[:cut]
            continue
        with pytest.raises(ProtocolError) as caught:
            decode(_frame(msg.TYPE, payload[:cut]))
        reason = caught.value.reason
        assert any(re.fullmatch(p, reason) for p in _patterns(msg, cut)), (cut, reason)
        with pytest.raises(ProtocolError):
            construct_decode(_frame(msg.TYPE, payload[:cut]))


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_a_payload_with_a_byte_too_many_names_the_excess(msg: Message) -> None:
    payload = msg.payload() + b"\x00"
    name = type(msg).__name__
    size = len(payload)
    if any(f.name in VARIABLE_BYTES for f in dataclasses.fields(msg)):
        # a Noise message is the whole payload: one byte more is a longer (later-version)
        # message, and it arrives whole
        longer = decode(_frame(msg.TYPE, payload))
        assert type(longer) is type(msg) and longer.payload() == payload
        return
    with pytest.raises(ProtocolError) as caught:
        decode(_frame(msg.TYPE, payload))
    assert caught.value.reason in (
        f"{name}: 1 trailing bytes after the last field",
        f"{name}: trailing bytes in payload ({size} bytes, expected {size - 1})",
        f"{name}: trailing bytes in reason text ({size - 4} bytes, declared {size - 5})",
        f"{name}: payload ends inside an extension header",  # behind an extension area
    )


@pytest.mark.parametrize("mtype", [3, 4], ids=["AdvertiseAbort", "AdvertiseRetry"])
def test_reason_field_reasons(mtype: int) -> None:
    name = wire.MESSAGE_CLASSES[wire.MessageType(mtype)].__name__
    cases = [
        (b"\x00\x01\x04\x01" + bytes(1025), f"{name}: reason text of 1025 bytes exceeds 1024"),
        (b"\x00\x01\x00\x02\xff\xfe", f"{name}: reason text is not valid UTF-8"),
        (b"\x00\x01\x00\x02\xed\xa0", f"{name}: reason text is not valid UTF-8"),  # a surrogate
    ]
    for payload, reason in cases:
        with pytest.raises(ProtocolError) as caught:
            decode(_frame(mtype, payload))
        assert caught.value.reason == reason
    code = decode(_frame(mtype, b"\xff\xff\x00\x00"))
    assert code.code == 65535 and type(code.code) is int  # type: ignore[union-attr]
    known = decode(_frame(mtype, b"\x00\x09\x00\x00"))
    assert known.code is wire.Reason.SHUTTING_DOWN  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (bytes(65) + b"\x04\x01\x02", "payload ends inside the local IPv4 address"),
        (bytes(65) + b"\x06" + bytes(17), "payload ends inside the local IPv6 address"),
        (bytes(65) + b"\x04\x01\x02\x03\x04\x00\x00", "local address has port 0"),
        (bytes(65) + b"\x06" + bytes(16) + b"\x00\x00", "local address has port 0"),
        (bytes(65) + b"\x05", "local address has unknown family 5 (expected 4 or 6)"),
    ],
)
def test_advertise_local_address_reasons(payload: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(_frame(0, payload))
    assert caught.value.reason == reason


def test_message_construction_reasons() -> None:
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: Address(5, 80), "address host must be text, got int"),  # type: ignore[arg-type]
        (lambda: Address("192.0.2.1", 0), "port 0 is outside 1..65535"),
        (
            lambda: Address("fe80::1%eth0", 1),
            "IPv6 scope ids cannot be carried on the wire: 'fe80::1%eth0'",
        ),
        (lambda: Address.parse("[::1]80"), "expected [IPv6]:port, got '[::1]80'"),
        (lambda: Address.parse("::1:80"), "expected host:port or [IPv6]:port, got '::1:80'"),
        (
            lambda: Address.parse("1.2.3.4:\uff18\uff10"),
            "port must be decimal digits, got '\uff18\uff10'",
        ),
        (
            lambda: wire.AdvertiseAbort(70000, "x"),
            "AdvertiseAbort.code must be an integer 0..65535, got 70000",
        ),
        (lambda: wire.AdvertiseRetry(1, 5), "AdvertiseRetry.text must be text, got int"),  # type: ignore[arg-type]
        (
            lambda: wire.AdvertiseRetry(1, "\udc80"),
            "AdvertiseRetry.text cannot be encoded as UTF-8",
        ),
        (
            lambda: wire.AdvertiseAbort(1, "é" * 513),
            "AdvertiseAbort.text is 1026 bytes of UTF-8, limit 1024",
        ),
        (
            lambda: wire.AdvertiseResponse(bytes(31)),
            "AdvertiseResponse.nonce must be 32 bytes, got 31",
        ),
        (
            lambda: wire.AdvertiseResponse("x" * 32),
            "AdvertiseResponse.nonce must be 32 bytes, got str",
        ),  # type: ignore[arg-type]
        (
            lambda: wire.AdvertiseResponse(bytearray(32)),
            "AdvertiseResponse.nonce must be 32 bytes, got 32",
        ),  # type: ignore[arg-type]
        (
            lambda: wire.AdvertiseResponse.decode(SAMPLES[0].encode()),
            "expected AdvertiseResponse, got Advertise",
        ),
    ]
    for make, reason in cases:
        with pytest.raises(ProtocolError) as caught:
            make()
        assert caught.value.reason == reason


def test_a_failed_stream_decoder_repeats_its_first_error() -> None:
    decoder = wire.FrameDecoder()
    frame = SAMPLES[0].encode()
    assert decoder.feed(frame[:3]) == [] and decoder.has_partial
    assert decoder.buffered == 3 and not decoder.failed
    with pytest.raises(UnsupportedVersion) as first:
        decoder.feed(frame[3:] + b"P2\x07")  # the frame's rest, then a version 7 header
    assert first.value.reason == "frame has protocol version 7, this implementation speaks 1"
    assert decoder.failed and decoder.buffered == 0 and not decoder.has_partial
    for later in (b"", SAMPLES[0].encode()):
        with pytest.raises(UnsupportedVersion) as again:
            decoder.feed(later)
        assert again.value.reason == first.value.reason and again.value.code == first.value.code


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_the_declared_header_and_frame_name_every_field(msg: Message) -> None:
    """HEADER and FRAME (the construct declarations spec/protocol.md section 2 describes)
    parse and build the header fields by the spec's names."""
    frame = msg.encode()
    header = wire.HEADER.parse(frame[: wire.HEADER_SIZE])
    fields = (header.magic, header.version, header.type, header.length)
    assert fields == (b"P2", 1, msg.TYPE, len(frame) - wire.HEADER_SIZE)
    built = wire.HEADER.build({"version": 1, "type": msg.TYPE, "length": header.length})
    assert built == frame[: wire.HEADER_SIZE]
    for parser in (wire.FRAME, wire.FRAME_COMPILED):
        parsed = parser.parse(frame)
        assert (parsed.magic, parsed.version, parsed.type) == (b"P2", 1, msg.TYPE)


def _port_zero_frames() -> list[Any]:
    """Every present address of every vector with its port set to 0 (declared layout)."""
    out = []
    for vector in VECTORS["frames"]:
        frame = bytes.fromhex(vector["hex"])
        for name in _address_fields(type(decode(frame))):
            parsed = wire.FRAME.parse(frame)
            if parsed.payload[name].family == wire.FAMILY_NONE:
                continue
            parsed.payload[name].port = 0
            label = f"{vector['name']}.{name}"
            out.append(pytest.param(name, wire.FRAME.build(parsed), id=label))
    return out


@pytest.mark.parametrize(("name", "frame"), _port_zero_frames())
def test_both_decoders_refuse_port_zero_with_the_same_reason(name: str, frame: bytes) -> None:
    with pytest.raises(ProtocolError) as fast:
        decode(frame)
    assert fast.value.reason == f"{name} address has port 0"
    for compiled in (True, False):
        with pytest.raises(ProtocolError) as ref:
            construct_decode(frame, compiled=compiled)
        assert ref.value.reason == fast.value.reason


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_both_decoders_give_the_same_reason_for_a_cut_frame(msg: Message) -> None:
    frame = msg.encode()
    for cut in range(wire.HEADER_SIZE, len(frame)):
        with pytest.raises(ProtocolError) as fast:
            decode(frame[:cut])
        expected = f"truncated frame: payload has {cut - wire.HEADER_SIZE} of {len(msg.payload())}"
        assert fast.value.reason == expected
        for compiled in (True, False):
            with pytest.raises(ProtocolError) as ref:
                construct_decode(frame[:cut], compiled=compiled)
            assert ref.value.reason == expected


@pytest.mark.parametrize("cls", [wire.AdvertiseAbort, wire.AdvertiseRetry])
def test_the_longest_reason_text_passes_both_paths(cls: type[wire.AdvertiseAbort]) -> None:
    for text in ("x" * wire.MAX_REASON_TEXT, "é" * (wire.MAX_REASON_TEXT // 2)):
        msg = cls(5, text)
        frame = msg.encode()
        assert decode(frame) == msg == wire.construct_decode(frame)
        assert wire.construct_decode(frame, compiled=False) == msg
        assert wire.construct_encode(msg) == frame


def test_a_payload_of_exactly_max_payload_passes_the_header_check() -> None:
    """spec/protocol.md section 2: the length is 0..4096; 4096 itself is not refused early."""
    header = b"P2\x01\x00" + wire.MAX_PAYLOAD.to_bytes(2, "big")
    decoder = wire.FrameDecoder()
    assert decoder.feed(header) == [] and decoder.has_partial and not decoder.failed
    with pytest.raises(ProtocolError) as caught:
        decode(header + bytes(wire.MAX_PAYLOAD))
    assert caught.value.reason.startswith("Advertise: ")  # judged as an Advertise, not by length


def test_the_construct_path_is_strict_in_both_modes() -> None:
    """A field shorter than its declared size inside a frame whose length is right: the
    compiled parser reads it short and the rebuild catches it; the interpreted one refuses it
    itself."""
    frame = _frame(3, b"\x00\x01\x00\x05abc")  # AdvertiseAbort: text of 5 declared, 3 sent
    with pytest.raises(ProtocolError) as compiled:
        construct_decode(frame, compiled=True)
    assert compiled.value.reason == "malformed frame: a field is shorter than its declared size"
    with pytest.raises(ProtocolError) as interpreted:
        construct_decode(frame, compiled=False)
    assert interpreted.value.reason.startswith("malformed frame: ")
    assert interpreted.value.reason != compiled.value.reason
