"""``p2psc conformance`` as a user runs it: a subprocess against mediators served from a thread.

Exit status 0 (every required scenario passed, warnings allowed), 1 (a required one did not), 2
(cannot run: unreachable mediator, bad input), never a traceback; --list, --json, --junit.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conformance_mutants import EarlyIdentification, VagueReasons, serve_in_thread

from p2psc.cli import main
from p2psc.conformance import SCENARIOS
from p2psc.core.mediator import MediatorConfig, MediatorCore

CONFIG = MediatorConfig(
    advertise_timeout=1.0, response_timeout=1.0, confirm_timeout=1.0, wait_timeout=30
)
FAST = [
    "--timeout",
    "2",
    "--silence",
    "0.3",
    "--advertise-timeout",
    "1",
    "--response-timeout",
    "1",
    "--confirm-timeout",
    "1",
]


def conformance(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "p2psc", "conformance", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_list_needs_no_network() -> None:
    done = conformance("--list")
    assert done.returncode == 0, done.stderr
    v1 = [s for s in SCENARIOS if not s.legacy]
    for scenario in v1:
        assert scenario.name in done.stdout
    assert "legacy-" not in done.stdout
    assert f"{len(v1)} scenarios" in done.stdout
    legacy = conformance("--list", "--legacy", "--only", "legacy-")
    assert legacy.returncode == 0
    names = [line.split()[0] for line in legacy.stdout.splitlines() if line.startswith(("l", "p"))]
    assert names == [s.name for s in SCENARIOS if s.legacy]
    assert "required" in legacy.stdout and "spec/legacy.md §3" in legacy.stdout


def test_unreachable_mediator_is_a_clean_error() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = conformance(f"127.0.0.1:{port}")
    assert done.returncode == 2
    assert f"cannot reach 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stderr.count("\n") == 1


def test_bad_input_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    # in-process (the dispatcher is the same; a subprocess per case would only add startup time)
    for args in (["nonsense"], ["127.0.0.1:1", "--only", "no-such-scenario"], []):
        assert main(["conformance", *args]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("p2psc conformance: error: ") and err.count("\n") == 1, err
    with pytest.raises(SystemExit) as exited:
        main(["conformance", "127.0.0.1:1", "--timeout", "-3"])
    assert exited.value.code == 2 and "seconds" in capsys.readouterr().err


def test_passing_mediator_exit_0_with_json_and_junit(tmp_path: Path) -> None:
    junit = tmp_path / "report.xml"
    with serve_in_thread(MediatorCore(CONFIG)) as (host, port):
        done = conformance(
            f"{host}:{port}",
            *FAST,
            "--only",
            "pairing-a-then-b,framing-oversized",
            "--only",
            "timeout-idle",
            "--json",
            "-",
            "--junit",
            str(junit),
        )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["passed"] is True
    assert [r["name"] for r in report["results"]] == [
        "pairing-a-then-b",
        "framing-oversized-closes",
        "timeout-idle",
    ]
    assert "3 scenarios: 3 passed" in done.stderr  # the human report moved to stderr
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "3" and suite.get("failures") == "0"


def test_failing_mediator_exit_1_and_a_readable_failure(tmp_path: Path) -> None:
    junit = tmp_path / "report.xml"
    report = tmp_path / "report.json"
    with serve_in_thread(EarlyIdentification(CONFIG)) as (host, port):
        done = conformance(
            f"{host}:{port}",
            *FAST,
            "--only",
            "ordering,pairing-a-then-b",
            "--junit",
            str(junit),
            "--json",
            str(report),
        )
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert "PASS  pairing-a-then-b" in out
    assert "FAIL  pairing-ordering-guarantee" in out
    assert "spec/mediator.md#4-pairing-and-the-ordering-guarantee" in out
    assert "expected: nothing at client A" in out
    assert "observed: PeerIdentification(version=1, peer=127.0.0.1:" in out
    assert "<- PeerDisconnect(peer=" in out  # the transcript
    assert "1 passed, 1 failed" in out and "DOES NOT CONFORM" in out
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    assert cases["pairing-ordering-guarantee"].find("failure") is not None
    assert cases["pairing-a-then-b"].find("failure") is None
    data = json.loads(report.read_text())
    assert data["passed"] is False
    assert data["counts"] == {
        "passed": 1,
        "failed": 1,
        "errors": 0,
        "warnings": 0,
        "skipped": 0,
    }


def test_recommended_failures_warn_but_exit_0() -> None:
    with serve_in_thread(VagueReasons(CONFIG)) as (host, port):
        done = conformance(f"{host}:{port}", *FAST, "--only", "reason,version")
    assert done.returncode == 0, done.stdout
    assert "WARN  identity-wrong-nonce-reason" in done.stdout
    assert "PASS  version-unsupported" in done.stdout
    warnings = sum(line.startswith("WARN  ") for line in done.stdout.splitlines())
    assert warnings >= 3
    assert "0 failed" in done.stdout and f" CONFORMS ({warnings} warnings)" in done.stdout


def test_verbose_shows_passing_transcripts_and_deadlines_are_measured() -> None:
    """--verbose prints the transcript of a passing scenario; a deadline scenario prints
    measured vs configured on its PASS line; the old option name still works."""
    with serve_in_thread(MediatorCore(CONFIG)) as (host, port):
        done = conformance(
            f"{host}:{port}",
            *FAST[:4],
            "--idle-timeout",
            "1",
            "--only",
            "pairing-a-then-b,deadline-advertise",
            "--verbose",
        )
        quiet = conformance(f"{host}:{port}", *FAST, "--only", "pairing-a-then-b")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "PASS  pairing-a-then-b" in out
    assert "<- PeerIdentification(version=1" in out  # a passing scenario's transcript
    assert re.search(r"advertise_timeout at idle: measured 1\.\d+ s, configured 1 s", out)
    assert quiet.returncode == 0 and "<- PeerIdentification" not in quiet.stdout


def test_help_explains_the_levels(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["conformance", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for phrase in (
        "Required scenarios",
        "recommended",
        "many connections",
        "--advertise-timeout",
        "--idle-timeout",
        "--introduce-delay",
        "--late",
        "--verbose",
        "CONFORMS (N warnings)",
    ):
        assert phrase in text
