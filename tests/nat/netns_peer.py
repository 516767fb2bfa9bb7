"""Helper run *inside* a network namespace by the NAT tests (``ip netns exec NS python this.py``).

Why a script: a Python process cannot move single threads between namespaces on 3.11, so each
endpoint of a test is a subprocess in its namespace. Each subcommand prints exactly one JSON
object on stdout (the test parses it) and every wait in it is bounded by ``--deadline``.

Subcommands:
- ``observe PORT``: a tiny "what is my address" server: answers each connection with the
  address it observes (``ip:port``), until ``--deadline`` seconds pass.
- ``dial``: connect from ``--bind-port`` to ``--to`` and report the line the server answered.
- ``simopen``: TCP simultaneous open: bind ``--bind-port``, connect to ``--to`` starting at
  ``--start-at`` (epoch seconds), retry refused/timed-out attempts until ``--deadline``; on
  success send ``--name`` and read the other side's name (proves data flows both ways).
- ``p2psc``: pair through a real mediator with ``p2psc.aio.connect`` and exchange a line.
  ``--die-at STEP`` kills this process (``os._exit``: the kernel closes its sockets, as for a
  ``kill -9``) at a step of the pairing (liveness tests, spec/mediator.md section 4.3).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import select
import socket
import sys
import time
from typing import Any


def emit(obj: dict[str, Any]) -> None:
    """The one JSON line the test reads."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def wait_gate(args: argparse.Namespace) -> bool:
    """With ``--gate``: say ``ready`` (a plain line, not JSON) once imported, then block until
    the test writes a line on stdin (bounded). Why not only ``--start-at``: starting Python
    and importing p2psc takes over a second on a loaded two-core machine, so two processes
    given wall-clock start times 0.3 s apart could both start late, in either order, and swap
    the Client and Peer roles. The test releases the gates in order instead."""
    if not args.gate:
        return True
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    ready, _, _ = select.select([sys.stdin], [], [], 60.0)
    if not ready or not sys.stdin.readline():
        emit({"ok": False, "error": "GATE", "reason": "the test never released the gate"})
        return False
    return True


def parse_addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def cmd_observe(args: argparse.Namespace) -> None:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((args.host, args.port))
    srv.listen(16)
    emit({"listening": True})
    end = time.monotonic() + args.deadline
    served = 0
    while time.monotonic() < end and served < 1000:
        srv.settimeout(max(0.05, end - time.monotonic()))
        try:
            conn, addr = srv.accept()
        except TimeoutError:
            break
        with conn:
            conn.sendall(f"{addr[0]}:{addr[1]}\n".encode())
        served += 1


def _bound_socket(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("0.0.0.0", port))
    return s


def _read_line(s: socket.socket, limit: int = 256) -> str:
    data = b""
    while not data.endswith(b"\n") and len(data) < limit:
        chunk = s.recv(limit - len(data))
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


def cmd_dial(args: argparse.Namespace) -> None:
    s = _bound_socket(args.bind_port)
    s.settimeout(args.deadline)
    try:
        s.connect(parse_addr(args.to))
        emit({"ok": True, "answer": _read_line(s), "local": "{}:{}".format(*s.getsockname())})
    except OSError as exc:
        emit({"ok": False, "error": type(exc).__name__, "errno": exc.errno})
    finally:
        s.close()


def _start_attempt(port: int, target: tuple[str, int], ttl: int) -> tuple[socket.socket, int]:
    """A non-blocking connect from ``port``; its first SYN carries ``ttl`` (0 = default), later
    segments the default TTL again. Returns the socket and connect_ex's errno."""
    s = _bound_socket(port)
    s.setblocking(False)
    if ttl:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
    err = s.connect_ex(target)
    if ttl:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 64)
    return s, err


