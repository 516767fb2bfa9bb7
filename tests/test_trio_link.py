"""p2psc.trio._link.Link: a core's Send never waits, a queued rest is flushed in order, and a
Close after queued bytes closes with a FIN only once they are out (spec/embedding.md: "Sends must
not block", "Close: flush, then close with a FIN").

Driven over a real socketpair whose reader does not read at first, so the kernel's send buffer
fills and the outbox is really used.
"""

from __future__ import annotations

import os
import socket

import pytest

if os.environ.get("CI"):
    import trio  # CI installs the test extra: a missing trio must fail, not skip
else:
    trio = pytest.importorskip("trio")

from p2psc.trio._link import Link

BLOCK = bytes(range(256)) * 256  # 64 KiB, position-dependent content


def drain(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    out = bytearray()
    while chunk := sock.recv(1 << 20):
        out += chunk
    return bytes(out)


def test_sends_never_wait_and_a_close_flushes_first() -> None:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    sent = b""

    async def main() -> None:
        nonlocal sent
        async with trio.open_nursery() as nursery:
            link = Link(ours)
            for index in range(200):  # 12.5 MiB: more than any socket buffer holds
                data = bytes([index]) + BLOCK
                link.send(data, nursery)  # returns at once, whatever the kernel took
                sent += data
            assert link.out, "the kernel took everything: the outbox was never used"
            assert link.flushing is not None
            link.close(flush=True)  # lingers until flushed
            assert ours.fileno() >= 0 and link.closing
            received = await trio.to_thread.run_sync(drain, theirs)
            assert received == sent  # everything, in order, then EOF (the FIN)
            assert ours.fileno() < 0 and not link.out

    async def bounded() -> None:
        with trio.fail_after(30):
            await main()

    try:
        trio.run(bounded)
    finally:
        theirs.close()
        ours.close()


def test_close_without_flush_is_immediate_and_cancelling_the_owner_closes_a_closing_link() -> None:
    async def main() -> None:
        with trio.fail_after(30):
            for flush in (False, True):
                ours, theirs = socket.socketpair()
                ours.setblocking(False)
                with theirs:
                    async with trio.open_nursery() as nursery:
                        link = Link(ours)
                        for _ in range(200):
                            link.send(BLOCK, nursery)
                        link.close(flush=flush)
                        if flush:  # still flushing: the owner gives up (a shutdown, a cancel)
                            assert ours.fileno() >= 0
                            nursery.cancel_scope.cancel()
                        else:
                            assert ours.fileno() < 0
                    assert ours.fileno() < 0  # never leaked

    trio.run(main)
