"""MediatorCore: what snapshots restore, limits at their edges, what an operator sees, config.

- A core rebuilt from its snapshot at any step of any interleaving (the random world of
  test_mediator_properties, with small limits so they bite) answers the next event exactly as
  the original, and its counters (which drive the limits) are the original's.
- Every limit at exactly 1, and the exemption of an owner re-registering its pair from the
  same address.
- The notes of every failure path (refused, rejected, replaced, failed, closed): kind,
  connection and reason, exactly, since they are the mediator's log.
- MediatorConfig: the defaults are spec/mediator.md's table; every bad value is refused.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from mediator_helpers import Driver, SymbolicCrypto, abort_code, closed, messages, sym_key
from test_mediator_properties import CONFIG, World, op

from p2psc import wire
from p2psc.core.io import Action, Close, Event, Opened, Received, SetTimer
from p2psc.core.mediator import MediatorConfig, MediatorCore, MediatorNote
from p2psc.core.registry import InMemoryRegistry
from p2psc.errors import InvalidTransition, ProtocolError

R = wire.Reason
SPEC = (Path(__file__).resolve().parents[1] / "spec" / "mediator.md").read_text(encoding="utf-8")


def _constant(n: int) -> bytes:
    """A pure nonce source: a twin draws the nonces the original draws."""
    return b"\x07" * n


class TwinWorld(World):
    """The random world, where every event is also given to a core rebuilt from the snapshot
    taken just before it."""

    def __init__(self) -> None:
        super().__init__()
        self.core = MediatorCore(CONFIG, nonce_source=_constant, crypto=SymbolicCrypto())
        self.compared = 0

    def run(self, event: Event) -> list[Action]:
        twin = MediatorCore.from_snapshot(
            self.core.snapshot(), CONFIG, nonce_source=_constant, crypto=SymbolicCrypto()
        )
        assert _counters(twin) == _counters(self.core)
        actions = self.core.handle(event, self.now)
        assert twin.handle(event, self.now) == actions
        assert twin.snapshot() == self.core.snapshot()
        assert _counters(twin) == _counters(self.core)
        self.compared += 1
        self.check(event, actions)
        return actions


def _counters(core: MediatorCore) -> tuple[object, ...]:
    return (
        core.pending,
        core.waiting,
        core.sessions,
        dict(core._pending_by_ip),
        dict(core._waiting_by_ip),
    )


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(op, min_size=8, max_size=40))
def test_a_restored_core_behaves_as_the_original_at_every_step(
    steps: list[tuple[object, ...]],
) -> None:
    world = TwinWorld()
    for step in steps:
        world.apply(step)


def test_restored_counters_keep_the_limits() -> None:
    """The case issue 18 found: a core restored with its counters at 0 let a full mediator
    accept more. Each limit is at 1 and full when the snapshot is taken."""
    config = MediatorConfig(
        max_pending=2, max_pending_per_ip=1, max_waiting=2, max_waiting_per_ip=1
    )
    d = Driver(config, symbolic=True)
    d.register_symbolic(1, sym_key(1), sym_key(9), remote=("192.0.2.1", 1))  # waiting, ip .1
    d.open(2, ("192.0.2.2", 2))  # pending, ip .2
    twin = MediatorCore.from_snapshot(d.core.snapshot(), config, crypto=SymbolicCrypto())
    assert _counters(twin) == _counters(d.core) == (1, 1, 2, {"192.0.2.2": 1}, {"192.0.2.1": 1})
    for core in (d.core, twin):  # pending per ip is full: the newcomer evicts conn 2
        evicted = core.handle(Opened(3, ("192.0.2.2", 3)), d.now)
        assert closed(evicted) == [2] and abort_code(evicted, 2) == R.BUSY
    d.core = twin
    d.open(4, ("192.0.2.3", 4))  # pending: 2 of 2 now (3 and 4)
    evicted = d.open(5, ("192.0.2.4", 5))  # over max_pending: the oldest of the largest goes
    assert len(closed(evicted)) == 1 and twin.pending == 2
    actions = d.register_symbolic(6, sym_key(6), sym_key(9), remote=("192.0.2.1", 6))
    assert abort_code(actions, 6) == R.BUSY  # waiting per ip, counted from the snapshot


# --- limits at their edges -------------------------------------------------------------------


def test_pending_per_ip_at_one() -> None:
    """At one unverified connection per address, a newcomer from that address evicts the older
    one (spec/mediator.md 6.1), with the reason on the wire and in the close."""
    d = Driver(MediatorConfig(max_pending_per_ip=1))
    assert closed(d.open(1, ("192.0.2.1", 1))) == []
    evicted = d.open(2, ("192.0.2.1", 2))
    text = "evicted: too many unverified connections from your address, retry later"
    assert closed(evicted) == [1] and messages(evicted, 1) == [wire.AdvertiseRetry(R.BUSY, text)]
    assert Close(1, text) in evicted and messages(evicted, 2) == []
    assert closed(d.open(3, ("192.0.2.2", 3))) == []  # another address has its own budget
    d.close(2)
    assert closed(d.open(4, ("192.0.2.1", 4))) == []


def test_pending_global_at_one() -> None:
    d = Driver(MediatorConfig(max_pending=1))
    d.open(1, ("192.0.2.1", 1))
    evicted = d.open(2, ("192.0.2.2", 2))
    assert messages(evicted, 1) == [
        wire.AdvertiseRetry(R.BUSY, "evicted: too many unverified connections, retry later")
    ]
    assert closed(evicted) == [1] and d.core.pending == 1


def test_waiting_per_ip_at_one_and_the_owner_exemption() -> None:
    """With one waiting registration per address: another pair from that address is refused,
    but the same pair again from the same address replaces the older one (its owner is
    re-registering, e.g. after a lost connection), and another address still has room."""
    d = Driver(MediatorConfig(max_waiting_per_ip=1), symbolic=True)
    ip = "192.0.2.1"
    assert abort_code(d.register_symbolic(1, sym_key(1), sym_key(2), remote=(ip, 1)), 1) is None
    other = d.register_symbolic(2, sym_key(3), sym_key(2), remote=(ip, 2))
    assert messages(other, 2)[-1] == wire.AdvertiseRetry(
        R.BUSY, "too many waiting registrations, retry later"
    )
    again = d.register_symbolic(3, sym_key(1), sym_key(2), remote=(ip, 3))
    assert abort_code(again, 3) is None and d.core.state_of(3) == "waiting"
    assert messages(again, 1) == [
        wire.AdvertiseAbort(R.DUPLICATE_REGISTRATION, "replaced by a newer registration")
    ]
    assert d.core.state_of(1) is None and d.core.waiting == 1
    elsewhere = d.register_symbolic(4, sym_key(1), sym_key(2), remote=("192.0.2.9", 4))
    assert abort_code(elsewhere, 4) is None and d.core.state_of(4) == "waiting"
    # The same pair from a *full* other address is not exempt.
    d.register_symbolic(5, sym_key(7), sym_key(8), remote=("192.0.2.5", 5))
    full = d.register_symbolic(6, sym_key(1), sym_key(2), remote=("192.0.2.5", 6))
    assert abort_code(full, 6) == R.BUSY and d.core.state_of(4) == "waiting"


def test_waiting_global_at_one() -> None:
    d = Driver(MediatorConfig(max_waiting=1), symbolic=True)
    d.register_symbolic(1, sym_key(1), sym_key(2))
    assert abort_code(d.register_symbolic(2, sym_key(3), sym_key(4)), 2) == R.BUSY
    assert abort_code(d.register_symbolic(3, sym_key(1), sym_key(2)), 3) is None  # replaces


# --- what an operator sees -------------------------------------------------------------------


def _notes(d: Driver, kind: str) -> list[tuple[int, str]]:
    return [(n.conn, n.reason) for n in d.notes if n.kind == kind]


def test_notes_of_refusals_rejections_and_replacements() -> None:
    d = Driver(MediatorConfig(max_pending_per_ip=1), symbolic=True)
    d.open(1, ("192.0.2.1", 1))
    d.open(2, ("192.0.2.1", 2))
    assert d.notes[-2] == MediatorNote(
        "evicted",
        1,
        remote=("192.0.2.1", 1),
        reason="too many unverified connections from your address",
        cause="pending_origin",
    )
    assert _notes(d, "closed")[-1] == (
        1,
        "evicted: too many unverified connections from your address, retry later",
    )
    d.close(2)
    d.open(3, ("192.0.2.3", 3))
    d.send(3, wire.Advertise(1, sym_key(1), sym_key(1)).encode())
    assert _notes(d, "rejected") == [(3, "our_key and their_key are the same key")]
    assert _notes(d, "closed")[-1] == (3, "advertise: our_key and their_key are the same key")
    d.open(4, ("192.0.2.4", 4))
    d.send(4, wire.Advertise(2, sym_key(1), sym_key(2)).encode())
    assert _notes(d, "rejected")[-1] == (
        4,
        "unsupported version: Advertise version 2 is not supported (only 1)",
    )
    challenge = d.advertise(5, sym_key(1), sym_key(2), remote=("192.0.2.5", 5))
    d.send(5, wire.AdvertiseResponse(bytes(32)).encode())
    assert _notes(d, "rejected")[-1] == (5, "AdvertiseResponse does not match the nonce")
    assert challenge.encrypted_nonce[:32] != bytes(32)
    d.register_symbolic(6, sym_key(1), sym_key(2), remote=("192.0.2.6", 6))
    registered = [n for n in d.notes if n.kind == "registered"]
    assert [(n.conn, n.remote, n.our_key, n.their_key) for n in registered] == [
        (6, ("192.0.2.6", 6), sym_key(1), sym_key(2))
    ]
    d.register_symbolic(7, sym_key(1), sym_key(2), remote=("192.0.2.7", 7))
    (replaced,) = [n for n in d.notes if n.kind == "replaced"]
    assert (replaced.conn, replaced.reason, replaced.remote) == (
        6,
        "replaced by connection 7",
        ("192.0.2.6", 6),
    )
    assert d.core.state_of(6) is None


def test_notes_of_failures_and_their_partners() -> None:
    d = Driver(MediatorConfig(advertise_timeout=5, confirm_timeout=3), symbolic=True)
    d.open(1, ("192.0.2.1", 1))
    d.send(1, b"GET / HTTP/1.1\r\n")
    assert _notes(d, "failed") == [(1, "bad_input: bad magic: not a p2psc v1 frame")]
    d.open(2, ("192.0.2.2", 2))
    d.advance(5)
    d.fire(2)
    assert _notes(d, "failed")[-1] == (2, "timeout: no complete Advertise before the deadline")
    assert _notes(d, "closed")[-1] == (2, "timeout: no complete Advertise before the deadline")
    # A pairing whose Peer never closes: both fail, the Client as the partner.
    d.register_symbolic(3, sym_key(1), sym_key(2), remote=("192.0.2.3", 3))
    d.register_symbolic(4, sym_key(2), sym_key(1), remote=("192.0.2.4", 4))
    assert [n.kind for n in d.notes if n.conn == 4][-1] == "paired"
    d.advance(3)
    actions = d.fire(4)
    text = "the Peer did not close after PeerDisconnect before the deadline"
    assert _notes(d, "failed")[-2:] == [(4, f"timeout: {text}"), (3, f"partner timeout: {text}")]
    assert messages(actions, 3) == [
        wire.AdvertiseAbort(
            R.TIMEOUT, f"your partner's connection to the mediator timed out ({text})"
        )
    ]
    assert _notes(d, "closed")[-1] == (3, "partner_lost: timeout")
    # A plain end of stream is not a failure worth a warning: only "closed" is noted.
    d.open(5, ("192.0.2.5", 5))
    before = len(_notes(d, "failed"))
    d.close(5)
    assert len(_notes(d, "failed")) == before
    assert _notes(d, "closed")[-1] == (5, "eof: closed by the other side")
    d.open(6, ("192.0.2.6", 6))
    d.send(6, b"P2\x01")
    d.close(6, "connection reset")
    assert _notes(d, "failed")[-1] == (6, "lost: connection reset")


def test_an_introduction_is_noted_for_the_client() -> None:
    d = Driver(symbolic=True)
    d.register_symbolic(1, sym_key(1), sym_key(2), remote=("192.0.2.1", 1))
    d.register_symbolic(2, sym_key(2), sym_key(1), remote=("192.0.2.2", 2))
    d.close(2)
    (introduced,) = [n for n in d.notes if n.kind == "introduced"]
    assert (introduced.conn, introduced.partner, introduced.remote) == (1, 2, ("192.0.2.1", 1))
    assert _notes(d, "closed")[-2:] == [
        (2, "eof: PeerDisconnect confirmed"),
        (1, "partner_confirmed: PeerIdentification sent"),
    ]


# --- configuration -----------------------------------------------------------------------------


def test_config_defaults_are_the_spec_table() -> None:
    """Every MediatorConfig field is named in the tables of spec/mediator.md section 6, and a
    row naming one field with a number checks that field's default."""
    rows = dict(re.findall(r"^\| `(\w+)`[^|]*\| (\d+)", SPEC, flags=re.MULTILINE))
    named = {
        name
        for line in SPEC.splitlines()
        if line.startswith("| ")
        for name in re.findall(r"`(\w+)`", line.split("|")[1])
    }
    fields = {f.name for f in dataclasses.fields(MediatorConfig)}
    documented = {name: int(value) for name, value in rows.items() if name in fields}
    assert documented and fields <= named, fields - named
    default = MediatorConfig()
    assert {name: getattr(default, name) for name in documented} == documented


