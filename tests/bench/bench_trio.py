"""Benchmark: pairing latency on loopback, p2psc.trio against p2psc.aio, one run.

Run: .venv/bin/python tests/bench/bench_trio.py [--pairings 40] [--blocks 4]

One pairing = two ``connect()`` calls for two fresh keypairs through a mediator on 127.0.0.1,
timed from the first call to both connections being established (registration, PeerDisconnect,
the Peer's confirmation, PeerIdentification, the TCP connect and the Noise KK handshake with
its key confirmation), then both closed. Each framework runs everything in one event loop of
its own kind: asyncio peers with asyncio's mediator, trio peers with p2psc.trio's mediator.
The two are measured in alternating blocks (the machine is shared: alternation spreads any
disturbance over both), and the second registration starts once the first is registered at the
mediator (its observer), so both runs do the same steps in the same order.

Prints the median and p90 per framework and the ratio trio/asyncio (1.0 = same latency; lower
is faster). Then the memory each mediator adapter (plus its core) holds per open connection
that has not sent anything yet (tracemalloc growth over ``--idle`` connections from raw
sockets made before tracing starts), trio's against asyncio's. Asserts nothing: figures are for
the closing note.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import time
import tracemalloc
from collections.abc import Callable

import trio

import p2psc.trio
from p2psc.aio.connect import connect as aio_connect
from p2psc.aio.mediator import serve_mediator as aio_serve
from p2psc.core.mediator import MediatorConfig, MediatorNote
from p2psc.keys import Keypair
from p2psc.trio import connect as trio_connect
from p2psc.trio import serve_mediator as trio_serve


def keypairs(count: int) -> list[tuple[Keypair, Keypair]]:
    return [(Keypair.generate(), Keypair.generate()) for _ in range(count)]


def aio_block(pairs: list[tuple[Keypair, Keypair]]) -> list[float]:
    async def main() -> list[float]:
        registered = asyncio.Event()

        def observer(note: MediatorNote) -> None:
            if note.kind == "registered":
                registered.set()

        times: list[float] = []
        async with aio_serve("127.0.0.1", 0, observer=observer) as server:
            addr = ("127.0.0.1", server.port)
            for a, b in pairs:
                registered.clear()
                started = time.perf_counter()
                first = asyncio.create_task(aio_connect(a, b.public_key, addr))
                await registered.wait()
                second = await aio_connect(b, a.public_key, addr)
                other = await first
                times.append(time.perf_counter() - started)
                for conn in (other, second):
                    conn.close()
                    await conn.wait_closed()
        return times

    return asyncio.run(main())


def trio_block(pairs: list[tuple[Keypair, Keypair]]) -> list[float]:
    async def main() -> list[float]:
        state = {"registered": trio.Event()}

        def observer(note: MediatorNote) -> None:
            if note.kind == "registered":
                state["registered"].set()

        times: list[float] = []
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: trio_serve(observer=observer, task_status=task_status)
            )
            for a, b in pairs:
                state["registered"] = trio.Event()
                started = time.perf_counter()
                result: list[p2psc.trio.TrioConnection] = []
                async with trio.open_nursery() as both:
                    both.start_soon(_connect_into, result, a, b, server.address)
                    await state["registered"].wait()
                    second = await trio_connect(b, a.public_key, server.address)
                times.append(time.perf_counter() - started)
                for conn in (result[0], second):
                    await conn.aclose()
            server.close()
        return times

    return trio.run(main)


async def _connect_into(
    result: list[p2psc.trio.TrioConnection], a: Keypair, b: Keypair, addr: tuple[str, int]
) -> None:
    result.append(await trio_connect(a, b.public_key, addr))


ROOMY = MediatorConfig(max_pending_per_ip=100_000, max_pending=100_000)
"""Every idle connection comes from 127.0.0.1: lift the per-address limit (default 256)."""


def idle_sockets(count: int) -> list[socket.socket]:
    socks = [socket.socket() for _ in range(count)]
    for sock in socks:
        sock.setblocking(False)
    return socks


def dial(socks: list[socket.socket], port: int) -> None:
    for sock in socks:
        sock.connect_ex(("127.0.0.1", port))


def aio_idle_bytes(count: int) -> float:
    async def main() -> float:
        socks = idle_sockets(count)
        async with aio_serve("127.0.0.1", 0, backlog=count, config=ROOMY) as server:
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            dial(socks, server.port)
            async with asyncio.timeout(60):
                while server.connections < count:
                    await asyncio.sleep(0.01)
            grown = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
        for sock in socks:
            sock.close()
        return grown / count

    return asyncio.run(main())


def trio_idle_bytes(count: int) -> float:
    async def main() -> float:
        socks = idle_sockets(count)
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: trio_serve(backlog=count, config=ROOMY, task_status=task_status)
            )
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            dial(socks, server.port)
            with trio.fail_after(60):
                while server.connections < count:
                    await trio.sleep(0.01)
            grown = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
            server.close()
        for sock in socks:
            sock.close()
        return grown / count

    return trio.run(main)


def describe(name: str, times: list[float]) -> str:
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return (
        f"{name:8s} pairings={len(times):4d}  median={statistics.median(times) * 1000:7.2f} ms  "
        f"p90={p90 * 1000:7.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairings", type=int, default=40, help="per framework (default 40)")
    parser.add_argument("--blocks", type=int, default=4, help="alternating blocks (default 4)")
    parser.add_argument("--idle", type=int, default=500, help="idle connections (default 500)")
    args = parser.parse_args()
    per_block = max(1, args.pairings // args.blocks)
    runs: dict[str, Callable[[list[tuple[Keypair, Keypair]]], list[float]]] = {
        "asyncio": aio_block,
        "trio": trio_block,
    }
    figures: dict[str, list[float]] = {name: [] for name in runs}
    for block in runs.values():  # warm-up (imports, first-use costs), not counted
        block(keypairs(2))
    for _ in range(args.blocks):
        for name, block in runs.items():
            figures[name] += block(keypairs(per_block))
    for name, times in figures.items():
        print(describe(name, times))
    ratio = statistics.median(figures["trio"]) / statistics.median(figures["asyncio"])
    print(f"trio/asyncio median pairing latency = {ratio:.2f}x")
    aio_bytes, trio_bytes = aio_idle_bytes(args.idle), trio_idle_bytes(args.idle)
    print(
        f"mediator memory per idle connection (adapter + core, tracemalloc): "
        f"asyncio {aio_bytes:.0f} B, trio {trio_bytes:.0f} B, trio/asyncio = "
        f"{trio_bytes / aio_bytes:.2f}x"
    )


if __name__ == "__main__":
    main()
