"""Raw peers: the harness's own sockets towards the mediator under test, with a transcript.

Why raw sockets and not :func:`p2psc.aio.connect`: a conformance harness must be able to send
what a correct client never sends (garbage, cut frames, resets, bytes out of turn) and must see
exactly what comes back, one read at a time (version 0 clients depend on "one message per read",
spec/legacy.md 1.1). Every wait has a deadline; every byte sent or received and every connection
event goes into a :class:`Transcript`, which a failed scenario shows to the mediator's author.

A :class:`RawPeer` is generic over its codec: :class:`V1Peer` speaks version 1 frames
(:mod:`p2psc.wire`), :class:`LegacyPeer` version 0 JSON objects (:mod:`p2psc.legacy.codec`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, NoReturn, TypeVar

from p2psc import wire
from p2psc.errors import MediatorTlsError, ProtocolError
from p2psc.legacy import codec
from p2psc.tls import TlsClientSession

__all__ = [
    "Got",
    "LegacyPeer",
    "RawPeer",
    "ScenarioFailed",
    "Transcript",
    "TranscriptEntry",
    "V1Peer",
    "all_of",
    "describe_legacy",
    "describe_v1",
    "reason_name",
]

SENT = "->"
RECEIVED = "<-"
EVENT = "--"

READ_SIZE = 65536
"""Bytes asked for per read on a version 1 connection (framing makes the size irrelevant)."""

M = TypeVar("M")
T = TypeVar("T")


class ScenarioFailed(Exception):
    """The mediator did something the specification forbids (or not what it requires).

    Raised inside a scenario; the runner turns it into a failed :class:`ScenarioResult` showing
    ``expected``, ``observed`` and the transcript. Not a :class:`~p2psc.errors.P2pscError`: it
    never leaves the harness."""

    def __init__(self, expected: str, observed: str) -> None:
        super().__init__(f"expected {expected}; observed {observed}")
        self.expected = expected
        self.observed = observed


async def all_of(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Run ``awaitables`` at the same time; the first exception cancels the others and is
    raised (unlike a bare gather, nothing keeps reading a socket the scenario already gave up)."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def fail(expected: str, observed: str) -> NoReturn:
    """Raise :class:`ScenarioFailed` (a function, so call sites read as one statement)."""
    raise ScenarioFailed(expected, observed)


@dataclass(frozen=True, slots=True)
class TranscriptEntry:
    """One line of a transcript: when, on which connection, which way, what."""

    time: float
    """Seconds since the scenario started."""
    conn: str
    """The label of the harness connection (e.g. ``client A``)."""
    direction: str
    """``->`` harness to mediator, ``<-`` mediator to harness, ``--`` a connection event."""
    what: str
    """Message name and key fields, or the event."""

    def format(self) -> str:
        return f"{self.time:7.3f}s  {self.conn:<14} {self.direction} {self.what}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": round(self.time, 4),
            "conn": self.conn,
            "direction": self.direction,
            "what": self.what,
        }


class Transcript:
    """Everything one scenario sent and saw, in order, stamped with the scenario's clock."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._start = clock()
        self.entries: list[TranscriptEntry] = []
        self.key_names: dict[bytes, str] = {}
        """Raw key -> the scenario's name for it, so transcripts say ``our=A`` not hex."""

    def now(self) -> float:
        """Seconds since the scenario started."""
        return self._clock() - self._start

    def add(self, conn: str, direction: str, what: str) -> None:
        self.entries.append(TranscriptEntry(self.now(), conn, direction, what))

    def key(self, raw: bytes) -> str:
        """The scenario's name of ``raw`` or a short hex prefix."""
        return self.key_names.get(raw) or f"{raw[:4].hex()}.."


def reason_name(code: int) -> str:
    """``MALFORMED`` for 7, the number itself for an unknown code."""
    try:
        return wire.Reason(code).name
    except ValueError:
        return str(code)


