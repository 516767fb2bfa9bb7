"""connect() over TLS to the Mediator (issue 21 item 1, the client side), both adapters.

The certificates are made by the tests (tests/tls_certs.py); every run is on loopback against a
real ``serve_mediator(tls=...)``. Both peers register through TLS, pair and talk over their Noise
channel; a certificate that does not match fails with TlsVerificationFailed naming what did not
match, never with a fallback to clear text.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from tls_certs import Issued, make_ca, make_leaf

import p2psc
from p2psc.aio import connect, serve_mediator
from p2psc.core.mediator import MediatorConfig
from p2psc.errors import TlsVerificationFailed
from p2psc.keys import Keypair
from p2psc.tls import server_context

FAST: dict[str, Any] = {"timeout": 10.0, "step_timeout": 5.0, "punch_timeout": 5.0}
CONFIG = MediatorConfig(advertise_timeout=5, response_timeout=5, confirm_timeout=5, wait_timeout=30)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Issued]:
    directory = tmp_path_factory.mktemp("pki")
    ca = make_ca(directory)
    return {
        "ca": ca[0],
        "good": make_leaf(directory, "good", issuer=ca),
        "wrong_name": make_leaf(directory, "wrong", names=("mediator.example",), issuer=ca),
    }


def test_two_peers_pair_through_a_tls_mediator(pki: dict[str, Issued]) -> None:
    a, b = Keypair.generate(), Keypair.generate()
    tls = server_context(pki["good"].cert, pki["good"].key)
    ca = str(pki["ca"].cert)

    async def body() -> None:
        async with serve_mediator("127.0.0.1", 0, config=CONFIG, tls=tls) as server:
            addr = f"tls://127.0.0.1:{server.port}"
            first = asyncio.create_task(connect(a, b.public_key, addr, mediator_ca=ca, **FAST))
            second = asyncio.create_task(connect(b, a.public_key, addr, mediator_ca=ca, **FAST))
            ca_conn, cb_conn = await asyncio.wait_for(asyncio.gather(first, second), 20)
            assert {ca_conn.role, cb_conn.role} == {"client", "peer"}
            ca_conn.writer.write(b"over noise, registered over tls")
            assert await asyncio.wait_for(cb_conn.reader.readexactly(31), 5) == (
                b"over noise, registered over tls"
            )
            for conn in (ca_conn, cb_conn):
                conn.close()
                await conn.wait_closed()

    asyncio.run(body())


def test_blocking_peer_pairs_with_an_async_one_over_tls(pki: dict[str, Issued]) -> None:
    """The blocking adapter runs the same TLS driver; the pin is an alternative to a CA."""
    a, b = Keypair.generate(), Keypair.generate()
    tls = server_context(pki["good"].cert, pki["good"].key)
    pin = pki["good"].der
    import hashlib

    fingerprint = hashlib.sha256(pin).hexdigest()
    ready = threading.Event()
    port: list[int] = []
    got: list[bytes] = []

    async def serve_and_async_side() -> None:
        async with serve_mediator("127.0.0.1", 0, config=CONFIG, tls=tls) as server:
            port.append(server.port)
            ready.set()
            conn = await connect(
                b, a.public_key, f"tls://127.0.0.1:{server.port}", mediator_pin=fingerprint, **FAST
            )
            got.append(await asyncio.wait_for(conn.reader.readexactly(4), 10))
            conn.close()
            await conn.wait_closed()

    def blocking_side() -> None:
        ready.wait(10)
        with p2psc.connect(
            a, b.public_key, f"tls://127.0.0.1:{port[0]}", mediator_pin=fingerprint, **FAST
        ) as conn:
            conn.sendall(b"ping")

    thread = threading.Thread(target=blocking_side)
    thread.start()
    asyncio.run(serve_and_async_side())
    thread.join(20)
    assert got == [b"ping"]


@pytest.mark.parametrize(
    ("cert", "options", "mismatch"),
    [
        ("wrong_name", "ca", "name"),
        ("good", "pin", "fingerprint"),
        ("good", "system", "ca"),
    ],
)
def test_a_certificate_that_does_not_match_is_a_typed_error(
    pki: dict[str, Issued], cert: str, options: str, mismatch: str, tmp_path: Path
) -> None:
    tls = server_context(pki[cert].cert, pki[cert].key)
    kwargs: dict[str, Any] = {}
    if options == "ca":
        kwargs["mediator_ca"] = str(pki["ca"].cert)
    elif options == "pin":
        kwargs["mediator_pin"] = "00" * 32

    async def body() -> None:
        async with serve_mediator("127.0.0.1", 0, config=CONFIG, tls=tls) as server:
            with pytest.raises(TlsVerificationFailed) as caught:
                await connect(
                    Keypair.generate(),
                    Keypair.generate().public_key,
                    f"tls://127.0.0.1:{server.port}",
                    **kwargs,
                    **FAST,
                )
            assert caught.value.mismatch == mismatch
            for _ in range(100):  # the mediator sees the connection end (nothing hangs)
                if server.connections == 0:
                    break
                await asyncio.sleep(0.02)
            assert server.connections == 0

    asyncio.run(body())


def test_tls_options_without_tls_are_refused() -> None:
    async def body() -> None:
        with pytest.raises(ValueError, match="need TLS"):
            await connect(
                Keypair.generate(), Keypair.generate().public_key, "127.0.0.1:1", mediator_ca="x"
            )

    asyncio.run(body())


def test_relay_on_a_tls_mediators_port(pki: dict[str, Issued]) -> None:
    """``mediator --relay --tls-cert ... --require-tls``: registration runs inside TLS, the
    relay protocol in clear on the same port (spec/relay.md section 2), the channel end to end."""
    from p2psc.aio.relay import serve_relay

    a, b = Keypair.generate(), Keypair.generate()
    tls = server_context(pki["good"].cert, pki["good"].key)
    ca = str(pki["ca"].cert)
    config = MediatorConfig(
        advertise_timeout=5,
        response_timeout=5,
        confirm_timeout=5,
        wait_timeout=30,
        require_tls=True,
    )

    async def body() -> None:
        async with (
            serve_relay(listen=False) as relay,
            serve_mediator("127.0.0.1", 0, config=config, tls=tls) as server,
        ):
            server.relay = relay
            addr = f"tls://127.0.0.1:{server.port}"
            opts = {**FAST, "relay": "only"}
            first = asyncio.create_task(connect(a, b.public_key, addr, mediator_ca=ca, **opts))
            second = asyncio.create_task(connect(b, a.public_key, addr, mediator_ca=ca, **opts))
            ca_conn, cb_conn = await asyncio.wait_for(asyncio.gather(first, second), 20)
            assert ca_conn.path == cb_conn.path == "relayed"
            ca_conn.writer.write(b"relayed")
            assert await asyncio.wait_for(cb_conn.reader.readexactly(7), 5) == b"relayed"
            for conn in (ca_conn, cb_conn):
                conn.close()
                await conn.wait_closed()

    asyncio.run(body())
