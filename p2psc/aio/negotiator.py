"""asyncio runner of the protocol Negotiator over a StreamReader/StreamWriter pair.

Why a runner: most users have a connected stream pair (from :func:`p2psc.aio.connect` or
``asyncio.open_connection``) and want "negotiate, run the chosen protocol, repeat" without
writing the loop. The runner holds no protocol logic: it writes the bytes the sans-IO
:class:`p2psc.core.negotiator.Negotiator` returns, feeds it the bytes it reads, sleeps when the
core says :class:`Sleep`, and hands the streams to the negotiated protocol's handler. What it
counts, when it stops and what its failures say is :class:`p2psc.core.negotiator_run.NegotiatorRun`
(shared with the trio runner).

Failure handling: every read and drain has a deadline (``reply_timeout``), so a silent peer is
detected (:class:`NegotiationTimeout`); a byte the core refuses (:class:`NegotiationError`)
closes the connection with its reason logged; EOF or a reset from the peer ends the run
cleanly. The writer is always closed when :func:`run_negotiator` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping

from p2psc.core.negotiator import Negotiated, Negotiator, Outcome, describe_byte
from p2psc.core.negotiator_run import NegotiatorRun, RunResult
from p2psc.errors import NegotiationError, P2pscError

__all__ = ["Handler", "RunResult", "run_negotiator"]

log = logging.getLogger(__name__)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Negotiated], Awaitable[None]]
"""Runs one negotiated protocol over the streams; returns when the protocol released the
connection on both sides (the protocol defines its own end). It owns the streams meanwhile and
must bound its own waits."""

_CLOSE_TIMEOUT = 1.0


async def run_negotiator(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    negotiator: Negotiator,
    handlers: Mapping[str, Handler],
    *,
    reply_timeout: float = 30.0,
    max_rounds: int | None = None,
    stop: asyncio.Event | None = None,
    wake: asyncio.Event | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> RunResult:
    """Negotiate and run protocols over ``reader``/``writer`` until the peer closes, ``stop`` is
    set, ``max_rounds`` rounds are done, or something goes wrong; then close the writer.

    ``handlers`` maps every protocol name of the negotiator's table to its :data:`Handler`.
    ``reply_timeout`` bounds each wait for a peer byte; it must exceed the round trip plus any
    difference between the two sides' keepalive intervals. ``wake``, when set, cuts the sleep
    between rounds short (the application has something to initiate now; the runner clears
    it); the peer answers when its own sleep ends. ``on_outcome`` is called with each round's
    outcome (metrics, tests, application decisions for the next round).
    """
    run = NegotiatorRun(negotiator, handlers, reply_timeout=reply_timeout, max_rounds=max_rounds)
    try:
        while run.next_round(stopping=stop is not None and stop.is_set()):
            outcome = await _one_round(reader, writer, run)
            pause = run.record(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
            if isinstance(outcome, Negotiated):
                name = outcome.protocol.name
                log.debug(
                    "running protocol %s (initiated by us: %s)", name, outcome.initiated_by_us
                )
                await handlers[name](reader, writer, outcome)
            elif pause is not None:
                await _sleep(pause, stop, wake)
    except P2pscError as error:  # from the core, a deadline, or a protocol handler
        log.warning("%s", run.failed(error))
    except (asyncio.IncompleteReadError, ConnectionError) as gone:
        log.info("%s", run.peer_gone(type(gone).__name__))
    finally:
        await _close(writer)
    return run.result


async def _one_round(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, run: NegotiatorRun
) -> Outcome:
    """Send our byte, then read one byte at a time (so nothing of the protocol that follows is
    consumed) until the core has an outcome."""
    negotiator = run.negotiator
    await _send(writer, negotiator.start_round(), run)
    while (outcome := negotiator.outcome) is None:
        try:
            async with asyncio.timeout(run.reply_timeout):
                byte = await reader.readexactly(1)
        except TimeoutError:
            raise run.no_byte() from None
        log.debug("negotiator received %s in %s", describe_byte(byte[0]), negotiator.state)
        await _send(writer, negotiator.receive_data(byte), run)
    if isinstance(outcome, NegotiationError):  # pragma: no cover - receive_data raised already
        raise outcome
    return outcome


async def _send(writer: asyncio.StreamWriter, data: bytes, run: NegotiatorRun) -> None:
    if not data:
        return
    writer.write(data)
    try:
        async with asyncio.timeout(run.reply_timeout):
            await writer.drain()
    except TimeoutError:
        raise run.not_read() from None


async def _sleep(seconds: float, stop: asyncio.Event | None, wake: asyncio.Event | None) -> None:
    """Sleep between rounds; return early when ``stop`` or ``wake`` is set (``wake`` is
    cleared, so each set wakes one sleep)."""
    events = [event for event in (stop, wake) if event is not None]
    if not events:
        await asyncio.sleep(seconds)
        return
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    if wake is not None:
        wake.clear()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(_CLOSE_TIMEOUT):
            await writer.wait_closed()
