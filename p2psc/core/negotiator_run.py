"""The bookkeeping of a negotiator runner, shared by the asyncio and trio runners (sans-IO).

Why: a runner (:func:`p2psc.aio.negotiator.run_negotiator`, :func:`p2psc.trio.run_negotiator`)
repeats "negotiate a round, run the protocol or sleep" until the peer closes, a stop, a round
limit or an error. What it counts, when it stops, which texts its deadlines and failures carry
and how a failure reaches the :class:`~p2psc.core.negotiator.Negotiator` is the same in every
framework; only reading, writing, sleeping and closing differ. :class:`NegotiatorRun` holds the
former (no I/O, no clock), so each runner is its loop of awaits around it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from p2psc.core.negotiator import Negotiated, Negotiator, Outcome, Sleep
from p2psc.errors import NegotiationError, NegotiationTimeout, P2pscError

__all__ = ["NegotiatorRun", "RunResult"]


@dataclass
class RunResult:
    """Why and how a run ended. ``error`` is None for a clean end (EOF, stop, max_rounds)."""

    rounds: int = 0
    idle_rounds: int = 0
    protocols_run: dict[str, int] = field(default_factory=dict)
    reason: str = ""
    error: P2pscError | None = None


class NegotiatorRun:
    """One run of ``negotiator``: its :class:`RunResult` and every decision a runner makes
    that is not I/O. Raises ValueError at once for a handler missing from the protocol table
    or a ``reply_timeout`` that is not positive."""

    def __init__(
        self,
        negotiator: Negotiator,
        handlers: Collection[str],
        *,
        reply_timeout: float,
        max_rounds: int | None,
    ) -> None:
        missing = [name for name in negotiator.protocols.by_name if name not in handlers]
        if missing:
            raise ValueError(f"no handler for protocol(s) {', '.join(sorted(missing))}")
        if reply_timeout <= 0:
            raise ValueError("reply_timeout must be > 0")
        self.negotiator = negotiator
        self.reply_timeout = reply_timeout
        self.max_rounds = max_rounds
        self.result = RunResult()

    def next_round(self, stopping: bool) -> bool:
        """Whether to start another round: not when the application asked to stop
        (``stopping``) or ``max_rounds`` rounds ran; then the result says which."""
        if not self._more_rounds():
            self.result.reason = f"{self.result.rounds} rounds done"
            return False
        if stopping:
            self.result.reason = "stopped"
            return False
        return True

    def _more_rounds(self) -> bool:
        return self.max_rounds is None or self.result.rounds < self.max_rounds

    def record(self, outcome: Outcome) -> float | None:
        """Count a round's outcome. Returns the seconds to sleep before the next round (None:
        run the negotiated protocol, or no round follows)."""
        self.result.rounds += 1
        if isinstance(outcome, Negotiated):
            name = outcome.protocol.name
            self.result.protocols_run[name] = self.result.protocols_run.get(name, 0) + 1
        elif isinstance(outcome, Sleep):
            self.result.idle_rounds += 1
            if self._more_rounds():
                return outcome.seconds
        return None

    def no_byte(self) -> NegotiationTimeout:
        """The peer sent nothing within ``reply_timeout``: the error to raise (the negotiator
        has failed with it)."""
        reason = f"peer sent no byte within {self.reply_timeout:g}s in {self.negotiator.state}"
        self.negotiator.fail(reason)
        return NegotiationTimeout(reason)

    def not_read(self) -> NegotiationTimeout:
        """The peer did not take our bytes within ``reply_timeout``: the error to raise."""
        reason = f"peer did not read our bytes within {self.reply_timeout:g}s"
        self.negotiator.fail(reason)
        return NegotiationTimeout(reason)

    def failed(self, error: P2pscError) -> str:
        """The run ends on ``error`` (the negotiator's, a deadline's, or a protocol handler's,
        such as the secure channel's); the text to log as a warning."""
        self.result.reason, self.result.error = error.reason, error
        if isinstance(error, NegotiationError):
            self.negotiator.fail(error.reason)  # no-op when the core failed already
            return f"negotiator closing the connection: {error.reason}"
        self.negotiator.fail(f"protocol failed: {error.reason}")
        return f"protocol failed, closing the connection: {error.reason}"

    def peer_gone(self, how: str) -> str:
        """The peer closed the connection (``how``: what showed it); a clean end. The text to
        log."""
        self.result.reason = f"peer closed the connection ({how})"
        self.negotiator.fail(self.result.reason)
        return f"negotiator: {self.result.reason}"
