"""A mediator instance of a fleet sharing one Redis registry (spec/mediator.md section 10).

The adapter half of :mod:`p2psc.core.fleet`: it executes the core's registry actions as Lua
scripts in Redis (``redis.asyncio``, the maintained client of the ``redis`` package, optional
extra ``p2psc[redis]``), publishes its notices, listens on this instance's channel, refreshes
the TTL of the waiting registrations, and feeds every outcome back to the core as an event.
No pairing logic lives here.

Round trips: actions queue up and one worker sends everything queued as one pipeline (no
``MULTI``: each script is atomic on its own), so under load one round trip carries many
operations; the scripts are loaded once and called with ``EVALSHA`` (reloaded after a Redis
restart empties its script cache). A client never retries a command on its own: a claim whose
answer was lost might have run, so a failed claim is answered ``REGISTRY_UNAVAILABLE``
(AdvertiseRetry) and the registration it may have made expires with its TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from p2psc.aio.mediator import MediatorServer, _bind, _Serving
from p2psc.core.fleet import (
    CLAIMED,
    ERROR,
    FULL,
    REGISTERED,
    FleetCore,
    FleetEvent,
    Notice,
    Notify,
    RefreshAnswer,
    RegistryAnswer,
    RegistryClaim,
    RegistryRefresh,
    RegistryUnregister,
    registry_key,
    token,
)
from p2psc.core.mediator import MediatorAction, MediatorConfig, NoteObserver

__all__ = ["FleetOptions", "FleetServer", "RedisRegistry", "serve_fleet_mediator"]

log = logging.getLogger("p2psc.mediator.fleet")

# KEYS[1] = the partner's entry (their, our); KEYS[2] = ours (our, their).
# ARGV: record, ttl ms, tombstone ttl ms, channel prefix, may register ("1"/"0").
# A record is "R" + token (instance id 16 hex + conn 16 hex) + details; a tombstone is "T" + the
# claimed registration's token + the claiming Peer's token. The owner is alive when its channel
# has a subscriber.
CLAIM = """
local p = redis.call('GET', KEYS[1])
if p and string.sub(p, 1, 1) == 'R' then
  local subscribers = redis.call('PUBSUB', 'NUMSUB', ARGV[4] .. string.sub(p, 2, 17))
  if tonumber(subscribers[2]) > 0 then
    redis.call('SET', KEYS[1], 'T' .. string.sub(p, 2, 33) .. string.sub(ARGV[1], 2, 33),
               'PX', ARGV[3])
    return {1, p}
  end
  redis.call('DEL', KEYS[1])
end
if ARGV[5] ~= '1' then
  return {2}
end
local old = redis.call('GET', KEYS[2])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
local mine = string.sub(ARGV[1], 2, 33)
if old and string.sub(old, 1, 1) == 'R' and string.sub(old, 2, 33) ~= mine then
  redis.call('PUBLISH', ARGV[4] .. string.sub(old, 2, 17), 'D' .. string.sub(old, 18, 33))
  return {0, 1}
end
return {0, 0}
"""

# KEYS[1] = our entry; ARGV[1] = our token, ARGV[2] = channel prefix. Our record: delete it.
# Our tombstone (we were claimed and end before the introduction): tell the Peer's instance.
UNREGISTER = """
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 2, 33) == ARGV[1] then
  if string.sub(v, 1, 1) == 'R' then
    redis.call('DEL', KEYS[1])
    return 1
  end
  if string.sub(v, 1, 1) == 'T' and string.len(v) == 65 then
    redis.call('DEL', KEYS[1])
    redis.call('PUBLISH', ARGV[2] .. string.sub(v, 34, 49), 'G' .. string.sub(v, 50, 65))
    return 2
  end
end
return 0
"""

# KEYS[1] = our entry; ARGV[1] = our token, ARGV[2] = ttl ms. 0 lost, 1 kept, 2 claimed,
# 3 replaced.
REFRESH = """
local v = redis.call('GET', KEYS[1])
if not v then
  return 0
end
if string.sub(v, 2, 33) == ARGV[1] then
  if string.sub(v, 1, 1) == 'R' then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
  end
  return 2
end
return 3
"""


def _resp(command: tuple[Any, ...]) -> bytes:
    """One command in RESP, the Redis protocol's request form (an array of bulk strings).
    Encoded here rather than by the client's packer, which checks and converts every argument
    in Python: our arguments are only bytes, str and int, and this runs for every operation."""
    parts = [b"*%d\r\n" % len(command)]
    for arg in command:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


_REFRESHED = {0: "lost", 1: "kept", 2: "claimed", 3: "replaced"}


@dataclass(frozen=True, slots=True)
class FleetOptions:
    """How an instance uses the shared registry."""

    url: str
    """``redis://HOST:PORT/DB`` (``rediss://`` for TLS to Redis)."""
    prefix: str = "p2psc:"
    """Prefix of every key and channel (several fleets can share one Redis)."""
    ttl: float = 30.0
    """Seconds a waiting registration lives in Redis unless its instance refreshes it (every
    ttl/3): how long a killed instance's registrations can still be found."""
    tombstone_ttl: float = 60.0
    """Seconds a claimed registration's tombstone stays (lets a refresh find a claim whose
    notice was lost); at least the confirm timeout."""
    timeout: float = 2.0
    """Socket timeout for Redis commands: a claim not answered by then is REGISTRY_UNAVAILABLE."""
    batch: int = 256
    """At most this many operations per pipeline (one round trip)."""


