"""p2psc.noise beyond the published vectors: what a forged, replayed or misrouted message does.

The vectors (test_noise_vectors.py) prove the happy path byte for byte. These tests pin what the
vectors cannot: atomic reads (a forgery leaves the state untouched and the real message still
works), the typed errors and their triggers, the nonce encoding and the reserved nonce, turn
order, snapshots and copies, the size limits at their edges, and the constants.

Mutants judged equivalent (an ad-hoc AST mutation run, 2026-12-02): ``i % 2`` changed to
``i * 2`` in the constructor's "needs an ephemeral" check (in every pattern of the table the
side's first message already carries ``e``, so looking only at message 0 or 1 decides the same),
and ``i % 3`` there for the same reason; ``len(message) - pos`` changed to ``+ pos`` in the
ephemeral's length check (``e`` is the first token of every message, so ``pos`` is 0 there).
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psc import noise
from p2psc.errors import (
    CryptoError,
    NoiseDecryptError,
    NoiseError,
    NoiseLowOrderPoint,
    NoiseMalformedMessage,
    NoiseNonceExhausted,
    NoiseStateError,
)
from p2psc.noise import (
    MAX_NONCE,
    PROTOCOL_NAME,
    CipherState,
    HandshakeState,
    public_key,
)


def _key(tag: str) -> bytes:
    return hashlib.sha256(tag.encode()).digest()


I_S, R_S, I_E, R_E = _key("init static"), _key("resp static"), _key("init eph"), _key("resp eph")
PROLOGUE = b"p2psc test prologue"

LOW_ORDER = [
    bytes(32),
    b"\x01" + bytes(31),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes.fromhex("ec" + "ff" * 30 + "7f"),
    bytes.fromhex("ed" + "ff" * 30 + "7f"),
    bytes.fromhex("ee" + "ff" * 30 + "7f"),
]
"""X25519 u-coordinates of small order (and their non-canonical encodings)."""


def pair(prologue: bytes = PROLOGUE) -> tuple[HandshakeState, HandshakeState]:
    init = HandshakeState.initiator(I_S, public_key(R_S), prologue, I_E)
    resp = HandshakeState.responder(R_S, public_key(I_S), prologue, R_E)
    return init, resp


def handshake(
    payload0: bytes = b"", payload1: bytes = b""
) -> tuple[HandshakeState, HandshakeState, bytes, bytes]:
    init, resp = pair()
    m0 = init.write_message(payload0)
    assert resp.read_message(m0) == payload0
    m1 = resp.write_message(payload1)
    assert init.read_message(m1) == payload1
    return init, resp, m0, m1


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# --- constants ------------------------------------------------------------------------------


def test_constants_are_the_noise_spec_values() -> None:
    assert PROTOCOL_NAME == b"Noise_KK_25519_ChaChaPoly_SHA256"
    assert len(PROTOCOL_NAME) == noise.HASHLEN == 32
    assert (noise.DHLEN, noise.TAGLEN, noise.MAX_MESSAGE_LEN) == (32, 16, 65535)
    assert MAX_NONCE == 2**64 - 1
    assert noise.protocol_name("KK") == PROTOCOL_NAME
    assert noise.PATTERNS["KK"].messages == (("e", "es", "ss"), ("e", "ee", "se"))
    assert noise.PATTERNS["KK"].initiator_pre == ("s",) == noise.PATTERNS["KK"].responder_pre
    assert not noise.PATTERNS["KK"].one_way and noise.PATTERNS["N"].one_way


def test_every_noise_error_is_a_crypto_error() -> None:
    for cls in (
        NoiseDecryptError,
        NoiseMalformedMessage,
        NoiseLowOrderPoint,
        NoiseNonceExhausted,
        NoiseStateError,
    ):
        assert issubclass(cls, NoiseError)
    assert issubclass(NoiseError, CryptoError)


# --- the KK handshake ---------------------------------------------------------------------------


def test_kk_handshake_agrees_and_carries_payloads() -> None:
    init, resp, m0, m1 = handshake(b"hello responder", b"hello initiator")
    assert init.complete and resp.complete
    assert init.is_initiator and not resp.is_initiator
    # KK message sizes: e (32) + payload + tag (16); no static key ever travels.
    assert len(m0) == 32 + 15 + 16 and len(m1) == 32 + 15 + 16
    assert m0[:32] == public_key(I_E) and m1[:32] == public_key(R_E)
    assert public_key(I_S) not in m0 + m1 and public_key(R_S) not in m0 + m1
    assert init.handshake_hash == resp.handshake_hash
    assert resp.remote_ephemeral == public_key(I_E) and init.remote_ephemeral == public_key(R_E)
    assert init.remote_static == public_key(R_S) and resp.remote_static == public_key(I_S)
    i_send, i_recv = init.split()
    r_send, r_recv = resp.split()
    assert i_send.key == r_recv.key and i_recv.key == r_send.key and i_send.key != i_recv.key
    assert (i_send.n, i_recv.n, r_send.n, r_recv.n) == (0, 0, 0, 0)
    ct = i_send.encrypt_with_ad(b"", b"confirm")
    assert r_recv.decrypt_with_ad(b"", ct) == b"confirm"
    assert init.split()[0].key == i_send.key  # split is a pure function of the state


def test_handshake_hash_changes_with_each_message() -> None:
    init, resp = pair()
    hashes = [init.handshake_hash]
    assert resp.handshake_hash == hashes[0]
    m0 = init.write_message()
    hashes.append(init.handshake_hash)
    resp.read_message(m0)
    assert resp.handshake_hash == hashes[1]
    m1 = resp.write_message()
    init.read_message(m1)
    hashes.append(init.handshake_hash)
    assert len(set(hashes)) == 3


@pytest.mark.parametrize(
    "change",
    ["prologue", "initiator static", "responder static", "remote static"],
)
def test_sessions_bound_to_prologue_and_keys(change: str) -> None:
    """Anything either side disagrees on makes the first read fail: the pairing is bound."""
    prologue_i = prologue_r = PROLOGUE
    i_s, r_s, rs_of_r = I_S, R_S, public_key(I_S)
    if change == "prologue":
        prologue_r = PROLOGUE + b"x"
    elif change == "initiator static":
        i_s = _key("someone else")
    elif change == "responder static":
        r_s = _key("someone else")
    else:
        rs_of_r = public_key(_key("someone else"))
    init = HandshakeState.initiator(i_s, public_key(R_S), prologue_i, I_E)
    resp = HandshakeState.responder(r_s, rs_of_r, prologue_r, R_E)
    before = resp.snapshot()
    with pytest.raises(NoiseDecryptError):
        resp.read_message(init.write_message(b"payload"))
    assert resp.snapshot() == before


def test_different_ephemerals_give_different_sessions() -> None:
    """Forward secrecy's precondition: the keys depend on the ephemerals, not only the statics."""
    init_a, _, _, _ = handshake()
    init_b = HandshakeState.initiator(I_S, public_key(R_S), PROLOGUE, _key("other eph"))
    resp_b = HandshakeState.responder(R_S, public_key(I_S), PROLOGUE, R_E)
    resp_b.read_message(init_b.write_message())
    init_b.read_message(resp_b.write_message())
    assert init_b.handshake_hash != init_a.handshake_hash
    assert init_b.split()[0].key != init_a.split()[0].key


