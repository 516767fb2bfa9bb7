"""INSECURE LEGACY command line: ``p2psc legacy keygen|connect`` against ``p2psc mediator``."""

from __future__ import annotations

import json
import os
import select
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p2psc.cli import main
from p2psc.errors import KeyFileError
from p2psc.legacy.cli import keygen_rsa, load_peer_key, parse_mediator
from p2psc.legacy.crypto import RsaKeypair, RsaPublicKey

P2PSC = [sys.executable, "-m", "p2psc"]


def test_keygen_writes_private_and_public_files(tmp_path: Path) -> None:
    out = tmp_path / "alice.pem"
    assert main(["legacy", "keygen", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----\n")
    public = Path(str(out) + ".pub")
    assert public.read_bytes().startswith(b"-----BEGIN RSA PUBLIC KEY-----\n")
    keypair = RsaKeypair.load(out)
    assert RsaPublicKey.load(public) == keypair.public_key
    assert load_peer_key(str(public)) == keypair.public_key
    assert load_peer_key(public.read_text()) == keypair.public_key
    assert keypair.public_key.bits == 2048
    with pytest.raises(KeyFileError):
        keygen_rsa(out)  # never overwrites


def test_keygen_with_passphrase_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEGACY_PASS", "s3cret phrase")
    out = tmp_path / "locked.pem"
    assert main(["legacy", "keygen", str(out), "--passphrase-env", "LEGACY_PASS"]) == 0
    assert RsaKeypair.load(out, b"s3cret phrase")
    with pytest.raises(KeyFileError):
        RsaKeypair.load(out)


def test_parse_mediator() -> None:
    assert parse_mediator("127.0.0.1:1337") == ("127.0.0.1", 1337)
    assert parse_mediator("[::1]:80") == ("::1", 80)
    for bad in ["127.0.0.1", "h:0", "h:99999", "h:x"]:
        with pytest.raises(Exception, match="HOST:PORT"):
            parse_mediator(bad)


def _line(stream: object, deadline: float) -> bytes:
    """One line from a subprocess pipe, waiting at most until ``deadline``."""
    assert hasattr(stream, "fileno")
    line = b""
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise TimeoutError(f"no line in time; got {line!r}")
        chunk = os.read(stream.fileno(), 1)
        if not chunk:
            raise EOFError(f"stream ended; got {line!r}")
        line += chunk
    return line


def test_two_legacy_connects_pair_through_the_mediator_command(tmp_path: Path) -> None:
    for name in ("a", "b"):
        keygen_rsa(tmp_path / f"{name}.pem")
    mediator = subprocess.Popen(
        [*P2PSC, "mediator", "--port", "0", "--log-format", "json"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    peers: list[subprocess.Popen[bytes]] = []
    try:
        deadline = time.monotonic() + 30
        port = int(json.loads(_line(mediator.stderr, deadline))["port"])
        for me, them in (("a", "b"), ("b", "a")):
            peers.append(
                subprocess.Popen(
                    [
                        *P2PSC,
                        "legacy",
                        "connect",
                        "--key",
                        str(tmp_path / f"{me}.pem"),
                        "--peer",
                        str(tmp_path / f"{them}.pem.pub"),
                        "--mediator",
                        f"127.0.0.1:{port}",
                        "--timeout",
                        "20",
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            )
            time.sleep(0.3)  # a registers first: it is the Client
        a, b = peers
        assert a.stdin is not None and b.stdin is not None
        for peer in peers:
            text = b""
            while b"connected" not in text:
                text = _line(peer.stderr, deadline)
        a.stdin.write(b"hello from a\n")
        a.stdin.flush()
        assert _line(b.stdout, deadline) == b"hello from a\n"
        b.stdin.write(b"hello from b\n")
        b.stdin.flush()
        assert _line(a.stdout, deadline) == b"hello from b\n"
        a.stdin.close()  # a's EOF reaches b, which ends although its stdin is still open;
        assert b.wait(timeout=10) == 0  # then b's close ends a
        assert a.wait(timeout=10) == 0
    finally:
        for proc in [*peers, mediator]:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)


def test_keygen_rsa_force_replaces_both_files(tmp_path: Path) -> None:
    out = tmp_path / "k.pem"
    assert main(["keygen", "--rsa", str(out)]) == 0
    first = RsaPublicKey.load(Path(str(out) + ".pub"))
    assert main(["keygen", "--rsa", str(out)]) == 1  # refuses without --force
    assert main(["keygen", "--rsa", str(out), "--force"]) == 0
    second = RsaKeypair.load(out).public_key
    assert second != first and RsaPublicKey.load(Path(str(out) + ".pub")) == second
