"""INSECURE LEGACY mediator path under random interleavings (hypothesis, sans-IO).

Several connections, some speaking version 0 (correct transcripts cut at random points, or
garbage), some version 1 garbage, with closes and timers in any order. Whatever happens: no
exception escapes, legacy connections never get two messages in one step, every legacy message
sent parses, snapshots rebuild the same core, and once every connection is gone the core holds
nothing.
"""

from __future__ import annotations

import pytest
from hypothesis import event as note_event
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psc.core.io import Action, Close, Closed, Opened, Received, Send, SetTimer, TimerFired
from p2psc.legacy import codec
from p2psc.legacy.crypto import RsaKeypair, RsaPublicKey
from p2psc.legacy.mediator import LegacyAwareMediatorCore


class SymbolicRsa:
    """Deterministic stand-in for RSA PKCS#1 v1.5: 'encrypted' = fingerprint + ':' + nonce."""

    def encrypt(self, public_key: RsaPublicKey, nonce: str) -> str:
        return f"{public_key.fingerprint()}:{nonce}"

    def decrypt(self, keypair: RsaKeypair, encrypted: str) -> str:
        return encrypted.rpartition(":")[2]


@pytest.fixture(scope="module")
def pems() -> list[str]:
    return [RsaKeypair.generate().public_key.to_wire() for _ in range(2)]


def transcript(pems: list[str], me: int) -> list[bytes]:
    """A correct legacy client's messages; the answer is filled in when the challenge comes."""
    return [codec.encode(codec.Advertise(0, pems[me], pems[1 - me]))]


GARBAGE = [b"{]", b"{" * 20, b" ", b'{"type":2,"payload":{"nonce":"1"}}', b"P2\x01\x00\x00\x00"]

steps = st.lists(
    st.tuples(
        st.sampled_from(  # registrations and timers weighted up so that pairings happen
            [
                *("open", "register", "register", "register", "advertise", "answer"),
                *("garbage", "close", "timer", "timer", "timer", "early", "wait"),
            ]
        ),
        st.integers(1, 6),
        st.integers(0, 40),
    ),
    max_size=40,
)


@settings(max_examples=400, deadline=None)
@given(steps=steps)
def test_random_interleavings(pems: list[str], steps: list[tuple[str, int, int]]) -> None:
    core = LegacyAwareMediatorCore(
        legacy_crypto=SymbolicRsa(),
        nonce_source=lambda n: bytes(n - 1) + b"\x05",
        introduce_delay=0.25,
    )
    now = 0.0
    opened: set[int] = set()
    challenges: dict[int, str] = {}
    timers: dict[int, float] = {}
    advertised: set[int] = set()
    disconnects: list[float] = []
    ever_opened = {1, 2, 3}

    def apply(event: object) -> None:
        actions: list[Action] = core.handle(event, now)  # type: ignore[arg-type]
        sends = [a.conn for a in actions if isinstance(a, Send)]
        assert len(sends) == len(set(sends)), actions  # never two messages in one step
        for action in actions:
            if isinstance(action, Send) and action.data[:1] == b"{":
                message = codec.decode(action.data)
                if isinstance(message, codec.AdvertiseChallenge):
                    challenges[action.conn] = message.encrypted_nonce
                elif isinstance(message, codec.PeerDisconnect):
                    disconnects.append(now)
                elif isinstance(message, codec.PeerIdentification):
                    # the legacy Peer had introduce_delay to bind before the Client learns of it
                    assert disconnects and now >= disconnects.pop(0) + 0.25
                note_event(type(message).__name__)
            elif isinstance(action, SetTimer):
                if action.deadline is None:
                    timers.pop(action.conn, None)
                else:
                    timers[action.conn] = action.deadline
            elif isinstance(action, Close):
                opened.discard(action.conn)
                timers.pop(action.conn, None)
        snap = core.snapshot()
        assert LegacyAwareMediatorCore.from_snapshot(snap).snapshot() == snap

    for conn in (1, 2, 3):  # start with connections open: the interesting part is after
        opened.add(conn)
        apply(Opened(conn, ("127.0.0.1", 40000 + conn)))
    for kind, conn, amount in steps:
        if kind == "open":  # a later connection (adapters never reuse an id)
            conn += 3
            if conn in ever_opened:
                continue
            ever_opened.add(conn)
            opened.add(conn)
            apply(Opened(conn, ("127.0.0.1", 40000 + conn)))
        elif conn not in opened or (kind in ("register", "advertise") and conn in advertised):
            continue
        elif kind == "register":  # a whole correct registration in one go
            advertised.add(conn)
            apply(Received(conn, transcript(pems, conn % 2)[0]))
            if conn in challenges:
                nonce = challenges.pop(conn).rpartition(":")[2]
                apply(Received(conn, codec.encode(codec.AdvertiseResponse(nonce))))
        elif kind == "advertise":
            advertised.add(conn)
            data = transcript(pems, conn % 2)[0]
            apply(Received(conn, data[: max(1, amount * 40)]))
            if amount * 40 < len(data):
                apply(Received(conn, data[amount * 40 :]))
        elif kind == "answer" and conn in challenges:
            nonce = challenges.pop(conn).rpartition(":")[2]
            apply(Received(conn, codec.encode(codec.AdvertiseResponse(nonce))))
        elif kind == "garbage":
            apply(Received(conn, GARBAGE[amount % len(GARBAGE)]))
        elif kind == "close":
            opened.discard(conn)
            apply(Closed(conn, None if amount % 2 else "reset"))
        elif kind == "timer" and conn in timers:
            now = max(now, timers.pop(conn))
            apply(TimerFired(conn))
        elif kind == "early":  # adapters may fire a timer before its deadline
            apply(TimerFired(conn))
        elif kind == "wait":
            now += amount / 10
    # drain: fire every pending timer (bounded), then close whatever is left
    for _ in range(20):
        if not timers:
            break
        conn = min(timers, key=timers.__getitem__)
        now = max(now, timers.pop(conn))
        apply(TimerFired(conn))
    for conn in sorted(opened):
        apply(Closed(conn, None))
    for _ in range(20):  # a legacy introduction in flight ends at its timer
        if not timers:
            break
        conn = min(timers, key=timers.__getitem__)
        now = max(now, timers.pop(conn))
        apply(TimerFired(conn))
    assert core.sessions == 0 and core.waiting == 0 and core.pending == 0
    assert core.snapshot() == LegacyAwareMediatorCore().snapshot()
