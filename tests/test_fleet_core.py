"""FleetCore without Redis: the registry's answers and the notices are fed in by hand, so lost,
duplicated, late and malformed ones can be tested one by one (spec/mediator.md section 10)."""

from __future__ import annotations

from typing import Any

from mediator_helpers import SymbolicCrypto, counting_nonces, sym_answer, sym_key

from p2psc import wire
from p2psc.core.fleet import (
    CLAIMED,
    ERROR,
    FULL,
    REGISTERED,
    FleetCore,
    Notice,
    Notify,
    RefreshAnswer,
    RegistryAnswer,
    RegistryClaim,
    RegistryRefresh,
    RegistryUnregister,
    encode_notice,
    encode_record,
)
from p2psc.core.io import Close, Closed, Opened, Received, Send, SetTimer, TimerFired
from p2psc.core.mediator import MediatorConfig

R = wire.Reason
CONFIG = MediatorConfig(confirm_timeout=5, wait_timeout=100)
HERE, THERE = "00000000000000aa", "00000000000000bb"
A, B = sym_key(1), sym_key(2)


class Instance:
    def __init__(self, instance: str = HERE) -> None:
        self.core = FleetCore(
            CONFIG, instance=instance, nonce_source=counting_nonces(), crypto=SymbolicCrypto()
        )
        self.now = 1000.0

    def run(self, event: Any) -> list[Any]:
        return self.core.handle(event, self.now)

    def fleet(self, event: Any) -> list[Any]:
        return self.core.fleet_event(event, self.now)

    def verify(self, conn: int, our: bytes, their: bytes) -> list[Any]:
        """Open, Advertise, answer the challenge: returns the actions of the response."""
        self.run(Opened(conn, (f"198.51.100.{conn}", 4000 + conn)))
        (send, _timer) = self.run(Received(conn, wire.Advertise(1, our, their, None).encode()))
        challenge = wire.decode(send.data)
        assert isinstance(challenge, wire.AdvertiseChallenge)
        return self.run(Received(conn, wire.AdvertiseResponse(sym_answer(challenge)).encode()))

    def register(self, conn: int, our: bytes, their: bytes) -> None:
        (claim,) = self.verify(conn, our, their)
        assert isinstance(claim, RegistryClaim) and claim.may_register
        actions = self.fleet(RegistryAnswer(conn, REGISTERED))
        assert [type(a) for a in actions] == [SetTimer]
        assert self.core.state_of(conn) == "waiting"


def sent(actions: list[Any], conn: int) -> list[wire.Message]:
    return [wire.decode(a.data) for a in actions if isinstance(a, Send) and a.conn == conn]


def closed(actions: list[Any]) -> list[int]:
    return [a.conn for a in actions if isinstance(a, Close)]


def peer_record(conn: int = 7) -> bytes:
    return encode_record(THERE, conn, ("203.0.113.9", 9999), wire.Address.parse("10.0.0.9:99"))


def confirmed_notice(target: int, pairing_id: bytes, peer: int = 7) -> Notice:
    return Notice(encode_notice(b"F", target, pairing_id + peer_record(peer)[1:]))


def introduced(actions: list[Any], conn: int, pairing_id: bytes) -> None:
    (identification,) = sent(actions, conn)
    assert identification == wire.PeerIdentification(
        version=1,
        pairing_id=pairing_id,
        peer=wire.Address.parse("203.0.113.9:9999"),
        peer_local=wire.Address.parse("10.0.0.9:99"),
    )
    assert closed(actions) == [conn]


# --- the Client's side --------------------------------------------------------------------


def test_confirmation_introduces_the_waiting_client_once() -> None:
    node = Instance()
    node.register(1, A, B)
    pid = bytes(range(16))
    introduced(node.fleet(confirmed_notice(1, pid)), 1, pid)
    # a duplicate confirmation finds nothing to do
    assert node.fleet(confirmed_notice(1, pid)) == []
    assert node.core.notices_ignored == 1 and node.core.sessions == 0


