"""p2psc.trio.run_negotiator: the asyncio runner's behaviour, over trio streams (issue 20).

The main scenario runs over a real pairing (two p2psc.trio.connect() through the trio
mediator), so the Negotiator's bytes travel through the secure channel; the failure cases use
``trio.testing.memory_stream_pair`` with a hand-written peer on the other end.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

if os.environ.get("CI"):
    import trio  # CI installs the test extra: a missing trio must fail, not skip
else:
    trio = pytest.importorskip("trio")
import trio.testing

import p2psc.trio
from p2psc.core.negotiator import KEEPALIVE, Negotiated, Negotiator, Outcome, ProtocolSpec
from p2psc.errors import NegotiationError, NegotiationTimeout, ProtocolError
from p2psc.keys import Keypair
from p2psc.trio.negotiator import Handler, RunResult, run_negotiator

DEADLINE = 10.0


def run(body: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        with trio.fail_after(DEADLINE * 2):
            await body()

    trio.run(bounded)


async def read_line(stream: Any) -> bytes:
    """One byte at a time: nothing after the line is consumed (the next round's byte). At EOF,
    what came so far (as ``StreamReader.readline``)."""
    line = b""
    while not line.endswith(b"\n"):
        byte = await stream.receive_some(1)
        if not byte:
            break
        line += byte
    return line


class Peer:
    """One side: which protocol it initiates in which round, and what its handlers heard."""

    def __init__(self, name: str, plan: dict[int, str]) -> None:
        self.name = name
        self.plan = plan
        self.outcomes: list[Outcome] = []
        self.heard: list[str] = []
        specs = [
            ProtocolSpec(1, "chat", priority=1, wants_to_initiate=self.wants("chat")),
            ProtocolSpec(2, "sync", priority=5, wants_to_initiate=self.wants("sync")),
        ]
        self.negotiator = Negotiator(specs, keepalive_interval=0.01)
        self.handlers: dict[str, Handler] = {"chat": self.talk, "sync": self.talk}

    def wants(self, protocol: str) -> Callable[[], bool]:
        return lambda: self.plan.get(len(self.outcomes)) == protocol

    async def talk(self, stream: Any, how: Negotiated) -> None:
        """The initiator speaks first, the other answers; one line each."""
        line = f"{how.protocol.name} from {self.name}\n".encode()
        if how.initiated_by_us:
            await stream.send_all(line)
        with trio.fail_after(DEADLINE):
            self.heard.append((await read_line(stream)).decode().strip())
        if not how.initiated_by_us:
            await stream.send_all(line)


def kinds(outcomes: list[Outcome]) -> list[str]:
    return [o.protocol.name if isinstance(o, Negotiated) else type(o).__name__ for o in outcomes]


def test_two_protocols_over_the_secure_channel() -> None:
    a, b = Peer("a", {1: "chat"}), Peer("b", {3: "sync"})
    results: list[RunResult] = []

    async def side(peer: Peer, me: Keypair, them: Keypair, address: tuple[str, int]) -> None:
        stream = await p2psc.trio.connect(me, them.public_key, address, timeout=8.0)
        result = await run_negotiator(
            stream, peer.negotiator, peer.handlers, max_rounds=6, on_outcome=peer.outcomes.append
        )
        results.append(result)

    async def body() -> None:
        ka, kb = Keypair.generate(), Keypair.generate()
        async with trio.open_nursery() as nursery:
            server = await nursery.start(p2psc.trio.serve_mediator)
            async with trio.open_nursery() as sides:
                sides.start_soon(side, a, ka, kb, server.address)
                sides.start_soon(side, b, kb, ka, server.address)
            server.close()

    run(body)
    expected = ["Sleep", "chat", "Sleep", "sync", "Sleep", "Sleep"]
    assert kinds(a.outcomes) == kinds(b.outcomes) == expected
    assert a.heard == ["chat from b", "sync from b"]
    assert b.heard == ["chat from a", "sync from a"]
    for result in results:
        assert result.error is None and result.rounds == 6 and result.idle_rounds == 4
        assert result.protocols_run == {"chat": 1, "sync": 1}


async def against(
    peer: Callable[[Any], Awaitable[None]], *, reply_timeout: float = 2.0, plan: dict[int, str]
) -> tuple[RunResult, bytes]:
    """Our runner against a hand-written peer; our result and what the peer read after its
    script (b"" = it saw our close)."""
    ours = Peer("us", plan)
    stream_us, stream_peer = trio.testing.memory_stream_pair()
    results: list[RunResult] = []

    async def runner() -> None:
        results.append(
            await run_negotiator(
                stream_us, ours.negotiator, ours.handlers, reply_timeout=reply_timeout
            )
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner)
        await peer(stream_peer)
    rest = b""
    while chunk := await stream_peer.receive_some():
        rest += chunk
    return results[0], rest


@pytest.mark.parametrize(
    ("we_send", "answer", "reason"),
    [
        (KEEPALIVE, b"\xc8", "unknown protocol id 200"),
        (KEEPALIVE, b"\xfe", "nothing was initiated"),
        (1, b"\xff\xff", "expected ACCEPT or REJECT"),
    ],
)
def test_invalid_byte_closes_the_connection_with_a_logged_reason(
    we_send: int, answer: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def peer(stream: Any) -> None:
        assert await stream.receive_some(1) == bytes([we_send])
        await stream.send_all(answer)

    async def body() -> None:
        with caplog.at_level(logging.WARNING, logger="p2psc.trio.negotiator"):
            plan = {0: "chat"} if we_send == 1 else {}
            result, rest = await against(peer, reply_timeout=0.5, plan=plan)
        assert isinstance(result.error, NegotiationError)
        assert not isinstance(result.error, NegotiationTimeout)
        assert reason in result.error.reason
        assert rest in (b"", bytes([KEEPALIVE]))
        assert any(reason in record.getMessage() for record in caplog.records)

    run(body)


def test_silent_peer_is_detected_by_the_read_deadline() -> None:
    async def peer(stream: Any) -> None:
        assert await stream.receive_some(1) == bytes([KEEPALIVE])  # then say nothing

    async def body() -> None:
        started = trio.current_time()
        result, rest = await against(peer, reply_timeout=0.2, plan={})
        assert isinstance(result.error, NegotiationTimeout)
        assert "no byte within 0.2s" in result.error.reason
        assert rest == b"" and trio.current_time() - started < 5.0

    run(body)


def test_peer_close_ends_the_run_cleanly() -> None:
    async def peer(stream: Any) -> None:
        assert await stream.receive_some(1) == bytes([KEEPALIVE])
        await stream.send_all(bytes([KEEPALIVE]))  # one idle round, then hang up
        assert await stream.receive_some(1) == bytes([KEEPALIVE])
        await stream.send_eof()

    async def body() -> None:
        result, _ = await against(peer, plan={})
        assert result.error is None and "closed" in result.reason
        assert result.rounds == 1 and result.idle_rounds == 1

    run(body)


def test_stop_and_wake() -> None:
    """``wake`` starts a's next round long before its 30 s interval; ``stop`` then ends it."""
    a, b = Peer("a", {1: "chat"}), Peer("b", {})
    a.negotiator.keepalive_interval = 30.0
    stop = trio.Event()
    wake_send, wake = trio.open_memory_channel[object](1)
    results: dict[str, RunResult] = {}

    def saw(outcome: Outcome) -> None:
        a.outcomes.append(outcome)
        if len(a.outcomes) == 1:
            wake_send.send_nowait(None)  # the application has something to say right away
        else:
            stop.set()

    async def body() -> None:
        stream_a, stream_b = trio.testing.memory_stream_pair()

        async def one(name: str, coro: Awaitable[RunResult]) -> None:
            results[name] = await coro

        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                one,
                "a",
                run_negotiator(
                    stream_a, a.negotiator, a.handlers, stop=stop, wake=wake, on_outcome=saw
                ),
            )
            nursery.start_soon(
                one,
                "b",
                run_negotiator(stream_b, b.negotiator, b.handlers, on_outcome=b.outcomes.append),
            )

    run(body)
    assert kinds(a.outcomes) == ["Sleep", "chat"] and b.heard == ["chat from a"]
    assert results["a"].reason == "stopped" and results["a"].error is None
    assert results["b"].error is None and "closed" in results["b"].reason


def test_a_failing_protocol_closes_the_connection() -> None:
    a, b = Peer("a", {0: "chat"}), Peer("b", {})

    async def broken(stream: Any, how: Negotiated) -> None:
        raise ProtocolError("the chat peer went quiet")

    a.handlers["chat"] = broken
    results: dict[str, RunResult] = {}

    async def body() -> None:
        stream_a, stream_b = trio.testing.memory_stream_pair()

        async def one(name: str, peer: Peer, stream: Any) -> None:
            results[name] = await run_negotiator(stream, peer.negotiator, peer.handlers)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, "a", a, stream_a)
            nursery.start_soon(one, "b", b, stream_b)

    run(body)
    assert isinstance(results["a"].error, ProtocolError)
    assert a.negotiator.state == "Failed" and "went quiet" in results["a"].reason
    assert results["b"].error is None and "closed" in results["b"].reason


def test_missing_handler_is_refused() -> None:
    async def body() -> None:
        peer = Peer("a", {})
        stream, _ = trio.testing.memory_stream_pair()
        with pytest.raises(ValueError, match="sync"):
            await run_negotiator(stream, peer.negotiator, {"chat": peer.talk})

    run(body)
