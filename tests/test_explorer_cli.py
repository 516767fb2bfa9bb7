"""`p2psc explore`: report on stdout, exit 0 when every property holds, 1 on a violation."""

from __future__ import annotations

import pytest

from p2psc.cli import main


def test_explore_negotiator_reports_counts_speed_and_coverage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["explore", "negotiator", "--protocols", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    for word in ("OK", "states", "transitions", "depth", "states/s", "coverage"):
        assert word in out


def test_explore_exits_1_with_a_mermaid_counterexample_on_a_mutant(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = main(["explore", "negotiator", "--protocols", "2", "--mutant", "tie-yield", "--quiet"])
    assert status == 1
    out = capsys.readouterr().out
    assert "VIOLATION" in out and "counterexample" in out and "sequenceDiagram" in out


def test_explore_depth_bound_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explore", "negotiator", "--protocols", "1", "--max-depth", "2", "--quiet"]) == 0
    assert "(bounded)" in capsys.readouterr().out
