"""Our mediator and our legacy client against an emulation of the original C++ client.

The emulation (:class:`CppClient`) does what the real client was seen doing when it was built
and run against us (issue 12), each point deliberately as fragile as the original:

* **one JSON object per read** (:func:`cpp_receive`): one ``read()`` of up to 1024 bytes (again
  only while a read returns exactly 1024 bytes and more is pending), parsed as exactly one
  object: two objects in one read ("Unexpected trailing input") or a message split across reads
  fail it; it never waits for a continuation;
* **base64 without padding** out (342 characters for RSA-2048), both forms in;
* **close, then bind at once**: on PeerDisconnect the Peer closes its mediator socket, which has
  no SO_REUSEADDR, and binds a listener to that very port, on **127.0.0.1 only**. If our FIN has
  not arrived before its close, its socket goes to TIME-WAIT and the bind fails with "Address
  already in use". The emulation also records whether the FIN had arrived with the message
  (``fin_with_disconnect``), which a correct mediator guarantees by sending both in one segment;
* the Client connects to the Peer once and retries once, 10 ms after a refusal;
* **nonces** are ``rand()`` after ``srand(time(0))`` on every call: both sides of one pairing
  usually use the same nonce;
* application bytes right after PeerAcknowledgement, in both directions.

The mediator runs as its own process (``p2psc mediator``), as in the real trials: in-process,
the emulated client's threads would wait for the interpreter lock while the mediator runs, and
the timing of point 3 could not show. ``test_peer_disconnect_and_fin_share_one_segment`` proves
the segment boundary itself by capturing the loopback traffic (needs CAP_NET_RAW; skipped
without it).
"""

from __future__ import annotations

import array
import asyncio
import base64
import fcntl
import json
import random
import re
import socket
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2psc.legacy import codec
from p2psc.legacy.client import connect_legacy
from p2psc.legacy.crypto import RsaKeypair, RsaPublicKey, encrypt_nonce

TIMEOUT = 10.0
READ_SIZE = 1024
GREETING_FROM_PEER = b"hello from the peer"
GREETING_FROM_CLIENT = b"hello from the client"


class CppError(Exception):
    """What the original client would have reported (and then given up)."""


# --- the emulated client --------------------------------------------------------------------


def cpp_receive(sock: socket.socket) -> dict[str, Any]:
    """``Socket::receive`` + ``decode``: ONE read (more only after exactly 1024 bytes with
    more pending), parsed as exactly one JSON object; never waits for a continuation."""
    data = sock.recv(READ_SIZE)
    while len(data) % READ_SIZE == 0 and data:
        pending = array.array("i", [0])
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, pending)
        if pending[0] == 0:
            break
        data += sock.recv(READ_SIZE)
    if not data:
        raise CppError("receive failed: Peer closed connection")
    try:
        message: dict[str, Any] = json.loads(data)
    except json.JSONDecodeError as error:  # trailing input, or half a message
        raise CppError(f"Could not decode message {data[:60]!r}. Reason: {error}") from None
    return message


def cpp_send(sock: socket.socket, message: codec.LegacyMessage) -> None:
    sock.sendall(codec.encode(message))


def cpp_nonce() -> str:
    """``srand(time(0)); std::to_string(rand())``: the same within one second."""
    return str(random.Random(int(time.time())).randrange(2**31))


def cpp_encrypt(key: RsaPublicKey, nonce: str, *, padded: bool = False) -> str:
    """The C++ library's base64 encoder drops the '=' padding."""
    encrypted = encrypt_nonce(key, nonce)
    return encrypted if padded else encrypted.rstrip("=")


def cpp_decrypt(keypair: RsaKeypair, encrypted: str) -> str:
    """The C++ decoder stops at the first '=': it reads both forms. (Our own
    ``decrypt_nonce`` is what is under test, so the emulation does not rely on it.)"""
    text = encrypted.split("=", 1)[0]
    ciphertext = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    return keypair.decrypt(ciphertext).decode("ascii")


