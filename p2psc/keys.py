"""Identity keys (X25519) and the sealed-nonce construction (HPKE, RFC 9180).

Every party in p2psc is identified by an X25519 public key. Proving ownership of a key means
opening a random nonce that someone sealed to it with HPKE base mode, DHKEM(X25519, HKDF-SHA256),
HKDF-SHA256, ChaCha20-Poly1305. The HPKE ``info`` binds the message name and both keys
(:func:`nonce_info`) so a sealed nonce cannot be replayed in another context.

All primitives come from ``cryptography``; nothing here is hand-made. Failures surface as
:class:`~p2psc.errors.CryptoError` (sealing/opening) or :class:`~p2psc.errors.KeyFileError`
(files and key text), never as raw library exceptions.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from p2psc.errors import CryptoError, KeyFileError

__all__ = [
    "HPKE",
    "HPKE_AEAD_ID",
    "HPKE_KDF_ID",
    "HPKE_KEM_ID",
    "INFO_PREFIX",
    "KEY_SIZE",
    "NONCE_SIZE",
    "SEALED_NONCE_SIZE",
    "HpkeNonceCrypto",
    "Keypair",
    "NonceCrypto",
    "NonceSource",
    "PublicKey",
    "nonce_info",
    "nonces_equal",
    "open_nonce",
    "seal_nonce",
    "system_nonces",
]

KEY_SIZE = 32
"""Raw X25519 public or private key length."""
NONCE_SIZE = 32
"""Length of a challenge nonce."""
ENC_SIZE = 32
"""Length of the HPKE encapsulated key (DHKEM X25519)."""
TAG_SIZE = 16
"""Length of the ChaCha20-Poly1305 tag."""
SEALED_NONCE_SIZE = ENC_SIZE + NONCE_SIZE + TAG_SIZE  # 80
"""Length of a sealed nonce on the wire: enc (32) | ciphertext (32) | tag (16)."""

# RFC 9180 registry identifiers of the suite, for the spec and for interoperability checks.
HPKE_KEM_ID = 0x0020  # DHKEM(X25519, HKDF-SHA256)
HPKE_KDF_ID = 0x0001  # HKDF-SHA256
HPKE_AEAD_ID = 0x0003  # ChaCha20Poly1305

INFO_PREFIX = b"p2psc v1 "

NonceSource = Callable[[int], bytes]
"""Returns n random bytes; injected so tests and models can be deterministic."""

system_nonces: NonceSource = os.urandom
"""The production nonce source: the OS CSPRNG itself (``secrets.token_bytes`` returns the same
bytes through two more Python calls; the mediator draws one nonce per registration)."""

_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
_PEM_PRIVATE = b"-----BEGIN PRIVATE KEY-----"
_PEM_ENCRYPTED = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"


@dataclass(frozen=True, slots=True, order=True)
class PublicKey:
    """An X25519 public key, compared and hashed by its 32 raw bytes."""

    raw: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != KEY_SIZE:
            raise KeyFileError(f"a public key is {KEY_SIZE} raw bytes")

    @classmethod
    def from_raw(cls, raw: bytes) -> PublicKey:
        """Wrap 32 raw bytes (as they appear on the wire)."""
        return cls(bytes(raw))

    @classmethod
    def from_pem(cls, data: bytes) -> PublicKey:
        """Parse a SubjectPublicKeyInfo PEM holding an X25519 key."""
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"not a PEM public key: {exc}") from None
        if not isinstance(key, X25519PublicKey):
            raise KeyFileError("the PEM public key is not an X25519 key")
        return cls(key.public_bytes_raw())

    @classmethod
    def parse(cls, text: str) -> PublicKey:
        """Parse 64 hex characters (as `p2psc keygen` prints) or PEM text."""
        stripped = text.strip()
        if stripped.startswith("-----BEGIN"):
            return cls.from_pem(stripped.encode("ascii", "replace"))
        compact = stripped.replace(":", "")
        if len(compact) != 2 * KEY_SIZE:
            raise KeyFileError(f"a public key is {2 * KEY_SIZE} hex characters or PEM text")
        try:
            return cls(bytes.fromhex(compact))
        except ValueError:
            raise KeyFileError("a public key in hex contains only 0-9 and a-f") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str], passphrase: bytes | None = None) -> PublicKey:
        """Load a public key PEM, or a private keypair PEM and return its public half."""
        data = _read(path)
        if _PEM_PRIVATE in data or _PEM_ENCRYPTED in data:
            return Keypair.from_pem(data, passphrase).public_key
        return cls.from_pem(data)

    def to_x25519(self) -> X25519PublicKey:
        """The cryptography object, for HPKE."""
        return X25519PublicKey.from_public_bytes(self.raw)

    def to_pem(self) -> bytes:
        """SubjectPublicKeyInfo PEM."""
        return self.to_x25519().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def hex(self) -> str:
        """64 lowercase hex characters of the raw key."""
        return self.raw.hex()

    def fingerprint(self) -> str:
        """First 8 bytes of SHA-256(raw), colon separated: short enough for humans to compare."""
        return hashlib.sha256(self.raw).digest()[:8].hex(":")

    def __repr__(self) -> str:
        return f"PublicKey({self.fingerprint()})"

    def __str__(self) -> str:
        return self.hex()


class Keypair:
    """An X25519 private key with its public half."""

    __slots__ = ("private_key", "public_key")

    def __init__(self, private_key: X25519PrivateKey) -> None:
        self.private_key = private_key
        self.public_key = PublicKey(private_key.public_key().public_bytes_raw())

    @classmethod
    def generate(cls) -> Keypair:
        """A fresh random keypair (from the OS random source)."""
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_private_raw(cls, raw: bytes) -> Keypair:
        """Build from 32 raw private bytes (tests, test vectors)."""
        if len(raw) != KEY_SIZE:
            raise KeyFileError(f"a private key is {KEY_SIZE} raw bytes")
        return cls(X25519PrivateKey.from_private_bytes(bytes(raw)))

    @classmethod
    def from_pem(cls, data: bytes, passphrase: bytes | None = None) -> Keypair:
        """Parse PKCS#8 PEM, encrypted when ``passphrase`` is given."""
        try:
            key = serialization.load_pem_private_key(data, password=passphrase)
        except TypeError as exc:
            # Raised for "password given but key not encrypted" and the reverse.
            raise KeyFileError(f"passphrase mismatch: {exc}") from None
        except ValueError:
            raise KeyFileError(
                "cannot read the private key: wrong passphrase or not a PEM private key"
            ) from None
        except Exception as exc:  # defensive: unknown library failure modes
            raise KeyFileError(f"cannot read the private key: {exc}") from None
        if not isinstance(key, X25519PrivateKey):
            raise KeyFileError("the private key is not an X25519 key")
        return cls(key)

    @classmethod
    def load(cls, path: str | os.PathLike[str], passphrase: bytes | None = None) -> Keypair:
        """Read a keypair file written by :meth:`save` (or `p2psc keygen`)."""
        return cls.from_pem(_read(path), passphrase)

    def to_private_raw(self) -> bytes:
        """32 raw private bytes (never printed; for tests)."""
        return self.private_key.private_bytes_raw()

    def to_pem(self, passphrase: bytes | None = None) -> bytes:
        """PKCS#8 PEM; encrypted with the best available scheme when a passphrase is given."""
        if passphrase:
            enc: serialization.KeySerializationEncryption = serialization.BestAvailableEncryption(
                passphrase
            )
        else:
            enc = serialization.NoEncryption()
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc
        )

    def save(
        self,
        path: str | os.PathLike[str],
        passphrase: bytes | None = None,
        *,
        overwrite: bool = False,
    ) -> None:
        """Write the PEM with mode 0600 from the first byte (no window where others can read).

        Refuses to replace an existing file unless ``overwrite``; a replaced file is swapped
        atomically so a crash never leaves a half-written key."""
        target = Path(path)
        data = self.to_pem(passphrase)
        if target.exists() and not overwrite:
            raise KeyFileError(f"{target} exists; refusing to overwrite it")
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.fchmod(fd, 0o600)
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            if overwrite:
                os.replace(tmp, target)
            else:
                # link() fails if the target appeared meanwhile: no silent overwrite race.
                os.link(tmp, target)
                os.unlink(tmp)
        except FileExistsError:
            raise KeyFileError(f"{target} exists; refusing to overwrite it") from None
        except OSError as exc:
            raise KeyFileError(f"cannot write {target}: {exc.strerror or exc}") from None
        finally:
            if tmp.exists():
                tmp.unlink()

    def __repr__(self) -> str:
        return f"Keypair({self.public_key.fingerprint()})"


