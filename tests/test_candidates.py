"""Several candidates (issue 13; spec/protocol.md 3.4 and "Candidates").

The extension area of Advertise, PeerDisconnect and PeerIdentification (strict, bounded, unknown
types kept and ignored), the CANDIDATES item, the Mediator forwarding each side's candidates to
the other, the peer advertising its other usable addresses and dialling them in order, and the
socket helpers that let one attempt dial and listen on both families.
"""

from __future__ import annotations

import socket

import pytest

from p2psc import wire
from p2psc.core.io import Opened, Received
from p2psc.core.mediator import MediatorConfig
from p2psc.core.peer import (
    MAX_TARGETS,
    MEDIATOR_BASE,
    PeerCore,
    advertised_candidates,
    target_order,
)
from p2psc.core.peer_driver import _pair
from p2psc.errors import ProtocolError, UnusableAddress
from p2psc.interfaces import local_addresses, usable
from p2psc.sockets import listener_for, source_host
from tests.mediator_helpers import Driver, messages, sym_answer, sym_key
from tests.test_peer_core import A_KEY, B_KEY, PID, Side, config, failed, sends

V4 = wire.Address("192.0.2.7", 4000)
V6 = wire.Address("2001:db8::7", 4000)
CANDS = wire.candidates_extension([V4, V6])
PID16 = bytes(range(16))

# --------------------------------------------------------------------------- the wire


@pytest.mark.parametrize(
    "msg",
    [
        wire.Advertise(1, bytes(32), bytes(range(32)), None, CANDS),
        wire.PeerDisconnect(PID16, V4, V4, None, CANDS),
        wire.PeerIdentification(1, PID16, V6, V4, CANDS),
    ],
    ids=lambda m: type(m).__name__,
)
def test_candidates_round_trip_on_both_paths(msg: wire.Message) -> None:
    frame = msg.encode()
    assert wire.decode(frame) == msg
    assert wire.construct_decode(frame) == msg
    assert wire.construct_decode(frame, compiled=False) == msg
    assert wire.construct_encode(msg) == frame
    assert msg.candidates == (V4, V6)  # type: ignore[union-attr]


def test_without_extensions_the_bytes_are_those_of_before() -> None:
    plain = wire.PeerIdentification(1, PID16, V4, None)
    assert plain.encode() == wire.PeerIdentification(1, PID16, V4, None, ()).encode()
    assert plain.candidates == ()


def test_an_unknown_extension_type_is_kept_and_ignored() -> None:
    extensions = ((1, CANDS[0][1]), (200, b"later"))
    msg = wire.PeerDisconnect(PID16, V4, V4, None, extensions)
    decoded = wire.decode(msg.encode())
    assert isinstance(decoded, wire.PeerDisconnect)
    assert decoded.extensions == extensions and decoded.candidates == (V4, V6)


def _pi_with(area: bytes) -> bytes:
    payload = wire.PeerIdentification(1, PID16, V4, None).payload() + area
    return wire.MAGIC + bytes((1, 6)) + len(payload).to_bytes(2, "big") + payload


@pytest.mark.parametrize(
    ("area", "reason"),
    [
        (b"\x01", "1 trailing bytes after the last field"),
        (b"\x00\x00", "type 0 is reserved"),
        (b"\x05\x00\x03\x00", "strictly increasing"),
        (b"\x05\x00\x05\x00", "strictly increasing"),
        (b"\x05\x03ab", "announces 3 bytes, 2 remain"),
        (b"\x05\x00\x06", "ends inside an extension header"),
        (b"".join(bytes((k, 0)) for k in range(10, 19)), "9 items, at most 8"),
        (b"\x01\x00", "0 candidates"),
        (b"\x01\x07\x05" + bytes(6), "unknown family 5"),
        (b"\x01\x07\x04\xc0\x00\x02\x01\x00\x00", "port 0"),
        (b"\x01\x08" + V4.packed().join([b"\x04", b"\x0f\xa0"]) + b"\x00", "candidate"),
        (b"\x01\x3f" + b"\x04\xc0\x00\x02\x01\x0f\xa0" * 9, "9 candidates"),
    ],
)
def test_a_bad_extension_area_is_refused_by_both_paths(area: bytes, reason: str) -> None:
    frame = _pi_with(area)
    with pytest.raises(ProtocolError, match=reason):
        wire.decode(frame)
    for compiled in (True, False):
        with pytest.raises(ProtocolError):
            wire.construct_decode(frame, compiled=compiled)


