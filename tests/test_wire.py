"""Wire format: round trips, the streaming decoder under abuse, and every strictness rule."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2psc import wire
from p2psc.errors import ProtocolError, UnsupportedVersion
from p2psc.wire import (
    HEADER_SIZE,
    MAX_PAYLOAD,
    Address,
    Advertise,
    AdvertiseAbort,
    AdvertiseChallenge,
    AdvertiseResponse,
    AdvertiseRetry,
    FrameDecoder,
    HandshakeInit,
    HandshakeResponse,
    Message,
    MessageType,
    PeerDisconnect,
    PeerIdentification,
    Reason,
    construct_decode,
    construct_encode,
    decode,
    encode,
)

# ---------------------------------------------------------------------------- strategies

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
hosts = st.one_of(ipv4, ipv6)
ports = st.integers(1, 65535)
addresses = st.builds(Address, hosts, ports)
opt_addresses = st.one_of(st.none(), addresses)
keys = st.binary(min_size=32, max_size=32)
nonces = st.binary(min_size=32, max_size=32)
sealed = st.binary(min_size=80, max_size=80)
pairing_ids = st.binary(min_size=16, max_size=16)
noise = st.binary(min_size=48, max_size=200)
u8 = st.integers(0, 255)
codes = st.one_of(st.sampled_from(list(Reason)), st.integers(0, 65535))
texts = st.text(max_size=300).filter(lambda t: len(t.encode("utf-8", "surrogatepass")) <= 1024)
texts = texts.filter(lambda t: not any(0xD800 <= ord(ch) <= 0xDFFF for ch in t))

messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Advertise, u8, keys, keys, opt_addresses),
    st.builds(AdvertiseChallenge, sealed),
    st.builds(AdvertiseResponse, nonces),
    st.builds(AdvertiseAbort, codes, texts),
    st.builds(AdvertiseRetry, codes, texts),
    st.builds(PeerDisconnect, pairing_ids, addresses, addresses, opt_addresses),
    st.builds(PeerIdentification, u8, pairing_ids, addresses, opt_addresses),
    st.builds(HandshakeInit, noise),
    st.builds(HandshakeResponse, noise),
)


def header(mtype: int, length: int, version: int = 1, magic: bytes = b"P2") -> bytes:
    return magic + struct.pack(">BBH", version, mtype, length)


def feed_all(data: bytes, cuts: list[int]) -> list[Message]:
    dec = FrameDecoder()
    out: list[Message] = []
    prev = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        out += dec.feed(data[prev:cut])
        prev = cut
    assert not dec.has_partial
    return out


# ---------------------------------------------------------------------------- round trips


@settings(max_examples=400)
@given(messages)
def test_round_trip_every_message(msg: Message) -> None:
    frame = msg.encode()
    assert frame == encode(msg)
    assert frame[:2] == b"P2" and frame[2] == 1 and frame[3] == msg.TYPE
    assert struct.unpack(">H", frame[4:6])[0] == len(frame) - HEADER_SIZE
    assert decode(frame) == msg
    assert type(msg).decode(frame) == msg
    assert FrameDecoder().feed(frame) == [msg]


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_construct_layout_agrees_with_fast_path(msg: Message) -> None:
    frame = msg.encode()
    assert construct_encode(msg) == frame
    assert construct_encode(msg, compiled=False) == frame
    assert construct_decode(frame) == msg
    assert construct_decode(frame, compiled=False) == msg


@settings(max_examples=300)
@given(messages, st.data())
def test_construct_and_fast_path_agree_on_mutations(msg: Message, data: st.DataObject) -> None:
    frame = bytearray(msg.encode())
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(frame) - 1))
        frame[i] = data.draw(u8)
    mutated = bytes(frame)
    try:
        fast: Message | None = decode(mutated)
    except ProtocolError:
        fast = None
    try:
        ref: Message | None = construct_decode(mutated)
    except ProtocolError:
        ref = None
    assert fast == ref


def test_decode_of_each_class_checks_type() -> None:
    frame = HandshakeInit(bytes(48)).encode()
    with pytest.raises(ProtocolError, match="expected HandshakeResponse"):
        HandshakeResponse.decode(frame)


def test_unknown_reason_code_stays_int() -> None:
    msg = decode(AdvertiseAbort(4242, "later").encode())
    assert isinstance(msg, AdvertiseAbort)
    assert msg.code == 4242 and not isinstance(msg.code, Reason)
    known = decode(AdvertiseRetry(5, "busy").encode())
    assert isinstance(known, AdvertiseRetry) and known.code is Reason.BUSY


# ---------------------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("1.2.3.4:5", "1.2.3.4", 5),
        ("[::1]:65535", "::1", 65535),
        ("[2001:DB8:0:0::1]:80", "2001:db8::1", 80),
    ],
)
def test_address_parse(text: str, host: str, port: int) -> None:
    addr = Address.parse(text)
    assert (addr.host, addr.port) == (host, port)
    assert Address.parse(str(addr)) == addr
    assert Address.from_tuple(addr.to_tuple()) == addr


@pytest.mark.parametrize(
    "text",
    [
        "1.2.3.4",
        "1.2.3.4:0",
        "1.2.3.4:65536",
        "::1:5",
        "[::1]5",
        "host:80",
        "1.2.3.4:-1",
        "[fe80::1%eth0]:5",
        "1.2.3.4: 5",
        "[::1]:",
    ],
)
def test_address_parse_rejects(text: str) -> None:
    with pytest.raises(ProtocolError):
        Address.parse(text)


def test_address_from_sockname_tuples() -> None:
    assert Address.from_tuple(("::1", 9, 0, 0)) == Address("::1", 9)
    with pytest.raises(ProtocolError):
        Address.from_tuple(("fe80::1", 9, 0, 3))
    with pytest.raises(ProtocolError):
        Address("1.2.3.4", True)


# ---------------------------------------------------------------------------- strictness rules


def test_bad_magic() -> None:
    frame = bytearray(HandshakeInit(bytes(48)).encode())
    frame[0:2] = b"XX"
    with pytest.raises(ProtocolError, match="magic"):
        decode(bytes(frame))
    with pytest.raises(ProtocolError, match="magic"):
        FrameDecoder().feed(b"Q")  # rejected from its first byte


def test_unsupported_version() -> None:
    with pytest.raises(UnsupportedVersion):
        decode(header(10, 0, version=2))
    with pytest.raises(UnsupportedVersion):
        FrameDecoder().feed(header(10, 0, version=0))


def test_unknown_type() -> None:
    with pytest.raises(ProtocolError, match="unknown message type 20"):
        decode(header(20, 0))


def test_length_above_maximum_rejected_before_payload() -> None:
    dec = FrameDecoder()
    with pytest.raises(ProtocolError, match="exceeds the maximum"):
        dec.feed(header(MessageType.ADVERTISE_ABORT, MAX_PAYLOAD + 1))


def test_truncated_frame() -> None:
    frame = AdvertiseResponse(b"\x01" * 32).encode()
    with pytest.raises(ProtocolError, match="truncated"):
        decode(frame[:-1])
    with pytest.raises(ProtocolError, match="truncated"):
        decode(frame[:3])


def test_trailing_bytes_after_frame() -> None:
    with pytest.raises(ProtocolError, match="trailing"):
        decode(HandshakeInit(bytes(48)).encode() + b"\x00")


def test_trailing_bytes_inside_payload() -> None:
    with pytest.raises(ProtocolError, match="trailing"):
        decode(header(MessageType.ADVERTISE_RESPONSE, 33) + b"\x00" * 33)
    adv = Advertise(1, b"a" * 32, b"b" * 32).encode()
    bad = header(0, len(adv) - HEADER_SIZE + 1) + adv[HEADER_SIZE:] + b"\x00"
    with pytest.raises(ProtocolError, match="trailing"):
        decode(bad)


def test_payload_shorter_than_fields() -> None:
    with pytest.raises(ProtocolError, match="truncated"):
        decode(header(MessageType.PEER_DISCONNECT, 10) + b"\x00" * 10)
    with pytest.raises(ProtocolError):
        decode(header(MessageType.ADVERTISE, 10) + b"\x00" * 10)


def test_port_zero_rejected() -> None:
    payload = (
        bytes(16) + b"\x04\x01\x02\x03\x04\x00\x00" + b"\x04\x01\x02\x03\x04\x00\x01" + b"\x00"
    )
    with pytest.raises(ProtocolError, match="port 0"):
        decode(header(MessageType.PEER_DISCONNECT, len(payload)) + payload)
    with pytest.raises(ProtocolError):
        Address("1.2.3.4", 0)


@pytest.mark.parametrize("family", [0, 1, 5, 7, 255])
def test_bad_address_family(family: int) -> None:
    payload = bytes([1]) + bytes(16) + bytes([family]) + b"\x00" * 6 + b"\x00"
    with pytest.raises(ProtocolError, match="family"):
        decode(header(MessageType.PEER_IDENTIFICATION, len(payload)) + payload)


def test_optional_address_bad_family() -> None:
    base = Advertise(1, b"a" * 32, b"b" * 32).encode()
    frame = base[:-1] + b"\x05"
    with pytest.raises(ProtocolError, match="family"):
        decode(frame)


def test_wrong_key_length_rejected_on_construction() -> None:
    with pytest.raises(ProtocolError, match="our_key"):
        Advertise(1, b"a" * 31, b"b" * 32)
    with pytest.raises(ProtocolError, match="their_key"):
        Advertise(1, b"a" * 32, b"b" * 33)


@pytest.mark.parametrize(
    "build",
    [
        lambda: AdvertiseChallenge(b"\x00" * 79),
        lambda: AdvertiseResponse(b"\x00" * 31),
        lambda: HandshakeInit(b"\x00" * 47),
        lambda: HandshakeResponse(b"\x00" * 4097),
        lambda: HandshakeInit("not bytes"),
        lambda: PeerDisconnect(bytes(15), Address("::1", 1), Address("::1", 2)),
        lambda: PeerIdentification(1, bytes(17), Address("::1", 1)),
        lambda: Advertise(256, b"a" * 32, b"b" * 32),
        lambda: PeerIdentification(-1, bytes(16), Address("::1", 1)),
        lambda: AdvertiseAbort(65536, ""),
        lambda: AdvertiseRetry(1, "x" * 1025),
        lambda: AdvertiseRetry(1, "\ud800"),
    ],
)
def test_invalid_field_values_rejected(build: object) -> None:
    with pytest.raises(ProtocolError):
        build()  # type: ignore[operator]


def test_non_utf8_reason_text() -> None:
    payload = b"\x00\x01\x00\x02\xff\xfe"
    with pytest.raises(ProtocolError, match="UTF-8"):
        decode(header(MessageType.ADVERTISE_ABORT, len(payload)) + payload)


def test_reason_text_too_long() -> None:
    payload = b"\x00\x01" + struct.pack(">H", 1025) + b"a" * 1025
    with pytest.raises(ProtocolError, match="exceeds"):
        decode(header(MessageType.ADVERTISE_RETRY, len(payload)) + payload)


def test_reason_text_length_mismatch() -> None:
    payload = b"\x00\x01\x00\x05abc"
    with pytest.raises(ProtocolError, match="truncated"):
        decode(header(MessageType.ADVERTISE_RETRY, len(payload)) + payload)


# ---------------------------------------------------------------------------- streaming decoder


@settings(max_examples=150)
@given(st.lists(messages, min_size=1, max_size=6), st.data())
def test_stream_cut_at_random_boundaries(msgs: list[Message], data: st.DataObject) -> None:
    stream = b"".join(m.encode() for m in msgs)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    assert feed_all(stream, cuts) == msgs


@settings(max_examples=25)
@given(st.lists(messages, min_size=1, max_size=3))
def test_stream_cut_at_every_boundary(msgs: list[Message]) -> None:
    stream = b"".join(m.encode() for m in msgs)
    for cut in range(len(stream) + 1):
        assert feed_all(stream, [cut]) == msgs
    # byte by byte
    assert feed_all(stream, list(range(len(stream)))) == msgs


@settings(max_examples=500)
@given(st.binary(max_size=300), st.lists(st.integers(1, 50), max_size=10))
def test_decoder_random_bytes_only_protocol_error(blob: bytes, chunks: list[int]) -> None:
    dec = FrameDecoder()
    pos = 0
    try:
        for size in [*chunks, len(blob)]:
            dec.feed(blob[pos : pos + size])
            pos += size
            assert dec.buffered < HEADER_SIZE + MAX_PAYLOAD
    except ProtocolError:
        assert dec.failed
        with pytest.raises(ProtocolError):
            dec.feed(b"")


@settings(max_examples=300)
@given(messages, st.data())
def test_decoder_truncation_and_bit_flips(msg: Message, data: st.DataObject) -> None:
    frame = msg.encode()
    cut = data.draw(st.integers(0, len(frame) - 1))
    dec = FrameDecoder()
    try:
        assert dec.feed(frame[:cut]) == []
        assert dec.has_partial == (cut > 0)
    except ProtocolError:
        pytest.fail("a prefix of a valid frame must not be rejected")
    bit = data.draw(st.integers(0, len(frame) * 8 - 1))
    flipped = bytearray(frame)
    flipped[bit // 8] ^= 1 << (bit % 8)
    dec = FrameDecoder()
    try:
        out = dec.feed(bytes(flipped))
    except ProtocolError:
        return
    # A flip that is accepted must account for every byte: the messages re-encode (encoding is
    # canonical) to a prefix of the input and the rest is a pending partial frame.
    consumed = b"".join(encode(m) for m in out)
    assert bytes(flipped).startswith(consumed)
    assert len(consumed) + dec.buffered == len(flipped)


@pytest.mark.parametrize(
    ("prefix", "error"),
    [
        (b"X", ProtocolError),
        (b"PX", ProtocolError),
        (b"P2\x02", UnsupportedVersion),
        (b"P2\x01\x14", ProtocolError),
        (b"P2\x01\xff\x00", ProtocolError),
    ],
)
def test_decoder_rejects_a_bad_header_before_it_is_complete(
    prefix: bytes, error: type[ProtocolError]
) -> None:
    with pytest.raises(error):
        FrameDecoder().feed(prefix)


@pytest.mark.parametrize("prefix", [b"P", b"P2", b"P2\x01", b"P2\x01\x08", b"P2\x01\x03\x10"])
def test_decoder_waits_on_a_valid_partial_header(prefix: bytes) -> None:
    dec = FrameDecoder()
    assert dec.feed(prefix) == [] and dec.has_partial and dec.buffered == len(prefix)


def test_decoder_fails_permanently() -> None:
    dec = FrameDecoder()
    with pytest.raises(ProtocolError):
        dec.feed(b"XX")
    with pytest.raises(ProtocolError):
        dec.feed(HandshakeInit(bytes(48)).encode())


def test_decoder_memory_bound() -> None:
    dec = FrameDecoder()
    big = AdvertiseAbort(1, "x" * 1024).encode()
    assert dec.feed(big[:-1]) == []
    assert dec.buffered == len(big) - 1
    assert dec.feed(big[-1:]) == [decode(big)]
    assert dec.buffered == 0 and not dec.has_partial


def test_module_exports() -> None:
    assert wire.PROTOCOL_VERSION == 1 and wire.MAGIC == b"P2" and wire.HEADER_SIZE == 6


def test_decoder_flood_in_one_chunk_keeps_nothing_buffered() -> None:
    msgs = [AdvertiseResponse(bytes([i % 256]) * 32) for i in range(5000)]
    dec = FrameDecoder()
    assert dec.feed(b"".join(m.encode() for m in msgs)) == msgs
    assert dec.buffered == 0


def test_decoder_buffer_never_exceeds_one_frame() -> None:
    frame = AdvertiseRetry(Reason.BUSY, "z" * 1024).encode()
    dec = FrameDecoder()
    seen = 0
    for _ in range(3):
        for i in range(0, len(frame), 100):
            seen += len(dec.feed(frame[i : i + 100]))
            assert dec.buffered < len(frame)
    assert seen == 3 and dec.buffered == 0


def test_decoder_delivers_earlier_feeds_before_a_bad_frame() -> None:
    good = HandshakeInit(bytes(48)).encode()
    dec = FrameDecoder()
    assert dec.feed(good) == [HandshakeInit(bytes(48))]
    with pytest.raises(ProtocolError):
        dec.feed(b"\x00" * 6)
    assert dec.failed and dec.buffered == 0
