"""Benchmark of the INSECURE LEGACY (version 0) path. Prints figures; asserts nothing.

Run: .venv/bin/python tests/bench/bench_legacy.py [--quick]

- decode of one legacy Advertise (two RSA-2048 PEM keys, ~930 bytes) by LegacyDecoder, against
  ``json.loads`` of the same bytes (the floor: our decoder scans, then calls json.loads);
- the mediator's per-registration crypto: RSA-2048 PKCS#1 v1.5 encryption of a nonce against an
  HPKE seal (version 1), and the client's RSA decryption against an HPKE open;
- one whole legacy registration through LegacyAwareMediatorCore.handle (Opened, Advertise,
  AdvertiseResponse) against a version 1 registration through the plain MediatorCore;
- CPU per received segment while a sender trickles one byte per segment (issue 21: an attacker
  doing so used to cost the version 0 path ~2 ms per segment, 700x version 1): the legacy
  Advertise, and a worst-case 4 KiB object of short tokens, fed byte by byte (all but the last
  byte, so only the decoder's per-segment work is timed) against a version 1 Advertise frame
  fed the same way, through the same LegacyAwareMediatorCore. Budget: within 5x.
"""

from __future__ import annotations

import json
import sys
import time
import timeit
from collections.abc import Callable

from p2psc import wire
from p2psc.core.io import Closed, Opened, Received, Send
from p2psc.core.mediator import MediatorCore
from p2psc.keys import HPKE, Keypair, nonce_info
from p2psc.legacy import codec
from p2psc.legacy.crypto import RsaKeypair, decrypt_nonce, encrypt_nonce
from p2psc.legacy.mediator import LegacyAwareMediatorCore


def per_call_us(func: Callable[[], object], number: int) -> float:
    best = min(timeit.repeat(func, number=number, repeat=3))
    return best / number * 1e6


def main() -> None:
    quick = "--quick" in sys.argv
    n = 200 if quick else 2000
    a, b = RsaKeypair.generate(), RsaKeypair.generate()
    advertise = codec.encode(codec.Advertise(0, a.public_key.to_wire(), b.public_key.to_wire()))

    decode_us = per_call_us(lambda: codec.LegacyDecoder().feed(advertise), n)
    json_us = per_call_us(lambda: json.loads(advertise), n)
    print(f"legacy Advertise ({len(advertise)} bytes) decode: {decode_us:8.1f} us")
    print(f"json.loads of the same bytes (floor):         {json_us:8.1f} us")
    print(f"  ratio decoder / json.loads:                 {decode_us / json_us:8.2f}")

    x1, x2 = Keypair.generate(), Keypair.generate()
    info = nonce_info("AdvertiseChallenge", x1.public_key.raw, x2.public_key.raw)
    nonce = bytes(range(32))
    sealed = HPKE.seal(x1.public_key, nonce, info)
    encrypted = encrypt_nonce(a.public_key, "1234567890")
    rsa_enc = per_call_us(lambda: encrypt_nonce(a.public_key, "1234567890"), n)
    hpke_seal = per_call_us(lambda: HPKE.seal(x1.public_key, nonce, info), n)
    rsa_dec = per_call_us(lambda: decrypt_nonce(a, encrypted), max(20, n // 10))
    hpke_open = per_call_us(lambda: HPKE.open(x1, sealed, info), n)
    print(f"RSA-2048 PKCS#1 v1.5 encrypt (mediator):      {rsa_enc:8.1f} us")
    print(f"HPKE seal (v1 mediator, baseline):            {hpke_seal:8.1f} us")
    print(f"  ratio RSA encrypt / HPKE seal:              {rsa_enc / hpke_seal:8.2f}")
    print(f"RSA-2048 decrypt (legacy client):             {rsa_dec:8.1f} us")
    print(f"HPKE open (v1 client, baseline):              {hpke_open:8.1f} us")
    print(f"  ratio RSA decrypt / HPKE open:              {rsa_dec / hpke_open:8.2f}")

    # whole registrations through the cores (mediator side only; answers precomputed)
    legacy_core = LegacyAwareMediatorCore(nonce_source=lambda k: bytes(k - 1) + b"\x07")
    response = codec.encode(codec.AdvertiseResponse("7"))

    def legacy_registration() -> None:
        legacy_core.handle(Opened(1, ("127.0.0.1", 5)), 0.0)
        legacy_core.handle(Received(1, advertise), 0.0)
        out = legacy_core.handle(Received(1, response), 0.0)
        assert legacy_core.state_of(1) == "waiting", out
        legacy_core.handle(Closed(1, None), 0.0)

    v1_core = MediatorCore(nonce_source=lambda k: bytes(k))
    v1_advertise = wire.Advertise(1, x1.public_key.raw, x2.public_key.raw).encode()
    v1_response = wire.AdvertiseResponse(bytes(32)).encode()

    def v1_registration() -> None:
        v1_core.handle(Opened(1, ("127.0.0.1", 5)), 0.0)
        out = v1_core.handle(Received(1, v1_advertise), 0.0)
        assert isinstance(out[0], Send)
        v1_core.handle(Received(1, v1_response), 0.0)
        assert v1_core.state_of(1) == "waiting"
        v1_core.handle(Closed(1, None), 0.0)

    m = max(20, n // 10)
    legacy_us = per_call_us(legacy_registration, m)
    v1_us = per_call_us(v1_registration, m)
    print(f"legacy registration, mediator core:           {legacy_us:8.1f} us")
    print(f"v1 registration, mediator core (baseline):    {v1_us:8.1f} us")
    print(f"  ratio legacy / v1:                          {legacy_us / v1_us:8.2f}")

    print_trickle(advertise, v1_advertise, quick)


def cpu_per_segment_us(stream: bytes, rounds: int) -> float:
    """Best over ``rounds`` of the process CPU time per one-byte segment of ``stream``."""
    best = float("inf")
    for _ in range(rounds):
        core = LegacyAwareMediatorCore()
        core.handle(Opened(1, ("127.0.0.1", 5)), 0.0)
        segments = [Received(1, stream[i : i + 1]) for i in range(len(stream))]
        handle = core.handle
        start = time.process_time()
        for segment in segments:
            handle(segment, 0.0)
        elapsed = time.process_time() - start
        assert core.state_of(1) == "awaiting_advertise"  # nothing completed, nothing refused
        best = min(best, elapsed / len(segments))
    return best * 1e6


def print_trickle(advertise: bytes, v1_advertise: bytes, quick: bool) -> None:
    rounds = 3 if quick else 7
    tokens = b'{"type":0,"payload":{"version":0,"our_key":"k","their_key":"k","x":['
    tokens += b'"a",' * ((codec.MAX_OBJECT_SIZE - len(tokens) - 8) // 4)
    v1_us = cpu_per_segment_us(v1_advertise[:-1], rounds)
    v0_us = cpu_per_segment_us(advertise[:-1], rounds)
    worst_us = cpu_per_segment_us(tokens, rounds)
    print(f"CPU per 1-byte segment, v1 Advertise (baseline): {v1_us:8.2f} us")
    print(f"CPU per 1-byte segment, legacy Advertise:        {v0_us:8.2f} us")
    print(f"  ratio v0 / v1 (budget 5):                      {v0_us / v1_us:8.2f}")
    print(f"CPU per 1-byte segment, {len(tokens)}-byte token object: {worst_us:8.2f} us")
    print(f"  ratio worst v0 / v1 (budget 5):                {worst_us / v1_us:8.2f}")


if __name__ == "__main__":
    main()
