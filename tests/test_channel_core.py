"""The record layer (p2psc.core.channel): format, limits, close semantics, and what an attacker
who sees and rewrites the byte stream can achieve (nothing but a typed error).

The record format is checked against an independent encoder written here from spec/channel.md
(length || ChaCha20-Poly1305(nonce = counter, ad = empty, type || data)), so a change to any
byte, nonce or length of the implementation fails a test. The attacker properties are
hypothesis tests over arbitrary streams: every single-bit flip, dropped, duplicated, swapped or
truncated record is detected, and nothing of a bad record reaches the application.

Mutants judged equivalent (an ad-hoc AST mutation run over this module, 2026-12-02): deleting
``self._need = HEADER_LEN`` in ``SecureChannel.__init__`` (``_need`` is read only while a partial
record is buffered, and every path that buffers one sets it first); ``size <= MAX_RECORD_DATA``
changed to ``<`` in ``seal`` (a write of exactly one full record then takes the general loop,
which yields the same single record); deleting ``return []`` for an empty feed after the close
record (the general path then decodes nothing and returns the same empty list).
"""

from __future__ import annotations

import hashlib
import itertools

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from p2psc.core import channel as ch
from p2psc.core.channel import END_OF_STREAM, EndOfStream, SecureChannel
from p2psc.errors import (
    ChannelClosed,
    ChannelError,
    DataAfterClose,
    ProtocolError,
    RecordMalformed,
    RecordTampered,
    RecordTooLarge,
    TruncatedStream,
)
from p2psc.noise import CipherState, HandshakeState, public_key

K_AB = hashlib.sha256(b"a to b").digest()
K_BA = hashlib.sha256(b"b to a").digest()


def channels() -> tuple[SecureChannel, SecureChannel]:
    a = SecureChannel(CipherState(K_AB), CipherState(K_BA))
    b = SecureChannel(CipherState(K_BA), CipherState(K_AB))
    return a, b


def spec_record(key: bytes, n: int, kind: int, data: bytes) -> bytes:
    """A record as spec/channel.md defines it, built without p2psc."""
    nonce = bytes(4) + n.to_bytes(8, "little")
    ciphertext = ChaCha20Poly1305(key).encrypt(nonce, bytes([kind]) + data, b"")
    return len(ciphertext).to_bytes(2, "big") + ciphertext


def split_records(stream: bytes) -> list[bytes]:
    records, pos = [], 0
    while pos < len(stream):
        length = int.from_bytes(stream[pos : pos + 2], "big")
        records.append(stream[pos : pos + 2 + length])
        pos += 2 + length
    return records


def decode(
    receiver: SecureChannel, chunks: list[bytes], eof: bool = True
) -> tuple[bytes, bool, ChannelError | None]:
    """Feed chunks, then the transport EOF; what the application saw and the error, if any."""
    data, ended = bytearray(), False
    try:
        for chunk in chunks:
            for item in receiver.feed(chunk):
                assert not ended, "nothing may follow END_OF_STREAM"
                if item is END_OF_STREAM:
                    ended = True
                else:
                    assert isinstance(item, bytes) and item
                    data += item
        if eof:
            receiver.transport_eof()
    except ChannelError as exc:
        return bytes(data), ended, exc
    return bytes(data), ended, None


def cut(stream: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({0, len(stream), *(p % (len(stream) + 1) for p in points)})
    return [stream[a:b] for a, b in itertools.pairwise(edges)]


# --- constants and format -------------------------------------------------------------------


def test_constants_match_the_spec() -> None:
    assert (ch.HEADER_LEN, ch.TYPE_DATA, ch.TYPE_CLOSE) == (2, 0, 1)
    assert ch.MAX_RECORD_DATA == 32768
    assert ch.MIN_RECORD_CIPHERTEXT == 17
    assert ch.MAX_RECORD_CIPHERTEXT == 32785 <= 65535
    assert ch.MAX_RECORD_WIRE == 32787


def test_errors_form_one_hierarchy() -> None:
    for cls in (RecordTampered, RecordTooLarge, RecordMalformed, DataAfterClose):
        assert issubclass(cls, ChannelError)
    assert issubclass(TruncatedStream, ChannelError) and issubclass(ChannelClosed, ChannelError)
    assert issubclass(ChannelError, ProtocolError)


def test_records_are_exactly_the_spec_format() -> None:
    a, _ = channels()
    assert a.seal(b"abc") == spec_record(K_AB, 0, 0, b"abc")
    assert a.seal(b"") == spec_record(K_AB, 1, 0, b"")
    assert a.seal(bytearray(b"xyz")) == spec_record(K_AB, 2, 0, b"xyz")
    assert a.seal(memoryview(b"0123")[1:]) == spec_record(K_AB, 3, 0, b"123")
    assert a.seal_close() == spec_record(K_AB, 4, 1, b"")
    assert a.records_sent == 5 and a.closed


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (1, [1]),
        (32767, [32767]),
        (32768, [32768]),
        (32769, [32768, 1]),
        (65536, [32768, 32768]),
        (100000, [32768, 32768, 32768, 1696]),
    ],
)
def test_large_writes_split_at_the_record_limit(size: int, expected: list[int]) -> None:
    a, b = channels()
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    stream = a.seal(data)
    records = split_records(stream)
    assert [len(r) - 2 - 17 for r in records] == expected
    assert a.records_sent == len(expected)
    n, pos = 0, 0
    for record, part in zip(records, expected, strict=True):
        assert record == spec_record(K_AB, n, 0, data[pos : pos + part])
        n, pos = n + 1, pos + part
    assert b"".join(b.feed(stream)) == data  # type: ignore[arg-type]
    assert b.records_received == len(expected)


