"""The one exception hierarchy of p2psc.

Errors are part of the API: every failure a caller can observe is one of these classes, each
carrying a human-readable ``reason`` (and, where the wire has one, a numeric ``code``). Catch
``P2pscError`` to catch everything p2psc raises on purpose; anything else escaping the library
is a bug.

    P2pscError
    ├── ProtocolError            malformed or unexpected bytes from the other side
    │   ├── UnsupportedVersion   the other side speaks a protocol version we do not
    │   ├── InvalidTransition    a well-formed message that is not allowed in this state
    │   └── LegacyProtocolError  a legacy (version 0, JSON) client broke its framing
    │       ├── LegacyOversized  a JSON object larger than the legacy size limit
    │       └── LegacyCoalesced  bytes followed a complete object in the same read
    ├── CryptoError              sealing/opening failed: wrong key, tampered ciphertext
    ├── KeyFileError             a key file that cannot be read, parsed or decrypted
    ├── NegotiationError         the negotiator received a byte it cannot accept
    │   └── NegotiationTimeout   the peer sent no byte before the negotiator's deadline
    ├── ConformanceError         the conformance harness cannot run (bad options, target
    │                            unreachable); a non-conforming mediator is a report, not this
    └── ConnectError             connect() did not produce a connection
        ├── MediatorUnreachable  no TCP connection to the mediator
        ├── AdvertiseAborted     the mediator refused the registration (AdvertiseAbort)
        ├── AdvertiseRetryExhausted  AdvertiseRetry answered more often than we retry
        ├── IdentityCheckFailed  a challenge was answered wrongly (mediator or peer)
        ├── PeerUnreachable      no direct TCP connection to the peer within the deadline
        ├── PartnerLost          after a coordinated introduction the mediator reported our
        │                        partner gone (its connection closed or went silent)
        ├── UnusableAddress      the mediator named a partner address that cannot be one
        ├── MediatorClosed       the mediator closed the connection before pairing us
        ├── MediatorSilent       the mediator stopped answering our keepalive while we waited
        ├── HandshakeTimeout     a step did not complete before its deadline
        └── MediatorTlsError     TLS to the mediator failed (handshake, bad record, files)
            └── TlsVerificationFailed  the mediator's certificate did not match (``mismatch``)
"""

from __future__ import annotations

__all__ = [
    "AdvertiseAborted",
    "AdvertiseRetryExhausted",
    "ConformanceError",
    "ConnectError",
    "CryptoError",
    "HandshakeTimeout",
    "IdentityCheckFailed",
    "InvalidTransition",
    "KeyFileError",
    "LegacyCoalesced",
    "LegacyOversized",
    "LegacyProtocolError",
    "MediatorClosed",
    "MediatorSilent",
    "MediatorTlsError",
    "MediatorUnreachable",
    "NegotiationError",
    "NegotiationTimeout",
    "P2pscError",
    "PartnerLost",
    "PeerUnreachable",
    "ProtocolError",
    "TlsVerificationFailed",
    "UnsupportedVersion",
    "UnusableAddress",
]


