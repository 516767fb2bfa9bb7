"""Benchmark of the wire codec and HPKE nonce sealing. Prints figures; asserts nothing.

Run: .venv/bin/python tests/bench/bench_codec.py [--quick]

For each message type: encode and decode time of the production fast path (struct), of
construct's compiled layout and of the interpreted construct layout, the construct/fast ratios,
FrameDecoder.feed time for one frame, and HPKE seal/open time. Ends with the decode budget check
(<= 10 us per frame) as a figure: the worst message type's decode time vs the budget.
"""

from __future__ import annotations

import sys
import timeit
from collections.abc import Callable

from p2psc.keys import HPKE, Keypair, nonce_info
from p2psc.wire import (
    FRAME,
    FRAME_COMPILED,
    Address,
    Advertise,
    AdvertiseAbort,
    AdvertiseChallenge,
    AdvertiseResponse,
    AdvertiseRetry,
    FrameDecoder,
    Message,
    PeerAcknowledgement,
    PeerChallenge,
    PeerChallengeResponse,
    PeerDisconnect,
    PeerIdentification,
    PeerResponse,
    Reason,
    construct_decode,
    construct_encode,
    decode,
    encode,
)

BUDGET_US = 10.0


def samples() -> list[Message]:
    """One representative message per type (IPv6 where addresses occur: the larger case)."""
    v6 = Address("2001:db8::17", 40001)
    v4 = Address("198.51.100.7", 50123)
    return [
        Advertise(1, b"\x11" * 32, b"\x22" * 32, Address("192.168.1.20", 40000)),
        AdvertiseChallenge(b"\x33" * 80),
        AdvertiseResponse(b"\x44" * 32),
        AdvertiseAbort(Reason.SELF_PAIRING, "our_key equals their_key"),
        AdvertiseRetry(Reason.BUSY, "try again in a moment"),
        PeerDisconnect(v6, v4, Address("10.0.0.5", 40000)),
        PeerIdentification(1, v6, Address("fd00::5", 40000)),
        PeerChallenge(b"\x55" * 80),
        PeerChallengeResponse(b"\x66" * 80, b"\x77" * 32),
        PeerResponse(b"\x88" * 32),
        PeerAcknowledgement(),
    ]


REPEATS = 15


def per_call_us(fn: Callable[[], object], budget_s: float) -> float:
    """Best-of-15 time per call in microseconds (~budget_s in total).

    The minimum of many short runs filters out time stolen by other processes on a shared
    machine, which inflates a mean but not the best run."""
    timer = timeit.Timer(fn)
    number, took = timer.autorange()
    number = max(1, int(number * (budget_s / REPEATS) / max(took, 1e-9)))
    best = min(timer.repeat(repeat=REPEATS, number=number))
    return best / number * 1e6


def main() -> int:
    quick = "--quick" in sys.argv
    t = 0.05 if quick else 0.15
    rows = []
    parse_rows = []
    worst_decode = 0.0
    worst_name = ""
    for msg in samples():
        frame = encode(msg)
        name = type(msg).__name__

        def feed_one(frame: bytes = frame) -> object:
            return FrameDecoder().feed(frame)

        enc = per_call_us(lambda msg=msg: encode(msg), t)
        dec = per_call_us(lambda frame=frame: decode(frame), t)
        feed = per_call_us(feed_one, t)
        c_enc = per_call_us(lambda msg=msg: construct_encode(msg), t)
        c_dec = per_call_us(lambda frame=frame: construct_decode(frame), t)
        i_enc = per_call_us(lambda msg=msg: construct_encode(msg, compiled=False), t)
        i_dec = per_call_us(lambda frame=frame: construct_decode(frame, compiled=False), t)
        c_parse = per_call_us(lambda frame=frame: FRAME_COMPILED.parse(frame), t)
        i_parse = per_call_us(lambda frame=frame: FRAME.parse(frame), t)
        rows.append((name, len(frame), enc, dec, feed, c_enc, c_dec, i_enc, i_dec))
        parse_rows.append((name, dec, c_parse, i_parse))
        if dec > worst_decode:
            worst_decode, worst_name = dec, name

    head = (
        f"{'message':<22}{'bytes':>6}{'enc':>8}{'dec':>8}{'feed':>8}"
        f"{'c.enc':>8}{'c.dec':>8}{'i.enc':>8}{'i.dec':>8}{'c.dec/dec':>10}{'i.dec/dec':>10}"
    )
    print("times in microseconds per frame; fast = struct path (production),")
    print("c. = construct compiled, i. = construct interpreted, feed = FrameDecoder().feed(frame)")
    print("(c.dec includes the rebuild-and-compare that makes compiled parsing strict)")
    print(head)
    print("-" * len(head))
    for name, size, enc, dec, feed, c_enc, c_dec, i_enc, i_dec in rows:
        print(
            f"{name:<22}{size:>6}{enc:>8.2f}{dec:>8.2f}{feed:>8.2f}"
            f"{c_enc:>8.2f}{c_dec:>8.2f}{i_enc:>8.2f}{i_dec:>8.2f}"
            f"{c_dec / dec:>9.1f}x{i_dec / dec:>9.1f}x"
        )

    print()
    print("raw construct parse only (bytes -> Container, no validation or dataclass):")
    for name, dec, c_parse, i_parse in parse_rows:
        print(
            f"{name:<22} fast decode {dec:6.2f}"
            f"  compiled parse {c_parse:6.2f} ({c_parse / dec:4.1f}x)"
            f"  interpreted parse {i_parse:6.2f} ({i_parse / dec:4.1f}x)"
        )

    # A stream of all eleven frames fed in 1-byte, 7-byte and whole-stream chunks.
    stream = b"".join(encode(m) for m in samples())

    def feed_chunks(size: int) -> Callable[[], object]:
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]

        def run() -> object:
            dec = FrameDecoder()
            for chunk in chunks:
                dec.feed(chunk)
            return dec

        return run

    print()
    for size in (1, 7, len(stream)):
        us = per_call_us(feed_chunks(size), t)
        print(
            f"stream of 11 frames ({len(stream)} B) in {size}-byte chunks: {us / 11:.2f} us/frame"
        )

    alice = Keypair.generate()
    bob = Keypair.generate()
    info = nonce_info("PeerChallenge", alice.public_key.raw, bob.public_key.raw)
    nonce = b"\x99" * 32
    sealed = HPKE.seal(alice.public_key, nonce, info)
    seal_us = per_call_us(lambda: HPKE.seal(alice.public_key, nonce, info), t)
    open_us = per_call_us(lambda: HPKE.open(alice, sealed, info), t)
    fast_total = sum(r[3] for r in rows)
    print()
    print(f"HPKE seal: {seal_us:.1f} us   HPKE open: {open_us:.1f} us")
    print(f"HPKE open / fast decode of PeerChallenge: {open_us / rows[7][3]:.0f}x")
    print(f"all 11 decodes (fast): {fast_total:.1f} us")
    print()
    verdict = "within" if worst_decode <= BUDGET_US else "OVER"
    print(
        f"decode budget: worst fast decode {worst_decode:.2f} us ({worst_name}) vs budget "
        f"{BUDGET_US:.0f} us = {worst_decode / BUDGET_US:.2f} of budget ({verdict})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
