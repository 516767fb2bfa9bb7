"""The Noise Protocol Framework (revision 34) state objects, sans-IO.

What ships is ``Noise_KK_25519_ChaChaPoly_SHA256`` (:data:`PROTOCOL_NAME`): both sides know each
other's static X25519 key before they talk (the identity keys of a pairing) and the Mediator
assigns the roles, so KK needs one round trip, never sends a static key, and mixes an
ephemeral-ephemeral DH into the keys (forward secrecy). ``spec/channel.md`` says why KK and how
the record layer (:mod:`p2psc.core.channel`) uses the keys this module derives.

The pattern machinery is generic over the fundamental patterns of the Noise spec (section 7.4
and 7.5: N, K, X, NN, NK, NX, XN, XK, XX, KN, KK, KX, IN, IK, IX; no PSK modes), so the published
test vectors of all of them check the same code KK runs (``tests/test_noise_vectors.py``); only
KK has the convenience constructors :meth:`HandshakeState.initiator` and
:meth:`HandshakeState.responder`.

Design rules, and why:

- **No I/O and no randomness.** The ephemeral private key is injected by the caller (as nonces
  are injected into the other cores), so a handshake is a pure function of its inputs: the test
  vectors, the explorer and the spec's worked example replay it exactly.
- **Atomic reads.** :meth:`HandshakeState.read_message` computes everything on copies and
  commits only on success. A forged or replayed message raises a typed
  :class:`~p2psc.errors.NoiseError` and leaves the state exactly as it was, so a listener can
  drop the forgery and still complete the handshake with the real message.
- **Primitives from ``cryptography`` only.** X25519, ChaCha20-Poly1305, SHA-256 and HMAC-SHA256
  come from the ``cryptography`` package; this module only composes them as the Noise spec
  defines (HKDF is Noise's own HMAC chain of section 4.3, not RFC 5869's HKDF object, because
  Noise derives two or three outputs from one extract step).
- **Cheap snapshots.** The explorer stores states by the million, so a snapshot is a flat tuple
  of bytes and ints (hashable), and restoring it recomputes nothing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from p2psc.errors import (
    NoiseDecryptError,
    NoiseLowOrderPoint,
    NoiseMalformedMessage,
    NoiseNonceExhausted,
    NoiseStateError,
)

__all__ = [
    "DHLEN",
    "HASHLEN",
    "MAX_MESSAGE_LEN",
    "MAX_NONCE",
    "PATTERNS",
    "PROTOCOL_NAME",
    "TAGLEN",
    "CipherState",
    "HandshakeSnapshot",
    "HandshakeState",
    "Pattern",
    "protocol_name",
    "public_key",
]

PROTOCOL_NAME: Final = b"Noise_KK_25519_ChaChaPoly_SHA256"
"""The protocol p2psc runs on every direct connection; exactly 32 bytes, so it is also the
initial handshake hash (Noise section 5.2: names of HASHLEN bytes or less are zero-padded)."""

DHLEN: Final = 32
"""X25519 public key and shared secret length."""
HASHLEN: Final = 32
"""SHA-256 output length."""
TAGLEN: Final = 16
"""ChaCha20-Poly1305 authentication tag length."""
MAX_MESSAGE_LEN: Final = 65535
"""Noise's maximum message size (section 3): handshake and transport messages alike."""
MAX_NONCE: Final = 2**64 - 1
"""Reserved nonce value (section 5.1): a cipher state whose counter reaches it is spent."""

_NONCE = struct.Struct("<4xQ")  # 32 zero bits, then the 64-bit little-endian counter (5.1, 12.3)
_EMPTY: Final = b""


@dataclass(frozen=True)
class Pattern:
    """A handshake pattern: pre-message tokens of each side and the message token lists.

    Messages alternate, the initiator writes message 0. A one-way pattern has one message."""

    name: str
    initiator_pre: tuple[str, ...]
    responder_pre: tuple[str, ...]
    messages: tuple[tuple[str, ...], ...]

    @property
    def one_way(self) -> bool:
        """True for N, K and X: only the initiator ever sends (also after the handshake)."""
        return len(self.messages) == 1


