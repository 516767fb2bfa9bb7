"""The models' symbolic crypto acts like HPKE where it matters: only the right key + info open."""

from __future__ import annotations

import pytest
from p2psc.models.symbolic_crypto import SEALED_SIZE, SymbolicCrypto, fixed_nonces

from p2psc.errors import CryptoError
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
