"""The version 1 scenarios: each checks one rule of spec/mediator.md against a live mediator.

Every scenario plays all the clients itself, with fresh X25519 keys and raw frames, so it can
both behave correctly and misbehave on purpose. Where a rule has a MUST part and a SHOULD part
(closing vs. the reason code sent before the close) they are separate scenarios, so a mediator
that only differs in reason codes gets warnings, not failures. The one exception is
UNSUPPORTED_VERSION, whose code is part of the requirement: it is how a newer client knows to
fall back (§3 step 2.1).

"Closes promptly" checks also make sure the close was caused by the bad input and not by a
deadline that happened to expire meanwhile: an ``AdvertiseAbort(TIMEOUT)`` before the close, or
a close later than the configured deadline, fails them.

Deadlines are checked twice, by level: ``deadline-*`` (required) fail anything that reaches a
connection before the configured value (§2: never early), ``timeout-*`` (recommended) check
the TIMEOUT code and that the close comes within ``--late`` of it. Both measure from a moment
the mediator's timer cannot precede and record a :class:`~p2psc.conformance.context.Measurement`
that the report prints.

Extending: a new rule about the two pairing messages (a field the wire gains, e.g. a pairing id
both must carry) is one function appended to :data:`PAIRING_CHECKS`, and every pairing scenario
applies it; a new transport (TLS to the mediator) changes only how
:meth:`~p2psc.conformance.context.ScenarioContext.connect` opens a :class:`V1Peer`.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

from p2psc import wire
from p2psc.conformance.context import HarnessOptions, ScenarioContext
from p2psc.conformance.peer import RawPeer, ScenarioFailed, V1Peer, all_of, fail, reason_name
from p2psc.conformance.scenario import Level, Scenario, Section
from p2psc.keys import Keypair

__all__ = ["V1_SCENARIOS", "complete_pairing", "expect_abort", "expect_prompt_close"]

R = wire.Reason
REQUIRED = Level.REQUIRED
RECOMMENDED = Level.RECOMMENDED

S1 = Section("mediator.md", "1", "Roles and words")
S2 = Section("mediator.md", "2", "Sessions and states")
S3 = Section("mediator.md", "3", "The Mediator handshake")
S4 = Section("mediator.md", "4", "Pairing and the ordering guarantee")
S41 = Section("mediator.md", "4.1", "Keepalive while waiting")
S42 = Section("mediator.md", "4.3", "Coordinated pairings: liveness after the introduction")
S5 = Section("mediator.md", "5", "Duplicate registration, self pairing, version mismatch")
S6 = Section("mediator.md", "6", "Limits (no memory growth under load)")
S7 = Section("mediator.md", "7", "Errors: one connection at a time")
S8 = Section("mediator.md", "8", "Reason codes used by the Mediator")
FRAMING = Section("protocol.md", "2", "Transport and framing")

CONCURRENT_PAIRS = 10

# --- shared steps ------------------------------------------------------------------------------


async def expect_abort(peer: V1Peer, code: int, why: str) -> wire.AdvertiseAbort:
    """The next message must be ``AdvertiseAbort(code)``."""
    got = await peer.next()
    message = got.message
    if isinstance(message, wire.AdvertiseAbort) and message.code == code:
        return message
    fail(f"AdvertiseAbort({reason_name(code)}) at {peer.label} ({why})", got.describe(peer.render))


async def expect_prompt_close(
    peer: RawPeer[Any],
    why: str,
    *,
    deadline: float | None,
    allowed: tuple[type[Any], ...] = (wire.AdvertiseAbort,),
) -> list[Any]:
    """The mediator must close ``peer`` because of what just happened, not because a deadline
    (configured as ``deadline`` seconds, None if unknown) expired meanwhile."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    seen = await peer.expect_close(why, allowed=allowed)
    elapsed = loop.time() - start
    for message in seen:
        if isinstance(message, wire.AdvertiseAbort) and message.code == R.TIMEOUT:
            fail(
                f"the mediator closes {peer.label} ({why})",
                f"it was closed only by a deadline (AdvertiseAbort(TIMEOUT) after {elapsed:.2f} s)",
            )
    if deadline is not None and elapsed >= deadline:
        fail(
            f"the mediator closes {peer.label} promptly ({why})",
            f"closed after {elapsed:.2f} s, when the configured deadline of {deadline:g} s "
            "would have closed it anyway",
        )
    return seen


PairingCheck = Callable[
    [ScenarioContext, wire.PeerDisconnect, wire.PeerIdentification, V1Peer, V1Peer], None
]
"""A check of one completed pairing (disconnect, identification, client, peer): raise
ScenarioFailed via :func:`fail` when the messages are wrong."""


def _check_addresses(
    ctx: ScenarioContext,
    disconnect: wire.PeerDisconnect,
    identification: wire.PeerIdentification,
    client: V1Peer,
    peer: V1Peer,
) -> None:
    ctx.check_observed("PeerIdentification.peer", identification.peer, peer)
    ctx.check_equal(
        "PeerIdentification.peer",
        identification.peer,
        disconnect.peer,
        "both messages carry the Peer's observed address",
    )


def _check_pairing_id(
    ctx: ScenarioContext,
    disconnect: wire.PeerDisconnect,
    identification: wire.PeerIdentification,
    client: V1Peer,
    peer: V1Peer,
) -> None:
    """protocol.md 4.5: one pairing id in both messages, never seen in an earlier pairing (the
    peers bind it into their Noise prologue; a repeated id lets a recorded handshake verify)."""
    del client, peer
    ctx.check_equal(
        "PeerIdentification.pairing_id",
        identification.pairing_id.hex(),
        disconnect.pairing_id.hex(),
        "both pairing messages carry the same pairing id",
    )
    if disconnect.pairing_id in ctx.pairing_ids:
        fail(
            "a fresh pairing id in every pairing (protocol.md 4.5)",
            f"pairing id {disconnect.pairing_id.hex()} was already used in an earlier pairing",
        )
    ctx.pairing_ids.add(disconnect.pairing_id)


PAIRING_CHECKS: list[PairingCheck] = [_check_addresses, _check_pairing_id]
"""Every check :func:`complete_pairing` applies to the two pairing messages, so that every
pairing scenario applies it. A new rule about them (a field added to the wire) is one
function appended here."""


async def complete_pairing(
    ctx: ScenarioContext,
    client: V1Peer,
    peer: V1Peer,
    *,
    client_local: wire.Address | None = None,
    peer_local: wire.Address | None = None,
) -> tuple[wire.PeerDisconnect, wire.PeerIdentification]:
    """From the Peer's registration to the Client's close, checking roles and every address.

    The Peer closes as soon as it has read PeerDisconnect (a conforming Peer listens first; the
    harness needs no listener because it never connects to itself)."""
    got = await peer.next()
    disconnect = got.message
    if not isinstance(disconnect, wire.PeerDisconnect):
        # Show what the earlier registrant got, if anything: a swap of roles reads clearly.
        other = await client.next(0.05)
        observed = f"{got.describe(peer.render)}"
        if other.kind == "message":
            observed += f"; meanwhile {client.label} got {other.describe(client.render)}"
        fail(
            f"PeerDisconnect at {peer.label} (the later registrant is the Peer, §4 step 2)",
            observed,
        )
    ctx.check_observed("PeerDisconnect.peer", disconnect.peer, peer)
    ctx.check_observed("PeerDisconnect.client", disconnect.client, client)
    ctx.check_equal(
        "PeerDisconnect.client_local",
        disconnect.client_local,
        client_local,
        "the local address the Client advertised, or none (§4 step 2)",
    )
    peer.close()
    identification = await client.expect(
        wire.PeerIdentification,
        "the earlier registrant is the Client; it is introduced after the Peer's clean close (§4)",
    )
    ctx.check_equal("PeerIdentification.version", identification.version, 1, "§4 Confirmation")
    for check in PAIRING_CHECKS:
        check(ctx, disconnect, identification, client, peer)
    ctx.check_equal(
        "PeerIdentification.peer_local",
        identification.peer_local,
        peer_local,
        "the local address the Peer advertised, or none (§4 Confirmation)",
    )
    await expect_clean_close(
        client,
        "after PeerIdentification the mediator closes the Client's connection (§4 Confirmation)",
    )
    return disconnect, identification