def cmd_simopen(args: argparse.Namespace) -> None:
    """Connect attempts from one port (optionally low-TTL first SYNs) plus, with ``--listen``,
    a listener on that port; the first socket that connects either way wins."""
    target = parse_addr(args.to)
    listener = None
    if args.listen:
        listener = _bound_socket(args.bind_port)
        listener.listen(8)
    if not wait_gate(args):
        return
    delay = args.start_at - time.time()
    if delay > 0:
        time.sleep(min(delay, 5.0))
    t0 = time.monotonic()
    end = t0 + args.deadline
    outcomes: list[str] = []
    sock: socket.socket | None = None
    attempt_end = next_attempt = t0
    won: tuple[socket.socket, str] | None = None
    while won is None and (now := time.monotonic()) < end:
        if sock is None and now >= next_attempt and len(outcomes) < args.max_attempts:
            sock, err = _start_attempt(args.bind_port, target, args.ttl)
            if err not in (0, errno.EINPROGRESS):
                outcomes.append(errno.errorcode.get(err, str(err)))
                sock.close()
                sock, next_attempt = None, now + args.backoff
                continue
            attempt_end = now + args.attempt_timeout
        wake = min(end, attempt_end if sock is not None else next_attempt)
        readable, writable, _ = select.select(
            [listener] if listener else [], [sock] if sock else [], [], max(0.0, wake - now)
        )
        if listener is not None and listener in readable:
            won = (listener.accept()[0], "accepted")
        elif sock is not None and sock in writable:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err == 0:
                won = (sock, "connected")
                sock = None
            else:
                outcomes.append(errno.errorcode.get(err, str(err)))
                sock.close()
                sock, next_attempt = None, time.monotonic() + args.backoff
        elif sock is not None and time.monotonic() >= attempt_end:
            outcomes.append("timeout")
            sock.close()
            sock, next_attempt = None, time.monotonic()
    elapsed = time.monotonic() - t0
    for s in (sock, listener):
        if s is not None:
            s.close()
    if won is None:
        emit({"ok": False, "attempts": outcomes, "elapsed": elapsed})
        return
    conn, how = won
    try:
        conn.setblocking(True)
        conn.settimeout(max(0.05, end - time.monotonic()) + 2.0)
        conn.sendall(args.name.encode() + b"\n")
        other = _read_line(conn)
    except OSError as exc:
        emit({"ok": False, "attempts": outcomes, "error": f"after {how}: {exc!r}"})
        return
    finally:
        conn.close()
    emit({"ok": True, "attempts": [*outcomes, how], "other": other, "elapsed": elapsed})


DIE_AFTER_INTRODUCTION = 1.5
"""``--die-at punching``: seconds after our introduction (the first event past it kills us)."""


def _install_death(step: str) -> None:
    """Die (``os._exit``, no clean-up: the kernel closes every socket, as for ``kill -9``) at
    ``step``: ``disconnect`` (the Peer, on PeerDisconnect, before it listens or confirms),
    ``identification`` (the Client, on PeerIdentification, before it dials), ``punching``
    (either role, ``DIE_AFTER_INTRODUCTION`` s after its introduction, while punching), or
    ``frozen`` (the same moment, but the process stops with SIGSTOP: no FIN, no RST, no more
    Pings, as a host that vanished; the test kills it afterwards). The line printed first says
    when (epoch seconds), so the test can time the survivor."""
    import os
    import signal

    from p2psc.core import peer as core_peer

    original = core_peer.PeerCore.handle
    introduced: list[float] = []

    def die() -> None:
        emit({"ok": False, "error": "KILLED", "step": step, "died_at": time.time()})
        if step == "frozen":
            os.kill(os.getpid(), signal.SIGSTOP)
        os._exit(0)

    def handle(self: Any, event: Any, now: float) -> Any:
        before = self.role
        actions = original(self, event, now)
        if before is None and self.role is not None:
            introduced.append(now)
            if (step, self.role) in (("disconnect", "peer"), ("identification", "client")):
                die()  # before the actions run: no Listen, no Status, no dial
        late = introduced and now - introduced[0] >= DIE_AFTER_INTRODUCTION
        if step in ("punching", "frozen") and late:
            die()
        return actions

    core_peer.PeerCore.handle = handle  # type: ignore[method-assign]