def _p(name: str, ipre: str, rpre: str, *messages: str) -> Pattern:
    return Pattern(
        name,
        tuple(ipre.split()),
        tuple(rpre.split()),
        tuple(tuple(t.strip() for t in m.split(",")) for m in messages),
    )


PATTERNS: Final[dict[str, Pattern]] = {
    p.name: p
    for p in (
        # One-way patterns (section 7.4).
        _p("N", "", "s", "e, es"),
        _p("K", "s", "s", "e, es, ss"),
        _p("X", "", "s", "e, es, s, ss"),
        # Interactive fundamental patterns (section 7.5).
        _p("NN", "", "", "e", "e, ee"),
        _p("NK", "", "s", "e, es", "e, ee"),
        _p("NX", "", "", "e", "e, ee, s, es"),
        _p("XN", "", "", "e", "e, ee", "s, se"),
        _p("XK", "", "s", "e, es", "e, ee", "s, se"),
        _p("XX", "", "", "e", "e, ee, s, es", "s, se"),
        _p("KN", "s", "", "e", "e, ee, se"),
        _p("KK", "s", "s", "e, es, ss", "e, ee, se"),
        _p("KX", "s", "", "e", "e, ee, se, s, es"),
        _p("IN", "", "", "e, s", "e, ee, se"),
        _p("IK", "", "s", "e, es, s, ss", "e, ee, se"),
        _p("IX", "", "", "e, s", "e, ee, se, s, es"),
    )
}
"""The patterns this module can run, by name. p2psc ships only KK; the others exist so the
published vectors of every fundamental pattern exercise the shared token code."""


def protocol_name(pattern: str) -> bytes:
    """The full Noise protocol name of ``pattern`` with this module's fixed suite."""
    return f"Noise_{pattern}_25519_ChaChaPoly_SHA256".encode("ascii")


# --- primitives (Noise section 4, composed from cryptography) -----------------------------------


def public_key(private: bytes) -> bytes:
    """The raw X25519 public key of a raw 32-byte private key."""
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def _dh(private: X25519PrivateKey, public: bytes) -> bytes:
    """X25519; an all-zero result (low-order ``public``) is refused, as Noise section 9.1 lets
    implementations do: it would make the DH contribute nothing an attacker does not know."""
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as exc:  # cryptography refuses the all-zero shared secret
        raise NoiseLowOrderPoint("X25519 with a low-order public key") from exc


_SHA256 = hashes.SHA256()
_HASH = hashes.Hash(_SHA256)  # never finalized: copied, which is cheaper than a new object


def _hash(data: bytes) -> bytes:
    digest = _HASH.copy()
    digest.update(data)
    return digest.finalize()


def _hmac(key: bytes, data: bytes) -> bytes:
    mac = hmac.HMAC(key, _SHA256)
    mac.update(data)
    return mac.finalize()


