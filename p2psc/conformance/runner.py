"""Run a selection of scenarios against one mediator and collect a :class:`Report`.

Scenarios are independent (fresh keys, own connections), so they run concurrently, at most
``jobs`` at a time, the long ones (those that wait for a mediator deadline) first so that they
overlap the quick ones. Each scenario also has an overall budget, a safety net on top of the
deadline every single wait already has: nothing here can hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import time
import traceback
from collections.abc import Callable, Iterable, Sequence

from p2psc.conformance.context import RSA_POOL, HarnessOptions, ScenarioContext
from p2psc.conformance.legacy_scenarios import LEGACY_SCENARIOS
from p2psc.conformance.peer import ScenarioFailed
from p2psc.conformance.report import Outcome, Report, ScenarioResult
from p2psc.conformance.scenario import Scenario
from p2psc.conformance.scenarios import V1_SCENARIOS
from p2psc.errors import ConformanceError

__all__ = [
    "SCENARIOS",
    "check_reachable",
    "parse_target",
    "run_conformance",
    "run_conformance_sync",
    "run_scenario",
    "select",
]

SCENARIOS: tuple[Scenario, ...] = V1_SCENARIOS + LEGACY_SCENARIOS
"""Every scenario the harness knows, version 1 first, then version 0 (``--legacy``)."""

ResultCallback = Callable[[ScenarioResult], None]
StartCallback = Callable[[list[Scenario]], None]


def parse_target(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port); ConformanceError otherwise."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if not sep:
            port_text = ""
    else:
        host, _, port_text = text.rpartition(":")
        if ":" in host:
            raise ConformanceError(f"write an IPv6 address as [ADDRESS]:PORT, got {text!r}")
    if not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConformanceError(f"expected HOST:PORT (port 1..65535), got {text!r}")
    return host, int(port_text)


def _patterns(values: Iterable[str] | None) -> list[str]:
    """Split comma lists; a pattern without wildcards matches as a substring."""
    out: list[str] = []
    for value in values or ():
        for part in value.split(","):
            part = part.strip()
            if part:
                out.append(part if any(ch in part for ch in "*?[") else f"*{part}*")
    return out


def select(
    only: Iterable[str] | None = None,
    skip: Iterable[str] | None = None,
    *,
    legacy: bool = False,
) -> list[Scenario]:
    """The scenarios a run covers: version 1 ones, plus version 0 ones with ``legacy``,
    narrowed by ``only`` and ``skip`` patterns (globs, or substrings; comma lists allowed)."""
    chosen = [s for s in SCENARIOS if legacy or not s.legacy]
    wanted = _patterns(only)
    for pattern in wanted:
        if not any(fnmatch.fnmatchcase(s.name, pattern) for s in chosen):
            hint = "" if legacy else " (version 0 scenarios need --legacy)"
            raise ConformanceError(f"--only {pattern.strip('*')!r} matches no scenario{hint}")
    if wanted:
        chosen = [s for s in chosen if any(fnmatch.fnmatchcase(s.name, p) for p in wanted)]
    unwanted = _patterns(skip)
    chosen = [s for s in chosen if not any(fnmatch.fnmatchcase(s.name, p) for p in unwanted)]
    if not chosen:
        raise ConformanceError("no scenario selected")
    return chosen


async def check_reachable(host: str, port: int, timeout: float) -> None:
    """One TCP connect, closed at once; ConformanceError("cannot reach ...") if it fails."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as error:
        if isinstance(error, TimeoutError):
            why = f"no connection within {timeout:g} s"
        elif isinstance(error, ConnectionRefusedError):
            why = "connection refused"
        else:
            why = error.strerror or str(error)
        raise ConformanceError(f"cannot reach {host}:{port}: {why}") from None
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), timeout)


def _budget(scenario: Scenario, options: HarnessOptions) -> float:
    """Overall seconds a scenario may take (every wait inside has its own, shorter deadline)."""
    deadlines = sum(
        d
        for d in (options.advertise_timeout, options.response_timeout, options.confirm_timeout)
        if d is not None
    )
    return 12 * options.timeout + 12 * options.quiet + 2 * deadlines + 4 * options.late + 10


