"""Mediator benchmark: pairings/s and latency through a real mediator process, memory per
waiting registration, and the crypto floor, all measured in one run and printed as ratios.

    .venv/bin/python tests/bench/bench_mediator.py            # full: 100 / 10,000 / 100,000
    .venv/bin/python tests/bench/bench_mediator.py --quick    # small and fast (~20 s)

What it does:

1. **Crypto floor** (no I/O): the cost of one pairing's cryptography, two HPKE seals (mediator)
   plus two opens (the peers), measured in this process; floor = 1 / that cost.
2. Starts ``p2psc mediator`` in **another process** on 127.0.0.1 (uvloop, logs at warning).
3. For each level of waiting registrations (default 100, 10,000, 100,000): fills the mediator
   with registrations that wait for a partner who never comes (raw frames, real HPKE, from
   several loopback source addresses because one address has only ~28k ephemeral ports), then
   reads the mediator's RSS (per waiting registration = RSS growth over the warmed-up baseline
   divided by the number waiting), then pairs ``--pairs`` fresh pairs through it with bounded
   concurrency: pairings/s, p50/p99 latency (first connect of a pair to PeerIdentification at
   the Client) and the mediator's own CPU time per pairing.
4. The core's memory per registration without sockets (tracemalloc, symbolic crypto).

Budgets (DESIGN.md section 11): pairings/s >= 50% of the floor; <= 4 KiB per waiting
registration; pairing rate within 20% from the lowest to the highest level. The load generator
shares the 2 cores with the mediator, so the mediator's CPU time per pairing is printed too: it
is the capacity of the mediator itself, independent of the generator.
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


def crypto_floor(iterations: int, repeats: int = 5) -> float:
    """Seconds of crypto per pairing: 2 seals + 2 opens (HPKE, no I/O); best of ``repeats``
    (the machine is shared, so the minimum is the least disturbed measurement)."""
    return min(_crypto_once(iterations) for _ in range(repeats))


def _crypto_once(iterations: int) -> float:
    a, b = Keypair.generate(), Keypair.generate()
    info_a = nonce_info("AdvertiseChallenge", a.public_key.raw, b.public_key.raw)
    info_b = nonce_info("AdvertiseChallenge", b.public_key.raw, a.public_key.raw)
    start = time.perf_counter()
    for _ in range(iterations):
        for kp, info in ((a, info_a), (b, info_b)):
            nonce = secrets.token_bytes(32)
            sealed = HPKE.seal(kp.public_key, nonce, info)
            assert HPKE.open(kp, sealed, info) == nonce
    return (time.perf_counter() - start) / iterations


class _PlainCrypto:
    """Symbolic crypto for the socket-less core measurement (seal = nonce + padding)."""

    def seal(self, recipient: PublicKey, nonce: bytes, info: bytes) -> bytes:
        return nonce + bytes(48)

    def open(self, keypair: Keypair, sealed: bytes, info: bytes) -> bytes:
        return sealed[:32]


def core_bytes_per_registration(count: int) -> float:
    """tracemalloc growth of MediatorCore per waiting registration (no sockets, no adapter)."""
    from p2psc.core.io import Opened, Received
    from p2psc.core.mediator import MediatorConfig, MediatorCore

    config = MediatorConfig(
        max_pending=count + 1,
        max_pending_per_ip=count + 1,
        max_waiting=count + 1,
        max_waiting_per_ip=count + 1,
    )
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


def core_pairing_rate(waiting: int, pairs: int) -> float:
    """Pairings/s of MediatorCore alone (real HPKE seals, no sockets) with ``waiting``
    registrations held: checks that nothing in the core grows with the number waiting."""
    from p2psc.core.io import Closed, Opened, Received
    from p2psc.core.mediator import MediatorConfig, MediatorCore

    big = waiting + pairs + 10
    config = MediatorConfig(
        max_pending=big, max_pending_per_ip=big, max_waiting=big, max_waiting_per_ip=big
    )
    crypto = _SwitchCrypto()
    core = MediatorCore(config, crypto=crypto)
    conn = 0
    for _ in range(waiting):
        conn += 1
        core.handle(Opened(conn, (SOURCES[conn % len(SOURCES)], 10000 + conn % 50000)), 0.0)
        frame = wire.Advertise(1, secrets.token_bytes(32), secrets.token_bytes(32)).encode()
        (send, _timer) = core.handle(Received(conn, frame), 0.0)
        nonce = wire.decode(send.data).encrypted_nonce[:32]  # type: ignore[union-attr]
        core.handle(Received(conn, wire.AdvertiseResponse(nonce).encode()), 0.0)
    assert core.waiting == waiting
    crypto.real = True
    keypairs = [Keypair.generate() for _ in range(2 * pairs)]
    chunk = max(1, pairs // 5)
    chunk_times: list[float] = []
    spent = 0.0
    for i in range(pairs):
        if i and i % chunk == 0:
            chunk_times.append(spent)
            spent = 0.0
        a, b = keypairs[2 * i], keypairs[2 * i + 1]
        conns = []
        for me, them in ((a, b), (b, a)):
            conn += 1
            our, their = me.public_key.raw, them.public_key.raw
            advertise = wire.Advertise(1, our, their).encode()
            t0 = time.perf_counter()
            core.handle(Opened(conn, ("127.0.0.1", 10000 + conn % 50000)), 0.0)
            (send, _timer) = core.handle(Received(conn, advertise), 0.0)
            spent += time.perf_counter() - t0
            sealed = wire.decode(send.data).encrypted_nonce  # type: ignore[union-attr]
            info = nonce_info("AdvertiseChallenge", our, their)
            response = wire.AdvertiseResponse(HPKE.open(me, sealed, info)).encode()
            t0 = time.perf_counter()
            core.handle(Received(conn, response), 0.0)
            spent += time.perf_counter() - t0
            conns.append(conn)
        t0 = time.perf_counter()
        core.handle(Closed(conns[1]), 0.0)
        spent += time.perf_counter() - t0
    chunk_times.append(spent * chunk / (pairs - chunk * len(chunk_times) or chunk))
    assert core.waiting == waiting and core.sessions == waiting
    return chunk / min(chunk_times)  # best chunk: the least disturbed, like the floor


# --- the mediator process -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_mediator(port: int, capacity: int) -> subprocess.Popen[bytes]:
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
        "20000",
        "--max-pending-per-ip",
        "20000",
        "--max-waiting",
        str(capacity),
        "--max-waiting-per-ip",
        str(capacity),
    ]
    proc = subprocess.Popen(cmd)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("mediator exited during start-up")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("mediator did not start listening within 20 s")


# --- the load generator ---------------------------------------------------------------------


class RawSide(asyncio.Protocol):
    """One raw mediator client (protocol-level, so the generator stays cheap)."""

    def __init__(self, keypair: Keypair, their: bytes, done: asyncio.Future[str]) -> None:
        self.keypair, self.their, self.done = keypair, their, done
        self.decoder = wire.FrameDecoder()
        self.transport: asyncio.Transport | None = None
        self.registered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        our = self.keypair.public_key.raw
        transport.write(wire.Advertise(1, our, self.their).encode())  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        for message in self.decoder.feed(data):
            if isinstance(message, wire.AdvertiseChallenge):
                our = self.keypair.public_key.raw
                info = nonce_info("AdvertiseChallenge", our, self.their)
                nonce = HPKE.open(self.keypair, message.encrypted_nonce, info)
                self.transport.write(wire.AdvertiseResponse(nonce).encode())
                self.registered = True
                if not self.done.done():
                    self.done.set_result("challenged")
            elif isinstance(message, wire.PeerDisconnect):
                self._finish("peer")
                self.transport.close()  # the confirmation the mediator waits for
            elif isinstance(message, wire.PeerIdentification):
                self._finish("client")
            else:
                self._finish(f"unexpected {type(message).__name__}")

    def _finish(self, result: str) -> None:
        future = getattr(self, "paired", None)
        if future is not None and not future.done():
            future.set_result(result)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(f"lost: {exc}")
        self._finish(f"lost: {exc}")


async def connect_side(
    port: int, keypair: Keypair, their: bytes
) -> tuple[asyncio.Transport, RawSide]:
    """Connect from 127.0.0.1 (the fill uses 127.0.0.2 and up), port chosen at connect time."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[str] = loop.create_future()
    transport, protocol = await loop.create_connection(
        lambda: RawSide(keypair, their, done), "127.0.0.1", port
    )
    return transport, protocol  # type: ignore[return-value]


