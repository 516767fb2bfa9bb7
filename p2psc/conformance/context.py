"""The harness's options and the per-scenario context every scenario body receives.

Why a context object: scenarios must be independent (fresh keys, their own connections, their
own transcript) and must never leak a socket, whatever happens. The context names keys (so the
transcript says ``our=A``), opens raw peers, runs the common registration steps, and closes
everything at the end of the scenario.
"""

from __future__ import annotations

import asyncio
import math
import ssl
from dataclasses import InitVar, dataclass
from typing import Any, ClassVar

from p2psc import wire
from p2psc.conformance.peer import EVENT, LegacyPeer, RawPeer, Transcript, V1Peer, fail
from p2psc.errors import ConformanceError, CryptoError
from p2psc.keys import Keypair, nonce_info, open_nonce
from p2psc.legacy import codec
from p2psc.legacy.crypto import RsaKeypair, RsaPublicKey, decrypt_nonce

__all__ = ["DEADLINES", "HarnessOptions", "Measurement", "RsaKeyPool", "ScenarioContext"]


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ConformanceError(f"{name} must be a positive number of seconds, got {value!r}")


class _Unset:
    """Marks an alias option that was not given."""

    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()

DEADLINES: tuple[str, ...] = ("advertise_timeout", "response_timeout", "confirm_timeout")
"""The mediator deadlines the harness is told, named as in spec/mediator.md §6."""


@dataclass(frozen=True, slots=True)
class HarnessOptions:
    """How the harness waits, and what it must be told about the mediator's configuration.

    The deadlines are the mediator's own, named as in spec/mediator.md §6 (defaults 10 s), plus
    ``introduce_delay`` of spec/legacy.md §3 (0.25 s); the harness cannot discover them, so
    scenarios that wait for them use these values. ``None`` skips the scenarios that need that
    deadline. ``idle_timeout`` is the old name of ``advertise_timeout`` (still accepted).
    """

    timeout: float = 5.0
    """Seconds to wait for each expected message or close."""
    quiet: float = 0.5
    """Seconds of silence that count as "nothing arrives" (also how long a Peer holds its
    connection open in the ordering scenario, capped below ``confirm_timeout``)."""
    advertise_timeout: float | None = 10.0
    """The mediator's ``advertise_timeout``."""
    response_timeout: float | None = 10.0
    """The mediator's ``response_timeout``."""
    confirm_timeout: float | None = 10.0
    """The mediator's ``confirm_timeout``."""
    introduce_delay: float | None = 0.25
    """The mediator's delay between closing a version 0 Peer and introducing its Client
    (spec/legacy.md §3 step 4; only ``--legacy`` runs use it)."""
    late: float = 1.0
    """How late a deadline may fire and still pass (spec/mediator.md §2: never early, "a little
    late"): a close more than this after the configured deadline fails the upper bound."""
    nat: bool = False
    """The mediator sees the harness through a NAT: observed addresses are checked for
    consistency between the messages, not against the harness's own socket addresses."""
    jobs: int = 8
    """Scenarios run at the same time (each opens up to ~20 connections)."""
    idle_timeout: InitVar[float | None] = _UNSET
    """Alias of ``advertise_timeout`` (its name before the options followed the spec)."""
    tls: ssl.SSLContext | None = None
    """Version 1 connections run inside TLS with this client context (``--tls``,
    :func:`p2psc.tls.client_context`); version 0 ones stay in clear."""
    also: tuple[str, int] | None = None
    """A second instance of the same fleet (``--also HOST:PORT``, spec/mediator.md section
    10): every registration whose key sorts above the key it wants goes there, the other
    side of the pair to the target, so every pairing crosses instances, in both registration
    orders. Connections that do not register (framing, limits) go to the target."""

    def __post_init__(self, idle_timeout: float | None) -> None:
        if idle_timeout is not _UNSET:
            object.__setattr__(self, "advertise_timeout", idle_timeout)
        _positive("timeout", self.timeout)
        _positive("quiet", self.quiet)
        _positive("late", self.late)
        for name in (*DEADLINES, "introduce_delay"):
            value = getattr(self, name)
            if value is not None:
                _positive(name, value)
        if not isinstance(self.jobs, int) or self.jobs < 1:
            raise ConformanceError(f"jobs must be an integer >= 1, got {self.jobs!r}")

    @property
    def settle(self) -> float:
        """How long a registration is given to be processed before its partner registers (the
        mediator says nothing on registering, so the harness can only wait and listen)."""
        return min(0.2, self.quiet)

    @property
    def hold(self) -> float:
        """How long the Peer keeps its connection open after PeerDisconnect in the ordering
        scenario: ``quiet``, but well inside the confirmation deadline."""
        if self.confirm_timeout is None:
            return self.quiet
        return min(self.quiet, self.confirm_timeout / 2)


