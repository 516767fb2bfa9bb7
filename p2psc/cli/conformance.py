"""``p2psc conformance HOST:PORT``: test any running Mediator against spec/mediator.md.

The harness plays every client itself (fresh keys, raw frames) and runs a suite of scenarios
against the mediator at HOST:PORT, then prints one line per scenario (PASS, FAIL, ERROR, WARN or
SKIP, the spec section it checks) and, for each failure, what was expected, what was observed
and the frames exchanged.

Required scenarios check a MUST of the specification; recommended ones check a SHOULD, a reason
code, or how late a deadline fires. Deadlines are named as in spec/mediator.md §6 and the
harness must be told their values (--advertise-timeout, --response-timeout, --confirm-timeout,
and --introduce-delay of spec/legacy.md; 0 skips the scenarios that need one): a deadline
that fires before its configured value fails a required scenario; one that fires more than
--late after it, a recommended one. --verbose shows the transcript of passing scenarios too.

Exit status: 0 when every required scenario passed (failed recommended ones are warnings, and
the verdict reads "CONFORMS (N warnings)"), 1 when one did not, 2 when the harness could not
run at all (bad options, mediator unreachable).

It opens many connections to HOST:PORT (up to ~20 per scenario, --jobs scenarios at a time),
registers throwaway keys and sends deliberately broken input: point it at a mediator you run,
not at someone else's. A run takes a few seconds plus the longest configured deadline it waits
for (10 s by default; lower them on a test mediator, or skip them).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import ssl
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from p2psc.errors import ConformanceError

if TYPE_CHECKING:
    from p2psc.conformance.report import Report, ScenarioResult
    from p2psc.conformance.scenario import Scenario

__all__ = ["register"]


def _seconds(text: str) -> float:
    """argparse type: a finite number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text!r}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def _jobs(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return int(text)


def _list(args: argparse.Namespace) -> int:
    from p2psc.conformance.runner import select

    scenarios = select(args.only, args.skip, legacy=args.legacy)
    width = max(len(s.name) for s in scenarios)
    for scenario in scenarios:
        print(
            f"{scenario.name:<{width}}  {scenario.level.value:<11}  "
            f"{scenario.section.short:<20}  {scenario.summary}"
        )
    print(
        f"\n{len(scenarios)} scenarios; required ones must pass, recommended ones only warn. "
        "Sections: spec/<document>#<anchor> in the report."
    )
    return 0


def _write(path: str, text: str, what: str) -> None:
    if path == "-":
        sys.stdout.write(text)
        return
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as error:
        raise ConformanceError(f"cannot write the {what} to {path}: {error.strerror}") from None


def _run(args: argparse.Namespace) -> int:
    # Imported here so that `p2psc --help` does not load the harness.
    from p2psc.conformance.context import HarnessOptions
    from p2psc.conformance.runner import parse_target, run_conformance, select

    try:
        if args.list:
            return _list(args)
        if args.target is None:
            raise ConformanceError("name the mediator to test: p2psc conformance HOST:PORT")
        host, port = parse_target(args.target)
        also = parse_target(args.also) if args.also else None
        if args.json == "-" and args.junit == "-":
            raise ConformanceError("only one of --json and --junit can write to stdout ('-')")
        options = HarnessOptions(
            timeout=args.timeout,
            quiet=args.silence,
            advertise_timeout=args.advertise_timeout or None,
            response_timeout=args.response_timeout or None,
            confirm_timeout=args.confirm_timeout or None,
            introduce_delay=args.introduce_delay or None,
            late=args.late,
            nat=args.nat,
            jobs=args.jobs,
            tls=_tls_context(args),
            also=also,
        )
        # With a machine-readable report on stdout, the human one goes to stderr.
        out: TextIO = sys.stderr if "-" in (args.json, args.junit) else sys.stdout
        width = max(len(s.name) for s in select(args.only, args.skip, legacy=args.legacy))

        def start(scenarios: list[Scenario]) -> None:
            print(
                f"p2psc conformance: {len(scenarios)} scenarios against {args.target}"
                + (" (version 1 and version 0)" if args.legacy else " (version 1)"),
                file=out,
                flush=True,
            )

        def progress(result: ScenarioResult) -> None:
            print(result.line(width), file=out, flush=True)
            if args.verbose and result.passed:
                print(result.details(verbose=True), file=out, flush=True)

        report: Report = asyncio.run(
            run_conformance(
                host,
                port,
                only=args.only,
                skip=args.skip,
                legacy=args.legacy,
                options=options,
                on_result=progress,
                on_start=start,
            )
        )
        print(report.format_details(), file=out)  # the per-scenario lines were streamed
        if args.json:
            _write(args.json, report.to_json() + "\n", "JSON report")
        if args.junit:
            _write(args.junit, report.to_junit(), "JUnit report")
    except ConformanceError as error:
        print(f"p2psc conformance: error: {error.reason}", file=sys.stderr)
        return 2
    return 0 if report.passed else 1


def _tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """``--tls``: verify against the system store; ``--tls-insecure``: no verification."""
    if not (args.tls or args.tls_insecure):
        return None
    from p2psc.tls import client_context

    return client_context(insecure=args.tls_insecure)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "conformance",
        help="test a running Mediator (yours, any language) against spec/mediator.md",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "target", nargs="?", metavar="HOST:PORT", help="the mediator to test ([IPv6]:PORT too)"
    )
    parser.add_argument(
        "--also",
        metavar="HOST:PORT",
        help="a second instance of the same mediator fleet: the two sides of every pairing "
        "register at different instances (spec/mediator.md section 10)",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="PATTERN",
        help="run only matching scenarios (glob or substring; repeatable or comma list)",
    )
    parser.add_argument(
        "--skip", action="append", metavar="PATTERN", help="leave matching scenarios out"
    )
    parser.add_argument(
        "--list", action="store_true", help="list the scenarios (no network) and exit"
    )
    parser.add_argument(
        "--legacy",
        action="store_true",
        help="also run the version 0 (JSON/RSA, spec/legacy.md) scenarios; the version 1 "
        "scenarios run too (use --only legacy- for version 0 alone)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=5.0,
        metavar="SECONDS",
        help="wait this long for each expected message or close (default %(default)s)",
    )
    parser.add_argument(
        "--silence",
        type=_positive_seconds,
        default=0.5,
        metavar="SECONDS",
        help="listen this long to conclude that nothing arrives, e.g. while a Peer holds its "
        "connection open (default %(default)s)",
    )
    for flags, name, default in (
        (("--advertise-timeout", "--idle-timeout"), "advertise_timeout", 10.0),
        (("--response-timeout",), "response_timeout", 10.0),
        (("--confirm-timeout",), "confirm_timeout", 10.0),
        (("--introduce-delay",), "introduce_delay", 0.25),
    ):
        alias = f" ({flags[1]} is its old name)" if len(flags) > 1 else ""
        parser.add_argument(
            *flags,
            dest=name,
            type=_seconds,
            default=default,
            metavar="SECONDS",
            help=f"the mediator's {name} (default %(default)s, the spec's default); "
            f"0 skips the scenarios that wait for it{alias}",
        )
    parser.add_argument(
        "--late",
        type=_positive_seconds,
        default=1.0,
        metavar="SECONDS",
        help="how late a deadline may fire and still pass (spec/mediator.md §2: never early, "
        "a little late; default %(default)s)",
    )
    parser.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="also show what was checked and the transcript of every passing scenario",
    )
    parser.add_argument(
        "--nat",
        action="store_true",
        help="the mediator sees this host through a NAT: check observed addresses for "
        "consistency instead of against the local socket addresses",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="speak TLS to the mediator (version 1 connections), verified against the system "
        "trust store and the target's host name",
    )
    parser.add_argument(
        "--tls-insecure",
        action="store_true",
        help="--tls without any certificate verification (self-signed test mediators)",
    )
    parser.add_argument(
        "--jobs",
        type=_jobs,
        default=8,
        metavar="N",
        help="scenarios run at the same time (default %(default)s)",
    )
    parser.add_argument(
        "--json", metavar="FILE", help="also write the report as JSON ('-': stdout)"
    )
    parser.add_argument(
        "--junit", metavar="FILE", help="also write the report as JUnit XML ('-': stdout)"
    )
    parser.set_defaults(func=_run)
