"""The channel model: two real SecureChannel ends and an adversary on the wire (drops,
duplicates, reorders, replays, reflections, tampering, truncation, forged FINs), properties
C1-C4 of spec/properties.md section 3b, and its mutants."""

from __future__ import annotations

import pytest
from p2psc.models.channel_model import ChannelModel, build, snapshot_of
from p2psc.models.explorer import explore, format_report, mermaid_trace
from p2psc.models.mutants import CHANNEL_MUTANTS

from p2psc.cli import main
from p2psc.core.channel import END_OF_STREAM
from p2psc.errors import RecordTampered
from p2psc.machines.channel import ChannelMachine
from p2psc.machines.compiler import compile_machine


@pytest.mark.parametrize("budget", [0, 1, 2])
def test_the_real_channel_holds_every_property_against_the_adversary(budget: int) -> None:
    model = ChannelModel(budget=budget)
    result = explore(model)
    assert result.ok, format_report(result, model.describe)
    assert result.terminals > 0
    coverage = result.coverage
    assert coverage is not None
    declared = len(compile_machine(ChannelMachine).transitions)
    # Without an adversary only clean closes happen; one action reaches every transition.
    assert coverage.covered == (6 if budget == 0 else declared)


@pytest.mark.slow
def test_an_adversary_with_three_actions() -> None:
    model = ChannelModel(budget=3)
    result = explore(model)
    assert result.ok, format_report(result, model.describe)
    assert result.states > 100_000


def test_longer_scripts_on_both_sides() -> None:
    model = ChannelModel(budget=1, messages=(2, 2))
    result = explore(model)
    assert result.ok, format_report(result, model.describe)


@pytest.mark.parametrize("name", sorted(CHANNEL_MUTANTS))
def test_every_channel_mutant_is_caught(name: str) -> None:
    model = build(mutant=name)
    result = explore(model)
    violation = result.violation
    assert violation is not None, f"mutant {name} survived"
    assert violation.message.startswith(CHANNEL_MUTANTS[name][1]), violation.message
    assert mermaid_trace(violation, model.actors).startswith("sequenceDiagram")


def test_the_lost_record_mutant_needs_the_adversary() -> None:
    """Without an adversary action the tolerant receiver is indistinguishable (the property is
    checked against the attacks, not by accident)."""
    assert explore(build(mutant="skip-lost-record", budget=0)).ok
    assert not explore(build(mutant="skip-lost-record", budget=1)).ok


def test_a_channel_rebuilt_from_its_snapshot_behaves_the_same() -> None:
    model = ChannelModel(budget=0)
    send_key, recv_key = model.keys[0]
    peer_send, peer_recv = model.keys[1]
    from p2psc.core.channel import SecureChannel
    from p2psc.noise import CipherState

    client = SecureChannel(CipherState(send_key), CipherState(recv_key))
    peer = SecureChannel(CipherState(peer_send), CipherState(peer_recv))
    record = client.seal(b"c0")
    half = record[:5]
    assert peer.feed(half) == []
    rebuilt = model._restore(1, snapshot_of(peer))
    assert snapshot_of(rebuilt) == snapshot_of(peer)
    assert rebuilt.feed(record[5:]) == [b"c0"] == peer.feed(record[5:])
    close = client.seal_close()
    assert rebuilt.feed(close) == [END_OF_STREAM]
    assert snapshot_of(model._restore(1, snapshot_of(rebuilt)))[0] == "received_close"
    with pytest.raises(RecordTampered):
        peer.feed(close[:-1] + bytes([close[-1] ^ 1]))
    failed = model._restore(1, snapshot_of(peer))
    assert isinstance(failed.failed, RecordTampered)
    assert failed.failed.reason == peer.failed.reason  # type: ignore[union-attr]


def test_cli_runs_the_channel_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explore", "channel", "--adversary-budget", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "model channel (adversary budget 1, messages 2+1): OK" in out
    assert "coverage     12/12" in out
    assert main(["explore", "channel", "--mutant", "eof-is-close", "--quiet"]) == 1
    assert "C2:" in capsys.readouterr().out
    for bad in (["channel", "--faults"], ["channel", "--stranger-budget", "1"]):
        with pytest.raises(SystemExit):
            main(["explore", *bad])
    with pytest.raises(SystemExit):
        main(["explore", "mediation", "--adversary-budget", "2"])