class CppClient(threading.Thread):
    """One run of the original client: advertise, then play the role the mediator assigns."""

    def __init__(
        self,
        me: RsaKeypair,
        them: RsaPublicKey,
        mediator: tuple[str, int],
        *,
        ack_read_delay: float = 0.0,
        greet_at_once: bool = True,
        padded: bool = False,
    ) -> None:
        super().__init__(daemon=True)
        self.me, self.them, self.mediator = me, them, mediator
        self.greet_at_once = greet_at_once
        """As the Peer: the application greets right after PeerAcknowledgement (as an original
        application may; an original Client then fails if its read is late, so two emulated
        originals are run with the Peer greeting only after the Client's greeting)."""
        self.ack_read_delay = ack_read_delay
        self.padded = padded
        """Pad the base64 (the original never does): isolates other points from that one."""
        """Seconds between sending PeerResponse and reading PeerAcknowledgement: a C++ thread
        that is not scheduled at once (the read then sees whatever has arrived by then)."""
        self.role: str | None = None
        self.error: BaseException | None = None
        self.registered = threading.Event()
        self.nonces: list[str] = []
        self.fin_with_disconnect: bool | None = None
        self.received = b""

    def run(self) -> None:
        try:
            self.role = self._run()
        except BaseException as error:
            self.error = error

    def _run(self) -> str:
        # No SO_REUSEADDR, as the original. The port is chosen by bind() rather than connect():
        # a port that connect() picks may also serve other processes' outgoing connections
        # (to other destinations), and the later bind would then fail for a reason that has
        # nothing to do with the mediator (a weakness of the original, not the point here).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(TIMEOUT)
        sock.connect(self.mediator)
        try:
            cpp_send(sock, codec.Advertise(0, self.me.public_key.to_wire(), self.them.to_wire()))
            challenge = cpp_receive(sock)
            if challenge["type"] != codec.LegacyType.ADVERTISE_CHALLENGE:
                raise CppError(f"Unexpected message type: {challenge}")
            nonce = cpp_decrypt(self.me, challenge["payload"]["encrypted_nonce"])
            cpp_send(sock, codec.AdvertiseResponse(nonce))
            self.registered.set()
            pairing = cpp_receive(sock)
            if pairing["type"] == codec.LegacyType.PEER_DISCONNECT:
                # Has the FIN arrived with the message? (Checked before the close, as fast as
                # the original closes: it cannot wait for a FIN it does not know of.)
                try:
                    self.fin_with_disconnect = sock.recv(1, socket.MSG_DONTWAIT) == b""
                except BlockingIOError:
                    self.fin_with_disconnect = False
                port = int(pairing["payload"]["port"])
                sock.close()
                return self._peer(port)
            if pairing["type"] != codec.LegacyType.PEER_IDENTIFICATION:
                raise CppError(f"Received unexpected message type: {pairing}")
        finally:
            sock.close()
        if pairing["payload"]["version"] != 0:
            raise CppError("Peer has incompatible protocol version")
        return self._client(str(pairing["payload"]["ip"]), int(pairing["payload"]["port"]))

    def _peer(self, port: int) -> str:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the listener has it
        with listener:
            try:
                listener.bind(("127.0.0.1", port))  # local_ip is fixed: 127.0.0.1 only
            except OSError as error:
                raise CppError(f"Failed to bind to port {port}. Reason: {error.strerror}") from None
            listener.listen(5)
            listener.settimeout(TIMEOUT)
            conn, _ = listener.accept()
        with conn:
            conn.settimeout(TIMEOUT)
            challenge = cpp_receive(conn)
            theirs = cpp_decrypt(self.me, challenge["payload"]["encrypted_nonce"])
            ours = cpp_nonce()
            self.nonces.append(ours)
            cpp_send(
                conn,
                codec.PeerChallengeResponse(
                    cpp_encrypt(self.them, ours, padded=self.padded), theirs
                ),
            )
            response = cpp_receive(conn)
            if response["payload"]["decrypted_nonce"] != ours:
                raise CppError("PeerResponse: peer did not pass verification")
            cpp_send(conn, codec.PeerAcknowledgement())
            if self.greet_at_once:
                conn.sendall(GREETING_FROM_PEER)  # the application, at once
            self.received = cpp_receive_raw(conn, len(GREETING_FROM_CLIENT))
            if not self.greet_at_once:
                conn.sendall(GREETING_FROM_PEER)
        return "peer"

    def _client(self, ip: str, port: int) -> str:
        try:
            conn = socket.create_connection((ip, port), timeout=TIMEOUT)
        except ConnectionRefusedError:
            time.sleep(0.01)  # the original retries once, 10 ms later
            try:
                conn = socket.create_connection((ip, port), timeout=TIMEOUT)
            except OSError as error:
                raise CppError(f"Failed to connect to {ip}:{port}: {error}") from None
        with conn:
            ours = cpp_nonce()
            self.nonces.append(ours)
            cpp_send(conn, codec.PeerChallenge(cpp_encrypt(self.them, ours, padded=self.padded)))
            reply = cpp_receive(conn)
            if reply["payload"]["decrypted_nonce"] != ours:
                raise CppError("PeerChallengeResponse: peer did not pass verification")
            theirs = cpp_decrypt(self.me, reply["payload"]["encrypted_nonce"])
            cpp_send(conn, codec.PeerResponse(theirs))
            time.sleep(self.ack_read_delay)
            ack = cpp_receive(conn)  # exactly one object: application bytes here fail it
            if ack["type"] != codec.LegacyType.PEER_ACKNOWLEDGEMENT:
                raise CppError(f"expected PeerAcknowledgement, got {ack}")
            conn.sendall(GREETING_FROM_CLIENT)  # the application, at once
            self.received = cpp_receive_raw(conn, len(GREETING_FROM_PEER))
        return "client"