def _hkdf2(chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    """Noise's HKDF with two outputs (section 4.3)."""
    temp = _hmac(chaining_key, ikm)
    out1 = _hmac(temp, b"\x01")
    return out1, _hmac(temp, out1 + b"\x02")


def _nonce(n: int) -> bytes:
    return _NONCE.pack(n)


def _encrypt(k: bytes, n: int, ad: bytes, plaintext: bytes) -> bytes:
    return ChaCha20Poly1305(k).encrypt(_nonce(n), plaintext, ad)


def _decrypt(k: bytes, n: int, ad: bytes, ciphertext: bytes) -> bytes:
    try:
        return ChaCha20Poly1305(k).decrypt(_nonce(n), ciphertext, ad)
    except Exception as exc:  # InvalidTag, or a ciphertext shorter than the tag
        raise NoiseDecryptError("handshake message failed authentication") from exc


# --- CipherState ----------------------------------------------------------------------------------


class CipherState:
    """A transport cipher: key ``k`` and nonce counter ``n`` (Noise section 5.1).

    Created by :meth:`HandshakeState.split`; holds one ChaCha20Poly1305 object for its whole
    life (creating one per message would cost more than sealing a small record). The counter
    advances only when an operation succeeds, so a forged record that fails authentication does
    not desynchronise the two sides' nonces (the record layer still kills the channel on it)."""

    __slots__ = ("_aead", "_k", "_n")

    def __init__(self, key: bytes, n: int = 0) -> None:
        if len(key) != 32:
            raise ValueError("a CipherState key is 32 bytes")
        if not 0 <= n <= MAX_NONCE:
            raise ValueError("nonce out of range")
        self._k = bytes(key)
        self._n = n
        self._aead = ChaCha20Poly1305(self._k)

    @property
    def n(self) -> int:
        """The next nonce this state will use (read-only; for tests and snapshots)."""
        return self._n

    @property
    def key(self) -> bytes:
        """The 32-byte key (for snapshots and tests; secret)."""
        return self._k

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes | memoryview) -> bytes:
        """Seal ``plaintext`` with the next nonce; ``ad`` is authenticated, not sent."""
        n = self._n
        if n >= MAX_NONCE:
            raise NoiseNonceExhausted("nonce 2**64-1 is reserved: this cipher state is spent")
        ciphertext = self._aead.encrypt(_NONCE.pack(n), plaintext, ad)
        self._n = n + 1
        return ciphertext

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes | memoryview) -> bytes:
        """Open ``ciphertext`` with the next nonce; on failure the counter stays unchanged."""
        n = self._n
        if n >= MAX_NONCE:
            raise NoiseNonceExhausted("nonce 2**64-1 is reserved: this cipher state is spent")
        try:
            plaintext = self._aead.decrypt(_NONCE.pack(n), ciphertext, ad)
        except Exception as exc:  # InvalidTag, or shorter than a tag
            raise NoiseDecryptError("transport message failed authentication") from exc
        self._n = n + 1
        return plaintext

    def copy(self) -> CipherState:
        """An independent state with the same key and counter."""
        return CipherState(self._k, self._n)

    def __repr__(self) -> str:
        return f"CipherState(n={self._n})"


# --- HandshakeState -------------------------------------------------------------------------------

HandshakeSnapshot = tuple[
    str,  # pattern name
    bool,  # initiator?
    bytes,  # prologue-bound chaining key ck
    bytes,  # handshake hash h
    bytes | None,  # k (None before the first DH)
    int,  # n
    int,  # index of the next message
    bytes | None,  # s (private)
    bytes | None,  # s (public)
    bytes | None,  # e (private)
    bytes | None,  # e (public)
    bytes | None,  # rs
    bytes | None,  # re
]
"""A flat, hashable picture of a :class:`HandshakeState` (see :meth:`HandshakeState.snapshot`)."""


