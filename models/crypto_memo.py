"""Exact caches for the Noise handshake's public-key and key-derivation steps, for the models.

Why: a model rebuilds a peer core from its snapshot for every new step, and a rebuilt
``HandshakeState`` stores no key objects (only raw bytes), so every step that reads or writes a
handshake message imports the same private keys again and repeats the same X25519 exchanges and
HKDF computations on the same inputs (the explorer reaches one handshake message from many
global states). These functions are deterministic: a cached result for identical inputs is
exactly the result the real function returns, so the model still runs the real handshake code,
with the real primitives computing each distinct input once.

While a :class:`CryptoMemo` is entered (``with``), :mod:`p2psc.noise` uses it for
``X25519PrivateKey.from_private_bytes`` (one immutable key object per raw key), ``_dh`` (per
raw private key and public key; a refused low-order point raises every time, uncached) and
``_hkdf2`` (per chaining key and input key material). Entering is re-entrant and exiting always
restores the module's own functions.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

import p2psc.noise as noise_module

__all__ = ["CryptoMemo"]

_REAL_DH = noise_module._dh
_REAL_HKDF2 = noise_module._hkdf2
_PATCHED = ("X25519PrivateKey", "_dh", "_hkdf2")


class CryptoMemo:
    """See the module docstring. One per model (the caches live as long as the model)."""

    __slots__ = ("_depth", "_dh", "_hkdf", "_keys", "_raw_of", "_saved", "_shim", "hits", "misses")

    def __init__(self) -> None:
        self._keys: dict[bytes, X25519PrivateKey] = {}
        self._raw_of: dict[int, bytes] = {}  # id(key object) -> raw; objects live in _keys
        self._dh: dict[tuple[bytes, bytes], bytes] = {}
        self._hkdf: dict[tuple[bytes, bytes], tuple[bytes, bytes]] = {}
        self._saved: tuple[Any, Any, Any] | None = None
        self._depth = 0
        self.hits = 0
        self.misses = 0
        memo = self

        class _Keys:
            """Stands in for ``X25519PrivateKey`` inside :mod:`p2psc.noise` (it only calls
            ``from_private_bytes``)."""

            @staticmethod
            def from_private_bytes(data: bytes) -> X25519PrivateKey:
                return memo.private_key(data)

        self._shim = _Keys

    def private_key(self, raw: bytes) -> X25519PrivateKey:
        raw = bytes(raw)
        key = self._keys.get(raw)
        if key is None:
            key = self._keys[raw] = X25519PrivateKey.from_private_bytes(raw)
            self._raw_of[id(key)] = raw
        return key

    def dh(self, private: X25519PrivateKey, public: bytes) -> bytes:
        raw = self._raw_of.get(id(private))
        if raw is None:  # a key object that did not come from us: no identity to cache on
            return _REAL_DH(private, public)
        key = (raw, bytes(public))
        shared = self._dh.get(key)
        if shared is None:
            self.misses += 1
            shared = self._dh[key] = _REAL_DH(private, public)
        else:
            self.hits += 1
        return shared

    def hkdf2(self, chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
        key = (bytes(chaining_key), bytes(ikm))
        out = self._hkdf.get(key)
        if out is None:
            out = self._hkdf[key] = _REAL_HKDF2(chaining_key, ikm)
        return out

    def __enter__(self) -> None:
        if self._depth == 0:
            namespace = vars(noise_module)
            self._saved = tuple(namespace[name] for name in _PATCHED)
            namespace["X25519PrivateKey"] = self._shim
            namespace["_dh"] = self.dh
            namespace["_hkdf2"] = self.hkdf2
        self._depth += 1

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            assert self._saved is not None
            vars(noise_module).update(zip(_PATCHED, self._saved, strict=True))
            self._saved = None
