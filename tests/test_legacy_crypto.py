"""INSECURE LEGACY crypto (protocol version 0): RSA PKCS#1 PEM keys, PKCS#1 v1.5 nonces."""

from __future__ import annotations

import base64
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psc.errors import CryptoError, KeyFileError, ProtocolError
from p2psc.legacy.crypto import (
    RSA_PKCS1V15,
    RsaKeypair,
    RsaPublicKey,
    decrypt_nonce,
    encrypt_nonce,
    new_nonce,
    nonces_equal,
)


@pytest.fixture(scope="module")
def alice() -> RsaKeypair:
    return RsaKeypair.generate()


@pytest.fixture(scope="module")
def bob() -> RsaKeypair:
    return RsaKeypair.generate()


def test_public_pem_is_pkcs1_with_64_character_lines(alice: RsaKeypair) -> None:
    pem = alice.public_key.to_pem()
    lines = pem.decode("ascii").split("\n")
    assert lines[0] == "-----BEGIN RSA PUBLIC KEY-----"
    assert lines[-2] == "-----END RSA PUBLIC KEY-----"
    assert lines[-1] == ""  # trailing newline
    body = lines[1:-2]
    assert all(len(line) == 64 for line in body[:-1]) and 0 < len(body[-1]) <= 64
    assert base64.b64decode("".join(body)) == alice.public_key.der
    # the same bytes as cryptography's PKCS1 PEM serialisation (what OpenSSL writes)
    raw = alice.public_key.key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
    )
    assert pem == raw


def test_keys_match_by_key_not_by_text(alice: RsaKeypair, bob: RsaKeypair) -> None:
    wire = alice.public_key.to_wire()
    spki = alice.public_key.key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert RsaPublicKey.from_wire(wire) == alice.public_key
    assert RsaPublicKey.from_pem(spki) == alice.public_key
    assert hash(RsaPublicKey.from_wire(wire)) == hash(alice.public_key)
    assert RsaPublicKey.from_wire(bob.public_key.to_wire()) != alice.public_key
    assert len(alice.public_key.fingerprint()) == 23


def test_bad_wire_keys_are_protocol_errors() -> None:
    ed = ed25519.Ed25519PrivateKey.generate().public_key()
    ed_pem = ed.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    small = rsa.generate_private_key(65537, 1024).public_key()
    small_pem = small.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
    ).decode()
    e3 = rsa.generate_private_key(3, 2048).public_key()
    e3_pem = e3.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1).decode()
    for bad in ["", "hello", ed_pem, small_pem, e3_pem, "-----BEGIN RSA PUBLIC KEY-----\n"]:
        with pytest.raises(ProtocolError):
            RsaPublicKey.from_wire(bad)
        with pytest.raises(KeyFileError):
            RsaPublicKey.from_pem(bad)
    with pytest.raises(ProtocolError):
        RsaPublicKey.from_wire("A" * 5000)


