"""`p2psc demo` and `p2psc connect` as real subprocesses (every wait has a timeout)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

from p2psc.aio.mediator import MediatorServer, serve_mediator
from p2psc.cli.connect import load_peer_key, session_id
from p2psc.errors import KeyFileError
from p2psc.keys import Keypair

P2PSC = [sys.executable, "-m", "p2psc"]


@pytest.fixture
def mediator_port() -> Iterator[int]:
    """A real serve_mediator on 127.0.0.1, on an event loop in a daemon thread."""
    loop = asyncio.new_event_loop()
    ready: Future[MediatorServer] = Future()

    async def main() -> None:
        ready.set_result(await serve_mediator("127.0.0.1", 0))

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(main(), loop).result(10)
    server = ready.result(10)
    try:
        yield server.port
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_demo_exits_zero_and_narrates() -> None:
    done = subprocess.run(
        [*P2PSC, "demo", "--message", "hi"], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    assert "as client" in out and "as peer" in out
    assert "alice -> bob: 'hi bob'" in out and "bob -> alice: 'hi alice'" in out
    assert "same session secret" in out and out.rstrip().endswith("data both ways")
    # both sides coordinate by default: the narration tells the Peer's Status, not a close
    assert "confirms with Status(PUNCHING)" in out and "then closes" not in out


def keyfiles(tmp_path: Path) -> tuple[Path, Path, Keypair, Keypair]:
    a, b = Keypair.generate(), Keypair.generate()
    a.save(tmp_path / "a.pem")
    b.save(tmp_path / "b.pem")
    (tmp_path / "b.pub").write_bytes(b.public_key.to_pem())
    return tmp_path / "a.pem", tmp_path / "b.pem", a, b


def test_connect_pipes_stdin_and_stdout_both_ways(tmp_path: Path, mediator_port: int) -> None:
    a_pem, b_pem, a, _b = keyfiles(tmp_path)
    mediator = f"127.0.0.1:{mediator_port}"
    common = ["--mediator", mediator, "--timeout", "20"]
    # a names b by a public key file, b names a by hex
    proc_a = subprocess.Popen(
        [*P2PSC, "connect", "--key", str(a_pem), "--peer", str(tmp_path / "b.pub"), *common],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc_b = subprocess.Popen(
        [*P2PSC, "connect", "--key", str(b_pem), "--peer", a.public_key.hex(), *common],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    big = bytes(range(256)) * 2000  # 512 KB: many reads and writes
    results: dict[str, tuple[bytes, bytes]] = {}

    def talk(name: str, proc: subprocess.Popen[bytes], data: bytes) -> None:
        results[name] = proc.communicate(data, timeout=40)

    threads = [
        threading.Thread(target=talk, args=("a", proc_a, b"hello from a\n")),
        threading.Thread(target=talk, args=("b", proc_b, big)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert proc_a.returncode == 0, results["a"][1]
    assert proc_b.returncode == 0, results["b"][1]
    assert results["a"][0] == big
    assert results["b"][0] == b"hello from a\n"
    err_a, err_b = results["a"][1].decode(), results["b"][1].decode()
    assert "connected as" in err_a and "connected as" in err_b
    # both print the same session id
    ids = [
        line.rsplit("session ", 1)[1] for line in (err_a + err_b).splitlines() if "session " in line
    ]
    assert len(ids) == 2 and ids[0] == ids[1]


def test_connect_with_an_unreachable_mediator(tmp_path: Path) -> None:
    a_pem, _b_pem, _a, b = keyfiles(tmp_path)
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [*P2PSC, "connect", "--key", str(a_pem), "--peer", b.public_key.hex()]
    done = subprocess.run(
        [*argv, "--mediator", f"127.0.0.1:{port}", "--timeout", "5"],
        capture_output=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 1
    assert "MediatorUnreachable" in done.stderr.decode()
    assert "Traceback" not in done.stderr.decode()


def test_connect_with_a_bad_peer_key(tmp_path: Path) -> None:
    a_pem, *_ = keyfiles(tmp_path)
    argv = [*P2PSC, "connect", "--key", str(a_pem), "--peer", "not-a-key"]
    done = subprocess.run(
        [*argv, "--mediator", "127.0.0.1:9"],
        capture_output=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 1
    assert "KeyFileError" in done.stderr.decode()


def test_load_peer_key_forms(tmp_path: Path) -> None:
    _a_pem, b_pem, _a, b = keyfiles(tmp_path)
    assert load_peer_key(b.public_key.hex()) == b.public_key
    assert load_peer_key(b.public_key.to_pem().decode()) == b.public_key
    assert load_peer_key(str(tmp_path / "b.pub")) == b.public_key
    assert load_peer_key(str(b_pem)) == b.public_key  # a keypair file: its public half
    with pytest.raises(KeyFileError):
        load_peer_key(str(tmp_path / "missing.pem"))
    assert session_id(bytes(32)) != session_id(bytes(31) + b"\x01")
    assert len(session_id(bytes(32))) == 23


def test_reason_texts_from_the_network_cannot_drive_the_terminal(tmp_path: Path) -> None:
    """A mediator (or whoever rewrites its clear stream) answers with escape sequences in its
    reason text: `p2psc connect` shows them escaped, never raw (issue 21 item 5)."""
    import socket

    from p2psc import wire

    a_pem, _b_pem, _a, b = keyfiles(tmp_path)
    hostile = "\x1b[2J\x1b[Hp2psc connect: connected as client, peer verified\r\n"
    abort = wire.AdvertiseAbort(wire.Reason.BUSY, hostile).encode()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(20)
        port = server.getsockname()[1]

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(10)
                conn.recv(4096)  # the Advertise
                conn.sendall(abort)

        thread = threading.Thread(target=answer)
        thread.start()
        argv = [*P2PSC, "connect", "--key", str(a_pem), "--peer", b.public_key.hex()]
        done = subprocess.run(
            [*argv, "--mediator", f"127.0.0.1:{port}", "--timeout", "10"],
            capture_output=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        thread.join(10)
    err = done.stderr.decode()
    assert done.returncode == 1 and "AdvertiseAborted" in err
    assert "\x1b" not in err and "\r" not in err
    assert "\\x1b[2J" in err  # shown, escaped


@pytest.mark.parametrize("flag", [[], ["--no-coordinate"]])
def test_connect_offers_coordination_unless_told_not_to(tmp_path: Path, flag: list[str]) -> None:
    """The Advertise that `p2psc connect` sends carries COORDINATE by default and not with
    --no-coordinate (read by a bare socket standing in for the mediator)."""
    import socket

    from p2psc import wire

    a_pem, _b_pem, _a, b = keyfiles(tmp_path)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(20)
        port = listener.getsockname()[1]
        argv = [*P2PSC, "connect", "--key", str(a_pem), "--peer", b.public_key.hex(), *flag]
        proc = subprocess.Popen(
            [*argv, "--mediator", f"127.0.0.1:{port}", "--timeout", "20"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(20)
                decoder = wire.FrameDecoder()
                messages: list[wire.Message] = []
                while not messages:
                    data = conn.recv(4096)
                    assert data, "the connect process closed before sending Advertise"
                    messages = decoder.feed(data)
        finally:
            proc.kill()
            proc.wait(10)
    advertise = messages[0]
    assert isinstance(advertise, wire.Advertise)
    assert wire.coordinated(advertise.extensions) is (not flag)


@pytest.mark.parametrize("flag", [[], ["--no-timed-dial"]])
def test_connect_times_its_first_dials_unless_told_not_to(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flag: list[str],
) -> None:
    """`p2psc connect --no-timed-dial` asks for PeerConfig.timed_dial=False (the Peer's dial
    schedule itself: tests/test_dial_schedule.py); a stand-in for connect() records
    the options and fails as an unreachable mediator would."""
    from p2psc.cli import connect as cli_connect
    from p2psc.cli import main
    from p2psc.errors import MediatorUnreachable

    seen: dict[str, object] = {}

    async def stand_in(*args: object, **options: object) -> None:
        seen.update(options)
        raise MediatorUnreachable("stand-in mediator")

    monkeypatch.setattr(cli_connect, "connect", stand_in)
    a_pem, _b_pem, _a, b = keyfiles(tmp_path)
    argv = ["connect", "--key", str(a_pem), "--peer", b.public_key.hex(), *flag]
    status = main([*argv, "--mediator", "127.0.0.1:9", "--quiet"])
    assert status == 1 and "MediatorUnreachable" in capsys.readouterr().err
    assert seen["timed_dial"] is (not flag) and seen["coordinate"] is True