def test_lost_confirmation_ends_in_timeout_and_the_peer_is_told() -> None:
    """The refresh finds our tombstone (claimed): confirming with the confirm deadline; when it
    passes, TIMEOUT, and the unregister script (our tombstone names the Peer) tells the Peer."""
    node = Instance()
    node.register(1, A, B)
    node.fleet(RefreshAnswer(1, "claimed"))
    assert node.core.state_of(1) == "confirming"
    node.now += 4.9
    assert closed(node.run(TimerFired(1))) == []
    node.now += 0.2
    actions = node.run(TimerFired(1))
    (abort,) = sent(actions, 1)
    assert isinstance(abort, wire.AdvertiseAbort) and abort.code == R.TIMEOUT
    assert RegistryUnregister(1, A, B) in actions


def test_a_confirmation_after_the_refresh_found_the_claim_still_introduces() -> None:
    node = Instance()
    node.register(1, A, B)
    node.fleet(RefreshAnswer(1, "claimed"))
    pid = bytes(16)
    actions = node.fleet(confirmed_notice(1, pid))
    introduced(actions, 1, pid)
    assert not any(isinstance(a, RegistryUnregister) for a in actions)


def test_a_waiting_registration_that_ends_unregisters() -> None:
    """Its entry may already be a tombstone (claimed): the unregister script then tells the
    Peer's instance (tests/test_fleet.py checks the script against Redis)."""
    node = Instance()
    node.register(1, A, B)
    actions = node.run(Closed(1, None))
    assert RegistryUnregister(1, A, B) in actions


def test_gone_notice_to_a_waiting_registration_aborts_it() -> None:
    """Only the Peer that claimed it knows a waiting registration's id: G means its claimer
    failed, so the Client is aborted with PEER_GONE (as on one instance)."""
    node = Instance()
    node.register(1, A, B)
    actions = node.fleet(Notice(encode_notice(b"G", 1)))
    (abort,) = sent(actions, 1)
    assert isinstance(abort, wire.AdvertiseAbort) and abort.code == R.PEER_GONE
    assert closed(actions) == [1] and node.core.waiting == 0
    assert not any(isinstance(a, RegistryUnregister | Notify) for a in actions)


def test_refresh_outcomes() -> None:
    node = Instance()
    for conn in (1, 2, 3, 4):
        node.register(conn, A, sym_key(10 + conn))
    assert sorted(a.conn for a in node.core.refresh() if isinstance(a, RegistryRefresh)) == [
        1,
        2,
        3,
        4,
    ]
    assert node.fleet(RefreshAnswer(1, "kept")) == []
    node.fleet(RefreshAnswer(2, "claimed"))  # the claim notice was lost
    assert node.core.state_of(2) == "confirming"
    actions = node.fleet(RefreshAnswer(3, "replaced"))
    (abort,) = sent(actions, 3)
    assert abort.code == R.DUPLICATE_REGISTRATION  # type: ignore[union-attr]
    assert not any(isinstance(a, RegistryUnregister) for a in actions)  # not ours any more
    actions = node.fleet(RefreshAnswer(4, "lost"))
    (retry,) = sent(actions, 4)
    assert isinstance(retry, wire.AdvertiseRetry) and retry.code == R.REGISTRY_UNAVAILABLE
    assert closed(actions) == [4] and node.core.waiting == 1


def test_replaced_notice_aborts_the_older_registration() -> None:
    node = Instance()
    node.register(1, A, B)
    actions = node.fleet(Notice(encode_notice(b"D", 1)))
    assert sent(actions, 1)[0].code == R.DUPLICATE_REGISTRATION  # type: ignore[union-attr]
    assert node.core.waiting == 0


def test_malformed_and_unknown_notices_are_counted_and_ignored() -> None:
    node = Instance()
    node.register(1, A, B)
    for junk in (b"", b"C", b"Cxyz", b"Z" + bytes(40), encode_notice(b"C", 1, b"garbage")):
        assert node.fleet(Notice(junk)) == []
    assert node.core.notices_ignored == 5 and node.core.state_of(1) == "waiting"


# --- the Peer's side ----------------------------------------------------------------------