@dataclass(frozen=True, slots=True)
class Measurement:
    """One deadline as the harness measured it, printed with the scenario's result.

    ``measured`` runs from a moment the mediator's timer cannot have started before (just
    before the harness's connect or write) to the moment the harness saw the effect, so a
    correct mediator never shows a measurement below ``configured``."""

    what: str
    """The spec's name of the deadline, e.g. ``advertise_timeout``."""
    configured: float
    measured: float
    late: float
    """The tolerance the upper bound allowed."""
    seen: bool = True
    """False: nothing happened before the harness stopped waiting at ``measured``."""

    @property
    def early(self) -> bool:
        return self.seen and self.measured < self.configured

    @property
    def too_late(self) -> bool:
        return not self.seen or self.measured > self.configured + self.late

    def format(self) -> str:
        verdict = "EARLY" if self.early else "too late" if self.too_late else "ok"
        got = (
            f"measured {self.measured:.3f} s"
            if self.seen
            else (f"nothing after {self.measured:.3f} s")
        )
        return (
            f"{self.what}: {got}, configured {self.configured:g} s "
            f"(pass: from {self.configured:g} to {self.configured + self.late:g} s): {verdict}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "configured": self.configured,
            "measured": round(self.measured, 4),
            "late": self.late,
            "seen": self.seen,
        }


class RsaKeyPool:
    """RSA keypairs for version 0 scenarios, generated once per process and lent out.

    Why a pool: RSA-2048 generation costs ~50 ms, and a run needs ~20 keys. A key is lent to one
    scenario at a time, so concurrent scenarios never share an identity; returned keys are
    reused by later scenarios and later runs (each scenario closes all its connections, so the
    mediator has forgotten them)."""

    def __init__(self) -> None:
        self._free: list[RsaKeypair] = []

    async def take(self, count: int) -> list[RsaKeypair]:
        # No lock (a pool outlives event loops): two concurrent takes may both generate, which
        # only makes the pool larger; nothing awaits between the check and the slice.
        while len(self._free) < count:
            self._free.append(await asyncio.to_thread(RsaKeypair.generate))
        taken, self._free = self._free[:count], self._free[count:]
        return taken

    def give_back(self, keys: list[RsaKeypair]) -> None:
        self._free.extend(keys)

    async def warm(self, count: int) -> None:
        """Make sure ``count`` keys are free (generate the missing ones up front)."""
        self.give_back(await self.take(count))


RSA_POOL = RsaKeyPool()
"""The process-wide pool (the runner warms it before version 0 scenarios start)."""