async def _p2psc(args: argparse.Namespace) -> dict[str, Any]:
    from p2psc.aio.connect import connect
    from p2psc.errors import P2pscError, PeerUnreachable
    from p2psc.keys import Keypair

    if args.die_at:
        _install_death(args.die_at)
    keypair = Keypair.from_private_raw(bytes.fromhex(args.private))
    counts = _count_dials(args.ignore_dial_schedule)
    t0 = time.monotonic()
    try:
        conn = await connect(
            keypair,
            args.peer,
            args.mediator,
            timeout=args.deadline,
            punch_timeout=args.punch_timeout,
            punch_interval=args.punch_interval,
            **(
                {"punch_attempt_timeout": args.punch_attempt_timeout}
                if args.punch_attempt_timeout is not None
                else {}
            ),
            send_local=not args.no_local,
            keepalive_interval=args.keepalive or None,
            timed_dial=not args.no_timed_dial,
            **({"candidates": ()} if args.no_candidates else {}),
            relay=args.relay,
            relay_address=args.relay_address,
            coordinate=not args.no_coordinate,
        )
    except P2pscError as exc:
        return {
            "ok": False,
            "error": type(exc).__name__,
            "unreachable": isinstance(exc, PeerUnreachable),
            "reason": exc.reason,
            "elapsed": time.monotonic() - t0,
            "failed_at": time.time(),
            **counts,
        }
    established = time.monotonic() - t0
    stream: dict[str, Any] = {}
    try:
        conn.writer.write(args.name.encode() + b"\n")
        await conn.writer.drain()
        other = await asyncio.wait_for(conn.reader.readline(), 5.0)
        if args.stream:
            stream = await _stream(conn, args.stream)
    finally:
        conn.close()
        with contextlib.suppress(P2pscError):  # a broken stream was reported by _stream
            await conn.wait_closed()
    return {
        "ok": True,
        "elapsed": established,
        "role": conn.role,
        "path": conn.path,
        "other": other.decode(errors="replace").strip(),
        "local": "{}:{}".format(*conn.local),
        "remote": "{}:{}".format(*conn.remote),
        **stream,
        **counts,
    }


def _count_dials(ignore_dial_schedule: bool) -> dict[str, int]:
    """Count, from the driver every adapter shares, the punch attempts this side made
    (``dials``: Connects from the attempt's port) and how many of them failed (``failed``:
    refused, reset, or given up), so a test can judge the first attempt without a wall clock.
    ``ignore_dial_schedule``: the Peer uses its own round trip, not the Mediator's DIAL_DELAY
    (the estimate before the schedule existed), for comparisons."""
    from p2psc.core import peer_driver
    from p2psc.core.io import Connect
    from p2psc.core.peer import PeerCore

    counts = {"dials": 0, "failed": 0}
    punches: set[int] = set()
    run, closed = peer_driver.AttemptDriver._run, peer_driver.AttemptDriver.closed

    def counting_run(self: Any, actions: Any, now: float) -> Any:
        ops = run(self, actions, now)
        for op in ops:
            if isinstance(op, Connect) and op.from_port is not None:
                counts["dials"] += 1
                punches.add(op.conn)
        return ops

    def counting_closed(self: Any, conn: int, error: str | None, now: float) -> Any:
        if conn in punches and error is not None and conn in self.live:
            counts["failed"] += 1
        return closed(self, conn, error, now)

    peer_driver.AttemptDriver._run = counting_run  # type: ignore[method-assign]
    peer_driver.AttemptDriver.closed = counting_closed  # type: ignore[method-assign]
    if ignore_dial_schedule:
        own = PeerCore._dial_delay
        PeerCore._dial_delay = lambda self, scheduled=None: own(self)  # type: ignore[method-assign]
    return counts


async def _stream(conn: Any, seconds: float) -> dict[str, Any]:
    """Send and receive as fast as possible for at most ``seconds``; report how it ended: the
    reader's error (type, reason, wall-clock time) or ``"stream_error": None``."""
    from p2psc.errors import P2pscError

    async def pump() -> None:
        block = b"s" * 16384
        with contextlib.suppress(ConnectionError, OSError, P2pscError):
            while True:
                conn.writer.write(block)
                await conn.writer.drain()

    received = 0
    writer = asyncio.create_task(pump())
    try:
        async with asyncio.timeout(seconds):
            while data := await conn.reader.read(65536):
                received += len(data)
    except TimeoutError:
        return {"stream_error": None, "received": received}
    except P2pscError as exc:
        return {
            "stream_error": type(exc).__name__,
            "stream_reason": exc.reason,
            "stream_error_at": time.time(),
            "received": received,
        }
    finally:
        writer.cancel()
    return {"stream_error": "EOF", "stream_error_at": time.time(), "received": received}


