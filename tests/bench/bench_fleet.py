"""Mediator fleet benchmark (issue 15): the in-memory registry against Redis with one and with two
instances, Redis's own ceiling, and the projection for N instances, all in one run.

    .venv/bin/python tests/bench/bench_fleet.py            # 2,000 pairs x 5 rounds per setup
    .venv/bin/python tests/bench/bench_fleet.py --quick    # 400 pairs x 3 rounds (~1 min)

Setups, each a set of real ``p2psc mediator`` processes on 127.0.0.1 (``--no-legacy``; the
same limits as bench_mediator.py) and one real ``redis-server`` (no persistence):

- ``memory``: one mediator, in-memory registry (the default).
- ``redis x1``: one mediator with ``--registry redis://...``.
- ``redis x2``: two mediators on the same Redis; of every pair, one side connects to each
  instance (which one alternates), so every pairing crosses instances.

The load generator is bench_mediator.py's (raw frames, real HPKE, ``--concurrency`` pairs in
flight). Per round: pairings/s, the mediators' CPU seconds per pairing (summed over the
instances of the setup, from /proc), redis-server's CPU per pairing, and from Redis's INFO:
commands per pairing (``total_commands_processed``) and reads per pairing
(``total_reads_processed``: one read event per pipeline the server received, i.e. round
trips; pub/sub deliveries are writes and not counted). Rounds alternate between the setups so
that load from other processes hits them alike; every figure is the median over the rounds.

Ceiling: ``redis-benchmark`` in the same run, pipelined (``-P 32``), calling the real claim
script (``EVALSHA``) on random pair keys and ``PUBLISH`` on a channel nobody listens to: a
pairing costs two claims and one publish (the claim notice is published inside the script), so
the ceiling is ``1 / (2 / claims_per_s + 1 / publishes_per_s)`` pairings/s.

Projection for N instances on N machines (one CPU each, Redis on its own): an instance's
capacity is ``1 / (its CPU seconds per pairing)`` where, with peers spread evenly, each
instance does half the work of the pairings it takes part in; so N instances pair
``N / cpu_x2`` per second where ``cpu_x2`` is the x2 setup's CPU per pairing summed over both
instances, capped by the Redis ceiling. On this 2-CPU machine the two instances, the generator
and Redis share the CPUs, so the end-to-end pairings/s of ``redis x2`` is bounded by the
generator, not by the fleet: the 2-instance speed-up is computed from CPU time per pairing
(capacity with one CPU per instance), which is what each instance would do on its own machine.

Budgets: Redis adds at most 30% CPU per pairing over memory (``cpu_x1 / cpu_mem <= 1.3``);
two instances pair at least 1.6x one instance (``2 cpu_x1 / cpu_x2 >= 1.6``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_mediator import (
    PairRun,
    PairSide,
    cpu_seconds,
    cpu_split,
    free_port,
    prepare,
    raise_nofile,
    settle,
    start_mediator,
)
from fleet_helpers import RedisServer

from p2psc.aio.fleet import CLAIM
from p2psc.keys import Keypair


@dataclass
class Sample:
    pairs: int
    seconds: float
    mediator_cpu: float
    mediator_sys: float
    """The kernel's part of mediator_cpu (system calls: sockets, epoll)."""
    redis_cpu: float
    commands: int
    """Every command Redis executed, those inside scripts included."""
    reads: int
    """Read events (one per pipeline received): round trips."""
    scripts: int
    """EVALSHA calls (claims, unregisters, refreshes)."""
    publishes: int
    """PUBLISH calls, those inside the claim script included."""

    @property
    def rate(self) -> float:
        return self.pairs / self.seconds


@dataclass
class Setup:
    name: str
    ports: list[int]
    procs: list[subprocess.Popen[bytes]]
    samples: list[Sample] = field(default_factory=list)

    def best(self, attribute: str) -> float:
        """The least disturbed round's value per pairing (the machine is shared: other
        processes only ever add CPU time per operation)."""
        return min(getattr(s, attribute) / s.pairs for s in self.samples)

    def median(self, attribute: str) -> float:
        values = [
            getattr(s, attribute) / (1 if attribute == "rate" else s.pairs) for s in self.samples
        ]
        return statistics.median(values)


def redis_info(redis: RedisServer) -> dict[str, int]:
    """INFO stats counters, plus ``calls_<command>`` from INFO commandstats."""
    text = redis.command("INFO", "stats").decode(errors="replace")
    info = {k: int(v) for k, v in re.findall(r"^(\w+):(\d+)\r?$", text, re.MULTILINE)}
    text = redis.command("INFO", "commandstats").decode(errors="replace")
    for name, calls in re.findall(r"^cmdstat_([\w|]+):calls=(\d+)", text, re.MULTILINE):
        info[f"calls_{name}"] = int(calls)
    return info


