"""The version 0 scenarios (``--legacy``): the original C++ clients' JSON/RSA protocol.

They check what spec/legacy.md asks of a mediator that serves version 0 clients on the same
port as version 1: the pairing flow with the mediator closing the Peer itself, one JSON object
per write and never two back to back (the C++ client reads each message with one ``read()`` of
up to 1024 bytes), clean closes on bad input, and no pairing across versions.

RSA keys come from a process-wide pool (generating RSA-2048 costs ~50 ms each); each scenario
borrows its own, so concurrent scenarios never share an identity.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from p2psc.conformance.context import ScenarioContext
from p2psc.conformance.peer import LegacyPeer, fail
from p2psc.conformance.scenario import Level, Scenario, Section
from p2psc.conformance.scenarios import complete_pairing, expect_prompt_close
from p2psc.errors import ProtocolError
from p2psc.legacy import codec
from p2psc.legacy.crypto import RsaKeypair
from p2psc.legacy.mediator import legacy_registry_key

__all__ = ["LEGACY_SCENARIOS", "one_object_per_read"]

WRITES = Section("legacy.md", "1.1", "What we send (byte-exact)")
ACCEPT = Section("legacy.md", "1.2", "What we accept")
FLOW = Section("legacy.md", "3", "Flow")
ONE_PORT = Section("legacy.md", "4", "One port, two protocols")


def one_object_per_read(reads: list[bytes]) -> tuple[int, bytes, str] | None:
    """The first read that is not exactly one JSON object, as (index, bytes, why); or None.

    Reads are grouped the way the C++ client reads: it reads again only while a read returned
    exactly 1024 bytes, so such a read and its continuation count as one."""
    group = b""
    for index, chunk in enumerate(reads):
        group += chunk
        if len(chunk) == codec.LEGACY_READ_SIZE:
            continue
        try:
            codec.decode(group)
        except ProtocolError as error:
            return index, group, error.reason
        group = b""
    return None


async def _legacy_pair(
    ctx: ScenarioContext, first: RsaKeypair, second: RsaKeypair, names: tuple[str, str]
) -> tuple[LegacyPeer, LegacyPeer, codec.PeerDisconnect]:
    """Register ``first`` (the Client) then ``second`` (the Peer); return them and the Peer's
    PeerDisconnect."""
    client = await ctx.legacy_register(f"client {names[0]}", first, second.public_key)
    await client.expect_silence(ctx.options.settle, "a registration waits silently")
    peer = await ctx.legacy_register(f"peer {names[1]}", second, first.public_key)
    disconnect = await peer.expect(
        codec.PeerDisconnect, "the later registrant is the Peer (spec/legacy.md §3 step 3)"
    )
    return client, peer, disconnect


async def _pairing_in_order(ctx: ScenarioContext, *, smaller_first: bool) -> None:
    a, b = ctx.rsa_keypairs(2)
    first, second = (a, b) if smaller_first else (b, a)
    names = ("A", "B") if smaller_first else ("B", "A")
    client, peer, disconnect = await _legacy_pair(ctx, first, second, names)
    ctx.check_port("PeerDisconnect.port", disconnect.port, peer)
    await peer.expect_close(
        "right after PeerDisconnect the mediator closes the Peer's connection itself, so the "
        "C++ Peer can bind that port (§3 step 3)"
    )
    identification = await client.expect(
        codec.PeerIdentification, "the earlier registrant is introduced (§3 step 4)"
    )
    ctx.check_equal("PeerIdentification.version", identification.version, 0, "§3 step 4")
    observed = peer.sockname
    if not ctx.options.nat:
        ctx.check_equal(
            "PeerIdentification ip:port",
            f"{identification.ip}:{identification.port}",
            f"{observed.host}:{observed.port}",
            "the Peer's observed address (§3 step 4)",
        )
    ctx.check_equal(
        "PeerIdentification.port",
        identification.port,
        disconnect.port,
        "the port the Peer was told to listen on",
    )
    await client.expect_close("after PeerIdentification the Client's connection is closed")


async def legacy_pairing_a_then_b(ctx: ScenarioContext) -> None:
    await _pairing_in_order(ctx, smaller_first=True)


async def legacy_pairing_b_then_a(ctx: ScenarioContext) -> None:
    await _pairing_in_order(ctx, smaller_first=False)


async def legacy_introduce_delay(ctx: ScenarioContext) -> None:
    delay = ctx.options.introduce_delay
    assert delay is not None
    a, b = ctx.rsa_keypairs(2)
    client = await ctx.legacy_register("client A", a, b.public_key)
    await client.expect_silence(ctx.options.settle, "a registration waits silently")
    peer = await ctx.legacy_register("peer B", b, a.public_key)
    # The mediator's delay starts when it closes the Peer, after it read the Peer's
    # AdvertiseResponse: measured from just before that write, it is never measured short.
    since = peer.sent_at
    assert since is not None
    await peer.expect(codec.PeerDisconnect, "the later registrant is the Peer (§3 step 3)")
    await peer.expect_close("the mediator closes the Peer's connection itself (§3 step 3)")
    identification = await client.next(delay + ctx.options.late + ctx.options.timeout)
    if not isinstance(identification.message, codec.PeerIdentification):
        fail(
            "PeerIdentification at client A (§3 step 4)",
            identification.describe(client.render),
        )
    measured = ctx.measure("introduce_delay", delay, since)
    if measured.early:
        fail(
            f"PeerIdentification no earlier than introduce_delay = {delay:g} s after the "
            "mediator closed the Peer, so that the C++ Peer is listening before the Client's "
            "one connect (§3 step 4; tell the harness your value with --introduce-delay)",
            f"it came {measured.measured:.3f} s after the Peer's AdvertiseResponse was sent",
        )


async def legacy_one_message_per_read(ctx: ScenarioContext) -> None:
    a, b, c = ctx.rsa_keypairs(3)
    client, peer, _ = await _legacy_pair(ctx, a, b, ("A", "B"))
    await client.expect(codec.PeerIdentification, "the earlier registrant is introduced")
    wrong = await ctx.connect_legacy("C (answers wrongly)")
    await wrong.send(codec.Advertise(0, c.public_key.to_wire(), a.public_key.to_wire()))
    challenge = await wrong.expect(codec.AdvertiseChallenge, "the answer to a valid Advertise")
    nonce = ctx.open_legacy_challenge(c, challenge, wrong.label)
    await wrong.send(codec.AdvertiseResponse(str(int(nonce) + 1)))
    for conn in (client, peer, wrong):
        await conn.drain()
    for conn in (client, peer, wrong):
        bad = one_object_per_read(conn.reads)
        if bad is not None:
            index, data, why = bad
            fail(
                f"every read at {conn.label} to hold exactly one JSON object: one message per "
                "write and never two back to back (§1.1)",
                f"read #{index + 1} held {len(data)} bytes {data[:160]!r}: {why}",
            )


async def legacy_wrong_nonce(ctx: ScenarioContext) -> None:
    a, b = ctx.rsa_keypairs(2)
    peer = await ctx.connect_legacy("A (answers wrongly)")
    await peer.send(codec.Advertise(0, a.public_key.to_wire(), b.public_key.to_wire()))
    challenge = await peer.expect(codec.AdvertiseChallenge, "the answer to a valid Advertise")
    nonce = ctx.open_legacy_challenge(a, challenge, peer.label)
    await peer.send(codec.AdvertiseResponse(str(int(nonce) + 1)))
    await expect_prompt_close(
        peer,
        "a wrong nonce closes the connection (§3 step 1)",
        deadline=ctx.options.response_timeout,
        allowed=(codec.AdvertiseAbort,),
    )
    partner = await ctx.legacy_register("B (wants A)", b, a.public_key)
    await partner.expect_silence(ctx.options.quiet, "A never registered: B waits unpaired")


async def _bad_bytes(ctx: ScenarioContext, cases: list[tuple[str, bytes, str]]) -> None:
    """Each (label, bytes, why) on its own connection must get a clean close, while a version 0
    pairing completes meanwhile (a mediator that closes everything does not pass)."""
    healthy_a, healthy_b = ctx.rsa_keypairs(2)
    client = await ctx.legacy_register("healthy client", healthy_a, healthy_b.public_key)
    await client.expect_silence(ctx.options.settle, "a registration waits silently")
    for label, data, why in cases:
        peer = await ctx.connect_legacy(label)
        await peer.send_raw(data, label)
        await expect_prompt_close(
            peer,
            why,
            deadline=ctx.options.advertise_timeout,
            allowed=(codec.AdvertiseAbort, codec.AdvertiseChallenge),
        )
    peer = await ctx.legacy_register("healthy peer", healthy_b, healthy_a.public_key)
    await peer.expect(codec.PeerDisconnect, "an unrelated version 0 pairing is unaffected")
    await client.expect(codec.PeerIdentification, "an unrelated version 0 pairing is unaffected")


async def legacy_malformed_json(ctx: ScenarioContext) -> None:
    await _bad_bytes(
        ctx,
        [
            ("invalid JSON", b"{]", "invalid JSON gets a clean close (§1.2)"),
            (
                "unknown type 42",
                b'{"type": 42, "payload": {}}',
                "an unknown message type gets a clean close (§1.2)",
            ),
        ],
    )


async def legacy_oversized(ctx: ScenarioContext) -> None:
    data = b'{"type":0,"payload":{"version":0,"our_key":"' + b"A" * 5000
    why = "an object over 4096 bytes is refused once the 4097th byte arrives (§1.2)"
    await _bad_bytes(ctx, [("5000+ bytes, no end", data, why)])


async def legacy_coalesced(ctx: ScenarioContext) -> None:
    a, b = ctx.rsa_keypairs(2)
    advertise = codec.encode(codec.Advertise(0, a.public_key.to_wire(), b.public_key.to_wire()))
    why = "two objects in one packet: version 0 is lock-step; the connection is closed (§1.2)"
    await _bad_bytes(ctx, [("two Advertise objects in one write", advertise + advertise, why)])


async def legacy_v1_share_the_port(ctx: ScenarioContext) -> None:
    a, b = ctx.rsa_keypairs(2)
    x, y, z = ctx.keypair("X"), ctx.keypair("Y"), ctx.keypair("Z")
    legacy_a = await ctx.legacy_register("legacy A (wants B)", a, b.public_key)
    v1_x = await ctx.register("v1 X (wants A's legacy key)", x, legacy_registry_key(a.public_key))
    v1_y = await ctx.register_waiting("v1 Y (wants Z)", y, z.public_key.raw)
    legacy_b = await ctx.legacy_register("legacy B (wants A)", b, a.public_key)
    disconnect = await legacy_b.expect(
        codec.PeerDisconnect, "legacy B pairs with legacy A, on the port version 1 uses too"
    )
    identification = await legacy_a.expect(
        codec.PeerIdentification, "legacy A is introduced to legacy B"
    )
    ctx.check_equal(
        "PeerIdentification.port",
        identification.port,
        disconnect.port,
        "legacy A is introduced to legacy B, not to a version 1 peer",
    )
    v1_z = await ctx.register("v1 Z (wants Y)", z, y.public_key.raw)
    await complete_pairing(ctx, v1_y, v1_z)
    await v1_x.expect_silence(
        ctx.options.settle,
        "a version 1 registration is never paired with a version 0 one (spec/mediator.md §9)",
    )


def _scenario(
    name: str,
    section: Section,
    summary: str,
    body: Callable[[ScenarioContext], Awaitable[None]],
    rsa_keys: int,
    **extra: Any,
) -> Scenario:
    return Scenario(
        name, section, Level.REQUIRED, summary, body, protocol="v0", rsa_keys=rsa_keys, **extra
    )


LEGACY_SCENARIOS: tuple[Scenario, ...] = (
    _scenario(
        "legacy-pairing-a-then-b",
        FLOW,
        "version 0: the later registrant gets PeerDisconnect {port} and is closed by the "
        "mediator; the earlier gets PeerIdentification {version 0, ip, port}, then a close",
        legacy_pairing_a_then_b,
        2,
    ),
    _scenario(
        "legacy-pairing-b-then-a",
        FLOW,
        "the same with the larger key first",
        legacy_pairing_b_then_a,
        2,
    ),
    _scenario(
        "legacy-introduce-delay",
        FLOW,
        "the Client is introduced no earlier than introduce_delay (--introduce-delay) after "
        "the mediator closed the Peer, whose port must be free for it to listen on",
        legacy_introduce_delay,
        2,
        skip_unless=lambda o: (
            None
            if o.introduce_delay is not None
            else "the mediator's introduce_delay is not known (--introduce-delay 0)"
        ),
    ),
    _scenario(
        "legacy-one-message-per-read",
        WRITES,
        "every read of up to 1024 bytes holds exactly one JSON object (one write per message, "
        "never two back to back)",
        legacy_one_message_per_read,
        3,
    ),
    _scenario(
        "legacy-wrong-nonce",
        FLOW,
        "a wrong decimal nonce closes the connection and registers nothing",
        legacy_wrong_nonce,
        2,
    ),
    _scenario(
        "legacy-malformed-json",
        ACCEPT,
        "invalid JSON and an unknown message type get a clean close, while a version 0 "
        "pairing completes",
        legacy_malformed_json,
        2,
    ),
    _scenario(
        "legacy-oversized",
        ACCEPT,
        "an object growing past 4096 bytes gets a clean close, while a version 0 pairing completes",
        legacy_oversized,
        2,
    ),
    _scenario(
        "legacy-coalesced",
        ACCEPT,
        "two objects in one packet get a clean close, while a version 0 pairing completes",
        legacy_coalesced,
        4,
    ),
    _scenario(
        "legacy-v1-share-the-port",
        ONE_PORT,
        "version 0 and version 1 clients on one port pair only within their own version",
        legacy_v1_share_the_port,
        2,
    ),
)
"""Every version 0 scenario (run with ``--legacy``), in report order."""