def test_empty_seal_is_one_empty_record_that_counts_as_key_confirmation() -> None:
    a, b = channels()
    record = a.seal(b"")
    assert len(record) == 2 + 17
    assert b.records_received == 0
    assert b.feed(record) == []
    assert b.records_received == 1


def test_the_largest_record_is_accepted_and_one_more_byte_is_too_large() -> None:
    _, b = channels()
    biggest = spec_record(K_AB, 0, 0, bytes(32768))
    assert len(biggest) == ch.MAX_RECORD_WIRE
    assert b.feed(biggest) == [bytes(32768)]
    _, b = channels()
    with pytest.raises(RecordTooLarge, match="32786"):
        b.feed(spec_record(K_AB, 0, 0, bytes(32769))[:2])  # the length alone is refused
    for length in (32786, 65535):
        _, b = channels()
        with pytest.raises(RecordTooLarge):
            b.feed(length.to_bytes(2, "big"))


@pytest.mark.parametrize("length", range(17))
def test_lengths_below_a_type_and_tag_are_refused_from_the_header(length: int) -> None:
    _, b = channels()
    with pytest.raises(RecordTampered, match="cannot be authentic"):
        b.feed(length.to_bytes(2, "big"))


def test_shortest_record_is_accepted() -> None:
    _, b = channels()
    record = spec_record(K_AB, 0, 0, b"")
    assert int.from_bytes(record[:2], "big") == 17
    assert b.feed(record) == []


@pytest.mark.parametrize(
    ("kind", "data", "match"),
    [(2, b"", "unknown record type 2"), (255, b"x", "unknown record type 255"), (1, b"x", "close")],
)
def test_authentic_but_malformed_records(kind: int, data: bytes, match: str) -> None:
    _, b = channels()
    good = spec_record(K_AB, 0, 0, b"ok")
    with pytest.raises(RecordMalformed, match=match):
        b.feed(good + spec_record(K_AB, 1, kind, data))
    assert isinstance(b.failed, RecordMalformed)


# --- nonces and keys --------------------------------------------------------------------------


def test_every_nonce_matters() -> None:
    _, b = channels()
    for n in (1, 2, 2**32, 2**63):  # the right key, the wrong position
        with pytest.raises(RecordTampered):
            channels()[1].feed(spec_record(K_AB, n, 0, b"x"))
    assert b.feed(spec_record(K_AB, 0, 0, b"x")) == [b"x"]
    assert b.feed(spec_record(K_AB, 1, 0, b"y")) == [b"y"]
    with pytest.raises(RecordTampered, match="record 2"):
        b.feed(spec_record(K_AB, 1, 0, b"y"))  # replayed


def test_a_reflected_record_fails() -> None:
    """Each direction has its own key: a record sent back to its sender does not open."""
    a, _ = channels()
    with pytest.raises(RecordTampered):
        a.feed(a.seal(b"boomerang"))


def test_channels_from_a_kk_handshake_interoperate() -> None:
    keys = [hashlib.sha256(bytes([i])).digest() for i in range(4)]
    init = HandshakeState.initiator(keys[0], public_key(keys[1]), b"p", keys[2])
    resp = HandshakeState.responder(keys[1], public_key(keys[0]), b"p", keys[3])
    resp.read_message(init.write_message())
    init.read_message(resp.write_message())
    client, peer = SecureChannel(*init.split()), SecureChannel(*resp.split())
    assert peer.feed(client.seal(b"")) == [] and peer.records_received == 1
    assert client.feed(peer.seal(b"hi") + peer.seal_close()) == [b"hi", END_OF_STREAM]


# --- close and EOF ------------------------------------------------------------------------------


