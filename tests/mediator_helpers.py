"""Shared helpers of the mediator tests: deterministic nonces, a symbolic crypto, a core driver.

Not a test module (no ``test_`` prefix); imported by tests/test_mediator_*.py.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from p2psc import wire
from p2psc.core.io import Action, Close, Closed, Opened, Received, Send, SetTimer, TimerFired
from p2psc.core.mediator import MediatorConfig, MediatorCore, MediatorNote
from p2psc.errors import CryptoError
from p2psc.keys import Keypair, PublicKey, nonce_info, open_nonce


def counting_nonces() -> Callable[[int], bytes]:
    """A deterministic nonce source: 1, 2, 3, ... as big-endian n-byte strings."""
    counter = itertools.count(1)
    return lambda n: next(counter).to_bytes(n, "big")


class SymbolicCrypto:
    """Deterministic stand-in for HPKE: "sealed" = nonce | sha256(recipient|info) | 16 zeros.

    Opening checks the binding, so a wrong key or wrong info still fails like real HPKE.
    """

    def seal(self, recipient: PublicKey, nonce: bytes, info: bytes) -> bytes:
        return nonce + hashlib.sha256(recipient.raw + info).digest() + bytes(16)

    def open(self, keypair: Keypair, sealed: bytes, info: bytes) -> bytes:
        raw = keypair.public_key.raw
        if len(sealed) != 80 or sealed[32:64] != hashlib.sha256(raw + info).digest():
            raise CryptoError("symbolic open failed")
        return sealed[:32]


def sym_key(n: int) -> bytes:
    """A fixed raw 'public key' for the symbolic crypto (no private half needed)."""
    return hashlib.sha256(b"key%d" % n).digest()


def sym_answer(challenge: wire.AdvertiseChallenge) -> bytes:
    """What an owner answers under SymbolicCrypto: the nonce in clear at the front."""
    return bytes(challenge.encrypted_nonce[:32])


@dataclass
class Driver:
    """Drive a MediatorCore with a fake clock; collect actions and notes."""

    config: MediatorConfig = field(default_factory=MediatorConfig)
    symbolic: bool = False
    now: float = 1000.0
    notes: list[MediatorNote] = field(default_factory=list)
    log: list[Action] = field(default_factory=list)
    core: MediatorCore = field(init=False)

    def __post_init__(self) -> None:
        crypto = SymbolicCrypto() if self.symbolic else None
        kwargs = {"crypto": crypto} if crypto is not None else {}
        self.core = MediatorCore(
            self.config,
            nonce_source=counting_nonces(),
            observer=self.notes.append,
            **kwargs,  # type: ignore[arg-type]
        )

    def _run(self, event: object) -> list[Action]:
        actions = self.core.handle(event, self.now)  # type: ignore[arg-type]
        self.log.extend(actions)
        return actions

    def open(self, conn: int, remote: tuple[str, int]) -> list[Action]:
        return self._run(Opened(conn, remote))

    def send(self, conn: int, data: bytes) -> list[Action]:
        return self._run(Received(conn, data))

    def close(self, conn: int, error: str | None = None) -> list[Action]:
        return self._run(Closed(conn, error))

    def fire(self, conn: int) -> list[Action]:
        return self._run(TimerFired(conn))

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def advertise(
        self,
        conn: int,
        our: bytes,
        their: bytes,
        *,
        local: wire.Address | None = None,
        remote: tuple[str, int] | None = None,
    ) -> wire.AdvertiseChallenge:
        self.open(conn, remote or (f"10.0.0.{conn % 250 + 1}", 40000 + conn))
        actions = self.send(conn, wire.Advertise(1, our, their, local).encode())
        (challenge,) = messages(actions, conn)
        assert isinstance(challenge, wire.AdvertiseChallenge)
        return challenge

    def register_keypair(
        self,
        conn: int,
        keypair: Keypair,
        their: bytes,
        *,
        local: wire.Address | None = None,
        remote: tuple[str, int] | None = None,
    ) -> list[Action]:
        """Advertise and answer correctly with real HPKE; return the response's actions."""
        our = keypair.public_key.raw
        challenge = self.advertise(conn, our, their, local=local, remote=remote)
        nonce = open_nonce(
            keypair, challenge.encrypted_nonce, nonce_info("AdvertiseChallenge", our, their)
        )
        return self.send(conn, wire.AdvertiseResponse(nonce).encode())

    def register_symbolic(
        self, conn: int, our: bytes, their: bytes, *, remote: tuple[str, int] | None = None
    ) -> list[Action]:
        challenge = self.advertise(conn, our, their, remote=remote)
        return self.send(conn, wire.AdvertiseResponse(sym_answer(challenge)).encode())


def messages(actions: list[Action], conn: int) -> list[wire.Message]:
    """Decode every frame sent to ``conn`` in ``actions``, in order."""
    return [wire.decode(a.data) for a in actions if isinstance(a, Send) and a.conn == conn]


def closed(actions: list[Action]) -> list[int]:
    return [a.conn for a in actions if isinstance(a, Close)]


def timers(actions: list[Action]) -> dict[int, float | None]:
    return {a.conn: a.deadline for a in actions if isinstance(a, SetTimer)}


def abort_code(actions: list[Action], conn: int) -> int | None:
    """The code of the AdvertiseAbort/AdvertiseRetry sent to ``conn`` (None: none sent)."""
    for message in messages(actions, conn):
        if isinstance(message, wire.AdvertiseAbort | wire.AdvertiseRetry):
            return int(message.code)
    return None
