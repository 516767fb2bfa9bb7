"""The resolutions of spec/mediator.md that the harness cannot observe from outside (they need
a configuration or a load it cannot assume), checked directly on our core: each test names the
spec paragraph it checks and would fail without the behaviour.

(What the harness can observe is checked by its scenarios, against our core in
``tests/test_conformance.py`` and against a second implementation in
``tests/test_conformance_mini.py``.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from mediator_helpers import Driver, abort_code, closed, messages, sym_answer, sym_key

from p2psc import wire
from p2psc.core.io import Action, Close, Closed, Opened, Received, Send, TimerFired
from p2psc.core.mediator import MediatorConfig
from p2psc.errors import ProtocolError
from p2psc.legacy import codec
from p2psc.legacy.crypto import RsaKeypair, decrypt_nonce
from p2psc.legacy.mediator import LegacyAwareMediatorCore

R = wire.Reason
ROOT = Path(__file__).resolve().parent.parent


def test_limits_allow_exactly_n() -> None:
    """§6 "A limit of N admits N": N unverified connections are held; the (N+1)th is admitted
    by evicting the oldest unverified one (§6.1), so the count never exceeds N. The waiting
    limit refuses the (N+1)th registration."""
    d = Driver(MediatorConfig(max_pending=2), symbolic=True)
    assert closed(d.open(1, ("10.0.0.1", 1))) == []
    assert closed(d.open(2, ("10.0.0.2", 1))) == []
    actions = d.open(3, ("10.0.0.3", 1))
    assert closed(actions) == [1] and abort_code(actions, 1) == R.BUSY
    assert abort_code(actions, 3) is None and d.core.pending == 2
    d = Driver(MediatorConfig(max_waiting=2), symbolic=True)
    d.register_symbolic(1, sym_key(1), sym_key(9))
    d.register_symbolic(2, sym_key(2), sym_key(9))
    assert d.core.waiting == 2
    assert abort_code(d.register_symbolic(3, sym_key(3), sym_key(9)), 3) == R.BUSY


def test_a_replacing_registration_is_not_refused_by_the_waiting_limit() -> None:
    """§5/§6: replacing an identical waiting registration does not grow the registry, so a
    full registry does not refuse it (newer-wins must work exactly when it is needed)."""
    d = Driver(MediatorConfig(max_waiting=1, max_waiting_per_ip=1), symbolic=True)
    same = ("10.0.0.7", 1)
    d.register_symbolic(1, sym_key(1), sym_key(2), remote=same)
    actions = d.register_symbolic(2, sym_key(1), sym_key(2), remote=("10.0.0.7", 2))
    assert abort_code(actions, 1) == R.DUPLICATE_REGISTRATION and 1 in closed(actions)
    assert abort_code(actions, 2) is None and d.core.state_of(2) == "waiting"
    # a different pair is refused: that one would grow the registry
    assert abort_code(d.register_symbolic(3, sym_key(3), sym_key(2)), 3) == R.BUSY


def test_ipv6_sources_are_counted_per_64() -> None:
    """§6: per-address limits count an IPv6 source by its /64 prefix (a host gets a whole /64
    for free); IPv4 addresses one by one, IPv4-mapped addresses as the IPv4 address. Over the
    per-source limit, that source's oldest unverified connection makes room (§6.1)."""
    d = Driver(MediatorConfig(max_pending_per_ip=2), symbolic=True)
    assert closed(d.open(1, ("2001:db8:1:2::1", 1))) == []
    assert closed(d.open(2, ("2001:db8:1:2:ffff::9", 1))) == []
    assert closed(d.open(3, ("2001:db8:1:2::abcd", 1))) == [1]  # same /64: its oldest goes
    assert closed(d.open(4, ("2001:db8:1:3::1", 1))) == []  # another /64
    assert closed(d.open(5, ("192.0.2.1", 1))) == []
    assert closed(d.open(6, ("192.0.2.2", 1))) == []
    assert closed(d.open(7, ("192.0.2.3", 1))) == []  # IPv4: per address
    # IPv4-mapped addresses (an adapter that does not unmap them) count per IPv4 address
    assert closed(d.open(9, ("::ffff:198.51.100.1", 1))) == []
    assert closed(d.open(10, ("::ffff:198.51.100.2", 1))) == []
    assert closed(d.open(12, ("198.51.100.1", 2))) == []
    assert closed(d.open(13, ("198.51.100.1", 3))) == [9]  # the same IPv4 source as conn 9


def test_shutdown_aborts_sessions_and_retries_late_arrivals() -> None:
    """§7 Shutdown: open sessions get AdvertiseAbort(SHUTTING_DOWN), a connection still
    accepted afterwards AdvertiseRetry(SHUTTING_DOWN); both are closed."""
    d = Driver(symbolic=True)
    d.register_symbolic(1, sym_key(1), sym_key(2))
    actions = d.core.shutdown(d.now)
    [abort] = messages(actions, 1)
    assert isinstance(abort, wire.AdvertiseAbort) and abort.code == R.SHUTTING_DOWN
    actions = d.open(2, ("10.0.0.2", 1))
    [retry] = messages(actions, 2)
    assert isinstance(retry, wire.AdvertiseRetry) and retry.code == R.SHUTTING_DOWN
    assert 2 in closed(actions) and d.core.sessions == 0