def test_close_semantics() -> None:
    a, b = channels()
    stream = a.seal(b"last words") + a.seal_close()
    with pytest.raises(ChannelClosed, match="closed for sending"):
        a.seal(b"more")
    with pytest.raises(ChannelClosed):
        a.seal_close()
    assert b.feed(stream) == [b"last words", END_OF_STREAM]
    assert b.peer_closed and not b.closed and b.failed is None
    b.transport_eof()  # a clean end
    assert b.feed(b"") == []
    # Half close: b can still send after a closed.
    assert a.feed(b.seal(b"reply")) == [b"reply"]
    with pytest.raises(DataAfterClose, match="1 bytes"):
        b.feed(b"x")
    assert isinstance(b.failed, DataAfterClose)


def test_bytes_after_close_in_the_same_chunk() -> None:
    a, b = channels()
    with pytest.raises(DataAfterClose, match="3 bytes"):
        b.feed(a.seal(b"data") + a.seal_close() + b"abc")
    assert not b.peer_closed or b.failed is not None


def test_transport_eof_without_close_is_truncation() -> None:
    a, b = channels()
    assert b.feed(a.seal(b"data")) == [b"data"]
    with pytest.raises(TruncatedStream, match=r"without a close record$"):
        b.transport_eof()
    a, b = channels()
    record = a.seal(b"data")
    assert b.feed(record[:5]) == []
    with pytest.raises(TruncatedStream, match=r"inside a record \(5 bytes of it\)"):
        b.transport_eof()


def test_a_failed_channel_stays_failed() -> None:
    a, b = channels()
    good = a.seal(b"one")
    bad = bytearray(a.seal(b"two"))
    bad[5] ^= 1
    with pytest.raises(RecordTampered) as first:
        b.feed(good + bytes(bad))
    assert b.failed is first.value and b.pending == 0
    for call in (lambda: b.feed(good), lambda: b.feed(b""), b.transport_eof):
        with pytest.raises(RecordTampered) as again:
            call()
        assert again.value.reason == first.value.reason
    with pytest.raises(ChannelClosed, match="failed: " + first.value.reason[:10]):
        b.seal(b"x")
    with pytest.raises(ChannelClosed, match="failed"):
        b.seal_close()
    assert b.records_sent == 0 and b.records_received == 1


def test_end_of_stream_is_a_singleton() -> None:
    assert EndOfStream() is END_OF_STREAM and isinstance(END_OF_STREAM, EndOfStream)
    assert repr(END_OF_STREAM) == "END_OF_STREAM"


# --- buffering ----------------------------------------------------------------------------------


def test_pending_counts_the_partial_record_and_dribbling_works() -> None:
    a, b = channels()
    stream = a.seal(b"hello") + a.seal(b"world")
    first = len(split_records(stream)[0])
    out: list[bytes | EndOfStream] = []
    for i in range(len(stream)):
        out += b.feed(stream[i : i + 1])
        expected_pending = (i + 1) if i + 1 < first else (i + 1 - first) % (len(stream) - first)
        assert b.pending == expected_pending, i
    assert out == [b"hello", b"world"]
    assert b.pending == 0
    # While a record is incomplete, feed waits for exactly its end before decoding again.
    assert b.feed(stream[:1]) == [] and b._need == 2
    assert b.feed(stream[1:3]) == [] and b._need == first
    _, fresh = channels()
    assert fresh.feed(stream[:2]) == [] and fresh._need == first  # a bare header is enough
    long_record = channels()[0].seal(bytes(300))  # a length with a non-zero high byte
    _, fresh = channels()
    assert fresh.feed(long_record[:2]) == [] and fresh._need == 2 + 300 + 17
    # ... appending in place meanwhile (no copy of the partial record per segment).
    held = b._buf
    assert b.feed(stream[3:4]) == [] and b._buf is held and b.pending == 4


def test_feed_copies_what_it_keeps_from_a_reused_buffer() -> None:
    a, b = channels()
    stream = a.seal(b"x" * 100)
    buf = bytearray(stream[:50])
    assert b.feed(memoryview(buf)) == []
    buf[:] = bytes(50)  # the adapter reuses its receive buffer
    assert b.feed(bytearray(stream[50:])) == [b"x" * 100]


# --- attacker properties ---------------------------------------------------------------------

messages_st = st.lists(st.binary(max_size=300), min_size=1, max_size=6)
big_messages_st = st.lists(
    st.one_of(st.binary(max_size=50), st.integers(32760, 70000).map(bytes)), max_size=3
)


def make_stream(messages: list[bytes], close: bool = True) -> tuple[bytes, bytes]:
    a, _ = channels()
    stream = b"".join(a.seal(m) for m in messages) + (a.seal_close() if close else b"")
    return stream, b"".join(messages)


