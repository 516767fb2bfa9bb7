"""Our mediator against a strict emulation of the original C++ client (issue 8's observations).

The emulated client is deliberately as fragile as the original: each message is read with ONE
``recv(1024)`` (reading again only while a read returns exactly 1024 bytes) and parsed with
``json.loads`` of exactly those bytes, so two messages in one read, or a message split across
reads, fail it. The Client connects to the Peer once and retries only once, 10 ms after a
refusal. If our mediator sent two messages back to back, or sent PeerIdentification before the
Peer could listen, these tests would fail.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from typing import Any

import pytest

from p2psc.aio.mediator import serve_mediator
from p2psc.legacy import codec
from p2psc.legacy.crypto import RsaKeypair, decrypt_nonce, encrypt_nonce, new_nonce

TIMEOUT = 10.0


def recv_message(sock: socket.socket) -> dict[str, Any]:
    """The C++ way: one read of up to 1024 bytes (more only while reads return 1024)."""
    data = sock.recv(1024)
    while len(data) % 1024 == 0 and data:
        data += sock.recv(1024)
    if not data:
        raise ConnectionError("closed")
    message: dict[str, Any] = json.loads(data)  # raises on two objects or a partial one
    return message


def send_message(sock: socket.socket, message: codec.LegacyMessage) -> None:
    sock.sendall(codec.encode(message))


class CppLikeClient(threading.Thread):
    """One original-client run: advertise, then play the role the mediator assigns."""

    def __init__(self, me: RsaKeypair, them: RsaKeypair, mediator: tuple[str, int]) -> None:
        super().__init__(daemon=True)
        self.me, self.them, self.mediator = me, them, mediator
        self.result: str | None = None
        self.error: BaseException | None = None
        self.received = b""

    def run(self) -> None:
        try:
            self.result = self._run()
        except BaseException as error:
            self.error = error

    def _run(self) -> str:
        # Bound explicitly before connecting (not by connect() itself): the kernel may share an
        # implicitly chosen port with unrelated outgoing connections of other processes, which
        # would make the later listener bind fail at random on a busy machine. That weakness is
        # the original's own; this test is about framing and timing, not port allocation.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(TIMEOUT)
        sock.connect(self.mediator)
        with sock:
            send_message(
                sock,
                codec.Advertise(0, self.me.public_key.to_wire(), self.them.public_key.to_wire()),
            )
            challenge = recv_message(sock)
            assert challenge["type"] == codec.LegacyType.ADVERTISE_CHALLENGE
            nonce = decrypt_nonce(self.me, challenge["payload"]["encrypted_nonce"])
            send_message(sock, codec.AdvertiseResponse(nonce))
            local_port = sock.getsockname()[1]
            pairing = recv_message(sock)
            if pairing["type"] == codec.LegacyType.PEER_DISCONNECT:
                assert pairing["payload"]["port"] == local_port
                # the mediator has closed our connection: our port is free to bind
                assert sock.recv(1024) == b""
                return self._peer(pairing["payload"]["port"])
        assert pairing["type"] == codec.LegacyType.PEER_IDENTIFICATION
        assert pairing["payload"]["version"] == 0
        return self._client(pairing["payload"]["ip"], pairing["payload"]["port"])

    def _peer(self, port: int) -> str:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with listener:
            listener.bind(("127.0.0.1", port))
            listener.listen(1)
            listener.settimeout(TIMEOUT)
            conn, _ = listener.accept()
        with conn:
            conn.settimeout(TIMEOUT)
            challenge = recv_message(conn)
            assert challenge["type"] == codec.LegacyType.PEER_CHALLENGE
            theirs = decrypt_nonce(self.me, challenge["payload"]["encrypted_nonce"])
            ours = new_nonce()
            send_message(
                conn, codec.PeerChallengeResponse(encrypt_nonce(self.them.public_key, ours), theirs)
            )
            response = recv_message(conn)
            assert response["payload"]["decrypted_nonce"] == ours
            send_message(conn, codec.PeerAcknowledgement())
            conn.sendall(b"hello from the peer")
        return "peer"

    def _client(self, ip: str, port: int) -> str:
        try:
            conn = socket.create_connection((ip, port), timeout=TIMEOUT)
        except ConnectionRefusedError:
            threading.Event().wait(0.01)  # the original retries once, 10 ms later
            conn = socket.create_connection((ip, port), timeout=TIMEOUT)
        with conn:
            ours = new_nonce()
            send_message(conn, codec.PeerChallenge(encrypt_nonce(self.them.public_key, ours)))
            reply = recv_message(conn)
            assert reply["payload"]["decrypted_nonce"] == ours
            theirs = decrypt_nonce(self.me, reply["payload"]["encrypted_nonce"])
            send_message(conn, codec.PeerResponse(theirs))
            ack = conn.recv(1024)  # may carry application bytes after the object
            message, rest = codec.LegacyDecoder().feed_last(ack)
            assert message == codec.PeerAcknowledgement()
            self.received = rest
            while len(self.received) < len(b"hello from the peer"):
                chunk = conn.recv(1024)
                if not chunk:
                    break
                self.received += chunk
        return "client"


@pytest.fixture(scope="module")
def keys() -> list[RsaKeypair]:
    return [RsaKeypair.generate() for _ in range(2)]


@pytest.mark.parametrize("gap", [0.0, 0.2])
def test_two_original_clients_pair_through_our_mediator(keys: list[RsaKeypair], gap: float) -> None:
    async def body() -> None:
        async with serve_mediator() as server:
            first = CppLikeClient(keys[0], keys[1], server.address)
            second = CppLikeClient(keys[1], keys[0], server.address)
            first.start()
            await asyncio.sleep(gap)
            second.start()
            for thread in (first, second):
                await asyncio.to_thread(thread.join, 3 * TIMEOUT)
                assert not thread.is_alive()
                if thread.error is not None:
                    raise thread.error
            roles = sorted(str(t.result) for t in (first, second))
            assert roles == ["client", "peer"]
            client = first if first.result == "client" else second
            assert client.received == b"hello from the peer"

    asyncio.run(asyncio.wait_for(body(), 4 * TIMEOUT))


@pytest.mark.parametrize("python_first", [True, False])
def test_our_python_client_pairs_with_an_original_client(
    keys: list[RsaKeypair], python_first: bool
) -> None:
    from p2psc.legacy.client import connect_legacy

    async def body() -> None:
        async with serve_mediator() as server:
            original = CppLikeClient(keys[1], keys[0], server.address)
            if not python_first:
                original.start()
                await asyncio.sleep(0.2)
            ours = asyncio.create_task(connect_legacy(keys[0], keys[1].public_key, server.address))
            if python_first:
                await asyncio.sleep(0.2)
                original.start()
            connection = await asyncio.wait_for(ours, 3 * TIMEOUT)
            if not python_first:  # we are the Peer: greet the original Client as it expects
                connection.writer.write(b"hello from the peer")
            await asyncio.to_thread(original.join, 3 * TIMEOUT)
            assert not original.is_alive()
            if original.error is not None:
                raise original.error
            assert connection.role == ("client" if python_first else "peer")
            assert original.result == ("peer" if python_first else "client")
            if python_first:  # the original Peer greets right after its acknowledgement
                greeting = await asyncio.wait_for(connection.reader.readexactly(19), TIMEOUT)
                assert greeting == b"hello from the peer"
            else:
                assert original.received == b"hello from the peer"
            connection.close()
            await connection.wait_closed()

    asyncio.run(asyncio.wait_for(body(), 4 * TIMEOUT))
