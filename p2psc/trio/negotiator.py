"""trio runner of the protocol Negotiator over any ``trio.abc.Stream``.

The twin of :func:`p2psc.aio.negotiator.run_negotiator`, with the same rules: the runner holds
no protocol logic; it writes the bytes the sans-IO :class:`p2psc.core.negotiator.Negotiator`
returns, feeds it the bytes it reads (one at a time, so nothing of the protocol that follows is
consumed), sleeps when the core says :class:`Sleep`, and hands the stream to the negotiated
protocol's handler. Every read and send has a deadline (``reply_timeout``): a silent peer is a
:class:`~p2psc.errors.NegotiationTimeout`; a byte the core refuses closes the connection with its
reason logged; the peer's close ends the run cleanly. The stream is closed when the run returns.
What it counts, when it stops and what its failures say is
:class:`p2psc.core.negotiator_run.NegotiatorRun`, shared with the asyncio runner.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

import trio

from p2psc.core.negotiator import Negotiated, Negotiator, Outcome, describe_byte
from p2psc.core.negotiator_run import NegotiatorRun, RunResult
from p2psc.errors import NegotiationError, P2pscError

__all__ = ["Handler", "RunResult", "run_negotiator"]

log = logging.getLogger(__name__)

Handler = Callable[[trio.abc.Stream, Negotiated], Awaitable[None]]
"""Runs one negotiated protocol over the stream; returns when the protocol released the
connection on both sides. It owns the stream meanwhile and must bound its own waits."""


class _PeerClosed(Exception):
    """The peer ended the stream between or inside a round."""


async def run_negotiator(
    stream: trio.abc.Stream,
    negotiator: Negotiator,
    handlers: Mapping[str, Handler],
    *,
    reply_timeout: float = 30.0,
    max_rounds: int | None = None,
    stop: trio.Event | None = None,
    wake: trio.abc.ReceiveChannel[object] | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> RunResult:
    """Negotiate and run protocols over ``stream`` until the peer closes, ``stop`` is set,
    ``max_rounds`` rounds are done, or something goes wrong; then close the stream.

    Arguments as for :func:`p2psc.aio.negotiator.run_negotiator`, except ``wake``: a receive
    channel (trio events cannot be cleared); each item received cuts one sleep between rounds
    short."""
    run = NegotiatorRun(negotiator, handlers, reply_timeout=reply_timeout, max_rounds=max_rounds)
    try:
        while run.next_round(stopping=stop is not None and stop.is_set()):
            outcome = await _one_round(stream, run)
            pause = run.record(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
            if isinstance(outcome, Negotiated):
                await handlers[outcome.protocol.name](stream, outcome)
            elif pause is not None:
                await _sleep(pause, stop, wake)
    except P2pscError as error:  # the core's, a deadline's, a handler's or the channel's
        log.warning("%s", run.failed(error))
    except (_PeerClosed, trio.BrokenResourceError) as gone:
        log.info("%s", run.peer_gone(type(gone).__name__))
    finally:
        await stream.aclose()
    return run.result


async def _one_round(stream: trio.abc.Stream, run: NegotiatorRun) -> Outcome:
    """Send our byte, then read one byte at a time until the core has an outcome."""
    negotiator = run.negotiator
    await _send(stream, negotiator.start_round(), run)
    while (outcome := negotiator.outcome) is None:
        with trio.move_on_after(run.reply_timeout) as scope:
            byte = await stream.receive_some(1)
        if scope.cancelled_caught:
            raise run.no_byte()
        if not byte:
            raise _PeerClosed("end of stream")
        log.debug("negotiator received %s in %s", describe_byte(byte[0]), negotiator.state)
        await _send(stream, negotiator.receive_data(bytes(byte)), run)
    if isinstance(outcome, NegotiationError):  # pragma: no cover - receive_data raised already
        raise outcome
    return outcome


async def _send(stream: trio.abc.Stream, data: bytes, run: NegotiatorRun) -> None:
    if not data:
        return
    with trio.move_on_after(run.reply_timeout) as scope:
        await stream.send_all(data)
    if scope.cancelled_caught:
        raise run.not_read()


async def _sleep(
    seconds: float, stop: trio.Event | None, wake: trio.abc.ReceiveChannel[object] | None
) -> None:
    """Sleep between rounds; return early when ``stop`` is set or ``wake`` delivers an item."""
    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:

            async def until(waiting: Callable[[], Awaitable[object]]) -> None:
                try:
                    await waiting()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    await trio.sleep_forever()  # nobody can wake us any more: sleep it out
                nursery.cancel_scope.cancel()

            if stop is not None:
                nursery.start_soon(until, stop.wait)
            if wake is not None:
                nursery.start_soon(until, wake.receive)
            if stop is None and wake is None:
                await trio.sleep(seconds)