class HandshakeState:
    """One side of a Noise handshake (section 5.3), including its SymmetricState (5.2).

    Build one with :meth:`initiator` / :meth:`responder` (KK) or :meth:`for_pattern`. Each
    :meth:`write_message` / :meth:`read_message` handles the next message of the pattern in turn;
    after the last one :attr:`complete` is true and :meth:`split` gives the transport ciphers.
    """

    __slots__ = (
        "_ck",
        "_e",
        "_e_key",
        "_e_pub",
        "_h",
        "_index",
        "_initiator",
        "_k",
        "_n",
        "_pattern",
        "_re",
        "_rs",
        "_s",
        "_s_key",
        "_s_pub",
    )

    _pattern: Pattern
    _initiator: bool
    _ck: bytes
    _h: bytes
    _k: bytes | None
    _n: int
    _index: int
    _s: bytes | None
    _s_pub: bytes | None
    _e: bytes | None
    _e_pub: bytes | None
    _rs: bytes | None
    _re: bytes | None
    # The cryptography key objects of s and e, built once: importing a raw X25519 private key
    # costs a scalar multiplication (OpenSSL derives the public key), as much as a DH. Not
    # part of the snapshot; rebuilt on first use after from_snapshot.
    _s_key: X25519PrivateKey | None
    _e_key: X25519PrivateKey | None

    # --- construction ---------------------------------------------------------------------------

    @classmethod
    def initiator(
        cls,
        static_private: bytes,
        remote_static: bytes,
        prologue: bytes,
        ephemeral_private: bytes,
    ) -> HandshakeState:
        """The KK initiator (p2psc's Client): our static key, the responder's static public
        key, the prologue both sides must agree on, and the injected ephemeral private key."""
        return cls.for_pattern(
            "KK",
            initiator=True,
            prologue=prologue,
            static_private=static_private,
            ephemeral_private=ephemeral_private,
            remote_static=remote_static,
        )

    @classmethod
    def responder(
        cls,
        static_private: bytes,
        remote_static: bytes,
        prologue: bytes,
        ephemeral_private: bytes,
    ) -> HandshakeState:
        """The KK responder (p2psc's Peer); arguments as for :meth:`initiator`."""
        return cls.for_pattern(
            "KK",
            initiator=False,
            prologue=prologue,
            static_private=static_private,
            ephemeral_private=ephemeral_private,
            remote_static=remote_static,
        )

    @classmethod
    def for_pattern(
        cls,
        pattern: str,
        *,
        initiator: bool,
        prologue: bytes,
        static_private: bytes | None = None,
        ephemeral_private: bytes | None = None,
        remote_static: bytes | None = None,
    ) -> HandshakeState:
        """Initialize (section 5.3) any pattern of :data:`PATTERNS` with the keys it needs.

        Keys are raw 32-byte X25519 values. A key the pattern needs but the caller did not give
        raises ``ValueError`` here (a programming error), never later on the wire."""
        try:
            pat = PATTERNS[pattern]
        except KeyError:
            raise ValueError(f"unsupported handshake pattern {pattern!r}") from None
        for name, key in (
            ("static_private", static_private),
            ("ephemeral_private", ephemeral_private),
            ("remote_static", remote_static),
        ):
            if key is not None and len(key) != DHLEN:
                raise ValueError(f"{name} must be {DHLEN} bytes")
        self = cls.__new__(cls)
        self._pattern = pat
        self._initiator = initiator
        full_name = protocol_name(pattern)
        h = full_name.ljust(HASHLEN, b"\x00") if len(full_name) <= HASHLEN else _hash(full_name)
        self._ck = h
        self._h = _hash(h + prologue)
        self._k = None
        self._n = 0
        self._index = 0
        self._s, self._s_key, self._s_pub = _keypair(static_private)
        self._e, self._e_key, self._e_pub = _keypair(ephemeral_private)
        self._rs = None if remote_static is None else bytes(remote_static)
        self._re = None
        # Pre-messages (section 7.1), the initiator's first: in the fundamental patterns a
        # pre-message is at most one static key ("s"), ours or the other side's.
        for owner_is_initiator, tokens in ((True, pat.initiator_pre), (False, pat.responder_pre)):
            if tokens:
                ours = owner_is_initiator == initiator
                key = self._s_pub if ours else self._rs
                if key is None:
                    needed = "static_private" if ours else "remote_static"
                    raise ValueError(f"this pattern's pre-message needs {needed}")
                self._h = _hash(self._h + key)
        needs_e = any("e" in m for i, m in enumerate(pat.messages) if (i % 2 == 0) == initiator)
        if needs_e and self._e is None:
            raise ValueError("this pattern needs an ephemeral_private key")
        needs_s = "s" in (pat.initiator_pre if initiator else pat.responder_pre) or any(
            "s" in m for i, m in enumerate(pat.messages) if (i % 2 == 0) == initiator
        )
        if needs_s and self._s is None:
            raise ValueError("this pattern needs a static_private key")
        return self

    # --- state --------------------------------------------------------------------------------

    @property
    def is_initiator(self) -> bool:
        """True on the side that writes the first message."""
        return self._initiator

    @property
    def complete(self) -> bool:
        """True once every message of the pattern was written or read."""
        return self._index >= len(self._pattern.messages)

    @property
    def handshake_hash(self) -> bytes:
        """The transcript hash ``h`` (section 5.2); after completion both sides hold the same
        value, unique to this session: the channel binding p2psc exposes as the session id."""
        return self._h

    @property
    def remote_static(self) -> bytes | None:
        """The other side's static public key (given for KK; learned from the wire for XX)."""
        return self._rs

    @property
    def remote_ephemeral(self) -> bytes | None:
        """The other side's ephemeral public key, once it has been read."""
        return self._re

    @property
    def our_turn(self) -> bool:
        """True when the next operation is :meth:`write_message` (false once complete)."""
        return not self.complete and (self._index % 2 == 0) == self._initiator

    def copy(self) -> HandshakeState:
        """An independent handshake state equal to this one (all fields are immutable)."""
        other = HandshakeState.__new__(HandshakeState)
        for slot in HandshakeState.__slots__:
            setattr(other, slot, getattr(self, slot))
        return other

    def snapshot(self) -> HandshakeSnapshot:
        """A hashable tuple of the whole state; restore it with :meth:`from_snapshot`.

        It contains private keys: keep snapshots in memory (the explorer), never log them."""
        return (
            self._pattern.name,
            self._initiator,
            self._ck,
            self._h,
            self._k,
            self._n,
            self._index,
            self._s,
            self._s_pub,
            self._e,
            self._e_pub,
            self._rs,
            self._re,
        )

    @classmethod
    def from_snapshot(cls, snapshot: HandshakeSnapshot) -> HandshakeState:
        """Rebuild the state :meth:`snapshot` described, without recomputing anything."""
        self = cls.__new__(cls)
        (
            pattern,
            self._initiator,
            self._ck,
            self._h,
            self._k,
            self._n,
            self._index,
            self._s,
            self._s_pub,
            self._e,
            self._e_pub,
            self._rs,
            self._re,
        ) = snapshot
        self._pattern = PATTERNS[pattern]
        self._s_key = self._e_key = None
        return self

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HandshakeState) and self.snapshot() == other.snapshot()

    def __hash__(self) -> int:
        return hash(self.snapshot())

    def __repr__(self) -> str:
        role = "initiator" if self._initiator else "responder"
        return (
            f"HandshakeState({self._pattern.name}, {role}, "
            f"message {self._index}/{len(self._pattern.messages)})"
        )

    # --- messages -----------------------------------------------------------------------------

    def write_message(self, payload: bytes = _EMPTY) -> bytes:
        """The next handshake message, carrying ``payload`` (encrypted once a key exists).

        Atomic like :meth:`read_message`: on an error the state is unchanged."""
        if not self.our_turn:
            raise NoiseStateError(self._turn_error("write"))
        sym = _Sym(self._ck, self._h, self._k, self._n)
        out: list[bytes] = []
        for token in self._pattern.messages[self._index]:
            if token == "e":
                assert self._e_pub is not None  # checked at construction
                out.append(self._e_pub)
                sym.mix_hash(self._e_pub)
            elif token == "s":
                assert self._s_pub is not None  # checked at construction
                out.append(sym.encrypt_and_hash(self._s_pub))
            else:
                sym.mix_key(self._token_dh(token))
        out.append(sym.encrypt_and_hash(payload))
        message = b"".join(out)
        if len(message) > MAX_MESSAGE_LEN:
            raise NoiseMalformedMessage(f"handshake message of {len(message)} bytes > 65535")
        self._ck, self._h, self._k, self._n = sym.ck, sym.h, sym.k, sym.n
        self._index += 1
        return message

    def read_message(self, message: bytes) -> bytes:
        """Process the other side's next handshake message; returns its payload.

        Atomic: every check runs on copies and nothing is stored unless the whole message is
        valid. A wrong length, a low-order key or a failed tag raises a
        :class:`~p2psc.errors.NoiseError` subclass and the state is exactly as before."""
        if self.complete or self.our_turn:
            raise NoiseStateError(self._turn_error("read"))
        if len(message) > MAX_MESSAGE_LEN:
            raise NoiseMalformedMessage(f"handshake message of {len(message)} bytes > 65535")
        message = bytes(message)
        sym = _Sym(self._ck, self._h, self._k, self._n)
        re, rs = self._re, self._rs
        pos = 0
        for token in self._pattern.messages[self._index]:
            if token == "e":
                if len(message) - pos < DHLEN:
                    raise NoiseMalformedMessage("handshake message too short for an ephemeral")
                re = message[pos : pos + DHLEN]
                pos += DHLEN
                sym.mix_hash(re)
            elif token == "s":
                size = DHLEN + (TAGLEN if sym.k is not None else 0)
                if len(message) - pos < size:
                    raise NoiseMalformedMessage("handshake message too short for a static key")
                rs = sym.decrypt_and_hash(message[pos : pos + size])
                pos += size
            else:
                sym.mix_key(self._token_dh(token, re=re, rs=rs))
        rest = message[pos:]
        if sym.k is not None and len(rest) < TAGLEN:
            raise NoiseMalformedMessage("handshake message too short for its tag")
        payload = sym.decrypt_and_hash(rest)
        self._ck, self._h, self._k, self._n = sym.ck, sym.h, sym.k, sym.n
        self._re, self._rs = re, rs
        self._index += 1
        return payload

    def split(self) -> tuple[CipherState, CipherState]:
        """The transport ciphers ``(send, receive)`` for this side (section 5.2 ``Split``).

        Pure: calling it twice returns equal fresh states, so a caller must split once and
        use each cipher state for one direction only (reusing a nonce would break ChaCha20)."""
        if not self.complete:
            raise NoiseStateError("split() before the handshake is complete")
        k1, k2 = _hkdf2(self._ck, _EMPTY)
        c1, c2 = CipherState(k1), CipherState(k2)
        return (c1, c2) if self._initiator else (c2, c1)

    def _token_dh(self, token: str, *, re: bytes | None = None, rs: bytes | None = None) -> bytes:
        """The DH a token names, from this side's view (section 5.3 WriteMessage/ReadMessage)."""
        re = self._re if re is None else re
        rs = self._rs if rs is None else rs
        ini = self._initiator
        if token == "ee":
            use_s, theirs = False, re
        elif token == "ss":
            use_s, theirs = True, rs
        elif token == "es":  # initiator's e with responder's s
            use_s, theirs = (False, rs) if ini else (True, re)
        else:  # "se": initiator's s with responder's e
            use_s, theirs = (True, re) if ini else (False, rs)
        # The constructor checked that the pattern's keys were given, and the patterns read
        # every remote key before a token uses it: a missing key here is a bug, not input.
        assert theirs is not None, f"token {token!r} before the remote key it needs"
        return _dh(self._private(use_s), theirs)

    def _private(self, static: bool) -> X25519PrivateKey:
        """Our static or ephemeral key object, built from the raw key once (on first use after
        :meth:`from_snapshot`, which does not store key objects)."""
        key = self._s_key if static else self._e_key
        if key is None:
            raw = self._s if static else self._e
            assert raw is not None, "the constructor checked the keys the pattern needs"
            key = X25519PrivateKey.from_private_bytes(raw)
            if static:
                self._s_key = key
            else:
                self._e_key = key
        return key

    def _turn_error(self, op: str) -> str:
        if self.complete:
            return f"cannot {op} a message: the handshake is complete"
        return f"cannot {op} message {self._index}: it is the other side's turn"


