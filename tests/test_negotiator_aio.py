"""The asyncio negotiator runner over real loopback TCP connections (127.0.0.1 only)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from p2psc.aio.negotiator import Handler, RunResult, run_negotiator
from p2psc.core.negotiator import (
    KEEPALIVE,
    Negotiated,
    Negotiator,
    Outcome,
    ProtocolSpec,
)
from p2psc.errors import NegotiationError, NegotiationTimeout, ProtocolError

DEADLINE = 10.0
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@asynccontextmanager
async def loopback_pair() -> AsyncIterator[tuple[Streams, Streams]]:
    """One real TCP connection on 127.0.0.1: (server side streams, client side streams)."""
    accepted: asyncio.Queue[Streams] = asyncio.Queue()

    async def on_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put((reader, writer))

    server = await asyncio.start_server(on_accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = await asyncio.open_connection("127.0.0.1", port)
        async with asyncio.timeout(DEADLINE):
            served = await accepted.get()
        try:
            yield served, client
        finally:
            for _, writer in (served, client):
                writer.close()
    finally:
        server.close()
        async with asyncio.timeout(DEADLINE):
            await server.wait_closed()


def run(coro: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(DEADLINE):
            await coro()

    asyncio.run(bounded())


class Peer:
    """One side: a plan of which protocol it initiates in which round, and a log of what its
    protocol handlers exchanged."""

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

    async def talk(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, how: Negotiated
    ) -> None:
        """A tiny protocol: the initiator speaks first, the other answers; one line each."""
        line = f"{how.protocol.name} from {self.name}\n".encode()
        if how.initiated_by_us:
            writer.write(line)
        async with asyncio.timeout(DEADLINE):
            self.heard.append((await reader.readline()).decode().strip())
        if not how.initiated_by_us:
            writer.write(line)
        await writer.drain()


def kinds(outcomes: list[Outcome]) -> list[str]:
    return [o.protocol.name if isinstance(o, Negotiated) else type(o).__name__ for o in outcomes]


def test_two_protocols_in_successive_rounds_with_keepalives_between() -> None:
    a = Peer("a", {1: "chat"})
    b = Peer("b", {3: "sync"})
    results: list[RunResult] = []

    async def scenario() -> None:
        async with loopback_pair() as ((ra, wa), (rb, wb)):
            results.extend(
                await asyncio.gather(
                    run_negotiator(
                        ra, wa, a.negotiator, a.handlers, max_rounds=6, on_outcome=a.outcomes.append
                    ),
                    run_negotiator(
                        rb, wb, b.negotiator, b.handlers, max_rounds=6, on_outcome=b.outcomes.append
                    ),
                )
            )

    run(scenario)
    expected = ["Sleep", "chat", "Sleep", "sync", "Sleep", "Sleep"]
    assert kinds(a.outcomes) == kinds(b.outcomes) == expected
    assert a.heard == ["chat from b", "sync from b"]
    assert b.heard == ["chat from a", "sync from a"]
    initiated = [(o.initiated_by_us) for o in a.outcomes if isinstance(o, Negotiated)]
    assert initiated == [True, False]
    for result in results:
        assert result.error is None and result.rounds == 6 and result.idle_rounds == 4
        assert result.protocols_run == {"chat": 1, "sync": 1}


async def raw_peer_scenario(
    peer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    *,
    reply_timeout: float = 2.0,
    plan: dict[int, str] | None = None,
) -> tuple[RunResult, bytes]:
    """Run our runner against a hand-written peer; return our result and what the peer read
    after its script (b"" means it saw our close)."""
    ours = Peer("us", plan or {})
    async with loopback_pair() as ((r_us, w_us), (r_peer, w_peer)):
        runner = asyncio.create_task(
            run_negotiator(r_us, w_us, ours.negotiator, ours.handlers, reply_timeout=reply_timeout)
        )
        await peer(r_peer, w_peer)
        result = await runner
        async with asyncio.timeout(DEADLINE):
            rest = await r_peer.read()
    return result, rest


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
    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.readexactly(1) == bytes([we_send])
        writer.write(answer)
        await writer.drain()

    async def scenario() -> None:
        with caplog.at_level(logging.WARNING, logger="p2psc.aio.negotiator"):
            plan = {0: "chat"} if we_send == 1 else {}
            result, rest = await raw_peer_scenario(peer, reply_timeout=0.5, plan=plan)
        assert isinstance(result.error, NegotiationError)
        assert not isinstance(result.error, NegotiationTimeout)
        assert reason in result.error.reason
        assert rest in (b"", bytes([KEEPALIVE]))  # closed (after at most our next round byte)
        assert any(reason in rec.getMessage() for rec in caplog.records)

    run(scenario)


def test_silent_peer_is_detected_by_the_read_deadline() -> None:
    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.readexactly(1) == bytes([KEEPALIVE])  # then say nothing

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        result, rest = await raw_peer_scenario(peer, reply_timeout=0.2)
        assert isinstance(result.error, NegotiationTimeout)
        assert "no byte within 0.2s" in result.error.reason
        assert rest == b"" and loop.time() - started < 5.0

    run(scenario)


def test_peer_close_ends_the_run_cleanly() -> None:
    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.readexactly(1) == bytes([KEEPALIVE])
        writer.write(bytes([KEEPALIVE]))  # one idle round, then hang up
        await writer.drain()
        assert await reader.readexactly(1) == bytes([KEEPALIVE])
        writer.close()

    async def scenario() -> None:
        result, _ = await raw_peer_scenario(peer)
        assert result.error is None and "closed" in result.reason
        assert result.rounds == 1 and result.idle_rounds == 1

    run(scenario)


def test_stop_event_ends_the_run_between_rounds() -> None:
    async def scenario() -> None:
        a, b = Peer("a", {}), Peer("b", {})
        a.negotiator.keepalive_interval = 30.0  # stop must cut a's sleep short
        stop = asyncio.Event()
        async with loopback_pair() as ((ra, wa), (rb, wb)):
            task_a = asyncio.create_task(
                run_negotiator(ra, wa, a.negotiator, a.handlers, stop=stop)
            )
            task_b = asyncio.create_task(run_negotiator(rb, wb, b.negotiator, b.handlers))
            while not a.negotiator.outcome:
                await asyncio.sleep(0.01)
            stop.set()
            result_a = await task_a
            result_b = await task_b
        assert result_a.reason == "stopped" and result_a.error is None
        assert result_b.error is None and "closed" in result_b.reason

    run(scenario)


def test_missing_handler_is_refused() -> None:
    async def scenario() -> None:
        peer = Peer("a", {})
        async with loopback_pair() as ((r, w), _):
            with pytest.raises(ValueError, match="sync"):
                await run_negotiator(r, w, peer.negotiator, {"chat": peer.talk})

    run(scenario)


def test_wake_starts_the_next_round_before_the_interval() -> None:
    async def scenario() -> None:
        a, b = Peer("a", {1: "chat"}), Peer("b", {})
        a.negotiator.keepalive_interval = 30.0  # only wake can start a's second round in time
        wake = asyncio.Event()

        def saw(outcome: Outcome) -> None:
            a.outcomes.append(outcome)
            wake.set()  # the application has something to say right away

        async with loopback_pair() as ((ra, wa), (rb, wb)):
            results = await asyncio.gather(
                run_negotiator(
                    ra, wa, a.negotiator, a.handlers, max_rounds=2, wake=wake, on_outcome=saw
                ),
                run_negotiator(
                    rb, wb, b.negotiator, b.handlers, max_rounds=2, on_outcome=b.outcomes.append
                ),
            )
        assert kinds(a.outcomes) == kinds(b.outcomes) == ["Sleep", "chat"]
        assert all(result.error is None for result in results)
        assert b.heard == ["chat from a"]

    run(scenario)


def test_a_failing_protocol_closes_the_connection() -> None:
    async def scenario() -> None:
        a, b = Peer("a", {0: "chat"}), Peer("b", {})

        async def broken(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, how: Negotiated
        ) -> None:
            raise ProtocolError("the chat peer went quiet")

        a.handlers["chat"] = broken
        async with loopback_pair() as ((ra, wa), (rb, wb)):
            result_a, result_b = await asyncio.gather(
                run_negotiator(ra, wa, a.negotiator, a.handlers),
                run_negotiator(rb, wb, b.negotiator, b.handlers),
            )
        assert isinstance(result_a.error, ProtocolError)
        assert a.negotiator.state == "Failed" and "went quiet" in result_a.reason
        assert result_b.error is None and "closed" in result_b.reason  # b's chat saw EOF

    run(scenario)
