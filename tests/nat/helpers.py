"""Small helpers shared by the namespace tests and the NAT benchmark."""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from nat.topology import MEDIATOR_ADDR, Host, Topology, TopologyError, missing_requirements
from p2psc.keys import Keypair

MISSING = missing_requirements()
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
needs_netns = pytest.mark.skipif(MISSING is not None and not IN_CI, reason=MISSING or "")
"""Skip without root, ip or nft on a developer machine; in CI (``CI=true``) the tests run and
fail loudly instead, because .ci/run installs what they need and a skip would hide that."""


def finish(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    """Wait (bounded) for a netns_peer.py process and parse its one JSON line.

    On timeout the process is killed and the result says so, so a hang shows up as a failed
    assertion with the process's stderr rather than as a stuck test run.
    """
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=5)
        return {"ok": False, "error": "HANG", "stderr": err[-2000:], "stdout": out[-2000:]}
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        return {"ok": False, "error": "NO-OUTPUT", "rc": proc.returncode, "stderr": err[-2000:]}
    result: dict[str, Any] = json.loads(lines[-1])
    result["stderr"] = err[-2000:]
    return result


MEDIATOR_PORT = 7777


def start_mediator(
    topo: Topology,
    port: int = MEDIATOR_PORT,
    *,
    ready_timeout: float = 15.0,
    relay: Sequence[str] | None = None,
) -> subprocess.Popen[str]:
    """Run ``p2psc mediator`` in the public namespace; return once it logged ``listening``.

    Its stderr (JSON log lines) stays readable through ``proc.stderr`` for tests that wait for
    a particular event; a mediator that does not come up in time is killed and reported.
    ``relay``: also serve the relay on its port (``--relay`` and these relay options).
    """
    argv = ["-m", "p2psc", "mediator", "--host", topo.mediator_host, "--port", str(port)]
    if relay is not None:
        argv += ["--relay", *relay]
    logs = ["--log-format", "json", "--log-level", "debug", "--timeout", "5"]
    proc = topo.public.popen(topo.public.python([*argv, *logs]))
    line = wait_for_log(proc, "listening", ready_timeout)
    if line is None:
        proc.kill()
        _, err = proc.communicate(timeout=5)
        raise TopologyError(f"mediator did not start: {err[-2000:]}")
    return proc


_LOG_TAILS: weakref.WeakKeyDictionary[subprocess.Popen[str], bytearray] = (
    weakref.WeakKeyDictionary()
)
"""Bytes read from a mediator's stderr after its last complete line, per process."""
_LOG_LINES: weakref.WeakKeyDictionary[subprocess.Popen[str], list[bytes]] = (
    weakref.WeakKeyDictionary()
)
"""Complete lines read from a mediator's stderr that no wait_for_log call has consumed yet."""


def wait_for_log(proc: subprocess.Popen[str], event: str, timeout: float) -> dict[str, Any] | None:
    """Read the mediator's JSON log lines until one has ``event``; None after ``timeout``.

    Why raw ``os.read`` and our own line buffer, not ``proc.stderr.readline()`` after
    ``select``: ``readline`` on the buffered pipe reads *every* byte available, so when two log
    lines arrived together (``challenged`` and ``registered`` a millisecond apart, read late
    by a busy test process) the second sat in Python's buffer where ``select`` cannot see it,
    and the next wait timed out although the line had been logged ("the Client never
    registered"). Lines read past the wanted one are kept for the next call.
    """
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    tail = _LOG_TAILS.setdefault(proc, bytearray())
    lines = _LOG_LINES.setdefault(proc, [])
    end = time.monotonic() + timeout
    while True:
        while lines:
            with contextlib.suppress(ValueError):
                entry: dict[str, Any] = json.loads(lines.pop(0))
                if entry.get("event") == event:
                    return entry
        left = end - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return None  # the mediator exited
        tail += chunk
        *complete, rest = bytes(tail).split(b"\n")
        tail[:] = rest
        lines.extend(complete)


def stop(proc: subprocess.Popen[str]) -> None:
    """Kill one process we started (by its handle) and reap it, bounded."""
    if proc.poll() is None:
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.communicate(timeout=5)


