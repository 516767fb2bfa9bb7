"""pytest plugin: run the conformance scenarios as tests of your own Mediator.

Why a plugin: a mediator written in Python wants each scenario as its own test in its own suite
(selectable with ``-k``, reported by the CI like any other test), against a mediator its own
fixtures start. Installing p2psc registers this plugin (entry point ``pytest11``); without the
entry point, load it with ``pytest_plugins = ["p2psc.conformance.pytest_plugin"]`` in the
top-level ``conftest.py`` or ``-p p2psc.conformance.pytest_plugin``.

Usage, in the mediator's test suite::

    # conftest.py
    @pytest.fixture(scope="session")
    def p2psc_mediator():
        with start_my_mediator() as (host, port):   # your code
            yield host, port

    # test_conformance.py
    def test_mediator_conforms(p2psc_conformance):   # one test per scenario
        p2psc_conformance.check()

``check()`` fails the test (with expected, observed and the transcript) when a required
scenario fails, marks it ``xfail`` when a recommended one does (``p2psc_conformance_strict =
true`` in the ini file makes those fail too), and skips scenarios the options rule out. Async
tests whose mediator runs on the test's own event loop use ``await p2psc_conformance.acheck()``.
Instead of a ``p2psc_mediator`` fixture, ``pytest --p2psc-mediator HOST:PORT`` tests a mediator
that is already running. Override the ``p2psc_conformance_options`` fixture to pass the
mediator's deadlines (:class:`~p2psc.conformance.context.HarnessOptions`);
``p2psc_conformance_legacy = true`` adds the version 0 scenarios.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from p2psc.conformance.context import HarnessOptions
    from p2psc.conformance.report import ScenarioResult
    from p2psc.conformance.scenario import Scenario

__all__ = ["ConformanceCheck"]

FIXTURE = "p2psc_conformance"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("p2psc-conformance", "p2psc mediator conformance")
    group.addoption(
        "--p2psc-mediator",
        metavar="HOST:PORT",
        default=None,
        help="mediator the p2psc_conformance tests run against (instead of a fixture)",
    )
    parser.addini(
        "p2psc_conformance_legacy",
        "also run the version 0 (JSON/RSA) conformance scenarios",
        type="bool",
        default=False,
    )
    parser.addini(
        "p2psc_conformance_strict",
        "fail (instead of xfail) the tests of recommended conformance scenarios",
        type="bool",
        default=False,
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One test per scenario for every test that asks for the ``p2psc_conformance`` fixture."""
    if FIXTURE not in metafunc.fixturenames:
        return
    from p2psc.conformance.runner import select  # only when used: keeps pytest startup cheap

    legacy = bool(metafunc.config.getini("p2psc_conformance_legacy"))
    names = [scenario.name for scenario in select(legacy=legacy)]
    metafunc.parametrize(FIXTURE, names, indirect=True, ids=names)


@dataclass(frozen=True)
class ConformanceCheck:
    """One scenario against one mediator, as a pytest test sees it."""

    scenario: Scenario
    host: str
    port: int
    options: HarnessOptions
    strict: bool = False

    async def arun(self) -> ScenarioResult:
        """Run the scenario on the current event loop; return its result (never raises for
        what the mediator does)."""
        from p2psc.conformance.runner import run_scenario

        return await run_scenario(self.scenario, self.host, self.port, self.options)

    def run(self) -> ScenarioResult:
        """Run the scenario in a fresh event loop on a helper thread (so it works whether or
        not the calling thread already runs a loop); return its result."""
        box: list[ScenarioResult | BaseException] = []

        def worker() -> None:
            try:
                box.append(asyncio.run(self.arun()))
            except BaseException as error:  # handed to the test's thread below
                box.append(error)

        thread = threading.Thread(target=worker, name=f"p2psc-conformance-{self.scenario.name}")
        thread.start()
        thread.join()
        outcome = box[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def judge(self, result: ScenarioResult) -> ScenarioResult:
        """Turn a result into the test's outcome: pass, fail, xfail or skip."""
        from p2psc.conformance.report import Outcome

        if result.outcome is Outcome.PASSED:
            return result
        if result.outcome is Outcome.SKIPPED:
            pytest.skip(result.observed)
        text = f"{result.name} ({result.level.value}, {result.link})\n{result.details()}"
        if result.warning and not self.strict:
            pytest.xfail(f"recommended scenario failed: {result.expected}")
        pytest.fail(text, pytrace=False)

    def check(self) -> ScenarioResult:
        """Run and judge (synchronous tests)."""
        return self.judge(self.run())

    async def acheck(self) -> ScenarioResult:
        """Run and judge on the running loop (async tests)."""
        return self.judge(await self.arun())


@pytest.fixture
def p2psc_mediator(request: pytest.FixtureRequest) -> tuple[str, int]:
    """The mediator under test, from ``--p2psc-mediator HOST:PORT``; define your own fixture of
    this name to start one."""
    target = request.config.getoption("--p2psc-mediator")
    if not target:
        pytest.fail(
            "p2psc conformance: define a fixture 'p2psc_mediator' returning (host, port), "
            "or run pytest with --p2psc-mediator HOST:PORT",
            pytrace=False,
        )
    from p2psc.conformance.runner import parse_target
    from p2psc.errors import ConformanceError

    try:
        return parse_target(str(target))
    except ConformanceError as error:
        pytest.fail(f"--p2psc-mediator: {error.reason}", pytrace=False)


@pytest.fixture
def p2psc_conformance_options() -> HarnessOptions:
    """Harness options (deadlines, waits); override to match your mediator's configuration."""
    from p2psc.conformance.context import HarnessOptions

    return HarnessOptions()


@pytest.fixture
def p2psc_conformance(
    request: pytest.FixtureRequest,
    p2psc_mediator: Any,
    p2psc_conformance_options: HarnessOptions,
) -> ConformanceCheck:
    """One conformance scenario (the test is parametrized over all of them) bound to the
    mediator of the ``p2psc_mediator`` fixture."""
    from p2psc.conformance.runner import SCENARIOS

    name = getattr(request, "param", None)
    if name is None:
        pytest.fail("p2psc_conformance is parametrized by the plugin; request it from a test")
    scenario = next(s for s in SCENARIOS if s.name == name)
    host, port = p2psc_mediator
    return ConformanceCheck(
        scenario,
        str(host),
        int(port),
        p2psc_conformance_options,
        strict=bool(request.config.getini("p2psc_conformance_strict")),
    )
