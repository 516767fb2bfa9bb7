"""A legitimate pairing gets through an idle-connection flood (issue 21, item 2).

The mediator (``p2psc mediator``, default limits given explicitly) and the attacker
(tests/mediator_flood.py, which reopens every connection the mediator closes) run as separate
processes; the legitimate pair uses ``p2psc.aio.connect`` from the victim's address
127.0.0.1 with an ordinary deadline. Bounded: the attacker stops after the pairing (or its
own cap of connects and seconds), everything is loopback, every process is killed on the way
out. Before eviction, both floods made the pairing fail with ``AdvertiseRetryExhausted``.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import select
import subprocess
import sys
from pathlib import Path

import pytest
from test_mediator_operations import Mediator, mediators  # noqa: F401 (fixture)

from p2psc.aio.connect import connect
from p2psc.keys import Keypair

FLOOD = Path(__file__).with_name("mediator_flood.py")
PAIRING_DEADLINE = 10.0
"""An ordinary connect() deadline: registration, waiting, punching, handshake."""

_, _HARD = resource.getrlimit(resource.RLIMIT_NOFILE)
needs_descriptors = pytest.mark.skipif(
    _HARD != resource.RLIM_INFINITY and _HARD < 10_000,
    reason=f"the flood needs ~5000 descriptors per process; hard RLIMIT_NOFILE is {_HARD}",
)


def _flood_argv(port: int, sources: list[str], count: int) -> list[str]:
    return [
        *(sys.executable, str(FLOOD), "--port", str(port), "--sources", ",".join(sources)),
        *("--count", str(count), "--duration", "60", "--max-connects", "50000"),
    ]


def _line(proc: subprocess.Popen[str], timeout: float) -> dict[str, object]:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buffer = b""
    while b"\n" not in buffer:
        if not select.select([fd], [], [], timeout)[0]:
            raise TimeoutError(f"flood said nothing; so far {buffer!r}")
        chunk = os.read(fd, 4096)
        if not chunk:
            raise EOFError(f"flood exited; so far {buffer!r}")
        buffer += chunk
    result: dict[str, object] = json.loads(buffer.split(b"\n", 1)[0])
    return result


async def _pair(port: int) -> None:
    a, b = Keypair.generate(), Keypair.generate()
    mediator = ("127.0.0.1", port)
    first = asyncio.create_task(connect(a, b.public_key, mediator, timeout=PAIRING_DEADLINE))
    await asyncio.sleep(0.2)
    second = asyncio.create_task(connect(b, a.public_key, mediator, timeout=PAIRING_DEADLINE))
    left, right = await asyncio.gather(first, second)
    try:
        left.writer.write(b"ping\n")
        assert await asyncio.wait_for(right.reader.readline(), 5) == b"ping\n"
    finally:
        left.close()
        right.close()


@needs_descriptors
@pytest.mark.parametrize(
    ("count", "sources"),
    [
        (256, ["127.0.0.1"]),  # the victim's own address (a shared NAT)
        (4096, [f"127.0.0.{n}" for n in range(2, 19)]),  # 17 other addresses: everyone
    ],
    ids=["256-from-the-victims-address", "4096-from-17-addresses"],
)
def test_pairing_succeeds_while_the_flood_is_held(
    mediators: list[Mediator],  # noqa: F811
    count: int,
    sources: list[str],
) -> None:
    mediator = Mediator(
        ["--max-pending", "4096", "--max-pending-per-ip", "256", "--log-level", "info"]
    )
    mediators.append(mediator)
    port = int(mediator.wait_for("listening")["port"])
    flood = subprocess.Popen(
        [*_flood_argv(port, sources, count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        held = _line(flood, 60.0)
        assert held["held"] == count
        asyncio.run(_pair(port))
        assert flood.stdin is not None
        flood.stdin.close()  # stop
        done = _line(flood, 30.0)
        assert done["done"] is True
        # the legitimate connections took their slots from the flood (eviction, not refusal)
        assert isinstance(done["evicted"], int) and done["evicted"] >= 1
        evicted = mediator.wait_for("evicted", timeout=10)
        assert evicted["cause"] in ("pending_origin", "pending_global")
    finally:
        if flood.poll() is None:
            flood.kill()
        flood.wait(timeout=10)
