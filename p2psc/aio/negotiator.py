"""asyncio runner of the protocol Negotiator over a StreamReader/StreamWriter pair.

Why a runner: most users have a connected stream pair (from :func:`p2psc.aio.connect` or
``asyncio.open_connection``) and want "negotiate, run the chosen protocol, repeat" without
writing the loop. The runner holds no protocol logic: it writes the bytes the sans-IO
:class:`p2psc.core.negotiator.Negotiator` returns, feeds it the bytes it reads, sleeps when the
core says :class:`Sleep`, and hands the streams to the negotiated protocol's handler.

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
from dataclasses import dataclass, field

from p2psc.core.negotiator import Negotiated, Negotiator, Outcome, Sleep, describe_byte
from p2psc.errors import NegotiationError, NegotiationTimeout, P2pscError

__all__ = ["Handler", "RunResult", "run_negotiator"]

log = logging.getLogger(__name__)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Negotiated], Awaitable[None]]
"""Runs one negotiated protocol over the streams; returns when the protocol released the
connection on both sides (the protocol defines its own end). It owns the streams meanwhile and
must bound its own waits."""

_CLOSE_TIMEOUT = 1.0


@dataclass
class RunResult:
    """Why and how a run ended. ``error`` is None for a clean end (EOF, stop, max_rounds)."""

    rounds: int = 0
    idle_rounds: int = 0
    protocols_run: dict[str, int] = field(default_factory=dict)
    reason: str = ""
    error: P2pscError | None = None


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
    missing = [name for name in negotiator.protocols.by_name if name not in handlers]
    if missing:
        raise ValueError(f"no handler for protocol(s) {', '.join(sorted(missing))}")
    if reply_timeout <= 0:
        raise ValueError("reply_timeout must be > 0")
    result = RunResult()
    try:
        while max_rounds is None or result.rounds < max_rounds:
            if stop is not None and stop.is_set():
                result.reason = "stopped"
                break
            outcome = await _one_round(reader, writer, negotiator, reply_timeout)
            result.rounds += 1
            if on_outcome is not None:
                on_outcome(outcome)
            if isinstance(outcome, Negotiated):
                name = outcome.protocol.name
                result.protocols_run[name] = result.protocols_run.get(name, 0) + 1
                log.debug(
                    "running protocol %s (initiated by us: %s)", name, outcome.initiated_by_us
                )
                await handlers[name](reader, writer, outcome)
            elif isinstance(outcome, Sleep):
                result.idle_rounds += 1
                if max_rounds is None or result.rounds < max_rounds:
                    await _sleep(outcome.seconds, stop, wake)
        else:
            result.reason = f"{result.rounds} rounds done"
    except NegotiationError as error:  # from the core, a deadline, or a handler
        result.reason, result.error = error.reason, error
        negotiator.fail(error.reason)  # no-op when the core failed already
        log.warning("negotiator closing the connection: %s", error.reason)
    except P2pscError as error:  # raised by a protocol handler
        result.reason, result.error = error.reason, error
        negotiator.fail(f"protocol failed: {error.reason}")
        log.warning("protocol failed, closing the connection: %s", error.reason)
    except (asyncio.IncompleteReadError, ConnectionError) as gone:
        result.reason = f"peer closed the connection ({type(gone).__name__})"
        negotiator.fail(result.reason)
        log.info("negotiator: %s", result.reason)
    finally:
        await _close(writer)
    return result


async def _one_round(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    negotiator: Negotiator,
    reply_timeout: float,
) -> Outcome:
    """Send our byte, then read one byte at a time (so nothing of the protocol that follows is
    consumed) until the core has an outcome."""
    await _send(writer, negotiator.start_round(), reply_timeout, negotiator)
    while (outcome := negotiator.outcome) is None:
        try:
            async with asyncio.timeout(reply_timeout):
                byte = await reader.readexactly(1)
        except TimeoutError:
            reason = f"peer sent no byte within {reply_timeout:g}s in {negotiator.state}"
            negotiator.fail(reason)
            raise NegotiationTimeout(reason) from None
        log.debug("negotiator received %s in %s", describe_byte(byte[0]), negotiator.state)
        await _send(writer, negotiator.receive_data(byte), reply_timeout, negotiator)
    if isinstance(outcome, NegotiationError):  # pragma: no cover - receive_data raised already
        raise outcome
    return outcome


async def _send(
    writer: asyncio.StreamWriter, data: bytes, timeout: float, negotiator: Negotiator
) -> None:
    if not data:
        return
    writer.write(data)
    try:
        async with asyncio.timeout(timeout):
            await writer.drain()
    except TimeoutError:
        reason = f"peer did not read our bytes within {timeout:g}s"
        negotiator.fail(reason)
        raise NegotiationTimeout(reason) from None


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
