"""Results of a conformance run: per-scenario outcomes, and the report as text, JSON and JUnit.

Why three renderings: people read the text (one line per scenario, then expected vs observed
and the transcript for each failure), scripts read the JSON, and CI systems ingest JUnit XML.
All three agree on one rule: the run passes when every *required* scenario passed; a failed
*recommended* scenario is a warning (in JUnit a ``<skipped>`` with the details, so a CI system
does not turn a warning into a red build while the exit status is 0).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from p2psc.conformance.context import Measurement
from p2psc.conformance.peer import TranscriptEntry
from p2psc.conformance.scenario import Level

__all__ = ["Outcome", "Report", "ScenarioResult"]


class Outcome(StrEnum):
    """How one scenario ended."""

    PASSED = "passed"
    FAILED = "failed"
    """The mediator did not do what the specification says."""
    ERROR = "error"
    """The scenario could not be carried out (connection refused mid-run, a harness bug)."""
    SKIPPED = "skipped"
    """Not run: the options say it cannot be (e.g. ``--idle-timeout 0``)."""


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """The outcome of one scenario, with everything needed to understand a failure."""

    name: str
    section: str
    """``spec/mediator.md §4``."""
    link: str
    """``spec/mediator.md#4-pairing-and-the-ordering-guarantee``."""
    level: Level
    summary: str
    outcome: Outcome
    duration: float
    expected: str = ""
    observed: str = ""
    transcript: tuple[TranscriptEntry, ...] = ()
    measurements: tuple[Measurement, ...] = ()
    """Deadlines this scenario measured: shown under its line whatever the outcome."""

    @property
    def passed(self) -> bool:
        """The scenario ran and the mediator behaved."""
        return self.outcome is Outcome.PASSED

    @property
    def blocking(self) -> bool:
        """A required scenario that failed or errored: the run fails."""
        return self.level is Level.REQUIRED and self.outcome in (Outcome.FAILED, Outcome.ERROR)

    @property
    def warning(self) -> bool:
        """A recommended scenario that failed or errored: reported, does not fail the run."""
        return self.level is Level.RECOMMENDED and self.outcome in (Outcome.FAILED, Outcome.ERROR)

    @property
    def status(self) -> str:
        """The word shown in the report: PASS, FAIL, ERROR, WARN or SKIP."""
        if self.warning:
            return "WARN"
        return {
            Outcome.PASSED: "PASS",
            Outcome.FAILED: "FAIL",
            Outcome.ERROR: "ERROR",
            Outcome.SKIPPED: "SKIP",
        }[self.outcome]

    def line(self, width: int = 32) -> str:
        """One report line: status, name, level, section link, duration; then one indented
        line per measured deadline (measured vs configured)."""
        text = (
            f"{self.status:<5} {self.name:<{width}} {self.level.value:<11} "
            f"{self.link}  {self.duration:.2f}s"
        )
        for measurement in self.measurements:
            text += f"\n      {measurement.format()}"
        return text

    def details(self, indent: str = "      ", *, verbose: bool = False) -> str:
        """Expected vs observed and the transcript (empty for a pass unless ``verbose``)."""
        if self.outcome is Outcome.PASSED and not verbose:
            return ""
        lines = [f"{indent}checks:   {self.summary}"]
        if self.expected:
            lines.append(f"{indent}expected: {self.expected}")
        if self.observed:
            lines.append(f"{indent}observed: {self.observed}")
        if self.transcript:
            lines.append(f"{indent}transcript (-> harness to mediator, <- mediator to harness):")
            lines.extend(f"{indent}  {entry.format()}" for entry in self.transcript)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "section": self.section,
            "link": self.link,
            "level": self.level.value,
            "summary": self.summary,
            "outcome": self.outcome.value,
            "status": self.status,
            "duration": round(self.duration, 4),
            "expected": self.expected,
            "observed": self.observed,
            "transcript": [entry.to_dict() for entry in self.transcript],
            "measurements": [m.to_dict() for m in self.measurements],
        }


