"""NegotiatorRun: the sans-IO bookkeeping both negotiator runners (asyncio, trio) share."""

from __future__ import annotations

import pytest
from negotiator_helpers import exchange

from p2psc.core.negotiator import Negotiated, Negotiator, ProtocolSpec, Sleep
from p2psc.core.negotiator_run import NegotiatorRun
from p2psc.errors import NegotiationError, NegotiationTimeout, P2pscError


def negotiator(initiate: bool = False) -> Negotiator:
    spec = ProtocolSpec(1, "chat", priority=1, wants_to_initiate=lambda: initiate)
    return Negotiator([spec], keepalive_interval=2.5)


def test_arguments_are_checked_before_anything_runs() -> None:
    with pytest.raises(ValueError, match="no handler for protocol"):
        NegotiatorRun(negotiator(), [], reply_timeout=1.0, max_rounds=None)
    with pytest.raises(ValueError, match="reply_timeout"):
        NegotiatorRun(negotiator(), ["chat"], reply_timeout=0.0, max_rounds=None)


def test_rounds_are_counted_and_the_last_one_does_not_sleep() -> None:
    a, b = negotiator(initiate=True), negotiator()
    run = NegotiatorRun(a, ["chat"], reply_timeout=1.0, max_rounds=2)
    outcome, _ = exchange(a, b)
    assert isinstance(outcome, Negotiated)
    assert run.record(outcome) is None  # run the protocol, no sleep
    idle_a, idle_b = negotiator(), negotiator()
    run_idle = NegotiatorRun(idle_a, ["chat"], reply_timeout=1.0, max_rounds=2)
    sleep, _ = exchange(idle_a, idle_b)
    assert isinstance(sleep, Sleep)
    assert run_idle.next_round(stopping=False)
    assert run_idle.record(sleep) == 2.5  # sleep, then another round
    assert run_idle.next_round(stopping=False)
    assert run_idle.record(sleep) is None  # the last round: no sleep
    assert not run_idle.next_round(stopping=False)
    assert run.result.protocols_run == {"chat": 1} and run.result.rounds == 1
    assert run_idle.result.rounds == 2 and run_idle.result.idle_rounds == 2
    assert run_idle.result.reason == "2 rounds done" and run_idle.result.error is None
    assert not run.next_round(stopping=True) and run.result.reason == "stopped"


def test_deadlines_and_failures_reach_the_negotiator_with_their_texts() -> None:
    run = NegotiatorRun(negotiator(), ["chat"], reply_timeout=0.5, max_rounds=None)
    run.negotiator.start_round()
    error = run.no_byte()
    assert isinstance(error, NegotiationTimeout) and "no byte within 0.5s" in error.reason
    assert run.negotiator.state == "Failed"
    assert "negotiator closing the connection" in run.failed(error)
    assert run.result.error is error

    run = NegotiatorRun(negotiator(), ["chat"], reply_timeout=0.5, max_rounds=None)
    assert "did not read our bytes within 0.5s" in run.not_read().reason
    run = NegotiatorRun(negotiator(), ["chat"], reply_timeout=0.5, max_rounds=None)
    assert run.failed(P2pscError("cut")).startswith("protocol failed")
    assert run.negotiator.state == "Failed" and not isinstance(run.result.error, NegotiationError)
    run = NegotiatorRun(negotiator(), ["chat"], reply_timeout=0.5, max_rounds=None)
    assert "peer closed the connection (EOF)" in run.peer_gone("EOF")
    assert run.result.error is None