def test_claimed_answer_makes_the_peer_and_its_close_confirms_remotely() -> None:
    node = Instance()
    (_claim,) = node.verify(1, B, A)
    actions = node.fleet(RegistryAnswer(1, CLAIMED, peer_record(5)))
    (disconnect,) = sent(actions, 1)
    assert isinstance(disconnect, wire.PeerDisconnect)
    assert disconnect.client == wire.Address.parse("203.0.113.9:9999")
    actions = node.run(Closed(1, None))
    (notify,) = [a for a in actions if isinstance(a, Notify)]
    assert notify.instance == THERE
    assert notify.message.startswith(encode_notice(b"F", 5, disconnect.pairing_id))


def test_peer_failing_tells_the_clients_instance() -> None:
    node = Instance()
    node.verify(1, B, A)
    node.fleet(RegistryAnswer(1, CLAIMED, peer_record(5)))
    actions = node.run(Closed(1, "reset"))
    assert Notify(THERE, encode_notice(b"G", 5, b"8")) in actions


def test_gone_notice_aborts_the_peer_with_peer_gone() -> None:
    node = Instance()
    node.verify(1, B, A)
    node.fleet(RegistryAnswer(1, CLAIMED, peer_record(5)))
    actions = node.fleet(Notice(encode_notice(b"G", 1)))
    assert sent(actions, 1)[0].code == R.PEER_GONE  # type: ignore[union-attr]
    assert not any(isinstance(a, Notify) for a in actions)  # never echoed back
    assert node.fleet(Notice(encode_notice(b"G", 1))) == []  # duplicate: nothing


def test_unreachable_registry_answers_retry_and_full_answers_busy() -> None:
    node = Instance()
    node.verify(1, A, B)
    (retry,) = sent(node.fleet(RegistryAnswer(1, ERROR)), 1)
    assert isinstance(retry, wire.AdvertiseRetry) and retry.code == R.REGISTRY_UNAVAILABLE
    node.verify(2, A, B)
    (busy,) = sent(node.fleet(RegistryAnswer(2, FULL)), 2)
    assert isinstance(busy, wire.AdvertiseRetry) and busy.code == R.BUSY
    assert node.core.sessions == 0


def test_local_waiting_limit_asks_the_registry_to_claim_only() -> None:
    node = Instance()
    node.core.config = MediatorConfig(max_waiting=1, max_waiting_per_ip=1)
    node.register(1, A, B)
    (claim,) = node.verify(2, sym_key(3), sym_key(4))
    assert isinstance(claim, RegistryClaim) and not claim.may_register


def test_session_gone_before_the_answer_undoes_it() -> None:
    node = Instance()
    node.verify(1, A, B)
    node.run(Closed(1, "reset"))
    assert node.fleet(RegistryAnswer(1, REGISTERED)) == [RegistryUnregister(1, A, B)]
    node.verify(2, B, A)
    node.run(Closed(2, "reset"))
    assert node.fleet(RegistryAnswer(2, CLAIMED, peer_record(5))) == [
        Notify(THERE, encode_notice(b"G", 5))
    ]


def test_bytes_while_the_registry_answers_are_malformed() -> None:
    node = Instance()
    node.verify(1, A, B)
    actions = node.run(Received(1, wire.AdvertiseResponse(bytes(32)).encode()))
    assert sent(actions, 1)[0].code == R.MALFORMED  # type: ignore[union-attr]
    assert node.fleet(RegistryAnswer(1, REGISTERED)) == [RegistryUnregister(1, A, B)]


def test_wrong_nonce_never_reaches_the_registry() -> None:
    node = Instance()
    node.run(Opened(1, ("198.51.100.1", 4001)))
    node.run(Received(1, wire.Advertise(1, A, B, None).encode()))
    actions = node.run(Received(1, wire.AdvertiseResponse(bytes(32)).encode()))
    assert not any(isinstance(a, RegistryClaim) for a in actions)
    assert sent(actions, 1)[0].code == R.IDENTITY_CHECK_FAILED  # type: ignore[union-attr]


def test_notices_that_overtake_the_registration_answer_are_held_until_it() -> None:
    """Notices come over the subscription, the registering answer over the command connection:
    a notice can arrive first. It is applied right after the answer."""
    node = Instance()
    node.verify(1, A, B)
    pid = bytes(range(16))
    assert node.fleet(confirmed_notice(1, pid)) == []
    assert node.core.state_of(1) == "challenged"
    introduced(node.fleet(RegistryAnswer(1, REGISTERED)), 1, pid)


