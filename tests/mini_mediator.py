"""A second Mediator, deliberately small, written from ``spec/`` alone: no MediatorCore.

Why it exists: the conformance harness was only ever shown to fail *our* core with one rule
broken, so a blind spot shared by the core and the harness could hide. This one has another
design (one asyncio task per connection, plain stream reads with per-state deadlines, futures
between partners, its own frame codec written from spec/protocol.md), and broken variants of
it (``FLAWS``) that ``tests/test_conformance_mini.py`` runs the harness against. Only the
HPKE seal comes from ``p2psc.keys``: the project never hand-makes crypto.

It implements spec/mediator.md §2-§8 as written, including the resolutions of its
ambiguities (header version before type and length, the Advertise version field before the
layout, bytes behind the AdvertiseResponse refused before pairing, the Peer's connection closed
after its clean close, a byte from a confirming Client fails the pairing), and the keepalive of
§4.1 (Ping answered with Pong while waiting and confirming, accepted from a disconnecting Peer;
the liveness deadline; the flood floor), and the coordinated pairings of §4.3 (COORDINATE
echoed only when both offered it; Status(PUNCHING) as the confirmation; both connections held
with Pings; a done status ends one side quietly; any other end tells the partner
PARTNER_LOST). Limits: only the global ``max_pending`` and ``max_waiting`` (the harness cannot
reach either). Not a test module.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import os
import struct
from dataclasses import dataclass, field

from p2psc.errors import P2pscError
from p2psc.keys import HPKE, PublicKey

MAGIC = b"P2"
MAX_PAYLOAD = 4096
ADVERTISE, CHALLENGE, RESPONSE, ABORT, RETRY, DISCONNECT, IDENTIFICATION = range(7)
PING, PONG, STATUS = 11, 12, 13
LAST_TYPE = 13
PUNCHING = 1
COORDINATE_ITEM = b"\x03\x00"  # extension type 3, empty (protocol.md 3.4)
COORDINATE_GRACE = 3.0  # §4.3 rule 2: before the first Ping of a coordinating session
MIN_PING_GAP = 0.5
(
    UNSUPPORTED_VERSION,
    IDENTITY_CHECK_FAILED,
    DUPLICATE_REGISTRATION,
    SELF_PAIRING,
    BUSY,
    TIMEOUT,
    MALFORMED,
    PEER_GONE,
) = range(1, 9)
SILENT = 11
PARTNER_LOST = 12

FLAWS = frozenset(
    {
        "early-deadlines",  # every deadline at 60% of its configured value (§2)
        "newcomer-pairs",  # pairs C (wants A) with a waiting A that wants B (§1)
        "stale-timer",  # the Peer keeps its response deadline after pairing (§2)
        "pairs-then-refuses",  # acts on an AdvertiseResponse before refusing bytes behind it
        "version-after-layout",  # decodes the Advertise layout before its version field
        "keeps-peer-open",  # never closes the Peer's connection after its FIN (§4)
        "ignores-client-bytes",  # a byte from a confirming Client is ignored (§4 Failure)
    }
)


@dataclass(frozen=True)
class MiniConfig:
    advertise_timeout: float = 10.0
    response_timeout: float = 10.0
    wait_timeout: float = 3600.0
    confirm_timeout: float = 10.0
    max_pending: int = 4096
    max_waiting: int = 100_000
    coordinate_timeout: float = 20.0


class _Refuse(Exception):
    """End this session with AdvertiseAbort(code) (AdvertiseRetry for BUSY), then close."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code, self.text = code, text


class _Gone(Exception):
    """The advertiser closed or reset its connection: close, send nothing."""


# --- the codec, from spec/protocol.md §2-§4 -----------------------------------------------------


def frame(kind: int, payload: bytes) -> bytes:
    return MAGIC + bytes((1, kind)) + struct.pack(">H", len(payload)) + payload


def reason(kind: int, code: int, text: str) -> bytes:
    data = text.encode()[:1024]
    return frame(kind, struct.pack(">HH", code, len(data)) + data)


def address(host: str, port: int) -> bytes:
    ip = ipaddress.ip_address(host)
    return bytes((ip.version,)) + ip.packed + struct.pack(">H", port)