class RedisRegistry:
    """This instance's connection to the shared registry: executes actions, delivers events."""

    def __init__(
        self, options: FleetOptions, instance: str, deliver: Callable[[FleetEvent], None]
    ) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.options = options
        self.instance = instance
        self._deliver = deliver
        self._redis = aioredis.Redis.from_url(
            options.url,
            socket_timeout=None,  # one deadline per pipeline instead (see _pipeline)
            socket_connect_timeout=options.timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._listener = aioredis.Redis.from_url(
            options.url,
            socket_timeout=None,  # a subscription is idle between notices: never time it out
            socket_connect_timeout=options.timeout,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        """The subscription's own connection: without a read timeout (a quiet channel is not a
        dead one; a gap in the subscription would make claims take this instance for dead),
        with TCP keepalive to notice a Redis that vanished without closing."""
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._shas: dict[str, str] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.subscribed = asyncio.Event()
        self.round_trips = 0
        """Pipelines sent (each one round trip), for the benchmark."""
        self.operations = 0
        """Commands sent (scripts count as one)."""
        self.failures = 0
        """Pipelines that failed (Redis unreachable, timed out, or restarted)."""
        self._closing = False

    @property
    def channel(self) -> str:
        return f"{self.options.prefix}fleet:{self.instance}"

    def start(self, refresh: Callable[[], list[Any]]) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._work()),
            loop.create_task(self._listen()),
            loop.create_task(self._refresh(refresh)),
        ]

    def submit(self, action: Any) -> None:
        self._queue.put_nowait(action)

    async def close(self, drain: float = 2.0) -> None:
        """Flush queued operations (bounded by ``drain`` seconds), then stop and disconnect."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), drain)
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self._redis.aclose()
        with contextlib.suppress(Exception):
            await self._listener.aclose()

    # --- the worker: one pipeline at a time -------------------------------------------------

    async def _load(self) -> None:
        for name, source in (("claim", CLAIM), ("unregister", UNREGISTER), ("refresh", REFRESH)):
            async with asyncio.timeout(self.options.timeout):
                self._shas[name] = str(await self._redis.script_load(source))

    def _command(self, action: Any) -> tuple[Any, ...]:
        opts = self.options
        prefix = opts.prefix
        if isinstance(action, RegistryClaim):
            keys = (
                registry_key(prefix, action.their, action.our),
                registry_key(prefix, action.our, action.their),
            )
            args = (
                action.record,
                int(opts.ttl * 1000),
                int(opts.tombstone_ttl * 1000),
                f"{prefix}fleet:",
                "1" if action.may_register else "0",
            )
            return ("EVALSHA", self._shas["claim"], 2, *keys, *args)
        if isinstance(action, RegistryUnregister):
            key = registry_key(prefix, action.our, action.their)
            tok = token(self.instance, action.conn)
            return ("EVALSHA", self._shas["unregister"], 1, key, tok, f"{prefix}fleet:")
        if isinstance(action, RegistryRefresh):
            key = registry_key(prefix, action.our, action.their)
            ttl = int(opts.ttl * 1000)
            tok = token(self.instance, action.conn)
            return ("EVALSHA", self._shas["refresh"], 1, key, tok, ttl)
        assert isinstance(action, Notify)
        return ("PUBLISH", f"{prefix}fleet:{action.instance}", action.message)

    async def _pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in one write and read their replies (an error reply is returned,
        not raised): a pipeline on one pooled connection of the client, without the
        ``Pipeline`` object's per-command bookkeeping (this runs for every registration)."""
        from redis.exceptions import ResponseError

        pool = self._redis.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            # One deadline for the whole round trip (a per-read socket timeout would arm and
            # cancel a timer for every reply).
            async with asyncio.timeout(self.options.timeout):
                await connection.send_packed_command(b"".join(map(_resp, commands)))
                answers: list[Any] = []
                for _ in commands:
                    try:
                        answers.append(await connection.read_response())
                    except ResponseError as error:
                        answers.append(error)
        except BaseException:
            await connection.disconnect()  # replies may be pending: never reuse it
            raise
        finally:
            await pool.release(connection)
        self.round_trips += 1
        self.operations += len(commands)
        return answers

    async def _execute(self, batch: list[Any]) -> list[Any]:
        from redis.exceptions import NoScriptError

        if not self._shas:
            await self._load()
        pending = list(range(len(batch)))
        results: list[Any] = [None] * len(batch)
        for _attempt in range(2):
            answers = await self._pipeline([self._command(batch[i]) for i in pending])
            again = []
            for index, answer in zip(pending, answers, strict=True):
                if isinstance(answer, NoScriptError):  # Redis restarted: its script cache is empty
                    again.append(index)
                else:
                    results[index] = answer
            if not again:
                break
            await self._load()
            pending = again
        return results

    async def _work(self) -> None:
        from redis.exceptions import RedisError

        queue = self._queue
        while True:
            batch = [await queue.get()]
            while len(batch) < self.options.batch and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                results = await self._execute(batch)
            except (RedisError, OSError, TimeoutError) as error:
                self.failures += 1
                self._shas.clear()
                if self.failures <= 3 or self.failures % 100 == 0:
                    log.warning(
                        "redis registry unreachable",
                        extra={"p2psc": {"event": "registry_error", "reason": str(error)[:200]}},
                    )
                results = [error] * len(batch)
            for action, result in zip(batch, results, strict=True):
                event = self._event_for(action, result)
                if event is not None:
                    self._deliver(event)
                queue.task_done()

    @staticmethod
    def _event_for(action: Any, result: Any) -> FleetEvent | None:
        failed = isinstance(result, BaseException) or result is None
        if isinstance(action, RegistryClaim):
            if failed:
                return RegistryAnswer(action.conn, ERROR)
            code = int(result[0])
            if code == 1:
                return RegistryAnswer(action.conn, CLAIMED, bytes(result[1]))
            if code == 2:
                return RegistryAnswer(action.conn, FULL)
            return RegistryAnswer(action.conn, REGISTERED, replaced=bool(int(result[1])))
        if isinstance(action, RegistryRefresh):
            if failed:
                return None  # keep waiting: the TTL or the next refresh decides
            return RefreshAnswer(action.conn, _REFRESHED[int(result)])
        return None  # unregister and publish: fire and forget (TTLs and deadlines back them)

    # --- notices ----------------------------------------------------------------------------

    async def _listen(self) -> None:
        from redis.exceptions import RedisError

        delay = 0.05
        while not self._closing:
            pubsub = self._listener.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                while True:  # until Redis confirms the subscription
                    message = await pubsub.get_message(timeout=None)
                    if message is not None and message["type"] == "subscribe":
                        break
                self.subscribed.set()
                delay = 0.05
                while True:  # blocks until a notice arrives or the connection fails
                    message = await pubsub.get_message(timeout=None)
                    if message is not None and message["type"] == "message":
                        self._deliver(Notice(bytes(message["data"])))
            except (RedisError, OSError, TimeoutError) as error:
                self.subscribed.clear()
                log.warning(
                    "redis subscription lost",
                    extra={"p2psc": {"event": "registry_error", "reason": str(error)[:200]}},
                )
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _refresh(self, refresh: Callable[[], list[Any]]) -> None:
        period = self.options.ttl / 3
        while True:
            await asyncio.sleep(period)
            for action in refresh():
                self.submit(action)