TIMEOUTS = ("advertise_timeout", "response_timeout", "confirm_timeout")
LIMITS = ("max_pending", "max_pending_per_ip", "max_waiting", "max_waiting_per_ip")


@pytest.mark.parametrize("name", TIMEOUTS)
def test_config_refuses_timeouts_that_are_not_positive(name: str) -> None:
    assert getattr(MediatorConfig(**{name: 0.001}), name) == 0.001  # type: ignore[arg-type]
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match=f"^{name} must be > 0$"):
            MediatorConfig(**{name: bad})  # type: ignore[arg-type]


def test_config_wait_timeout_may_be_none_but_not_zero() -> None:
    assert MediatorConfig(wait_timeout=None).wait_timeout is None
    assert MediatorConfig(wait_timeout=0.5).wait_timeout == 0.5
    for bad in (0, -3.0):
        with pytest.raises(ValueError, match=r"^wait_timeout must be > 0 or None$"):
            MediatorConfig(wait_timeout=bad)


@pytest.mark.parametrize("name", LIMITS)
def test_config_refuses_limits_below_one(name: str) -> None:
    assert getattr(MediatorConfig(**{name: 1}), name) == 1  # type: ignore[arg-type]
    for bad in (0, -1):
        with pytest.raises(ValueError, match=f"^{name} must be >= 1$"):
            MediatorConfig(**{name: bad})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value", [MediatorConfig(), MediatorNote("closed", 1, ("192.0.2.1", 1), reason="x")]
)
def test_values_are_frozen_hashable_and_slotted(value: object) -> None:
    twin = dataclasses.replace(value)  # type: ignore[type-var]
    assert twin == value and hash(twin) == hash(value) and len({twin, value}) == 1
    assert not hasattr(value, "__dict__")
    for f in dataclasses.fields(value):  # type: ignore[arg-type]
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, f.name, getattr(value, f.name))