def parse_optional_address(data: bytes) -> bytes:
    """Validate an optional address at the start of ``data`` followed only by a valid
    extension area (protocol.md 3.4); return the address's encoding."""
    sizes = {0: 1, 4: 7, 6: 19}
    if not data or data[0] not in sizes:
        raise _Refuse(MALFORMED, "bad address family")
    size = sizes[data[0]]
    if len(data) < size:
        raise _Refuse(MALFORMED, "truncated Advertise payload")
    if data[0] and data[size - 2 : size] == b"\x00\x00":
        raise _Refuse(MALFORMED, "port 0")
    parse_extensions(data[size:])
    return data[:size]


def parse_extensions(area: bytes) -> bytes:
    """Validate an extension area; return the CANDIDATES value (b"" when absent)."""
    sizes = {4: 7, 6: 19}
    previous, count, off, cands = 0, 0, 0, b""
    while off < len(area):
        if len(area) - off < 2:
            raise _Refuse(MALFORMED, "cut extension header")
        kind, size = area[off], area[off + 1]
        value = area[off + 2 : off + 2 + size]
        if len(value) != size or not previous < kind or count == 8:
            raise _Refuse(MALFORMED, "bad extension item")
        if kind == 3 and size:  # COORDINATE: empty
            raise _Refuse(MALFORMED, "COORDINATE with a value")
        if kind == 1:  # CANDIDATES: 1..8 required addresses
            at, n = 0, 0
            while at < size:
                step = sizes.get(value[at], 0)
                if not step or at + step > size or value[at + step - 2 : at + step] == b"\0\0":
                    raise _Refuse(MALFORMED, "bad candidate")
                at, n = at + step, n + 1
            if not 1 <= n <= 8:
                raise _Refuse(MALFORMED, "candidate count")
            cands = value
        previous, count, off = kind, count + 1, off + 2 + size
    return cands


def offers_coordinate(area: bytes) -> bool:
    """Whether a (validated) extension area holds the COORDINATE item."""
    off = 0
    while off < len(area):
        if area[off] == 3:
            return True
        off += 2 + area[off + 1]
    return False


def info(our: bytes, their: bytes) -> bytes:
    return b"p2psc v1 AdvertiseChallenge\x00" + our + their


# --- sessions ---------------------------------------------------------------------------------


@dataclass(eq=False)
class Session:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    remote: tuple[str, int]
    our: bytes = b""
    their: bytes = b""
    local: bytes = b"\x00"
    cands: bytes = b""
    interval: float = 0.0
    token: int = 0
    response_deadline: float = 0.0
    last_ping: float | None = None
    coord: bool = False
    done: bool = False
    reading: asyncio.Future[bytes] | None = None
    ended: asyncio.Future[None] = field(default_factory=lambda: asyncio.Future())
    paired: asyncio.Future[Session] = field(default_factory=lambda: asyncio.Future())
    introduced: asyncio.Future[Session] = field(default_factory=lambda: asyncio.Future())

    def end(self, last: bytes = b"") -> None:
        """Send ``last`` (if any) and close with a FIN; idempotent."""
        if self.ended.done():
            return
        if last:
            self.writer.write(last)
        self.writer.close()
        self.ended.set_result(None)