@dataclass(frozen=True)
class Pairing:
    """What both sides of one p2psc pairing reported (parsed JSON of netns_peer.py p2psc)."""

    client: dict[str, Any]
    peer: dict[str, Any]
    wall: float


def p2psc_argv(
    host: Host,
    me: Keypair,
    other: Keypair,
    name: str,
    start_at: float | None,
    deadline: float,
    extra: Sequence[str] = (),
    mediator: str = f"{MEDIATOR_ADDR}:{MEDIATOR_PORT}",
) -> list[str]:
    """Command line of one p2psc endpoint inside ``host``'s namespace; ``start_at=None``: it
    waits at a gate instead (``start_in_order``)."""
    start = ["--gate"] if start_at is None else ["--start-at", str(start_at)]
    return host.peer_script(
        [
            "p2psc",
            "--private",
            me.to_private_raw().hex(),
            "--peer",
            other.public_key.hex(),
            "--mediator",
            mediator,
            "--name",
            name,
            *start,
            "--deadline",
            str(deadline),
            *extra,
        ]
    )


def mediator_of(topo: Topology, port: int = MEDIATOR_PORT) -> str:
    """``host:port`` of the Mediator ``start_mediator`` runs in ``topo`` (``[v6]:port``)."""
    host = topo.mediator_host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def pair(
    a: Host,
    b: Host,
    *,
    deadline: float = 10.0,
    stagger: float = 0.3,
    extra: Sequence[str] = (),
    mediator: str = f"{MEDIATOR_ADDR}:{MEDIATOR_PORT}",
    between: Callable[[], object] | None = None,
) -> Pairing:
    """Pair ``a`` (registers first: the Client) with ``b`` (``stagger`` s later: the Peer)
    through the mediator already running in the public namespace; both exchange a line.
    ``between``: called after ``a`` started and before ``b`` starts, instead of the stagger
    (for example: wait until the Mediator logged ``a``'s registration)."""
    ka, kb = Keypair.generate(), Keypair.generate()
    pa, pb = start_in_order(
        (a, p2psc_argv(a, ka, kb, "client-side", None, deadline, extra, mediator)),
        (b, p2psc_argv(b, kb, ka, "peer-side", None, deadline, extra, mediator)),
        stagger=stagger,
        between=between,
    )
    t0 = time.monotonic() - stagger
    ra = finish(pa, deadline + 20)
    rb = finish(pb, deadline + 20)
    return Pairing(ra, rb, time.monotonic() - t0)


def start_in_order(
    first: tuple[Host, list[str]],
    second: tuple[Host, list[str]],
    *,
    stagger: float,
    ready_timeout: float = 60.0,
    between: Callable[[], object] | None = None,
) -> tuple[subprocess.Popen[str], subprocess.Popen[str]]:
    """Start two gated ``netns_peer.py`` processes (``--gate``), wait until both are up and
    imported, then release ``first`` and, ``stagger`` seconds later, ``second``.

    Why a gate rather than wall-clock start times: interpreter start and imports take over a
    second under load, so start times a fixed margin ahead could both pass and the two sides
    would start in either order (the Client and Peer roles, decided by who registers first,
    then swapped: the cause of a rare failure of the relay test). Returns once both run; on
    any failure both are stopped.
    """
    procs = [host.popen(argv, stdin=True) for host, argv in (first, second)]
    try:
        for proc in procs:
            _await_ready(proc, ready_timeout)
        for i, proc in enumerate(procs):
            if i and between is not None:
                between()
            elif i:
                time.sleep(stagger)
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()  # left open: communicate() closes it
    except BaseException:
        for proc in procs:
            stop(proc)
        raise
    return procs[0], procs[1]


def _await_ready(proc: subprocess.Popen[str], timeout: float) -> None:
    """Read the gated process's ``ready`` line from its stdout (raw reads: nothing else comes
    before the gate opens, and ``communicate`` reads the rest later)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seen = b""
    end = time.monotonic() + timeout
    while b"ready\n" not in seen:
        left = end - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(0.0, left))
        chunk = os.read(fd, 64) if ready else b""
        if not chunk:
            stop(proc)
            err = proc.stderr.read()[-2000:] if proc.stderr else ""
            raise TopologyError(f"a test process never reached its gate: {seen!r} {err}")
        seen += chunk