# --- deadlines -----------------------------------------------------------------------------------

TIMEOUT_TEXT = {
    "awaiting_advertise": "no complete Advertise before the deadline",
    "challenged": "no complete AdvertiseResponse before the deadline",
    "waiting": "the wanted peer did not register before the deadline",
    "disconnecting": "the Peer did not close after PeerDisconnect before the deadline",
    "confirming": "the Peer did not confirm PeerDisconnect before the deadline",
}


@pytest.mark.parametrize("state", list(TIMEOUT_TEXT))
def test_each_deadline_aborts_with_its_text_and_not_a_moment_earlier(state: str) -> None:
    config = MediatorConfig(
        advertise_timeout=2, response_timeout=3, wait_timeout=4, confirm_timeout=5
    )
    d = Driver(config, symbolic=True)
    conn, partner = 1, None
    if state == "awaiting_advertise":
        d.open(1, ("192.0.2.1", 1))
        delay = 2
    elif state == "challenged":
        d.advertise(1, sym_key(1), sym_key(2))
        delay = 3
    elif state == "waiting":
        d.register_symbolic(1, sym_key(1), sym_key(2))
        delay = 4
    else:
        d.register_symbolic(1, sym_key(1), sym_key(2))
        d.register_symbolic(2, sym_key(2), sym_key(1))
        conn, partner = (2, 1) if state == "disconnecting" else (1, 2)
        delay = 5
    assert d.core.state_of(conn) == state
    d.advance(delay - 0.001)
    early = d.fire(conn)  # an early timer is re-armed for the same deadline, nothing else
    assert early == [SetTimer(conn, d.now + 0.001)] and d.core.state_of(conn) == state
    d.advance(0.001)
    actions = d.fire(conn)
    text = TIMEOUT_TEXT[state]
    assert messages(actions, conn) == [wire.AdvertiseAbort(R.TIMEOUT, text)]
    assert conn in closed(actions) and d.core.state_of(conn) is None
    if partner is not None:
        assert messages(actions, partner) == [
            wire.AdvertiseAbort(
                R.TIMEOUT, f"your partner's connection to the mediator timed out ({text})"
            )
        ]
        assert partner in closed(actions)
    assert d.core.sessions == 0