class FleetServer(MediatorServer):
    """A :class:`MediatorServer` whose core is a :class:`FleetCore` and whose registry is Redis."""

    core: FleetCore

    def __init__(
        self,
        core: FleetCore,
        loop: asyncio.AbstractEventLoop,
        options: FleetOptions,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(core, loop, tls)
        self.registry = RedisRegistry(options, core.instance, self._fleet_event)

    def _fleet_event(self, event: FleetEvent) -> None:
        try:
            actions = self.core.fleet_event(event, self._loop.time())
        except Exception:  # a core bug must not take the server down; contain it
            log.exception("fleet core failed on %r", event)
            return
        self._execute(actions)

    def _execute(self, actions: list[Any]) -> None:
        local: list[MediatorAction] = []
        for action in actions:
            if type(action) in _FLEET_ACTIONS:
                self.registry.submit(action)
            else:
                local.append(action)
        super()._execute(local)

    async def close(self) -> None:
        await super().close()
        await self.registry.close()


_FLEET_ACTIONS = frozenset({RegistryClaim, RegistryUnregister, RegistryRefresh, Notify})


def new_instance_id() -> str:
    """A random 8-byte instance id (16 hex digits), fresh at every start."""
    return os.urandom(8).hex()


def serve_fleet_mediator(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    registry: FleetOptions | str,
    config: MediatorConfig | None = None,
    observer: NoteObserver | None = None,
    backlog: int = 1024,
    tls: ssl.SSLContext | None = None,
    instance: str | None = None,
) -> _Serving[MediatorServer]:
    """Like :func:`p2psc.aio.mediator.serve_mediator`, as one instance of a fleet sharing the
    Redis registry ``registry`` (a URL or :class:`FleetOptions`). Version 0 clients are not
    served (their registrations are not shared). Waits until the instance is subscribed to its
    channel, so it can be claimed from the moment it accepts."""
    options = FleetOptions(registry) if isinstance(registry, str) else registry

    async def start() -> MediatorServer:
        loop = asyncio.get_running_loop()
        core = FleetCore(config, instance=instance or new_instance_id(), observer=observer)
        server = FleetServer(core, loop, options, tls)
        server.registry.start(core.refresh)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.registry.subscribed.wait(), options.timeout)
        server._listen(_bind(host, port, backlog))
        return server

    return _Serving(start)