async def expect_clean_close(peer: V1Peer, why: str) -> None:
    """The mediator must close ``peer`` with a FIN (EOF), not a reset: the harness read
    everything, so a reset would be the mediator's choice (§7 How the Mediator closes)."""
    await peer.expect_close(why)
    end = await peer.next(0)
    if end.kind == "reset":
        fail(f"a clean close (FIN) at {peer.label} ({why}; §7)", end.describe(peer.render))


async def _pair_up_to_disconnect(
    ctx: ScenarioContext, tag: str = ""
) -> tuple[V1Peer, V1Peer, wire.PeerDisconnect]:
    """Client A registered and waiting, Peer B registered and holding PeerDisconnect (names
    suffixed with ``tag`` when one scenario runs several pairs)."""
    a, b = ctx.ordered_keypairs(f"A{tag}", f"B{tag}")
    client = await ctx.register_waiting(f"client A{tag}", a, b.public_key.raw)
    peer = await ctx.register(f"peer B{tag}", b, a.public_key.raw)
    disconnect = await peer.expect(
        wire.PeerDisconnect, "the later registrant is the Peer (§4 step 2)"
    )
    return client, peer, disconnect


async def _with_healthy_pairing(
    ctx: ScenarioContext, disturbance: Callable[[], Awaitable[None]]
) -> None:
    """Run ``disturbance`` while an unrelated pairing is half way (its Client waiting), then
    complete that pairing: faults in one session never affect another (§7)."""
    h1, h2 = ctx.ordered_keypairs("H1", "H2")
    client = await ctx.register_waiting("healthy client", h1, h2.public_key.raw)
    await disturbance()
    peer = await ctx.register("healthy peer", h2, h1.public_key.raw)
    await complete_pairing(ctx, client, peer)


def _frame(message_type: int, payload: bytes, version: int = 1) -> bytes:
    """A frame with any header values, valid or not."""
    return wire.MAGIC + bytes((version, message_type)) + len(payload).to_bytes(2, "big") + payload


def _advertise_payload(ctx: ScenarioContext, name: str) -> bytes:
    a, b = ctx.keypair(name), ctx.keypair(name + "'")
    return wire.Advertise(1, a.public_key.raw, b.public_key.raw).payload()


# --- pairing -----------------------------------------------------------------------------------


async def _pairing_in_order(ctx: ScenarioContext, *, smaller_first: bool) -> None:
    a, b = ctx.ordered_keypairs("A", "B")
    first, second = (a, b) if smaller_first else (b, a)
    first_name, second_name = ("A", "B") if smaller_first else ("B", "A")
    client = await ctx.register_waiting(f"client {first_name}", first, second.public_key.raw)
    peer = await ctx.register(f"peer {second_name}", second, first.public_key.raw)
    await complete_pairing(ctx, client, peer)


async def pairing_a_then_b(ctx: ScenarioContext) -> None:
    await _pairing_in_order(ctx, smaller_first=True)


async def pairing_b_then_a(ctx: ScenarioContext) -> None:
    await _pairing_in_order(ctx, smaller_first=False)


async def pairing_local_addresses(ctx: ScenarioContext) -> None:
    a, b = ctx.ordered_keypairs("A", "B")
    a_local = wire.Address("192.0.2.10", 4444)
    b_local = wire.Address("2001:db8::7", 5555)
    client = await ctx.register_waiting("client A", a, b.public_key.raw, a_local)
    peer = await ctx.register("peer B", b, a.public_key.raw, b_local)
    await complete_pairing(ctx, client, peer, client_local=a_local, peer_local=b_local)


async def pairing_candidates(ctx: ScenarioContext) -> None:
    a, b = ctx.ordered_keypairs("A", "B")
    a_cands = (wire.Address("192.0.2.11", 4444), wire.Address("2001:db8::11", 4444))
    b_cands = (wire.Address("2001:db8::22", 5555),)
    later = (200, b"a later revision's item")  # unknown: the Mediator must still accept it
    client = await ctx.register_waiting(
        "client A", a, b.public_key.raw, None, wire.candidates_extension(a_cands)
    )
    peer = await ctx.register(
        "peer B", b, a.public_key.raw, None, (*wire.candidates_extension(b_cands), later)
    )
    disconnect = await peer.expect(wire.PeerDisconnect, "the later registrant is the Peer (§4)")
    if disconnect.candidates != a_cands:
        fail(
            f"PeerDisconnect.candidates = the Client's CANDIDATES {list(map(str, a_cands))} (§1)",
            f"{list(map(str, disconnect.candidates))}",
        )
    peer.half_close()
    identification = await client.expect(
        wire.PeerIdentification, "the Client is introduced after the Peer's close (§4)"
    )
    if identification.candidates != b_cands:
        fail(
            f"PeerIdentification.candidates = the Peer's CANDIDATES {list(map(str, b_cands))} (§1)",
            f"{list(map(str, identification.candidates))}",
        )


async def pairing_ordering_guarantee(ctx: ScenarioContext) -> None:
    client, peer, _ = await _pair_up_to_disconnect(ctx)
    hold = ctx.options.hold
    await client.expect_silence(
        hold,
        "the Peer still holds its connection open, so it has not confirmed: the Client must "
        "not be introduced yet, the ordering guarantee of §4",
    )
    peer.close()
    await client.expect(
        wire.PeerIdentification, "once the Peer closed cleanly the Client is introduced (§4)"
    )
    await client.expect_close("after PeerIdentification the Client's connection is closed")


async def pairing_mutual_intent_only(ctx: ScenarioContext) -> None:
    a, b, c = ctx.keypair("A"), ctx.keypair("B"), ctx.keypair("C")
    wants_b = await ctx.register("A (wants B)", a, b.public_key.raw)
    wants_c = await ctx.register("B (wants C)", b, c.public_key.raw)
    why = "A wants B but B wants C: no mutual intent, nobody is paired (§1 Mutual intent)"
    quiet = ctx.options.quiet
    await all_of([wants_b.expect_silence(quiet, why), wants_c.expect_silence(quiet, why)])
    peer = await ctx.register("C (wants B)", c, b.public_key.raw)
    await complete_pairing(ctx, wants_c, peer)
    await wants_b.expect_silence(
        ctx.options.settle, "A still waits: B was paired with C, who wanted B back"
    )


async def pairing_mutual_intent_newcomer(ctx: ScenarioContext) -> None:
    a, b, c = ctx.keypair("A"), ctx.keypair("B"), ctx.keypair("C")
    wants_b = await ctx.register_waiting("A (wants B)", a, b.public_key.raw)
    newcomer = await ctx.register("C (wants A)", c, a.public_key.raw)
    why = (
        "C wants A, but the waiting A wants B: no mutual intent, nobody is paired "
        "(§1 Mutual intent, §3 step 4.1)"
    )
    quiet = ctx.options.quiet
    await all_of([wants_b.expect_silence(quiet, why), newcomer.expect_silence(quiet, why)])
    peer = await ctx.register("B (wants A)", b, a.public_key.raw)
    await complete_pairing(ctx, wants_b, peer)
    await newcomer.expect_silence(
        ctx.options.settle, "C still waits: A was paired with B, who wanted A back"
    )


async def pairing_peer_half_close(ctx: ScenarioContext) -> None:
    client, peer, _ = await _pair_up_to_disconnect(ctx)
    peer.half_close()
    await client.expect(
        wire.PeerIdentification,
        "the Peer's FIN is its confirmation, even while it still reads (§4 Confirmation)",
    )
    await expect_clean_close(client, "after PeerIdentification the Client is closed (§4)")
    await expect_prompt_close(
        peer,
        "after the Peer's clean close the mediator closes the Peer's connection too, at once "
        "(§4 Confirmation)",
        deadline=ctx.options.confirm_timeout,
        allowed=(),
    )
    if (await peer.next(0)).kind == "reset":
        fail(f"a clean close (FIN) at {peer.label} (§7 How the Mediator closes)", "a reset")