def test_bytes_behind_the_response_are_refused_before_pairing() -> None:
    """§3 step 3: the innocent waiting Client keeps waiting; nothing is paired."""
    d = Driver(symbolic=True)
    d.register_symbolic(1, sym_key(1), sym_key(2))
    challenge = d.advertise(2, sym_key(2), sym_key(1))
    actions = d.send(2, wire.AdvertiseResponse(sym_answer(challenge)).encode() + b"\x00")
    assert abort_code(actions, 2) == R.MALFORMED and closed(actions) == [2]
    assert messages(actions, 1) == [] and d.core.state_of(1) == "waiting"


def test_the_advertise_version_field_comes_before_its_layout() -> None:
    """§3 step 2.1: a future Advertise of another size gets UNSUPPORTED_VERSION."""
    d = Driver(symbolic=True)
    d.open(1, ("10.0.0.1", 1))
    payload = bytes((2,)) + sym_key(1) + sym_key(2) + bytes(11)
    actions = d.send(1, wire.MAGIC + bytes((1, 0)) + len(payload).to_bytes(2, "big") + payload)
    assert abort_code(actions, 1) == R.UNSUPPORTED_VERSION


def test_the_1025_byte_reason_vector_as_protocol_md_states_it() -> None:
    """protocol.md §9 states the long vector in full in its own text (frames.json is only a
    copy): rebuilt from that text it is the file's vector, and it decodes to an error."""
    text = (ROOT / "spec" / "protocol.md").read_text(encoding="utf-8")
    row = re.search(
        r"^\| reason text of 1025 bytes \| `([0-9a-f]+)` then (\d+) bytes `([0-9a-f]{2})` "
        r"\((\d+) bytes in all\) \| ProtocolError \|$",
        text,
        re.MULTILINE,
    )
    assert row is not None
    frame = bytes.fromhex(row[1]) + bytes.fromhex(row[3]) * int(row[2])
    assert len(frame) == int(row[4]) == 1035
    vectors = json.loads((ROOT / "tests" / "vectors" / "frames.json").read_text())
    [vector] = [v for v in vectors["invalid_frames"] if v["name"] == "reason text of 1025 bytes"]
    assert frame.hex() == vector["hex"]
    with pytest.raises(ProtocolError):
        wire.decode(frame)


@pytest.fixture(scope="module")
def rsa_keys() -> list[RsaKeypair]:
    return [RsaKeypair.generate() for _ in range(2)]


def _legacy_register(
    core: LegacyAwareMediatorCore, conn: int, me: RsaKeypair, them: RsaKeypair
) -> list[Action]:
    core.handle(Opened(conn, ("127.0.0.1", 40000 + conn)), 0.0)
    advertise = codec.Advertise(0, me.public_key.to_wire(), them.public_key.to_wire())
    [challenge] = [
        codec.decode(a.data)
        for a in core.handle(Received(conn, codec.encode(advertise)), 0.0)
        if isinstance(a, Send)
    ]
    assert isinstance(challenge, codec.AdvertiseChallenge)
    nonce = decrypt_nonce(me, challenge.encrypted_nonce)
    return core.handle(Received(conn, codec.encode(codec.AdvertiseResponse(nonce))), 0.0)


def test_an_adapter_echoing_the_cores_own_close_changes_nothing(
    rsa_keys: list[RsaKeypair],
) -> None:
    """The embedding side of issue 22's fourth miss: an adapter that reports the close of the
    version 0 Peer socket the core closed itself (or delivers anything more on it) must not
    count as the Peer's confirmation: the Client is introduced by the introduce timer only."""
    core = LegacyAwareMediatorCore(introduce_delay=0.5)
    a, b = rsa_keys
    _legacy_register(core, 1, a, b)
    actions = _legacy_register(core, 2, b, a)
    closes = [x for x in actions if isinstance(x, Close)]
    assert [(x.conn, x.reason) for x in closes] == [
        (2, "legacy: closed after PeerDisconnect so the Peer can bind its port")
    ]
    assert closes[0].fin_with_send  # the FIN travels with PeerDisconnect (legacy.md §3)
    assert core.handle(Closed(2, None), 0.01) == []
    assert core.handle(Closed(2, "reset"), 0.02) == []
    assert core.handle(Received(2, b"{}"), 0.03) == []
    assert core.handle(TimerFired(2), 0.04) == []
    actions = core.handle(TimerFired(1), 0.5)
    sends = [codec.decode(x.data) for x in actions if isinstance(x, Send) and x.conn == 1]
    assert sends == [codec.PeerIdentification(0, "127.0.0.1", 40002)]
    assert core.sessions == 0