@dataclass(slots=True)
class Report:
    """Every result of one run against one mediator."""

    target: str
    """``HOST:PORT`` as given."""
    results: list[ScenarioResult] = field(default_factory=list)
    duration: float = 0.0
    legacy: bool = False

    @property
    def passed(self) -> bool:
        """Every required scenario passed (skipped and recommended ones do not count)."""
        return not any(result.blocking for result in self.results)

    def counts(self) -> dict[str, int]:
        """passed / failed / errors / warnings / skipped (a warning is not also a failure)."""
        counts = {"passed": 0, "failed": 0, "errors": 0, "warnings": 0, "skipped": 0}
        for result in self.results:
            if result.warning:
                counts["warnings"] += 1
            elif result.outcome is Outcome.PASSED:
                counts["passed"] += 1
            elif result.outcome is Outcome.FAILED:
                counts["failed"] += 1
            elif result.outcome is Outcome.ERROR:
                counts["errors"] += 1
            else:
                counts["skipped"] += 1
        return counts

    def failing(self) -> list[str]:
        """Names of the scenarios that did not pass and were not skipped."""
        return [r.name for r in self.results if r.outcome in (Outcome.FAILED, Outcome.ERROR)]

    def summary(self) -> str:
        c = self.counts()
        verdict = "CONFORMS" if self.passed else "DOES NOT CONFORM"
        if self.passed and c["warnings"]:
            verdict += f" ({c['warnings']} warning{'s' if c['warnings'] != 1 else ''})"
        return (
            f"{len(self.results)} scenarios: {c['passed']} passed, {c['failed']} failed, "
            f"{c['errors']} errors, {c['warnings']} warnings, {c['skipped']} skipped "
            f"in {self.duration:.1f} s: {self.target} {verdict}"
            + ("" if self.passed else " (a required scenario did not pass)")
        )

    def format_details(self, *, verbose: bool = False) -> str:
        """Expected vs observed and the transcript of each non-passing scenario (of every
        scenario that ran, with ``verbose``), then the summary line (what follows the
        per-scenario lines)."""
        lines: list[str] = []
        shown = (
            (Outcome.FAILED, Outcome.ERROR, Outcome.PASSED)
            if verbose
            else (
                Outcome.FAILED,
                Outcome.ERROR,
            )
        )
        for result in self.results:
            if result.outcome in shown:
                lines.append("")
                lines.append(
                    f"{result.status} {result.name} ({result.level.value}, {result.section})"
                )
                lines.append(result.details(verbose=verbose))
        lines.append("")
        lines.append(self.summary())
        return "\n".join(lines)

    def format_text(self, *, verbose: bool = False) -> str:
        """The whole human report: one line per scenario, details of each non-pass (of every
        scenario with ``verbose``), summary."""
        width = max((len(r.name) for r in self.results), default=10)
        lines = [result.line(width) for result in self.results]
        return "\n".join(lines) + "\n" + self.format_details(verbose=verbose)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "legacy": self.legacy,
            "passed": self.passed,
            "duration": round(self.duration, 3),
            "counts": self.counts(),
            "results": [result.to_dict() for result in self.results],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_junit(self) -> str:
        """JUnit XML (one ``<testsuite>``, one ``<testcase>`` per scenario).

        Required failures are ``<failure>``, harness errors ``<error>``, recommended failures
        and skipped scenarios ``<skipped>`` (with the details in the message and in
        ``<system-out>``)."""
        counts = self.counts()
        suites = ET.Element("testsuites", name="p2psc conformance")
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=f"p2psc conformance {self.target}",
            tests=str(len(self.results)),
            failures=str(
                sum(1 for r in self.results if r.blocking and r.outcome is Outcome.FAILED)
            ),
            errors=str(sum(1 for r in self.results if r.blocking and r.outcome is Outcome.ERROR)),
            skipped=str(counts["skipped"] + counts["warnings"]),
            time=f"{self.duration:.3f}",
        )
        for result in self.results:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"p2psc.conformance.{result.level.value}",
                name=result.name,
                time=f"{result.duration:.3f}",
            )
            message = (
                f"expected {result.expected}; observed {result.observed}"
                if result.expected
                else result.observed
            )
            text = result.details(indent="")
            if result.blocking:
                tag = "failure" if result.outcome is Outcome.FAILED else "error"
                element = ET.SubElement(case, tag, message=message, type=result.outcome.value)
                element.text = text
            elif result.warning:
                ET.SubElement(case, "skipped", message=f"recommended check failed: {message}")
            elif result.outcome is Outcome.SKIPPED:
                ET.SubElement(case, "skipped", message=result.observed)
            if text:
                ET.SubElement(case, "system-out").text = f"{result.link}\n{text}"
        ET.indent(suites)
        body: str = ET.tostring(suites, encoding="unicode")
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"