class P2pscError(Exception):
    """Base of every error p2psc raises on purpose."""

    def __init__(self, reason: str, *, code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code

    def __repr__(self) -> str:
        code = "" if self.code is None else f", code={self.code}"
        return f"{type(self).__name__}({self.reason!r}{code})"


class ProtocolError(P2pscError):
    """The other side sent bytes that break the protocol (framing, fields or order)."""


class UnsupportedVersion(ProtocolError):
    """The other side speaks a protocol version this implementation does not."""


class InvalidTransition(ProtocolError):
    """A well-formed event arrived in a state whose machine has no transition for it."""

    def __init__(self, machine: str, state: str, event: str) -> None:
        super().__init__(f"{machine}: event {event!r} is not allowed in state {state!r}")
        self.machine = machine
        self.state = state
        self.event = event


class LegacyProtocolError(ProtocolError):
    """A legacy (version 0, JSON) client sent bytes that are not one valid legacy message.

    INSECURE LEGACY: only :mod:`p2psc.legacy` raises this (and its subclasses)."""


class LegacyOversized(LegacyProtocolError):
    """A legacy JSON object grew past the size limit before it was complete."""


class LegacyCoalesced(LegacyProtocolError):
    """More bytes followed a complete legacy JSON object before it was answered.

    The version 0 protocol is lock-step and its C++ parser rejects two objects in one read, so we
    reject them too rather than accept a stream the original implementation would not."""


class CryptoError(P2pscError):
    """A cryptographic operation failed: wrong key, wrong context or tampered data."""


class KeyFileError(P2pscError):
    """A key file or key string could not be read, parsed or decrypted."""


class NegotiationError(P2pscError):
    """The negotiator received a byte that is not valid in its current state."""


class NegotiationTimeout(NegotiationError, TimeoutError):
    """The peer sent no negotiator byte before the deadline: it is silent or gone."""


class ConformanceError(P2pscError):
    """The conformance harness cannot run: bad options, no scenario selected, or the mediator
    under test cannot be reached at all.

    Why a separate error: a mediator that answers wrongly is what the harness exists to report
    (a failed scenario in the report), while this means there is no report to give."""


class ConnectError(P2pscError):
    """connect() did not produce a connection; the subclass says why."""


class MediatorUnreachable(ConnectError):
    """No TCP connection to the mediator could be made."""


class AdvertiseAborted(ConnectError):
    """The mediator refused our registration with AdvertiseAbort (see ``code``)."""


class AdvertiseRetryExhausted(ConnectError):
    """The mediator kept answering AdvertiseRetry and we ran out of retries."""


class IdentityCheckFailed(ConnectError):
    """A challenge was answered wrongly: someone does not own the key they claim."""


class PeerUnreachable(ConnectError):
    """No direct TCP connection to the peer formed before the deadline."""


class PartnerLost(ConnectError):
    """After a coordinated introduction (spec/mediator.md section 4.3) the Mediator reported
    that our partner's connection to it closed or went silent before the partner reported
    leaving the punch: the partner is gone, so waiting for the punch timeout (or going to the
    relay) is pointless. ``code`` is Reason.PARTNER_LOST (12)."""


class UnusableAddress(ConnectError):
    """The Mediator named a partner address that cannot be one (unspecified, multicast,
    broadcast, port 0, or loopback while the Mediator is not): refused, never dialled."""


class MediatorClosed(ConnectError):
    """The mediator closed the connection before it paired us."""


class MediatorSilent(ConnectError, TimeoutError):
    """While we waited for our partner, the mediator left a keepalive Ping unanswered for a
    whole interval: the connection (or a NAT binding on its path) is dead, whatever the partner
    did."""


class HandshakeTimeout(ConnectError, TimeoutError):
    """A step of the handshake did not complete before its deadline."""


# --- Secure channel (issue 19): the Noise handshake state and the record layer -------------------
#
#     CryptoError
#     └── NoiseError               a Noise handshake or cipher state refused an operation
#         ├── NoiseDecryptError    an AEAD tag did not verify (forged, tampered or misrouted data)
#         ├── NoiseMalformedMessage  a handshake message of the wrong length, or too large
#         ├── NoiseLowOrderPoint   a Diffie-Hellman result was all zeros (low-order public key)
#         ├── NoiseNonceExhausted  the 64-bit nonce counter reached the reserved value 2**64-1
#         └── NoiseStateError      an operation out of turn (write/read/split at the wrong time)
#     ProtocolError
#     └── ChannelError             the record layer failed; the channel is dead from then on
#         ├── RecordTampered       a record failed authentication (tampered, reordered, replayed,
#         │                        injected, or sent under another key)
#         ├── RecordTooLarge       a length prefix above the record size limit
#         ├── RecordMalformed      an authentic record with an unknown type or a non-empty close
#         ├── DataAfterClose       bytes arrived after the authenticated close record
#         ├── TruncatedStream      the transport ended without the authenticated close record
#         └── ChannelClosed        the application used a channel that is closed or failed

__all__ += [  # appended with the secure channel, kept next to its classes
    "ChannelClosed",
    "ChannelError",
    "DataAfterClose",
    "NoiseDecryptError",
    "NoiseError",
    "NoiseLowOrderPoint",
    "NoiseMalformedMessage",
    "NoiseNonceExhausted",
    "NoiseStateError",
    "RecordMalformed",
    "RecordTampered",
    "RecordTooLarge",
    "TruncatedStream",
]


class NoiseError(CryptoError):
    """A Noise handshake or cipher state refused an operation (:mod:`p2psc.noise`).

    Why a CryptoError: every case is either forged or damaged cryptographic input or a misuse
    that would weaken the keys; catching ``CryptoError`` catches them all."""


class NoiseDecryptError(NoiseError):
    """An AEAD tag did not verify: the data was forged, tampered with, or sealed under another
    key (another session, another pair, another prologue). The state is unchanged."""


class NoiseMalformedMessage(NoiseError):
    """A handshake message whose length does not fit the pattern, or a message or payload above
    Noise's 65535-byte limit. The state is unchanged."""


class NoiseLowOrderPoint(NoiseError):
    """A Diffie-Hellman result was all zeros: the other side sent a low-order public key, which
    would make the shared secret predictable. Rejected as the Noise spec permits."""


class NoiseNonceExhausted(NoiseError):
    """The nonce counter reached 2**64-1, which Noise reserves: the cipher state is spent."""


class NoiseStateError(NoiseError):
    """A handshake operation out of turn: writing when it is the other side's turn to write,
    reading when it is ours, anything after completion, or ``split()`` before it."""


class ChannelError(ProtocolError):
    """The record layer (:mod:`p2psc.core.channel`) failed. Nothing of the offending record
    reached the application, and the channel stays failed: every later call raises again."""


class RecordTampered(ChannelError):
    """A record failed authentication. Tampering, reordering, replay, injection and a record
    sealed under another key are indistinguishable here: each one fails the AEAD tag (the nonce
    is the record's position in the stream), so one class covers them."""


class RecordTooLarge(ChannelError):
    """A record's length prefix exceeds the record size limit (``MAX_RECORD_CIPHERTEXT``).
    Detected from the two length bytes alone, before anything is buffered."""


class RecordMalformed(ChannelError):
    """An authentic record that breaks the record format: an unknown type byte, or a close
    record that carries data. Only a buggy (or hostile but keyed) peer sends one."""


class DataAfterClose(ChannelError):
    """Bytes arrived after the authenticated close record; the stream had already ended."""


class TruncatedStream(ChannelError):
    """The transport ended (EOF or reset) before the authenticated close record arrived: an
    attacker or a failure cut the stream, and what arrived may be incomplete."""


class ChannelClosed(ChannelError):
    """The application used a channel after closing it (``seal`` after ``seal_close``) or after
    it failed."""


class MediatorTlsError(ConnectError):
    """TLS between a client and the mediator failed: the handshake broke, a record was bad, or
    (mediator side) its certificate or key could not be loaded. See :mod:`p2psc.tls`."""


class TlsVerificationFailed(MediatorTlsError):
    """The mediator's certificate did not verify. ``mismatch`` says what did not match:
    ``name`` (not valid for the host name asked for), ``ca`` (no trusted issuer: system store
    or ``--mediator-ca``), ``expired`` (outside its validity period) or ``fingerprint`` (not
    the pinned certificate)."""

    def __init__(self, reason: str, *, mismatch: str) -> None:
        super().__init__(reason)
        self.mismatch = mismatch


# --- Relay (issue 14): connecting through a relay, and a relayed circuit ending -----------------
#
#     ConnectError
#     └── RelayError               connecting through the relay failed
#         ├── RelayUnreachable     no relay at the address (refused, closed, not a relay);
#         │                        also a PeerUnreachable: neither a direct nor a relayed path
#         ├── RelayRefused         the relay refused us (RelayAbort: limits, identity, no partner)
#         └── RelayTimeout         the partner did not reach the relay before our deadline
#     ChannelError
#     └── RelayLimitReached        the relay ended an established relayed circuit (a limit)

__all__ += ["RelayError", "RelayLimitReached", "RelayRefused", "RelayTimeout", "RelayUnreachable"]


class RelayError(ConnectError):
    """Connecting through the relay failed; the subclass says how (spec/relay.md)."""


class RelayUnreachable(RelayError, PeerUnreachable):
    """No relay answered at the configured address (connection refused or closed, or the
    server there is a Mediator without a relay). Also a :class:`PeerUnreachable`: no direct path
    formed either."""


class RelayRefused(RelayError):
    """The relay refused us with RelayAbort (``code``: RELAY_REFUSED over its limits,
    RELAY_NO_PARTNER when the partner did not come, IDENTITY_CHECK_FAILED, ...)."""


class RelayTimeout(RelayError, HandshakeTimeout):
    """Our deadline passed at the relay: the partner's connection never joined ours."""


class RelayLimitReached(ChannelError):
    """The relay ended an established relayed circuit, at a record boundary, because one of its
    limits (duration or data, see ``code`` and the text) was reached. The relay's message is not
    authenticated; everything received before it was."""
