"""A modelled TCP network for sans-IO cores that speak :mod:`p2psc.core.io`.

Why a model of the network rather than of the cores: the cores are the real ones, rebuilt from
their snapshots; only the network, the clock and the faults are modelled, as plain tuples, so
that a global state is cheap to hash and to copy. Actor snapshots are interned
(:mod:`models.interning`): a state holds one small int per actor, not the nested snapshot.

A global state is :class:`Net` = (actor snapshot ids, links, timers, clock, faults left, extra):

- a *link* is one TCP connection between two actors' connection ids, with a FIFO of items in
  flight each way: ``OPEN`` (delivered as :class:`Opened`), ``bytes`` (:class:`Received`),
  ``EOF`` (a clean :class:`Closed`) and ``RESET`` (``Closed`` with an error);
- a *timer* is ``(actor, conn, deadline)`` from :class:`SetTimer`;
- the *clock* only moves when a timer fires (to that timer's deadline): every other event is
  handled at the current clock, so a core's stale-timer checks see a monotonic clock.

Choices from a state: deliver the head item of any link direction, fire a timer (on time: the
earliest deadlines, once the network is quiet), and whatever application steps the model
offers. Faults, while the budget in the state lasts (one per run by default): fire any other
timer early (an arbitrary delay somewhere), or drop a live link. Each actor step is memoised on
``(actor, snapshot id, event, now)``: cores are deterministic, so the same local step is computed
once however many global states share it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from types import ModuleType
from typing import Any, NamedTuple

from p2psc.models.explorer import Coverage, Step
from p2psc.models.interning import Interned

from p2psc.core.io import (
    Action,
    Close,
    Closed,
    Connect,
    Event,
    Listen,
    Opened,
    Received,
    Send,
    SetTimer,
    TimerFired,
)

__all__ = [
    "EOF",
    "OPEN",
    "RESET",
    "Link",
    "Net",
    "Network",
    "Recording",
    "recording",
]

OPEN = "open"
EOF = "eof"
RESET = "reset"
Item = bytes | str


class Link(NamedTuple):
    """One TCP connection: actor ``x`` names it ``xc``, actor ``y`` names it ``yc``."""

    x: int
    xc: int
    y: int
    yc: int
    to_y: tuple[Item, ...]
    to_x: tuple[Item, ...]
    x_open: bool
    y_open: bool
    dead: bool


class Net(NamedTuple):
    """The global state (hashable). ``snaps`` are snapshot ids: see :meth:`Network.snapshot`."""

    snaps: tuple[int, ...]
    links: tuple[Link, ...]
    timers: tuple[tuple[int, int, float], ...]
    clock: float
    faults: int
    extra: Hashable


StepFn = Callable[[Hashable, Event, float], tuple[Hashable, tuple[Action, ...]]]
"""Pure step of one actor: (snapshot, event, now) -> (snapshot', actions)."""


class Recording:
    """While active (``with``), the module-level tables named by ``patches`` are swapped for
    proxies that record every transition taken into ``coverage``.

    Why: the cores step module-level compiled tables and do not report which transition they
    took; swapping the table for a recording proxy during a (memo-missing) core step is exact
    and costs nothing on the hot path. A plain class rather than a generator context manager
    because it is entered once per memo-missing core step (tens of thousands of times per
    run). Single-threaded by design; always restored; re-entrant.
    """

    __slots__ = ("_coverage", "_patches", "_saved")

    def __init__(
        self, patches: tuple[tuple[ModuleType, str], ...], coverage: Coverage | None
    ) -> None:
        self._patches = patches if coverage is not None else ()
        self._coverage = coverage
        self._saved: list[list[tuple[ModuleType, str, Any]]] = []

    def __enter__(self) -> None:
        saved = [(module, name, getattr(module, name)) for module, name in self._patches]
        self._saved.append(saved)
        coverage = self._coverage
        if coverage is not None:
            for module, name, table in saved:
                setattr(module, name, coverage.recorder(table))

    def __exit__(self, *exc: object) -> None:
        for module, name, table in self._saved.pop():
            setattr(module, name, table)


def recording(patches: tuple[tuple[ModuleType, str], ...], coverage: Coverage | None) -> Recording:
    """A :class:`Recording` of ``patches`` into ``coverage`` (nothing when it is None)."""
    return Recording(patches, coverage)


def _key(link: Link) -> tuple[int, int, int, int]:
    return (link.x, link.xc, link.y, link.yc)


def _alive(link: Link) -> bool:
    """A link stays in the state while an end is open or something is still in flight."""
    return bool(link.x_open or link.y_open or link.to_x or link.to_y)


class Network:
    """Mechanics shared by the io-speaking models: applying actions and enumerating steps.

    ``patches`` names the module-level machine tables the cores step (recorded for coverage
    while a memo-missing step runs). Subclasses (models) provide: ``names`` (actor names),
    ``step_fn(actor)`` (one pure step per actor), ``address_of(actor)`` (the address others
    observe for its connections), ``resolve(actor, connect, state)`` (which actor/conn a
    Connect reaches, or None), ``on_actions(...)`` (model bookkeeping: outcomes, property
    flags) and ``app_steps(state)``.
    """

    names: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        faults: int = 0,
        coverage: Coverage | None = None,
        patches: tuple[tuple[ModuleType, str], ...] = (),
    ) -> None:
        self.fault_budget = faults
        self._coverage = coverage
        self._patches = patches
        self._recording = Recording(patches, coverage)
        self._snapshots = Interned()
        self._memo: dict[tuple[int, int, Event, float], tuple[int, tuple[Action, ...]]] = {}
        self._deliveries: dict[
            tuple[int, int, int, int, Item, float], tuple[int, tuple[Action, ...], Step]
        ] = {}
        self._labels: dict[bytes, str] = {}

    # --- hooks for models -------------------------------------------------------------------

    def step_fn(self, actor: int) -> StepFn:
        raise NotImplementedError

    def address_of(self, actor: int) -> tuple[str, int]:
        """The address other actors observe for ``actor``'s outgoing connections."""
        raise NotImplementedError

    def resolve(self, actor: int, action: Connect, state: Net) -> tuple[int, int] | None:
        """(target actor, its conn id) reached by ``action``, or None if refused."""
        raise NotImplementedError

    def on_actions(
        self, state: Net, actor: int, actions: tuple[Action, ...], extra: Hashable
    ) -> Hashable:
        """Model bookkeeping for the actions an actor emitted; returns the new ``extra``."""
        return extra

    def app_steps(self, state: Net) -> list[tuple[Step, Net]]:
        return []

    def label(self, data: bytes) -> str:
        """Human name of a byte string in flight (models decode their messages here)."""
        return f"{len(data)} bytes"

    # --- snapshots and the memoised actor step ---------------------------------------------

    def intern(self, snapshot: Hashable) -> int:
        """The id that stands for ``snapshot`` in global states."""
        return self._snapshots(snapshot)[0]

    def snapshot(self, snap: int) -> Any:
        """The snapshot behind an id."""
        return self._snapshots.values[snap]

    def run(
        self, actor: int, snap: int, event: Event, now: float
    ) -> tuple[int, tuple[Action, ...]]:
        """``actor`` in snapshot ``snap`` handles ``event`` at ``now`` (memoised)."""
        key = (actor, snap, event, now)
        hit = self._memo.get(key)
        if hit is None:
            with self._recording:
                after, actions = self.step_fn(actor)(self._snapshots.values[snap], event, now)
            hit = (self._snapshots(after)[0], actions)
            self._memo[key] = hit
        return hit

    def _deliver(
        self, receiver: int, snap: int, conn: int, sender: int, item: Item, now: float
    ) -> tuple[int, tuple[Action, ...], Step]:
        """``item`` from ``sender`` reaches ``receiver``'s ``conn`` (memoised with its label)."""
        event: Event
        if item == OPEN:
            local = self.address_of(receiver)
            event, text = Opened(conn, self.address_of(sender), local), "connected"
        elif item == EOF:
            event, text = Closed(conn, None), "EOF"
        elif item == RESET:
            event, text = Closed(conn, "connection reset"), "RESET"
        else:
            assert isinstance(item, bytes)
            event, text = Received(conn, item), self.label(item)
        after, actions = self.run(receiver, snap, event, now)
        source = self.names[sender] if sender >= 0 else "network"
        hit = (after, actions, Step("deliver", self.names[receiver], text, source))
        self._deliveries[(receiver, snap, conn, sender, item, now)] = hit
        return hit

    # --- applying actions -------------------------------------------------------------------

    def apply(self, state: Net, actor: int, snap: int, actions: tuple[Action, ...]) -> Net:
        """The state after ``actor`` moved to snapshot id ``snap`` and emitted ``actions``.

        Links stay sorted by their ends and closed, empty links are dropped; the timer table is
        only rebuilt, and links only re-sorted or filtered, when an action can change them (the
        hot path of the mediation model)."""
        snaps = state.snaps
        if snaps[actor] != snap:
            snaps = (*snaps[:actor], snap, *snaps[actor + 1 :])
        extra = self.on_actions(state, actor, actions, state.extra)
        if not actions:
            return Net(snaps, state.links, state.timers, state.clock, state.faults, extra)
        links = list(state.links)
        timers: dict[tuple[int, int], float] | None = None
        closed = connected = False
        for action in actions:
            kind = type(action)
            if kind is Send:
                assert isinstance(action, Send)
                self._send(links, actor, action.conn, action.data)
            elif kind is Close:
                assert isinstance(action, Close)
                self._close(links, actor, action.conn, EOF)
                closed = True
                if timers is None:
                    timers = {(a, c): d for a, c, d in state.timers}
                timers.pop((actor, action.conn), None)
            elif kind is SetTimer:
                assert isinstance(action, SetTimer)
                if timers is None:
                    timers = {(a, c): d for a, c, d in state.timers}
                if action.deadline is None:
                    timers.pop((actor, action.conn), None)
                else:
                    timers[(actor, action.conn)] = action.deadline
            elif kind is Connect:
                assert isinstance(action, Connect)
                connected = True
                target = self.resolve(actor, action, state)
                if target is None:
                    links.append(Link(actor, action.conn, -1, -1, (), (RESET,), True, False, True))
                else:
                    y, yc = target
                    links.append(
                        Link(actor, action.conn, y, yc, (OPEN,), (OPEN,), True, True, False)
                    )
            elif kind is Listen:
                pass  # listeners are model bookkeeping (see on_actions)
        if closed:
            links = [k for k in links if _alive(k)]
        if connected:
            links.sort(key=_key)  # stable, as the sorted order of the other links is
        return Net(
            snaps,
            tuple(links),
            state.timers
            if timers is None
            else tuple(sorted((a, c, d) for (a, c), d in timers.items())),
            state.clock,
            state.faults,
            extra,
        )

    @staticmethod
    def _find(links: list[Link], actor: int, conn: int) -> int:
        for i, link in enumerate(links):
            if (link.x == actor and link.xc == conn and link.x_open) or (
                link.y == actor and link.yc == conn and link.y_open
            ):
                return i
        return -1

    def _send(self, links: list[Link], actor: int, conn: int, data: bytes) -> None:
        i = self._find(links, actor, conn)
        if i < 0:
            return
        link = links[i]
        if link.dead:
            return
        x, xc, y, yc, to_y, to_x, x_open, y_open, dead = link
        if x == actor and xc == conn:
            if y_open:
                links[i] = Link(x, xc, y, yc, (*to_y, data), to_x, x_open, y_open, dead)
        elif x_open:
            links[i] = Link(x, xc, y, yc, to_y, (*to_x, data), x_open, y_open, dead)

    def _close(self, links: list[Link], actor: int, conn: int, item: str) -> None:
        """``actor`` closes its end: it reads nothing more; the other end gets ``item``."""
        i = self._find(links, actor, conn)
        if i < 0:
            return
        x, xc, y, yc, to_y, to_x, x_open, y_open, dead = links[i]
        if x == actor and xc == conn:
            if not (dead or not y_open):
                to_y = (*to_y, item)
            links[i] = Link(x, xc, y, yc, to_y, (), False, y_open, dead)
        else:
            if not (dead or not x_open):
                to_x = (*to_x, item)
            links[i] = Link(x, xc, y, yc, (), to_x, x_open, False, dead)

    # --- enumerating steps ------------------------------------------------------------------

    def _fire(
        self, state: Net, timer: tuple[int, int, float], *, on_time: bool
    ) -> tuple[Step, Net]:
        """``timer`` fires: on time, or early (a fault: it uses up one of the budget)."""
        actor, conn, deadline = timer
        now = max(state.clock, deadline)
        timers = tuple(t for t in state.timers if t != timer)
        faults = state.faults if on_time else state.faults - 1
        base = Net(state.snaps, state.links, timers, now, faults, state.extra)
        snap, actions = self.run(actor, state.snaps[actor], TimerFired(conn), now)
        when = "" if on_time else " (early: fault)"
        step = Step(
            "timer", self.names[actor], f"conn {conn} at t={now:g}{when}", fault=not on_time
        )
        return step, self.apply(base, actor, snap, actions)

    def successors(self, state: Net) -> list[tuple[Step, Net]]:
        out: list[tuple[Step, Net]] = []
        quiet = True
        snaps, all_links, clock = state.snaps, state.links, state.clock
        deliveries = self._deliveries
        for i, link in enumerate(all_links):
            x, xc, y, yc, to_y, to_x, x_open, y_open, dead = link
            for towards_y in (True, False):
                channel = to_y if towards_y else to_x
                if not channel:
                    continue
                quiet = False
                item, rest = channel[0], channel[1:]
                if towards_y:
                    receiver, conn, sender = y, yc, x
                    if item == RESET:  # the socket is dead at the receiver's end
                        popped = Link(x, xc, y, yc, (), to_x, x_open, False, dead)
                    else:
                        popped = Link(x, xc, y, yc, rest, to_x, x_open, y_open, dead)
                else:
                    receiver, conn, sender = x, xc, y
                    if item == RESET:
                        popped = Link(x, xc, y, yc, to_y, (), False, y_open, dead)
                    else:
                        popped = Link(x, xc, y, yc, to_y, rest, x_open, y_open, dead)
                if _alive(popped):
                    links = (*all_links[:i], popped, *all_links[i + 1 :])
                else:
                    links = (*all_links[:i], *all_links[i + 1 :])
                base = Net(snaps, links, state.timers, clock, state.faults, state.extra)
                snap = snaps[receiver]
                hit = deliveries.get((receiver, snap, conn, sender, item, clock))
                if hit is None:
                    hit = self._deliver(receiver, snap, conn, sender, item, clock)
                after, actions, step = hit
                out.append((step, self.apply(base, receiver, after, actions)))
        out.extend(self.app_steps(state))
        if state.timers:
            # On time: when the network is quiet, the earliest deadlines fire. Early (a fault,
            # modelling arbitrary delays): any other timer, while the fault budget lasts.
            # Faults come after every other step (the explorer's convention for final states).
            first = min(d for _, _, d in state.timers)
            early = []
            for timer in state.timers:
                if quiet and timer[2] == first:
                    out.append(self._fire(state, timer, on_time=True))
                elif state.faults > 0:
                    early.append(timer)
            out.extend(self._fire(state, timer, on_time=False) for timer in early)
        if state.faults > 0:
            for i, link in enumerate(state.links):
                if link.dead or link.y < 0 or not (link.x_open or link.y_open):
                    continue
                dropped = Link(
                    link.x,
                    link.xc,
                    link.y,
                    link.yc,
                    (RESET,) if link.y_open else (),
                    (RESET,) if link.x_open else (),
                    link.x_open,
                    link.y_open,
                    True,
                )
                nxt = Net(
                    state.snaps,
                    (*state.links[:i], dropped, *state.links[i + 1 :]),
                    state.timers,
                    state.clock,
                    state.faults - 1,
                    state.extra,
                )
                step = Step("drop", self.names[link.x], "reset", self.names[link.y], fault=True)
                out.append((step, nxt))
        return out
