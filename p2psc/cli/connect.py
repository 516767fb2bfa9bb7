"""``p2psc connect``: pair with a peer through a Mediator and pipe stdin/stdout over it (netcat).

    p2psc connect --key my.pem --peer THEIR_PUBKEY_HEX_OR_FILE --mediator [tls://]HOST:PORT
        [--mediator-ca FILE | --mediator-pin SHA256] [--timeout S]

Both sides run the same command, each naming the other's public key. When the Mediator has
introduced them and both identities are proven, whatever arrives on stdin goes to the peer and
whatever the peer sends goes to stdout. End of stdin half-closes our direction; the command
exits when both directions have ended (our stdin, and the peer's), or when the peer closes the
connection completely. Progress and errors go to stderr, one line each, so
stdout carries only the peer's bytes. ``--legacy`` speaks the INSECURE version 0 protocol of the
original C++ library instead (RSA keys; see ``p2psc legacy``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import sys
import threading
from pathlib import Path
from typing import BinaryIO

from p2psc.aio.connect import P2PConnection, connect
from p2psc.cli.keygen import read_passphrase
from p2psc.errors import ChannelError
from p2psc.keys import Keypair, PublicKey
from p2psc.peer_tls import mediator_target
from p2psc.text import printable

__all__ = ["load_peer_key", "pipe", "register"]

CHUNK = 65536


def load_peer_key(text: str) -> PublicKey:
    """The other peer's public key: 64 hex characters, PEM text, or a file (public PEM, or a
    keypair file whose public half is taken)."""
    stripped = text.strip()
    if len(stripped) == 64 or "-----BEGIN" in stripped:
        return PublicKey.parse(stripped)
    if Path(stripped).is_file():
        return PublicKey.load(stripped)
    return PublicKey.parse(stripped)  # raises KeyFileError with the reason


def session_id(secret: bytes) -> str:
    """A short, printable commitment to the session secret (never the secret itself), so two
    humans can check that both ends share the same session."""
    digest = hashlib.sha256(b"p2psc session id\x00" + secret).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, 16, 2))


async def pipe(connection: P2PConnection, stdin: BinaryIO, stdout: BinaryIO) -> None:
    """Copy stdin to the peer and the peer to stdout until both directions have ended."""
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue(maxsize=4)

    def read_stdin() -> None:
        # A daemon thread: a read blocked on an idle terminal must not keep the process alive
        # once the peer has closed; os.read on the descriptor avoids the buffered object's lock.
        fd = stdin.fileno()
        while True:
            try:
                data = os.read(fd, CHUNK)
            except OSError:
                data = b""
            try:
                asyncio.run_coroutine_threadsafe(chunks.put(data), loop).result()
            except RuntimeError:  # the loop is gone: the session is over
                return
            if not data:
                return

    threading.Thread(target=read_stdin, name="p2psc-stdin", daemon=True).start()

    async def upstream() -> None:
        while data := await chunks.get():
            connection.writer.write(data)
            await connection.writer.drain()
        if connection.writer.can_write_eof():
            connection.writer.write_eof()

    async def downstream() -> None:
        while data := await connection.reader.read(CHUNK):
            stdout.write(data)
            stdout.flush()

    async def upstream_until_done() -> None:
        with contextlib.suppress(OSError, ConnectionError):  # the peer closed completely
            await upstream()

    up = asyncio.create_task(upstream_until_done())
    try:
        await downstream()
        await up  # like netcat: all of stdin still goes out after the peer's EOF
    finally:
        up.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await up
        connection.close()
        await connection.wait_closed()


def _run(args: argparse.Namespace) -> int:
    if args.legacy:
        from p2psc.legacy.cli import run_connect

        return run_connect(args)
    passphrase = read_passphrase(args.passphrase_env, args.passphrase_file, ask=args.ask_passphrase)
    keypair = Keypair.load(args.key, passphrase)
    peer = load_peer_key(args.peer)
    (host, port), use_tls = mediator_target(args.mediator)

    def say(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr)

    say(
        f"p2psc connect: we are {keypair.public_key.fingerprint()}, asking "
        f"{'tls://' if use_tls else ''}{printable(host)}:{port} for {peer.fingerprint()}"
    )

    async def main() -> int:
        connection = await connect(
            keypair,
            peer,
            (host, port),
            timeout=args.timeout,
            punch_timeout=args.punch_timeout,
            keepalive_interval=args.keepalive or None,
            coordinate=not args.no_coordinate,
            timed_dial=not args.no_timed_dial,
            tls=use_tls,
            mediator_ca=args.mediator_ca,
            mediator_pin=args.mediator_pin,
            relay=args.relay,
            relay_address=args.relay_address,
        )
        local = f"{connection.local[0]}:{connection.local[1]}"
        remote = f"{connection.remote[0]}:{connection.remote[1]}"
        session = session_id(connection.session_secret)
        say(
            f"p2psc connect: connected as {connection.role} {local} -> {remote}, path "
            f"{connection.path}, encrypted (Noise KK), peer {connection.peer_key.fingerprint()} "
            f"verified, session {session}"
        )
        await pipe(connection, sys.stdin.buffer, sys.stdout.buffer)
        return 0

    try:
        return asyncio.run(main())
    except ChannelError as error:  # a cut, tampered or replayed stream: nothing of it was shown
        print(f"p2psc connect: channel broken: {printable(error)}", file=sys.stderr)
        return 1
    except ConnectionError as error:
        print(f"p2psc connect: connection lost: {printable(error)}", file=sys.stderr)
        return 1


def _keepalive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value != 0 and not 1 <= value <= 3600:
        raise argparse.ArgumentTypeError("must be 0 (off) or 1..3600 seconds")
    return value


def _mediator(text: str) -> str:
    try:
        mediator_target(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "connect",
        help="pair with a peer through a mediator and pipe stdin/stdout over it (like netcat)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--key", required=True, help="our private key file (p2psc keygen)")
    parser.add_argument(
        "--peer", required=True, help="their public key: 64 hex characters, PEM, or a file"
    )
    parser.add_argument(
        "--mediator",
        required=True,
        type=_mediator,
        help="HOST:PORT (or [v6]:PORT) of the mediator; tls://HOST:PORT to reach it over TLS "
        "(hides from the path who wants to meet whom)",
    )
    parser.add_argument(
        "--mediator-ca",
        metavar="FILE",
        help="with tls://: trust this CA bundle (PEM) instead of the system trust store",
    )
    parser.add_argument(
        "--mediator-pin",
        metavar="SHA256",
        help="with tls://: accept exactly the certificate with this SHA-256 fingerprint",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds for the whole pairing, including waiting for the peer (%(default)s)",
    )
    parser.add_argument(
        "--punch-timeout",
        type=float,
        default=10.0,
        help="seconds to get a direct TCP connection once introduced (%(default)s)",
    )
    parser.add_argument(
        "--keepalive",
        type=_keepalive,
        default=15.0,
        metavar="SECONDS",
        help="while waiting for the peer, ping the mediator this often (1..3600; 0: off); "
        "keep it below the idle timeout of your NAT (%(default)s)",
    )
    parser.add_argument(
        "--no-coordinate",
        action="store_true",
        help="do not offer a coordinated pairing (by default the mediator connection stays "
        "open while punching, so a partner that dies after the introduction is reported at "
        "once: PartnerLost; spec/mediator.md section 4.3)",
    )
    parser.add_argument(
        "--no-timed-dial",
        action="store_true",
        help="as the Peer, dial the partner at once after the introduction (by default the "
        "first dials wait for the time the mediator names, or our round trip to it, at most "
        "1 s, so that both sides' first SYNs cross: spec/protocol.md, Timed first dial)",
    )
    parser.add_argument(
        "--relay",
        choices=("auto", "never", "only"),
        default="auto",
        help="when no direct connection forms within --punch-timeout, go through the relay "
        "(auto), never, or only through it (%(default)s; spec/relay.md)",
    )
    parser.add_argument(
        "--relay-address",
        metavar="HOST:PORT",
        help="the relay (default: the Mediator's address, served by 'p2psc mediator --relay')",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument(
        "--legacy",
        action="store_true",
        help="INSECURE protocol v0 of the original C++ library (RSA keys); see 'p2psc legacy'",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--passphrase-env", metavar="VAR", help="key passphrase from $VAR")
    group.add_argument("--passphrase-file", metavar="FILE", help="key passphrase from FILE")
    group.add_argument("--ask-passphrase", action="store_true", help="prompt for the passphrase")
    parser.set_defaults(func=_run)