async def pairing_independent_wishes(ctx: ScenarioContext) -> None:
    a, b, c = ctx.keypair("A"), ctx.keypair("B"), ctx.keypair("C")
    wants_b = await ctx.register_waiting("A (wants B)", a, b.public_key.raw)
    wants_c = await ctx.register_waiting("A (wants C)", a, c.public_key.raw)
    await wants_b.expect_silence(
        0, "same our_key, different their_key: independent registrations, not duplicates (§5)"
    )
    peer = await ctx.register("B (wants A)", b, a.public_key.raw)
    await complete_pairing(ctx, wants_b, peer)
    await wants_c.expect_silence(
        ctx.options.settle, "A's registration for C is independent and keeps waiting (§5)"
    )


async def pairing_concurrent_pairs(ctx: ScenarioContext) -> None:
    n = CONCURRENT_PAIRS
    keys = [ctx.ordered_keypairs(f"C{i}", f"P{i}") for i in range(n)]
    clients = await all_of(
        ctx.register(f"client C{i}", c, p.public_key.raw) for i, (c, p) in enumerate(keys)
    )
    await all_of(
        client.expect_silence(ctx.options.settle, "waiting for its partner") for client in clients
    )
    peers = await all_of(
        ctx.register(f"peer P{i}", p, c.public_key.raw) for i, (c, p) in enumerate(keys)
    )
    disconnects = await all_of(
        peer.expect(wire.PeerDisconnect, "each later registrant is its pair's Peer (§4)")
        for peer in peers
    )
    for client, peer, disconnect in zip(clients, peers, disconnects, strict=True):
        ctx.check_observed(f"{peer.label}'s PeerDisconnect.client", disconnect.client, client)
        ctx.check_observed(f"{peer.label}'s PeerDisconnect.peer", disconnect.peer, peer)
    observed_clients = [d.client for d in disconnects]
    if len(set(observed_clients)) != n:
        fail(
            f"{n} different Client addresses in the {n} PeerDisconnects (one per pair)",
            ", ".join(map(str, observed_clients)),
        )
    for peer in peers:
        peer.close()
    identifications = await all_of(
        client.expect(wire.PeerIdentification, "its own Peer closed cleanly (§4)")
        for client in clients
    )
    for client, peer, disconnect, identification in zip(
        clients, peers, disconnects, identifications, strict=True
    ):
        ctx.check_observed(f"{client.label}'s PeerIdentification.peer", identification.peer, peer)
        ctx.check_equal(
            f"{client.label}'s PeerIdentification.peer",
            identification.peer,
            disconnect.peer,
            f"the address {peer.label} was told it has, in its PeerDisconnect",
        )
    await all_of(client.expect_close("introduced, then closed (§4)") for client in clients)


async def pairing_duplicate_registration(ctx: ScenarioContext) -> None:
    a, b = ctx.ordered_keypairs("A", "B")
    older = await ctx.register_waiting("A (older)", a, b.public_key.raw)
    newer = await ctx.register("A (newer)", a, b.public_key.raw)
    await expect_prompt_close(
        older,
        "a newer verified registration of the same (our_key, their_key) replaces the older "
        "one, which is closed (§5)",
        deadline=None,
    )
    await newer.expect_silence(ctx.options.settle, "the newer registration waits in its place")
    peer = await ctx.register("peer B", b, a.public_key.raw)
    await complete_pairing(ctx, newer, peer)


async def pairing_duplicate_reason(ctx: ScenarioContext) -> None:
    a, b = ctx.ordered_keypairs("A", "B")
    older = await ctx.register_waiting("A (older)", a, b.public_key.raw)
    await ctx.register("A (newer)", a, b.public_key.raw)
    await expect_abort(older, R.DUPLICATE_REGISTRATION, "the replaced registration is told why")


# --- identity --------------------------------------------------------------------------------


async def _wrong_answer(ctx: ScenarioContext) -> tuple[V1Peer, Keypair, Keypair]:
    """A advertises correctly and answers the challenge with a wrong nonce."""
    a, b = ctx.ordered_keypairs("A", "B")
    peer, challenge = await ctx.advertise("A (answers wrongly)", a, b.public_key.raw)
    nonce = ctx.open_challenge(a, b.public_key.raw, challenge, peer.label)
    wrong = bytes((nonce[0] ^ 0x01,)) + nonce[1:]
    await peer.send(wire.AdvertiseResponse(wrong))
    return peer, a, b


async def identity_wrong_nonce_closes(ctx: ScenarioContext) -> None:
    peer, a, b = await _wrong_answer(ctx)
    await expect_prompt_close(
        peer,
        "a wrong AdvertiseResponse fails the identity check (§3 step 3)",
        deadline=ctx.options.response_timeout,
    )
    partner = await ctx.register("B (wants A)", b, a.public_key.raw)
    await partner.expect_silence(
        ctx.options.quiet, "A failed its identity check, so nothing may be paired with it"
    )


async def identity_wrong_nonce_reason(ctx: ScenarioContext) -> None:
    peer, _, _ = await _wrong_answer(ctx)
    await expect_abort(peer, R.IDENTITY_CHECK_FAILED, "the reason for a failed identity check")


async def _advertise_self(ctx: ScenarioContext) -> V1Peer:
    a = ctx.keypair("A")
    peer = await ctx.connect("A (wants A)")
    await peer.send(wire.Advertise(1, a.public_key.raw, a.public_key.raw))
    return peer


async def identity_self_pairing(ctx: ScenarioContext) -> None:
    async def disturbance() -> None:
        peer = await _advertise_self(ctx)
        await expect_prompt_close(
            peer,
            "our_key == their_key is refused before any challenge (§3 step 2.2, §5)",
            deadline=ctx.options.advertise_timeout,
        )

    await _with_healthy_pairing(ctx, disturbance)


async def identity_self_pairing_reason(ctx: ScenarioContext) -> None:
    peer = await _advertise_self(ctx)
    await expect_abort(peer, R.SELF_PAIRING, "the reason for refusing self pairing")


async def version_unsupported(ctx: ScenarioContext) -> None:
    a, b = ctx.ordered_keypairs("A", "B")
    advertise = wire.Advertise(1, a.public_key.raw, b.public_key.raw).payload()

    async def check(label: str, frame: bytes, what: str) -> None:
        peer = await ctx.connect(label)  # each sends at once: no idle deadline in the way
        await peer.send_raw(frame, what)
        await expect_abort(
            peer,
            R.UNSUPPORTED_VERSION,
            "unknown versions are refused with this code so newer clients can fall back (§5)",
        )
        await peer.expect_close("after AdvertiseAbort(UNSUPPORTED_VERSION) (§5)")

    await all_of(
        [
            check(
                "header version 2",
                _frame(0, advertise, version=2),
                "Advertise in a version 2 frame",
            ),
            check(
                "Advertise.version 2",
                _frame(0, bytes((2,)) + advertise[1:]),
                "Advertise with version field 2 in a version 1 frame",
            ),
            # The version byte comes before the type and the length: nothing after it is
            # judged (§5 Version mismatch).
            check(
                "header version 2, type 99, length 4097",
                wire.MAGIC + bytes((2, 99)) + (wire.MAX_PAYLOAD + 1).to_bytes(2, "big"),
                "version 2 header with type 99 and length 4097 (no payload)",
            ),
            # The version field comes before the layout: a future Advertise may be longer.
            check(
                "Advertise.version 2, 76 bytes",
                _frame(0, bytes((2,)) + advertise[1:] + bytes(10)),
                "Advertise with version field 2 and 10 more payload bytes",
            ),
        ]
    )


