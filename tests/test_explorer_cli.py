"""`p2psc explore`: report on stdout, exit 0 when every property holds, 1 on a violation (with
the counterexample as text and Mermaid), 2 on bad arguments (an argparse message, no traceback).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from p2psc.models.mutants import DIRECT_MUTANTS, MEDIATION_MUTANTS, NEGOTIATOR_MUTANTS

from p2psc.cli import main


def test_explore_negotiator_reports_counts_speed_and_coverage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["explore", "negotiator", "--protocols", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("model negotiator (1 protocol, 3 rounds): OK")
    for word in ("states", "transitions", "depth", "states/s", "coverage", "never taken"):
        assert word in out


def test_explore_exits_1_with_a_mermaid_counterexample_on_a_mutant(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = main(["explore", "negotiator", "--protocols", "2", "--mutant", "tie-yield", "--quiet"])
    assert status == 1
    out = capsys.readouterr().out
    assert "VIOLATION" in out and "counterexample" in out and "sequenceDiagram" in out
    assert "violated: N1" in out


@pytest.mark.parametrize("name", ["identify-early", "leaky-registry", "keep-open"])
def test_explore_mediation_mutants_exit_1_with_both_traces(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["explore", "mediation", "--peers", "2", "--mutant", name, "--quiet"])
    assert status == 1
    out = capsys.readouterr().out
    prop = MEDIATION_MUTANTS[name][1]
    assert f"violated: {prop}" in out
    assert "```mermaid\nsequenceDiagram" in out and f"VIOLATED {prop}" in out
    assert "A->>mediator: Advertise" in out  # the trace names the real messages


def test_explore_mediation_with_faults_holds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explore", "mediation", "--peers", "2", "--faults", "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("model mediation (2 peers, faults): OK")


def test_explore_depth_bound_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explore", "negotiator", "--protocols", "1", "--max-depth", "2", "--quiet"]) == 0
    assert "depth        2 (bounded)" in capsys.readouterr().out


def test_progress_line_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explore", "negotiator", "--protocols", "1", "--progress"]) == 0
    captured = capsys.readouterr()
    assert "states/s" in captured.err and "frontier" in captured.err
    assert "frontier" not in captured.out


def test_help_names_every_mutant(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["explore", "--help"])
    text = capsys.readouterr().out
    for name, (_, prop) in (
        *NEGOTIATOR_MUTANTS.items(),
        *MEDIATION_MUTANTS.items(),
        *DIRECT_MUTANTS.items(),
    ):
        assert f"{name} ({prop})" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["negotiator", "--protocols", "7"], "--protocols: 7 is out of range"),
        (["negotiator", "--protocols", "two"], "--protocols: not a number"),
        (["negotiator", "--max-depth", "-1"], "--max-depth: must be >= 0"),
        (["negotiator", "--mutant", "no-mutual"], "unknown negotiator mutant 'no-mutual'"),
        (["mediation", "--mutant", "tie-yield"], "unknown mediation mutant 'tie-yield'"),
        (["mediation", "--protocols", "2"], "apply to the negotiator model only"),
        (["negotiator", "--peers", "2"], "applies to the mediation model only"),
        (["nat"], "invalid choice: 'nat'"),
    ],
)
def test_bad_arguments_are_argparse_errors(argv: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "p2psc", "explore", *argv],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
