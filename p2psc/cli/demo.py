"""``p2psc demo``: the whole product in one process, narrated step by step.

Starts a Mediator on 127.0.0.1 (an ephemeral port), makes two fresh identities, *alice* and
*bob*, and pairs them with :func:`p2psc.aio.connect` exactly as two programs on two machines
would: each advertises its own key and the key it wants, proves it owns its key, and gets a
direct TCP connection on which both identities are proven again, peer to peer. Then a message
goes each way. Every step is printed with the time since the start; the exit status is 0 only
if everything worked (``bash scripts/demo.sh`` runs this).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

from p2psc.aio.connect import P2PConnection, connect
from p2psc.aio.mediator import serve_mediator
from p2psc.cli.connect import session_id
from p2psc.core.mediator import MediatorNote
from p2psc.errors import ConnectError
from p2psc.keys import Keypair

__all__ = ["register", "run_demo"]

NOTE_TEXT = {
    "challenged": "sent {who} a nonce sealed to the key it claims (Advertise -> Challenge)",
    "registered": "{who} opened it, so owns that key; registered, waiting for its partner",
    "paired": "{who} opened it and its partner waits: PeerDisconnect to {who} (the Peer), "
    "who listens on its port, then closes",
    "paired coordinated": "{who} opened it and its partner waits: PeerDisconnect to {who} (the "
    "Peer), who listens on its port, then confirms with Status(PUNCHING) and stays connected",
    "introduced": "{who} gets PeerIdentification (sent only after the Peer's close)",
    "introduced coordinated": "{who} gets PeerIdentification (sent only after the Peer's "
    "confirmation); both stay connected to the mediator while they punch, so each would hear "
    "at once if the other died",
    "failed": "{who}: failed ({reason})",
}


async def run_demo(message: str = "hello", timeout: float = 10.0) -> int:
    """Run the demo; print every step; return 0 on success (raises ConnectError otherwise)."""
    started = time.perf_counter()

    def say(text: str) -> None:
        print(f"[{(time.perf_counter() - started) * 1000:8.1f} ms] {text}", flush=True)

    alice, bob = Keypair.generate(), Keypair.generate()
    names = {alice.public_key.raw: "alice", bob.public_key.raw: "bob"}
    registered = asyncio.Event()

    def observe(note: MediatorNote) -> None:
        template = NOTE_TEXT.get(f"{note.kind} {note.cause}".strip(), NOTE_TEXT.get(note.kind))
        who = names.get(note.our_key or b"", f"connection {note.conn}")
        if note.kind == "registered" and who == "alice":
            registered.set()
        if template is not None:
            say("mediator: " + template.format(who=who, reason=note.reason))

    async with serve_mediator("127.0.0.1", 0, observer=observe) as server:
        mediator = ("127.0.0.1", server.port)
        say(f"mediator listening on {mediator[0]}:{mediator[1]} (in this process)")
        say(f"alice: new identity, key fingerprint {alice.public_key.fingerprint()}")
        say(f"bob:   new identity, key fingerprint {bob.public_key.fingerprint()}")
        say("alice: connect(alice, bob's key, mediator) - registers first, so she is the Client")
        alice_task = asyncio.create_task(connect(alice, bob.public_key, mediator, timeout=timeout))
        try:
            await asyncio.wait_for(registered.wait(), timeout)
        except TimeoutError:
            alice_task.cancel()
            raise ConnectError("alice did not register with the mediator in time") from None
        say("bob:   connect(bob, alice's key, mediator) - registers second: the Peer")
        bob_conn = await connect(bob, alice.public_key, mediator, timeout=timeout)
        alice_conn = await asyncio.wait_for(alice_task, timeout)
        for name, conn in (("alice", alice_conn), ("bob", bob_conn)):
            _report(say, name, conn)
        if alice_conn.session_secret != bob_conn.session_secret:
            raise ConnectError("the two sides derived different session secrets")
        say(f"both:  same session secret (session id {session_id(alice_conn.session_secret)})")
        await _send(say, "alice", alice_conn, "bob", bob_conn, f"{message} bob", timeout)
        await _send(say, "bob", bob_conn, "alice", alice_conn, f"{message} alice", timeout)
        alice_conn.close()
        bob_conn.close()
        await alice_conn.wait_closed()
        await bob_conn.wait_closed()
    say("done: one direct, mutually authenticated, encrypted connection, data both ways")
    return 0


def _report(say: Callable[[str], None], name: str, conn: P2PConnection) -> None:
    local = f"{conn.local[0]}:{conn.local[1]}"
    remote = f"{conn.remote[0]}:{conn.remote[1]}"
    say(
        f"{name + ':':6s} direct connection {local} -> {remote} as {conn.role}, encrypted "
        f"(Noise KK); the other side proved it owns {conn.peer_key.fingerprint()}"
    )


async def _send(
    say: Callable[[str], None],
    sender: str,
    source: P2PConnection,
    receiver: str,
    sink: P2PConnection,
    text: str,
    timeout: float,
) -> None:
    data = text.encode()
    source.writer.write(data)
    await source.writer.drain()
    got = await asyncio.wait_for(sink.reader.readexactly(len(data)), timeout)
    if got != data:
        raise ConnectError(f"{receiver} received {got!r} instead of {data!r}")
    say(f"{sender} -> {receiver}: {text!r} ({len(data)} bytes, received intact)")


def _run(args: argparse.Namespace) -> int:
    return asyncio.run(run_demo(args.message, args.timeout))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="start a local mediator and pair two fresh peers through it, step by step",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--message", default="hello", help="greeting to send (%(default)s)")
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds for each pairing (%(default)s)"
    )
    parser.set_defaults(func=_run)