def describe_v1(message: wire.Message, keys: Callable[[bytes], str] | None = None) -> str:
    """A compact, human-readable rendering of a version 1 message with its key fields."""
    name = type(message).__name__
    key = keys or (lambda raw: f"{raw[:4].hex()}..")
    if isinstance(message, wire.Advertise):
        local = f", local={message.local}" if message.local is not None else ""
        return (
            f"{name}(version={message.version}, our={key(message.our_key)}, "
            f"their={key(message.their_key)}{local})"
        )
    if isinstance(message, wire.AdvertiseChallenge):
        return f"{name}(encrypted_nonce={len(message.encrypted_nonce)} bytes)"
    if isinstance(message, wire.AdvertiseResponse):
        return f"{name}(nonce={message.nonce[:4].hex()}..)"
    if isinstance(message, wire.AdvertiseAbort | wire.AdvertiseRetry):
        return f"{name}({reason_name(message.code)}, {message.text!r})"
    if isinstance(message, wire.PeerDisconnect):
        cands = "".join(f", candidate={c}" for c in message.candidates)
        return (
            f"{name}(peer={message.peer}, client={message.client}, "
            f"client_local={message.client_local or '-'}{cands})"
        )
    if isinstance(message, wire.PeerIdentification):
        cands = "".join(f", candidate={c}" for c in message.candidates)
        return (
            f"{name}(version={message.version}, peer={message.peer}, "
            f"peer_local={message.peer_local or '-'}{cands})"
        )
    if isinstance(message, wire.Ping):
        return f"{name}(token={message.token}, interval_ms={message.interval_ms})"
    if isinstance(message, wire.Pong):
        return f"{name}(token={message.token})"
    return name


def describe_legacy(message: codec.LegacyMessage) -> str:
    """A compact rendering of a version 0 message (keys and nonces abbreviated)."""
    name = type(message).__name__
    if isinstance(message, codec.Advertise):
        return f"{name}(version={message.version}, our=<RSA PEM>, their=<RSA PEM>)"
    if isinstance(message, codec.AdvertiseChallenge):
        return f"{name}(encrypted_nonce={len(message.encrypted_nonce)} base64 chars)"
    if isinstance(message, codec.AdvertiseResponse):
        return f"{name}(nonce={message.nonce[:12]}..)"
    if isinstance(message, codec.AdvertiseAbort | codec.AdvertiseRetry):
        return f"{name}({message.reason!r})"
    if isinstance(message, codec.PeerDisconnect):
        return f"{name}(port={message.port})"
    if isinstance(message, codec.PeerIdentification):
        return f"{name}(version={message.version}, ip={message.ip}, port={message.port})"
    return name


def _hex_preview(data: bytes, limit: int = 24) -> str:
    more = ".." if len(data) > limit else ""
    return f"{len(data)} bytes {data[:limit].hex(' ')}{more}"


@dataclass(frozen=True, slots=True)
class Got(Generic[M]):
    """What one wait produced: a message, or the end of the connection, or nothing in time."""

    kind: str
    """``message`` | ``eof`` | ``reset`` | ``timeout`` | ``invalid``"""
    message: M | None = None
    detail: str = ""

    def describe(self, render: Callable[[M], str]) -> str:
        if self.kind == "message" and self.message is not None:
            return render(self.message)
        if self.kind == "eof":
            return "the mediator closed the connection (EOF)"
        if self.kind == "reset":
            return f"the connection was reset ({self.detail})"
        if self.kind == "timeout":
            return f"nothing within {self.detail}"
        return f"bytes that are not a valid message: {self.detail}"

    @property
    def closed(self) -> bool:
        """The connection ended (clean close or reset)."""
        return self.kind in ("eof", "reset")