def test_without_wait_timeout_a_registration_waits_forever() -> None:
    d = Driver(MediatorConfig(wait_timeout=None), symbolic=True)
    d.register_symbolic(1, sym_key(1), sym_key(2))
    d.advance(10**9)
    assert d.fire(1) == [SetTimer(1, None)] and d.core.state_of(1) == "waiting"


# --- one byte stream, however it is cut --------------------------------------------------------

_ADVERTISE = wire.Advertise(1, sym_key(1), sym_key(2)).encode()
_RESPONSE = wire.AdvertiseResponse(b"\x07" * 32).encode()
_PARTS = [_ADVERTISE, _RESPONSE, _ADVERTISE[:7], b"P", b"P2\x01", b"\x00", b"junk"]


@settings(max_examples=200, deadline=None)
@given(
    parts=st.lists(st.sampled_from(_PARTS), min_size=1, max_size=4),
    cuts=st.lists(st.integers(0, 300), max_size=4),
)
@example(parts=[b"P", _ADVERTISE], cuts=[1])  # a stray byte, then a chunk that is a frame
@example(parts=[_ADVERTISE[:7], _RESPONSE], cuts=[7])
def test_any_cut_of_a_stream_gives_what_the_whole_stream_gives(
    parts: list[bytes], cuts: list[int]
) -> None:
    """The mediator reads one byte stream per connection: a chunk that happens to be a whole
    frame after a partial one is not a frame of its own."""
    stream = b"".join(parts)

    def run(chunks: list[bytes]) -> list[Action]:
        core = MediatorCore(nonce_source=_constant, crypto=SymbolicCrypto())
        actions = core.handle(Opened(1, ("192.0.2.1", 1)), 0.0)
        for chunk in chunks:
            actions += core.handle(Received(1, chunk), 0.0)
        return actions

    bounds = sorted({c for c in cuts if 0 < c < len(stream)})
    chunks = [stream[a:b] for a, b in zip([0, *bounds], [*bounds, len(stream)], strict=True)]
    assert run(chunks) == run([stream])


