"""p2psc/tls.py: addresses, contexts, the sans-IO session, and TLS to a real mediator on the
same port as clear version 1 (issue 21), with certificates made by the tests themselves."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from test_mediator_loopback import Raw, code_then_eof, register, run, until
from tls_certs import Issued, make_ca, make_leaf

from p2psc import wire
from p2psc.aio.mediator import serve_mediator
from p2psc.core.mediator import MediatorConfig
from p2psc.errors import MediatorTlsError, TlsVerificationFailed
from p2psc.keys import Keypair, nonce_info, open_nonce
from p2psc.tls import (
    MediatorAddress,
    TlsClientSession,
    TlsServerSession,
    certificate_fingerprint,
    client_context,
    looks_like_tls,
    parse_fingerprint,
    parse_mediator_address,
    server_context,
)

R = wire.Reason
KEYS = [Keypair.generate() for _ in range(4)]
FAST = MediatorConfig(advertise_timeout=3, response_timeout=3, confirm_timeout=3, wait_timeout=30)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Issued]:
    directory = tmp_path_factory.mktemp("pki")
    ca = make_ca(directory)
    other_ca = make_ca(tmp_path_factory.mktemp("other"), name="some other CA")
    return {
        "ca": ca[0],
        "good": make_leaf(directory, "good", issuer=ca),
        "wrong_name": make_leaf(directory, "wrong", names=("mediator.example",), issuer=ca),
        "expired": make_leaf(directory, "expired", issuer=ca, expired=True),
        "self_signed": make_leaf(directory, "self"),
        "other_ca": make_leaf(directory, "other", issuer=other_ca),
    }


# --- addresses and fingerprints -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tls://mediator.example:4433", MediatorAddress("mediator.example", 4433, True)),
        ("TLS://10.0.0.1", MediatorAddress("10.0.0.1", 1337, True)),
        ("tcp://10.0.0.1:99", MediatorAddress("10.0.0.1", 99, False)),
        ("10.0.0.1:99", MediatorAddress("10.0.0.1", 99, False)),
        ("tls://[2001:db8::1]:443", MediatorAddress("2001:db8::1", 443, True)),
        ("[::1]", MediatorAddress("::1", 1337, False)),
        ("::1", MediatorAddress("::1", 1337, False)),
        ("example.org", MediatorAddress("example.org", 1337, False)),
    ],
)
def test_parse_mediator_address(text: str, expected: MediatorAddress) -> None:
    assert parse_mediator_address(text) == expected
    assert parse_mediator_address(str(expected)) == expected  # __str__ round-trips


def test_default_scheme_follows_the_tls_flag() -> None:
    assert parse_mediator_address("h:1", tls=True).tls
    assert not parse_mediator_address("tcp://h:1", tls=True).tls


@pytest.mark.parametrize(
    "text", ["", "http://h:1", "tls://", "h:0", "h:70000", "h:x", "[::1", "tls://h:1/path"]
)
def test_bad_mediator_addresses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_mediator_address(text)


def test_fingerprints(pki: dict[str, Issued]) -> None:
    der = pki["good"].der
    shown = certificate_fingerprint(der)
    assert len(shown) == 95 and shown.count(":") == 31
    raw = parse_fingerprint(shown)
    assert parse_fingerprint(shown.replace(":", "").lower()) == raw
    assert parse_fingerprint("sha256:" + shown) == raw
    assert parse_fingerprint(raw) == raw
    for bad in ("abc", shown[:-3], "zz" * 32):
        with pytest.raises(ValueError):
            parse_fingerprint(bad)


def test_looks_like_tls() -> None:
    assert looks_like_tls(b"\x16\x03\x01") and looks_like_tls(0x16)
    assert not looks_like_tls(b"P2\x01") and not looks_like_tls(b"{") and not looks_like_tls(b"")


def test_server_context_says_which_file_is_wrong(tmp_path: Path, pki: dict[str, Issued]) -> None:
    with pytest.raises(MediatorTlsError, match=r"missing\.pem"):
        server_context(tmp_path / "missing.pem", pki["good"].key)
    with pytest.raises(MediatorTlsError, match=r"good\.pem"):
        server_context(pki["good"].cert, pki["self_signed"].key)  # key of another cert


def test_client_context_options_exclude_each_other(pki: dict[str, Issued]) -> None:
    with pytest.raises(ValueError):
        client_context(cafile=pki["ca"].cert, insecure=True)
    with pytest.raises(ValueError):
        client_context(pinned="00" * 32, insecure=True)
    default = client_context()
    assert default.check_hostname and default.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(ValueError):  # a checked name needs a name
        TlsClientSession(default, None)


# --- sans-IO sessions, in memory ------------------------------------------------------------


def _pump(client: TlsClientSession, server: TlsServerSession) -> tuple[bytes, bytes]:
    """Move bytes both ways until quiet; return (plaintext at server, plaintext at client)."""
    at_server = at_client = b""
    to_server = client.start() if not client.handshake_done else client.data_to_send()
    for _ in range(20):
        at_server += server.receive(to_server)
        to_client = server.data_to_send()
        at_client += client.receive(to_client)
        to_server = client.data_to_send()
        if not to_server and not to_client:
            break
    return at_server, at_client


def test_session_pair_in_memory(pki: dict[str, Issued]) -> None:
    client = TlsClientSession(client_context(cafile=pki["ca"].cert), "localhost")
    server = TlsServerSession(server_context(pki["good"].cert, pki["good"].key))
    assert client.send(b"early") == b""  # kept until the handshake is done
    at_server, _ = _pump(client, server)
    assert client.handshake_done and server.handshake_done
    assert at_server == b"early"
    assert client.receive(server.send(b"hello client")) == b"hello client"
    assert server.receive(client.send(b"x" * 100_000)) == b"x" * 100_000
    assert server.receive(client.close()) == b"" and server.closed_by_peer
    with pytest.raises(MediatorTlsError):
        client.send(b"after close")


@pytest.mark.parametrize(
    ("cert", "mismatch"),
    [("wrong_name", "name"), ("expired", "expired"), ("self_signed", "ca"), ("other_ca", "ca")],
)
def test_verification_failures_name_what_did_not_match(
    pki: dict[str, Issued], cert: str, mismatch: str
) -> None:
    client = TlsClientSession(client_context(cafile=pki["ca"].cert), "localhost")
    server = TlsServerSession(server_context(pki[cert].cert, pki[cert].key))
    with pytest.raises(TlsVerificationFailed) as caught:
        _pump(client, server)
    assert caught.value.mismatch == mismatch
    assert "localhost" in caught.value.reason


def test_system_store_does_not_trust_a_test_ca(pki: dict[str, Issued]) -> None:
    client = TlsClientSession(client_context(), "localhost")
    server = TlsServerSession(server_context(pki["good"].cert, pki["good"].key))
    with pytest.raises(TlsVerificationFailed) as caught:
        _pump(client, server)
    assert caught.value.mismatch == "ca"


def test_pinned_certificate(pki: dict[str, Issued]) -> None:
    cert = pki["self_signed"]
    pin = certificate_fingerprint(cert.der)
    client = TlsClientSession(client_context(pinned=pin), "anything", pinned=pin)
    server = TlsServerSession(server_context(cert.cert, cert.key))
    _pump(client, server)
    assert client.handshake_done
    other = certificate_fingerprint(pki["good"].der)
    client = TlsClientSession(client_context(pinned=other), "localhost", pinned=other)
    server = TlsServerSession(server_context(cert.cert, cert.key))
    with pytest.raises(TlsVerificationFailed) as caught:
        _pump(client, server)
    assert caught.value.mismatch == "fingerprint"
    assert pin in caught.value.reason and other in caught.value.reason


def test_insecure_accepts_anything_but_still_encrypts(pki: dict[str, Issued]) -> None:
    cert = pki["expired"]
    client = TlsClientSession(client_context(insecure=True), None)
    server = TlsServerSession(server_context(cert.cert, cert.key))
    _pump(client, server)
    assert client.handshake_done
    record = client.send(b"secret-marker")
    assert b"secret-marker" not in record and server.receive(record) == b"secret-marker"


def test_garbage_is_a_typed_error(pki: dict[str, Issued]) -> None:
    server = TlsServerSession(server_context(pki["good"].cert, pki["good"].key))
    with pytest.raises(MediatorTlsError):
        server.receive(b"\x16\x03\x01\x00\x05hello" + bytes(64))


# --- against a real mediator ----------------------------------------------------------------


class TlsRaw(Raw):
    """A loopback mediator client speaking TLS through TlsClientSession."""

    session: TlsClientSession

    @classmethod
    async def open_tls(cls, port: int, context: ssl.SSLContext, name: str | None) -> TlsRaw:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        raw = cls(reader, writer)
        raw.wire_bytes = bytearray()
        raw.session = TlsClientSession(context, name)
        raw.writer.write(raw.session.start())
        while not raw.session.handshake_done:
            data = await asyncio.wait_for(reader.read(65536), 5)
            if not data:
                raise MediatorTlsError("mediator closed during the TLS handshake")
            raw.wire_bytes += data
            raw.inbox.extend(raw.decoder.feed(raw.session.receive(data)))
            writer.write(raw.session.data_to_send())
        return raw

    def send(self, data: bytes) -> None:
        out = self.session.send(data)
        self.wire_bytes += out
        self.writer.write(out)

    async def recv(self, timeout: float = 5.0) -> wire.Message | None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not self.inbox:
            if self.session.closed_by_peer:
                return None
            left = end - loop.time()
            if left <= 0:
                raise TimeoutError
            data = await asyncio.wait_for(self.reader.read(65536), left)
            if not data:
                return None
            self.wire_bytes += data
            self.inbox.extend(self.decoder.feed(self.session.receive(data)))
            self.writer.write(self.session.data_to_send())
        return self.inbox.pop(0)

    def close(self) -> None:
        self.writer.write(self.session.close())  # close_notify, then FIN
        self.writer.close()


async def tls_register(port: int, ctx: ssl.SSLContext, kp: Keypair, their: Keypair) -> TlsRaw:
    raw = await TlsRaw.open_tls(port, ctx, "localhost")
    raw.send(wire.Advertise(1, kp.public_key.raw, their.public_key.raw).encode())
    challenge = await raw.recv()
    assert isinstance(challenge, wire.AdvertiseChallenge), challenge
    info = nonce_info("AdvertiseChallenge", kp.public_key.raw, their.public_key.raw)
    raw.send(wire.AdvertiseResponse(open_nonce(kp, challenge.encrypted_nonce, info)).encode())
    return raw


@pytest.mark.parametrize("uv", [False, True], ids=["asyncio", "uvloop"])
def test_pairing_over_tls_and_in_clear_on_one_port(pki: dict[str, Issued], uv: bool) -> None:
    """A TLS Client and a clear Peer pair through one port; an observer of the TLS stream sees
    neither key nor address in it."""
    alice, bob = KEYS[0], KEYS[1]
    tls = server_context(pki["good"].cert, pki["good"].key)
    ctx = client_context(cafile=pki["ca"].cert)

    async def body() -> None:
        async with serve_mediator("127.0.0.1", 0, config=FAST, tls=tls) as server:
            client = await tls_register(server.port, ctx, alice, bob)
            await until(lambda: server.core.waiting == 1)
            peer = await register(server.port, bob, alice)
            disconnect = await peer.recv()
            assert isinstance(disconnect, wire.PeerDisconnect)
            peer.close()
            identification = await client.recv()
            assert identification == wire.PeerIdentification(
                version=1, pairing_id=disconnect.pairing_id, peer=peer.sockname
            )
            await client.expect_eof()
            seen = bytes(client.wire_bytes)
            for secret in (alice.public_key.raw, bob.public_key.raw, b"P2\x01"):
                assert secret not in seen
            await until(lambda: server.connections == 0)

    run(body, uv=uv)


def test_peer_over_tls_confirms_with_close_notify(pki: dict[str, Issued]) -> None:
    alice, bob = KEYS[0], KEYS[1]
    tls = server_context(pki["good"].cert, pki["good"].key)
    ctx = client_context(cafile=pki["ca"].cert)

    async def body() -> None:
        async with serve_mediator("127.0.0.1", 0, config=FAST, tls=tls) as server:
            client = await tls_register(server.port, ctx, alice, bob)
            await until(lambda: server.core.waiting == 1)
            peer = await tls_register(server.port, ctx, bob, alice)
            assert isinstance(await peer.recv(), wire.PeerDisconnect)
            assert await client.silent(0.2)
            peer.close()
            assert isinstance(await client.recv(), wire.PeerIdentification)
            await until(lambda: server.core.sessions == 0)

    run(body)


def test_require_tls_refuses_clear_version_1(pki: dict[str, Issued]) -> None:
    tls = server_context(pki["good"].cert, pki["good"].key)
    ctx = client_context(cafile=pki["ca"].cert)
    config = MediatorConfig(require_tls=True)

    async def body() -> None:
        async with serve_mediator("127.0.0.1", 0, config=config, tls=tls) as server:
            raw = await Raw.open(server.port)
            raw.send(wire.Advertise(1, KEYS[0].public_key.raw, KEYS[1].public_key.raw).encode())
            assert await code_then_eof(raw) == R.TLS_REQUIRED
            secure = await tls_register(server.port, ctx, KEYS[0], KEYS[1])
            await until(lambda: server.core.waiting == 1)
            secure.close()
            await until(lambda: server.core.sessions == 0)

    run(body)


def test_broken_tls_is_one_closed_connection(pki: dict[str, Issued]) -> None:
    """Garbage after 0x16, a client that rejects the certificate, a client that stops in the
    middle of its handshake: each closes that connection only, the mediator keeps serving."""
    tls = server_context(pki["good"].cert, pki["good"].key)
    ctx = client_context(cafile=pki["ca"].cert)
    config = MediatorConfig(advertise_timeout=1.0)

    async def body() -> None:
        async with serve_mediator("127.0.0.1", 0, config=config, tls=tls) as server:
            raw = await Raw.open(server.port)
            raw.send(b"\x16\x03\x01\x00\x05hello" + bytes(64))
            for _ in range(3):  # a TLS alert at most, then EOF
                if not await asyncio.wait_for(raw.reader.read(65536), 5):
                    break
            else:
                raise AssertionError("the mediator kept talking after broken TLS")
            with pytest.raises(MediatorTlsError):
                await TlsRaw.open_tls(server.port, client_context(), "localhost")
            stalled = await Raw.open(server.port)
            stalled.send(b"\x16\x03\x01")  # a ClientHello that never completes
            await until(lambda: server.core.sessions <= 1)
            await until(lambda: server.core.sessions == 0, timeout=3)  # advertise_timeout
            good = await tls_register(server.port, ctx, KEYS[2], KEYS[3])
            await until(lambda: server.core.waiting == 1)
            good.close()
            await until(lambda: server.core.sessions == 0)

    run(body)


def test_tls_off_treats_a_client_hello_as_malformed(pki: dict[str, Issued]) -> None:
    async def body() -> None:
        async with serve_mediator("127.0.0.1", 0, config=FAST) as server:
            with pytest.raises(MediatorTlsError):
                await TlsRaw.open_tls(server.port, client_context(insecure=True), None)
            await until(lambda: server.core.sessions == 0)

    run(body)


def test_certificate_reload_serves_new_connections_with_the_new_one(
    pki: dict[str, Issued],
) -> None:
    async def body() -> None:
        first = server_context(pki["self_signed"].cert, pki["self_signed"].key)
        async with serve_mediator("127.0.0.1", 0, config=FAST, tls=first) as server:
            pin_old = certificate_fingerprint(pki["self_signed"].der)
            pin_new = certificate_fingerprint(pki["good"].der)
            old = await TlsRaw.open_tls(server.port, client_context(pinned=pin_old), None)
            server.set_tls(server_context(pki["good"].cert, pki["good"].key))
            ctx = client_context(pinned=pin_new)
            raw = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", server.port), 5)
            session = TlsClientSession(ctx, "localhost", pinned=pin_new)
            raw[1].write(session.start())
            while not session.handshake_done:
                session.receive(await asyncio.wait_for(raw[0].read(65536), 5))
                raw[1].write(session.data_to_send())
            raw[1].close()
            old.close()
            await until(lambda: server.core.sessions == 0)

    run(body)