async def fill(port: int, held: list[asyncio.Transport], count: int, pool: list[Keypair]) -> None:
    """Add ``count`` registrations that wait forever (their partner never registers)."""
    limit = asyncio.Semaphore(256)
    loop = asyncio.get_running_loop()

    async def one(i: int) -> None:
        async with limit:
            keypair = pool[i % len(pool)]
            done: asyncio.Future[str] = loop.create_future()
            transport, _ = await loop.create_connection(
                lambda: RawSide(keypair, secrets.token_bytes(32), done),
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

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def pair_round(port: int, pid: int, keypairs: list[Keypair], concurrency: int) -> Round:
    """Pair ``len(keypairs) // 2`` pairs through the mediator; keypairs are used two by two."""
    loop = asyncio.get_running_loop()
    limit = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(i: int) -> None:
        a, b = keypairs[2 * i], keypairs[2 * i + 1]
        async with limit:
            begin = loop.perf_counter() if hasattr(loop, "perf_counter") else time.perf_counter()
            results: list[asyncio.Future[str]] = []
            transports = []
            for me, them in ((a, b), (b, a)):
                transport, protocol = await connect_side(port, me, them.public_key.raw)
                paired: asyncio.Future[str] = loop.create_future()
                protocol.paired = paired  # type: ignore[attr-defined]
                results.append(paired)
                transports.append(transport)
            outcome = sorted(await asyncio.wait_for(asyncio.gather(*results), 60))
            latencies.append(time.perf_counter() - begin)
            for transport in transports:
                transport.close()
            if outcome != ["client", "peer"]:
                raise RuntimeError(f"pairing failed: {outcome}")

    user0, sys0 = cpu_split(pid)
    mine0 = time.process_time()
    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(len(keypairs) // 2)))
    seconds = time.perf_counter() - start
    user1, sys1 = cpu_split(pid)
    return Round(
        len(keypairs) // 2,
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
        return statistics.median(r.mediator_cpu / r.pairs for r in self.rounds)


async def run_load(
    port: int,
    pid: int,
    levels: list[int],
    pairs: int,
    concurrency: int,
    rounds: int,
    floors: list[float],
) -> tuple[int, list[Level]]:
    """Fill and pair at each level; append a fresh crypto-floor probe to ``floors`` before each
    level (the machine may be shared: the least disturbed probe is the fairest floor)."""
    pool = [Keypair.generate() for _ in range(64)]
    held: list[asyncio.Transport] = []
    warm = [Keypair.generate() for _ in range(2 * min(pairs, 500))]
    await pair_round(port, pid, warm, concurrency)
    await settle(pid)
    base = rss_bytes(pid)
    results: list[Level] = []
    for level in levels:
        floors.append(crypto_floor(300, repeats=3))
        t0 = time.perf_counter()
        await fill(port, held, level - len(held), pool)
        await settle(pid)
        rss = rss_bytes(pid)
        row = Level(level, rss, time.perf_counter() - t0, [])
        for _ in range(rounds):
            keypairs = [Keypair.generate() for _ in range(2 * pairs)]
            row.rounds.append(await pair_round(port, pid, keypairs, concurrency))
            await settle(pid)
        results.append(row)
        best = row.best
        kernel = statistics.median(r.mediator_sys / r.pairs for r in row.rounds)
        generator = statistics.median(r.generator_cpu / r.pairs for r in row.rounds)
        print(
            f"  waiting={level:>7,}  filled in {row.fill_seconds:5.1f}s"
            f"  RSS {rss / 2**20:6.1f} MiB ({(rss - base) / level:5.0f} B/waiting)"
            f"  pairings/s best {best.rate:5.0f} median {row.median_rate:5.0f}"
            f"  p50 {best.pct(0.5) * 1e3:5.1f} ms p99 {best.pct(0.99) * 1e3:5.1f} ms"
            f"  CPU/pairing: mediator {row.cpu_per_pairing * 1e6:4.0f} us"
            f" (kernel {kernel * 1e6:3.0f}) generator {generator * 1e6:4.0f} us",
            flush=True,
        )
    for transport in held:
        transport.close()
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
    args = parser.parse_args(argv)
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

    per_pairing = crypto_floor(300 if args.quick else 1000)
    floor = 1 / per_pairing
    print(
        f"crypto floor: {per_pairing * 1e6:.0f} us per pairing (2 HPKE seals + 2 opens, best of 5)"
        f" -> {floor:.0f} pairings/s",
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

    core_rates = {}
    for level in (min(requested), max(requested)):
        core_rates[level] = core_pairing_rate(level, 300 if args.quick else 1000)
        print(
            f"core only (real HPKE seals, no sockets, best of 5 chunks):"
            f" {core_rates[level]:.0f} pairings/s with"
            f" {level:,} waiting",
            flush=True,
        )

    if args.attach:
        port_text, pid_text = args.attach.split(":")
        port, pid, mediator = int(port_text), int(pid_text), None
    else:
        port = free_port()
        mediator = start_mediator(port, capacity=max(levels) + 10_000)
        pid = mediator.pid
    try:
        loop_factory = None
        if not args.no_uvloop:
            try:
                import uvloop

                loop_factory = uvloop.new_event_loop
            except ImportError:
                pass
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            floors = [per_pairing]
            base, rows = runner.run(
                run_load(port, pid, levels, pairs, args.concurrency, rounds, floors)
            )
    finally:
        if mediator is not None:
            mediator.terminate()
            try:
                mediator.wait(timeout=30)
            except subprocess.TimeoutExpired:
                mediator.kill()
    per_pairing = min(floors)
    floor = 1 / per_pairing
    print(
        f"crypto floor, best of {len(floors)} probes spread over the run:"
        f" {per_pairing * 1e6:.0f} us per pairing -> {floor:.0f} pairings/s"
        f" (worst probe {max(floors) * 1e6:.0f} us: the machine is shared)"
    )
    low, high = rows[0], rows[-1]
    best = max(row.best.rate for row in rows)
    per_waiting = (high.rss - base) / high.waiting
    cpu = statistics.median(row.cpu_per_pairing for row in rows)
    print(f"mediator baseline RSS (warmed up, nothing waiting): {base / 2**20:.1f} MiB")
    print("ratios [budget]:")
    print(
        f"  pairings/s / crypto floor             = {best / floor:5.2f} [>= 0.50]"
        f"  ({best:.0f} / {floor:.0f}; generator and mediator share the CPUs)"
    )
    print(
        f"  mediator capacity / crypto floor      = {1 / cpu / floor:5.2f}"
        f"  ({1 / cpu:.0f} pairings per mediator CPU-second)"
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
        f" medians {high.median_rate / low.median_rate:.2f})"
    )
    lo, hi = min(core_rates), max(core_rates)
    print(
        f"  core rate @ {hi:,} / core rate @ {lo:,} = {core_rates[hi] / core_rates[lo]:5.2f}"
        f" [0.80 .. 1.20]  (no sockets; core capacity / floor"
        f" {core_rates[lo] / floor:.2f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