def _read(path: str | os.PathLike[str]) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(1 << 16)
    except OSError as exc:
        raise KeyFileError(f"cannot read {os.fspath(path)}: {exc.strerror or exc}") from None


def nonce_info(message: str, recipient: bytes, other: bytes) -> bytes:
    """The HPKE ``info`` for a sealed nonce: binds protocol, message name and both keys."""
    return INFO_PREFIX + message.encode("ascii") + b"\x00" + bytes(recipient) + bytes(other)


class NonceCrypto(Protocol):
    """How cores seal and open nonces; models inject a deterministic symbolic version."""

    def seal(self, recipient: PublicKey, nonce: bytes, info: bytes) -> bytes:
        """Seal ``nonce`` to ``recipient`` under ``info``."""
        ...

    def open(self, keypair: Keypair, sealed: bytes, info: bytes) -> bytes:
        """Open ``sealed`` with ``keypair``; raise CryptoError when it fails."""
        ...


class HpkeNonceCrypto:
    """Production NonceCrypto: HPKE base mode, single-shot, suite (0x0020, 0x0001, 0x0003)."""

    __slots__ = ()

    def seal(self, recipient: PublicKey, nonce: bytes, info: bytes) -> bytes:
        """enc | ciphertext | tag, SEALED_NONCE_SIZE bytes for a NONCE_SIZE nonce."""
        if len(nonce) != NONCE_SIZE:
            raise CryptoError(f"a nonce is {NONCE_SIZE} bytes, got {len(nonce)}")
        try:
            return _SUITE.encrypt(nonce, recipient.to_x25519(), info=info)
        except Exception as exc:  # e.g. a low-order public key rejected by DHKEM
            raise CryptoError(f"cannot seal to this key: {exc}") from None

    def open(self, keypair: Keypair, sealed: bytes, info: bytes) -> bytes:
        """Return the nonce, or raise CryptoError (wrong key, wrong info, tampered, bad size)."""
        if len(sealed) != SEALED_NONCE_SIZE:
            raise CryptoError(f"a sealed nonce is {SEALED_NONCE_SIZE} bytes, got {len(sealed)}")
        try:
            nonce = _SUITE.decrypt(bytes(sealed), keypair.private_key, info=info)
        except InvalidTag:
            raise CryptoError(
                "sealed nonce does not open: wrong key, wrong context or tampered"
            ) from None
        except Exception as exc:
            raise CryptoError(f"sealed nonce does not open: {exc}") from None
        if len(nonce) != NONCE_SIZE:
            raise CryptoError("sealed nonce has the wrong plaintext size")
        return nonce


HPKE: NonceCrypto = HpkeNonceCrypto()
"""The production nonce crypto instance; cores take ``crypto: NonceCrypto = HPKE``."""


def seal_nonce(
    public_key: PublicKey,
    info: bytes,
    *,
    nonce_source: NonceSource = secrets.token_bytes,
    crypto: NonceCrypto = HPKE,
) -> tuple[bytes, bytes]:
    """Draw a fresh nonce and seal it to ``public_key``; returns (nonce, sealed)."""
    nonce = nonce_source(NONCE_SIZE)
    if len(nonce) != NONCE_SIZE:
        raise CryptoError(f"nonce source returned {len(nonce)} bytes, not {NONCE_SIZE}")
    return nonce, crypto.seal(public_key, nonce, info)


def open_nonce(
    keypair: Keypair, sealed: bytes, info: bytes, *, crypto: NonceCrypto = HPKE
) -> bytes:
    """Open a sealed nonce; raises CryptoError on any failure."""
    return crypto.open(keypair, sealed, info)


def nonces_equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison: a timing side channel must not leak how much of a nonce matched."""
    return hmac.compare_digest(a, b)
