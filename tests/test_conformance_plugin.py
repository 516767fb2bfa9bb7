"""The pytest plugin, as a mediator author's test suite uses it (run inside ``pytester``).

Each test writes a tiny project (conftest + one test asking for ``p2psc_conformance``) and runs
pytest on it in-process with the plugin loaded explicitly, so these tests do not depend on the
installed entry point (another test checks that one).
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest
from conformance_mutants import EarlyIdentification, VagueReasons, serve_in_thread

import p2psc.conformance.pytest_plugin  # noqa: F401  (imported once, not per nested run)
from p2psc.core.mediator import MediatorConfig
from p2psc.legacy.mediator import LegacyAwareMediatorCore

pytest_plugins = ["pytester"]

PLUGIN = "p2psc.conformance.pytest_plugin"
CONFIG = MediatorConfig(
    advertise_timeout=1.0, response_timeout=1.0, confirm_timeout=1.0, wait_timeout=30
)
OPTIONS = """
import pytest
from p2psc.conformance import HarnessOptions

@pytest.fixture
def p2psc_conformance_options():
    return HarnessOptions(
        timeout=2.0, quiet=0.3, idle_timeout={idle}, response_timeout=1.0, confirm_timeout=1.0
    )
"""
TEST = """
def test_mediator_conforms(p2psc_conformance):
    p2psc_conformance.check()
"""


def _plugin_args() -> list[str]:
    """``-p`` the plugin unless the installed entry point already loads it; leave out plugins
    that only cost time in a nested run (hypothesis' modules are re-imported and
    assertion-rewritten in each one)."""
    names = {ep.value for ep in metadata.entry_points(group="pytest11")}
    quiet = ["-p", "no:hypothesispytest", "-p", "no:cacheprovider"]
    return quiet if PLUGIN in names else [*quiet, "-p", PLUGIN]


def test_user_fixture_starts_the_mediator(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        OPTIONS.format(idle=1.0)
        + """
from conformance_mutants import serve_in_thread
from p2psc.core.mediator import MediatorConfig, MediatorCore

@pytest.fixture(scope="session")
def p2psc_mediator():
    config = MediatorConfig(advertise_timeout=1.0, response_timeout=1.0, confirm_timeout=1.0)
    with serve_in_thread(MediatorCore(config)) as address:
        yield address
"""
    )
    pytester.makepyfile(test_my_mediator=TEST)
    result = pytester.runpytest(*_plugin_args(), "-k", "a-then-b or ordering or timeout-idle")
    result.assert_outcomes(passed=3)
    listed = pytester.runpytest(*_plugin_args(), "--collect-only", "-q")
    assert "test_mediator_conforms[pairing-ordering-guarantee]" in listed.stdout.str()
    assert "legacy-" not in listed.stdout.str()


def test_failures_show_expected_observed_and_transcript(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(OPTIONS.format(idle=1.0))
    pytester.makepyfile(test_my_mediator=TEST)
    with serve_in_thread(EarlyIdentification(CONFIG)) as (host, port):
        result = pytester.runpytest(
            *_plugin_args(), f"--p2psc-mediator={host}:{port}", "-k", "a-then-b or ordering"
        )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*pairing-ordering-guarantee (required, spec/mediator.md#4-pairing-*",
            "*expected: nothing at client A*",
            "*observed: PeerIdentification(version=1*",
            "*<- PeerDisconnect(peer=*",
        ]
    )


@pytest.mark.parametrize("strict", [False, True])
def test_recommended_failures_xfail_unless_strict(pytester: pytest.Pytester, strict: bool) -> None:
    pytester.makeconftest(OPTIONS.format(idle=1.0))
    pytester.makepyfile(test_my_mediator=TEST)
    if strict:
        pytester.makeini("[pytest]\np2psc_conformance_strict = true\n")
    with serve_in_thread(VagueReasons(CONFIG)) as (host, port):
        result = pytester.runpytest(
            *_plugin_args(), f"--p2psc-mediator={host}:{port}", "-k", "reason", "-rx"
        )
    reasons = 5  # the recommended *-reason scenarios
    if strict:
        result.assert_outcomes(failed=reasons)
    else:
        result.assert_outcomes(xfailed=reasons)
        result.stdout.fnmatch_lines(["*recommended scenario failed: AdvertiseAbort(*"])


def test_skips_legacy_and_missing_mediator(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(OPTIONS.format(idle=None))
    pytester.makepyfile(test_my_mediator=TEST)
    pytester.makeini("[pytest]\np2psc_conformance_legacy = true\n")
    with serve_in_thread(LegacyAwareMediatorCore(CONFIG)) as (host, port):
        result = pytester.runpytest(
            *_plugin_args(), f"--p2psc-mediator={host}:{port}", "-k", "idle or legacy-pairing-a"
        )
    result.assert_outcomes(passed=1, skipped=1)  # idle: no --idle-timeout known
    missing = pytester.runpytest(*_plugin_args(), "-k", "self-pairing-reason")
    missing.assert_outcomes(errors=1)
    missing.stdout.fnmatch_lines(["*define a fixture 'p2psc_mediator'*"])


def test_installed_entry_point_loads_the_plugin(pytester: pytest.Pytester) -> None:
    """``pip install p2psc`` is enough: pytest finds the plugin through its pytest11 entry
    point (skipped when this checkout was installed before the entry point existed)."""
    names = {ep.value for ep in metadata.entry_points(group="pytest11")}
    if PLUGIN not in names:
        pytest.skip("p2psc is installed without its pytest11 entry point: pip install -e .")
    pytester.makepyfile(test_my_mediator=TEST)
    for conftest in ("", f"pytest_plugins = [{PLUGIN!r}]\n"):  # listing it too is harmless
        pytester.makeconftest(conftest)
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", *_plugin_args()],
            cwd=pytester.path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "test_mediator_conforms[pairing-a-then-b]" in done.stdout
