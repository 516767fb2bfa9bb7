"""TLS to the Mediator, framework-neutral: contexts, address parsing and a sans-IO session.

Why TLS at all: in clear, anyone on the path reads both public keys of every Advertise (who
wants to talk to whom), both observed addresses, and can rewrite PeerDisconnect /
PeerIdentification. Why on the same port: the Mediator already tells version 1 ("P2") from
version 0 ("{") by the first byte; a TLS record starts with 0x16 (handshake), a third case
(:func:`looks_like_tls`).

Why sans-IO (:class:`TlsSession` over ``ssl.MemoryBIO``): the peer driver, the conformance
harness and the mediator's asyncio adapter all own their sockets (the peer's must stay the
reusable-port socket it punches holes from), so TLS must be something bytes go *through*, not a
socket wrapper: feed received ciphertext, get plaintext; give plaintext, get ciphertext to
send. Only Python's ``ssl`` does any cryptography here.

Verification (client side) is one of:

- the system trust store and the mediator's host name (default, :func:`client_context`);
- a CA file (``--mediator-ca FILE``): the chain must end there, the name must still match;
- a pinned certificate: the SHA-256 of the mediator's DER certificate (``openssl x509
  -fingerprint -sha256``); chain and name are then not consulted, the pin is the trust;
- ``insecure=True`` (``--tls-insecure``, for self-signed test mediators): encryption without
  authentication; never a default.

A failure is :class:`p2psc.errors.TlsVerificationFailed` whose ``mismatch`` names what did not
match (``name``, ``ca``, ``expired``, ``fingerprint``...).
"""

from __future__ import annotations

import hashlib
import hmac
import ssl
from dataclasses import dataclass
from os import PathLike

from p2psc.errors import MediatorTlsError, TlsVerificationFailed
from p2psc.text import printable

__all__ = [
    "DEFAULT_MEDIATOR_PORT",
    "MediatorAddress",
    "TlsClientSession",
    "TlsServerSession",
    "TlsSession",
    "certificate_fingerprint",
    "client_context",
    "looks_like_tls",
    "parse_fingerprint",
    "parse_mediator_address",
    "server_context",
]

DEFAULT_MEDIATOR_PORT = 1337
TLS_HANDSHAKE_RECORD = 0x16
"""First byte of a TLS record carrying a handshake message (a ClientHello, first of all)."""

_READ_CHUNK = 65536
StrPath = str | PathLike[str]


def looks_like_tls(first: bytes | int) -> bool:
    """Whether a connection whose first byte is ``first`` starts with a TLS ClientHello."""
    value = first if isinstance(first, int) else (first[0] if first else -1)
    return value == TLS_HANDSHAKE_RECORD


# --- addresses ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MediatorAddress:
    """Where a mediator listens and whether to speak TLS to it."""

    host: str
    port: int
    tls: bool = False

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'tls://' if self.tls else ''}{host}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port


def parse_mediator_address(
    text: str, *, default_port: int = DEFAULT_MEDIATOR_PORT, tls: bool = False
) -> MediatorAddress:
    """Parse ``host``, ``host:port``, ``[v6]:port``, ``tls://host:port`` or ``tcp://...``.

    ``tls`` is the default when no scheme is given (an explicit ``--tls`` flag).
    Raises ``ValueError`` with a readable reason for anything else.
    """
    rest = text.strip()
    scheme, sep, tail = rest.partition("://")
    if sep:
        scheme = scheme.lower()
        if scheme not in ("tls", "tcp"):
            raise ValueError(f"unknown mediator scheme {printable(scheme)!r} (tls:// or tcp://)")
        tls, rest = scheme == "tls", tail
    if not rest or "/" in rest:
        raise ValueError(f"not a mediator address: {printable(text)!r} (host[:port])")
    if rest.startswith("["):
        host, bracket, after = rest[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise ValueError(f"bad IPv6 mediator address: {printable(text)!r}")
        port_text = after[1:] if after else ""
    elif rest.count(":") == 1:
        host, _, port_text = rest.partition(":")
    elif ":" in rest:  # a bare IPv6 address without a port
        host, port_text = rest, ""
    else:
        host, port_text = rest, ""
    if not host:
        raise ValueError(f"mediator address without a host: {printable(text)!r}")
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"bad mediator port {printable(port_text)!r} (1..65535)")
        port = int(port_text)
    else:
        port = default_port
    return MediatorAddress(host, port, tls)