def _keypair(
    raw: bytes | None,
) -> tuple[bytes | None, X25519PrivateKey | None, bytes | None]:
    """(raw private, key object, raw public) of an optional private key; one import each."""
    if raw is None:
        return None, None, None
    key = X25519PrivateKey.from_private_bytes(bytes(raw))
    return bytes(raw), key, key.public_key().public_bytes_raw()


class _Sym:
    """A SymmetricState's working copy (section 5.2) for one message, committed on success."""

    __slots__ = ("ck", "h", "k", "n")

    def __init__(self, ck: bytes, h: bytes, k: bytes | None, n: int) -> None:
        self.ck, self.h, self.k, self.n = ck, h, k, n

    def mix_hash(self, data: bytes) -> None:
        self.h = _hash(self.h + data)

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = _hkdf2(self.ck, ikm)
        self.k, self.n = temp_k, 0

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        if self.k is None:
            ciphertext = plaintext
        else:
            # No reserved-nonce check: MixKey resets n to 0 and a handshake encrypts at most
            # twice per key, so n never comes near 2**64-1 here.
            ciphertext = _encrypt(self.k, self.n, self.h, plaintext)
            self.n += 1
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        if self.k is None:
            plaintext = ciphertext
        else:
            plaintext = _decrypt(self.k, self.n, self.h, ciphertext)
            self.n += 1
        self.mix_hash(ciphertext)
        return plaintext