# --- framing and bad input --------------------------------------------------------------------


async def framing_split_frames(ctx: ScenarioContext) -> None:
    a, b = ctx.ordered_keypairs("A", "B")
    peer = await ctx.connect("client A (trickles)")
    frame = wire.Advertise(1, a.public_key.raw, b.public_key.raw).encode()
    # Cuts inside the magic, between version and type, inside the length, inside the payload;
    # one segment each (TCP_NODELAY), a few milliseconds apart: well inside any deadline.
    cuts = [0, 1, 3, 5, 30, len(frame)]
    for start, end in itertools.pairwise(cuts):
        await peer.send_raw(frame[start:end], f"Advertise bytes {start}..{end} of {len(frame)}")
        await asyncio.sleep(0.002)
    challenge = await peer.expect(
        wire.AdvertiseChallenge,
        "a frame split across many reads is reassembled (spec/protocol.md §2)",
    )
    nonce = ctx.open_challenge(a, b.public_key.raw, challenge, peer.label)
    response = wire.AdvertiseResponse(nonce).encode()
    await peer.send_raw(response[:3], "AdvertiseResponse bytes 0..3")
    await asyncio.sleep(0.002)
    await peer.send_raw(response[3:], f"AdvertiseResponse bytes 3..{len(response)}")
    await peer.expect_silence(ctx.options.settle, "registered, waiting for its partner")
    partner = await ctx.register("peer B", b, a.public_key.raw)
    await complete_pairing(ctx, peer, partner)


async def framing_malformed_closes(ctx: ScenarioContext) -> None:
    opts = ctx.options
    advertise = _advertise_payload(ctx, "X")
    cases: list[tuple[str, bytes]] = [
        ("not a p2psc frame", b"GET / HTTP/1.1\r\nHost: mediator\r\n\r\n"),
        ("unknown message type 99", _frame(99, b"")),
        ("Advertise with a truncated payload", _frame(0, advertise[:3])),
        ("Advertise with a trailing byte", _frame(0, advertise[:65] + b"\x00\x00")),
        ("Advertise with local address family 9", _frame(0, advertise[:65] + b"\x09")),
        (
            "Advertise with local address port 0",
            _frame(0, advertise[:65] + b"\x04\xc0\x00\x02\x01\x00\x00"),
        ),
        ("AdvertiseResponse before any Advertise", wire.AdvertiseResponse(bytes(32)).encode()),
    ]

    async def bad_first_frame(label: str, data: bytes) -> None:
        peer = await ctx.connect(label)
        await peer.send_raw(data, label)
        await expect_prompt_close(
            peer,
            f"{label}: a frame that cannot be decoded or is not the expected message (§7)",
            deadline=opts.advertise_timeout,
        )

    async def second_advertise() -> None:
        x, y = ctx.keypair("Y"), ctx.keypair("Y'")
        peer, _ = await ctx.advertise("second Advertise", x, y.public_key.raw)
        await peer.send(wire.Advertise(1, x.public_key.raw, y.public_key.raw))
        await expect_prompt_close(
            peer,
            "a second Advertise while challenged is not the expected message (§7)",
            deadline=opts.response_timeout,
        )

    async def disturbance() -> None:
        await all_of([*(bad_first_frame(*case) for case in cases), second_advertise()])

    await _with_healthy_pairing(ctx, disturbance)


async def framing_oversized_closes(ctx: ScenarioContext) -> None:
    opts = ctx.options

    async def oversized_header(label: str, length: int) -> None:
        peer = await ctx.connect(label)
        header = wire.MAGIC + bytes((1, 0)) + length.to_bytes(2, "big")
        await peer.send_raw(header, f"frame header announcing {length} payload bytes (no payload)")
        await expect_prompt_close(
            peer,
            f"a header announcing {length} > {wire.MAX_PAYLOAD} bytes is refused as soon as "
            "it arrives, before any payload (§6)",
            deadline=opts.advertise_timeout,
        )

    async def oversized_response() -> None:
        x, y = ctx.keypair("Y"), ctx.keypair("Y'")
        peer, _ = await ctx.advertise("oversized response", x, y.public_key.raw)
        header = wire.MAGIC + bytes((1, 2)) + (wire.MAX_PAYLOAD + 1).to_bytes(2, "big")
        await peer.send_raw(header, f"AdvertiseResponse header announcing {wire.MAX_PAYLOAD + 1}")
        await expect_prompt_close(
            peer,
            "an oversized frame while challenged is refused as soon as its header arrives (§6)",
            deadline=opts.response_timeout,
        )

    async def disturbance() -> None:
        await all_of(
            [
                oversized_header("header length 4097", wire.MAX_PAYLOAD + 1),
                oversized_header("header length 65535", 0xFFFF),
                oversized_response(),
            ]
        )

    await _with_healthy_pairing(ctx, disturbance)


async def framing_cut_frame(ctx: ScenarioContext) -> None:
    c, d = ctx.ordered_keypairs("C", "D")

    async def disturbance() -> None:
        cut = await ctx.connect("C (cut Advertise)")
        frame = wire.Advertise(1, c.public_key.raw, d.public_key.raw).encode()
        await cut.send_raw(frame[:30], f"Advertise bytes 0..30 of {len(frame)}, then close")
        await asyncio.sleep(0.02)
        cut.close()
        peer, challenge = await ctx.advertise("C (cut response)", c, d.public_key.raw)
        nonce = ctx.open_challenge(c, d.public_key.raw, challenge, peer.label)
        response = wire.AdvertiseResponse(nonce).encode()
        await peer.send_raw(response[:10], f"AdvertiseResponse bytes 0..10 of {len(response)}")
        await asyncio.sleep(0.02)
        peer.close()

    await _with_healthy_pairing(ctx, disturbance)
    # Nothing of C's cut attempts may linger: C and D now pair normally.
    client = await ctx.register_waiting("client C", c, d.public_key.raw)
    peer = await ctx.register("peer D", d, c.public_key.raw)
    await complete_pairing(ctx, client, peer)


async def framing_bytes_while_waiting(ctx: ScenarioContext) -> None:
    a, b = ctx.ordered_keypairs("A", "B")
    waiting = await ctx.register_waiting("A (waiting)", a, b.public_key.raw)
    await waiting.send_raw(b"\x00", "1 byte after the AdvertiseResponse")
    await expect_prompt_close(
        waiting,
        "an advertiser must not send anything after its AdvertiseResponse (§3, §7)",
        deadline=None,
    )
    partner = await ctx.register("B (wants A)", b, a.public_key.raw)
    await partner.expect_silence(
        ctx.options.quiet, "A's registration ended with its connection, so B waits unpaired (§7)"
    )


async def framing_bytes_after_response(ctx: ScenarioContext) -> None:
    a, b = ctx.ordered_keypairs("A", "B")
    client = await ctx.register_waiting("client A (innocent)", a, b.public_key.raw)
    peer, challenge = await ctx.advertise("B (byte after its response)", b, a.public_key.raw)
    nonce = ctx.open_challenge(b, a.public_key.raw, challenge, peer.label)
    await peer.send_raw(
        wire.AdvertiseResponse(nonce).encode() + b"\x00",
        "a correct AdvertiseResponse and 1 more byte, in one write",
    )
    why = (
        "bytes behind the AdvertiseResponse are refused before it is acted on: nothing is "
        "paired or registered (§3 step 3)"
    )
    await all_of(
        [
            expect_prompt_close(peer, why, deadline=ctx.options.response_timeout),
            client.expect_silence(
                ctx.options.quiet, "the waiting Client is not disturbed by B's violation (§3)"
            ),
        ]
    )
    again = await ctx.register("peer B (again)", b, a.public_key.raw)
    await complete_pairing(ctx, client, again)


