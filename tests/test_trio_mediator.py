"""p2psc.trio.serve_mediator passes the conformance harness, and shuts down cleanly (issue 20).

The harness (``p2psc conformance``, p2psc/conformance) plays every client by hand against the
trio mediator, started on loopback on its own thread with the same short deadlines the harness
is told (as tests/test_conformance.py does for the asyncio one): version 1 and version 0
scenarios, every one must pass, none skipped.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import pytest

if os.environ.get("CI"):
    import trio  # CI installs the test extra: a missing trio must fail, not skip
else:
    trio = pytest.importorskip("trio")

from test_trio_connect import trio_mediator

from p2psc import wire
from p2psc.conformance import HarnessOptions, Outcome, run_conformance, select
from p2psc.conformance.context import RSA_POOL
from p2psc.core.mediator import MediatorConfig
from p2psc.keys import HPKE, Keypair, nonce_info
from p2psc.trio.mediator import serve_mediator

CONFIG = MediatorConfig(
    advertise_timeout=1.0, response_timeout=1.0, confirm_timeout=1.0, wait_timeout=30
)
OPTIONS = HarnessOptions(
    timeout=2.0, quiet=0.3, idle_timeout=1.0, response_timeout=1.0, confirm_timeout=1.0
)

DEADLINES = ["--timeout", "2", "--silence", "0.3", "--idle-timeout", "1"]
DEADLINES += ["--response-timeout", "1", "--confirm-timeout", "1"]


def test_every_conformance_scenario_passes_against_the_trio_mediator() -> None:
    async def harness(port: int) -> Any:
        await RSA_POOL.warm(sum(s.rsa_keys for s in select(legacy=True)))
        return await asyncio.wait_for(
            run_conformance("127.0.0.1", port, options=OPTIONS, legacy=True), 120
        )

    with trio_mediator(config=CONFIG) as server:
        report = asyncio.run(harness(server.port))
    assert report.failing() == [], report.format_text()
    assert [r.name for r in report.results] == [s.name for s in select(legacy=True)]
    assert all(r.outcome is Outcome.PASSED for r in report.results), report.format_text()
    assert report.passed


def test_the_conformance_command_passes_against_the_trio_mediator() -> None:
    """The same, as a user runs it: ``p2psc conformance HOST:PORT`` exits 0."""
    with trio_mediator(config=CONFIG) as server:
        done = subprocess.run(
            [sys.executable, "-m", "p2psc", "conformance", f"127.0.0.1:{server.port}", *DEADLINES],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert " 0 failed" in done.stdout, done.stdout


def test_shutdown_aborts_a_waiting_registration_and_closes_everything() -> None:
    """Closing the server sends AdvertiseAbort(SHUTTING_DOWN) to a waiting peer, then EOF, and
    serve_mediator returns (the nursery exits) with no descriptor of its own left open."""

    async def main() -> None:
        before = len(os.listdir("/proc/self/fd"))
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                server = await nursery.start(serve_mediator)
                me, them = Keypair.generate(), Keypair.generate()
                sock = trio.socket.socket()
                await sock.connect(server.address)
                await sock.send(wire.Advertise(1, me.public_key.raw, them.public_key.raw).encode())
                decoder = wire.FrameDecoder()
                (challenge,) = decoder.feed(await sock.recv(4096))
                info = nonce_info("AdvertiseChallenge", me.public_key.raw, them.public_key.raw)
                nonce = HPKE.open(me, challenge.encrypted_nonce, info)
                await sock.send(wire.AdvertiseResponse(nonce).encode())
                while server.core.waiting != 1:
                    await trio.sleep(0.005)
                server.close()
            received = b""
            while chunk := await sock.recv(4096):
                received += chunk
            sock.close()
        (abort,) = wire.FrameDecoder().feed(received)
        assert isinstance(abort, wire.AdvertiseAbort)
        assert abort.code == wire.Reason.SHUTTING_DOWN
        assert len(os.listdir("/proc/self/fd")) <= before

    trio.run(main)


def test_cancelling_the_nursery_is_a_clean_shutdown_too() -> None:
    async def main() -> None:
        before = len(os.listdir("/proc/self/fd"))
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                server = await nursery.start(serve_mediator)
                sock = trio.socket.socket()
                await sock.connect(server.address)
                while server.connections != 1:
                    await trio.sleep(0.005)
                nursery.cancel_scope.cancel()
            (abort,) = wire.FrameDecoder().feed(await sock.recv(4096))
            assert isinstance(abort, wire.AdvertiseAbort)
            assert await sock.recv(4096) == b""
            sock.close()
        assert len(os.listdir("/proc/self/fd")) <= before

    trio.run(main)
