"""Identity keys and sealed nonces: PEM round trips, passphrases, file modes, HPKE failures."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psc.errors import CryptoError, KeyFileError
from p2psc.keys import (
    HPKE,
    NONCE_SIZE,
    SEALED_NONCE_SIZE,
    Keypair,
    PublicKey,
    nonce_info,
    nonces_equal,
    open_nonce,
    seal_nonce,
)

ALICE = Keypair.from_private_raw(bytes(range(32)))
BOB = Keypair.from_private_raw(bytes(range(32, 64)))


def test_pem_round_trip_without_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    ALICE.save(path)
    loaded = Keypair.load(path)
    assert loaded.public_key == ALICE.public_key
    assert loaded.to_private_raw() == ALICE.to_private_raw()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_pem_round_trip_with_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    ALICE.save(path, b"correct horse")
    assert b"ENCRYPTED" in path.read_bytes()
    assert Keypair.load(path, b"correct horse").public_key == ALICE.public_key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_wrong_passphrase_is_key_file_error(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    ALICE.save(path, b"right")
    with pytest.raises(KeyFileError):
        Keypair.load(path, b"wrong")
    with pytest.raises(KeyFileError):
        Keypair.load(path)  # encrypted key, no passphrase


def test_passphrase_given_for_plain_key_is_key_file_error(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    ALICE.save(path)
    with pytest.raises(KeyFileError):
        Keypair.load(path, b"unexpected")


def test_missing_and_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError):
        Keypair.load(tmp_path / "absent.pem")
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"not a key at all")
    with pytest.raises(KeyFileError):
        Keypair.load(junk)
    with pytest.raises(KeyFileError):
        PublicKey.load(junk)


def test_save_refuses_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    ALICE.save(path)
    with pytest.raises(KeyFileError):
        BOB.save(path)
    assert Keypair.load(path).public_key == ALICE.public_key
    BOB.save(path, overwrite=True)
    assert Keypair.load(path).public_key == BOB.public_key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.pem"]  # no temp files left


def test_public_key_forms(tmp_path: Path) -> None:
    pub = ALICE.public_key
    assert PublicKey.from_pem(pub.to_pem()) == pub
    assert PublicKey.parse(pub.hex()) == pub
    assert PublicKey.parse(pub.to_pem().decode()) == pub
    path = tmp_path / "k.pem"
    ALICE.save(path)
    assert PublicKey.load(path) == pub  # private file -> public half
    pub_path = tmp_path / "k.pub"
    pub_path.write_bytes(pub.to_pem())
    assert PublicKey.load(pub_path) == pub
    assert len({pub, PublicKey.from_raw(pub.raw)}) == 1
    assert (ALICE.public_key < BOB.public_key) == (ALICE.public_key.raw < BOB.public_key.raw)


def test_fingerprint_is_sha256_prefix() -> None:
    import hashlib

    pub = ALICE.public_key
    fp = pub.fingerprint()
    assert fp == ":".join(f"{b:02x}" for b in hashlib.sha256(pub.raw).digest()[:8])
    assert len(fp.split(":")) == 8
    assert fp != BOB.public_key.fingerprint()


@pytest.mark.parametrize(
    "text", ["", "zz" * 32, "ab" * 31, "ab" * 33, "-----BEGIN PUBLIC KEY-----"]
)
def test_public_key_parse_rejects(text: str) -> None:
    with pytest.raises(KeyFileError):
        PublicKey.parse(text)


def test_public_key_wrong_size() -> None:
    with pytest.raises(KeyFileError):
        PublicKey.from_raw(b"\x00" * 31)
    with pytest.raises(KeyFileError):
        Keypair.from_private_raw(b"\x00" * 33)


def test_seal_open_round_trip_with_injected_source() -> None:
    info = nonce_info("AdvertiseChallenge", ALICE.public_key.raw, BOB.public_key.raw)
    nonce, sealed = seal_nonce(ALICE.public_key, info, nonce_source=lambda n: b"\x42" * n)
    assert nonce == b"\x42" * NONCE_SIZE
    assert len(sealed) == SEALED_NONCE_SIZE
    assert open_nonce(ALICE, sealed, info) == nonce


def test_nonce_info_layout() -> None:
    info = nonce_info("PeerChallenge", b"\x01" * 32, b"\x02" * 32)
    assert info == b"p2psc v1 PeerChallenge\x00" + b"\x01" * 32 + b"\x02" * 32


def test_open_with_wrong_key_fails() -> None:
    info = b"ctx"
    _, sealed = seal_nonce(ALICE.public_key, info)
    with pytest.raises(CryptoError):
        open_nonce(BOB, sealed, info)


def test_open_with_wrong_info_fails() -> None:
    a, b = ALICE.public_key.raw, BOB.public_key.raw
    _, sealed = seal_nonce(ALICE.public_key, nonce_info("PeerChallenge", a, b))
    with pytest.raises(CryptoError):
        open_nonce(ALICE, sealed, nonce_info("PeerChallengeResponse", a, b))
    with pytest.raises(CryptoError):
        open_nonce(ALICE, sealed, nonce_info("PeerChallenge", a, a))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, SEALED_NONCE_SIZE * 8 - 1))
def test_open_tampered_fails(bit: int) -> None:
    _, sealed = seal_nonce(ALICE.public_key, b"ctx")
    tampered = bytearray(sealed)
    tampered[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(CryptoError):
        open_nonce(ALICE, bytes(tampered), b"ctx")


@pytest.mark.parametrize("size", [0, 79, 81, 200])
def test_open_wrong_length_fails(size: int) -> None:
    with pytest.raises(CryptoError):
        HPKE.open(ALICE, b"\x00" * size, b"ctx")


def test_seal_rejects_wrong_nonce_size() -> None:
    with pytest.raises(CryptoError):
        HPKE.seal(ALICE.public_key, b"short", b"ctx")
    with pytest.raises(CryptoError):
        seal_nonce(ALICE.public_key, b"ctx", nonce_source=lambda n: b"\x00" * (n - 1))


def test_seal_is_randomised() -> None:
    nonce = b"\x07" * NONCE_SIZE
    assert HPKE.seal(ALICE.public_key, nonce, b"x") != HPKE.seal(ALICE.public_key, nonce, b"x")


def test_nonces_equal() -> None:
    assert nonces_equal(b"\x01" * 32, b"\x01" * 32)
    assert not nonces_equal(b"\x01" * 32, b"\x01" * 31 + b"\x02")
    assert not nonces_equal(b"\x01" * 32, b"\x01" * 31)


@pytest.mark.parametrize("raw", [b"\x00" * 32, b"\x01" + b"\x00" * 31])
def test_seal_to_low_order_point_is_crypto_error(raw: bytes) -> None:
    with pytest.raises(CryptoError):
        seal_nonce(PublicKey.from_raw(raw), b"ctx")


def test_injected_crypto_is_used() -> None:
    calls: list[str] = []

    class Recording:
        def seal(self, recipient: PublicKey, nonce: bytes, info: bytes) -> bytes:
            calls.append("seal")
            return b"S" * SEALED_NONCE_SIZE

        def open(self, keypair: Keypair, sealed: bytes, info: bytes) -> bytes:
            calls.append("open")
            return b"N" * NONCE_SIZE

    crypto = Recording()
    _, sealed = seal_nonce(ALICE.public_key, b"i", crypto=crypto)
    assert sealed == b"S" * SEALED_NONCE_SIZE
    assert open_nonce(ALICE, sealed, b"i", crypto=crypto) == b"N" * NONCE_SIZE
    assert calls == ["seal", "open"]