def test_replayed_first_message_from_another_session_fails_the_second_leg() -> None:
    """A responder that accepts a replayed message 0 produces a message 1 the replayer cannot
    use, and the initiator of the real session rejects it (its ephemeral differs)."""
    _, _, m0_old, _ = handshake()
    init = HandshakeState.initiator(I_S, public_key(R_S), PROLOGUE, _key("new eph"))
    resp = HandshakeState.responder(R_S, public_key(I_S), PROLOGUE, _key("new resp eph"))
    init.write_message()  # the real message 0, which the attacker holds back
    resp.read_message(m0_old)  # the replay is authentic in itself
    with pytest.raises(NoiseDecryptError):
        init.read_message(resp.write_message())


# --- atomic reads ---------------------------------------------------------------------------


@pytest.mark.parametrize("which", [0, 1])
def test_every_bit_of_a_handshake_message_matters_and_reads_are_atomic(which: int) -> None:
    init, resp = pair()
    m0 = init.write_message(b"abc")
    reader, message = resp, m0
    if which == 1:
        resp.read_message(m0)
        reader, message = init, resp.write_message(b"xyz")
    before = reader.snapshot()
    for bit in range(len(message) * 8):
        with pytest.raises((NoiseDecryptError, NoiseLowOrderPoint)):
            reader.read_message(flip(message, bit))
        assert reader.snapshot() == before, bit
    for cut in range(len(message)):
        with pytest.raises(NoiseError):
            reader.read_message(message[:cut])
        assert reader.snapshot() == before
    with pytest.raises(NoiseDecryptError):
        reader.read_message(message + b"\x00")
    assert reader.snapshot() == before
    assert reader.read_message(message) == (b"abc" if which == 0 else b"xyz")


