"""A bounded idle-connection flood against a mediator on loopback (issue 21), as a process.

Opens ``--count`` TCP connections spread over ``--sources`` (loopback addresses it binds to),
sends nothing, and reopens each one the mediator closes (eviction, timeout), so the mediator
always sees the full flood: the attacker of the issue, who "simply reconnects". Bounded: at
most ``--max-connects`` connects in all and ``--duration`` seconds, then it exits.

Prints one JSON line ``{"held": N}`` once the flood is up (the caller waits for it), and
``{"done": ..., "connects": ..., "evicted": ...}`` at the end. Not a test module: run by
tests/test_mediator_flood.py and tests/bench/bench_mediator.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import time


class _Idle(asyncio.Protocol):
    def __init__(self, flood: Flood, source: str) -> None:
        self.flood, self.source = flood, source

    def connection_lost(self, exc: Exception | None) -> None:
        self.flood.lost(self.source)


class Flood:
    def __init__(self, port: int, sources: list[str], count: int, max_connects: int) -> None:
        self.port, self.sources, self.count = port, sources, count
        self.max_connects = max_connects
        self.connects = 0
        self.failures = 0
        self.evicted = 0
        self.open = 0
        self.stopping = False
        self.transports: list[asyncio.BaseTransport] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def connect(self, source: str) -> None:
        if self.stopping or self.connects >= self.max_connects:
            return
        self.connects += 1
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_connection(
                lambda: _Idle(self, source), "127.0.0.1", self.port, local_addr=(source, 0)
            )
        except OSError:
            self.failures += 1
            await asyncio.sleep(0.05)
            self._spawn(source)
            return
        self.open += 1
        self.transports.append(transport)

    def lost(self, source: str) -> None:
        self.open -= 1
        if not self.stopping:
            self.evicted += 1
            self._spawn(source)

    def _spawn(self, source: str) -> None:
        task = asyncio.get_running_loop().create_task(self.connect(source))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(self, duration: float) -> None:
        per_source = [self.count // len(self.sources)] * len(self.sources)
        for i in range(self.count % len(self.sources)):
            per_source[i] += 1
        batch = []
        for source, n in zip(self.sources, per_source, strict=True):
            batch.extend(self.connect(source) for _ in range(n))
        for start in range(0, len(batch), 256):
            await asyncio.gather(*batch[start : start + 256])
        print(json.dumps({"held": self.open}), flush=True)
        loop = asyncio.get_running_loop()
        end = loop.time() + duration
        stop = asyncio.Event()
        loop.add_reader(sys.stdin.fileno(), stop.set)  # the caller closes stdin: stop
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, end - loop.time()))
        self.stopping = True
        for transport in self.transports:
            transport.abort()
        print(
            json.dumps(
                {
                    "done": True,
                    "connects": self.connects,
                    "evicted": self.evicted,
                    "failures": self.failures,
                }
            ),
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sources", required=True, help="comma-separated loopback addresses")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--max-connects", type=int, default=100_000)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.count + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.count + 1024), hard))
    flood = Flood(args.port, args.sources.split(","), args.count, args.max_connects)
    started = time.monotonic()
    asyncio.run(flood.run(min(args.duration, 120.0)))
    del started


if __name__ == "__main__":
    main()
