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

    __slots__ = ("_coverage", "_recorders", "_saved", "_spaces")

    def __init__(
        self, patches: tuple[tuple[ModuleType, str], ...], coverage: Coverage | None
    ) -> None:
        # Module namespaces are plain dicts: item access is cheaper than getattr/setattr.
        self._spaces = tuple((vars(module), name) for module, name in patches)
        if coverage is None:
            self._spaces = ()
        self._coverage = coverage
        self._recorders: dict[int, Any] = {}
        """id(table) -> its recorder (which holds the table, so the id stays its own)."""
        self._saved: list[list[Any]] = []

    def __enter__(self) -> None:
        saved = []
        recorders = self._recorders
        for namespace, name in self._spaces:
            table = namespace[name]
            saved.append(table)
            recorder = recorders.get(id(table))
            if recorder is None:
                assert self._coverage is not None
                recorder = recorders[id(table)] = self._coverage.recorder(table)
            namespace[name] = recorder
        self._saved.append(saved)

    def __exit__(self, *exc: object) -> None:
        for (namespace, name), table in zip(self._spaces, self._saved.pop(), strict=True):
            namespace[name] = table


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
    garbage: bytes | None = None
    """When set, a fault may also inject these bytes into any live connection, towards either
    open end (malformed input from the network or an attacker on the path)."""
    drops_and_early_timers: bool = True
    """Whether the fault budget may be spent on drops and early timers (a model that only wants
    ``garbage`` faults clears it)."""

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

    def _event(self, receiver: int, conn: int, sender: int, item: Item) -> tuple[Event, str]:
        """The event ``item`` from ``sender`` makes at ``receiver``'s ``conn``, and its label."""
        if item == OPEN:
            local = self.address_of(receiver)
            return Opened(conn, self.address_of(sender), local), "connected"
        if item == EOF:
            return Closed(conn, None), "EOF"
        if item == RESET:
            return Closed(conn, "connection reset"), "RESET"
        assert isinstance(item, bytes)
        return Received(conn, item), self.label(item)

    def _deliver(
        self, receiver: int, snap: int, conn: int, sender: int, item: Item, now: float
    ) -> tuple[int, tuple[Action, ...], Step]:
        """``item`` from ``sender`` reaches ``receiver``'s ``conn``: the step and its label (the
        callers memoise it)."""
        event, text = self._event(receiver, conn, sender, item)
        after, actions = self.run(receiver, snap, event, now)
        source = self.names[sender] if sender >= 0 else "network"
        return after, actions, Step("deliver", self.names[receiver], text, source)

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
                key = (receiver, snap, conn, sender, item, clock)
                hit = deliveries.get(key)
                if hit is None:
                    hit = deliveries[key] = self._deliver(receiver, snap, conn, sender, item, clock)
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
                elif state.faults > 0 and self.drops_and_early_timers:
                    early.append(timer)
            out.extend(self._fire(state, timer, on_time=False) for timer in early)
        if state.faults > 0 and self.drops_and_early_timers:
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
        if state.faults > 0 and self.garbage is not None:
            extra = state.extra
            for step, links in self._injections(state.links):
                nxt = Net(state.snaps, links, state.timers, state.clock, state.faults - 1, extra)
                out.append((step, nxt))
        return out

    def _injections(self, links: tuple[Link, ...]) -> list[tuple[Step, tuple[Link, ...]]]:
        """Every way to inject :attr:`garbage` at the end of a live connection's direction."""
        out = []
        garbage = self.garbage
        assert garbage is not None
        for i, link in enumerate(links):
            if link.dead or link.y < 0:
                continue
            x, xc, y, yc, to_y, to_x, x_open, y_open, dead = link
            for towards_y in (True, False):
                if not (y_open if towards_y else x_open):
                    continue
                channel = to_y if towards_y else to_x
                if channel and channel[-1] in (EOF, RESET):
                    continue  # nothing follows a close
                if towards_y:
                    changed = Link(x, xc, y, yc, (*to_y, garbage), to_x, x_open, y_open, dead)
                    receiver, sender = y, x
                else:
                    changed = Link(x, xc, y, yc, to_y, (*to_x, garbage), x_open, y_open, dead)
                    receiver, sender = x, y
                step = Step(
                    "inject", self.names[receiver], "malformed bytes", self.names[sender], True
                )
                out.append((step, (*links[:i], changed, *links[i + 1 :])))
        return out