def test_short_messages_are_malformed_not_decrypt_errors() -> None:
    init, resp = pair()
    m0 = init.write_message()
    assert len(m0) == 48
    for cut in (0, 31):
        with pytest.raises(NoiseMalformedMessage, match="too short for an ephemeral"):
            resp.read_message(m0[:cut])
    for cut in (32, 47):  # long enough for e; the tag is missing
        with pytest.raises(NoiseMalformedMessage, match="too short for its tag"):
            resp.read_message(m0[:cut])


def test_a_message_of_exactly_one_key_is_valid_where_the_pattern_allows_it() -> None:
    """NN's first message is the bare ephemeral (no key yet, so no tag): exactly 32 bytes."""
    init = HandshakeState.for_pattern("NN", initiator=True, prologue=b"", ephemeral_private=I_E)
    resp = HandshakeState.for_pattern("NN", initiator=False, prologue=b"", ephemeral_private=R_E)
    m0 = init.write_message()
    assert m0 == public_key(I_E)
    assert resp.read_message(m0) == b""
    init.read_message(resp.write_message())
    assert init.handshake_hash == resp.handshake_hash


@pytest.mark.parametrize("point", LOW_ORDER)
def test_low_order_ephemeral_is_refused_atomically(point: bytes) -> None:
    init, resp = pair()
    m0 = init.write_message()
    before = resp.snapshot()
    with pytest.raises(NoiseLowOrderPoint):
        resp.read_message(point + m0[32:])
    assert resp.snapshot() == before
    resp.read_message(m0)
    m1 = resp.write_message()
    before = init.snapshot()
    with pytest.raises(NoiseLowOrderPoint):
        init.read_message(point + m1[32:])
    assert init.snapshot() == before
    init.read_message(m1)
    assert init.complete


def test_low_order_remote_static_fails_on_write_and_leaves_state() -> None:
    init = HandshakeState.initiator(I_S, LOW_ORDER[2], PROLOGUE, I_E)
    before = init.snapshot()
    with pytest.raises(NoiseLowOrderPoint):
        init.write_message()
    assert init.snapshot() == before


# --- turns and limits -------------------------------------------------------------------------


def test_out_of_turn_operations_raise_state_errors() -> None:
    init, resp = pair()
    assert init.our_turn and not resp.our_turn
    with pytest.raises(NoiseStateError, match="other side's turn"):
        resp.write_message()
    with pytest.raises(NoiseStateError, match="other side's turn"):
        init.read_message(b"\x00" * 48)
    with pytest.raises(NoiseStateError, match="before the handshake is complete"):
        init.split()
    m0 = init.write_message()
    with pytest.raises(NoiseStateError):
        init.write_message()
    resp.read_message(m0)
    with pytest.raises(NoiseStateError):
        resp.read_message(m0)
    with pytest.raises(NoiseStateError):
        resp.split()
    m1 = resp.write_message()
    assert resp.complete and not init.complete and not resp.our_turn
    init.read_message(m1)
    for side in (init, resp):
        assert not side.our_turn
        with pytest.raises(NoiseStateError, match="complete"):
            side.write_message()
        with pytest.raises(NoiseStateError, match="complete"):
            side.read_message(m1)