class RawPeer(Generic[M]):
    """One harness connection to the mediator: raw bytes out, decoded messages in.

    Reads are single ``recv`` calls (recorded in :attr:`reads`); decoded messages queue in an
    inbox. The end of the connection (EOF, reset, undecodable bytes) is sticky: every later wait
    returns it again.
    """

    protocol: ClassVar[str] = ""
    read_size: ClassVar[int] = READ_SIZE
    """Bytes asked for per ``recv``."""

    def __init__(
        self,
        label: str,
        sock: socket.socket,
        transcript: Transcript,
        timeout: float,
    ) -> None:
        self.label = label
        self._sock = sock
        self._transcript = transcript
        self.timeout = timeout
        """Default seconds to wait for an expected message."""
        self.reads: list[bytes] = []
        """Every chunk one ``recv`` returned, in order (for the version 0 one-read rule)."""
        self._inbox: deque[M] = deque()
        self._end: Got[M] | None = None
        self._closed_by_us = False
        self._tls: TlsClientSession | None = None
        """The TLS session when the connection runs inside TLS (``--tls``)."""
        self.sockname: wire.Address = wire.Address.from_tuple(sock.getsockname())
        """This connection's own address (what the mediator observes, absent a NAT)."""
        self.started_at = transcript.now()
        """Scenario time just *before* the connect began (set by :meth:`open`): the mediator
        cannot have accepted the connection earlier, so a deadline measured from here is never
        measured short."""
        self.sent_at: float | None = None
        """Scenario time just *before* the last write began (None: nothing sent yet)."""
        self.ended_at: float | None = None
        """Scenario time at which the harness saw the mediator end the connection."""

    # --- opening ----------------------------------------------------------------------------

    @classmethod
    async def open(
        cls: type[_P],
        label: str,
        host: str,
        port: int,
        transcript: Transcript,
        timeout: float,
        tls: ssl.SSLContext | None = None,
    ) -> _P:
        """Connect to ``host:port`` within ``timeout``; OSError on any failure (a timeout
        included, so that only a scenario's overall budget ever raises TimeoutError).
        With ``tls``, the TLS handshake is part of opening (a TLS failure is an OSError too,
        with the typed error's reason)."""
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP),
                timeout,
            )
        except TimeoutError:
            raise OSError(f"{host} did not resolve within {timeout:g} s") from None
        if not infos:
            raise OSError(f"{host} does not resolve")
        family, kind, proto, _, address = infos[0]
        started = transcript.now()
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            # Every write should leave as its own segment: split-frame scenarios rely on it.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                await asyncio.wait_for(loop.sock_connect(sock, address), timeout)
            except TimeoutError:
                raise OSError(f"no connection to {host}:{port} within {timeout:g} s") from None
            peer = cls(label, sock, transcript, timeout)
            peer.started_at = started
            if tls is not None:
                await peer._start_tls(tls, host, timeout)
        except BaseException:
            sock.close()
            raise
        transcript.add(label, EVENT, f"connected from {peer.sockname}")
        return peer

    async def _start_tls(self, context: ssl.SSLContext, host: str, timeout: float) -> None:
        """Run the TLS handshake on the fresh socket (p2psc.tls, sans-IO)."""
        loop = asyncio.get_running_loop()
        session = TlsClientSession(context, host if context.check_hostname else None)
        try:
            await asyncio.wait_for(loop.sock_sendall(self._sock, session.start()), timeout)
            while not session.handshake_done:
                data = await asyncio.wait_for(loop.sock_recv(self._sock, 65536), timeout)
                if not data:
                    raise OSError("the mediator closed the connection during the TLS handshake")
                early = session.receive(data)
                await asyncio.wait_for(
                    loop.sock_sendall(self._sock, session.data_to_send()), timeout
                )
                if early:
                    self._inbox.extend(self._decode(early))
        except TimeoutError:
            raise OSError(f"no TLS handshake within {timeout:g} s") from None
        except MediatorTlsError as error:
            raise OSError(error.reason) from None
        self._tls = session

    # --- codec hooks ------------------------------------------------------------------------

    def _decode(self, data: bytes) -> list[M]:
        """Messages completed by ``data``; ProtocolError for bytes that are no message."""
        raise NotImplementedError

    def render(self, message: M) -> str:
        """Transcript text of one message."""
        raise NotImplementedError

    # --- sending ----------------------------------------------------------------------------

    async def send_raw(self, data: bytes, what: str | None = None) -> None:
        """Write ``data`` in one call (one segment with TCP_NODELAY), recorded as ``what``."""
        self.sent_at = self._transcript.now()
        self._transcript.add(self.label, SENT, what or _hex_preview(data))
        if self._tls is not None:
            data = self._tls.send(data)
        loop = asyncio.get_running_loop()
        try:
            # Fast path: a small write into an empty socket buffer completes at once, without
            # the task and loop turns of an awaited send (which add up on a loaded machine).
            try:
                sent = self._sock.send(data)
            except BlockingIOError:
                sent = 0
            if sent < len(data):
                await asyncio.wait_for(loop.sock_sendall(self._sock, data[sent:]), self.timeout)
        except (OSError, TimeoutError) as error:
            # The mediator may already have closed us (e.g. after an abort): that is for the
            # scenario's next wait to observe, not an error of the harness.
            self._transcript.add(self.label, EVENT, f"write failed: {error!r}")

    # --- receiving --------------------------------------------------------------------------

    async def next(self, timeout: float | None = None) -> Got[M]:
        """The next message, or how the connection ended, or a timeout after ``timeout``."""
        if self._inbox:
            return Got("message", self._inbox.popleft())
        if self._end is not None:
            return self._end
        if self._closed_by_us:
            return Got("eof", detail="closed by the harness")
        wait = self.timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while not self._inbox:
            try:
                try:  # what has already arrived is read at once, even for a zero wait
                    data = self._sock.recv(self.read_size)
                except BlockingIOError:
                    left = deadline - loop.time()
                    if left <= 0:
                        return Got("timeout", detail=f"{wait:g} s")
                    data = await asyncio.wait_for(loop.sock_recv(self._sock, self.read_size), left)
            except TimeoutError:
                return Got("timeout", detail=f"{wait:g} s")
            except OSError as error:
                self._transcript.add(self.label, EVENT, f"reset by the mediator ({error!r})")
                self.ended_at = self._transcript.now()
                self._end = Got("reset", detail=type(error).__name__)
                return self._end
            if self._tls is not None and data:
                try:
                    plain = self._tls_receive(data)
                except MediatorTlsError as error:
                    self._end = Got("invalid", detail=f"TLS: {error.reason}")
                    return self._end
                if plain is None:
                    continue  # a TLS record without application data (yet)
                data = plain
            if not data:
                self._transcript.add(self.label, EVENT, "closed by the mediator (EOF)")
                self.ended_at = self._transcript.now()
                self._end = Got("eof")
                return self._end
            self.reads.append(data)
            try:
                messages = self._decode(data)
            except ProtocolError as error:
                detail = f"{error.reason} ({_hex_preview(data)})"
                self._transcript.add(self.label, RECEIVED, f"invalid: {detail}")
                self._end = Got("invalid", detail=detail)
                return self._end
            for message in messages:
                self._transcript.add(self.label, RECEIVED, self.render(message))
            self._inbox.extend(messages)
        return Got("message", self._inbox.popleft())

    def push_back(self, got: Got[M]) -> None:
        """Undo one :meth:`next` that returned a message (the end of a connection is sticky
        anyway), for a caller that only peeked at when it arrived."""
        if got.kind == "message" and got.message is not None:
            self._inbox.appendleft(got.message)

    def _tls_receive(self, data: bytes) -> bytes | None:
        """Decrypt ``data``: plaintext, ``b""`` at the mediator's close_notify, None when the
        records held no application data."""
        assert self._tls is not None
        plain = self._tls.receive(data)
        out = self._tls.data_to_send()
        if out:
            with contextlib.suppress(OSError):
                self._sock.send(out)
        if plain:
            return plain
        return b"" if self._tls.closed_by_peer else None

    async def expect(self, cls: type[T], why: str, timeout: float | None = None) -> T:
        """The next message, which must be a ``cls``; otherwise the scenario fails."""
        got = await self.next(timeout)
        if got.kind == "message" and isinstance(got.message, cls):
            return got.message
        fail(f"{cls.__name__} at {self.label} ({why})", got.describe(self.render))

    async def expect_close(
        self,
        why: str,
        *,
        allowed: Iterable[type[Any]] = (),
        timeout: float | None = None,
    ) -> list[M]:
        """Wait until the mediator ends the connection; return the messages before the end.

        Messages of the ``allowed`` types may come first; any other message, undecodable bytes
        or no close within ``timeout`` fail the scenario."""
        kinds = tuple(allowed)
        seen: list[M] = []
        while True:
            got = await self.next(timeout)
            if got.closed:
                return seen
            if got.kind == "message" and got.message is not None and isinstance(got.message, kinds):
                seen.append(got.message)
                continue
            fail(f"the mediator closes {self.label} ({why})", got.describe(self.render))

    async def drain(self, timeout: float | None = None) -> None:
        """Read (into the transcript and :attr:`reads`) until the connection ends or nothing
        more comes within ``timeout``; the messages themselves are not judged."""
        while True:
            got = await self.next(timeout)
            if got.kind != "message":
                return

    async def expect_silence(self, seconds: float, why: str) -> None:
        """Nothing at all (no message, no close) may arrive for ``seconds``."""
        got = await self.next(seconds)
        if got.kind != "timeout":
            fail(f"nothing at {self.label} for {seconds:g} s ({why})", got.describe(self.render))

    # --- ending -----------------------------------------------------------------------------

    def close(self) -> None:
        """A clean close: FIN (and no more reads from this side)."""
        if self._closed_by_us:
            return
        self._closed_by_us = True
        self._transcript.add(self.label, EVENT, "harness closes (FIN)")
        if self._tls is not None:  # close_notify before the FIN
            with contextlib.suppress(OSError, MediatorTlsError):
                self._sock.send(self._tls.close())
        self._sock.close()

    def half_close(self) -> None:
        """Shut down the sending side only (FIN) and keep reading: what the mediator does next
        (its own close) stays observable."""
        self._transcript.add(self.label, EVENT, "harness shuts down its sending side (FIN)")
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)

    def reset(self) -> None:
        """An abortive close: RST (SO_LINGER 0), as a crashed process or a NAT drop looks."""
        if self._closed_by_us:
            return
        self._closed_by_us = True
        self._transcript.add(self.label, EVENT, "harness resets (RST)")
        with contextlib.suppress(OSError):
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._sock.close()

    def dispose(self) -> None:
        """Release the socket at the end of a scenario without a transcript line."""
        self._closed_by_us = True
        self._sock.close()