def cpp_receive_raw(conn: socket.socket, size: int) -> bytes:
    """The application's read of ``size`` bytes (not a protocol message)."""
    data = b""
    while len(data) < size:
        chunk = conn.recv(READ_SIZE)
        if not chunk:
            break
        data += chunk
    return data


def finish(*clients: CppClient) -> None:
    for client in clients:
        client.join(3 * TIMEOUT)
        assert not client.is_alive()
        if client.error is not None:
            raise client.error


# --- the mediator, as its own process -------------------------------------------------------


MEDIATOR_LOG: list[Path] = []


def registrations() -> int:
    """How many registrations the mediator has logged so far."""
    return MEDIATOR_LOG[0].read_text().count(" registered ")


async def registered_since(before: int) -> None:
    for _ in range(int(TIMEOUT / 0.02)):
        if registrations() > before:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("no registration")


@pytest.fixture(scope="module", params=["uvloop", "asyncio"])
def mediator(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[tuple[str, int]]:
    """``p2psc mediator`` on both of its event loops (they close connections differently)."""
    log = tmp_path_factory.mktemp("mediator") / "mediator.log"
    MEDIATOR_LOG[:] = [log]
    command = [sys.executable, "-m", "p2psc", "mediator", "--host", "127.0.0.1", "--port", "0"]
    if request.param == "asyncio":
        command.append("--no-uvloop")
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=sink)
    try:
        yield ("127.0.0.1", wait_for_port(process, log))
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_port(process: subprocess.Popen[bytes], log: Path) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(r"listening host=\S+ port=(\d+)", log.read_text())
        if found:
            return int(found.group(1))
        assert process.poll() is None, log.read_text()
        time.sleep(0.05)
    raise AssertionError(f"the mediator did not start: {log.read_text()}")


@pytest.fixture(scope="module")
def keys() -> list[RsaKeypair]:
    return [RsaKeypair.generate() for _ in range(2)]


# --- the emulation is as strict as the original ----------------------------------------------


def test_the_emulation_reads_one_object_per_read_and_never_waits_for_the_rest() -> None:
    a, b = socket.socketpair()
    with a, b:
        b.sendall(codec.encode(codec.PeerAcknowledgement()) + GREETING_FROM_PEER)
        with pytest.raises(CppError, match="Extra data"):
            cpp_receive(a)
        half = codec.encode(codec.PeerDisconnect(4000))
        b.sendall(half[:10])  # the rest would come later: the original does not wait for it
        with pytest.raises(CppError, match=r"Unterminated|Expecting"):
            cpp_receive(a)


def test_the_emulation_sends_unpadded_base64_and_repeats_nonces(keys: list[RsaKeypair]) -> None:
    encrypted = cpp_encrypt(keys[0].public_key, "1804289383")
    assert len(encrypted) == 342 and not encrypted.endswith("=")
    assert cpp_decrypt(keys[0], encrypted) == "1804289383"
    assert cpp_decrypt(keys[0], encrypt_nonce(keys[0].public_key, "7")) == "7"
    first, second = cpp_nonce(), cpp_nonce()
    assert first == second or int(time.time()) != int(time.time() - 0.5)


# --- pairings -------------------------------------------------------------------------------


@pytest.mark.parametrize("first", [0, 1])
def test_two_original_clients_pair_through_our_mediator(
    keys: list[RsaKeypair], mediator: tuple[str, int], first: int
) -> None:
    """C++ <-> C++, both registration orders, several times: the Peer's close-then-bind
    works every time because our FIN comes with PeerDisconnect (checked for each run)."""
    for _ in range(3):
        earlier = CppClient(keys[first], keys[1 - first].public_key, mediator, greet_at_once=False)
        later = CppClient(keys[1 - first], keys[first].public_key, mediator, greet_at_once=False)
        earlier.start()
        assert earlier.registered.wait(TIMEOUT)
        later.start()
        finish(earlier, later)
        assert (earlier.role, later.role) == ("client", "peer")
        assert later.fin_with_disconnect is True, "PeerDisconnect arrived without our FIN"
        assert earlier.received == GREETING_FROM_PEER
        assert later.received == GREETING_FROM_CLIENT
        # usually the same second: the original's nonces then coincide, which must not matter
        assert len(earlier.nonces) == len(later.nonces) == 1