@settings(max_examples=60, deadline=None)
@given(st.one_of(messages_st, big_messages_st), st.lists(st.integers(0, 10**6), max_size=12))
def test_any_chunking_decodes_identically(messages: list[bytes], points: list[int]) -> None:
    stream, data = make_stream(messages)
    _, b = channels()
    got, ended, error = decode(b, cut(stream, points))
    assert (got, ended, error) == (data, True, None)
    assert b.records_received == len(split_records(stream))
    # The receive buffer never holds a whole record.
    _, b = channels()
    for chunk in cut(stream, points):
        b.feed(chunk)
        assert b.pending < ch.MAX_RECORD_WIRE


@settings(max_examples=200, deadline=None)
@given(messages_st, st.integers(0, 10**6), st.lists(st.integers(0, 10**6), max_size=4))
def test_any_single_bit_flip_is_detected(
    messages: list[bytes], bit: int, points: list[int]
) -> None:
    stream, data = make_stream(messages)
    bit %= len(stream) * 8
    tampered = bytearray(stream)
    tampered[bit // 8] ^= 1 << (bit % 8)
    _, b = channels()
    got, ended, error = decode(b, cut(bytes(tampered), points))
    assert error is not None and not ended
    assert isinstance(error, (RecordTampered, RecordTooLarge, TruncatedStream))
    assert data.startswith(got)  # nothing of the bad record reached the application
    # The records before the flipped one may arrive; the flipped one's data never does.
    first_bad = next(
        i
        for i, r in enumerate(split_records(stream))
        if sum(len(x) for x in split_records(stream)[: i + 1]) * 8 > bit
    )
    assert len(got) <= sum(len(m) for m in messages[:first_bad])


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=40), min_size=2, max_size=6),
    st.sampled_from(["drop", "duplicate", "swap", "truncate", "truncate_record"]),
    st.integers(0, 10**6),
    st.lists(st.integers(0, 10**6), max_size=4),
)
def test_dropped_duplicated_swapped_or_truncated_records_are_detected(
    messages: list[bytes], attack: str, which: int, points: list[int]
) -> None:
    stream, data = make_stream(messages)
    records = split_records(stream)  # the last one is the close record
    i = which % len(records)
    if attack == "drop":
        attacked = records[:i] + records[i + 1 :]
    elif attack == "duplicate":
        attacked = records[: i + 1] + records[i:]
    elif attack == "swap":
        j = (i + 1) % len(records)
        assume(records[i] != records[j])
        attacked = list(records)
        attacked[i], attacked[j] = attacked[j], attacked[i]
    elif attack == "truncate":
        attacked = records[:i]  # cut at a record boundary: the close record never comes
    else:
        attacked = [*records[:i], records[i][: which % len(records[i])]]
    _, b = channels()
    got, ended, error = decode(b, cut(b"".join(attacked), points))
    duplicated_close = attack == "duplicate" and i == len(records) - 1
    # A duplicated close record follows an authentic one: when a read ends right after the
    # first, the application has seen the real end of stream before the error (nothing of the
    # copy reaches it either way). Every other attack is an error before any end.
    assert error is not None and (duplicated_close or not ended)
    assert data.startswith(got)
    if attack.startswith("truncate") or (attack == "drop" and i == len(records) - 1):
        assert isinstance(error, TruncatedStream)  # dropping the close record truncates
    elif attack == "duplicate" and i == len(records) - 1:
        assert isinstance(error, DataAfterClose)
    else:
        assert isinstance(error, RecordTampered)


@settings(max_examples=50, deadline=None)
@given(messages_st, st.binary(min_size=1, max_size=40), st.integers(0, 10**6))
def test_injected_bytes_are_detected(messages: list[bytes], junk: bytes, where: int) -> None:
    stream, data = make_stream(messages)
    records = split_records(stream)
    i = where % (len(records) + 1)
    attacked = b"".join(records[:i]) + junk + b"".join(records[i:])
    _, b = channels()
    got, ended, error = decode(b, [attacked])
    assert error is not None and not ended and data.startswith(got)


def test_public_names_exist_and_the_channel_has_no_dict() -> None:
    assert "SecureChannel" in ch.__all__ and "END_OF_STREAM" in ch.__all__
    for name in ch.__all__:
        assert getattr(ch, name) is not None, name
    a, _ = channels()
    assert not hasattr(a, "__dict__") and not hasattr(END_OF_STREAM, "__dict__")


def test_a_failure_releases_the_partial_record() -> None:
    """After an error nothing is kept: pending drops to 0 even when a partial record (or one
    completed by the failing call) was buffered."""
    a, b = channels()
    record = bytearray(a.seal(b"y" * 200))
    assert b.feed(bytes(record[:100])) == []
    assert b.pending == 100
    record[150] ^= 0x80
    with pytest.raises(RecordTampered):
        b.feed(bytes(record[100:]) + b"\x00\x01")
    assert b.pending == 0
    a, b = channels()
    assert b.feed(b"\x00") == [] and b.pending == 1
    with pytest.raises(TruncatedStream):
        b.transport_eof()
    assert b.pending == 0