def test_message_size_limit_at_its_edge() -> None:
    init, resp = pair()
    largest = 65535 - 32 - 16
    before = init.snapshot()
    with pytest.raises(NoiseMalformedMessage):
        init.write_message(bytes(largest + 1))
    assert init.snapshot() == before
    m0 = init.write_message(bytes(largest))
    assert len(m0) == 65535
    with pytest.raises(NoiseMalformedMessage):
        resp.read_message(m0 + b"\x00")
    assert resp.read_message(m0) == bytes(largest)


def test_constructor_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        HandshakeState.for_pattern("KKpsk0", initiator=True, prologue=b"")
    with pytest.raises(ValueError, match=r"^static_private must be 32 bytes"):
        HandshakeState.initiator(I_S[:31], public_key(R_S), b"", I_E)
    with pytest.raises(ValueError, match=r"^ephemeral_private must be 32 bytes"):
        HandshakeState.initiator(I_S, public_key(R_S), b"", I_E + b"\x00")
    with pytest.raises(ValueError, match=r"^remote_static must be 32 bytes"):
        HandshakeState.initiator(I_S, public_key(R_S)[:31], b"", I_E)
    with pytest.raises(ValueError, match="remote_static"):
        HandshakeState.for_pattern(
            "KK", initiator=True, prologue=b"", static_private=I_S, ephemeral_private=I_E
        )
    with pytest.raises(ValueError, match="static_private"):
        HandshakeState.for_pattern(
            "KK", initiator=True, prologue=b"", ephemeral_private=I_E, remote_static=I_S
        )
    with pytest.raises(ValueError, match="ephemeral_private"):
        HandshakeState.for_pattern(
            "NN", initiator=False, prologue=b"", remote_static=None, static_private=None
        )
    with pytest.raises(ValueError, match="static_private"):
        HandshakeState.for_pattern("XX", initiator=True, prologue=b"", ephemeral_private=I_E)


# --- snapshots and copies -----------------------------------------------------------------------


def test_snapshots_round_trip_and_resume_identically() -> None:
    init, resp = pair()
    states = []
    m0 = init.write_message(b"0")
    states.append((init.snapshot(), resp.snapshot()))
    resp.read_message(m0)
    states.append((init.snapshot(), resp.snapshot()))
    for snap_i, snap_r in states:
        assert hash(snap_i) == hash(HandshakeState.from_snapshot(snap_i).snapshot())
        restored = HandshakeState.from_snapshot(snap_r)
        assert restored == HandshakeState.from_snapshot(snap_r)
        assert hash(restored) == hash(snap_r)
        assert restored.snapshot() == snap_r
    # Resume from the snapshot taken after the responder read message 0.
    r2 = HandshakeState.from_snapshot(states[1][1])
    i2 = HandshakeState.from_snapshot(states[1][0])
    m1 = r2.write_message(b"1")
    assert m1 == resp.copy().write_message(b"1")
    assert i2.read_message(m1) == b"1"
    assert i2.split()[0].key == r2.split()[1].key
    assert i2 != r2 and i2 != "not a state"


def test_copy_is_independent() -> None:
    init, resp = pair()
    twin = init.copy()
    assert twin == init and twin is not init
    m0 = twin.write_message()
    assert init.snapshot() != twin.snapshot()
    assert init.write_message() == m0  # the original is still at message 0
    assert "message 1/2" in repr(init) and "initiator" in repr(init)
    assert "responder" in repr(resp)