class MiniMediator:
    def __init__(self, config: MiniConfig, flaws: frozenset[str] = frozenset()) -> None:
        assert flaws <= FLAWS, flaws - FLAWS
        self.config = config
        self.flaws = flaws
        self.registry: dict[tuple[bytes, bytes], Session] = {}
        self.pending = 0
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def _deadline(self, seconds: float) -> float:
        scale = 0.6 if "early-deadlines" in self.flaws else 1.0
        return asyncio.get_running_loop().time() + seconds * scale

    async def start(self, host: str = "127.0.0.1") -> int:
        self.server = await asyncio.start_server(self._accept, host, 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        peer = writer.get_extra_info("peername")
        session = Session(reader, writer, (str(peer[0]), int(peer[1])))
        try:
            await self._run(session)
        except _Refuse as refusal:
            kind = RETRY if refusal.code == BUSY else ABORT
            session.end(reason(kind, refusal.code, refusal.text))
        except (_Gone, ConnectionError):
            session.end()
        finally:
            session.end()
            self.tasks.discard(task)

    async def _read(self, session: Session, size: int, deadline: float) -> bytes:
        try:
            async with asyncio.timeout_at(deadline):
                return await session.reader.readexactly(size)
        except TimeoutError:
            raise _Refuse(TIMEOUT, "deadline passed") from None
        except (asyncio.IncompleteReadError, ConnectionError):
            raise _Gone from None

    async def _frame(self, session: Session, deadline: float, first: bool) -> tuple[int, bytes]:
        """One frame; the header is judged before any payload is read (protocol.md §2)."""
        header = await self._read(session, 6, deadline)
        if header[:2] != MAGIC:
            raise _Refuse(MALFORMED, "bad magic")
        if header[2] != 1:  # before type and length: a future version may change them
            raise _Refuse(UNSUPPORTED_VERSION if first else MALFORMED, "version")
        kind, length = header[3], struct.unpack(">H", header[4:6])[0]
        if kind > LAST_TYPE or length > MAX_PAYLOAD:
            raise _Refuse(MALFORMED, "unknown type or oversized")
        return kind, await self._read(session, length, deadline)

    async def _run(self, s: Session) -> None:
        config = self.config
        if self.pending >= config.max_pending:
            raise _Refuse(BUSY, "busy")
        self.pending += 1
        try:
            await self._handshake(s)
        finally:
            self.pending -= 1
        await self._register_or_pair(s)

    async def _handshake(self, s: Session) -> None:
        config = self.config
        kind, payload = await self._frame(s, self._deadline(config.advertise_timeout), True)
        if kind != ADVERTISE:
            raise _Refuse(MALFORMED, "expected Advertise")
        if "version-after-layout" in self.flaws and len(payload) >= 66:
            parse_optional_address(payload[65:])
        if payload and payload[0] != 1:
            raise _Refuse(UNSUPPORTED_VERSION, "Advertise version")
        if len(payload) < 66:
            raise _Refuse(MALFORMED, "truncated Advertise")
        s.our, s.their = payload[1:33], payload[33:65]
        s.local = parse_optional_address(payload[65:])
        area = payload[65 + len(s.local) :]
        ext = parse_extensions(area)
        s.cands = bytes((1, len(ext))) + ext if ext else b""
        s.coord = offers_coordinate(area)
        if s.our == s.their:
            raise _Refuse(SELF_PAIRING, "self pairing")
        nonce = os.urandom(32)
        try:
            sealed = HPKE.seal(PublicKey.from_raw(s.our), nonce, info(s.our, s.their))
        except (P2pscError, ValueError):
            raise _Refuse(IDENTITY_CHECK_FAILED, "cannot seal") from None
        s.writer.write(frame(CHALLENGE, sealed))
        s.response_deadline = self._deadline(config.response_timeout)
        kind, payload = await self._frame(s, s.response_deadline, False)
        if kind != RESPONSE or len(payload) != 32:
            raise _Refuse(MALFORMED, "expected AdvertiseResponse")
        if not hmac.compare_digest(payload, nonce):
            raise _Refuse(IDENTITY_CHECK_FAILED, "wrong nonce")

    async def _ping(self, s: Session, first: bytes, deadline: float) -> None:
        """The rest of a Ping whose first byte was read; answer it unless ``answer`` is off.
        Anything else, or a Ping too soon after the previous one, is MALFORMED (§4.1)."""
        header = MAGIC + bytes((1, PING, 0, 8))
        if first != header[:1]:
            raise _Refuse(MALFORMED, "a byte after the handshake")
        rest = await self._read(s, 5, deadline)
        if first + rest != header:
            raise _Refuse(MALFORMED, "not a Ping")
        payload = await self._read(s, 8, deadline)
        token, interval = struct.unpack(">II", payload)
        if not 1000 <= interval <= 3_600_000:
            raise _Refuse(MALFORMED, "Ping interval out of range")
        now = asyncio.get_running_loop().time()
        if s.last_ping is not None and now - s.last_ping < MIN_PING_GAP:
            raise _Refuse(MALFORMED, "Pings too close together")
        s.last_ping = now
        s.interval = interval / 1000
        s.token = token

    def _next_read(self, s: Session) -> asyncio.Future[bytes]:
        s.reading = asyncio.ensure_future(s.reader.read(1))
        return s.reading

    def _first_byte(self, reading: asyncio.Future[bytes]) -> bytes:
        """The byte a finished read after the handshake got (EOF or reset: _Gone)."""
        if reading.exception() is not None or not reading.result():
            raise _Gone
        return reading.result()

    async def _register_or_pair(self, s: Session) -> None:
        reading = self._next_read(s)
        try:
            await asyncio.sleep(0)  # whatever already arrived behind the response is read now
            if reading.done() and "pairs-then-refuses" not in self.flaws:
                raise _Refuse(MALFORMED, "bytes after the AdvertiseResponse")
            client = self.registry.pop((s.their, s.our), None)
            if client is None and "newcomer-pairs" in self.flaws:
                key = next((k for k in self.registry if k[0] == s.their), None)
                client = None if key is None else self.registry.pop(key)
            if client is not None:
                await self._peer(s, client, reading)
            else:
                await self._wait(s, reading)
        finally:
            if s.reading is not None:
                s.reading.cancel()

    async def _wait(self, s: Session, reading: asyncio.Future[bytes]) -> None:
        key = (s.our, s.their)
        older = self.registry.get(key)
        if older is None and len(self.registry) >= self.config.max_waiting:
            raise _Refuse(BUSY, "busy")
        if older is not None:
            older.end(reason(ABORT, DUPLICATE_REGISTRATION, "replaced"))
        self.registry[key] = s
        try:
            end = self._deadline(self.config.wait_timeout)
            alive = end  # moved by each Ping (§4.1 rule 3)
            loop = asyncio.get_running_loop()
            while True:
                await asyncio.wait(
                    {reading, s.ended, s.paired},
                    timeout=max(0.0, min(alive, end) - loop.time()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if s.ended.done() or s.paired.done():
                    break
                if not reading.done():
                    if loop.time() >= end:
                        raise _Refuse(TIMEOUT, "nobody came")
                    raise _Refuse(SILENT, "no Ping for twice your interval")
                await self._ping(s, self._first_byte(reading), end)
                s.writer.write(frame(PONG, struct.pack(">I", s.token)))
                alive = loop.time() + 2 * s.interval
                reading = self._next_read(s)
        finally:
            if self.registry.get(key) is s:
                del self.registry[key]
        if s.ended.done():
            return  # replaced
        await self._client(s, s.paired.result(), reading)

    def _after_handshake(self, reading: asyncio.Future[bytes]) -> None:
        """A finished read after the handshake: EOF or reset ends quietly, a byte is MALFORMED."""
        if reading.exception() is not None or not reading.result():
            raise _Gone
        raise _Refuse(MALFORMED, "a byte after the handshake")

    async def _client(self, s: Session, peer: Session, reading: asyncio.Future[bytes]) -> None:
        """Confirming: the Peer's task owns the deadline and the introduction."""
        while True:
            await asyncio.wait(
                {reading, s.ended, s.introduced}, return_when=asyncio.FIRST_COMPLETED
            )
            if s.ended.done():
                return
            if s.introduced.done():  # coordinated (§4.3): the Peer's task introduced us
                await self._coordinate(s, peer, reading)
                return
            if (
                "ignores-client-bytes" in self.flaws
                and not reading.exception()
                and reading.result()
                and reading.result() != MAGIC[:1]
            ):
                reading = self._next_read(s)
                continue
            try:
                first = self._first_byte(reading)
                await self._ping(s, first, self._deadline(self.config.confirm_timeout))
            except BaseException:
                peer.end(reason(ABORT, PEER_GONE, "the Client left"))
                raise
            s.writer.write(frame(PONG, struct.pack(">I", s.token)))
            reading = self._next_read(s)

    async def _peer(self, s: Session, client: Session, reading: asyncio.Future[bytes]) -> None:
        if "stale-timer" in self.flaws:
            deadline = s.response_deadline
        else:
            deadline = self._deadline(self.config.confirm_timeout)
        host, port = s.remote
        pairing_id = os.urandom(16)  # fresh per pairing, the same in both messages (§4)
        disconnect = pairing_id + address(host, port) + address(*client.remote) + client.local
        disconnect += client.cands
        coordinated = s.coord and client.coord  # §4.3: only when both offered it
        if coordinated:
            disconnect += COORDINATE_ITEM
        s.writer.write(frame(DISCONNECT, disconnect))
        client.paired.set_result(s)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.wait(
                {reading, client.ended},
                timeout=max(0.0, deadline - loop.time()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if client.ended.done() or not reading.done():
                break
            if reading.exception() is not None or reading.result() != MAGIC[:1]:
                break  # EOF (the confirmation), a reset or a stray byte: judged below
            try:  # a Ping that crossed PeerDisconnect: accepted, not answered (§4.1 rule 2)
                if coordinated:
                    kind, value = await self._small(s, reading.result(), deadline)
                    if kind == STATUS and value == PUNCHING:  # the confirmation (§4.3 rule 1)
                        identification = bytes((1,)) + pairing_id + address(host, port)
                        identification += s.local + s.cands + COORDINATE_ITEM
                        client.writer.write(frame(IDENTIFICATION, identification))
                        client.introduced.set_result(s)
                        await self._coordinate(s, client, self._next_read(s))
                        return
                    if kind == STATUS:
                        raise _Refuse(MALFORMED, "a done status before the confirmation")
                else:
                    await self._ping(s, reading.result(), deadline)
            except BaseException:
                client.end(reason(ABORT, PEER_GONE, "the Peer misbehaved or vanished"))
                raise
            reading = self._next_read(s)
        if client.ended.done():
            raise _Refuse(PEER_GONE, "the Client left")
        if not reading.done():
            client.end(reason(ABORT, TIMEOUT, "the Peer did not confirm"))
            raise _Refuse(TIMEOUT, "you did not close")
        if reading.exception() is None and reading.result() == b"" and not coordinated:
            identification = bytes((1,)) + pairing_id + address(host, port) + s.local + s.cands
            client.end(frame(IDENTIFICATION, identification))
            if "keeps-peer-open" in self.flaws:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(3600)
            return
        client.end(reason(ABORT, PEER_GONE, "the Peer misbehaved or vanished"))
        self._after_handshake(reading)

    # --- coordinated pairings (§4.3) --------------------------------------------------------

    async def _small(self, s: Session, first: bytes, deadline: float) -> tuple[int, int]:
        """A Ping (PING, 0) or a Status (STATUS, status) whose first byte was read."""
        rest = await self._read(s, 5, deadline)
        header = first + rest
        if header == MAGIC + bytes((1, STATUS, 0, 1)):
            value = (await self._read(s, 1, deadline))[0]
            if not 1 <= value <= 4:
                raise _Refuse(MALFORMED, "unknown status")
            return STATUS, value
        if header != MAGIC + bytes((1, PING, 0, 8)):
            raise _Refuse(MALFORMED, "neither a Ping nor a Status")
        token, interval = struct.unpack(">II", await self._read(s, 8, deadline))
        if not 1000 <= interval <= 3_600_000:
            raise _Refuse(MALFORMED, "Ping interval out of range")
        now = asyncio.get_running_loop().time()
        if s.last_ping is not None and now - s.last_ping < MIN_PING_GAP:
            raise _Refuse(MALFORMED, "Pings too close together")
        s.last_ping, s.interval, s.token = now, interval / 1000, token
        return PING, 0

    def _tell(self, partner: Session) -> None:
        """§4.3 rule 4: the partner, unless it already reported done, learns at once."""
        if not partner.done and not partner.ended.done():
            partner.end(reason(ABORT, PARTNER_LOST, "your partner's connection ended: it is gone"))

    async def _coordinate(
        self, s: Session, partner: Session, reading: asyncio.Future[bytes]
    ) -> None:
        """Hold a coordinated session until its done status (§4.3 rules 2-5)."""
        loop = asyncio.get_running_loop()
        end = self._deadline(self.config.coordinate_timeout)
        alive = min(end, loop.time() + COORDINATE_GRACE)
        s.last_ping = None
        try:
            while True:
                await asyncio.wait(
                    {reading, s.ended},
                    timeout=max(0.0, min(alive, end) - loop.time()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if s.ended.done():
                    return  # told by the partner's task, or shut down
                if not reading.done():
                    if loop.time() >= end:  # rule 5: the end of the hold is no partner loss
                        partner.end(reason(ABORT, TIMEOUT, "coordination ended"))
                        raise _Refuse(TIMEOUT, "coordination ended")
                    raise _Refuse(SILENT, "no Ping while coordinating")
                first = self._first_byte(reading)
                kind, value = await self._small(s, first, end)
                if kind == PING:
                    s.writer.write(frame(PONG, struct.pack(">I", s.token)))
                    alive = loop.time() + 2 * s.interval
                elif value == PUNCHING:
                    raise _Refuse(MALFORMED, "a second PUNCHING")
                else:  # rule 3: done; the partner is not told
                    s.done = True
                    s.end()
                    return
                reading = self._next_read(s)
        except BaseException:
            if not s.done:
                self._tell(partner)
            raise
