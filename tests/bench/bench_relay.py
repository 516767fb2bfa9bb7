"""Benchmark of the relay (issue 14): relayed vs direct throughput, relay CPU per MiB, circuits
per GiB of relay memory. One run; figures only, asserts nothing.

Run: .venv/bin/python tests/bench/bench_relay.py [--mib 64] [--rounds 3] [--circuits 500]

- **Throughput**: two peers in this process connect (asyncio ``connect()``) through a Mediator
  with ``--relay`` running in a subprocess, once with ``relay="never"`` (direct, on loopback)
  and once with ``relay="only"``; each sends ``--mib`` MiB one way in 64 KiB writes. Both are
  measured in the same run, best of ``--rounds``; the ratio is relayed / direct.
- **Relay CPU per MiB**: user+system CPU of the relay process (``/proc/PID/stat``) during the
  relayed transfers, divided by the MiB it forwarded.
- **Circuits per GiB**: this process opens ``--circuits`` idle circuits (two authenticated legs
  each, raw relay protocol) to a fresh relay process; the growth of the relay's resident memory
  per circuit gives circuits per GiB (idle: no data buffered).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

from p2psc import relay_wire as rw
from p2psc.aio.connect import P2PConnection, connect
from p2psc.keys import HPKE, Keypair

WRITE = 64 * 1024
MiB = 1 << 20
TICKS = os.sysconf("SC_CLK_TCK")


def start_server(*argv: str) -> tuple[subprocess.Popen[bytes], int]:
    """``p2psc mediator --relay`` or ``p2psc relay`` on a free port; (process, port). Its log
    goes to a temporary file (a pipe nobody drains would block it)."""
    log = tempfile.TemporaryFile()  # noqa: SIM115  (closed with the process)
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2psc", *argv, "--port", "0"],
        stderr=log,
        stdout=subprocess.DEVNULL,
    )
    end = time.monotonic() + 20
    while time.monotonic() < end and proc.poll() is None:
        log.seek(0)
        found = re.search(rb"listening on [\d.]+:(\d+)|port=(\d+)", log.read())
        if found:
            return proc, int(found.group(1) or found.group(2))
        time.sleep(0.05)
    proc.kill()
    log.seek(0)
    raise RuntimeError(f"the server did not start: {log.read()[-2000:]!r}")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


async def pair(port: int, relay: str) -> tuple[P2PConnection, P2PConnection]:
    a, b = Keypair.generate(), Keypair.generate()
    addr = ("127.0.0.1", port)
    opts = {"timeout": 20.0, "relay": relay}
    first = asyncio.create_task(connect(a, b.public_key, addr, **opts))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    second = connect(b, a.public_key, addr, **opts)  # type: ignore[arg-type]
    ca, cb = await asyncio.gather(first, second)
    return ca, cb


async def transfer(port: int, relay: str, mib: int) -> tuple[float, str]:
    ca, cb = await pair(port, relay)
    block = b"\x00" * WRITE
    total = mib * MiB

    async def send() -> None:
        for _ in range(total // WRITE):
            ca.writer.write(block)
            await ca.writer.drain()

    async def receive() -> None:
        got = 0
        while got < total:
            data = await cb.reader.read(1 << 20)
            assert data
            got += len(data)

    started = time.perf_counter()
    await asyncio.gather(send(), receive())
    took = time.perf_counter() - started
    ca.close()
    cb.close()
    await ca.wait_closed()
    await cb.wait_closed()
    return mib / took, ca.path


async def throughput(mib: int, rounds: int) -> None:
    proc, port = start_server(
        "mediator",
        "--relay",
        "--relay-max-rate",
        "0",
        "--relay-max-bytes",
        "0",
    )
    try:
        best = {"never": 0.0, "only": 0.0}
        relay_cpu = 0.0
        relayed_mib = 0
        for _ in range(rounds):
            for mode in ("never", "only"):
                before = cpu_seconds(proc.pid)
                rate, path = await transfer(port, mode, mib)
                assert path == ("direct" if mode == "never" else "relayed"), path
                if mode == "only":
                    relay_cpu += cpu_seconds(proc.pid) - before
                    relayed_mib += mib
                best[mode] = max(best[mode], rate)
    finally:
        proc.kill()
        proc.wait()
    print(f"throughput, {mib} MiB one way, 64 KiB writes, best of {rounds} (loopback):")
    print(f"  direct   {best['never']:8.1f} MiB/s")
    print(f"  relayed  {best['only']:8.1f} MiB/s   ({best['only'] / best['never']:.2f}x direct)")
    cpu_ms = relay_cpu / relayed_mib * 1e3
    print(f"relay CPU: {cpu_ms:.2f} ms per MiB relayed ({relayed_mib} MiB, {relay_cpu:.2f} s)")


async def circuits(count: int) -> None:
    proc, port = start_server(
        "relay",
        "--max-per-address",
        "100000",
        "--max-connections",
        "100000",
        "--max-pending",
        "100000",
        "--max-rate",
        "0",
        "--challenge-rate",
        "1000000",
        "--challenge-burst",
        "1000000",
    )
    legs: list[asyncio.StreamWriter] = []
    try:
        await asyncio.sleep(0.5)
        base = rss_bytes(proc.pid)
        pid = bytes(16)

        async def leg(me: Keypair, them: Keypair, pairing: bytes) -> asyncio.StreamReader:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            legs.append(writer)
            request = rw.RelayRequest(1, me.public_key.raw, them.public_key.raw, pairing)
            writer.write(request.encode())
            frame = await reader.readexactly(6 + 80)
            challenge = rw.decode_relay(frame)
            assert isinstance(challenge, rw.RelayChallenge)
            info = rw.challenge_info(me.public_key.raw, them.public_key.raw, pairing)
            nonce = HPKE.open(me, challenge.encrypted_nonce, info)
            writer.write(rw.RelayResponse(nonce).encode())
            return reader

        started = time.perf_counter()
        for index in range(count):
            a, b = Keypair.generate(), Keypair.generate()
            pairing = index.to_bytes(16, "big") if index else pid
            ra = await leg(a, b, pairing)
            rb = await leg(b, a, pairing)
            for reader in (ra, rb):
                connected = rw.decode_relay(await reader.readexactly(6 + 12))
                assert isinstance(connected, rw.RelayConnected)
        took = time.perf_counter() - started
        await asyncio.sleep(0.5)
        grown = rss_bytes(proc.pid) - base
    finally:
        for writer in legs:
            writer.close()
        proc.kill()
        proc.wait()
    per = grown / count
    print(
        f"circuits: {count} idle circuits set up in {took:.1f} s ({count / took:.0f}/s, 4 HPKE "
        f"operations each); relay memory +{grown / MiB:.1f} MiB = {per / 1024:.1f} KiB per "
        f"circuit -> {(1 << 30) / per:,.0f} circuits per GiB"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--circuits", type=int, default=500)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * args.circuits + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    asyncio.run(throughput(args.mib, args.rounds))
    asyncio.run(circuits(min(args.circuits, (want - 256) // 4)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