# --- CipherState ------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 255, 256, 2**32 + 5, 2**63, MAX_NONCE - 1])
def test_cipher_nonce_is_32_zero_bits_and_64_bit_little_endian_counter(n: int) -> None:
    key = _key("k")
    cs = CipherState(key, n)
    nonce = bytes(4) + n.to_bytes(8, "little")
    expected = ChaCha20Poly1305(key).encrypt(nonce, b"data", b"ad")
    assert cs.encrypt_with_ad(b"ad", b"data") == expected
    assert cs.n == n + 1
    assert CipherState(key, n).decrypt_with_ad(b"ad", expected) == b"data"


def test_cipher_counter_advances_only_on_success() -> None:
    key = _key("k")
    send, recv = CipherState(key), CipherState(key)
    cts = [send.encrypt_with_ad(b"", bytes([i])) for i in range(3)]
    assert send.n == 3
    with pytest.raises(NoiseDecryptError):
        recv.decrypt_with_ad(b"", cts[1])  # reordered: wrong nonce
    with pytest.raises(NoiseDecryptError):
        recv.decrypt_with_ad(b"x", cts[0])  # wrong associated data
    with pytest.raises(NoiseDecryptError):
        recv.decrypt_with_ad(b"", cts[0][:15])  # shorter than a tag
    assert recv.n == 0
    assert [recv.decrypt_with_ad(b"", c) for c in cts] == [b"\x00", b"\x01", b"\x02"]
    with pytest.raises(NoiseDecryptError):
        recv.decrypt_with_ad(b"", cts[2])  # replayed
    assert recv.n == 3


def test_reserved_nonce_is_refused() -> None:
    key = _key("k")
    cs = CipherState(key, MAX_NONCE - 1)
    ct = cs.encrypt_with_ad(b"", b"last")
    assert cs.n == MAX_NONCE
    with pytest.raises(NoiseNonceExhausted):
        cs.encrypt_with_ad(b"", b"one more")
    assert cs.n == MAX_NONCE
    rx = CipherState(key, MAX_NONCE - 1)
    assert rx.decrypt_with_ad(b"", ct) == b"last"
    with pytest.raises(NoiseNonceExhausted):
        rx.decrypt_with_ad(b"", ct)
    with pytest.raises(ValueError):
        CipherState(key, MAX_NONCE + 1)
    with pytest.raises(ValueError):
        CipherState(key, -1)
    with pytest.raises(ValueError, match="CipherState key is 32 bytes"):
        CipherState(key[:31])
    copy = cs.copy()
    assert copy.n == cs.n and copy.key == cs.key and copy is not cs
    assert repr(cs) == f"CipherState(n={MAX_NONCE})"


# --- properties ---------------------------------------------------------------------------------

keys = st.binary(min_size=32, max_size=32)


@settings(max_examples=40, deadline=None)
@given(
    keys, keys, keys, keys, st.binary(max_size=64), st.binary(max_size=64), st.binary(max_size=64)
)
def test_any_keys_agree(
    i_s: bytes, r_s: bytes, i_e: bytes, r_e: bytes, prologue: bytes, p0: bytes, p1: bytes
) -> None:
    init = HandshakeState.initiator(i_s, public_key(r_s), prologue, i_e)
    resp = HandshakeState.responder(r_s, public_key(i_s), prologue, r_e)
    assert resp.read_message(init.write_message(p0)) == p0
    assert init.read_message(resp.write_message(p1)) == p1
    assert init.handshake_hash == resp.handshake_hash
    (a, b), (c, d) = init.split(), resp.split()
    assert (a.key, b.key) == (d.key, c.key)


def test_public_names_exist_and_states_have_no_dict() -> None:
    """``__all__`` is the module's API, and the states are slotted: the explorer keeps many."""
    assert set(noise.__all__) >= {"CipherState", "HandshakeState", "PROTOCOL_NAME"}
    for name in noise.__all__:
        assert getattr(noise, name) is not None, name
    init, _ = pair()
    for obj in (init, CipherState(_key("k")), noise._Sym(b"", b"", None, 0)):
        assert not hasattr(obj, "__dict__"), type(obj).__name__


