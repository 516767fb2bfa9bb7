"""INSECURE LEGACY codec (protocol version 0, JSON): encoding, incremental decoding, limits."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2psc.errors import LegacyCoalesced, LegacyOversized, LegacyProtocolError, ProtocolError
from p2psc.legacy import codec
from p2psc.legacy.codec import (
    LEGACY_READ_SIZE,
    MAX_OBJECT_SIZE,
    Advertise,
    AdvertiseAbort,
    AdvertiseChallenge,
    AdvertiseResponse,
    AdvertiseRetry,
    LegacyDecoder,
    LegacyMessage,
    PeerAcknowledgement,
    PeerChallenge,
    PeerChallengeResponse,
    PeerDisconnect,
    PeerIdentification,
    PeerResponse,
    decode,
    encode,
)

text = st.text(max_size=200)
ports = st.integers(1, 65535)
versions = st.integers(0, 255)

messages: st.SearchStrategy[LegacyMessage] = st.one_of(
    st.builds(Advertise, versions, text, text),
    st.builds(AdvertiseChallenge, text),
    st.builds(AdvertiseResponse, text),
    st.builds(AdvertiseAbort, text),
    st.builds(AdvertiseRetry, text),
    st.builds(PeerDisconnect, ports),
    st.builds(PeerIdentification, versions, text, ports),
    st.builds(PeerChallenge, text),
    st.builds(PeerChallengeResponse, text, text),
    st.builds(PeerResponse, text),
    st.just(PeerAcknowledgement()),
)


def feed_chunks(decoder: LegacyDecoder, data: bytes, cuts: list[int]) -> list[LegacyMessage]:
    out: list[LegacyMessage] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        out += decoder.feed(data[start:cut])
        start = cut
    return out


# --- byte-exact examples (the ones spec/legacy.md shows) ------------------------------------


@pytest.mark.parametrize(
    ("message", "wire"),
    [
        (AdvertiseResponse("42"), b'{"type":2,"payload":{"nonce":"42"}}'),
        (AdvertiseAbort("busy"), b'{"type":3,"payload":{"reason":"busy"}}'),
        (PeerDisconnect(40001), b'{"type":5,"payload":{"port":40001}}'),
        (
            PeerIdentification(0, "192.0.2.7", 40001),
            b'{"type":6,"payload":{"version":0,"ip":"192.0.2.7","port":40001}}',
        ),
        (
            PeerChallengeResponse("QUJD", "17"),
            b'{"type":8,"payload":{"encrypted_nonce":"QUJD","decrypted_nonce":"17"}}',
        ),
        (PeerAcknowledgement(), b'{"type":10,"payload":{}}'),
        (
            Advertise(0, "-----BEGIN RSA PUBLIC KEY-----\nAB\n", "x"),
            b'{"type":0,"payload":{"version":0,"our_key":'
            b'"-----BEGIN RSA PUBLIC KEY-----\\nAB\\n","their_key":"x"}}',
        ),
    ],
)
def test_encoding_is_byte_exact(message: LegacyMessage, wire: bytes) -> None:
    assert encode(message) == wire
    assert decode(wire) == message


@given(messages)
def test_roundtrip_every_message(message: LegacyMessage) -> None:
    data = encode(message)
    assert data.isascii()
    assert len(data) % LEGACY_READ_SIZE != 0
    assert decode(data) == message
    assert LegacyDecoder().feed(data) == [message]


def test_encoding_never_has_a_length_multiple_of_the_read_size() -> None:
    base = len(encode(AdvertiseAbort("")))
    message = AdvertiseAbort("r" * (LEGACY_READ_SIZE - base))
    data = encode(message)
    assert len(data) == LEGACY_READ_SIZE + 1  # padded by one space
    assert data.endswith(b" }")
    assert decode(data) == message


def test_split_at_every_boundary() -> None:
    message = PeerChallengeResponse('a"b\\c}{', "12")
    data = b"  \n" + encode(message)
    for cut in range(len(data) + 1):
        decoder = LegacyDecoder()
        first = decoder.feed(data[:cut])
        second = decoder.feed(data[cut:])
        assert first + second == [message], cut
        assert decoder.buffered == 0
        assert not decoder.has_partial


@given(st.lists(messages, min_size=1, max_size=4), st.data())
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_stream_of_messages_in_any_chunking(
    messages_: list[LegacyMessage], data: st.DataObject
) -> None:
    """Messages sent one after the other, each answered before the next: any split works."""
    decoder = LegacyDecoder()
    for message in messages_:
        wire = encode(message)
        cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=6))
        assert feed_chunks(decoder, wire, cuts) == [message]
    assert decoder.buffered == 0


# --- tolerance: what the C++ parser accepts, we accept --------------------------------------


def test_whitespace_key_order_and_extra_fields_are_tolerated() -> None:
    pretty = json.dumps(
        {
            "extra": [1, {"nested": "}"}],
            "payload": {"port": 5, "ip": "10.0.0.1", "version": 0, "more": None},
            "version": 0,
            "type": 6,
        },
        indent=4,
    ).encode()
    decoder = LegacyDecoder()
    assert decoder.feed(b"\r\n\t " + pretty + b"\n\n") == [PeerIdentification(0, "10.0.0.1", 5)]
    # trailing whitespace is kept as the next object's leading whitespace, never an error
    assert decoder.feed(encode(PeerAcknowledgement())) == [PeerAcknowledgement()]


def test_unicode_escapes_and_utf8_in_strings() -> None:
    raw = '{"type":3,"payload":{"reason":"\\u00e9t\u00e9 \\"quoted\\" \\\\"}}'.encode()
    assert LegacyDecoder().feed(raw) == [AdvertiseAbort('\u00e9t\u00e9 "quoted" \\')]


def test_feed_last_returns_application_bytes() -> None:
    decoder = LegacyDecoder()
    wire = encode(PeerAcknowledgement())
    assert decoder.feed_last(wire[:5]) == (None, b"")
    assert decoder.feed_last(wire[5:] + b"\x00hello{") == (PeerAcknowledgement(), b"\x00hello{")


# --- bad input: a typed error, then the decoder stays failed ---------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"P2\x01\x00\x00\x00",  # a version 1 frame
        b"[1,2]",
        b'"text"',
        b"{}",
        b'{"type":1}',
        b'{"type":1,"payload":[]}',
        b'{"type":"1","payload":{"encrypted_nonce":"x"}}',
        b'{"type":true,"payload":{"encrypted_nonce":"x"}}',
        b'{"type":1.0,"payload":{"encrypted_nonce":"x"}}',
        b'{"type":11,"payload":{}}',
        b'{"type":-1,"payload":{}}',
        b'{"type":1,"payload":{}}',
        b'{"type":1,"payload":{"encrypted_nonce":5}}',
        b'{"type":1,"payload":{"encrypted_nonce":null}}',
        b'{"type":5,"payload":{"port":0}}',
        b'{"type":5,"payload":{"port":65536}}',
        b'{"type":5,"payload":{"port":true}}',
        b'{"type":5,"payload":{"port":"80"}}',
        b'{"type":5,"payload":{"port":NaN}}',
        b'{"type":6,"payload":{"version":256,"ip":"a","port":1}}',
        b'{"type":5,"type":5,"payload":{"port":1}}',
        b'{"type":5,"payload":{"port":1,"port":2}}',
        b'{"type":5,"payload":{"port":1}]',
        b'{"type":5 "payload":{"port":1}}',
        b'{"type":3,"payload":{"reason":"\xff\xfe"}}',
        b'{"type":3,"payload":{"reason":"a\x01b"}}',
        b"{" + b"[" * 40 + b"]" * 40 + b"}",
    ],
)
def test_malformed_objects_are_protocol_errors(raw: bytes) -> None:
    decoder = LegacyDecoder()
    with pytest.raises(LegacyProtocolError):
        decoder.feed(raw)
    with pytest.raises(LegacyProtocolError):  # unusable afterwards
        decoder.feed(encode(PeerAcknowledgement()))
    with pytest.raises(ProtocolError):
        decode(raw)


def test_two_objects_in_one_read_are_rejected() -> None:
    one = encode(AdvertiseResponse("1"))
    decoder = LegacyDecoder()
    with pytest.raises(LegacyCoalesced):
        decoder.feed(one + one)
    # also when the first object completes in the same read that starts the second
    decoder = LegacyDecoder()
    assert decoder.feed(one[:7]) == []
    with pytest.raises(LegacyCoalesced):
        decoder.feed(one[7:] + b" {")
    with pytest.raises(LegacyCoalesced):
        decoder.feed(b"")


def test_oversized_object_is_rejected_before_it_ends() -> None:
    decoder = LegacyDecoder()
    head = b'{"type":3,"payload":{"reason":"'
    assert decoder.feed(head) == []
    with pytest.raises(LegacyOversized):
        for _ in range(MAX_OBJECT_SIZE):  # bounded: raises long before the end
            decoder.feed(b"x" * 100)
            assert decoder.buffered <= MAX_OBJECT_SIZE + 100


def test_complete_but_oversized_object_is_rejected() -> None:
    data = encode(AdvertiseAbort("y" * MAX_OBJECT_SIZE))
    with pytest.raises(LegacyOversized):
        LegacyDecoder().feed(data)
    with pytest.raises(LegacyOversized):
        decode(data)


def test_largest_accepted_object() -> None:
    def raw(size: int) -> bytes:
        head, tail = b'{"type":3,"payload":{"reason":"', b'"}}'
        return head + b"z" * (size - len(head) - len(tail)) + tail

    assert len(raw(MAX_OBJECT_SIZE)) == MAX_OBJECT_SIZE
    assert LegacyDecoder().feed(raw(MAX_OBJECT_SIZE)) == [decode(raw(MAX_OBJECT_SIZE))]
    with pytest.raises(LegacyOversized):
        LegacyDecoder().feed(raw(MAX_OBJECT_SIZE + 1))


def test_whitespace_flood_is_bounded() -> None:
    decoder = LegacyDecoder()
    with pytest.raises(LegacyOversized):
        for _ in range(100):
            decoder.feed(b" " * 1000)


@given(st.binary(max_size=3 * MAX_OBJECT_SIZE), st.lists(st.integers(0, 12288), max_size=8))
def test_arbitrary_bytes_never_escape_as_other_errors(raw: bytes, cuts: list[int]) -> None:
    decoder = LegacyDecoder()
    try:
        feed_chunks(decoder, raw, [c for c in cuts if c <= len(raw)])
    except LegacyProtocolError:
        return
    assert decoder.buffered <= MAX_OBJECT_SIZE


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3),
    max_leaves=10,
)


@given(
    st.dictionaries(st.sampled_from(["type", "payload", "version", "x"]), json_values, max_size=4),
    st.integers(0, 200),
)
def test_random_json_objects_decode_or_raise_typed(obj: dict[str, object], cut: int) -> None:
    raw = json.dumps(obj).encode()
    decoder = LegacyDecoder()
    try:
        out = decoder.feed(raw[:cut]) + decoder.feed(raw[cut:])
    except LegacyProtocolError:
        return
    assert len(out) == 1
    assert encode(out[0]) == encode(decode(raw))


def test_first_byte_classification() -> None:
    assert codec.looks_legacy(ord("{"))
    assert codec.looks_legacy(ord(" "))
    assert codec.looks_legacy(ord("\n"))
    assert not codec.looks_legacy(ord("P"))
    assert not codec.looks_legacy(0)