@pytest.mark.parametrize(
    "extra", [b"P", _ADVERTISE, _RESPONSE + b"P2"], ids=["byte", "frame", "more"]
)
def test_bytes_after_the_verified_response_are_refused_at_once(extra: bytes) -> None:
    """Nothing may follow the AdvertiseResponse on a registration's connection (spec: the
    connection is only listened to for its close from then on)."""
    core = MediatorCore(nonce_source=_constant, crypto=SymbolicCrypto())
    core.handle(Opened(1, ("192.0.2.1", 1)), 0.0)
    actions = core.handle(Received(1, _ADVERTISE + _RESPONSE + extra), 0.0)
    (challenge, abort) = messages(actions, 1)
    assert isinstance(challenge, wire.AdvertiseChallenge)
    assert abort == wire.AdvertiseAbort(R.MALFORMED, "bytes after the AdvertiseResponse")
    assert closed(actions) == [1] and core.sessions == 0 and core.waiting == 0


# --- the seams for tools and subclasses -------------------------------------------------------


class _CountingFramer(MediatorCore):
    """A subclass that frames for itself (as the module says a subclass may)."""

    cut: list[int] = []

    @staticmethod
    def _next_frame(session: object) -> bytes | None:
        frame = MediatorCore._next_frame(session)  # type: ignore[arg-type]
        _CountingFramer.cut.append(0 if frame is None else len(frame))
        return frame


