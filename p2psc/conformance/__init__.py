"""Conformance harness: checks a third-party mediator against spec/mediator.md.

Run it from a shell (``p2psc conformance HOST:PORT``), from Python (:func:`run_conformance`,
:func:`run_conformance_sync`) or from a mediator's own pytest suite
(:mod:`p2psc.conformance.pytest_plugin`). The harness plays every client itself with fresh keys
and raw frames; each scenario names the spec section it checks and whether that section makes
it required (MUST) or recommended (SHOULD, reason codes, configured deadlines).

Modules: :mod:`~p2psc.conformance.peer` (raw peers and transcripts),
:mod:`~p2psc.conformance.scenarios` (version 1), :mod:`~p2psc.conformance.legacy_scenarios`
(version 0, ``--legacy``), :mod:`~p2psc.conformance.runner` (selection, concurrency),
:mod:`~p2psc.conformance.report` (text, JSON, JUnit).
"""

from __future__ import annotations

from p2psc.conformance.context import HarnessOptions
from p2psc.conformance.report import Outcome, Report, ScenarioResult
from p2psc.conformance.runner import (
    SCENARIOS,
    parse_target,
    run_conformance,
    run_conformance_sync,
    run_scenario,
    select,
)
from p2psc.conformance.scenario import Level, Scenario, Section

__all__ = [
    "SCENARIOS",
    "HarnessOptions",
    "Level",
    "Outcome",
    "Report",
    "Scenario",
    "ScenarioResult",
    "Section",
    "parse_target",
    "run_conformance",
    "run_conformance_sync",
    "run_scenario",
    "select",
]
