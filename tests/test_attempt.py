"""p2psc.core.attempt: how both peer cores (version 1 and the legacy one) end a failed attempt."""

from __future__ import annotations

from p2psc.core.attempt import failed_state, restore_error
from p2psc.errors import HandshakeTimeout, P2pscError, PeerUnreachable
from p2psc.legacy.machines import LegacyPeerMachine
from p2psc.machines.compiler import compile_machine
from p2psc.machines.handshake import Registration


def test_a_declared_failure_event_is_taken_else_failed() -> None:
    legacy = compile_machine(LegacyPeerMachine)
    assert failed_state(legacy, "awaiting_pairing", "malformed") == "failed"  # declared
    assert failed_state(legacy, "connecting_mediator", "malformed") == "failed"  # not declared
    registration = compile_machine(Registration)
    for state in registration.states:
        for event in ("malformed", "timeout", "lost"):
            target = failed_state(registration, state, event)
            if registration.allows(state, event):
                assert target == registration.step(state, event).target
            else:
                assert target == "failed"


def test_a_snapshot_error_comes_back_as_its_class() -> None:
    error = restore_error("PeerUnreachable", "no route", 7)
    assert type(error) is PeerUnreachable and error.reason == "no route" and error.code == 7
    assert type(restore_error("HandshakeTimeout", "late")) is HandshakeTimeout
    unknown = restore_error("NoSuchError", "what")
    assert type(unknown) is P2pscError and unknown.reason == "what" and unknown.code is None