def test_a_subclass_that_frames_for_itself_sees_every_frame() -> None:
    _CountingFramer.cut = []
    core = _CountingFramer(nonce_source=_constant, crypto=SymbolicCrypto())
    core.handle(Opened(1, ("192.0.2.1", 1)), 0.0)
    actions = core.handle(Received(1, _ADVERTISE), 0.0)  # one whole frame: no shortcut
    assert isinstance(messages(actions, 1)[0], wire.AdvertiseChallenge)
    assert _CountingFramer.cut == [len(_ADVERTISE)]


def test_a_swapped_table_sees_every_step_and_changes_nothing() -> None:
    """``TABLE`` swapped for a recorder (the explorer's coverage seam): the same actions, and
    every step goes through the recorder."""
    from p2psc.core import mediator as module

    seen: list[tuple[str, str]] = []
    taken: list[tuple[str, ...]] = []

    class Recorder:
        name = module._COMPILED.name

        def step(self, state: str, event: str, oracle: object = None) -> object:
            seen.append((state, event))
            transition = module._COMPILED.step(state, event, oracle)  # type: ignore[arg-type]
            taken.append((state, event, *(g.name for g in transition.guards)))
            return transition

    def play() -> list[Action]:
        d = Driver(symbolic=True)
        d.register_symbolic(4, sym_key(1), sym_key(2), remote=("192.0.2.4", 4))
        d.register_symbolic(1, sym_key(1), sym_key(2), remote=("192.0.2.1", 1))  # replaces 4
        d.register_symbolic(2, sym_key(2), sym_key(1), remote=("192.0.2.2", 2))
        d.close(2)
        d.open(3, ("192.0.2.3", 3))
        d.send(3, b"junk")
        return d.log

    plain = play()
    saved = module.TABLE
    module.TABLE = Recorder()  # type: ignore[assignment]
    try:
        recorded = play()
    finally:
        module.TABLE = saved
    assert recorded == plain
    assert {e for _, e in seen} >= {
        "advertise",
        "response",
        "eof",
        "partner_confirmed",
        "bad_input",
        "replaced",
    }
    # The explorer's coverage counts transitions: each registration takes its own.
    assert ("challenged", "response", "duplicate") in taken
    assert ("challenged", "response", "partner_waiting") in taken
    assert taken.count(("challenged", "response")) == 1  # the first, plain registration


class _RacingRegistry(InMemoryRegistry):
    """A shared registry where another mediator claims the partner first: lookup still sees
    it, claim finds nothing."""

    def claim(self, our_key: bytes, their_key: bytes) -> int | None:
        super().claim(our_key, their_key)
        return None