async def framing_malformed_reason(ctx: ScenarioContext) -> None:
    async def garbage() -> None:
        peer = await ctx.connect("garbage")
        await peer.send_raw(b"GET / HTTP/1.1\r\n\r\n", "not a p2psc frame")
        await expect_abort(peer, R.MALFORMED, "an undecodable frame (§7)")

    async def oversized() -> None:
        peer = await ctx.connect("oversized")
        await peer.send_raw(_frame(0, b"")[:4] + b"\x10\x01", "header announcing 4097 bytes")
        await expect_abort(peer, R.MALFORMED, "a payload over the maximum (§6)")

    async def stray_byte() -> None:
        a, b = ctx.ordered_keypairs("A", "B")
        waiting = await ctx.register_waiting("A (waiting)", a, b.public_key.raw)
        await waiting.send_raw(b"\x00", "1 byte after the AdvertiseResponse")
        await expect_abort(waiting, R.MALFORMED, "a byte after the handshake (§7)")

    await all_of([garbage(), oversized(), stray_byte()])


# --- keepalive (§4.1) ---------------------------------------------------------------------------

KEEPALIVE_MS = 1000
"""The interval the keepalive scenarios announce: the smallest allowed, so the liveness
deadline (twice it) is short."""
PING_GAP = 0.6
"""Seconds between the scenarios' Pings: above the 0.5 s flood floor of §4.1 rule 4."""


async def _ping(ctx: ScenarioContext, peer: V1Peer, token: int, why: str) -> None:
    await peer.send(wire.Ping(token, KEEPALIVE_MS))
    pong = await peer.expect(wire.Pong, why)
    if pong.token != token:
        fail(f"Pong({token}) at {peer.label} ({why})", f"Pong({pong.token})")


async def keepalive_ping_pong(ctx: ScenarioContext) -> None:
    a, b = ctx.ordered_keypairs("A", "B")
    client = await ctx.register_waiting("client A", a, b.public_key.raw)
    for token in (7, 0xFFFFFFFF):
        await _ping(ctx, client, token, "a waiting advertiser's Ping is answered at once (§4.1)")
        await asyncio.sleep(PING_GAP)
    # The keepalive changed nothing about the registration: the pairing completes normally.
    peer = await ctx.register("peer B", b, a.public_key.raw)
    await complete_pairing(ctx, client, peer)


async def keepalive_while_confirming(ctx: ScenarioContext) -> None:
    client, peer, _ = await _pair_up_to_disconnect(ctx)
    await _ping(
        ctx, client, 1, "a confirming Client's Ping is answered and fails nothing (§4.1, §4)"
    )
    peer.half_close()
    identification = await client.expect(
        wire.PeerIdentification, "the pairing goes on after the Client's Ping (§4.1)"
    )
    del identification
    await expect_clean_close(client, "the Client is closed after PeerIdentification (§4)")


async def keepalive_flood_closes(ctx: ScenarioContext) -> None:
    a, b = ctx.ordered_keypairs("A", "B")
    waiting = await ctx.register_waiting("A (flooding)", a, b.public_key.raw)
    await _ping(ctx, waiting, 1, "a waiting advertiser's Ping is answered at once (§4.1)")
    await waiting.send(wire.Ping(2, KEEPALIVE_MS))
    await expect_prompt_close(
        waiting,
        "a Ping less than 0.5 s after the previous one is a flood (§4.1 rule 4)",
        deadline=None,
        allowed=(wire.AdvertiseAbort, wire.Pong),
    )


async def keepalive_silent(ctx: ScenarioContext) -> None:
    a, b = ctx.ordered_keypairs("A", "B")
    waiting = await ctx.register_waiting("A (goes silent)", a, b.public_key.raw)
    configured = 2 * KEEPALIVE_MS / 1000
    since = ctx.transcript.now()  # the liveness deadline cannot start before the Ping is sent
    await _ping(ctx, waiting, 1, "a waiting advertiser's Ping is answered at once (§4.1)")
    what = "twice the announced interval"
    left = configured - (ctx.transcript.now() - since)
    got = await waiting.next(max(left, 0.0))
    if got.kind != "timeout" and ctx.transcript.now() - since < configured:
        fail(
            f"nothing at {waiting.label} before {what} = {configured:g} s (§4.1 rule 3; §2: a "
            "deadline MUST NOT fire early)",
            got.describe(waiting.render),
        )
    if got.kind != "timeout":
        waiting.push_back(got)
    seen = await waiting.expect_close(
        "a waiting advertiser that stops pinging is closed (§4.1 rule 3)",
        allowed=(wire.AdvertiseAbort,),
        timeout=_late_bound(ctx, configured) - (ctx.transcript.now() - since),
    )
    measurement = ctx.measure(f"{what} at {waiting.label}", configured, since)
    codes = [m.code for m in seen if isinstance(m, wire.AdvertiseAbort)]
    if R.SILENT not in codes:
        observed = ", ".join(f"AdvertiseAbort({reason_name(c)})" for c in codes) or "no abort"
        fail(f"AdvertiseAbort(SILENT) at {waiting.label} before the close (§4.1, §8)", observed)
    if measurement.too_late:
        fail(
            f"the close at {waiting.label} at most {ctx.options.late:g} s after {what} = "
            f"{configured:g} s (the harness's tolerance is --late)",
            f"closed {measurement.measured:.3f} s after the Ping",
        )
    partner = await ctx.register("B (wants A)", b, a.public_key.raw)
    await partner.expect_silence(
        ctx.options.quiet, "A's registration ended with its silence, so B waits unpaired (§4.1)"
    )


# --- coordinated pairings (§4.3) ---------------------------------------------------------------

COORDINATE: wire.Extensions = ((int(wire.ExtensionType.COORDINATE), b""),)
"""The COORDINATE capability (protocol.md 3.4, type 3, empty)."""


async def _coordinated_disconnect(
    ctx: ScenarioContext,
) -> tuple[V1Peer, V1Peer, wire.PeerDisconnect]:
    """Client A and Peer B both offering COORDINATE; B holds a PeerDisconnect, which must echo
    the capability (a Mediator that does not coordinate fails here, as these scenarios are
    recommended: coordination is optional)."""
    a, b = ctx.ordered_keypairs("A", "B")
    client = await ctx.register_waiting("client A", a, b.public_key.raw, extensions=COORDINATE)
    peer = await ctx.register("peer B", b, a.public_key.raw, extensions=COORDINATE)
    disconnect = await peer.expect(
        wire.PeerDisconnect, "the later registrant is the Peer (§4 step 2)"
    )
    if not wire.coordinated(disconnect.extensions):
        fail(
            "COORDINATE in PeerDisconnect when both partners offered it (§4.3; optional: a "
            "Mediator that does not coordinate fails the recommended coordination scenarios)",
            f"PeerDisconnect without it (extensions {disconnect.extensions!r})",
        )
    return client, peer, disconnect


async def _coordinated_introduction(ctx: ScenarioContext) -> tuple[V1Peer, V1Peer]:
    """A coordinated pairing up to the Client's PeerIdentification (both connections open)."""
    client, peer, _ = await _coordinated_disconnect(ctx)
    await peer.send(wire.Status(wire.StatusCode.PUNCHING))
    identification = await client.expect(
        wire.PeerIdentification, "Status(PUNCHING) is the Peer's confirmation (§4.3 rule 1)"
    )
    if not wire.coordinated(identification.extensions):
        fail(
            "COORDINATE in the PeerIdentification of a coordinated pairing (§4.3)",
            f"PeerIdentification without it (extensions {identification.extensions!r})",
        )
    return client, peer


async def coordinate_one_sided(ctx: ScenarioContext) -> None:
    a, b = ctx.ordered_keypairs("A", "B")
    client = await ctx.register_waiting("client A", a, b.public_key.raw, extensions=COORDINATE)
    peer = await ctx.register("peer B", b, a.public_key.raw)
    disconnect, identification = await complete_pairing(ctx, client, peer)
    for name, message in (("PeerDisconnect", disconnect), ("PeerIdentification", identification)):
        if wire.coordinated(message.extensions):
            fail(
                f"no COORDINATE in {name} when only one partner offered it (§4.3 Capability)",
                f"{name} with COORDINATE",
            )


