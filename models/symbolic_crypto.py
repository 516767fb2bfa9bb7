"""A deterministic, Dolev-Yao-style stand-in for HPKE nonce sealing, for the models.

Why: the explorer must rebuild cores from snapshots and deduplicate global states by hash, so
everything a core sends must be a pure function of its state. Real HPKE draws a fresh ephemeral
key per seal (different bytes every time) and costs ~100 us. Here a sealed nonce is a *symbolic
term*: ``b"DY" | recipient key | nonce | digest(info)`` (80 bytes, the size of a real sealed
nonce, so the wire codec accepts it). Only an opener holding the keypair of ``recipient`` and
presenting the same ``info`` gets the nonce back; anything else raises
:class:`~p2psc.errors.CryptoError`, exactly like HPKE. The models never let an actor read a
term addressed to someone else, which is the Dolev-Yao assumption that the encryption is perfect.

Nonces come from :func:`fixed_nonces`: each actor gets a constant nonce of its own (the
explorer cannot afford the state blow-up of fresh random values, and the properties checked do
not depend on nonce freshness across sessions).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from p2psc.errors import CryptoError

if TYPE_CHECKING:
    from p2psc.keys import Keypair, PublicKey

__all__ = ["SEALED_SIZE", "SymbolicCrypto", "fixed_nonces"]

SEALED_SIZE = 80
_TAG = b"DY"
_KEY = 32
_NONCE = 32
_DIGEST = SEALED_SIZE - len(_TAG) - _KEY - _NONCE


def _digest(info: bytes) -> bytes:
    return hashlib.blake2b(info, digest_size=_DIGEST).digest()


class SymbolicCrypto:
    """Implements the :class:`p2psc.keys.NonceCrypto` protocol with symbolic terms (pure)."""

    __slots__ = ("opened", "sealed")

    def __init__(self) -> None:
        self.sealed = 0
        self.opened = 0

    def seal(self, recipient: PublicKey, nonce: bytes, info: bytes) -> bytes:
        if len(nonce) != _NONCE:
            raise CryptoError(f"nonce must be {_NONCE} bytes")
        self.sealed += 1
        return _TAG + bytes(recipient.raw) + nonce + _digest(info)

    def open(self, keypair: Keypair, sealed: bytes, info: bytes) -> bytes:
        self.opened += 1
        if len(sealed) != SEALED_SIZE or not sealed.startswith(_TAG):
            raise CryptoError("not a sealed nonce")
        key = sealed[len(_TAG) : len(_TAG) + _KEY]
        if key != bytes(keypair.public_key.raw):
            raise CryptoError("sealed to another key")
        if sealed[-_DIGEST:] != _digest(info):
            raise CryptoError("sealed for another context")
        return sealed[len(_TAG) + _KEY : len(_TAG) + _KEY + _NONCE]


def fixed_nonces(label: bytes) -> Callable[[int], bytes]:
    """A nonce source that always returns the same ``size`` bytes derived from ``label``."""
    seed = hashlib.sha256(b"p2psc model nonce " + label).digest()

    def source(size: int) -> bytes:
        return (seed * (size // len(seed) + 1))[:size]

    return source