Packed = tuple[Any, ...]
"""A packed global state: ``(local id per actor..., links id, clock, faults left, extra id)``,
where an actor's *local* id stands for (its snapshot id, its timers); see
:class:`PackedNetwork`."""

_LINKS, _CONNECT, _TIMERS, _EXTRA, _EXTRA_LINKS = 1, 2, 4, 8, 16
"""Flags of an actions id: it can change the links, it connects (so the links it makes depend on
the extra, through :meth:`Network.resolve`), it can change the actor's timers,
:meth:`PackedNetwork.bookkeeping` says it can change the extra, and
:meth:`PackedNetwork.bookkeeping_reads_links` says that change depends on the links."""

_NO_TIMERS = 0
"""Timers id of an empty timer set (interned first)."""
_INF = float("inf")


def _actor_and_snapshot(step: tuple[int, int, Event, float]) -> tuple[int, int]:
    return step[0], step[1]


class PackedNetwork(Network):
    """The same network semantics as :class:`Network`, explored on *packed* states.

    Why: on the mediation model almost every global state has its own links, timers and
    bookkeeping, so the cost per transition was the Python work of rebuilding and hashing nested
    tuples, not the (already memoised) core steps. Here a state is a flat tuple of small ints
    and the clock: ``(local id per actor, links id, clock, faults left, extra id)``, each an
    interned id (:mod:`models.interning`: a bijection, so deduplicating packed states is exactly
    deduplicating the :class:`Net` states behind them; :meth:`unpack` gives them back). A timer
    belongs to the actor that set it and only that actor's steps change it, so an actor's
    *local* id stands for its snapshot id together with its own timers (``(conn, deadline)``
    pairs). Every piece of work is memoised on the few ids it depends on:

    - per links id: the deliverable heads (receiver, conn, sender, item, links id once popped),
      whether the network is quiet, and the links id after each possible fault;
    - per (delivery, receiver local id, clock): the core step, its actions id, its label and
      the local id after it (timers included); likewise per timer firing;
    - per (links id, actor, actions id; plus the extra id for a Connect): the links after the
      actions; per (links id, extra id, actor, actions id), when :meth:`bookkeeping` says the
      actions matter to it: the extra after them (both by :meth:`Network.apply`, the same code).

    Contract for the hooks (what makes the memo exact): ``resolve`` and ``on_actions`` read
    only the links, the extra and their arguments (not snapshots, timers or the clock); hooks
    still receive :class:`Net` states (unpacked on a memo miss). ``app_steps`` may be
    overridden by :meth:`app_moves` for speed (the default packs what ``app_steps`` returns;
    :meth:`advance` and :meth:`act` build the packed successor). The successor order is
    :meth:`Network.successors`'s, so both explore the same states in the same order (a test
    checks it on the mediation model).
    """

    def __init__(
        self,
        *,
        faults: int = 0,
        coverage: Coverage | None = None,
        patches: tuple[tuple[ModuleType, str], ...] = (),
    ) -> None:
        super().__init__(faults=faults, coverage=coverage, patches=patches)
        self._link_sets = Interned()
        self._link_info: list[Any] = []
        self._link_faults: dict[int, tuple[tuple[Step, int], ...]] = {}
        self._timer_sets = Interned()
        self._timer_info: list[tuple[float, tuple[tuple[int, float, int], ...]]] = []
        self._locals = Interned()
        self._local_snap: list[int] = []
        self._local_timers: list[int] = []
        self._local_first: list[float] = []
        self._extras = Interned()
        self._action_sets = Interned()
        self._action_flags: list[int] = []
        self._delivery_keys = Interned()
        self._key_events: list[tuple[Event, Step]] = []
        """Per delivery key id: the event it makes at the receiver and the step's label (both
        depend on the key alone: built once instead of at every delivery memo miss)."""
        self._timer_events: dict[int, TimerFired] = {}
        self._packed_deliveries: dict[tuple[int, int, float], tuple[int, int, Step]] = {}
        self._fires: dict[tuple[int, int, int, float, bool], tuple[int, int, Step]] = {}
        self._advances: dict[tuple[int, int, int], int] = {}
        self._link_effects: dict[tuple[int, int, int], int] = {}
        self._connect_effects: dict[tuple[int, int, int, int], int] = {}
        self._extra_effects: dict[tuple[int, int, int, int], int] = {}
        self._extra_only: dict[tuple[int, int, int], int] = {}
        self._timer_effects: dict[tuple[int, int], int] = {}
        self._no_app_moves: set[int] = set()
        """Extra ids in which :meth:`app_moves` offers nothing (a model may fill it: then
        :meth:`successors` does not ask)."""
        assert self._timers_id(()) == _NO_TIMERS

    # --- hooks --------------------------------------------------------------------------------

    def bookkeeping(self, actor: int, actions: tuple[Action, ...]) -> bool:
        """Whether :meth:`Network.on_actions` can change the extra for these actions (called
        once per distinct actions; a model whose bookkeeping ignores most actions says so here
        and saves a lookup per transition). Default: always."""
        return True

    def bookkeeping_reads_links(self, actor: int, actions: tuple[Action, ...]) -> bool:
        """Whether :meth:`Network.on_actions` reads the state's links for these actions (called
        once per distinct actions that :meth:`bookkeeping` says matter). When it does not, the
        new extra is memoised on (extra id, actor, actions id) alone instead of also on the
        links id, which almost every step changes. Default: it does."""
        return True

    def app_moves(self, state: Packed) -> list[tuple[Step, Packed]]:
        """Application steps of a packed state (default: :meth:`Network.app_steps`, packed)."""
        return [(step, self.pack(nxt)) for step, nxt in self.app_steps(self.unpack(state))]

    # --- packing ------------------------------------------------------------------------------

    def pack(self, state: Net) -> Packed:
        """The packed form of ``state``."""
        n = len(self.names)
        per_actor: list[list[tuple[int, float]]] = [[] for _ in range(n)]
        for actor, conn, deadline in state.timers:
            per_actor[actor].append((conn, deadline))
        return (
            *(
                self._local_id(snap, self._timers_id(tuple(sorted(timers))))
                for snap, timers in zip(state.snaps, per_actor, strict=True)
            ),
            self._links_id(state.links),
            state.clock,
            state.faults,
            self._extras(state.extra)[0],
        )

    def unpack(self, state: Packed) -> Net:
        """The :class:`Net` behind a packed state."""
        n = len(self.names)
        values = self._timer_sets.values
        return Net(
            tuple(self._local_snap[local] for local in state[:n]),
            self._link_sets.values[state[n]],
            tuple(
                (actor, conn, deadline)
                for actor in range(n)
                for conn, deadline in values[self._local_timers[state[actor]]]
            ),
            state[n + 1],
            state[n + 2],
            self._extras.values[state[n + 3]],
        )

    def snap_of(self, state: Packed, actor: int) -> int:
        """The snapshot id of ``actor`` in a packed state (see :meth:`Network.snapshot`)."""
        return self._local_snap[state[actor]]

    def extra_of(self, state: Packed) -> Any:
        """The model bookkeeping (``Net.extra``) of a packed state."""
        return self._extras.values[state[-1]]

    def _local_id(self, snap: int, timers: int) -> int:
        ident, new = self._locals((snap, timers))
        if new:
            self._local_snap.append(snap)
            self._local_timers.append(timers)
            self._local_first.append(self._timer_info[timers][0])
        return ident

    def _links_id(self, links: tuple[Link, ...]) -> int:
        ident, new = self._link_sets(links)
        if new:
            self._link_info.append(None)
        return ident

    def _timers_id(self, timers: tuple[tuple[int, float], ...]) -> int:
        ident, new = self._timer_sets(timers)
        if new:
            self._timer_info.append((_INF, ()))  # replaced below once interned
            if timers:
                entries = tuple(
                    (conn, deadline, self._timers_id(tuple(t for t in timers if t[0] != conn)))
                    for conn, deadline in timers
                )
                self._timer_info[ident] = (min(d for _, d in timers), entries)
        return ident

    def _actions_id(self, actor: int, actions: tuple[Action, ...]) -> int:
        ident, new = self._action_sets((actor, actions))
        if new:
            flags = 0
            for action in actions:
                kind = type(action)
                if kind is Send or kind is Close or kind is Connect:
                    flags |= _LINKS
                if kind is Connect:
                    flags |= _CONNECT
                if kind is SetTimer or kind is Close:
                    flags |= _TIMERS
            if self.bookkeeping(actor, actions):
                flags |= _EXTRA
                if self.bookkeeping_reads_links(actor, actions):
                    flags |= _EXTRA_LINKS
            self._action_flags.append(flags)
        return ident

    def _links_facts(self, ident: int) -> tuple[tuple[Any, ...], bool]:
        """(deliverable heads, quiet) of a links id, as :meth:`Network.successors` enumerates
        them: heads in link order, towards ``y`` before towards ``x`` (its faults:
        :meth:`_links_faults`)."""
        facts = self._link_info[ident]
        if facts is not None:
            return facts  # type: ignore[no-any-return]
        all_links: tuple[Link, ...] = self._link_sets.values[ident]
        heads = []
        quiet = True
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
                    if item == RESET:
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
                key = self._delivery_key(receiver, conn, sender, item)
                heads.append((key, receiver, conn, sender, item, self._links_id(links)))
        facts = (tuple(heads), quiet)
        self._link_info[ident] = facts
        return facts

    def _delivery_key(self, receiver: int, conn: int, sender: int, item: Item) -> int:
        """The id of a deliverable item (see :meth:`_links_facts`), with its event and step."""
        key, new = self._delivery_keys((receiver, conn, sender, item))
        if new:
            event, text = self._event(receiver, conn, sender, item)
            source = self.names[sender] if sender >= 0 else "network"
            self._key_events.append((event, Step("deliver", self.names[receiver], text, source)))
        return key

    def _timer_event(self, conn: int) -> TimerFired:
        """The (one, shared) event of ``conn``'s timer firing."""
        event = self._timer_events.get(conn)
        if event is None:
            event = self._timer_events[conn] = TimerFired(conn)
        return event

    def _links_faults(self, ident: int) -> tuple[tuple[Step, int], ...]:
        """The faults of a links id, as :meth:`Network.successors` enumerates them: the drops,
        then the :attr:`garbage` injections, each with the links id it leads to. Apart from
        :meth:`_links_facts` because most states are reached after the fault budget is spent
        (five in six links ids of the mediation model never need theirs)."""
        faults = self._link_faults.get(ident)
        if faults is not None:
            return faults
        all_links: tuple[Link, ...] = self._link_sets.values[ident]
        drops = []
        for i, link in enumerate(all_links):
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
            step = Step("drop", self.names[link.x], "reset", self.names[link.y], fault=True)
            drops.append((step, self._links_id((*all_links[:i], dropped, *all_links[i + 1 :]))))
        if not self.drops_and_early_timers:
            drops = []
        if self.garbage is not None:
            drops += [(step, self._links_id(links)) for step, links in self._injections(all_links)]
        faults = self._link_faults[ident] = tuple(drops)
        return faults

    # --- transitions --------------------------------------------------------------------------

    def advance(self, local: int, after: int, actions: int, timers: int | None = None) -> int:
        """The local id of an actor that was at ``local`` (or at its snapshot with the timers
        id ``timers``, e.g. with a fired timer removed), moved to snapshot id ``after`` and
        emitted the actions of id ``actions`` (from :meth:`_actions_id`)."""
        if timers is None:
            timers = self._local_timers[local]
        if self._action_flags[actions] & _TIMERS:
            changed = self._timer_effects.get((timers, actions))
            timers = self._timer_effect(timers, actions) if changed is None else changed
        return self._local_id(after, timers)

    def act(
        self,
        state: Packed,
        actor: int,
        local: int,
        actions: int,
        links: int,
        clock: float,
        faults: int,
        extra: int,
    ) -> Packed:
        """The packed state after ``actor`` moved to local id ``local`` (see :meth:`advance`)
        having emitted the actions of id ``actions``, from the given links id, clock, faults and
        extra id (the step's base: e.g. the links with the delivered item popped)."""
        n = len(self.names)
        flags = self._action_flags[actions]
        new = list(state)
        new[actor] = local
        new[n] = links
        new[n + 1] = clock
        new[n + 2] = faults
        if flags & _LINKS:
            if flags & _CONNECT:
                hit = self._connect_effects.get((links, extra, actor, actions))
            else:
                hit = self._link_effects.get((links, actor, actions))
            if hit is None and flags & _CONNECT:
                hit = self._effect(state, actor, actions, links, clock, faults, extra)[0]
            elif hit is None:
                hit = self._link_effect(actor, links, actions)
            new[n] = hit
        if flags & _EXTRA:
            if flags & (_EXTRA_LINKS | _CONNECT):
                hit = self._extra_effects.get((links, extra, actor, actions))
                if hit is None:
                    hit = self._effect(state, actor, actions, links, clock, faults, extra)[1]
            else:
                hit = self._extra_only.get((extra, actor, actions))
                if hit is None:
                    hit = self._extra_only_effect(actor, actions, extra)
            extra = hit
        new[n + 3] = extra
        return tuple(new)

    def _extra_only_effect(self, actor: int, actions: int, extra: int) -> int:
        """The extra id after actions whose bookkeeping does not read the links (see
        :meth:`bookkeeping_reads_links`): :meth:`Network.on_actions` itself, on a state whose
        links, timers and clock it does not look at."""
        book = self._extras.values[extra]
        base = Net((), (), (), 0.0, 0, book)
        changed = self.on_actions(base, actor, self._action_sets.values[actions][1], book)
        result = self._extras(changed)[0]
        self._extra_only[(extra, actor, actions)] = result
        return result

    def _effect(
        self,
        state: Packed,
        actor: int,
        actions: int,
        links: int,
        clock: float,
        faults: int,
        extra: int,
    ) -> tuple[int, int]:
        """(links id, extra id) after the actions, by :meth:`Network.apply` itself."""
        n = len(self.names)
        snaps = tuple(self._local_snap[local] for local in state[:n])
        base = Net(
            snaps, self._link_sets.values[links], (), clock, faults, self._extras.values[extra]
        )
        result = self.apply(base, actor, snaps[actor], self._action_sets.values[actions][1])
        effect = (self._links_id(result.links), self._extras(result.extra)[0])
        self._connect_effects[(links, extra, actor, actions)] = effect[0]
        self._link_effects[(links, actor, actions)] = effect[0]
        self._extra_effects[(links, extra, actor, actions)] = effect[1]
        return effect

    def _link_effect(self, actor: int, links: int, actions: int) -> int:
        """The links id after actions that send and close but do not connect (the link part
        of :meth:`Network.apply`, which needs no hook for them)."""
        changed = list(self._link_sets.values[links])
        closed = False
        for action in self._action_sets.values[actions][1]:
            kind = type(action)
            if kind is Send:
                self._send(changed, actor, action.conn, action.data)
            elif kind is Close:
                self._close(changed, actor, action.conn, EOF)
                closed = True
        if closed:
            changed = [link for link in changed if _alive(link)]
        result = self._links_id(tuple(changed))
        self._link_effects[(links, actor, actions)] = result
        return result

    def _timer_effect(self, timers: int, actions: int) -> int:
        """An actor's timers id after its actions (the timer part of :meth:`Network.apply`)."""
        table = dict(self._timer_sets.values[timers])
        for action in self._action_sets.values[actions][1]:
            if type(action) is Close:
                table.pop(action.conn, None)
            elif type(action) is SetTimer:
                if action.deadline is None:
                    table.pop(action.conn, None)
                else:
                    table[action.conn] = action.deadline
        result = self._timers_id(tuple(sorted(table.items())))
        self._timer_effects[(timers, actions)] = result
        return result

    def _packed_deliver(
        self, key: int, receiver: int, local: int, conn: int, sender: int, item: Item, now: float
    ) -> tuple[int, int, Step]:
        event, step = self._key_events[key]
        after, actions = self.run(receiver, self._local_snap[local], event, now)
        ident = self._actions_id(receiver, actions)
        hit = (self.advance(local, after, ident), ident, step)
        self._packed_deliveries[(key, local, now)] = hit
        return hit

    def _defer_fire(
        self,
        state: Packed,
        actor: int,
        timer: tuple[int, float, int],
        on_time: bool,
        wanted: dict[tuple[int, int, Event, float], None],
    ) -> bool:
        """Whether :meth:`_packed_fire` would run a real core step not computed yet (then
        noted in ``wanted``)."""
        conn, deadline, _ = timer
        local = state[actor]
        clock = state[len(self.names) + 1]
        now = clock if clock > deadline else deadline
        if (actor, conn, local, now, on_time) in self._fires:
            return False  # the firing is memoised, hence its core step too
        missing = (actor, self._local_snap[local], self._timer_event(conn), now)
        if missing in self._memo:
            return False
        wanted[missing] = None
        return True

    def _packed_fire(
        self, state: Packed, actor: int, timer: tuple[int, float, int], on_time: bool
    ) -> tuple[Step, Packed]:
        conn, deadline, without = timer
        n = len(self.names)
        now = max(state[n + 1], deadline)
        local = state[actor]
        key = (actor, conn, local, now, on_time)
        hit = self._fires.get(key)
        if hit is None:
            after, actions = self.run(actor, self._local_snap[local], self._timer_event(conn), now)
            when = "" if on_time else " (early: fault)"
            step = Step(
                "timer", self.names[actor], f"conn {conn} at t={now:g}{when}", fault=not on_time
            )
            ident = self._actions_id(actor, actions)
            hit = self._fires[key] = (self.advance(local, after, ident, without), ident, step)
        faults = state[n + 2] if on_time else state[n + 2] - 1
        return hit[2], self.act(state, actor, hit[0], hit[1], state[n], now, faults, state[-1])

    prefetching: bool = True
    """Whether the explorer defers the states whose real core steps are missing and computes
    those steps in batches (:meth:`successors_or_defer`, :meth:`run_deferred`); tests and the
    bench compare with computing each step when first needed."""

    def run_deferred(self, wanted: dict[tuple[int, int, Event, float], None]) -> None:
        """Run, back to back, the real core steps :meth:`successors_or_defer` noted in
        ``wanted`` (then empty it).

        Why batches: a core step costs about twice as much inside a search as alone, because
        between two memo misses the search walks its big tables (visited states, memos), which
        evicts the cores' code and data from the CPU caches; a batch of steps keeps them warm.
        Exact: :meth:`Network.run` memoises on (actor, snapshot id, event, now) and cores are
        deterministic, so computing a step earlier changes nothing but the order in which
        snapshots are first interned (their ids)."""
        if not wanted:
            return
        values = self._snapshots.values
        intern = self._snapshots
        memo = self._memo
        step_fns = [self.step_fn(actor) for actor in range(len(self.names))]
        # Grouped by actor and snapshot: one core's code and one snapshot's data in a row.
        batch = sorted(wanted, key=_actor_and_snapshot)
        wanted.clear()
        with self._recording:  # once for the batch (what Network.run does per step)
            for key in batch:
                actor, snap, event, now = key
                after, actions = step_fns[actor](values[snap], event, now)
                memo[key] = (intern(after)[0], actions)

    def successors(self, state: Packed) -> list[tuple[Step, Packed]]:  # type: ignore[override]
        out = self.successors_or_defer(state, None)
        assert out is not None
        return out

    def successors_or_defer(
        self, state: Packed, wanted: dict[tuple[int, int, Event, float], None] | None
    ) -> list[tuple[Step, Packed]] | None:
        """:meth:`successors` (``wanted`` None), or, when a real core step they need is not
        computed yet, None: the missing steps are then noted in ``wanted`` for
        :meth:`run_deferred`, and the explorer expands the state again after that batch.

        Why deferring rather than looking ahead: the explorer used to walk every state of a
        chunk for missing steps before expanding it (about a tenth of a cold run, spent again
        by the expansion); here the expansion itself finds them, and only the few states that
        miss a step (about one in ten, cold; none, warm) are expanded twice."""
        n = len(self.names)
        links, clock, faults, extra = state[n:]
        facts = self._link_info[links]
        heads, quiet = facts if facts is not None else self._links_facts(links)
        out: list[tuple[Step, Packed]] = []
        append = out.append
        deliveries = self._packed_deliveries
        act = self.act
        flags_of = self._action_flags
        link_effects = self._link_effects
        extra_effects = self._extra_effects
        extra_only = self._extra_only
        deferred = False
        for key, receiver, conn, sender, item, popped in heads:
            local = state[receiver]
            hit = deliveries.get((key, local, clock))
            if hit is None:
                if wanted is not None:
                    missing = (receiver, self._local_snap[local], self._key_events[key][0], clock)
                    if missing not in self._memo:
                        wanted[missing] = None
                        deferred = True
                        continue
                hit = self._packed_deliver(key, receiver, local, conn, sender, item, clock)
            if deferred:
                continue  # the state is expanded again after the batch: only misses matter now
            after, actions, step = hit
            # :meth:`act`, inlined for the common case where every effect is memoised already.
            flags = flags_of[actions]
            new = list(state)
            new[receiver] = after
            new[n] = popped
            if flags:
                if flags & _CONNECT:
                    nxt = act(state, receiver, after, actions, popped, clock, faults, extra)
                    append((step, nxt))
                    continue
                if flags & _LINKS:
                    changed = link_effects.get((popped, receiver, actions))
                    if changed is None:
                        changed = self._link_effect(receiver, popped, actions)
                    new[n] = changed
                if flags & _EXTRA:
                    if flags & _EXTRA_LINKS:
                        changed = extra_effects.get((popped, extra, receiver, actions))
                        if changed is None:
                            nxt = act(state, receiver, after, actions, popped, clock, faults, extra)
                            append((step, nxt))
                            continue
                    else:
                        changed = extra_only.get((extra, receiver, actions))
                        if changed is None:
                            changed = self._extra_only_effect(receiver, actions, extra)
                    new[-1] = changed
            append((step, tuple(new)))
        if not deferred and extra not in self._no_app_moves:
            out.extend(self.app_moves(state))
        can_fault = faults > 0 and self.drops_and_early_timers
        if quiet or can_fault:
            local_first = self._local_first
            firsts = [local_first[local] for local in state[:n]]
            first = min(firsts)
            if first != _INF:
                info = self._timer_info
                local_timers = self._local_timers
                early = []
                fire = self._packed_fire
                for actor in range(n):
                    if firsts[actor] == _INF:
                        continue
                    for timer in info[local_timers[state[actor]]][1]:
                        on_time = quiet and timer[1] == first
                        if (
                            wanted is not None
                            and (on_time or can_fault)
                            and self._defer_fire(state, actor, timer, on_time, wanted)
                        ):
                            deferred = True
                        if deferred:
                            continue
                        if on_time:
                            append(fire(state, actor, timer, True))
                        elif can_fault:
                            early.append((actor, timer))
                if deferred:
                    return None
                out.extend(fire(state, actor, timer, False) for actor, timer in early)
        if deferred:
            return None
        if faults > 0:
            head = state[:n]
            for step, dropped in self._links_faults(links):
                append((step, (*head, dropped, clock, faults - 1, extra)))
        return out