def test_read_message_copies_a_mutable_message() -> None:
    """The state must not alias the caller's buffer (an adapter reuses its receive buffer),
    and snapshots must stay hashable."""
    init, resp = pair()
    buffer = bytearray(init.write_message(b"p"))
    assert resp.read_message(buffer) == b"p"
    expected = public_key(I_E)
    buffer[:] = bytes(len(buffer))
    assert resp.remote_ephemeral == expected
    assert isinstance(resp.remote_ephemeral, bytes)
    hash(resp.snapshot())
    init.read_message(resp.write_message())
    assert init.split()[0].key == resp.split()[1].key


def test_initial_snapshot_layout_and_frozen_patterns() -> None:
    """The snapshot is a documented flat tuple; a fresh KK state has no key, nonce 0, message 0,
    and only the keys given (the remote ephemeral is learned from the wire)."""
    init, _ = pair()
    name = PROTOCOL_NAME  # 32 bytes: used as is for h and ck
    h = hashlib.sha256(hashlib.sha256(name + PROLOGUE).digest() + public_key(I_S)).digest()
    h = hashlib.sha256(h + public_key(R_S)).digest()
    assert init.snapshot() == (
        "KK",
        True,
        name,
        h,
        None,
        0,
        0,
        I_S,
        public_key(I_S),
        I_E,
        public_key(I_E),
        public_key(R_S),
        None,
    )
    assert init.handshake_hash == h
    with pytest.raises(AttributeError):
        noise.PATTERNS["KK"].name = "XX"  # type: ignore[misc]


def test_key_objects_are_built_once_and_rebuilt_after_a_snapshot() -> None:
    init, _ = pair()
    assert init._private(True) is init._private(True)
    assert init._private(False) is init._private(False)
    assert init._private(True) is not init._private(False)
    restored = HandshakeState.from_snapshot(init.snapshot())
    assert restored._s_key is None and restored._e_key is None
    assert restored._private(False) is restored._private(False)
    assert restored._private(True) is restored._private(True)
    assert restored.write_message() == init.write_message()


def test_a_message_cut_inside_a_static_key_is_malformed() -> None:
    """XX's second message carries the responder's encrypted static key (32 + 16 bytes)."""
    init = HandshakeState.for_pattern(
        "XX", initiator=True, prologue=b"", static_private=I_S, ephemeral_private=I_E
    )
    resp = HandshakeState.for_pattern(
        "XX", initiator=False, prologue=b"", static_private=R_S, ephemeral_private=R_E
    )
    resp.read_message(init.write_message())
    m1 = resp.write_message()
    assert len(m1) == 32 + 48 + 16
    before = init.snapshot()
    for cut in (33, 32 + 47):
        with pytest.raises(NoiseMalformedMessage, match="too short for a static key"):
            init.read_message(m1[:cut])
    with pytest.raises(NoiseMalformedMessage, match="too short for its tag"):
        init.read_message(m1[: 32 + 48])
    assert init.snapshot() == before
    init.read_message(m1)
    assert init.remote_static == public_key(R_S)


def test_a_clear_static_key_with_an_empty_payload_is_exactly_64_bytes() -> None:
    """IN's first message sends ``e`` and ``s`` before any key exists: no tags at all."""
    init = HandshakeState.for_pattern(
        "IN", initiator=True, prologue=b"", static_private=I_S, ephemeral_private=I_E
    )
    resp = HandshakeState.for_pattern("IN", initiator=False, prologue=b"", ephemeral_private=R_E)
    m0 = init.write_message()
    assert m0 == public_key(I_E) + public_key(I_S)
    assert resp.read_message(m0) == b""
    assert resp.remote_static == public_key(I_S)
    with pytest.raises(NoiseMalformedMessage, match="static key"):
        HandshakeState.for_pattern(
            "IN", initiator=False, prologue=b"", ephemeral_private=R_E
        ).read_message(m0[:63])
