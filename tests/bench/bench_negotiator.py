"""Benchmark of the protocol Negotiator. Prints figures; asserts nothing.

Run: .venv/bin/python tests/bench/bench_negotiator.py [--quick]   (adds uvloop columns if installed)

Negotiation rounds per second of (1) two sans-IO cores back to back in one process, no sockets,
and (2) two asyncio runners over one loopback TCP connection (127.0.0.1), with a keepalive
interval of 0 and a no-op protocol handler. Two round kinds: idle (KEEPALIVE/KEEPALIVE -> Sleep)
and initiate (id/KEEPALIVE, ACCEPT -> Negotiated). Also the core's snapshot+restore cost (what
the explorer pays per state). Ends with the ratio TCP/in-process, measured in the same run.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from p2psc.aio.negotiator import Handler, run_negotiator
from p2psc.core.negotiator import Negotiated, Negotiator, ProtocolSpec, ProtocolTable


def tables(initiate: bool) -> tuple[ProtocolTable, ProtocolTable]:
    """(initiator's table, responder's table): the initiator always wants "chat" if asked."""
    return (
        ProtocolTable([ProtocolSpec(1, "chat", priority=1, wants_to_initiate=initiate)]),
        ProtocolTable([ProtocolSpec(1, "chat", priority=1)]),
    )


def core_rounds_per_second(initiate: bool, seconds: float) -> float:
    """Two cores, bytes passed by hand; one round = start both, deliver until both decided."""
    ta, tb = tables(initiate)
    a, b = Negotiator(ta, keepalive_interval=0.0), Negotiator(tb, keepalive_interval=0.0)
    rounds = 0
    batch = 1000
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(batch):
            to_b = a.start_round()
            to_a = b.start_round()
            while to_a or to_b:
                out_b = b.receive_data(to_b) if to_b else b""
                out_a = a.receive_data(to_a) if to_a else b""
                to_a, to_b = out_b, out_a
        rounds += batch
    elapsed = time.perf_counter() - start
    assert a.outcome is not None and b.outcome is not None
    return rounds / elapsed


def snapshot_restore_per_second(seconds: float) -> float:
    ta, _ = tables(True)
    n = Negotiator(ta)
    n.start_round()
    snap = n.snapshot()
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(1000):
            n.restore(snap)
            hash(n.snapshot())
        count += 1000
    return count / (time.perf_counter() - start)


async def _no_op(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, how: Negotiated
) -> None:
    """A protocol that ends at once on both sides."""


async def tcp_rounds_per_second(initiate: bool, rounds: int) -> float:
    ta, tb = tables(initiate)
    a, b = Negotiator(ta, keepalive_interval=0.0), Negotiator(tb, keepalive_interval=0.0)
    handlers: dict[str, Handler] = {"chat": _no_op}
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put((reader, writer))

    server = await asyncio.start_server(on_accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with asyncio.timeout(120):
        rc, wc = await asyncio.open_connection("127.0.0.1", port)
        rs, ws = await accepted.get()
        start = time.perf_counter()
        results = await asyncio.gather(
            run_negotiator(rc, wc, a, handlers, max_rounds=rounds, reply_timeout=10),
            run_negotiator(rs, ws, b, handlers, max_rounds=rounds, reply_timeout=10),
        )
        elapsed = time.perf_counter() - start
    server.close()
    await server.wait_closed()
    for result in results:
        if result.error is not None or result.rounds != rounds:
            raise SystemExit(f"benchmark run failed: {result}")
    return rounds / elapsed


def _uvloop_runner() -> Callable[[Coroutine[Any, Any, float]], float] | None:
    """``uvloop.run`` when uvloop is installed (the ``speed`` extra), else None."""
    try:
        import uvloop
    except ImportError:
        return None
    run: Callable[[Coroutine[Any, Any, float]], float] = uvloop.run
    return run


def main() -> int:
    quick = "--quick" in sys.argv
    seconds = 0.3 if quick else 2.0
    tcp_rounds = 2_000 if quick else 20_000
    uv = _uvloop_runner()
    print("negotiation rounds per second (higher is better); TCP = loopback 127.0.0.1")
    head = ("round kind", "in-process cores", "TCP asyncio", "TCP/core", "TCP uvloop", "uv/core")
    print(f"{head[0]:<10} {head[1]:>17} {head[2]:>12} {head[3]:>9} {head[4]:>11} {head[5]:>8}")
    for kind, initiate in (("idle", False), ("initiate", True)):
        core = core_rounds_per_second(initiate, seconds)
        tcp = asyncio.run(tcp_rounds_per_second(initiate, tcp_rounds))
        line = f"{kind:<10} {core:>17,.0f} {tcp:>12,.0f} {tcp / core:>9.4f}"
        if uv is not None:
            fast = uv(tcp_rounds_per_second(initiate, tcp_rounds))
            line += f" {fast:>11,.0f} {fast / core:>8.4f}"
        print(line)
    print(f"snapshot+restore+hash per second: {snapshot_restore_per_second(seconds):,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
