"""``p2psc conformance --tls / --tls-insecure`` against a TLS-only mediator (issue 21)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from test_mediator_operations import Mediator
from tls_certs import make_leaf

SCENARIOS = ["--only", "pairing-a-then-b,framing-oversized,timeout-idle,ordering"]
FAST = ["--timeout", "3", "--silence", "0.3", "--idle-timeout", "1"]
FAST += ["--response-timeout", "1", "--confirm-timeout", "1"]


@pytest.fixture(scope="module")
def tls_mediator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    cert = make_leaf(tmp_path_factory.mktemp("conformance-tls"), "mediator")
    args = ["--tls-cert", str(cert.cert), "--tls-key", str(cert.key), "--require-tls"]
    mediator = Mediator([*args, "--timeout", "1"])
    try:
        yield int(mediator.wait_for("listening")["port"])
    finally:
        mediator.stop()


def conformance(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "p2psc", "conformance", f"127.0.0.1:{port}", *FAST, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_tls_insecure_passes_against_a_self_signed_tls_mediator(tls_mediator: int) -> None:
    done = conformance(tls_mediator, "--tls-insecure", *SCENARIOS, "--json", "-")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["passed"] and len(report["results"]) >= 3


def test_without_tls_the_tls_only_mediator_fails_the_pairing(tls_mediator: int) -> None:
    done = conformance(tls_mediator, "--only", "pairing-a-then-b")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "AdvertiseAbort(TLS_REQUIRED" in done.stdout


def test_tls_with_verification_refuses_a_self_signed_certificate(tls_mediator: int) -> None:
    done = conformance(tls_mediator, "--tls", "--only", "pairing-a-then-b")
    assert done.returncode != 0
    assert "not trusted" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