def test_construction_checks_the_extensions() -> None:
    with pytest.raises(ProtocolError, match="strictly increasing"):
        wire.Advertise(1, bytes(32), bytes(32), None, ((9, b""), (1, b"")))
    with pytest.raises(ProtocolError, match="pairs"):
        wire.Advertise(1, bytes(32), bytes(32), None, ((1, "x"),))  # type: ignore[arg-type]
    assert wire.candidates_extension([]) == ()


# --------------------------------------------------------------------------- the Mediator


def test_the_mediator_forwards_each_sides_candidates_to_the_other() -> None:
    d = Driver(MediatorConfig(), symbolic=True)
    a_cands = wire.candidates_extension([wire.Address("192.0.2.10", 1), V6])
    b_cands = wire.candidates_extension([wire.Address("2001:db8::20", 2)])
    for conn, our, their, ext in ((1, 1, 2, a_cands), (2, 2, 1, (*b_cands, (99, b"x")))):
        d.open(conn, (f"10.0.0.{conn}", 40000 + conn))
        advertise = wire.Advertise(1, sym_key(our), sym_key(their), None, ext)
        (challenge,) = messages(d.send(conn, advertise.encode()), conn)
        assert isinstance(challenge, wire.AdvertiseChallenge)
        actions = d.send(conn, wire.AdvertiseResponse(sym_answer(challenge)).encode())
    (disconnect,) = messages(actions, 2)
    assert isinstance(disconnect, wire.PeerDisconnect)
    assert disconnect.extensions[:1] == a_cands  # the Client's, as it sent them (then DIAL_DELAY)
    (identification,) = messages(d.close(2), 1)
    assert isinstance(identification, wire.PeerIdentification)
    assert identification.extensions == b_cands  # the Peer's; the unknown item stays behind


# --------------------------------------------------------------------------- the peer


def test_advertised_candidates_skip_what_nobody_else_can_reach() -> None:
    hosts = ("10.1.1.1", "127.0.0.1", "fe80::1", "::", "2001:db8::5", "10.1.1.2", "junk")
    got = advertised_candidates(hosts, ("10.1.1.2", 5555))
    assert got == [wire.Address("10.1.1.1", 5555), wire.Address("2001:db8::5", 5555)]
    many = tuple(f"10.9.0.{i}" for i in range(1, 20))
    assert len(advertised_candidates(many, ("10.1.1.2", 5555))) == wire.MAX_CANDIDATES


def _advertise(**options: object) -> wire.Advertise:
    side = Side(PeerCore(config(A_KEY, B_KEY, **options)), ("10.0.0.1", 40001))
    side.core.start(0.0)
    actions = side.do(Opened(MEDIATOR_BASE, ("10.9.9.9", 9999), ("10.0.0.1", 40001)))
    (advertise,) = sends(actions, MEDIATOR_BASE)
    assert isinstance(advertise, wire.Advertise)
    return advertise


def test_the_peer_advertises_its_candidates_with_its_port() -> None:
    advertise = _advertise(candidates=("10.0.0.1", "10.0.0.2", "2001:db8::1"))
    assert advertise.candidates == (
        wire.Address("10.0.0.2", 40001),
        wire.Address("2001:db8::1", 40001),
    )
    assert _advertise(candidates=("10.0.0.2",), send_local=False).candidates == ()
    assert _advertise().candidates == ()  # None (filled by the adapters) is none here