async def pair_round(
    setup: Setup, redis: RedisServer, keypairs: list[Keypair], concurrency: int
) -> Sample:
    """Pair ``len(keypairs) // 2`` pairs; side j of pair i goes to instance (i + j) % n."""
    loop = asyncio.get_running_loop()
    sides = prepare(keypairs, canned=False)
    failures: list[list[str]] = []
    pairs = iter(range(len(sides) // 2))
    ports = setup.ports

    async def worker() -> None:
        for i in pairs:
            run = PairRun(loop.create_future())
            for j, side in enumerate((sides[2 * i], sides[2 * i + 1])):
                await loop.create_connection(
                    lambda r=run, s=side: PairSide(r, s), "127.0.0.1", ports[(i + j) % len(ports)]
                )
            await asyncio.wait_for(run.done, 60)
            for transport in run.transports:
                transport.close()
            if sorted(run.results) != ["client", "peer"]:
                failures.append(run.results)
                return

    redis_pid = redis.proc.pid if redis.proc else 0
    before = [cpu_seconds(p.pid) for p in setup.procs]
    sys_before = sum(cpu_split(p.pid)[1] for p in setup.procs)
    redis_before = cpu_seconds(redis_pid)
    info_before = redis_info(redis)
    start = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), 300)
    seconds = time.perf_counter() - start
    for proc in setup.procs:
        await settle(proc.pid)
    after = [cpu_seconds(p.pid) for p in setup.procs]
    sys_after = sum(cpu_split(p.pid)[1] for p in setup.procs)
    info_after = redis_info(redis)
    if failures:
        raise RuntimeError(f"{setup.name}: pairing failed: {failures[0]}")
    return Sample(
        len(sides) // 2,
        seconds,
        sum(after) - sum(before),
        sys_after - sys_before,
        cpu_seconds(redis_pid) - redis_before,
        info_after["total_commands_processed"] - info_before["total_commands_processed"],
        info_after["total_reads_processed"] - info_before["total_reads_processed"],
        info_after.get("calls_evalsha", 0) - info_before.get("calls_evalsha", 0),
        info_after.get("calls_publish", 0) - info_before.get("calls_publish", 0),
    )