def test_gone_carries_the_code_the_partner_fails_with() -> None:
    """As on one instance: the Peer's confirm deadline ends the Client with TIMEOUT."""
    peer_side = Instance(THERE)
    peer_side.verify(2, B, A)
    record = encode_record(HERE, 1, ("198.51.100.1", 4001), None)
    peer_side.fleet(RegistryAnswer(2, CLAIMED, record))
    peer_side.now += 6
    actions = peer_side.run(TimerFired(2))
    (notify,) = [a for a in actions if isinstance(a, Notify)]
    client_side = Instance()
    client_side.register(1, A, B)
    (abort,) = sent(client_side.fleet(Notice(notify.message)), 1)
    assert isinstance(abort, wire.AdvertiseAbort) and abort.code == R.TIMEOUT
    # an unknown code is reported as PEER_GONE
    client_side.register(3, A, sym_key(9))
    (abort,) = sent(client_side.fleet(Notice(encode_notice(b"G", 3, b"7"))), 3)
    assert abort.code == R.PEER_GONE  # type: ignore[union-attr]


def test_candidates_cross_instances_both_ways() -> None:
    """Each side's CANDIDATES (protocol.md section 3.4) reach its partner on another instance:
    the Client's ride in its registry record to the Peer's PeerDisconnect, the Peer's in the
    confirmation notice to the Client's PeerIdentification."""
    client_cands = (
        wire.Address.parse("192.0.2.11:4444"),
        wire.Address.parse("[2001:db8::11]:4444"),
    )
    peer_cands = (wire.Address.parse("192.0.2.22:5555"),)
    client_side, peer_side = Instance(HERE), Instance(THERE)

    def advertise(node: Instance, conn: int, our: bytes, their: bytes, cands: Any) -> list[Any]:
        node.run(Opened(conn, (f"198.51.100.{conn}", 4000 + conn)))
        message = wire.Advertise(1, our, their, None, wire.candidates_extension(cands))
        (send, _timer) = node.run(Received(conn, message.encode()))
        challenge = wire.decode(send.data)
        assert isinstance(challenge, wire.AdvertiseChallenge)
        answer = wire.AdvertiseResponse(sym_answer(challenge)).encode()
        return node.run(Received(conn, answer))

    (claim,) = advertise(client_side, 1, A, B, client_cands)
    assert isinstance(claim, RegistryClaim)
    client_side.fleet(RegistryAnswer(1, REGISTERED))
    (peer_claim,) = advertise(peer_side, 2, B, A, peer_cands)
    actions = peer_side.fleet(RegistryAnswer(2, CLAIMED, claim.record))
    (disconnect,) = sent(actions, 2)
    assert isinstance(disconnect, wire.PeerDisconnect)
    assert disconnect.candidates == client_cands
    (notify,) = [a for a in peer_side.run(Closed(2, None)) if isinstance(a, Notify)]
    (identification,) = sent(client_side.fleet(Notice(notify.message)), 1)
    assert isinstance(identification, wire.PeerIdentification)
    assert identification.candidates == peer_cands
    assert identification.pairing_id == disconnect.pairing_id
    del peer_claim


def test_a_ping_flood_from_a_remote_pairings_peer_fails_it_cleanly() -> None:
    """Keepalive meets the fleet: a Peer (remote Client) pinging twice within MIN_PING_GAP is
    closed MALFORMED and the Client's instance is told, like any other failure (the flood path
    steps a guarded transition, so the fleet's _fail must pass the guard oracle on)."""
    node = Instance()
    node.verify(1, B, A)
    node.fleet(RegistryAnswer(1, CLAIMED, peer_record(5)))
    assert node.run(Received(1, wire.Ping(0, 1000).encode())) == []  # accepted, not answered
    node.now += 0.1
    actions = node.run(Received(1, wire.Ping(1, 1000).encode()))
    assert Notify(THERE, encode_notice(b"G", 5, b"8")) in actions
    aborts = [wire.decode(a.data) for a in actions if isinstance(a, Send) and a.conn == 1]
    assert aborts == [wire.AdvertiseAbort(R.MALFORMED, aborts[0].text)]  # type: ignore[union-attr]
    assert [a.conn for a in actions if isinstance(a, Close)] == [1]
