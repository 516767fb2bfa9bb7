"""connect() latency on loopback and CPU per pairing, against a raw TCP baseline in the same run.

Pairs two peers through an in-process Mediator N times (sequentially, so each figure is one
pairing's latency, not a throughput), and measures, in the same run, the floor of what any
pairing must do on loopback: a raw TCP connect plus one request/answer round trip. Prints the
median and p99 of ``connect()`` (the later of the two sides) and the process CPU per pairing
(both peers and the Mediator are in this process), as figures and as ratios to the floor.

Old vs new: run the same script with ``PYTHONPATH`` pointing at a checkout of an older commit
(the script only uses the public API common to both: ``p2psc.aio.connect``,
``p2psc.aio.serve_mediator``, ``p2psc.keys.Keypair``).

    .venv/bin/python tests/bench/bench_connect.py [--pairs 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time


async def _floor(rounds: int) -> list[float]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(100)
        writer.write(data)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"x")
        await reader.read(100)
        out.append(time.perf_counter() - start)
        writer.close()
    server.close()
    await server.wait_closed()
    return out


async def _pairings(rounds: int) -> tuple[list[float], float]:
    from p2psc.aio import connect, serve_mediator
    from p2psc.keys import Keypair

    latencies = []
    cpu_start = time.process_time()
    async with serve_mediator("127.0.0.1", 0) as server:
        addr = ("127.0.0.1", server.port)
        for _ in range(rounds):
            a, b = Keypair.generate(), Keypair.generate()
            start = time.perf_counter()
            first = asyncio.create_task(connect(a, b.public_key, addr, timeout=10))
            second = asyncio.create_task(connect(b, a.public_key, addr, timeout=10))
            conns = await asyncio.gather(first, second)
            latencies.append(time.perf_counter() - start)
            for conn in conns:
                conn.close()
            for conn in conns:
                await conn.wait_closed()
    cpu = (time.process_time() - cpu_start) / rounds
    return latencies, cpu


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200, help="pairings (default %(default)s)")
    args = parser.parse_args()

    floor = asyncio.run(_floor(args.pairs))
    latencies, cpu = asyncio.run(_pairings(args.pairs))
    floor_median = statistics.median(floor)
    median = statistics.median(latencies)
    import p2psc

    print(f"p2psc from {p2psc.__file__}")
    print(f"raw TCP connect + round trip: median {floor_median * 1e3:.3f} ms")
    print(
        f"pairing (both connect() calls): median {median * 1e3:.2f} ms "
        f"({median / floor_median:.1f}x the floor), p99 {_p99(latencies) * 1e3:.2f} ms"
    )
    print(f"process CPU per pairing (2 peers + mediator): {cpu * 1e3:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