@pytest.mark.parametrize("python_first", [True, False])
def test_our_python_client_pairs_with_an_original_client(
    keys: list[RsaKeypair], mediator: tuple[str, int], python_first: bool
) -> None:
    """Python <-> C++, both orders. As the Client we read the C++ Peer's unpadded nonce
    ciphertext and its greeting right behind PeerAcknowledgement; as the Peer our caller's
    first bytes must not reach the C++ Client in the same read as PeerAcknowledgement (the
    emulated Client reads it 50 ms late, as a C++ thread not scheduled at once would)."""
    original = CppClient(keys[1], keys[0].public_key, mediator, ack_read_delay=0.05)

    async def body() -> None:
        if not python_first:
            original.start()
            assert await asyncio.to_thread(original.registered.wait, TIMEOUT)
        before = registrations()
        ours = asyncio.create_task(connect_legacy(keys[0], keys[1].public_key, mediator))
        if python_first:
            await registered_since(before)
            original.start()
        connection = await asyncio.wait_for(ours, 3 * TIMEOUT)
        async with connection:
            connection.writer.write(GREETING_FROM_CLIENT if python_first else GREETING_FROM_PEER)
            expected = GREETING_FROM_PEER if python_first else GREETING_FROM_CLIENT
            greeting = await asyncio.wait_for(connection.reader.readexactly(len(expected)), TIMEOUT)
            assert greeting == expected
            await asyncio.to_thread(finish, original)
            assert connection.role == ("client" if python_first else "peer")
            assert original.role == ("peer" if python_first else "client")
            if python_first:
                assert original.fin_with_disconnect is True

    asyncio.run(asyncio.wait_for(body(), 4 * TIMEOUT))


def test_our_peer_holds_its_first_bytes_until_the_client_has_read_the_acknowledgement(
    keys: list[RsaKeypair], mediator: tuple[str, int]
) -> None:
    """Issue 12 item 3 alone (the original Client pads its base64 here, to keep item 1 out of
    it): our caller writes the moment ``connect_legacy`` returns; the original Client, reading
    PeerAcknowledgement 50 ms late, must still find it alone in its read."""
    original = CppClient(keys[1], keys[0].public_key, mediator, ack_read_delay=0.05, padded=True)

    async def body() -> None:
        original.start()
        assert await asyncio.to_thread(original.registered.wait, TIMEOUT)
        connection = await asyncio.wait_for(
            connect_legacy(keys[0], keys[1].public_key, mediator), 3 * TIMEOUT
        )
        async with connection:
            assert connection.role == "peer"
            connection.writer.write(GREETING_FROM_PEER)
            await asyncio.to_thread(finish, original)
            assert original.received == GREETING_FROM_PEER

    asyncio.run(asyncio.wait_for(body(), 4 * TIMEOUT))


class LoopbackCapture(threading.Thread):
    """TCP segments sent from ``port`` on the loopback interface, as (flags, payload)."""

    FIN = 0x01

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.segments: list[tuple[int, bytes]] = []
        self.stop = threading.Event()
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.05)

    def run(self) -> None:
        with self.sock:
            while not self.stop.is_set():
                try:
                    frame = self.sock.recv(65536)
                except TimeoutError:
                    continue
                ip = frame[14:]  # loopback frames carry an all-zero Ethernet header
                if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != socket.IPPROTO_TCP:
                    continue
                tcp = ip[(ip[0] & 0x0F) * 4 :]
                if len(tcp) >= 20 and int.from_bytes(tcp[0:2], "big") == self.port:
                    self.segments.append((tcp[13], tcp[(tcp[12] >> 4) * 4 :]))


def test_peer_disconnect_and_fin_share_one_segment(
    keys: list[RsaKeypair], mediator: tuple[str, int]
) -> None:
    """Issue 12 item 2, proven on the wire: the segment that carries PeerDisconnect also
    carries the FIN, so the original Peer, which closes and rebinds within a millisecond of
    reading it, never closes first (its socket would sit in TIME-WAIT, its bind fail)."""
    try:
        capture = LoopbackCapture(mediator[1])
    except PermissionError:
        pytest.skip("capturing loopback traffic needs CAP_NET_RAW")
    capture.start()
    try:
        earlier = CppClient(keys[0], keys[1].public_key, mediator, greet_at_once=False)
        later = CppClient(keys[1], keys[0].public_key, mediator, greet_at_once=False)
        earlier.start()
        assert earlier.registered.wait(TIMEOUT)
        later.start()
        finish(earlier, later)
        time.sleep(0.1)  # the capture socket may still hold the last segments
    finally:
        capture.stop.set()
        capture.join(TIMEOUT)
    carrying = [flags for flags, payload in capture.segments if b'"type":5' in payload]
    assert len(carrying) == 1, capture.segments
    assert carrying[0] & LoopbackCapture.FIN, "PeerDisconnect left without the FIN"