async def coordinate_pairing(ctx: ScenarioContext) -> None:
    client, peer = await _coordinated_introduction(ctx)
    await client.expect_silence(
        ctx.options.quiet, "the Client's connection is held while it punches (§4.3 rule 1)"
    )
    await _ping(ctx, client, 1, "a coordinating peer's Ping is answered (§4.3 rule 2)")
    # The race of §4.3 rule 3: the Client leaves first; the Peer must not be told anything.
    await client.send(wire.Status(wire.StatusCode.DIRECT))
    client.close()
    await peer.expect_silence(
        ctx.options.quiet, "a done status never makes the survivor abort (§4.3 rule 3)"
    )
    await peer.send(wire.Status(wire.StatusCode.DIRECT))
    await expect_clean_close(peer, "a done status ends that side's session (§4.3 rule 3)")


async def coordinate_close_is_no_confirmation(ctx: ScenarioContext) -> None:
    client, peer, _ = await _coordinated_disconnect(ctx)
    peer.close()
    seen = await expect_prompt_close(
        client,
        "in a coordinated pairing the Peer's close is no confirmation: the Client is never "
        "introduced (§4.3 rule 1)",
        deadline=ctx.options.confirm_timeout,
    )
    codes = [m.code for m in seen if isinstance(m, wire.AdvertiseAbort)]
    if R.PEER_GONE not in codes:
        observed = ", ".join(f"AdvertiseAbort({reason_name(c)})" for c in codes) or "no abort"
        fail(
            f"AdvertiseAbort(PEER_GONE) at {client.label} before the close (§4.3 rule 1)", observed
        )


async def coordinate_partner_lost(ctx: ScenarioContext) -> None:
    client, peer = await _coordinated_introduction(ctx)
    client.reset()  # the Client's process died while punching
    seen = await expect_prompt_close(
        peer,
        "the survivor is told at once that its partner is gone (§4.3 rule 4)",
        deadline=ctx.options.confirm_timeout,
    )
    codes = [m.code for m in seen if isinstance(m, wire.AdvertiseAbort)]
    if R.PARTNER_LOST not in codes:
        observed = ", ".join(f"AdvertiseAbort({reason_name(c)})" for c in codes) or "no abort"
        fail(
            f"AdvertiseAbort(PARTNER_LOST) at {peer.label} before the close (§4.3 rule 4)", observed
        )


# --- faults while pairing ---------------------------------------------------------------------


async def fault_peer_reset(ctx: ScenarioContext) -> None:
    client, peer, _ = await _pair_up_to_disconnect(ctx)
    peer.reset()
    await expect_prompt_close(
        client,
        "a reset is not a confirmation: the pairing fails and the Client is closed, never "
        "introduced (§4 Failure, and (c) of the ordering guarantee)",
        deadline=ctx.options.confirm_timeout,
    )


async def fault_peer_sends_bytes(ctx: ScenarioContext) -> None:
    client, peer, _ = await _pair_up_to_disconnect(ctx)
    await peer.send_raw(b"\x00", "1 byte after PeerDisconnect (the Peer keeps its connection)")
    deadline = ctx.options.confirm_timeout
    await all_of(
        [
            expect_prompt_close(
                peer, "a Peer that sends anything after PeerDisconnect (§4, §7)", deadline=deadline
            ),
            expect_prompt_close(
                client,
                "its Peer misbehaved: the pairing fails and the Client is never introduced (§4)",
                deadline=deadline,
            ),
        ]
    )


async def fault_client_leaves(ctx: ScenarioContext) -> None:
    client, peer, _ = await _pair_up_to_disconnect(ctx)
    client.close()
    await expect_prompt_close(
        peer,
        "the Client closed while confirming: the mediator closes the Peer too (§4 Failure)",
        deadline=ctx.options.confirm_timeout,
    )


async def fault_client_sends_bytes(ctx: ScenarioContext) -> None:
    client, peer, _ = await _pair_up_to_disconnect(ctx)
    await client.send_raw(b"\x00", "1 byte while its Peer is confirming")
    deadline = ctx.options.confirm_timeout
    await all_of(
        [
            expect_prompt_close(
                client, "a Client that sends anything while confirming (§4, §7)", deadline=deadline
            ),
            expect_prompt_close(
                peer,
                "its Client misbehaved: the pairing fails and the Peer is closed (§4 Failure)",
                deadline=deadline,
            ),
        ]
    )


async def fault_peer_gone_reason(ctx: ScenarioContext) -> None:
    async def peer_resets() -> None:
        client, peer, _ = await _pair_up_to_disconnect(ctx, "1")
        peer.reset()
        await expect_abort(client, R.PEER_GONE, "its Peer reset its connection (§4 Failure)")

    async def client_leaves() -> None:
        client, peer, _ = await _pair_up_to_disconnect(ctx, "2")
        client.close()
        await expect_abort(peer, R.PEER_GONE, "its Client closed while confirming (§4 Failure)")

    await all_of([peer_resets(), client_leaves()])


# --- deadlines --------------------------------------------------------------------------------


def _needs(name: str) -> Callable[[HarnessOptions], str | None]:
    flag = "--" + name.replace("_", "-")

    def check(options: HarnessOptions) -> str | None:
        if getattr(options, name) is None:
            return f"the mediator's {name} is not known ({flag} 0)"
        return None

    return check


def _late_bound(ctx: ScenarioContext, configured: float) -> float:
    """How long to wait for a deadline's close: the tolerance, plus the harness's own wait."""
    return configured + ctx.options.late + ctx.options.timeout


async def _timed_out(
    ctx: ScenarioContext, peer: V1Peer, what: str, configured: float, since: float, why: str
) -> None:
    """``peer`` must be closed after ``AdvertiseAbort(TIMEOUT)`` within the tolerance of the
    configured deadline (the lower bound is the ``deadline-*`` scenarios' job)."""
    label = f"{what} at {peer.label}"
    try:
        seen = await peer.expect_close(
            why,
            allowed=(wire.AdvertiseAbort, wire.AdvertiseRetry),
            timeout=_late_bound(ctx, configured) - (ctx.transcript.now() - since),
        )
    except ScenarioFailed:
        ctx.measure(label, configured, since, seen=peer.ended_at is not None)
        raise
    measurement = ctx.measure(label, configured, since)
    codes = [m.code for m in seen if isinstance(m, wire.AdvertiseAbort)]
    if R.TIMEOUT not in codes:
        observed = ", ".join(f"AdvertiseAbort({reason_name(c)})" for c in codes) or "no abort"
        fail(f"AdvertiseAbort(TIMEOUT) at {peer.label} before the close ({why})", observed)
    if measurement.too_late:
        fail(
            f"the close at {peer.label} at most {ctx.options.late:g} s after {what} = "
            f"{configured:g} s (§2: a deadline MAY fire a little late; the harness's tolerance "
            "is --late)",
            f"closed {measurement.measured:.3f} s after the step began",
        )


async def _not_early(
    ctx: ScenarioContext, peers: list[V1Peer], what: str, configured: float, since: float
) -> None:
    """Nothing at all (no message, no close) may reach any of ``peers`` before ``configured``
    seconds after ``since``; then the time of the first close is recorded (not judged: how late
    it may come is the ``timeout-*`` scenarios' job)."""
    flag = "--" + what.replace("_", "-")

    async def one(peer: V1Peer) -> None:
        left = configured - (ctx.transcript.now() - since)
        got = await peer.next(max(left, 0.0))
        if got.kind == "timeout":
            return
        elapsed = ctx.transcript.now() - since
        if elapsed >= configured:  # arrived just as the wait ended: on time
            peer.push_back(got)
            return
        ctx.measure(f"{what} at {peer.label}", configured, since)
        fail(
            f"nothing at {peer.label} before {what} = {configured:g} s have passed (§2: a "
            f"deadline MUST NOT fire early; if your mediator's {what} is not {configured:g} s, "
            f"tell the harness with {flag})",
            f"{got.describe(peer.render)} after {elapsed:.3f} s",
        )

    await all_of(one(peer) for peer in peers)
    first = peers[0]
    got = await first.next(_late_bound(ctx, configured) - (ctx.transcript.now() - since))
    while got.kind == "message":
        got = await first.next(_late_bound(ctx, configured) - (ctx.transcript.now() - since))
    ctx.measure(f"{what} at {first.label}", configured, since, seen=got.closed)


