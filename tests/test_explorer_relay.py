"""The relay model (issue 14; spec/properties.md section 3d): path agreement over every
interleaving, with resets, late deliveries and a relay that bridges the two paths; the relay is
the real :class:`p2psc.core.relay.RelayCore` (issue 16: its machine is covered by the model)."""

from __future__ import annotations

from typing import Any

import pytest
from p2psc.models.explorer import Result, explore
from p2psc.models.relay_model import RelayModel, build

import p2psc.core.relay as relay_module
from p2psc.core.io import Send
from p2psc.core.relay import RelayCore


def _taken(result: Result[object], machine: str) -> set[str]:
    coverage = result.coverage
    assert coverage is not None
    return {
        str(t) for t in coverage.tables[machine].transitions if t.index in coverage.taken[machine]
    }


@pytest.mark.parametrize("faults", [0, 1, 2])
@pytest.mark.parametrize("evil", [False, True], ids=["honest-relay", "bridging-relay"])
def test_both_sides_always_end_on_the_same_path(faults: int, evil: bool) -> None:
    result = explore(build(faults=faults, evil=evil))
    assert result.ok, result.violation
    assert result.terminals > 0


@pytest.mark.parametrize(
    "options",
    [{"garbage": True}, {"shutdown": True}, {"limits": True}, {"limits": True, "faults": 0}],
    ids=["garbage", "shutdown", "limits", "limits-no-fault"],
)
def test_the_relays_adversities_never_split_the_sides(options: dict[str, object]) -> None:
    result = explore(build(**{"faults": 1, **options}))  # type: ignore[arg-type]
    assert result.ok, result.violation
    assert result.terminals > 0


def test_the_model_reaches_both_paths() -> None:
    """The check is not vacuous: some runs end direct, some relayed."""
    result = explore(build(faults=0))
    assert result.ok
    taken = _taken(result, "Rendezvous")
    assert "punching --confirmed--> established" in taken
    assert "relaying --confirmed [relayed_path]--> relayed" in taken


def test_the_relay_is_the_real_relay_core(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Relay actor is RelayCore rebuilt from its snapshot: a broken core breaks the model
    (here: a relay that splices but never tells the legs, so a run without faults where no
    direct path forms ends with neither side established: R3)."""
    assert "RelaySession" in build().coverage().tables
    real = RelayCore._splice

    def mute(self: RelayCore, *args: Any) -> list[Any]:
        return [a for a in real(self, *args) if not isinstance(a, Send)]

    monkeypatch.setattr(RelayCore, "_splice", mute)
    result = explore(build(faults=0))
    assert result.violation is not None
    assert result.violation.message.startswith("R3")


def test_a_stranger_at_the_relay_does_not_stop_the_pair() -> None:
    """With ``garbage``, a stranger who names the Client's keys and pairing is refused (it
    cannot open the challenge), and R3 is still checked in runs where the stranger is the only
    adversity: both sides connect."""
    model = build(faults=1, garbage=True)
    result = explore(model)
    assert result.ok, result.violation
    taken = _taken(result, "RelaySession")
    assert "challenged --response [!nonce_matches]--> closed" in taken
    assert "awaiting_request --timeout--> closed" in taken  # the silent stranger
    assert relay_module.TABLE.__class__.__name__ == "MachineTable"  # the patch was undone


def test_a_relay_that_skips_the_challenge_check_lets_the_stranger_break_r3(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """R3 is really checked with the stranger present: a relay that accepts any RelayResponse
    takes the stranger for the Client, and its leg replaces the Client's waiting one (the
    Client gets DUPLICATE_REGISTRATION), in a run with no fault."""
    monkeypatch.setattr(relay_module, "nonces_equal", lambda a, b: True)
    result = explore(RelayModel(faults=1, garbage=True))
    assert result.violation is not None
    assert result.violation.message.startswith("R3")
    assert any(step.actor == "Stranger" for step in result.violation.steps)


def test_an_unbound_path_lets_a_bridging_relay_split_the_sides() -> None:
    result = explore(build(faults=1, mutant="path-unbound"))
    assert result.violation is not None
    assert result.violation.message.startswith("R1")


def test_the_cli_passes_the_relay_options_and_refuses_the_others(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from p2psc.cli import main

    args = ["explore", "relay", "--relay-faults", "1", "--shutdown", "--quiet"]
    assert main(args) == 0
    assert "relay (faults 1, shutdown): OK" in capsys.readouterr().out
    for wrong in ("--faults", "--keepalive", "--mixed-sets"):
        with pytest.raises(SystemExit) as exit_info:
            main(["explore", "relay", wrong])
        assert exit_info.value.code == 2
    assert "the relay model takes" in capsys.readouterr().err