def test_targets_are_ordered_observed_local_same_family_other_family() -> None:
    observed, local = wire.Address("203.0.113.5", 1), wire.Address("10.0.0.5", 1)
    cands = (
        wire.Address("2001:db8::5", 1),
        wire.Address("10.0.0.6", 1),
        wire.Address("10.0.0.5", 1),  # = local: once
    )
    assert target_order(observed, local, cands) == (
        ("203.0.113.5", 1),
        ("10.0.0.5", 1),
        ("10.0.0.6", 1),
        ("2001:db8::5", 1),
    )
    lots = tuple(wire.Address(f"10.0.1.{i}", 1) for i in range(1, 9))
    assert len(target_order(observed, local, lots)) == MAX_TARGETS


def test_the_peer_dials_every_candidate_and_refuses_an_unusable_one() -> None:
    from p2psc.core.io import Connect
    from tests.test_peer_core import A_LOCAL, B_LOCAL, registered

    side = registered(A_KEY, B_KEY, A_LOCAL)
    cands = wire.candidates_extension([wire.Address("127.0.0.2", B_LOCAL[1])])
    introduction = wire.PeerIdentification(1, PID, wire.Address(*B_LOCAL), None, cands)
    actions = side.do(Received(MEDIATOR_BASE, introduction.encode()))
    assert [a.remote for a in actions if isinstance(a, Connect)] == [
        B_LOCAL,
        ("127.0.0.2", B_LOCAL[1]),
    ]
    # a Mediator off loopback naming a loopback candidate: refused, nothing dialled
    side = Side(PeerCore(config(A_KEY, B_KEY)), ("10.0.0.1", 40001))
    side.core.start(0.0)
    side.do(Opened(MEDIATOR_BASE, ("10.9.9.9", 9999), ("10.0.0.1", 40001)))
    side.core.state = "waiting"
    bad = wire.candidates_extension([wire.Address("127.0.0.1", 5)])
    introduction = wire.PeerIdentification(1, PID, wire.Address("10.0.0.2", 5), None, bad)
    error = failed(side.do(Received(MEDIATOR_BASE, introduction.encode())))
    assert isinstance(error, UnusableAddress) and "127.0.0.1:5" in error.reason


# --------------------------------------------------------------------------- sockets


def test_source_host_binds_the_mediator_address_or_the_other_familys_wildcard() -> None:
    assert source_host(socket.AF_INET, "10.0.0.1") == "10.0.0.1"
    assert source_host(socket.AF_INET6, "10.0.0.1") == "::"
    assert source_host(socket.AF_INET, "2001:db8::1") == "0.0.0.0"
    assert source_host(socket.AF_INET, None) == "0.0.0.0"
    # towards a host the route reaches from this very address: that address
    assert source_host(socket.AF_INET, "127.0.0.1", "127.0.0.1") == "127.0.0.1"


def test_the_listener_takes_both_families_on_one_port() -> None:
    listener = listener_for("127.0.0.1", 0)
    port = listener.getsockname()[1]
    try:
        seen = []
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            with socket.socket(family, socket.SOCK_STREAM) as client:
                client.settimeout(2)
                try:
                    client.connect((host, port))
                except OSError:
                    if family == socket.AF_INET6:
                        pytest.skip("no IPv6 loopback here")
                    raise
                listener.setblocking(True)
                listener.settimeout(2)
                conn, remote = listener.accept()
                conn.close()
                seen.append(_pair((remote[0], remote[1]))[0])
        assert seen == ["127.0.0.1", "::1"]  # the IPv4 one not as ::ffff:127.0.0.1
    finally:
        listener.close()


def test_local_addresses_are_usable_and_bounded() -> None:
    found = local_addresses()
    assert len(found) <= wire.MAX_CANDIDATES + 1
    assert all(usable(host) for host in found)
    assert not usable("127.0.0.1") and not usable("fe80::1") and usable("2001:db8::1")
