"""INSECURE LEGACY: the RSA identities and nonce encryption of protocol version 0.

Why this exists: the original C++ p2psc client identifies peers by RSA public keys, sent as PEM
``RSA PUBLIC KEY`` (PKCS#1) text, and proves key ownership by decrypting a nonce that is a
decimal string, encrypted with RSA PKCS#1 v1.5 padding and base64 encoded. We reproduce exactly
that, byte for byte, and nothing more. Known weaknesses (see ``spec/legacy.md``): PKCS#1 v1.5
encryption invites padding-oracle attacks (Bleichenbacher), the nonce is bound to no context (a
challenge can be relayed to the key's owner by a man in the middle of an unauthenticated
mediator connection), and nothing is authenticated after the handshake. Never use this for
anything but talking to version 0 peers.

Failures are :class:`p2psc.errors.CryptoError` (encrypt/decrypt), :class:`KeyFileError` (key
files and user-supplied text) or :class:`ProtocolError` (a key received on the wire).

Keys: RSA, public exponent 65537, 2048 to 4096 bits (the C++ library generates 2048). Peers are
matched by the canonical PKCS#1 form of their key, so two PEM texts of the same key match even if
their whitespace differs.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from p2psc.errors import CryptoError, KeyFileError, ProtocolError

__all__ = [
    "DEFAULT_BITS",
    "MAX_BITS",
    "MAX_NONCE_DIGITS",
    "MIN_BITS",
    "NONCE_BYTES",
    "PUBLIC_EXPONENT",
    "RSA_PKCS1V15",
    "LegacyCrypto",
    "NonceSource",
    "RsaKeypair",
    "RsaPkcs1v15",
    "RsaPublicKey",
    "decrypt_nonce",
    "encrypt_nonce",
    "new_nonce",
    "nonces_equal",
]

PUBLIC_EXPONENT = 65537
DEFAULT_BITS = 2048
MIN_BITS = 2048
MAX_BITS = 4096
NONCE_BYTES = 16
"""Random bytes behind one of our nonces (shown as a decimal string of up to 39 digits)."""
MAX_NONCE_DIGITS = 200
"""Longest decimal nonce we accept from others (PKCS#1 v1.5 on RSA-2048 carries <= 245 bytes)."""

NonceSource = Callable[[int], bytes]
"""Randomness, injected: ``source(n) -> n bytes`` (default :func:`secrets.token_bytes`)."""

_PAD = padding.PKCS1v15()


def _check_rsa_public(key: object, error: type[KeyFileError] | type[ProtocolError]) -> None:
    if not isinstance(key, rsa.RSAPublicKey):
        raise error("not an RSA key (legacy peers use RSA)")
    numbers = key.public_numbers()
    if numbers.e != PUBLIC_EXPONENT:
        raise error(f"RSA public exponent {numbers.e} is not {PUBLIC_EXPONENT}")
    if not MIN_BITS <= key.key_size <= MAX_BITS:
        raise error(f"RSA key of {key.key_size} bits is outside {MIN_BITS}..{MAX_BITS}")


@dataclass(frozen=True, slots=True)
class RsaPublicKey:
    """A legacy identity: an RSA public key, compared and hashed by its PKCS#1 DER bytes."""

    der: bytes
    _key: rsa.RSAPublicKey = field(compare=False, hash=False, repr=False)

    @classmethod
    def from_key(cls, key: rsa.RSAPublicKey) -> RsaPublicKey:
        _check_rsa_public(key, KeyFileError)
        der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
        return cls(der, key)

    @classmethod
    def _parse(cls, data: bytes, error: type[KeyFileError] | type[ProtocolError]) -> RsaPublicKey:
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise error(f"not a PEM public key: {exc}") from None
        _check_rsa_public(key, error)
        assert isinstance(key, rsa.RSAPublicKey)
        der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
        return cls(der, key)

    @classmethod
    def from_pem(cls, data: bytes | str) -> RsaPublicKey:
        """PEM text from a user or a file (PKCS#1 or SubjectPublicKeyInfo); KeyFileError."""
        raw = data.encode("utf-8", "replace") if isinstance(data, str) else data
        return cls._parse(raw, KeyFileError)

    @classmethod
    def from_wire(cls, text: str) -> RsaPublicKey:
        """A key received in a legacy message; a bad one is the sender's ProtocolError."""
        if len(text) > 4096:
            raise ProtocolError("legacy key text is too long")
        return cls._parse(text.encode("utf-8", "replace"), ProtocolError)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RsaPublicKey:
        """A public key file, or a private key file (its public half)."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise KeyFileError(f"cannot read {path}: {exc.strerror or exc}") from None
        if b"PRIVATE KEY" in data:
            return RsaKeypair.from_pem(data).public_key
        return cls.from_pem(data)

    @property
    def key(self) -> rsa.RSAPublicKey:
        return self._key

    @property
    def bits(self) -> int:
        return self._key.key_size

    def to_pem(self) -> bytes:
        """``-----BEGIN RSA PUBLIC KEY-----`` PKCS#1, 64-character lines, trailing newline: the
        exact bytes the C++ library sends (OpenSSL ``PEM_write_bio_RSAPublicKey``)."""
        return self._key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)

    def to_wire(self) -> str:
        return self.to_pem().decode("ascii")

    def fingerprint(self) -> str:
        """First 8 bytes of SHA-256 of the PKCS#1 DER, hex with ':' (for humans and logs)."""
        return ":".join(f"{b:02x}" for b in sha256(self.der).digest()[:8])


class RsaKeypair:
    """A legacy RSA private key and its public half."""

    __slots__ = ("_private", "public_key")

    def __init__(self, private_key: rsa.RSAPrivateKey) -> None:
        self._private = private_key
        self.public_key = RsaPublicKey.from_key(private_key.public_key())

    @classmethod
    def generate(cls, bits: int = DEFAULT_BITS) -> RsaKeypair:
        if not MIN_BITS <= bits <= MAX_BITS:
            raise KeyFileError(f"RSA key size {bits} is outside {MIN_BITS}..{MAX_BITS}")
        return cls(rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=bits))

    @classmethod
    def from_pem(cls, data: bytes, passphrase: bytes | None = None) -> RsaKeypair:
        """``RSA PRIVATE KEY`` (as the C++ library writes) or PKCS#8; KeyFileError."""
        try:
            key = serialization.load_pem_private_key(data, password=passphrase)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise KeyFileError(f"cannot load RSA private key: {exc}") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise KeyFileError("not an RSA private key (legacy peers use RSA)")
        return cls(key)

    @classmethod
    def load(cls, path: str | os.PathLike[str], passphrase: bytes | None = None) -> RsaKeypair:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise KeyFileError(f"cannot read {path}: {exc.strerror or exc}") from None
        return cls.from_pem(data, passphrase)

    def to_pem(self, passphrase: bytes | None = None) -> bytes:
        """Traditional OpenSSL ``RSA PRIVATE KEY`` PEM, which the C++ library can load."""
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption()
        )
        return self._private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, encryption
        )

    def save(
        self,
        path: str | os.PathLike[str],
        passphrase: bytes | None = None,
        *,
        overwrite: bool = False,
    ) -> None:
        """Write :meth:`to_pem` to ``path`` with mode 0600: created exclusively, or with
        ``overwrite`` written to a fresh 0600 file that then atomically replaces ``path``."""
        data = self.to_pem(passphrase)
        target = Path(path)
        temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(temp if overwrite else target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            if overwrite:
                os.replace(temp, target)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise KeyFileError(f"cannot write {path}: {exc.strerror or exc}") from None

    def decrypt(self, ciphertext: bytes) -> bytes:
        try:
            return self._private.decrypt(ciphertext, _PAD)
        except ValueError:
            raise CryptoError("RSA PKCS#1 v1.5 decryption failed") from None


# --- nonces ------------------------------------------------------------------------------


def new_nonce(source: NonceSource = secrets.token_bytes) -> str:
    """A fresh nonce: :data:`NONCE_BYTES` random bytes as a decimal string."""
    return str(int.from_bytes(source(NONCE_BYTES), "big"))


def _check_nonce(nonce: str) -> None:
    if not nonce or len(nonce) > MAX_NONCE_DIGITS or not (nonce.isascii() and nonce.isdigit()):
        raise CryptoError("a legacy nonce must be 1..200 decimal digits")


def encrypt_nonce(public_key: RsaPublicKey, nonce: str) -> str:
    """RSA PKCS#1 v1.5 encrypt the decimal ``nonce`` to ``public_key``; standard base64 with
    its padding (the C++ decoder stops at the first ``=``, so it reads both forms)."""
    _check_nonce(nonce)
    try:
        ciphertext = public_key.key.encrypt(nonce.encode("ascii"), _PAD)
    except ValueError as exc:
        raise CryptoError(f"RSA encryption failed: {exc}") from None
    return base64.b64encode(ciphertext).decode("ascii")


def decrypt_nonce(keypair: RsaKeypair, encrypted: str) -> str:
    """Inverse of :func:`encrypt_nonce`. CryptoError when the base64, the padding (wrong key,
    tampering) or the plaintext (not a decimal string) is wrong.

    The base64 may come with or without its ``=`` padding: the C++ library's encoder drops it
    (342 characters for RSA-2048, not 344), and its decoder accepts both forms, so we do too."""
    try:
        text = encrypted.encode("ascii")
        if len(text) % 4 and b"=" not in text:  # unpadded (C++): restore the padding
            text += b"=" * (-len(text) % 4)
        ciphertext = base64.b64decode(text, validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise CryptoError("legacy encrypted nonce is not standard base64") from None
    if len(ciphertext) != keypair.public_key.bits // 8 + (keypair.public_key.bits % 8 > 0):
        raise CryptoError("legacy encrypted nonce has the wrong length for this key")
    plaintext = keypair.decrypt(ciphertext)
    try:
        nonce = plaintext.decode("ascii")
    except UnicodeDecodeError:
        raise CryptoError("decrypted legacy nonce is not ASCII") from None
    _check_nonce(nonce)
    return nonce


def nonces_equal(a: str, b: str) -> bool:
    """Constant-time comparison of two nonce strings."""
    return hmac.compare_digest(a.encode("utf-8", "replace"), b.encode("utf-8", "replace"))


class LegacyCrypto(Protocol):
    """The nonce operations a legacy core needs; models may inject a symbolic stand-in."""

    def encrypt(self, public_key: RsaPublicKey, nonce: str) -> str: ...

    def decrypt(self, keypair: RsaKeypair, encrypted: str) -> str: ...


class RsaPkcs1v15:
    """The production :class:`LegacyCrypto`: :func:`encrypt_nonce` / :func:`decrypt_nonce`."""

    def encrypt(self, public_key: RsaPublicKey, nonce: str) -> str:
        return encrypt_nonce(public_key, nonce)

    def decrypt(self, keypair: RsaKeypair, encrypted: str) -> str:
        return decrypt_nonce(keypair, encrypted)


RSA_PKCS1V15: LegacyCrypto = RsaPkcs1v15()