def redis_ceiling(redis: RedisServer, requests: int) -> tuple[float, float]:
    """(claim scripts/s, publishes/s) measured by redis-benchmark, pipelined."""
    sha = redis.command("SCRIPT", "LOAD", CLAIM).split(b"\r\n")[1].decode()
    record = "R" + "0" * 32 + '["127.0.0.1",40000,null,null]'

    def bench(*command: str) -> float:
        out = subprocess.run(
            [
                "redis-benchmark",
                "-p",
                str(redis.port),
                "-n",
                str(requests),
                "-P",
                "32",
                "-r",
                "1000000",
                "-q",
                *command,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        ).stdout
        found = re.findall(r"([\d.]+) requests per second", out)
        if not found:
            raise RuntimeError(f"redis-benchmark said: {out!r}")
        return float(found[-1])

    claims = bench(
        "EVALSHA",
        sha,
        "2",
        "p2psc:bench:{__rand_int__}:1",
        "p2psc:bench:{__rand_int__}:0",
        record,
        "30000",
        "30000",
        "p2psc:bench-fleet:",
        "1",
    )
    publishes = bench("PUBLISH", "p2psc:bench-fleet:nobody", "F" + "0" * 80)
    redis.command("FLUSHALL")
    return claims, publishes


async def main_async(args: argparse.Namespace) -> int:
    raise_nofile(65536)
    with tempfile.TemporaryDirectory(prefix="p2psc-bench-fleet-") as tmp:
        redis = RedisServer(Path(tmp))
        redis.start()
        setups: list[Setup] = []
        try:
            extra = ("--no-legacy",)
            fleet = (*extra, "--registry", redis.url)
            port = free_port()
            setups.append(Setup("memory", [port], [start_mediator(port, 10_000, extra)]))
            port = free_port()
            setups.append(Setup("redis x1", [port], [start_mediator(port, 10_000, fleet)]))
            ports = [free_port(), free_port()]
            setups.append(
                Setup("redis x2", ports, [start_mediator(p, 10_000, fleet) for p in ports])
            )
            if args.pin:
                # the mediators on CPU 0, Redis and this generator on the other CPUs: the
                # mediators' CPU time per pairing is then not inflated by Redis running on
                # the same CPU (which the memory setup does not have)
                others = set(range(1, os.cpu_count() or 2)) or {0}
                for setup in setups:
                    for proc in setup.procs:
                        os.sched_setaffinity(proc.pid, {0})
                if redis.proc is not None:
                    os.sched_setaffinity(redis.proc.pid, others)
                os.sched_setaffinity(0, others)
            warm = [Keypair.generate() for _ in range(2 * min(200, args.pairs))]
            for setup in setups:
                await pair_round(setup, redis, warm, args.concurrency)
            for r in range(args.rounds):
                for setup in setups:
                    keypairs = [Keypair.generate() for _ in range(2 * args.pairs)]
                    sample = await pair_round(setup, redis, keypairs, args.concurrency)
                    setup.samples.append(sample)
                    print(
                        f"round {r + 1} {setup.name:9}: {sample.rate:7.0f} pairings/s, "
                        f"mediator CPU {1e6 * sample.mediator_cpu / sample.pairs:6.0f} us/pairing "
                        f"({1e6 * sample.mediator_sys / sample.pairs:4.0f} sys), "
                        f"redis CPU {1e6 * sample.redis_cpu / sample.pairs:5.0f} us, "
                        f"{sample.scripts / sample.pairs:.2f} scripts + "
                        f"{sample.publishes / sample.pairs:.2f} publishes "
                        f"({sample.commands / sample.pairs:.2f} cmds), "
                        f"{sample.reads / sample.pairs:.2f} reads per pairing",
                        flush=True,
                    )
            claims, publishes = redis_ceiling(redis, args.ceiling_requests)
        finally:
            for setup in setups:
                for proc in setup.procs:
                    proc.terminate()
            for setup in setups:
                for proc in setup.procs:
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
            redis.stop()

    mem, x1, x2 = setups
    cpu_mem, cpu_x1, cpu_x2 = (s.best("mediator_cpu") for s in setups)
    print()
    print(
        f"{'setup':9} {'pairings/s':>10} {'CPU us/pairing':>15} {'of it sys':>9} "
        f"{'redis CPU':>9} {'scripts':>7} {'publishes':>9} {'all cmds':>8} {'round trips':>11}"
    )
    for s in setups:
        cpu = f"{1e6 * s.best('mediator_cpu'):.0f} / {1e6 * s.median('mediator_cpu'):.0f}"
        print(
            f"{s.name:9} {s.median('rate'):10.0f} {cpu:>15} "
            f"{1e6 * s.median('mediator_sys'):9.0f} {1e6 * s.median('redis_cpu'):9.0f} "
            f"{s.median('scripts'):7.2f} {s.median('publishes'):9.2f} "
            f"{s.median('commands'):8.2f} {s.median('reads'):11.2f}"
        )
    print(
        "(per pairing; pairings/s and the rest: median over the rounds; CPU: best / median; "
        "all cmds include those inside scripts; round trips = Redis read events)"
    )
    ceiling = 1 / (2 / claims + 1 / publishes)
    print()
    print(f"redis-benchmark (-P 32): {claims:,.0f} claim scripts/s, {publishes:,.0f} publishes/s")
    formula = f"1 / (2 / {claims:,.0f} + 1 / {publishes:,.0f})"
    print(f"Redis ceiling = {formula} = {ceiling:,.0f} pairings/s")
    overhead = cpu_x1 / cpu_mem
    speedup = 2 * cpu_x1 / cpu_x2
    print()
    print(
        f"Redis CPU overhead per pairing: x1 / memory = {1e6 * cpu_x1:.0f} / {1e6 * cpu_mem:.0f} "
        f"= {overhead:.2f} (budget <= 1.30: {'ok' if overhead <= 1.3 else 'OVER'})"
    )
    print(
        f"2 instances vs 1 with a CPU each: 2 x {1e6 * cpu_x1:.0f} / {1e6 * cpu_x2:.0f} = "
        f"{speedup:.2f}x (budget >= 1.6: {'ok' if speedup >= 1.6 else 'UNDER'})"
    )
    print(
        f"end to end on this 2-CPU machine (generator-bound): x2 / x1 = "
        f"{x2.median('rate'):.0f} / {x1.median('rate'):.0f} = "
        f"{x2.median('rate') / x1.median('rate'):.2f}x; "
        f"memory {mem.median('rate'):.0f} pairings/s"
    )
    print()
    print("projection, N instances on N machines (one CPU each), Redis on its own:")
    per_instance = 2 / cpu_x2  # pairings/s one instance carries when half of each pairing is its
    for n in (1, 2, 4, 8, 16, 32):
        fleet_rate = (1 / cpu_x1) if n == 1 else n / cpu_x2
        print(
            f"  N={n:2}: min(N / cpu_x2 = {n} / {1e6 * cpu_x2:.0f} us, ceiling {ceiling:,.0f}) = "
            f"{min(fleet_rate, ceiling):,.0f} pairings/s"
            if n > 1
            else f"  N= 1: 1 / cpu_x1 = 1 / {1e6 * cpu_x1:.0f} us = {fleet_rate:,.0f} pairings/s"
        )
    print(
        f"  Redis saturates at N = ceiling x cpu_x2 = {ceiling * cpu_x2:.1f} instances "
        f"({per_instance / 2:,.0f} pairings/s per instance)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="400 pairs x 3 rounds")
    parser.add_argument("--pairs", type=int, default=None, help="pairs per round (2000)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per setup (5)")
    parser.add_argument("--concurrency", type=int, default=64, help="pairs in flight (64)")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="mediators on CPU 0, Redis and the generator on the others (sched_setaffinity)",
    )
    parser.add_argument("--ceiling-requests", type=int, default=None, help="redis-benchmark -n")
    args = parser.parse_args(argv)
    args.pairs = args.pairs or (400 if args.quick else 2000)
    args.rounds = args.rounds or (3 if args.quick else 5)
    args.ceiling_requests = args.ceiling_requests or (100_000 if args.quick else 500_000)
    try:
        import uvloop

        return uvloop.run(main_async(args))
    except ImportError:
        return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
