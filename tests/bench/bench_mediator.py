"""Mediator benchmark: pairings/s and latency through a real mediator process, its CPU time per
pairing split into socket floor + crypto + the rest, memory per waiting registration, and the
crypto floor, all measured in one run and printed as ratios.

    .venv/bin/python tests/bench/bench_mediator.py            # full: 100 / 10,000 / 100,000
    .venv/bin/python tests/bench/bench_mediator.py --quick    # small and fast (~30 s)
    .venv/bin/python tests/bench/bench_mediator.py --levels 100,10000 --pairs 1000 --rounds 5

What it does:

1. **Crypto floor** (no I/O): the cost of one pairing's cryptography, two HPKE seals (mediator)
   plus two opens (the peers), measured in this process; floor = 1 / that cost.
2. The core alone (no sockets, no adapter): memory per waiting registration (tracemalloc) and
   pairings/s with few and with many registrations waiting (thread CPU time, real HPKE seals).
3. Starts ``p2psc mediator`` in **another process** on 127.0.0.1 (uvloop, logs at error), and two
   **floor servers** (this file, ``--floor-server``): minimal uvloop servers that do exactly the
   socket work of a pairing (two accepts, the five frames, the Peer's EOF, two closes) with no
   core, no codec and no checks; one of them also does the pairing's two real HPKE seals.
4. For each level of waiting registrations (default 100, 10,000, 100,000): fills the mediator
   with registrations that wait for a partner who never comes (raw frames, real HPKE, from
   several loopback source addresses because one address has only ~28k ephemeral ports), then
   reads the mediator's RSS (per waiting registration = RSS growth over the warmed-up baseline
   divided by the number waiting), then pairs ``--pairs`` fresh pairs through it with bounded
   concurrency, ``--rounds`` times: pairings/s, p50/p99 latency (first connect of a pair to
   PeerIdentification at the Client) and the CPU time per pairing of the mediator process and
   of the load generator. After each round, the same generator pairs the same number of pairs
   through each floor server (their CPU time per pairing) and the crypto cost is probed again.
5. Prints the mediator's CPU per pairing as socket floor + crypto (the two seals) + the rest,
   all measured under the same load, and the ratios against the budgets.

Budgets (DESIGN.md section 11): pairings/s >= 50% of the crypto floor; <= 4 KiB per waiting
registration; pairing rate within 20% from the lowest to the highest level.

``--hardening`` (issue 21) measures instead, in one run:

6. **TLS**: pairings/s and mediator CPU per pairing with every connection inside TLS, against a
   **TLS floor server** (the minimal uvloop floor server with ``ssl=``: the same TLS
   handshakes, the same frames and the two seals, nothing else), and the same two in clear.
7. **Floods**: the latency of a legitimate pairing from 127.0.0.1 (the victim's address) while
   tests/mediator_flood.py holds (and keeps reopening) 256 idle connections from 127.0.0.1, and
   4096 from 17 other loopback addresses, against the latency with no flood. Budget: p50 under
   each flood within 2x of p50 without.

The mediator runs with a challenge budget far above the load (``--challenge-rate``): every
generated pairing comes from 127.0.0.1, and this benchmark measures throughput and latency,
not the budget (tests/test_mediator_admission.py tests the budget).

Reading the numbers: this is a shared 2-CPU machine. The generator needs about as much CPU per
pairing as the mediator, so end-to-end pairings/s is bounded by whichever of the two gets less
CPU; the mediator's CPU time per pairing is its capacity independent of the generator. Other
processes slow everything down (CPU time per operation grows when both CPUs are busy: caches,
the hypervisor), so every figure is a best of several probes or rounds, the floors are measured
under the same load as the mediator, and no figure is asserted anywhere in the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import resource
import secrets
import socket
import statistics
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2psc import wire
from p2psc.keys import HPKE, Keypair, PublicKey, nonce_info

SOURCES = [f"127.0.0.{i}" for i in range(2, 12)]  # 10 loopback sources x ~28k ports each


# --- measurement helpers --------------------------------------------------------------------


def raise_nofile(wanted: int) -> int:
    """Raise RLIMIT_NOFILE (children inherit it); return the soft limit obtained."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, wanted)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(hard, target)))
    except (ValueError, OSError):  # no CAP_SYS_RESOURCE: the hard limit is the ceiling
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(target, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def cpu_seconds(pid: int) -> float:
    return sum(cpu_split(pid))


@dataclass
class CryptoCost:
    """Seconds of HPKE per pairing (thread CPU time), best of the probes taken so far."""

    seals: float = float("inf")
    """The mediator's part: two seals."""
    opens: float = float("inf")
    """The peers' part: two opens."""
    probes: int = 0
    worst: float = 0.0

    @property
    def floor(self) -> float:
        """The crypto floor: seconds of crypto per pairing, 2 seals + 2 opens."""
        return self.seals + self.opens

    def probe(self, iterations: int, repeats: int = 3) -> None:
        """Measure ``repeats`` times; keep the least disturbed (the machine is shared)."""
        for _ in range(repeats):
            seals, opens = _crypto_once(iterations)
            self.seals, self.opens = min(self.seals, seals), min(self.opens, opens)
            self.worst = max(self.worst, seals + opens)
        self.probes += 1


def _crypto_once(iterations: int) -> tuple[float, float]:
    a, b = Keypair.generate(), Keypair.generate()
    info_a = nonce_info("AdvertiseChallenge", a.public_key.raw, b.public_key.raw)
    info_b = nonce_info("AdvertiseChallenge", b.public_key.raw, a.public_key.raw)
    sides = ((a, info_a), (b, info_b))
    nonces = [os.urandom(32) for _ in range(2 * iterations)]
    sealed: list[bytes] = []
    start = time.thread_time()
    for i in range(iterations):
        for j, (kp, info) in enumerate(sides):
            sealed.append(HPKE.seal(kp.public_key, nonces[2 * i + j], info))
    seals = time.thread_time() - start
    start = time.thread_time()
    for i in range(iterations):
        for j, (kp, info) in enumerate(sides):
            HPKE.open(kp, sealed[2 * i + j], info)
    opens = time.thread_time() - start
    assert all(HPKE.open(kp, sealed[j], info) == nonces[j] for j, (kp, info) in enumerate(sides))
    return seals / iterations, opens / iterations


class _PlainCrypto:
    """Symbolic crypto for the socket-less core measurement (seal = nonce + padding)."""

    def seal(self, recipient: PublicKey, nonce: bytes, info: bytes) -> bytes:
        return nonce + bytes(48)

    def open(self, keypair: Keypair, sealed: bytes, info: bytes) -> bytes:
        return sealed[:32]


def _core_config(limit: int) -> Any:
    """Limits of ``limit`` everywhere, and a challenge budget the measurement never reaches
    (all its registrations come from a few addresses at a frozen clock)."""
    from p2psc.core.mediator import MediatorConfig

    wanted: dict[str, Any] = dict.fromkeys(
        ("max_pending", "max_pending_per_ip", "max_waiting", "max_waiting_per_ip"), limit
    )
    wanted.update(challenge_rate=1e9, challenge_burst=10**9)
    known = MediatorConfig.__dataclass_fields__  # (the same bench runs against older cores)
    return MediatorConfig(**{k: v for k, v in wanted.items() if k in known})


def core_bytes_per_registration(count: int) -> float:
    """tracemalloc growth of MediatorCore per waiting registration (no sockets, no adapter)."""
    from p2psc.core.io import Opened, Received
    from p2psc.core.mediator import MediatorCore

    config = _core_config(count + 1)
    core = MediatorCore(config, crypto=_PlainCrypto())
    frames = []
    for _ in range(count):
        frames.append(wire.Advertise(1, secrets.token_bytes(32), secrets.token_bytes(32)).encode())
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for conn, frame in enumerate(frames, 1):
        core.handle(Opened(conn, (SOURCES[conn % len(SOURCES)], 10000 + conn % 50000)), 0.0)
        (send, _timer) = core.handle(Received(conn, frame), 0.0)
        nonce = wire.decode(send.data).encrypted_nonce[:32]  # type: ignore[union-attr]
        core.handle(Received(conn, wire.AdvertiseResponse(nonce).encode()), 0.0)
    del frames
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert core.waiting == count, core.waiting
    return (after - before) / count


class _SwitchCrypto:
    """Symbolic while filling (fast), real HPKE once ``real`` is set (measured pairings)."""

    def __init__(self) -> None:
        self.real = False

    def seal(self, recipient: PublicKey, nonce: bytes, info: bytes) -> bytes:
        if self.real:
            return HPKE.seal(recipient, nonce, info)
        return nonce + bytes(48)

    def open(self, keypair: Keypair, sealed: bytes, info: bytes) -> bytes:
        return HPKE.open(keypair, sealed, info) if self.real else sealed[:32]


class _RecordingNonces:
    """The core's nonce source (os.urandom) that also remembers the last nonce, so the
    measured loop can answer challenges without opening them (the seals stay real)."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = b""

    def __call__(self, size: int) -> bytes:
        self.last = os.urandom(size)
        return self.last


class CoreRig:
    """MediatorCore alone (real HPKE seals, no sockets) holding ``waiting`` registrations, for
    pairing rates that check that nothing in the core grows with the number waiting.

    Time is thread CPU time, not wall time (other processes on the machine preempt this one,
    which wall time would count); each chunk's events are handed to the core back to back
    (answers prepared from the recorded nonce, no HPKE open in the timed loop). Rigs for
    different levels measure chunks in turn, so a disturbance of the machine hits all levels
    alike, and each keeps its best chunk.
    """

    def __init__(self, waiting: int, pairs: int) -> None:
        from p2psc.core.io import Opened, Received
        from p2psc.core.mediator import MediatorCore

        config = _core_config(waiting + pairs + 10)
        self.crypto = _SwitchCrypto()
        self.nonces = _RecordingNonces()
        self.core = core = MediatorCore(config, crypto=self.crypto, nonce_source=self.nonces)
        self.waiting = waiting
        conn = 0
        for _ in range(waiting):
            conn += 1
            core.handle(Opened(conn, (SOURCES[conn % len(SOURCES)], 10000 + conn % 50000)), 0.0)
            frame = wire.Advertise(1, secrets.token_bytes(32), secrets.token_bytes(32)).encode()
            core.handle(Received(conn, frame), 0.0)
            core.handle(Received(conn, wire.AdvertiseResponse(self.nonces.last).encode()), 0.0)
        assert core.waiting == waiting
        self.crypto.real = True
        raw = [Keypair.generate().public_key.raw for _ in range(2 * pairs)]
        self.advertise = [wire.Advertise(1, raw[i], raw[i ^ 1]).encode() for i in range(2 * pairs)]
        self.opened = [
            Opened(i, ("127.0.0.1", 10000 + i % 50000))
            for i in range(conn + 1, conn + 2 * pairs + 1)
        ]
        self.next = 0
        self.best = float("inf")
        self.paired = 0
        self.gc_seconds = 0.0

    def chunk(self, pairs: int) -> None:
        """Pair the next ``pairs`` pairs; keep the CPU seconds per pairing if the best yet."""
        from p2psc.core.io import Closed, Received

        core, nonces, advertise, opened = self.core, self.nonces, self.advertise, self.opened
        header = wire.AdvertiseResponse(bytes(32)).encode()[: wire.HEADER_SIZE]
        first = self.next
        self.next += pairs
        gc_started = [0.0]

        def gc_clock(phase: str, _info: dict[str, int]) -> None:
            if phase == "start":
                gc_started[0] = time.thread_time()
            else:
                self.gc_seconds += time.thread_time() - gc_started[0]

        gc.callbacks.append(gc_clock)
        try:
            start = time.thread_time()
            for i in range(first, first + pairs):
                for side in (2 * i, 2 * i + 1):
                    event = opened[side]
                    core.handle(event, 0.0)
                    core.handle(Received(event.conn, advertise[side]), 0.0)
                    core.handle(Received(event.conn, header + nonces.last), 0.0)
                core.handle(Closed(event.conn), 0.0)  # the Peer confirms: both sessions end
            self.best = min(self.best, (time.thread_time() - start) / pairs)
        finally:
            gc.callbacks.remove(gc_clock)
        self.paired += pairs
        assert core.waiting == self.waiting and core.sessions == self.waiting

    @property
    def rate(self) -> float:
        """Pairings per CPU-second, best chunk."""
        return 1 / self.best


def core_pairing_rates(levels: list[int], pairs: int, chunks: int = 5) -> dict[int, CoreRig]:
    """One CoreRig per level, measured in turn ``chunks`` times (``pairs`` pairs in all)."""
    rigs = {level: CoreRig(level, pairs) for level in levels}
    for _ in range(chunks):
        for rig in rigs.values():
            rig.chunk(pairs // chunks)
    return rigs


# --- the mediator process -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_mediator(
    port: int, capacity: int, extra: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    # Limits that fit the descriptors the mediator may open (it refuses limits that cannot,
    # and raises its soft limit to the hard one as this process did).
    available = resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 64
    pending = min(20_000, max(512, available // 10))
    waiting = max(1, min(capacity, available - pending))
    cmd = [
        sys.executable,
        "-m",
        "p2psc",
        "mediator",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
        "--timeout",
        "120",
        "--max-pending",
        str(pending),
        "--max-pending-per-ip",
        str(pending),
        "--max-waiting",
        str(waiting),
        "--max-waiting-per-ip",
        str(waiting),
        "--challenge-rate",
        "1000000",
        "--challenge-burst",
        "1000000",
        *extra,
    ]
    return _wait_listening(subprocess.Popen(cmd), port)


def _wait_listening(proc: subprocess.Popen[bytes], port: int) -> subprocess.Popen[bytes]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited during start-up")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{proc.args!r} did not start listening within 20 s")


# --- the floor servers ----------------------------------------------------------------------

_T = wire.MessageType
_CHALLENGE_HEADER = wire.AdvertiseChallenge(bytes(80)).encode()[: wire.HEADER_SIZE]
_RESPONSE_HEADER = wire.AdvertiseResponse(bytes(32)).encode()[: wire.HEADER_SIZE]


def _address_bytes(host: str, port: int) -> bytes:
    return b"\x04" + socket.inet_aton(host) + port.to_bytes(2, "big")


def _frame(mtype: int, payload: bytes) -> bytes:
    return wire.MAGIC + bytes((1, mtype)) + len(payload).to_bytes(2, "big") + payload


class _FloorSide(asyncio.Protocol):
    """One connection to a floor server: the socket work of a mediator session and nothing
    else (no core, no codec, no checks, no timers, no limits); ``seal`` adds the real HPKE
    seal of the challenge (X25519 key parse included)."""

    waiting: dict[tuple[bytes, bytes], _FloorSide] = {}
    seal = False

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.step = 0
        self.keys = (b"", b"")
        self.nonce = b""
        self.partner: _FloorSide | None = None
        self.remote: tuple[str, int] = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.remote = transport.get_extra_info("peername")[:2]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        while len(self.buf) >= 6 and len(self.buf) >= 6 + int.from_bytes(self.buf[4:6], "big"):
            end = 6 + int.from_bytes(self.buf[4:6], "big")
            frame, self.buf = self.buf[:end], self.buf[end:]
            if self.step == 0:  # Advertise -> AdvertiseChallenge
                our, their = frame[7:39], frame[39:71]
                self.keys = (our, their)
                self.nonce = os.urandom(32)
                sealed = bytes(80)
                if self.seal:
                    info = nonce_info("AdvertiseChallenge", our, their)
                    sealed = HPKE.seal(PublicKey(our), self.nonce, info)
                self.transport.write(_CHALLENGE_HEADER + sealed)
                self.step = 1
            elif self.step == 1:  # AdvertiseResponse -> wait, or PeerDisconnect to the Peer
                self.step = 2
                our, their = self.keys
                partner = self.waiting.pop((their, our), None)
                if partner is None:
                    self.waiting[self.keys] = self
                    continue
                self.partner = partner
                payload = _address_bytes(*self.remote) + _address_bytes(*partner.remote) + b"\0"
                self.transport.write(_frame(_T.PEER_DISCONNECT, payload))

    def eof_received(self) -> bool:
        partner = self.partner
        if partner is not None and partner.transport is not None:  # the Peer confirmed
            payload = b"\x01" + _address_bytes(*self.remote) + b"\0"
            partner.transport.write(_frame(_T.PEER_IDENTIFICATION, payload))
            partner.transport.close()
        return False  # uvloop closes this side

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiting.get(self.keys) is self:
            del self.waiting[self.keys]


def floor_server(port: int, seal: bool, tls: tuple[str, str] | None = None) -> None:
    """``--floor-server``: serve the floor protocol on 127.0.0.1:``port`` until killed;
    ``tls`` (certificate, key): inside TLS (uvloop's own TLS, the same ``ssl`` module)."""
    import ssl

    import uvloop

    _FloorSide.seal = seal
    context = None
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(*tls)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        await loop.create_server(
            _FloorSide, "127.0.0.1", port, backlog=1024, reuse_address=True, ssl=context
        )
        await asyncio.Event().wait()

    uvloop.run(serve())


def start_floor_server(
    port: int, seal: bool, tls: tuple[str, str] | None = None
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, __file__, "--floor-server", str(port)] + (["--seal"] if seal else [])
    if tls is not None:
        cmd += ["--floor-tls", *tls]
    return _wait_listening(subprocess.Popen(cmd), port)


# --- the load generator ---------------------------------------------------------------------


class FillSide(asyncio.Protocol):
    """A registration that waits forever (its partner never comes): Advertise, answer, hold."""

    def __init__(self, keypair: Keypair, their: bytes, done: asyncio.Future[str]) -> None:
        self.keypair, self.their, self.done = keypair, their, done
        self.decoder = wire.FrameDecoder()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        our = self.keypair.public_key.raw
        transport.write(wire.Advertise(1, our, self.their).encode())  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        for message in self.decoder.feed(data):
            if isinstance(message, wire.AdvertiseChallenge) and not self.done.done():
                our = self.keypair.public_key.raw
                info = nonce_info("AdvertiseChallenge", our, self.their)
                nonce = HPKE.open(self.keypair, message.encrypted_nonce, info)
                self.transport.write(wire.AdvertiseResponse(nonce).encode())
                self.done.set_result("challenged")
            elif not self.done.done():
                self.done.set_result(f"unexpected {type(message).__name__}")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(f"lost: {exc}")


@dataclass
class Side:
    """Everything one side of a measured pair needs, prepared before the round starts."""

    keypair: Keypair
    advertise: bytes
    info: bytes
    canned: bytes | None
    """For the socket floor (whose server seals nothing): a challenge sealed to this side
    beforehand, opened instead of the server's, so the generator does the same work."""


def prepare(keypairs: list[Keypair], canned: bool) -> list[Side]:
    sides = []
    for i, keypair in enumerate(keypairs):
        our, their = keypair.public_key.raw, keypairs[i ^ 1].public_key.raw
        info = nonce_info("AdvertiseChallenge", our, their)
        sealed = HPKE.seal(keypair.public_key, os.urandom(32), info) if canned else None
        sides.append(Side(keypair, wire.Advertise(1, our, their).encode(), info, sealed))
    return sides


class PairRun:
    """The two connections of one pair: done when the Peer got PeerDisconnect and the Client
    PeerIdentification (or anything else happened, which fails the round)."""

    __slots__ = ("begin", "done", "results", "transports")

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.begin = time.perf_counter()
        self.done = done
        self.results: list[str] = []
        self.transports: list[asyncio.BaseTransport] = []

    def finish(self, result: str) -> None:
        if self.done.done():
            return
        self.results.append(result)
        if len(self.results) == 2 or result not in ("peer", "client"):
            self.done.set_result(None)


class PairSide(asyncio.Protocol):
    """One side of a measured pair: whole frames are parsed by their type byte (the generator
    must stay cheap: it shares the CPUs with the mediator)."""

    __slots__ = ("buf", "finished", "run", "side", "transport")

    def __init__(self, run: PairRun, side: Side) -> None:
        self.run, self.side = run, side
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.finished = False

    def finish(self, result: str) -> None:
        """This side's outcome (only the first counts: the Peer's own close comes after)."""
        if not self.finished:
            self.finished = True
            self.run.finish(result)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.run.transports.append(transport)
        transport.write(self.side.advertise)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        while len(buf) >= 6:
            end = 6 + ((buf[4] << 8) | buf[5])
            if len(buf) < end:
                break
            mtype, payload, buf = buf[3], buf[6:end], buf[end:]
            if mtype == _T.ADVERTISE_CHALLENGE:
                side = self.side
                sealed = side.canned if side.canned is not None else payload
                nonce = HPKE.open(side.keypair, sealed, side.info)
                self.transport.write(_RESPONSE_HEADER + nonce)  # type: ignore[union-attr]
            elif mtype == _T.PEER_DISCONNECT:
                self.finish("peer")
                self.transport.close()  # type: ignore[union-attr]  # the confirmation
            elif mtype == _T.PEER_IDENTIFICATION:
                self.finish("client")
            else:
                self.finish(f"unexpected message type {mtype}")
        self.buf = buf

    def connection_lost(self, exc: Exception | None) -> None:
        self.finish(f"lost: {exc}")


async def fill(port: int, held: list[asyncio.Transport], count: int, pool: list[Keypair]) -> None:
    """Add ``count`` registrations that wait forever (their partner never registers)."""
    limit = asyncio.Semaphore(256)
    loop = asyncio.get_running_loop()

    async def one(i: int) -> None:
        async with limit:
            keypair = pool[i % len(pool)]
            done: asyncio.Future[str] = loop.create_future()
            transport, _ = await loop.create_connection(
                lambda: FillSide(keypair, secrets.token_bytes(32), done),
                "127.0.0.1",
                port,
                local_addr=(SOURCES[(len(held) + i) % len(SOURCES)], 0),
            )
            result = await asyncio.wait_for(done, 60)
            if result != "challenged":
                raise RuntimeError(f"fill registration failed: {result}")
            held.append(transport)  # type: ignore[arg-type]

    start = len(held)
    await asyncio.gather(*(one(start + i) for i in range(count)))


@dataclass
class Round:
    pairs: int
    seconds: float
    latencies: list[float]
    mediator_cpu: float
    mediator_sys: float
    generator_cpu: float

    @property
    def rate(self) -> float:
        return self.pairs / self.seconds

    @property
    def cpu_per_pairing(self) -> float:
        """CPU seconds of the server process (mediator or floor) per pairing."""
        return self.mediator_cpu / self.pairs

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def pair_round(
    port: int,
    pid: int,
    keypairs: list[Keypair],
    concurrency: int,
    *,
    canned: bool = False,
    tls: Any = None,
) -> Round:
    """Pair ``len(keypairs) // 2`` pairs through the server on ``port`` (process ``pid``);
    keypairs are used two by two. ``concurrency`` workers each connect a pair's two sides
    (A, then B once A's TCP connection is up) and wait for both outcomes before the next."""
    loop = asyncio.get_running_loop()
    sides = prepare(keypairs, canned)
    latencies: list[float] = []
    failures: list[list[str]] = []
    pairs = iter(range(len(sides) // 2))

    async def worker() -> None:
        for i in pairs:
            run = PairRun(loop.create_future())
            for side in (sides[2 * i], sides[2 * i + 1]):
                await loop.create_connection(
                    lambda r=run, s=side: PairSide(r, s),
                    "127.0.0.1",
                    port,
                    ssl=tls,
                    server_hostname="localhost" if tls is not None else None,
                )
            await run.done
            latencies.append(time.perf_counter() - run.begin)
            for transport in run.transports:
                transport.close()
            if sorted(run.results) != ["client", "peer"]:
                failures.append(run.results)
                return

    user0, sys0 = cpu_split(pid)
    mine0 = time.process_time()
    start = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), 120)
    seconds = time.perf_counter() - start
    user1, sys1 = cpu_split(pid)
    if failures:
        raise RuntimeError(f"pairing failed: {failures[0]}")
    return Round(
        len(sides) // 2,
        seconds,
        latencies,
        mediator_cpu=user1 + sys1 - user0 - sys0,
        mediator_sys=sys1 - sys0,
        generator_cpu=time.process_time() - mine0,
    )


async def settle(pid: int, quiet: float = 0.3, limit: float = 30.0) -> None:
    """Wait until the mediator's CPU time stops moving (it has processed everything sent)."""
    end = time.monotonic() + limit
    last = cpu_seconds(pid)
    while time.monotonic() < end:
        await asyncio.sleep(quiet)
        now = cpu_seconds(pid)
        if now - last < 0.01:
            return
        last = now


@dataclass
class Level:
    waiting: int
    rss: int
    fill_seconds: float
    rounds: list[Round]

    @property
    def best(self) -> Round:
        return max(self.rounds, key=lambda r: r.rate)

    @property
    def median_rate(self) -> float:
        return statistics.median(r.rate for r in self.rounds)

    @property
    def cpu_per_pairing(self) -> float:
        """Median over the rounds of the mediator's CPU seconds per pairing."""
        return statistics.median(r.cpu_per_pairing for r in self.rounds)

    @property
    def best_cpu_per_pairing(self) -> float:
        """The least disturbed round's mediator CPU seconds per pairing."""
        return min(r.cpu_per_pairing for r in self.rounds)


@dataclass
class Floor:
    """A floor server and its probes (server CPU seconds per pairing)."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    probes: list[Round]

    @property
    def best(self) -> float:
        return min(r.cpu_per_pairing for r in self.probes)


async def probe_floors(floors: list[Floor], pairs: int, concurrency: int) -> None:
    """One round through each floor server, with the same generator as the mediator's."""
    for floor in floors:
        keypairs = [Keypair.generate() for _ in range(2 * pairs)]
        canned = floor.name == "socket"
        pid = floor.proc.pid
        floor.probes.append(await pair_round(floor.port, pid, keypairs, concurrency, canned=canned))
        await settle(pid)


def _round_line(label: str, rounds: list[Round]) -> str:
    best = max(rounds, key=lambda r: r.rate)
    cpu = [r.cpu_per_pairing for r in rounds]
    generator = statistics.median(r.generator_cpu / r.pairs for r in rounds)
    kernel = statistics.median(r.mediator_sys / r.pairs for r in rounds)
    return (
        f"{label}  pairings/s best {best.rate:5.0f} median"
        f" {statistics.median(r.rate for r in rounds):5.0f}"
        f"  p50 {best.pct(0.5) * 1e3:5.1f} ms p99 {best.pct(0.99) * 1e3:5.1f} ms"
        f"  CPU/pairing: server best {min(cpu) * 1e6:4.0f} us median"
        f" {statistics.median(cpu) * 1e6:4.0f} (kernel {kernel * 1e6:3.0f})"
        f" generator {generator * 1e6:4.0f} us"
    )


async def run_load(
    port: int,
    pid: int,
    levels: list[int],
    pairs: int,
    concurrency: int,
    rounds: int,
    crypto: CryptoCost,
    floors: list[Floor],
) -> tuple[int, list[Level]]:
    """Fill and pair at each level. After every mediator round, probe the crypto cost and
    each floor server once: the machine is shared, so the floors are sampled as often and
    under the same conditions as the mediator, and the least disturbed sample of each is
    compared with the mediator's least disturbed round."""
    pool = [Keypair.generate() for _ in range(64)]
    held: list[asyncio.Transport] = []
    warm = [Keypair.generate() for _ in range(2 * min(pairs, 500))]
    await pair_round(port, pid, warm, concurrency)
    for floor in floors:
        await pair_round(
            floor.port, floor.proc.pid, warm, concurrency, canned=floor.name == "socket"
        )
    await settle(pid)
    base = rss_bytes(pid)
    results: list[Level] = []
    for level in levels:
        t0 = time.perf_counter()
        await fill(port, held, level - len(held), pool)
        await settle(pid)
        rss = rss_bytes(pid)
        row = Level(level, rss, time.perf_counter() - t0, [])
        for _ in range(rounds):
            keypairs = [Keypair.generate() for _ in range(2 * pairs)]
            row.rounds.append(await pair_round(port, pid, keypairs, concurrency))
            await settle(pid)
            crypto.probe(100)
            await probe_floors(floors, pairs, concurrency)
        results.append(row)
        print(
            _round_line(
                f"  mediator  waiting={level:>7,}  filled in {row.fill_seconds:5.1f}s"
                f"  RSS {rss / 2**20:6.1f} MiB ({(rss - base) / level:5.0f} B/waiting)",
                row.rounds,
            ),
            flush=True,
        )
    for transport in held:
        transport.close()
    for floor in floors:
        print(_round_line(f"  {floor.name + ' floor':<21}", floor.probes), flush=True)
    return base, results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="levels 100 / 2,000; 300 pairs")
    parser.add_argument("--levels", default=None, help="comma-separated waiting levels")
    parser.add_argument("--pairs", type=int, default=None, help="pairs per measured round")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per level (5)")
    parser.add_argument("--concurrency", type=int, default=64, help="pairs in flight (64)")
    parser.add_argument("--no-uvloop", action="store_true", help="plain asyncio load generator")
    parser.add_argument(
        "--attach",
        metavar="PORT:PID",
        default=None,
        help="measure an already running mediator on 127.0.0.1:PORT (process PID) instead",
    )
    parser.add_argument(
        "--hardening",
        action="store_true",
        help="TLS vs a TLS floor, and pairing latency under floods (issue 21) instead",
    )
    parser.add_argument("--floods", action="store_true", help="--hardening without TLS")
    parser.add_argument("--floor-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--seal", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--floor-tls", nargs=2, metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.floor_server is not None:  # the floor servers are this file in another process
        floor_server(args.floor_server, args.seal, args.floor_tls)
        return 0
    if args.hardening or args.floods:
        return hardening(args)
    default_levels = "100,2000" if args.quick else "100,10000,100000"
    requested = [int(x) for x in (args.levels or default_levels).split(",")]
    pairs = args.pairs or (300 if args.quick else 1000)
    rounds = args.rounds or (2 if args.quick else 5)

    # Each process needs one descriptor per waiting registration, plus the pairs in flight.
    margin = 4 * args.concurrency + 300
    nofile = raise_nofile(max(requested) + margin)
    levels = sorted({min(level, nofile - margin) for level in requested})
    print(
        f"p2psc mediator benchmark: waiting levels {levels}, {rounds} x {pairs} pairs per level,"
        f" concurrency {args.concurrency}, {os.cpu_count()} CPUs, RLIMIT_NOFILE {nofile}",
        flush=True,
    )
    if levels != sorted(requested):
        print(
            f"  NOTE: {max(requested):,} waiting sockets are impossible here: RLIMIT_NOFILE is"
            f" {nofile} and cannot be raised (no CAP_SYS_RESOURCE), so the socket levels stop at"
            f" {max(levels):,}; the core alone is measured at every requested level below.",
            flush=True,
        )

    crypto = CryptoCost()
    crypto.probe(300 if args.quick else 1000, repeats=5)
    print(
        f"crypto floor: {crypto.floor * 1e6:.0f} us per pairing (2 HPKE seals"
        f" {crypto.seals * 1e6:.0f} + 2 opens {crypto.opens * 1e6:.0f}, best of 5)"
        f" -> {1 / crypto.floor:.0f} pairings/s",
        flush=True,
    )
    core_bytes = {}
    for level in sorted(set(requested)):
        core_bytes[level] = core_bytes_per_registration(level)
        print(
            f"core only (no sockets; tracemalloc): {core_bytes[level]:4.0f} B per waiting"
            f" registration at {level:,}",
            flush=True,
        )

    rigs = core_pairing_rates(sorted({min(requested), max(requested)}), 300 if args.quick else 1000)
    core_rates = {level: rig.rate for level, rig in rigs.items()}
    for level, rig in rigs.items():
        print(
            f"core only (real HPKE seals, no sockets, thread CPU time, best of 5 chunks"
            f" taken in turn with the other level): {rig.rate:.0f} pairings/s with"
            f" {level:,} waiting ({1e6 * rig.best:.0f} us per pairing; garbage collector"
            f" {rig.gc_seconds / rig.paired * 1e6:.1f} us per pairing)",
            flush=True,
        )
    del rigs

    procs: list[subprocess.Popen[bytes]] = []
    try:
        if args.attach:
            port_text, pid_text = args.attach.split(":")
            port, pid = int(port_text), int(pid_text)
        else:
            port = free_port()
            procs.append(start_mediator(port, capacity=max(levels) + 10_000))
            pid = procs[-1].pid
        floors = []
        for name, seal in (("socket", False), ("socket+crypto", True)):
            floor_port = free_port()
            procs.append(start_floor_server(floor_port, seal))
            floors.append(Floor(name, floor_port, procs[-1], []))
        loop_factory = None
        if not args.no_uvloop:
            try:
                import uvloop

                loop_factory = uvloop.new_event_loop
            except ImportError:
                pass
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            base, rows = runner.run(
                run_load(port, pid, levels, pairs, args.concurrency, rounds, crypto, floors)
            )
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    floor = 1 / crypto.floor
    print(
        f"crypto floor, best of {crypto.probes} probes spread over the run:"
        f" {crypto.floor * 1e6:.0f} us per pairing -> {floor:.0f} pairings/s"
        f" (worst probe {crypto.worst * 1e6:.0f} us: the machine is shared)"
    )
    low, high = rows[0], rows[-1]
    best = max(row.best.rate for row in rows)
    per_waiting = (high.rss - base) / high.waiting
    rounds = [r for row in rows for r in row.rounds]
    cpu = min(r.cpu_per_pairing for r in rounds)  # CPU per pairing is flat across the levels
    sockets, minimal = floors[0].best, floors[1].best
    print(f"mediator baseline RSS (warmed up, nothing waiting): {base / 2**20:.1f} MiB")
    print(
        f"mediator CPU per pairing, best of {len(rounds)} rounds (median"
        f" {statistics.median(r.cpu_per_pairing for r in rounds) * 1e6:.0f}): {cpu * 1e6:.0f} us"
        f" = socket floor {sockets * 1e6:.0f} + crypto (2 seals, X25519 key parse)"
        f" {(minimal - sockets) * 1e6:.0f} + the rest {(cpu - minimal) * 1e6:.0f}"
        f" (core, adapter, legacy check, codec, timers); floors best of"
        f" {len(floors[0].probes)} probes taken between those rounds (medians"
        f" {statistics.median(r.cpu_per_pairing for r in floors[0].probes) * 1e6:.0f} and"
        f" {statistics.median(r.cpu_per_pairing for r in floors[1].probes) * 1e6:.0f});"
        f" 2 seals alone on an idle CPU: {crypto.seals * 1e6:.0f} us"
    )
    print("ratios [budget]:")
    print(
        f"  pairings/s / crypto floor             = {best / floor:5.2f} [>= 0.50]"
        f"  ({best:.0f} / {floor:.0f}; generator and mediator share the CPUs)"
    )
    print(
        f"  mediator capacity / crypto floor      = {1 / cpu / floor:5.2f}"
        f"  ({1 / cpu:.0f} pairings per mediator CPU-second, best round)"
    )
    print(
        f"  minimal server capacity / crypto floor = {1 / minimal / floor:5.2f}"
        f"  ({1 / minimal:.0f} pairings per CPU-second: sockets + 2 seals, nothing else)"
    )
    print(
        f"  bytes per waiting @ {high.waiting:,} / 4096    = {per_waiting / 4096:5.2f} [<= 1.00]"
        f"  ({per_waiting:.0f} B, sockets included; kernel socket memory is not in RSS)"
    )
    top = max(core_bytes)
    print(
        f"  core bytes per waiting @ {top:,} / 4096 = {core_bytes[top] / 4096:5.2f} [<= 1.00]"
        f"  ({core_bytes[top]:.0f} B, no sockets)"
    )
    print(
        f"  rate @ {high.waiting:,} / rate @ {low.waiting:,}"
        f"        = {high.best.rate / low.best.rate:5.2f} [0.80 .. 1.20] (best rounds;"
        f" medians {high.median_rate / low.median_rate:.2f}; mediator CPU per pairing"
        f" {low.best_cpu_per_pairing / high.best_cpu_per_pairing:.2f})"
    )
    lo, hi = min(core_rates), max(core_rates)
    print(
        f"  core rate @ {hi:,} / core rate @ {lo:,} = {core_rates[hi] / core_rates[lo]:5.2f}"
        f" [0.80 .. 1.20]  (no sockets; core capacity / floor"
        f" {core_rates[lo] / floor:.2f})"
    )
    return 0


# --- issue 21: TLS and floods ---------------------------------------------------------------

FLOOD = Path(__file__).resolve().parents[1] / "mediator_flood.py"
FLOODS = {
    "no flood": None,
    "256 idle from 127.0.0.1 (the victim's address)": (256, ["127.0.0.1"]),
    "4096 idle from 17 other addresses": (4096, [f"127.0.0.{n}" for n in range(2, 19)]),
}


def _tls_files(directory: Path) -> tuple[str, str]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tls_certs import make_leaf  # tests/tls_certs.py

    leaf = make_leaf(directory, "bench")
    return str(leaf.cert), str(leaf.key)


def _client_tls() -> Any:
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the bench's own self-signed certificate
    return context


def _start_flood(port: int, count: int, sources: list[str]) -> subprocess.Popen[str]:
    cmd = [sys.executable, str(FLOOD), "--port", str(port), "--sources", ",".join(sources)]
    cmd += ["--count", str(count), "--duration", "600", "--max-connects", "200000"]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # {"held": N} once the flood is up
    if not line:
        raise RuntimeError("flood did not start")
    return proc


def _stop_flood(proc: subprocess.Popen[str]) -> str:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.close()
    line = proc.stdout.readline().strip()
    proc.wait(timeout=30)
    return line


async def hardening_load(
    clear: tuple[int, int],
    tls_port: int,
    floors: dict[str, tuple[int, int]],
    pairs: int,
    concurrency: int,
    rounds: int,
) -> None:
    tls = _client_tls()
    port, pid = clear
    warm = [Keypair.generate() for _ in range(2 * min(pairs, 300))]
    for target, target_pid, context in (
        (port, pid, None),
        (tls_port, pid, tls),
        (floors["clear"][0], floors["clear"][1], None),
        (floors["tls"][0], floors["tls"][1], tls),
    ):
        await pair_round(target, target_pid, warm, concurrency, tls=context)
    rows: dict[str, list[Round]] = {
        name: [] for name in ("clear", "tls", "clear floor", "tls floor")
    }
    for _ in range(rounds):
        for name, target, target_pid, context in (
            ("clear", port, pid, None),
            ("tls", tls_port, pid, tls),
            ("clear floor", *floors["clear"], None),
            ("tls floor", *floors["tls"], tls),
        ):
            keypairs = [Keypair.generate() for _ in range(2 * pairs)]
            rows[name].append(
                await pair_round(target, target_pid, keypairs, concurrency, tls=context)
            )
            await settle(target_pid)
    print("TLS (every connection of every pairing inside TLS 1.3, ECDSA P-256 certificate):")
    for name, taken in rows.items():
        print(_round_line(f"  {name:<12}", taken), flush=True)
    best = {name: max(r.rate for r in taken) for name, taken in rows.items()}
    cpu = {name: min(r.cpu_per_pairing for r in taken) for name, taken in rows.items()}
    print(
        f"  pairings/s over TLS / TLS floor            = {best['tls'] / best['tls floor']:5.2f}"
        f"  ({best['tls']:.0f} / {best['tls floor']:.0f}; generator shares the CPUs)"
    )
    print(
        f"  mediator capacity over TLS / TLS floor's   = {cpu['tls floor'] / cpu['tls']:5.2f}"
        f"  ({1 / cpu['tls']:.0f} vs {1 / cpu['tls floor']:.0f} pairings per CPU-second)"
    )
    print(
        f"  TLS cost in the mediator                   = {(cpu['tls'] - cpu['clear']) * 1e6:5.0f}"
        f" us per pairing (floor: {(cpu['tls floor'] - cpu['clear floor']) * 1e6:.0f} us)"
    )


async def latency_round(port: int, pid: int, pairs: int) -> Round:
    keypairs = [Keypair.generate() for _ in range(2 * pairs)]
    return await pair_round(port, pid, keypairs, 1)


def tls_section(args: argparse.Namespace, pairs: int, rounds: int, loop_factory: Any) -> None:
    import tempfile

    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as directory:
        cert, key = _tls_files(Path(directory))
        try:
            port = free_port()
            procs.append(start_mediator(port, 20_000, ("--tls-cert", cert, "--tls-key", key)))
            pid = procs[-1].pid
            floors = {}
            for name, tls in (("clear", None), ("tls", (cert, key))):
                floor_port = free_port()
                procs.append(start_floor_server(floor_port, True, tls))
                floors[name] = (floor_port, procs[-1].pid)
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                runner.run(
                    hardening_load((port, pid), port, floors, pairs, args.concurrency, rounds)
                )
        finally:
            for proc in procs:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=30)


def hardening(args: argparse.Namespace) -> int:
    pairs = args.pairs or (200 if args.quick else 500)
    rounds = args.rounds or (2 if args.quick else 3)
    raise_nofile(10_000)
    procs: list[subprocess.Popen[bytes]] = []
    loop_factory = None
    if not args.no_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            loop_factory = uvloop.new_event_loop
    print(
        f"p2psc mediator hardening benchmark: {rounds} x {pairs} pairs, concurrency"
        f" {args.concurrency}, {os.cpu_count()} CPUs",
        flush=True,
    )
    if not args.floods:
        tls_section(args, pairs, rounds, loop_factory)

    # Floods: a mediator with the default admission limits, given explicitly.
    latency_pairs = 100 if args.quick else 300
    results: dict[str, list[Round]] = {}
    try:
        port = free_port()
        procs.append(
            _wait_listening(
                subprocess.Popen(
                    [
                        *(sys.executable, "-m", "p2psc", "mediator", "--port", str(port)),
                        *("--log-level", "error", "--max-pending", "4096"),
                        *("--max-pending-per-ip", "256", "--challenge-rate", "100000"),
                        *("--challenge-burst", "100000"),
                    ]
                ),
                port,
            )
        )
        pid = procs[-1].pid
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(latency_round(port, pid, 50))  # warm up
            for _ in range(rounds):
                for name, flood in FLOODS.items():
                    attacker = None if flood is None else _start_flood(port, *flood)
                    try:
                        taken = runner.run(latency_round(port, pid, latency_pairs))
                    finally:
                        summary = _stop_flood(attacker) if attacker is not None else ""
                    results.setdefault(name, []).append(taken)
                    if summary:
                        print(f"  ({name}: attacker {summary})", flush=True)
                    runner.run(settle(pid))
    finally:
        for proc in procs:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
    print(
        f"pairing latency of a legitimate pair from 127.0.0.1 ({latency_pairs} pairs one after"
        f" another, {rounds} rounds per condition, conditions interleaved):"
    )
    base = statistics.median(statistics.median(r.latencies) for r in results["no flood"])
    for name, taken in results.items():
        p50 = statistics.median(statistics.median(r.latencies) for r in taken)
        p99 = statistics.median(r.pct(0.99) for r in taken)
        cpu = statistics.median(r.cpu_per_pairing for r in taken)
        generator = statistics.median(r.generator_cpu / r.pairs for r in taken)
        print(
            f"  {name:<48} p50 {p50 * 1e3:6.2f} ms  p99 {p99 * 1e3:6.2f} ms"
            f"  p50 / no flood = {p50 / base:5.2f} [<= 2.00]  (CPU per pairing: mediator"
            f" {cpu * 1e6:.0f} us, generator {generator * 1e6:.0f} us)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