def cmd_p2psc(args: argparse.Namespace) -> None:
    import p2psc.aio.connect  # noqa: F401  (imported before the gate: see wait_gate)

    if not wait_gate(args):
        return
    start = time.time()
    if args.start_at > start:
        time.sleep(min(args.start_at - start, 30.0))
    try:
        result = asyncio.run(asyncio.wait_for(_p2psc(args), args.deadline + args.stream + 5.0))
    except TimeoutError:
        result = {"ok": False, "error": "HANG", "reason": "connect() outlived its deadline"}
    except Exception as exc:  # the test reports it; a traceback is a bug in p2psc
        result = {"ok": False, "error": "UNEXPECTED " + type(exc).__name__, "reason": repr(exc)}
    emit(result)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("observe")
    p.add_argument("port", type=int)
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--deadline", type=float, default=30.0)
    p = sub.add_parser("dial")
    p.add_argument("--bind-port", type=int, default=0)
    p.add_argument("--to", required=True)
    p.add_argument("--deadline", type=float, default=3.0)
    p = sub.add_parser("simopen")
    p.add_argument("--bind-port", type=int, required=True)
    p.add_argument("--to", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--start-at", type=float, default=0.0)
    p.add_argument("--deadline", type=float, default=6.0)
    p.add_argument("--attempt-timeout", type=float, default=3.0)
    p.add_argument("--backoff", type=float, default=0.05)
    p.add_argument("--max-attempts", type=int, default=200)
    p.add_argument("--ttl", type=int, default=0, help="TTL of each attempt's first SYN")
    p.add_argument("--listen", action="store_true", help="also accept on --bind-port")
    p.add_argument("--gate", action="store_true", help="wait for a line on stdin (wait_gate)")
    p = sub.add_parser("p2psc")
    p.add_argument("--private", required=True, help="our X25519 private key, hex")
    p.add_argument("--peer", required=True, help="the other side's public key, hex")
    p.add_argument("--mediator", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--start-at", type=float, default=0.0)
    p.add_argument("--gate", action="store_true", help="wait for a line on stdin (wait_gate)")
    p.add_argument("--deadline", type=float, default=10.0)
    p.add_argument("--punch-timeout", type=float, default=5.0)
    p.add_argument("--punch-interval", type=float, default=0.05)
    p.add_argument(
        "--punch-attempt-timeout", type=float, default=None, help="seconds (the library's default)"
    )
    p.add_argument("--no-local", action="store_true", help="keep our local address private")
    p.add_argument("--keepalive", type=float, default=15.0, help="seconds; 0: off")
    p.add_argument("--no-timed-dial", action="store_true", help="the Peer dials at once")
    p.add_argument(
        "--ignore-dial-schedule",
        action="store_true",
        help="the Peer times its first dial by its own round trip, not the Mediator's DIAL_DELAY",
    )
    p.add_argument("--no-candidates", action="store_true", help="advertise no other address")
    p.add_argument("--relay", choices=("auto", "never", "only"), default="auto")
    p.add_argument("--relay-address", default=None)
    p.add_argument("--no-coordinate", action="store_true", help="do not offer COORDINATE")
    p.add_argument(
        "--die-at",
        choices=("disconnect", "identification", "punching", "frozen"),
        default=None,
    )
    p.add_argument(
        "--stream", type=float, default=0.0, help="then stream both ways for at most S seconds"
    )
    args = parser.parse_args(argv)
    {"observe": cmd_observe, "dial": cmd_dial, "simopen": cmd_simopen, "p2psc": cmd_p2psc}[
        args.cmd
    ](args)


if __name__ == "__main__":
    main()