async def run_scenario(
    scenario: Scenario, host: str, port: int, options: HarnessOptions
) -> ScenarioResult:
    """Run one scenario; never raises for what the mediator does (that is the result)."""
    loop = asyncio.get_running_loop()
    start = loop.time()

    def result(outcome: Outcome, expected: str = "", observed: str = "") -> ScenarioResult:
        return ScenarioResult(
            name=scenario.name,
            section=scenario.section.short,
            link=scenario.section.link,
            level=scenario.level,
            summary=scenario.summary,
            outcome=outcome,
            duration=loop.time() - start,
            expected=expected,
            observed=observed,
            transcript=tuple(ctx.transcript.entries) if ctx is not None else (),
            measurements=tuple(ctx.measurements) if ctx is not None else (),
        )

    ctx: ScenarioContext | None = None
    reason = scenario.skip_unless(options) if scenario.skip_unless is not None else None
    if reason is not None:
        return result(Outcome.SKIPPED, observed=f"skipped: {reason}")
    keys = await RSA_POOL.take(scenario.rsa_keys) if scenario.rsa_keys else []
    ctx = ScenarioContext(host, port, options, keys)
    try:
        await asyncio.wait_for(scenario.body(ctx), _budget(scenario, options))
    except ScenarioFailed as failure:
        return result(Outcome.FAILED, failure.expected, failure.observed)
    except TimeoutError:
        return result(
            Outcome.ERROR,
            "the scenario to finish within its overall budget",
            "it did not (a harness bug: every wait has its own deadline)",
        )
    except OSError as error:
        return result(Outcome.ERROR, "to reach the mediator", f"{type(error).__name__}: {error}")
    except Exception as error:  # a harness bug must cost one scenario, not the run
        where = traceback.extract_tb(error.__traceback__)[-1]
        return result(
            Outcome.ERROR,
            "the harness to run the scenario",
            f"internal error {type(error).__name__}: {error} "
            f"({where.filename}:{where.lineno}; please report)",
        )
    finally:
        ctx.dispose()
        if keys:
            RSA_POOL.give_back(keys)
    return result(Outcome.PASSED)


async def run_conformance(
    host: str,
    port: int,
    *,
    only: Sequence[str] | None = None,
    skip: Sequence[str] | None = None,
    legacy: bool = False,
    options: HarnessOptions | None = None,
    on_result: ResultCallback | None = None,
    on_start: StartCallback | None = None,
) -> Report:
    """Run the selected scenarios against the mediator at ``host:port``; return the report.

    Raises :class:`~p2psc.errors.ConformanceError` (before running anything) for a selection
    that matches nothing or a mediator that cannot be reached; everything the mediator does
    wrong is in the report instead. ``on_start`` sees the selection once the mediator answered
    a first connection; ``on_result`` sees each result as soon as it is known (completion
    order; the report keeps the catalogue's order).
    """
    options = options or HarnessOptions()
    scenarios = select(only, skip, legacy=legacy)
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    await check_reachable(host, port, options.timeout)
    if on_start is not None:
        on_start(scenarios)
    started = time.monotonic()
    rsa_needed = sum(s.rsa_keys for s in scenarios)
    if rsa_needed:
        await RSA_POOL.warm(rsa_needed)
    gate = asyncio.Semaphore(options.jobs)
    order = sorted(range(len(scenarios)), key=lambda i: not scenarios[i].long)
    results: list[ScenarioResult | None] = [None] * len(scenarios)

    async def one(index: int) -> None:
        async with gate:
            outcome = await run_scenario(scenarios[index], host, port, options)
        results[index] = outcome
        if on_result is not None:
            on_result(outcome)

    await asyncio.gather(*(one(i) for i in order))
    report = Report(target, [r for r in results if r is not None], legacy=legacy)
    report.duration = time.monotonic() - started
    return report


def run_conformance_sync(
    host: str,
    port: int,
    *,
    only: Sequence[str] | None = None,
    skip: Sequence[str] | None = None,
    legacy: bool = False,
    options: HarnessOptions | None = None,
    on_result: ResultCallback | None = None,
    on_start: StartCallback | None = None,
) -> Report:
    """:func:`run_conformance` in its own event loop (not from inside a running loop)."""
    return asyncio.run(
        run_conformance(
            host,
            port,
            only=only,
            skip=skip,
            legacy=legacy,
            options=options,
            on_result=on_result,
            on_start=on_start,
        )
    )
