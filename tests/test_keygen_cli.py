"""`p2psc keygen`: writes a loadable 0600 key, refuses overwrite, handles passphrases."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from p2psc.cli import main
from p2psc.keys import Keypair, PublicKey


def _printed(out: str) -> tuple[str, str]:
    lines = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return lines["public key"].strip(), lines["fingerprint"].strip()


def test_keygen_writes_loadable_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "id.pem"
    assert main(["keygen", str(out)]) == 0
    hex_key, fingerprint = _printed(capsys.readouterr().out)
    keypair = Keypair.load(out)
    assert keypair.public_key.hex() == hex_key
    assert keypair.public_key.fingerprint() == fingerprint
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_keygen_refuses_overwrite_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "id.pem"
    assert main(["keygen", str(out)]) == 0
    before = out.read_bytes()
    capsys.readouterr()
    assert main(["keygen", str(out)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(["keygen", str(out), "--force"]) == 0
    assert out.read_bytes() != before
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_keygen_passphrase_env_and_show(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "id.pem"
    monkeypatch.setenv("P2PSC_TEST_PASS", "s3cret")
    assert main(["keygen", str(out), "--passphrase-env", "P2PSC_TEST_PASS"]) == 0
    hex_key, _ = _printed(capsys.readouterr().out)
    assert b"ENCRYPTED" in out.read_bytes()
    assert Keypair.load(out, b"s3cret").public_key.hex() == hex_key
    assert main(["keygen", "--show", str(out), "--passphrase-env", "P2PSC_TEST_PASS"]) == 0
    assert _printed(capsys.readouterr().out)[0] == hex_key
    monkeypatch.setenv("P2PSC_TEST_PASS", "wrong")
    assert main(["keygen", "--show", str(out), "--passphrase-env", "P2PSC_TEST_PASS"]) == 1
    assert "KeyFileError" in capsys.readouterr().err


def test_keygen_passphrase_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secret = tmp_path / "pass.txt"
    secret.write_text("line one\nignored\n")
    out = tmp_path / "id.pem"
    assert main(["keygen", str(out), "--passphrase-file", str(secret)]) == 0
    hex_key, _ = _printed(capsys.readouterr().out)
    assert PublicKey.load(out, b"line one").hex() == hex_key


def test_keygen_show_public_pem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keypair = Keypair.generate()
    pub = tmp_path / "id.pub"
    pub.write_bytes(keypair.public_key.to_pem())
    assert main(["keygen", "--show", str(pub)]) == 0
    assert _printed(capsys.readouterr().out) == (
        keypair.public_key.hex(),
        keypair.public_key.fingerprint(),
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["keygen"],
        ["keygen", "--passphrase-env", "P2PSC_SURELY_UNSET_VAR", "x.pem"],
        ["keygen", "--show", "/nonexistent/key.pem"],
    ],
)
def test_keygen_errors_are_clean(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a if a != "x.pem" else str(tmp_path / "x.pem") for a in argv]
    assert main(argv) in (1, 2)
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip()
    assert not (tmp_path / "x.pem").exists()


def test_keygen_console_script(tmp_path: Path) -> None:
    out = tmp_path / "id.pem"
    done = subprocess.run(
        [sys.executable, "-m", "p2psc", "keygen", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert Keypair.load(out).public_key.hex() in done.stdout


def test_keygen_rsa_legacy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from p2psc.legacy.crypto import RsaKeypair

    out = tmp_path / "legacy.pem"
    assert main(["keygen", "--rsa", str(out)]) == 0
    assert "legacy" in capsys.readouterr().err
    assert RsaKeypair.load(out, None) is not None
    assert (tmp_path / "legacy.pem.pub").is_file()
    assert main(["keygen", "--rsa", str(out)]) == 1  # refuses overwrite
