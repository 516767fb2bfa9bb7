"""``p2psc mediator``: help, and a real subprocess that serves and exits cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time

import pytest

from p2psc import wire
from p2psc.cli import main


def test_help_lists_the_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["mediator", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--host", "--port", "--log-level", "--log-format", "--max-pending", "--timeout"):
        assert flag in out


def test_top_level_help_lists_mediator(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "mediator" in capsys.readouterr().out


def _read_line(proc: subprocess.Popen[bytes], deadline: float) -> bytes:
    assert proc.stderr is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stderr, selectors.EVENT_READ)
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not selector.select(left):
            raise TimeoutError(f"no log line in time; got {line!r}")
        chunk = os.read(proc.stderr.fileno(), 1)
        if not chunk:
            raise EOFError(f"mediator exited early; got {line!r}")
        line += chunk
    return line


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_subprocess_serves_and_stops_cleanly(sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2psc", "mediator", "--port", "0", "--log-format", "json"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        listening = json.loads(_read_line(proc, deadline))
        assert listening["event"] == "listening"
        port = int(listening["port"])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"P2\x01\x00\xff\xff")  # oversized: answered, logged, closed
            reply = sock.recv(4096)
            message = wire.decode(reply)
            assert isinstance(message, wire.AdvertiseAbort)
            assert message.code == wire.Reason.MALFORMED
        failed = json.loads(_read_line(proc, deadline))
        assert failed["event"] == "failed" and "exceeds" in failed["reason"]
        assert failed["remote"].startswith("127.0.0.1:")
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
        rest = proc.stderr.read() if proc.stderr else b""
        assert b"Traceback" not in rest
        assert json.loads(rest.splitlines()[-1])["event"] == "stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)


def test_port_in_use_is_a_clean_error() -> None:
    """A port another socket holds: one line naming the address, exit 1, no traceback."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "p2psc", "mediator", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1, done
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr, done.stderr
    assert "in use" in done.stderr and "Traceback" not in done.stderr, done.stderr