def test_a_partner_claimed_elsewhere_is_a_soft_retry() -> None:
    core = MediatorCore(nonce_source=_constant, crypto=SymbolicCrypto(), registry=_RacingRegistry())
    for conn, (our, their) in ((1, (1, 2)), (2, (2, 1))):
        core.handle(Opened(conn, (f"192.0.2.{conn}", conn)), 0.0)
        core.handle(Received(conn, wire.Advertise(1, sym_key(our), sym_key(their)).encode()), 0.0)
        actions = core.handle(Received(conn, _RESPONSE), 0.0)
    assert messages(actions, 2) == [
        wire.AdvertiseRetry(R.BUSY, "partner vanished while pairing, retry")
    ]
    assert [a for a in actions if isinstance(a, Close)] == [Close(2, "pairing race")]
    assert core.state_of(2) is None


def test_a_guard_the_core_does_not_know_is_refused() -> None:
    """A machine that asks a guard the core cannot answer is an error, not a silent False."""
    from p2psc.core import mediator as module

    class Asking:
        name = module._COMPILED.name

        def step(
            self, state: str, event: str, oracle: Callable[[str], bool] | None = None
        ) -> object:
            if oracle is not None:
                oracle("guard_nobody_knows")
            return module._COMPILED.step(state, event, oracle)

    for script in ([_ADVERTISE], [_ADVERTISE, _RESPONSE]):
        core = MediatorCore(nonce_source=_constant, crypto=SymbolicCrypto())
        core.handle(Opened(1, ("192.0.2.1", 1)), 0.0)
        for data in script[:-1]:
            core.handle(Received(1, data), 0.0)
        saved = module.TABLE
        module.TABLE = Asking()  # type: ignore[assignment]
        try:
            with pytest.raises(InvalidTransition) as caught:
                core.handle(Received(1, script[-1]), 0.0)
            assert (caught.value.machine, caught.value.event) == (
                "MediatorSession",
                "guard guard_nobody_knows",
            )
        finally:
            module.TABLE = saved


GARBAGE_REASONS = [
    (b"X2\x01\x00\x00\x00", R.MALFORMED, "bad magic: not a p2psc v1 frame"),
    (b"P3\x01\x00\x00\x00", R.MALFORMED, "bad magic: not a p2psc v1 frame"),
    (b"P2\x02\x00\x00\x00", R.UNSUPPORTED_VERSION, "frame version 2 is not supported (only 1)"),
    (b"P2\x01\x00\x10\x01", R.MALFORMED, "frame payload of 4097 bytes exceeds 4096"),
]


@pytest.mark.parametrize(
    ("data", "code", "reason"), GARBAGE_REASONS, ids=[r for *_, r in GARBAGE_REASONS]
)
def test_a_bad_first_header_is_refused_with_its_reason(data: bytes, code: int, reason: str) -> None:
    for chunks in ([data], [data[:2], data[2:]], [bytes([b]) for b in data]):
        d = Driver()
        d.open(1, ("192.0.2.1", 1))
        actions = [a for chunk in chunks for a in d.send(1, chunk)]
        assert messages(actions, 1) == [wire.AdvertiseAbort(code, reason)]
        assert closed(actions) == [1]


def test_the_first_frame_is_judged_even_when_more_bytes_came_with_it() -> None:
    """A frame whose length is 256 or more, followed by more bytes in the same read: the
    mediator cuts the frame by its length and refuses it for what it is."""
    first = b"P2\x01\x00\x01\x00" + b"\x01" + bytes(255)  # an Advertise of version 1
    with pytest.raises(ProtocolError) as caught:
        wire.decode(first)
    d = Driver()
    d.open(1, ("192.0.2.1", 1))
    actions = d.send(1, first + bytes(256))
    assert messages(actions, 1) == [wire.AdvertiseAbort(R.MALFORMED, caught.value.reason)]