class ScenarioContext:
    """Everything one scenario body uses: target, options, transcript, peers, keys."""

    pairing_ids: ClassVar[set[bytes]] = set()
    """Every pairing id seen by this process: a Mediator must never repeat one (protocol.md
    4.5), across scenarios and runs alike (16 random bytes never collide by chance)."""

    def __init__(
        self,
        host: str,
        port: int,
        options: HarnessOptions,
        rsa_keys: list[RsaKeypair] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.options = options
        loop = asyncio.get_running_loop()
        self.transcript = Transcript(loop.time)
        self._peers: list[RawPeer[Any]] = []
        self._rsa = list(rsa_keys or [])
        self.measurements: list[Measurement] = []
        """Deadlines measured by this scenario (shown with its result, passed or not)."""

    def measure(
        self, what: str, configured: float, since: float, *, seen: bool = True
    ) -> Measurement:
        """Record the time from ``since`` (scenario time) to now against ``configured``
        (``seen=False``: the expected effect had not happened by now)."""
        measurement = Measurement(
            what, configured, self.transcript.now() - since, self.options.late, seen
        )
        self.measurements.append(measurement)
        self.transcript.add("harness", EVENT, measurement.format())
        return measurement

    # --- keys -------------------------------------------------------------------------------

    def keypair(self, name: str) -> Keypair:
        """A fresh X25519 identity, called ``name`` in the transcript."""
        keypair = Keypair.generate()
        self.transcript.key_names[keypair.public_key.raw] = name
        return keypair

    def ordered_keypairs(self, *names: str) -> list[Keypair]:
        """Fresh identities whose raw keys sort in the order of ``names``, so that "A first"
        and "B first" scenarios also tell registration order from key order apart."""
        keys = sorted((Keypair.generate() for _ in names), key=lambda k: k.public_key.raw)
        for name, keypair in zip(names, keys, strict=True):
            self.transcript.key_names[keypair.public_key.raw] = name
        return keys

    def rsa_keypairs(self, count: int) -> list[RsaKeypair]:
        """``count`` RSA identities lent to this scenario, sorted by their DER bytes."""
        if count > len(self._rsa):
            raise ConformanceError(f"scenario asked for {count} RSA keys, declared fewer")
        taken, self._rsa = self._rsa[:count], self._rsa[count:]
        return sorted(taken, key=lambda k: k.public_key.der)

    # --- connections ------------------------------------------------------------------------

    async def connect(self, label: str, *, also: bool = False) -> V1Peer:
        """A new raw version 1 connection to the mediator (``also``: to the second instance
        of :attr:`HarnessOptions.also`, when there is one)."""
        host, port = self.host, self.port
        if also and self.options.also is not None:
            host, port = self.options.also
        peer = await V1Peer.open(
            label, host, port, self.transcript, self.options.timeout, self.options.tls
        )
        self._peers.append(peer)
        return peer

    async def connect_legacy(self, label: str) -> LegacyPeer:
        """A new raw version 0 (JSON) connection to the mediator."""
        peer = await LegacyPeer.open(
            label, self.host, self.port, self.transcript, self.options.timeout
        )
        self._peers.append(peer)
        return peer

    def dispose(self) -> None:
        """Close every connection the scenario opened (the runner calls this, always)."""
        for peer in self._peers:
            peer.dispose()
        self._peers.clear()

    # --- common steps -----------------------------------------------------------------------

    async def advertise(
        self,
        label: str,
        me: Keypair,
        them: bytes,
        local: wire.Address | None = None,
        extensions: wire.Extensions = (),
    ) -> tuple[V1Peer, wire.AdvertiseChallenge]:
        """Connect, send a valid Advertise, and expect the AdvertiseChallenge (with
        ``--also``, at the instance the key order chooses: see :attr:`HarnessOptions.also`)."""
        peer = await self.connect(label, also=me.public_key.raw > them)
        advertise = wire.Advertise(
            wire.PROTOCOL_VERSION, me.public_key.raw, them, local, extensions
        )
        await peer.send(advertise)
        challenge = await peer.expect(
            wire.AdvertiseChallenge, "the answer to a valid Advertise, spec/mediator.md §3"
        )
        return peer, challenge

    def open_challenge(
        self, me: Keypair, them: bytes, challenge: wire.AdvertiseChallenge, label: str
    ) -> bytes:
        """The nonce inside ``challenge``; fails the scenario when it does not open."""
        our = me.public_key.raw
        try:
            return open_nonce(
                me, challenge.encrypted_nonce, nonce_info("AdvertiseChallenge", our, them)
            )
        except CryptoError as error:
            fail(
                f"an AdvertiseChallenge to {label} that opens with the advertised key and info "
                "nonce_info('AdvertiseChallenge', our_key, their_key) (spec/protocol.md §6.2-6.3)",
                f"it does not open: {error.reason}",
            )

    async def register(
        self,
        label: str,
        me: Keypair,
        them: bytes,
        local: wire.Address | None = None,
        extensions: wire.Extensions = (),
    ) -> V1Peer:
        """A complete, correct registration (Advertise, challenge, right answer)."""
        peer, challenge = await self.advertise(label, me, them, local, extensions)
        nonce = self.open_challenge(me, them, challenge, label)
        await peer.send(wire.AdvertiseResponse(nonce))
        return peer

    async def register_waiting(
        self,
        label: str,
        me: Keypair,
        them: bytes,
        local: wire.Address | None = None,
        extensions: wire.Extensions = (),
    ) -> V1Peer:
        """:meth:`register`, then listen for :attr:`HarnessOptions.settle` seconds: a
        registration without a partner hears nothing, and its partner registers only after it
        was given time to be processed (registration order decides the roles)."""
        peer = await self.register(label, me, them, local, extensions)
        await peer.expect_silence(
            self.options.settle, "a verified registration waits silently for its partner"
        )
        return peer

    async def legacy_register(self, label: str, me: RsaKeypair, them: RsaPublicKey) -> LegacyPeer:
        """A complete, correct version 0 registration (spec/legacy.md §3, step 1)."""
        peer = await self.connect_legacy(label)
        await peer.send(
            codec.Advertise(codec.LEGACY_VERSION, me.public_key.to_wire(), them.to_wire())
        )
        challenge = await peer.expect(
            codec.AdvertiseChallenge, "the answer to a valid version 0 Advertise"
        )
        nonce = self.open_legacy_challenge(me, challenge, label)
        await peer.send(codec.AdvertiseResponse(nonce))
        return peer

    def open_legacy_challenge(
        self, me: RsaKeypair, challenge: codec.AdvertiseChallenge, label: str
    ) -> str:
        """The decimal nonce inside a version 0 challenge; fails the scenario when it does not
        decrypt."""
        try:
            return decrypt_nonce(me, challenge.encrypted_nonce)
        except CryptoError as error:
            fail(
                f"an AdvertiseChallenge to {label} whose nonce decrypts with the advertised RSA "
                "key (PKCS#1 v1.5, base64, a decimal string: spec/legacy.md §2)",
                f"it does not: {error.reason}",
            )

    # --- address checks ---------------------------------------------------------------------

    def check_observed(self, what: str, got: wire.Address, conn: RawPeer[Any]) -> None:
        """``got`` must be ``conn``'s address as the mediator observes it.

        Without a NAT that is the harness socket's own address. Behind a NAT (``--nat``) the
        harness cannot know it; callers then check consistency between messages instead."""
        if self.options.nat:
            return
        if got != conn.sockname:
            fail(
                f"{what} = {conn.sockname}, the address of {conn.label}'s connection as the "
                "mediator observes it (if the harness reaches the mediator through a NAT, "
                "run it with --nat)",
                f"{what} = {got}",
            )

    def check_port(self, what: str, got: int, conn: RawPeer[Any]) -> None:
        """Like :meth:`check_observed` for a bare port (version 0 PeerDisconnect)."""
        if self.options.nat:
            return
        if got != conn.sockname.port:
            fail(
                f"{what} = {conn.sockname.port}, the port of {conn.label}'s connection as the "
                "mediator observes it (behind a NAT, run with --nat)",
                f"{what} = {got}",
            )

    @staticmethod
    def check_equal(what: str, got: object, want: object, why: str) -> None:
        """A field must have exactly the expected value."""
        if got != want:
            fail(f"{what} = {want} ({why})", f"{what} = {got}")
