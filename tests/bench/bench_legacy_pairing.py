"""Benchmark: pairing latency of the INSECURE LEGACY (version 0) client on loopback, against a
version 1 pairing through the same mediator, one run. Prints figures; asserts nothing.

Run: .venv/bin/python tests/bench/bench_legacy_pairing.py [--pairings 24] [--blocks 3]

One pairing = two ``connect_legacy()`` calls (two RSA-2048 keypairs, made once) through an
asyncio mediator on 127.0.0.1, timed from the first call to both connections being handed to
their callers, then both closed. The second registration starts once the first is registered
at the mediator (its observer), so every pairing does the same steps in the same order. A
legacy pairing contains two fixed waits: the mediator's ``introduce_delay`` (0.25 s: the C++
Client retries its connect only once) and the Peer's ``ack_grace`` (0.25 s: the caller's first
bytes never share a C++ Client's read with PeerAcknowledgement). ``legacy`` measures the
defaults, ``legacy-0`` the same with ``ack_grace=0`` (what the client adds beyond the
mediator's delay). The baseline, ``v1``, is two ``p2psc.aio.connect()`` calls through the same
mediator. The three run in alternating blocks (the machine is shared: alternation spreads any
disturbance over all of them); ratios are of medians, against ``v1``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from p2psc.aio.connect import connect as aio_connect
from p2psc.aio.mediator import serve_mediator
from p2psc.core.mediator import MediatorNote
from p2psc.keys import Keypair
from p2psc.legacy.client import connect_legacy
from p2psc.legacy.crypto import RsaKeypair

Connector = Callable[[Any, Any, tuple[str, int]], Awaitable[Any]]


def legacy(grace: float) -> Connector:
    def run(me: Any, them: Any, addr: tuple[str, int]) -> Awaitable[Any]:
        return connect_legacy(me, them.public_key, addr, ack_grace=grace)

    return run


def v1(me: Any, them: Any, addr: tuple[str, int]) -> Awaitable[Any]:
    return aio_connect(me, them.public_key, addr)


def block(connector: Connector, keys: tuple[Any, Any], count: int) -> list[float]:
    async def main() -> list[float]:
        registered = asyncio.Event()

        def observer(note: MediatorNote) -> None:
            if note.kind == "registered":
                registered.set()

        a, b = keys
        times: list[float] = []
        async with serve_mediator("127.0.0.1", 0, observer=observer) as server:
            addr = ("127.0.0.1", server.port)
            for _ in range(count):
                registered.clear()
                started = time.perf_counter()
                first = asyncio.ensure_future(connector(a, b, addr))
                await registered.wait()
                second = await connector(b, a, addr)
                other = await first
                times.append(time.perf_counter() - started)
                for conn in (other, second):
                    conn.close()
                    await conn.wait_closed()
        return times

    return asyncio.run(main())


def describe(name: str, times: list[float]) -> str:
    ms = [t * 1000 for t in times]
    p90 = statistics.quantiles(ms, n=10)[-1] if len(ms) > 1 else ms[0]
    median = statistics.median(ms)
    return f"{name:9s} pairings={len(ms):4d}  median={median:7.2f} ms  p90={p90:7.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairings", type=int, default=24, help="per kind (default 24)")
    parser.add_argument("--blocks", type=int, default=3, help="alternating blocks (default 3)")
    args = parser.parse_args()
    per_block = max(1, args.pairings // args.blocks)
    rsa = (RsaKeypair.generate(), RsaKeypair.generate())
    x25519 = (Keypair.generate(), Keypair.generate())
    runs: dict[str, tuple[Connector, tuple[Any, Any]]] = {
        "v1": (v1, x25519),
        "legacy": (legacy(0.25), rsa),
        "legacy-0": (legacy(0.0), rsa),
    }
    figures: dict[str, list[float]] = {name: [] for name in runs}
    for connector, keys in runs.values():  # warm-up (imports, first-use costs), not counted
        block(connector, keys, 1)
    for _ in range(args.blocks):
        for name, (connector, keys) in runs.items():
            figures[name] += block(connector, keys, per_block)
    for name, times in figures.items():
        print(describe(name, times))
    base = statistics.median(figures["v1"])
    for name in ("legacy", "legacy-0"):
        print(f"{name}/v1 median pairing latency = {statistics.median(figures[name]) / base:.2f}x")


if __name__ == "__main__":
    main()
