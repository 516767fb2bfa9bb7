"""Coverage of the declared machines by the explorer's models (issue 16).

Every declared transition of every machine is either taken by one of the configurations of
:data:`models.coverage.CONFIGURATIONS` (the catalogue names the first one that takes it, and
this file checks that it really does) or listed in :data:`models.coverage.NOT_MODELLED` with the
reason no model takes it and a test that exercises it instead (checked to exist).
``p2psc explore --coverage-fail-under PCT`` turns a coverage drop into exit status 1.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from p2psc.models.coverage import (
    CONFIGURATIONS,
    EXCLUDED_MACHINES,
    NOT_MODELLED,
    TAKEN_BY,
    build_configuration,
    declared_transitions,
    unaccounted,
    where,
)
from p2psc.models.explorer import explore
from p2psc.models.negotiator_model import NegotiatorPairModel

from p2psc.cli import main
from p2psc.machines import machine_classes
from p2psc.machines.channel import ChannelMachine
from p2psc.machines.compiler import compile_machine
from p2psc.machines.handshake import ClientCandidate, PeerCandidate, Registration, Rendezvous
from p2psc.machines.mediator import MediatorSession
from p2psc.machines.negotiator import NegotiatorMachine
from p2psc.machines.relay import RelayLeg, RelaySession

MACHINES = (NegotiatorMachine, MediatorSession, Registration, Rendezvous)
MACHINES += (ClientCandidate, PeerCandidate, ChannelMachine, RelayLeg, RelaySession)


def test_the_catalogue_accounts_for_every_declared_transition_once() -> None:
    problem = unaccounted()
    assert problem is None, problem
    declared = declared_transitions()
    assert set(TAKEN_BY) | set(NOT_MODELLED) == declared
    for machine in MACHINES:  # the machines the models run are all in (none excluded)
        assert compile_machine(machine).name not in EXCLUDED_MACHINES


def test_every_registered_machine_is_in_the_catalogue_or_excluded_with_a_reason() -> None:
    names = set(machine_classes())
    assert set(EXCLUDED_MACHINES) <= names
    assert all(reason for reason in EXCLUDED_MACHINES.values())
    covered = {machine for machine, _ in declared_transitions()}
    assert covered | set(EXCLUDED_MACHINES) == names


def test_an_unaccounted_transition_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine someone declares (or a transition someone adds) without catalogue entries
    is named, with what to do about it."""
    entry = ("ChannelMachine", "both_closed --bad_record--> failed")
    monkeypatch.delitem(TAKEN_BY, entry)
    monkeypatch.setitem(TAKEN_BY, ("ChannelMachine", "open --renamed--> failed"), "nowhere")
    problem = unaccounted()
    assert problem is not None
    assert "does not account for" in problem and "ChannelMachine: both_closed" in problem
    assert "name no declared transition" in problem and "open --renamed--> failed" in problem
    assert "CONFIGURATIONS lacks: ['nowhere']" in problem


def test_every_not_modelled_transition_names_a_test_that_exists() -> None:
    for (machine, transition), (reason, test) in NOT_MODELLED.items():
        assert reason, (machine, transition)
        path, _, name = test.partition("::")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert callable(getattr(module, name, None)), f"{test} does not exist"


def test_where_names_the_configuration_or_the_reason() -> None:
    label = TAKEN_BY[("Registration", "backing_off --retry_due--> connecting_mediator")]
    assert where("Registration", "backing_off --retry_due--> connecting_mediator") == (
        f"taken by `p2psc explore {label}`"
    )
    hint = where("Rendezvous", "punching --listen_failed--> failed")
    assert hint is not None and hint.startswith("not modelled:") and "tests/" in hint
    assert where("Nope", "a --b--> c") is None


@pytest.mark.slow
def test_each_configuration_takes_what_the_catalogue_says() -> None:
    """Explore every configuration: the first one to take each transition is the one named."""
    first: dict[tuple[str, str], str] = {}
    for label in CONFIGURATIONS:
        model = build_configuration(label)
        result = explore(model)
        assert result.ok, label
        coverage = result.coverage
        assert coverage is not None
        for machine, table in coverage.tables.items():
            for transition in table.transitions:
                if transition.index in coverage.taken[machine]:
                    first.setdefault((machine, str(transition)), label)
    assert first == TAKEN_BY
    assert not set(first) & set(NOT_MODELLED)


def test_received_initiate_is_never_at_rest() -> None:
    """Why `ReceivedInitiate --fail--> Failed` is not taken: no side is ever found there
    between two events, in any configuration (faults and mixed sets included)."""
    for options in ({"faults": True}, {"mixed_sets": True}):
        model = NegotiatorPairModel(protocols=2, rounds=2, **options)
        assert explore(model).ok
        names = {snapshot[0] for _, snapshot in model._sides.values}
        assert "Sleep" in names and "WaitForAcceptReject" in names  # the check sees states
        assert "ReceivedInitiate" not in names


def _explore(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str]:
    status = main(["explore", *args, "--quiet"])
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def test_coverage_fail_under_sets_the_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    status, out = _explore(capsys, "mediation", "--peers", "2", "--coverage-fail-under", "15")
    assert status == 0, out
    percent = float(out.split("transitions taken (")[1].split("%")[0])
    assert 15 < percent < 40  # 23 of 131 (the relay's transitions are the relay model's)
    status, out = _explore(capsys, "mediation", "--peers", "2", "--coverage-fail-under", "40")
    assert status == 1
    assert "under --coverage-fail-under 40%" in out
    assert "(taken by `p2psc explore mediation --peers 2 --garbage`)" in out


def test_coverage_fail_under_on_the_ci_configurations(capsys: pytest.CaptureFixture[str]) -> None:
    """What CI runs: the richest two-peer configuration keeps at least 55% (78 of 131; the
    relay's 11 Rendezvous transitions and RelayLeg are the relay model's, spec/relay.md)."""
    args = ("mediation", "--peers", "2", "--faults", "--limits", "--keepalive", "--coordinate")
    args += ("--coverage-fail-under", "55")
    status, out = _explore(capsys, *args)
    assert status == 0, out
    status, out = _explore(capsys, "negotiator", "--protocols", "2", "--coverage-fail-under", "95")
    assert status == 1
    args = ("channel", "--adversary-budget", "1", "--coverage-fail-under", "100")
    status, out = _explore(capsys, *args)
    assert status == 0, out
    status, out = _explore(
        capsys, "channel", "--adversary-budget", "0", "--coverage-fail-under", "60"
    )
    assert status == 1, out
    # the relay model with the real RelayCore: 59 of its 80 (RelaySession included)
    args = ("relay", "--relay-faults", "1", "--garbage", "--coverage-fail-under", "70")
    status, out = _explore(capsys, *args)
    assert status == 0, out
    status, out = _explore(capsys, "relay", "--relay-faults", "0", "--coverage-fail-under", "70")
    assert status == 1, out
    assert "RelaySession: awaiting_request --timeout--> closed" in out
    assert "(taken by `p2psc explore relay --relay-faults 1 --limits`)" in out


@pytest.mark.parametrize("bad", ["-1", "101", "x"])
def test_coverage_fail_under_refuses_a_bad_percentage(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["explore", "negotiator", "--coverage-fail-under", bad])
    assert exit_info.value.code == 2


def test_mediation_only_options_are_refused_for_the_negotiator(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for option in ("--limits", "--garbage", "--shutdown"):
        with pytest.raises(SystemExit) as exit_info:
            main(["explore", "negotiator", option])
        assert exit_info.value.code == 2
