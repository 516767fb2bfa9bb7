"""The models' symbolic crypto acts like HPKE where it matters: only the right key + info open."""

from __future__ import annotations

import pytest
from p2psc.models.symbolic_crypto import SEALED_SIZE, SymbolicCrypto, fixed_nonces

from p2psc.errors import CryptoError, NoiseLowOrderPoint
from p2psc.keys import Keypair, nonce_info


def test_seal_is_deterministic_and_opens_only_with_the_right_key_and_info() -> None:
    crypto = SymbolicCrypto()
    alice = Keypair.from_private_raw(bytes([1]) * 32)
    bob = Keypair.from_private_raw(bytes([2]) * 32)
    nonce = fixed_nonces(b"mediator")(32)
    info = nonce_info("AdvertiseChallenge", alice.public_key.raw, bob.public_key.raw)
    sealed = crypto.seal(alice.public_key, nonce, info)
    assert len(sealed) == SEALED_SIZE
    assert sealed == crypto.seal(alice.public_key, nonce, info)
    assert crypto.open(alice, sealed, info) == nonce
    with pytest.raises(CryptoError):
        crypto.open(bob, sealed, info)
    other = nonce_info("PeerChallenge", alice.public_key.raw, bob.public_key.raw)
    with pytest.raises(CryptoError):
        crypto.open(alice, sealed, other)
    with pytest.raises(CryptoError):
        crypto.open(alice, sealed[:-1], info)


def test_fixed_nonces_differ_per_label_and_have_the_asked_size() -> None:
    a, b = fixed_nonces(b"a"), fixed_nonces(b"b")
    assert a(32) == a(32) and a(32) != b(32)
    assert len(a(80)) == 80


# --- exact caches of the Noise primitives (models/crypto_memo.py) ---------------------------


def test_the_crypto_memo_returns_exactly_what_the_primitives_return() -> None:
    from p2psc.models.crypto_memo import CryptoMemo

    import p2psc.noise as noise
    from p2psc.noise import HandshakeState

    real = (noise.X25519PrivateKey, noise._dh, noise._hkdf2)
    memo = CryptoMemo()
    client, peer = bytes([7]) * 32, bytes([9]) * 32
    client_pub, peer_pub = noise.public_key(client), noise.public_key(peer)

    def handshake() -> tuple[bytes, bytes, bytes, bytes]:
        initiator = HandshakeState.initiator(client, peer_pub, b"p", bytes([1]) * 32)
        responder = HandshakeState.responder(peer, client_pub, b"p", bytes([2]) * 32)
        first = initiator.write_message(b"")
        responder.read_message(first)
        second = responder.write_message(b"")
        initiator.read_message(second)
        return first, second, initiator.handshake_hash, initiator.split()[0].key

    expected = handshake()
    with memo:
        assert noise._dh == memo.dh and noise._hkdf2 == memo.hkdf2
        with memo:  # re-entrant
            assert handshake() == expected
        assert handshake() == expected  # now from the caches
        assert memo.hits > 0 and memo.misses > 0
        with pytest.raises(NoiseLowOrderPoint):  # refused every time, never cached
            noise._dh(noise.X25519PrivateKey.from_private_bytes(client), bytes(32))
        with pytest.raises(NoiseLowOrderPoint):
            noise._dh(noise.X25519PrivateKey.from_private_bytes(client), bytes(32))
    assert (noise.X25519PrivateKey, noise._dh, noise._hkdf2) == real
    with pytest.raises(RuntimeError), memo:
        raise RuntimeError("restored also on an exception")
    assert (noise.X25519PrivateKey, noise._dh, noise._hkdf2) == real


class _NoMemo:
    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc: object) -> None:
        pass


def test_a_model_explores_the_same_states_with_and_without_the_crypto_memo() -> None:
    from p2psc.models.explorer import explore
    from p2psc.models.mediation_model import MediationModel

    cached, plain = MediationModel(peers=2, faults=True), MediationModel(peers=2, faults=True)
    plain.crypto_memo = _NoMemo()  # type: ignore[assignment]
    one, two = explore(cached), explore(plain)
    assert one.ok and two.ok
    assert (one.states, one.transitions, one.terminals) == (
        two.states,
        two.transitions,
        two.terminals,
    )
    assert cached._snapshots.values == plain._snapshots.values  # the same snapshots, in order
    assert cached.crypto_memo.hits > cached.crypto_memo.misses > 0
