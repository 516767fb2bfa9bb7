"""Benchmark of the secure channel against raw TCP and TLS 1.3 (Python's ``ssl``), one run.

Run: .venv/bin/python tests/bench/bench_channel.py [--mib 256] [--rounds 1]

Bulk transfer over loopback, 64 KiB application writes, one direction, for the asyncio adapter
(``p2psc.aio.channel``) and the blocking one (``p2psc.sync_channel``), each against raw TCP and
TLS 1.3 over the same kind of transport (asyncio ``ssl=`` streams; ``ssl.SSLSocket``), with a
self-signed certificate made here with ``cryptography``. Prints MB/s and the budget ratios
(spec: asyncio secure >= 1.0x asyncio TLS; blocking secure >= 0.7x blocking ssl). With
``--rounds N`` each figure is the best of N runs (the machine is shared; the best run is the
least disturbed one). Then the CPU cost of one direct handshake: Noise KK (both sides, including
``split``) against the HPKE exchange it replaced (two seals and two opens of ``p2psc.keys``).

Asserts nothing: figures are for the closing note and for regressions spotted by a human.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from p2psc.aio.channel import open_secure_streams_from_socket
from p2psc.core.channel import SecureChannel
from p2psc.keys import HPKE, Keypair, nonce_info
from p2psc.noise import HandshakeState, public_key
from p2psc.sync_channel import SecureSocket

WRITE = 64 * 1024


# --- setup ------------------------------------------------------------------------------------


def tls_contexts(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) TLS 1.3 contexts with a fresh self-signed P-256 certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.minimum_version = ssl.TLSVersion.TLSv1_3
    server.load_cert_chain(cert_path, key_path)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.minimum_version = ssl.TLSVersion.TLSv1_3
    client.load_verify_locations(cert_path)
    return server, client


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return client, server


def kk_channels() -> tuple[SecureChannel, SecureChannel]:
    i_s, r_s, i_e, r_e = (os.urandom(32) for _ in range(4))
    init = HandshakeState.initiator(i_s, public_key(r_s), b"bench", i_e)
    resp = HandshakeState.responder(r_s, public_key(i_s), b"bench", r_e)
    resp.read_message(init.write_message())
    init.read_message(resp.write_message())
    return SecureChannel(*init.split()), SecureChannel(*resp.split())


# --- asyncio ------------------------------------------------------------------------------------

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def aio_streams(
    kind: str, contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> tuple[Streams, Streams]:
    c_sock, s_sock = tcp_pair()
    loop = asyncio.get_running_loop()
    if kind == "raw":
        return await asyncio.open_connection(sock=c_sock), await asyncio.open_connection(
            sock=s_sock
        )
    if kind == "secure":
        c_ch, s_ch = kk_channels()
        return (
            await open_secure_streams_from_socket(c_sock, c_ch),
            await open_secure_streams_from_socket(s_sock, s_ch),
        )
    server_ctx, client_ctx = contexts
    reader = asyncio.StreamReader()
    accepted = loop.create_task(
        loop.connect_accepted_socket(
            lambda: asyncio.StreamReaderProtocol(reader), sock=s_sock, ssl=server_ctx
        )
    )
    client = await asyncio.open_connection(sock=c_sock, ssl=client_ctx, server_hostname="localhost")
    transport, protocol = await accepted
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return client, (reader, writer)


async def aio_transfer(kind: str, total: int, contexts: tuple[ssl.SSLContext, ...]) -> float:
    (_, cw), (sr, sw) = await aio_streams(kind, contexts)  # type: ignore[arg-type]
    block = os.urandom(WRITE)

    async def send() -> None:
        for _ in range(total // WRITE):
            cw.write(block)
            await cw.drain()

    start = time.perf_counter()
    sender = asyncio.create_task(send())
    received = 0
    while received < total:
        data = await sr.read(2**18)
        if not data:
            raise RuntimeError(f"{kind}: EOF after {received} bytes")
        received += len(data)
    elapsed = time.perf_counter() - start
    await sender
    for w in (cw, sw):
        w.close()
    for w in (cw, sw):
        with contextlib.suppress(Exception):
            await w.wait_closed()
    return total / elapsed / 1e6


# --- blocking ------------------------------------------------------------------------------------


def blocking_pair(
    kind: str, contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> tuple[
    socket.socket | ssl.SSLSocket | SecureSocket, socket.socket | ssl.SSLSocket | SecureSocket
]:
    c_sock, s_sock = tcp_pair()
    if kind == "raw":
        return c_sock, s_sock
    if kind == "secure":
        c_ch, s_ch = kk_channels()
        return SecureSocket(c_sock, c_ch), SecureSocket(s_sock, s_ch)
    server_ctx, client_ctx = contexts
    box: list[ssl.SSLSocket] = []
    t = threading.Thread(
        target=lambda: box.append(server_ctx.wrap_socket(s_sock, server_side=True))
    )
    t.start()
    client = client_ctx.wrap_socket(c_sock, server_hostname="localhost")
    t.join()
    return client, box[0]


def blocking_transfer(kind: str, total: int, contexts: tuple[ssl.SSLContext, ...]) -> float:
    client, server = blocking_pair(kind, contexts)  # type: ignore[arg-type]
    block = os.urandom(WRITE)

    def send() -> None:
        for _ in range(total // WRITE):
            client.sendall(block)

    buf = bytearray(2**18)
    start = time.perf_counter()
    sender = threading.Thread(target=send)
    sender.start()
    received = 0
    while received < total:
        n = server.recv_into(buf)
        if not n:
            raise RuntimeError(f"{kind}: EOF after {received} bytes")
        received += n
    elapsed = time.perf_counter() - start
    sender.join()
    client.close()
    server.close()
    return total / elapsed / 1e6


# --- handshake CPU -----------------------------------------------------------------------------


def handshake_costs(rounds: int) -> tuple[float, float]:
    """Microseconds of CPU per direct handshake: (Noise KK both sides, old HPKE exchange)."""
    keys = [os.urandom(32) for _ in range(4)]
    pubs = [public_key(k) for k in keys[:2]]

    def kk() -> None:
        init = HandshakeState.initiator(keys[0], pubs[1], b"prologue", keys[2])
        resp = HandshakeState.responder(keys[1], pubs[0], b"prologue", keys[3])
        resp.read_message(init.write_message())
        init.read_message(resp.write_message())
        init.split()
        resp.split()

    a, b = Keypair.generate(), Keypair.generate()
    info_b = nonce_info("PeerChallenge", b.public_key.raw, a.public_key.raw)
    info_a = nonce_info("PeerChallengeResponse", a.public_key.raw, b.public_key.raw)
    nonce = os.urandom(32)

    def hpke() -> None:
        HPKE.open(b, HPKE.seal(b.public_key, nonce, info_b), info_b)
        HPKE.open(a, HPKE.seal(a.public_key, nonce, info_a), info_a)

    def cost(fn: Callable[[], None]) -> float:
        best = float("inf")
        for _ in range(5):
            start = time.process_time()
            for _ in range(rounds):
                fn()
            best = min(best, (time.process_time() - start) / rounds)
        return best * 1e6

    return cost(kk), cost(hpke)


# --- main ---------------------------------------------------------------------------------------


def best(rounds: int, fn: Callable[[], float]) -> float:
    return max(fn() for _ in range(rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=256, help="MiB per transfer (default 256)")
    parser.add_argument("--rounds", type=int, default=1, help="best of N runs per figure")
    parser.add_argument("--handshakes", type=int, default=200, help="handshakes per CPU sample")
    args = parser.parse_args()
    total = args.mib * 2**20 // WRITE * WRITE
    with tempfile.TemporaryDirectory() as tmp:
        contexts = tls_contexts(Path(tmp))
    print(
        f"bulk transfer over loopback: {args.mib} MiB, {WRITE // 1024} KiB writes, "
        f"best of {args.rounds}"
    )
    figures: dict[tuple[str, str], float] = {}
    for kind in ("raw", "tls", "secure"):
        figures["asyncio", kind] = best(
            args.rounds, lambda k=kind: asyncio.run(aio_transfer(k, total, contexts))
        )
        print(f"  asyncio  {kind:6s} {figures['asyncio', kind]:8.1f} MB/s", flush=True)
    for kind in ("raw", "tls", "secure"):
        figures["blocking", kind] = best(
            args.rounds, lambda k=kind: blocking_transfer(k, total, contexts)
        )
        print(f"  blocking {kind:6s} {figures['blocking', kind]:8.1f} MB/s", flush=True)
    for mode, budget in (("asyncio", 1.0), ("blocking", 0.7)):
        ratio = figures[mode, "secure"] / figures[mode, "tls"]
        verdict = "ok" if ratio >= budget else "BELOW BUDGET"
        print(
            f"{mode:8s} secure/TLS = {ratio:.2f}x (budget >= {budget}x: {verdict}); "
            f"secure/raw = {figures[mode, 'secure'] / figures[mode, 'raw']:.2f}x"
        )
    kk, hpke = handshake_costs(args.handshakes)
    print(
        f"direct handshake CPU (both sides): Noise KK {kk:.0f} us, old HPKE exchange "
        f"{hpke:.0f} us, KK/HPKE = {kk / hpke:.2f}x"
    )


if __name__ == "__main__":
    main()