def _handover(ctx: ScenarioContext, previous: float | None) -> float:
    """How long a step waits before it ends, so that the previous state's deadline, if a
    mediator left it running, would fire well inside the next step's (§2: entering a state
    replaces the deadline)."""
    return 0.0 if previous is None else previous / 2


async def deadline_advertise_not_early(ctx: ScenarioContext) -> None:
    configured = ctx.options.advertise_timeout
    assert configured is not None
    peer = await ctx.connect("idle")
    await _not_early(ctx, [peer], "advertise_timeout", configured, peer.started_at)


async def deadline_response_not_early(ctx: ScenarioContext) -> None:
    configured = ctx.options.response_timeout
    assert configured is not None
    a, b = ctx.ordered_keypairs("A", "B")
    peer = await ctx.connect("A (never answers)")
    await asyncio.sleep(_handover(ctx, ctx.options.advertise_timeout))
    await peer.send(wire.Advertise(1, a.public_key.raw, b.public_key.raw))
    since = peer.sent_at
    assert since is not None
    await peer.expect(wire.AdvertiseChallenge, "the answer to a valid Advertise (§3)")
    await _not_early(ctx, [peer], "response_timeout", configured, since)


async def deadline_confirm_not_early(ctx: ScenarioContext) -> None:
    configured = ctx.options.confirm_timeout
    assert configured is not None
    a, b = ctx.ordered_keypairs("A", "B")
    client = await ctx.register_waiting("client A", a, b.public_key.raw)
    peer, challenge = await ctx.advertise("peer B (never closes)", b, a.public_key.raw)
    nonce = ctx.open_challenge(b, a.public_key.raw, challenge, peer.label)
    await asyncio.sleep(_handover(ctx, ctx.options.response_timeout))
    await peer.send(wire.AdvertiseResponse(nonce))
    since = peer.sent_at
    assert since is not None
    await peer.expect(wire.PeerDisconnect, "the later registrant is the Peer (§4 step 2)")
    await _not_early(ctx, [peer, client], "confirm_timeout", configured, since)


async def timeout_idle(ctx: ScenarioContext) -> None:
    configured = ctx.options.advertise_timeout
    assert configured is not None
    peer = await ctx.connect("idle")
    await _timed_out(
        ctx,
        peer,
        "advertise_timeout",
        configured,
        peer.started_at,
        f"no Advertise within advertise_timeout = {configured:g} s (§6; tell the harness your "
        "value with --advertise-timeout)",
    )


async def timeout_response(ctx: ScenarioContext) -> None:
    configured = ctx.options.response_timeout
    assert configured is not None
    a, b = ctx.ordered_keypairs("A", "B")
    peer = await ctx.connect("A (never answers)")
    await peer.send(wire.Advertise(1, a.public_key.raw, b.public_key.raw))
    since = peer.sent_at
    assert since is not None
    await peer.expect(wire.AdvertiseChallenge, "the answer to a valid Advertise (§3)")
    await _timed_out(
        ctx,
        peer,
        "response_timeout",
        configured,
        since,
        f"no AdvertiseResponse within response_timeout = {configured:g} s (§6; tell the "
        "harness your value with --response-timeout)",
    )


async def timeout_confirm(ctx: ScenarioContext) -> None:
    configured = ctx.options.confirm_timeout
    assert configured is not None
    a, b = ctx.ordered_keypairs("A", "B")
    client = await ctx.register_waiting("client A", a, b.public_key.raw)
    peer = await ctx.register("peer B (never closes)", b, a.public_key.raw)
    since = peer.sent_at
    assert since is not None
    await peer.expect(wire.PeerDisconnect, "the later registrant is the Peer (§4 step 2)")
    why = (
        f"the Peer never closes: confirm_timeout = {configured:g} s ends the pairing (§4, §6; "
        "tell the harness your value with --confirm-timeout)"
    )
    await all_of(
        [
            _timed_out(ctx, client, "confirm_timeout", configured, since, why),
            _timed_out(ctx, peer, "confirm_timeout", configured, since, why),
        ]
    )


def _scenario(
    name: str,
    section: Section,
    level: Level,
    summary: str,
    body: Callable[[ScenarioContext], Awaitable[None]],
    **extra: Any,
) -> Scenario:
    return Scenario(name, section, level, summary, body, **extra)