@given(st.binary(max_size=600))
@settings(max_examples=50)
def test_garbage_keys_never_escape_untyped(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        RsaPublicKey.from_wire(raw.decode("latin-1"))


def test_nonce_roundtrip_and_format(alice: RsaKeypair) -> None:
    nonce = new_nonce()
    assert nonce.isdigit() and 1 <= len(nonce) <= 39
    encrypted = encrypt_nonce(alice.public_key, nonce)
    assert len(encrypted) == 344  # base64 of 256 bytes, standard alphabet, padded
    assert base64.b64encode(base64.b64decode(encrypted, validate=True)).decode() == encrypted
    assert decrypt_nonce(alice, encrypted) == nonce
    assert RSA_PKCS1V15.decrypt(alice, RSA_PKCS1V15.encrypt(alice.public_key, nonce)) == nonce
    # PKCS#1 v1.5 encryption is randomised
    assert encrypt_nonce(alice.public_key, nonce) != encrypted


def test_nonce_source_is_injected() -> None:
    assert new_nonce(lambda n: bytes(n - 1) + b"\x07") == "7"
    assert new_nonce(lambda n: b"\xff" * n) == str(2**128 - 1)


def test_plain_pkcs1v15_ciphertext_of_a_decimal_string_decrypts(alice: RsaKeypair) -> None:
    """What a C++ peer sends: OpenSSL RSA_PKCS1_PADDING over the decimal text, then base64."""
    raw = alice.public_key.key.encrypt(b"1804289383", padding.PKCS1v15())
    assert decrypt_nonce(alice, base64.b64encode(raw).decode()) == "1804289383"


def test_unpadded_base64_of_the_cpp_encoder_decrypts(alice: RsaKeypair) -> None:
    """The C++ library's base64 encoder drops the '=' padding: 342 characters for RSA-2048
    (issue 12). Both forms must decrypt; a length no base64 text can have must not."""
    raw = alice.public_key.key.encrypt(b"1804289383", padding.PKCS1v15())
    padded = base64.b64encode(raw).decode()
    unpadded = padded.rstrip("=")
    assert (len(padded), len(unpadded)) == (344, 342)
    assert decrypt_nonce(alice, unpadded) == "1804289383"
    assert decrypt_nonce(alice, padded) == "1804289383"
    for bad in (unpadded + "A", unpadded[:-1] + "=", unpadded + "="):
        with pytest.raises(CryptoError):
            decrypt_nonce(alice, bad)


def test_decrypt_failures_are_crypto_errors(alice: RsaKeypair, bob: RsaKeypair) -> None:
    encrypted = encrypt_nonce(alice.public_key, "123456")
    with pytest.raises(CryptoError):
        decrypt_nonce(bob, encrypted)  # wrong key
    raw = bytearray(base64.b64decode(encrypted))
    raw[0] ^= 0xFF
    raw[-1] ^= 0x01
    with pytest.raises(CryptoError):
        decrypt_nonce(alice, base64.b64encode(bytes(raw)).decode())  # tampered
    with pytest.raises(CryptoError):
        decrypt_nonce(alice, encrypted[:-4])  # too short
    with pytest.raises(CryptoError):
        decrypt_nonce(alice, "not base64!")
    with pytest.raises(CryptoError):
        decrypt_nonce(alice, "\u00e9" * 8)
    not_decimal = alice.public_key.key.encrypt(b"12a4", padding.PKCS1v15())
    with pytest.raises(CryptoError):
        decrypt_nonce(alice, base64.b64encode(not_decimal).decode())
    for bad in ["", "12 3", "-5", "1" * 201, "\u0661"]:  # \u0661 is an Arabic-Indic digit
        with pytest.raises(CryptoError):
            encrypt_nonce(alice.public_key, bad)


def test_nonces_equal() -> None:
    assert nonces_equal("123", "123")
    assert not nonces_equal("123", "124")
    assert not nonces_equal("123", "1234")


def test_keypair_files(tmp_path: Path, alice: RsaKeypair) -> None:
    plain = tmp_path / "plain.pem"
    alice.save(plain)
    assert stat.S_IMODE(plain.stat().st_mode) == 0o600
    assert plain.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----\n")
    assert RsaKeypair.load(plain).public_key == alice.public_key
    assert RsaPublicKey.load(plain) == alice.public_key
    with pytest.raises(KeyFileError):
        alice.save(plain)  # never overwrites

    locked = tmp_path / "locked.pem"
    alice.save(locked, passphrase=b"correct horse")
    assert RsaKeypair.load(locked, b"correct horse").public_key == alice.public_key
    with pytest.raises(KeyFileError):
        RsaKeypair.load(locked, b"wrong")
    with pytest.raises(KeyFileError):
        RsaKeypair.load(locked)

    public = tmp_path / "public.pem"
    public.write_bytes(alice.public_key.to_pem())
    assert RsaPublicKey.load(public) == alice.public_key
    with pytest.raises(KeyFileError):
        RsaPublicKey.load(tmp_path / "missing.pem")
    with pytest.raises(KeyFileError):
        RsaKeypair.load(public)
    ed = tmp_path / "ed.pem"
    ed.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(KeyFileError):
        RsaKeypair.load(ed)
    with pytest.raises(KeyFileError):
        RsaKeypair.generate(1024)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_openssl_interoperates(tmp_path: Path, alice: RsaKeypair) -> None:
    """The OpenSSL command line (the library the C++ client uses) reads our keys and nonces."""
    key = tmp_path / "key.pem"
    alice.save(key)
    public = tmp_path / "pub.pem"
    public.write_bytes(alice.public_key.to_pem())
    # our ciphertext -> openssl decrypts it with PKCS#1 v1.5
    encrypted = tmp_path / "nonce.bin"
    encrypted.write_bytes(base64.b64decode(encrypt_nonce(alice.public_key, "31337")))
    done = subprocess.run(
        ["openssl", "pkeyutl", "-decrypt", "-inkey", str(key), "-in", str(encrypted),
         "-pkeyopt", "rsa_padding_mode:pkcs1"],
        capture_output=True, timeout=30, check=True,
    )  # fmt: skip
    assert done.stdout == b"31337"
    # openssl's ciphertext (to our PKCS#1 public PEM) -> we decrypt it
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"2718281828")
    done = subprocess.run(
        ["openssl", "pkeyutl", "-encrypt", "-pubin", "-inkey", str(public), "-in", str(plain),
         "-pkeyopt", "rsa_padding_mode:pkcs1"],
        capture_output=True, timeout=30, check=True,
    )  # fmt: skip
    assert decrypt_nonce(alice, base64.b64encode(done.stdout).decode()) == "2718281828"
    # openssl writes the same PKCS#1 public PEM bytes from our private key file
    done = subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-RSAPublicKey_out"],
        capture_output=True, timeout=30, check=True,
    )  # fmt: skip
    assert done.stdout == alice.public_key.to_pem()


def test_save_with_overwrite_replaces_atomically(tmp_path: Path, alice: RsaKeypair) -> None:
    path = tmp_path / "k.pem"
    path.write_bytes(b"old")
    path.chmod(0o644)
    alice.save(path, overwrite=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert RsaKeypair.load(path).public_key == alice.public_key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.pem"]  # no temporary left
    with pytest.raises(KeyFileError):
        alice.save(tmp_path / "missing-dir" / "k.pem", overwrite=True)