_P = TypeVar("_P", bound=RawPeer[Any])


class V1Peer(RawPeer[wire.Message]):
    """A raw version 1 connection: frames via :class:`p2psc.wire.FrameDecoder`."""

    protocol = "v1"

    def __init__(
        self, label: str, sock: socket.socket, transcript: Transcript, timeout: float
    ) -> None:
        super().__init__(label, sock, transcript, timeout)
        self._decoder = wire.FrameDecoder()

    def _decode(self, data: bytes) -> list[wire.Message]:
        return self._decoder.feed(data)

    def render(self, message: wire.Message) -> str:
        return describe_v1(message, self._transcript.key)

    async def send(self, message: wire.Message) -> None:
        """Encode and write one message as one frame."""
        await self.send_raw(message.encode(), self.render(message))


class LegacyPeer(RawPeer[codec.LegacyMessage]):
    """A raw version 0 (JSON) connection.

    Decoding here is deliberately tolerant (objects are split off one after another, whatever
    reads they arrived in) so that a flow check sees every message; whether each *read* held
    exactly one object is judged separately from :attr:`reads` (spec/legacy.md 1.1)."""

    protocol = "v0"
    read_size = codec.LEGACY_READ_SIZE

    def __init__(
        self, label: str, sock: socket.socket, transcript: Transcript, timeout: float
    ) -> None:
        super().__init__(label, sock, transcript, timeout)
        self._buffer = b""

    def _decode(self, data: bytes) -> list[codec.LegacyMessage]:
        self._buffer += data
        out: list[codec.LegacyMessage] = []
        while self._buffer.strip(b" \t\r\n"):
            message, rest = codec.LegacyDecoder().feed_last(self._buffer)
            if message is None:
                break
            out.append(message)
            self._buffer = rest
        return out

    def render(self, message: codec.LegacyMessage) -> str:
        return describe_legacy(message)

    async def send(self, message: codec.LegacyMessage) -> None:
        """Encode one JSON object and write it in one call, as the C++ client does."""
        await self.send_raw(codec.encode(message), describe_legacy(message))