def test_a_peer_whose_address_cannot_be_carried_is_refused_and_the_client_keeps_waiting() -> None:
    d = Driver(symbolic=True)
    d.register_symbolic(1, sym_key(1), sym_key(2), remote=("192.0.2.1", 1))
    actions = d.register_symbolic(2, sym_key(2), sym_key(1), remote=("fe80::1%eth0", 2))
    reason = (
        "cannot encode PeerDisconnect: IPv6 scope ids cannot be carried on the wire: 'fe80::1%eth0'"
    )
    assert messages(actions, 2)[-1] == wire.AdvertiseAbort(R.MALFORMED, reason)
    assert closed(actions) == [2] and messages(actions, 1) == []
    assert d.core.state_of(1) == "waiting" and d.core.waiting == 1
    actions = d.register_symbolic(3, sym_key(2), sym_key(1), remote=("192.0.2.3", 3))
    assert isinstance(messages(actions, 3)[-1], wire.PeerDisconnect)  # the Client still pairs


def test_the_notes_of_a_whole_pairing_in_order() -> None:
    """Each step of a pairing is one note, in order, and only failures carry a reason."""
    d = Driver(symbolic=True)
    d.register_symbolic(1, sym_key(1), sym_key(2), remote=("192.0.2.1", 1))
    d.register_symbolic(2, sym_key(2), sym_key(1), remote=("192.0.2.2", 2))
    d.close(2)
    assert [(n.kind, n.conn, n.reason) for n in d.notes] == [
        ("challenged", 1, ""),
        ("registered", 1, ""),
        ("challenged", 2, ""),
        ("paired", 2, ""),
        ("closed", 2, "eof: PeerDisconnect confirmed"),
        ("introduced", 1, ""),
        ("closed", 1, "partner_confirmed: PeerIdentification sent"),
    ]


def test_bytes_while_waiting_and_connections_after_shutdown_are_refused_with_reasons() -> None:
    d = Driver(symbolic=True)
    d.register_symbolic(1, sym_key(1), sym_key(2))
    actions = d.send(1, b"x")
    assert messages(actions, 1) == [
        wire.AdvertiseAbort(R.MALFORMED, "unexpected bytes in state waiting")
    ]
    assert d.core.waiting == 0 and d.core.state_of(1) is None
    d.core.shutdown(d.now)
    refused = d.open(2, ("192.0.2.2", 2))
    assert messages(refused, 2) == [wire.AdvertiseRetry(R.SHUTTING_DOWN, "mediator shutting down")]
    assert Close(2, "busy: mediator shutting down") in refused


def test_a_four_item_socket_address_is_kept_as_host_and_port() -> None:
    """Adapters may report IPv6 peers as (host, port, flowinfo, scope_id): the core keeps
    (host, port), in its snapshot, its notes and the addresses it sends."""
    d = Driver(symbolic=True)
    d.register_symbolic(1, sym_key(1), sym_key(2), remote=("2001:db8::1", 1, 0, 0))  # type: ignore[arg-type]
    (row,) = d.core.snapshot()[0]
    assert row[2] == ("2001:db8::1", 1)
    assert [n.remote for n in d.notes if n.kind == "registered"] == [("2001:db8::1", 1)]
    actions = d.register_symbolic(2, sym_key(2), sym_key(1), remote=("2001:db8::2", 2, 0, 0))  # type: ignore[arg-type]
    (disconnect,) = [m for m in messages(actions, 2) if isinstance(m, wire.PeerDisconnect)]
    assert disconnect.client == wire.Address("2001:db8::1", 1)


def test_an_unsupported_version_is_noted_as_rejected() -> None:
    d = Driver()
    d.open(1, ("192.0.2.1", 1))
    d.send(1, b"P2\x02\x00\x00\x00")
    reason = "frame version 2 is not supported (only 1)"
    assert _notes(d, "rejected") == [(1, f"unsupported version: {reason}")]
    assert _notes(d, "closed") == [(1, f"advertise: {reason}")]
