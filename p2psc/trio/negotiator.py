"""trio runner of the protocol Negotiator over any ``trio.abc.Stream``.

The twin of :func:`p2psc.aio.negotiator.run_negotiator`, with the same rules: the runner holds
no protocol logic; it writes the bytes the sans-IO :class:`p2psc.core.negotiator.Negotiator`
returns, feeds it the bytes it reads (one at a time, so nothing of the protocol that follows is
consumed), sleeps when the core says :class:`Sleep`, and hands the stream to the negotiated
protocol's handler. Every read and send has a deadline (``reply_timeout``): a silent peer is a
:class:`~p2psc.errors.NegotiationTimeout`; a byte the core refuses closes the connection with its
reason logged; the peer's close ends the run cleanly. The stream is closed when the run returns.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import trio

from p2psc.core.negotiator import Negotiated, Negotiator, Outcome, Sleep, describe_byte
from p2psc.errors import NegotiationError, NegotiationTimeout, P2pscError

__all__ = ["Handler", "RunResult", "run_negotiator"]

log = logging.getLogger(__name__)

Handler = Callable[[trio.abc.Stream, Negotiated], Awaitable[None]]
"""Runs one negotiated protocol over the stream; returns when the protocol released the
connection on both sides. It owns the stream meanwhile and must bound its own waits."""


class _PeerClosed(Exception):
    """The peer ended the stream between or inside a round."""


@dataclass
class RunResult:
    """Why and how a run ended. ``error`` is None for a clean end (EOF, stop, max_rounds)."""

    rounds: int = 0
    idle_rounds: int = 0
    protocols_run: dict[str, int] = field(default_factory=dict)
    reason: str = ""
    error: P2pscError | None = None


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
            outcome = await _one_round(stream, negotiator, reply_timeout)
            result.rounds += 1
            if on_outcome is not None:
                on_outcome(outcome)
            if isinstance(outcome, Negotiated):
                name = outcome.protocol.name
                result.protocols_run[name] = result.protocols_run.get(name, 0) + 1
                await handlers[name](stream, outcome)
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
    except P2pscError as error:  # a handler's, or the secure channel's (a cut or bad record)
        result.reason, result.error = error.reason, error
        negotiator.fail(f"protocol failed: {error.reason}")
        log.warning("protocol failed, closing the connection: %s", error.reason)
    except (_PeerClosed, trio.BrokenResourceError) as gone:
        result.reason = f"peer closed the connection ({type(gone).__name__})"
        negotiator.fail(result.reason)
        log.info("negotiator: %s", result.reason)
    finally:
        await stream.aclose()
    return result


async def _one_round(stream: trio.abc.Stream, negotiator: Negotiator, timeout: float) -> Outcome:
    """Send our byte, then read one byte at a time until the core has an outcome."""
    await _send(stream, negotiator.start_round(), timeout, negotiator)
    while (outcome := negotiator.outcome) is None:
        with trio.move_on_after(timeout) as scope:
            byte = await stream.receive_some(1)
        if scope.cancelled_caught:
            reason = f"peer sent no byte within {timeout:g}s in {negotiator.state}"
            negotiator.fail(reason)
            raise NegotiationTimeout(reason)
        if not byte:
            raise _PeerClosed("end of stream")
        log.debug("negotiator received %s in %s", describe_byte(byte[0]), negotiator.state)
        await _send(stream, negotiator.receive_data(bytes(byte)), timeout, negotiator)
    if isinstance(outcome, NegotiationError):  # pragma: no cover - receive_data raised already
        raise outcome
    return outcome


async def _send(
    stream: trio.abc.Stream, data: bytes, timeout: float, negotiator: Negotiator
) -> None:
    if not data:
        return
    with trio.move_on_after(timeout) as scope:
        await stream.send_all(data)
    if scope.cancelled_caught:
        reason = f"peer did not read our bytes within {timeout:g}s"
        negotiator.fail(reason)
        raise NegotiationTimeout(reason)


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
