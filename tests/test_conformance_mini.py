"""The harness against a Mediator that does not share our design (``tests/mini_mediator.py``,
written from spec/ alone without MediatorCore) and against broken variants of it.

The correct one must pass every version 1 scenario; each variant breaks one rule and must fail
exactly the scenarios that check it. Together with ``tests/test_conformance.py`` (mutants of our
own core) this shows the harness catches faults whatever the implementation looks like.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from mini_mediator import FLAWS, MiniConfig, MiniMediator

from p2psc.conformance import HarnessOptions, Level, Outcome, Report, run_conformance, select

CONFIG = MiniConfig(
    advertise_timeout=1.0, response_timeout=1.0, confirm_timeout=1.0, wait_timeout=30
)
OPTIONS = HarnessOptions(
    timeout=2.0,
    quiet=0.3,
    advertise_timeout=1.0,
    response_timeout=1.0,
    confirm_timeout=1.0,
    late=2.0,  # every run shares one event loop on a busy machine
)

NOT_IMPLEMENTED: list[str] = []
"""Recommended scenarios of optional capabilities the small Mediator does not implement (none:
it implements the coordinated pairings of spec/mediator.md section 4.3 too)."""

EXPECTED: dict[str, set[str]] = {
    "correct": set(),
    "early-deadlines": {
        "deadline-advertise-not-early",
        "deadline-response-not-early",
        "deadline-confirm-not-early",
    },
    "newcomer-pairs": {"pairing-mutual-intent-newcomer"},
    # The Peer's task governs both sides of a pairing, so here the stale response deadline
    # (8.5 s from the challenge) also makes the confirmation deadline (5 s) fire late.
    "stale-timer": {"deadline-confirm-not-early", "timeout-confirm"},
    "pairs-then-refuses": {"framing-bytes-after-response"},
    "version-after-layout": {"version-unsupported"},
    "keeps-peer-open": {"pairing-peer-half-close"},
    "ignores-client-bytes": {"fault-client-sends-bytes"},
}


STRETCHED: dict[str, tuple[float, float, float]] = {
    "early-deadlines": (2.0, 2.0, 2.0),
    "stale-timer": (1.0, 8.5, 5.0),
}
"""Flaws run with longer (advertise, response, confirm) deadlines (the harness is told the same
values), so that on a loaded machine they fail only the scenarios of their rule (see the same
table in tests/test_conformance.py). The stale-timer flaw must fail both confirm scenarios: its
stale response deadline R fires R/2 after the pairing in ``deadline-confirm-not-early`` (early
when R/2 < confirm) and about R after it in ``timeout-confirm`` (late when R > confirm + late):
8.5 s against 5 s and late = 2 s leaves 0.75 s and 1.5 s of margin (at R = 6, confirm = 4 the
second sat exactly on its bound and passed or failed by milliseconds)."""


async def _run(flaws: frozenset[str]) -> Report:
    config, options = CONFIG, OPTIONS
    for flaw in flaws & set(STRETCHED):
        advertise, response, confirm = STRETCHED[flaw]
        config = dataclasses.replace(
            config, advertise_timeout=advertise, response_timeout=response, confirm_timeout=confirm
        )
        options = dataclasses.replace(
            options, advertise_timeout=advertise, response_timeout=response, confirm_timeout=confirm
        )
    mediator = MiniMediator(config, flaws)
    port = await mediator.start()
    try:
        return await run_conformance("127.0.0.1", port, options=options, skip=NOT_IMPLEMENTED)
    finally:
        await mediator.close()


@pytest.fixture(scope="module")
def reports() -> dict[str, Report]:
    async def main() -> dict[str, Report]:
        names = list(EXPECTED)
        gate = asyncio.Semaphore(4)  # runs share this event loop; their deadlines are short

        async def gated(name: str) -> Report:
            async with gate:
                return await _run(frozenset() if name == "correct" else frozenset({name}))

        done = await asyncio.wait_for(asyncio.gather(*map(gated, names)), 240)
        return dict(zip(names, done, strict=True))

    return asyncio.run(main())


def test_every_flaw_is_tested() -> None:
    assert set(EXPECTED) - {"correct"} == FLAWS


def test_the_small_mediator_passes_every_scenario(reports: dict[str, Report]) -> None:
    report = reports["correct"]
    assert report.failing() == [], report.format_text()
    assert [r.name for r in report.results] == [s.name for s in select(skip=NOT_IMPLEMENTED)]
    assert all(r.outcome is Outcome.PASSED for r in report.results)
    for result in report.results:  # its deadlines are measured and never early
        for m in result.measurements:
            assert not m.early and not m.too_late, result


@pytest.mark.parametrize("flaw", sorted(FLAWS))
def test_each_flaw_fails_exactly_its_scenarios(reports: dict[str, Report], flaw: str) -> None:
    report = reports[flaw]
    expected = EXPECTED[flaw]
    assert set(report.failing()) == expected, report.format_text()
    for result in report.results:
        if result.name in expected:
            assert result.outcome is Outcome.FAILED, result
            assert result.expected and result.observed and result.transcript
    required = {s.name for s in select() if s.level is Level.REQUIRED}
    assert expected & required  # each breaks a MUST: the run does not conform
    assert not report.passed