# --- contexts -----------------------------------------------------------------------------


def parse_fingerprint(text: str | bytes) -> bytes:
    """A SHA-256 certificate fingerprint from 32 raw bytes or 64 hex digits (colons, spaces
    and a ``sha256:`` prefix allowed, as ``openssl x509 -fingerprint -sha256`` prints)."""
    if isinstance(text, bytes) and len(text) == 32:
        return text
    value = text.decode("ascii", "replace") if isinstance(text, bytes) else text
    value = value.strip().lower()
    value = value.removeprefix("sha256:").removeprefix("sha256 fingerprint=")
    digits = value.replace(":", "").replace(" ", "")
    try:
        raw = bytes.fromhex(digits)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ValueError("a certificate pin is a SHA-256 fingerprint: 64 hex digits")
    return raw


def certificate_fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate as colon-separated upper-case hex (openssl's format)."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def client_context(
    *,
    cafile: StrPath | None = None,
    pinned: str | bytes | None = None,
    insecure: bool = False,
) -> ssl.SSLContext:
    """The ``ssl.SSLContext`` a client uses towards a mediator (TLS 1.2 or newer).

    Default: the system trust store and host-name checking. ``cafile``: trust only that CA
    bundle (PEM). ``pinned``: trust exactly the certificate with that SHA-256 fingerprint
    (checked by :class:`TlsClientSession`; chain and name are not). ``insecure``: no
    verification at all. ``pinned`` and ``insecure`` exclude ``cafile`` and each other.
    """
    if sum((cafile is not None, pinned is not None, insecure)) > 1:
        raise ValueError("choose one of cafile, pinned and insecure")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if pinned is not None or insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def server_context(certfile: StrPath, keyfile: StrPath | None = None) -> ssl.SSLContext:
    """The mediator's ``ssl.SSLContext`` from a PEM certificate chain and key (TLS >= 1.2).

    Raises :class:`MediatorTlsError` with the file and OpenSSL's reason when they cannot be
    loaded (missing, not PEM, key not matching the certificate).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as error:
        why = getattr(error, "strerror", None) or getattr(error, "reason", None) or str(error)
        raise MediatorTlsError(f"cannot load TLS certificate {certfile!s}: {why}") from None
    return context


# --- sessions -----------------------------------------------------------------------------


class TlsSession:
    """One TLS connection over memory buffers; no socket, no clock, no thread.

    Use: :meth:`receive` every chunk of ciphertext read from the socket (it returns the
    plaintext that became available), :meth:`send` plaintext (buffered until the handshake is
    done), and write :meth:`data_to_send` to the socket after each call. ``handshake_done``
    turns true once; :meth:`close` starts a clean shutdown (close_notify); ``closed_by_peer``
    says the other side sent its close_notify (a clean end of stream).
    """

    def __init__(
        self, context: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None
    ) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
        )
        self._pending_plain = bytearray()
        self.handshake_done = False
        self.closed_by_peer = False
        self._closing = False

    @property
    def ssl_object(self) -> ssl.SSLObject:
        """The underlying ``SSLObject`` (version, cipher, peer certificate)."""
        return self._ssl

    def data_to_send(self) -> bytes:
        """Ciphertext to write to the socket now (possibly empty)."""
        return self._outgoing.read()

    def start(self) -> bytes:
        """Start the handshake; return the first flight (a client's ClientHello)."""
        self._advance()
        return self.data_to_send()

    def receive(self, data: bytes) -> bytes:
        """Feed ciphertext; return the plaintext now available (``b""`` if none yet).

        Raises :class:`MediatorTlsError` (or :class:`TlsVerificationFailed`) when the other
        side breaks TLS or fails verification; the connection must then be closed.
        """
        if data:
            self._incoming.write(data)
        if not self.handshake_done:
            self._advance()
            if not self.handshake_done:
                return b""
        out = bytearray()
        while not self.closed_by_peer:
            try:
                chunk = self._ssl.read(_READ_CHUNK)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.closed_by_peer = True
                break
            except ssl.SSLError as error:
                raise MediatorTlsError(f"TLS error: {_ssl_reason(error)}") from None
            if not chunk:
                self.closed_by_peer = True
                break
            out += chunk
        return bytes(out)

    def send(self, data: bytes) -> bytes:
        """Encrypt ``data`` (kept until the handshake is done); return ciphertext to write."""
        if self._closing:
            raise MediatorTlsError("TLS session is closing: nothing more can be sent")
        if not self.handshake_done:
            self._pending_plain += data
            return self.data_to_send()
        self._write(data)
        return self.data_to_send()

    def close(self) -> bytes:
        """Send close_notify (a clean end of our stream); return the ciphertext to write."""
        if not self._closing:
            self._closing = True
            if self.handshake_done:
                try:
                    self._ssl.unwrap()
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    pass  # our close_notify is written; theirs may never come
                except ssl.SSLError:
                    pass  # the other side already broke the session: nothing to say
        return self.data_to_send()

    def _write(self, data: bytes) -> None:
        try:
            self._ssl.write(data)
        except ssl.SSLError as error:
            raise MediatorTlsError(f"TLS error: {_ssl_reason(error)}") from None

    def _advance(self) -> None:
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            return
        except ssl.SSLCertVerificationError as error:
            raise self._verification_error(error) from None
        except ssl.SSLError as error:
            raise MediatorTlsError(f"TLS handshake failed: {_ssl_reason(error)}") from None
        self.handshake_done = True
        self._handshake_done()
        if self._pending_plain:
            plain, self._pending_plain = bytes(self._pending_plain), bytearray()
            self._write(plain)

    def _handshake_done(self) -> None:
        """Hook: checks after a completed handshake (the client's pin)."""

    def _verification_error(self, error: ssl.SSLCertVerificationError) -> MediatorTlsError:
        return MediatorTlsError(f"TLS verification failed: {_ssl_reason(error)}")


class TlsClientSession(TlsSession):
    """The client side (a peer or the conformance harness towards a mediator).

    ``server_hostname`` is sent as SNI and, with the default context, checked against the
    certificate. ``pinned`` (fingerprint, see :func:`parse_fingerprint`) requires the
    mediator's certificate to be exactly that one; use it with ``client_context(pinned=...)``.
    """

    def __init__(
        self,
        context: ssl.SSLContext,
        server_hostname: str | None,
        *,
        pinned: str | bytes | None = None,
    ) -> None:
        self.server_hostname = server_hostname
        self.pinned = None if pinned is None else parse_fingerprint(pinned)
        if context.check_hostname and not server_hostname:
            raise ValueError("server_hostname is required when the context checks host names")
        super().__init__(context, server_side=False, server_hostname=server_hostname or None)

    def _handshake_done(self) -> None:
        if self.pinned is None:
            return
        der = self._ssl.getpeercert(binary_form=True)
        if not der:
            raise TlsVerificationFailed("the mediator sent no certificate", mismatch="fingerprint")
        actual = hashlib.sha256(der).digest()
        if not hmac.compare_digest(actual, self.pinned):
            raise TlsVerificationFailed(
                "mediator certificate fingerprint "
                f"{certificate_fingerprint(der)} is not the pinned "
                f"{':'.join(f'{b:02X}' for b in self.pinned)}",
                mismatch="fingerprint",
            )

    def _verification_error(self, error: ssl.SSLCertVerificationError) -> MediatorTlsError:
        code = getattr(error, "verify_code", None)
        message = printable(getattr(error, "verify_message", None) or _ssl_reason(error))
        mismatch = _VERIFY_CODES.get(code if isinstance(code, int) else -1, "ca")
        target = printable(self.server_hostname or "?")
        if mismatch == "name":
            text = f"mediator certificate is not valid for {target!r}: {message}"
        elif mismatch == "expired":
            text = f"mediator certificate of {target!r} is expired or not yet valid: {message}"
        else:
            text = f"mediator certificate of {target!r} is not trusted: {message}"
        return TlsVerificationFailed(text, mismatch=mismatch)


class TlsServerSession(TlsSession):
    """The mediator side of one accepted connection whose first byte was 0x16."""

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(context, server_side=True)


_VERIFY_CODES = {
    62: "name",  # X509_V_ERR_HOSTNAME_MISMATCH
    64: "name",  # X509_V_ERR_IP_ADDRESS_MISMATCH
    9: "expired",  # X509_V_ERR_CERT_NOT_YET_VALID
    10: "expired",  # X509_V_ERR_CERT_HAS_EXPIRED
    18: "ca",  # X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
    19: "ca",  # X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
    20: "ca",  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21: "ca",  # X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE
}
"""OpenSSL verify codes -> what did not match."""


def _ssl_reason(error: ssl.SSLError) -> str:
    reason = getattr(error, "verify_message", None) or error.reason or error.strerror
    return printable(reason or str(error))