V1_SCENARIOS: tuple[Scenario, ...] = (
    _scenario(
        "pairing-a-then-b",
        S4,
        REQUIRED,
        "A registers, then B: B (later) gets PeerDisconnect with both observed addresses; "
        "after B closes, A gets PeerIdentification with B's address and is closed",
        pairing_a_then_b,
    ),
    _scenario(
        "pairing-b-then-a",
        S4,
        REQUIRED,
        "the same with the larger key first: roles follow registration order, not key order",
        pairing_b_then_a,
    ),
    _scenario(
        "pairing-local-addresses",
        S4,
        REQUIRED,
        "advertised local addresses (IPv4 and IPv6) are forwarded: the Client's in "
        "PeerDisconnect.client_local, the Peer's in PeerIdentification.peer_local",
        pairing_local_addresses,
    ),
    _scenario(
        "pairing-candidates",
        S1,
        REQUIRED,
        "advertised CANDIDATES (IPv4 and IPv6; beside an unknown extension item) are forwarded: "
        "the Client's in PeerDisconnect, the Peer's in PeerIdentification",
        pairing_candidates,
    ),
    _scenario(
        "pairing-ordering-guarantee",
        S4,
        REQUIRED,
        "while the Peer holds its connection open after PeerDisconnect the Client hears "
        "nothing; PeerIdentification comes only after the Peer's clean close",
        pairing_ordering_guarantee,
    ),
    _scenario(
        "pairing-mutual-intent-only",
        S1,
        REQUIRED,
        "A wants B and B wants C: nobody is paired; when C wants B, B and C pair and A waits on",
        pairing_mutual_intent_only,
    ),
    _scenario(
        "pairing-mutual-intent-newcomer",
        S1,
        REQUIRED,
        "A waits for B; C, wanting A, arrives: nobody is paired (A wants someone else); B then "
        "pairs with A and C waits on",
        pairing_mutual_intent_newcomer,
    ),
    _scenario(
        "pairing-peer-half-close",
        S4,
        REQUIRED,
        "a Peer that only shuts down its sending side confirms: the Client is introduced and "
        "the mediator closes the Peer's connection at once",
        pairing_peer_half_close,
    ),
    _scenario(
        "pairing-independent-wishes",
        S5,
        REQUIRED,
        "one key waiting for two different keys holds two independent registrations",
        pairing_independent_wishes,
    ),
    _scenario(
        "pairing-concurrent-pairs",
        S4,
        REQUIRED,
        f"{CONCURRENT_PAIRS} pairs in flight at once: each side gets its own partner's address",
        pairing_concurrent_pairs,
    ),
    _scenario(
        "pairing-duplicate-registration",
        S5,
        REQUIRED,
        "a second registration of the same (our_key, their_key) closes the older one and "
        "pairs in its place",
        pairing_duplicate_registration,
    ),
    _scenario(
        "pairing-duplicate-reason",
        S5,
        RECOMMENDED,
        "the replaced registration gets AdvertiseAbort(DUPLICATE_REGISTRATION)",
        pairing_duplicate_reason,
    ),
    _scenario(
        "identity-wrong-nonce-closes",
        S3,
        REQUIRED,
        "a wrong AdvertiseResponse closes the connection and registers nothing",
        identity_wrong_nonce_closes,
    ),
    _scenario(
        "identity-wrong-nonce-reason",
        S3,
        RECOMMENDED,
        "a wrong AdvertiseResponse gets AdvertiseAbort(IDENTITY_CHECK_FAILED)",
        identity_wrong_nonce_reason,
    ),
    _scenario(
        "identity-self-pairing",
        S5,
        REQUIRED,
        "an Advertise with our_key == their_key is closed without a challenge",
        identity_self_pairing,
    ),
    _scenario(
        "identity-self-pairing-reason",
        S5,
        RECOMMENDED,
        "self pairing gets AdvertiseAbort(SELF_PAIRING)",
        identity_self_pairing_reason,
    ),
    _scenario(
        "version-unsupported",
        S5,
        REQUIRED,
        "a version 2 frame header, or Advertise.version 2, gets "
        "AdvertiseAbort(UNSUPPORTED_VERSION) and a close",
        version_unsupported,
    ),
    _scenario(
        "framing-split-frames",
        FRAMING,
        REQUIRED,
        "frames split across many reads (header byte by byte) are reassembled",
        framing_split_frames,
    ),
    _scenario(
        "framing-malformed-closes",
        S7,
        REQUIRED,
        "bad magic, unknown type, truncated or trailing payload, invalid fields, wrong first "
        "or second message: each closed at once, while an unrelated pairing completes",
        framing_malformed_closes,
    ),
    _scenario(
        "framing-oversized-closes",
        S6,
        REQUIRED,
        "a header announcing more than 4096 payload bytes is closed as soon as the header "
        "arrives, while an unrelated pairing completes",
        framing_oversized_closes,
    ),
    _scenario(
        "framing-cut-frame",
        S7,
        REQUIRED,
        "closing in the middle of a frame leaves nothing behind: the same keys pair normally "
        "afterwards, and an unrelated pairing completes",
        framing_cut_frame,
    ),
    _scenario(
        "framing-bytes-while-waiting",
        S3,
        REQUIRED,
        "a byte after the AdvertiseResponse closes the connection and removes the registration",
        framing_bytes_while_waiting,
    ),
    _scenario(
        "framing-bytes-after-response",
        S3,
        REQUIRED,
        "a byte behind a correct AdvertiseResponse (same write) closes that connection before "
        "anything is paired: the waiting partner is undisturbed and pairs later",
        framing_bytes_after_response,
    ),
    _scenario(
        "framing-malformed-reason",
        S7,
        RECOMMENDED,
        "bad magic, an oversized header and a byte while waiting get AdvertiseAbort(MALFORMED)",
        framing_malformed_reason,
    ),
    _scenario(
        "keepalive-ping-pong",
        S41,
        REQUIRED,
        "a waiting advertiser's Pings are each answered with a Pong of the same token; the "
        "registration then pairs normally",
        keepalive_ping_pong,
    ),
    _scenario(
        "keepalive-while-confirming",
        S41,
        REQUIRED,
        "a Client's Ping while its Peer confirms is answered and fails nothing: the Client is "
        "introduced after the Peer's close",
        keepalive_while_confirming,
    ),
    _scenario(
        "keepalive-flood-closes",
        S41,
        REQUIRED,
        "a Ping less than 0.5 s after the previous one closes the connection",
        keepalive_flood_closes,
    ),
    _scenario(
        "keepalive-silent",
        S41,
        RECOMMENDED,
        "a waiting advertiser that announced 1 s and stops pinging gets AdvertiseAbort(SILENT) "
        "and a close within --late of 2 s, never before, and its registration is gone",
        keepalive_silent,
    ),
    _scenario(
        "coordinate-one-sided",
        S42,
        REQUIRED,
        "only the Client offers COORDINATE: the pairing is exactly an uncoordinated one (no "
        "COORDINATE echoed, the Peer's close confirms)",
        coordinate_one_sided,
    ),
    _scenario(
        "coordinate-pairing",
        S42,
        RECOMMENDED,
        "both offer COORDINATE: it is echoed, Status(PUNCHING) introduces the Client, both "
        "connections are held, Pings are answered, and a done status from one side tells the "
        "other nothing",
        coordinate_pairing,
    ),
    _scenario(
        "coordinate-close-not-confirmation",
        S42,
        RECOMMENDED,
        "in a coordinated pairing the Peer's close after PeerDisconnect is no confirmation: the "
        "Client gets AdvertiseAbort(PEER_GONE), never PeerIdentification",
        coordinate_close_is_no_confirmation,
    ),
    _scenario(
        "coordinate-partner-lost",
        S42,
        RECOMMENDED,
        "a coordinating Client that resets before its done status: the Peer gets "
        "AdvertiseAbort(PARTNER_LOST) and a close at once",
        coordinate_partner_lost,
    ),
    _scenario(
        "fault-peer-reset",
        S4,
        REQUIRED,
        "the Peer resets (RST) after PeerDisconnect: the Client is closed and never introduced",
        fault_peer_reset,
    ),
    _scenario(
        "fault-peer-sends-bytes",
        S4,
        REQUIRED,
        "the Peer sends a byte after PeerDisconnect: both connections are closed, the Client "
        "is never introduced",
        fault_peer_sends_bytes,
    ),
    _scenario(
        "fault-client-leaves",
        S4,
        REQUIRED,
        "the Client closes while its Peer is confirming: the Peer's connection is closed",
        fault_client_leaves,
    ),
    _scenario(
        "fault-client-sends-bytes",
        S4,
        REQUIRED,
        "the Client sends a byte while its Peer is confirming: both connections are closed",
        fault_client_sends_bytes,
    ),
    _scenario(
        "fault-peer-gone-reason",
        S4,
        RECOMMENDED,
        "the surviving side of a failed pairing gets AdvertiseAbort(PEER_GONE)",
        fault_peer_gone_reason,
    ),
    _scenario(
        "deadline-advertise-not-early",
        S2,
        REQUIRED,
        "a connection that sends nothing hears nothing and stays open for the whole "
        "advertise_timeout (--advertise-timeout): a deadline never fires early",
        deadline_advertise_not_early,
        skip_unless=_needs("advertise_timeout"),
        long=True,
    ),
    _scenario(
        "deadline-response-not-early",
        S2,
        REQUIRED,
        "an Advertise sent half way through advertise_timeout: the challenged session then "
        "lasts the whole response_timeout (--response-timeout), the old deadline is gone",
        deadline_response_not_early,
        skip_unless=_needs("response_timeout"),
        long=True,
    ),
    _scenario(
        "deadline-confirm-not-early",
        S2,
        REQUIRED,
        "a Peer that answers half way through response_timeout and never closes: neither side "
        "hears anything for the whole confirm_timeout (--confirm-timeout), no stale timer",
        deadline_confirm_not_early,
        skip_unless=_needs("confirm_timeout"),
        long=True,
    ),
    _scenario(
        "timeout-idle",
        S6,
        RECOMMENDED,
        "a connection that sends nothing gets AdvertiseAbort(TIMEOUT) and is closed within "
        "--late of advertise_timeout (--advertise-timeout)",
        timeout_idle,
        skip_unless=_needs("advertise_timeout"),
        long=True,
    ),
    _scenario(
        "timeout-response",
        S6,
        RECOMMENDED,
        "an unanswered challenge gets AdvertiseAbort(TIMEOUT) and a close within --late of "
        "response_timeout (--response-timeout)",
        timeout_response,
        skip_unless=_needs("response_timeout"),
        long=True,
    ),
    _scenario(
        "timeout-confirm",
        S6,
        RECOMMENDED,
        "a Peer that never closes: within --late of confirm_timeout (--confirm-timeout) both "
        "sides get AdvertiseAbort(TIMEOUT), and the Client is never introduced",
        timeout_confirm,
        skip_unless=_needs("confirm_timeout"),
        long=True,
    ),
)
"""Every version 1 scenario, in report order."""
