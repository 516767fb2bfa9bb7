"""INSECURE LEGACY: command-line pieces for protocol version 0 (RSA keys, JSON messages).

Used by ``p2psc keygen --rsa`` and ``p2psc connect --legacy`` (and by ``p2psc legacy ...``,
which offers the same two commands on its own). Kept here so the version 1 command modules need
only a flag and one call each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import sys
import threading
from pathlib import Path
from typing import BinaryIO

from p2psc.errors import KeyFileError
from p2psc.legacy.client import LegacyConnection, connect_legacy
from p2psc.legacy.crypto import DEFAULT_BITS, MAX_BITS, MIN_BITS, RsaKeypair, RsaPublicKey

__all__ = [
    "keygen_rsa",
    "load_peer_key",
    "parse_mediator",
    "register",
    "run_connect",
    "run_keygen",
]

WARNING = (
    "warning: legacy protocol version 0 (RSA PKCS#1 v1.5, no context binding); "
    "use it only with peers that cannot speak version 1"
)
CHUNK = 65536


def keygen_rsa(
    path: Path,
    *,
    bits: int = DEFAULT_BITS,
    passphrase: bytes | None = None,
    overwrite: bool = False,
) -> str:
    """Write ``path`` (private, ``RSA PRIVATE KEY``, mode 0600) and ``path.pub`` (PKCS#1
    public PEM, what a C++ peer loads); return the public key's fingerprint. Existing files
    are replaced only with ``overwrite``."""
    keypair = RsaKeypair.generate(bits)
    public = Path(str(path) + ".pub")
    if public.exists() and not overwrite:
        raise KeyFileError(f"{public} already exists")
    keypair.save(path, passphrase, overwrite=overwrite)
    try:
        public.write_bytes(keypair.public_key.to_pem())
    except OSError as exc:
        raise KeyFileError(f"cannot write {public}: {exc.strerror or exc}") from None
    return keypair.public_key.fingerprint()


def load_peer_key(text: str) -> RsaPublicKey:
    """The other peer's key: a file path (public or private PEM) or PEM text."""
    if "-----BEGIN" in text:
        return RsaPublicKey.from_pem(text)
    return RsaPublicKey.load(text)


def parse_mediator(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _passphrase(args: argparse.Namespace, *, confirm: bool) -> bytes | None:
    env = getattr(args, "passphrase_env", None)
    if env:
        value = os.environ.get(env)
        if value is None:
            raise KeyFileError(f"environment variable {env} is not set")
        return value.encode()
    if not getattr(args, "ask_passphrase", False):
        return None
    first = getpass.getpass("passphrase: ").encode()
    if confirm and getpass.getpass("again: ").encode() != first:
        raise KeyFileError("the passphrases differ")
    return first or None


def run_keygen(args: argparse.Namespace) -> int:
    """``keygen --rsa``: args.out (path), args.bits, passphrase options."""
    fingerprint = keygen_rsa(
        Path(args.out), bits=args.bits, passphrase=_passphrase(args, confirm=True)
    )
    print(f"wrote {args.out} (private) and {args.out}.pub (public); RSA fingerprint {fingerprint}")
    print(WARNING, file=sys.stderr)
    return 0


async def _pipe(connection: LegacyConnection, stdin: BinaryIO, stdout: BinaryIO) -> None:
    """Copy stdin to the peer and the peer to stdout until both directions end."""
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue(maxsize=4)

    def read_stdin() -> None:
        # A daemon thread, not the default executor: a read blocked on an idle terminal must
        # not keep the process alive once the peer has closed. os.read on the descriptor, not
        # the buffered object, whose lock a blocked daemon thread would hold at exit.
        fd = stdin.fileno()
        while True:
            try:
                data = os.read(fd, CHUNK)
            except OSError:
                data = b""
            try:
                asyncio.run_coroutine_threadsafe(chunks.put(data), loop).result()
            except RuntimeError:  # the session is over and its loop closed
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

    down = asyncio.create_task(downstream())
    up = asyncio.create_task(upstream())
    try:
        await down  # the peer closing ends the session
    finally:
        up.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await up
        connection.close()


def run_connect(args: argparse.Namespace) -> int:
    """``connect --legacy``: args.key, args.peer, args.mediator, args.timeout, passphrase."""
    keypair = RsaKeypair.load(args.key, _passphrase(args, confirm=False))
    peer = load_peer_key(args.peer)
    mediator = args.mediator if isinstance(args.mediator, tuple) else parse_mediator(args.mediator)
    print(WARNING, file=sys.stderr)
    print(
        f"p2psc connect --legacy: we are {keypair.public_key.fingerprint()}, asking "
        f"{mediator[0]}:{mediator[1]} for {peer.fingerprint()} (the fingerprints the mediator "
        "logs)",
        file=sys.stderr,
    )

    async def main() -> int:
        connection = await connect_legacy(
            keypair, peer, mediator, pairing_timeout=float(args.timeout)
        )
        print(
            f"connected ({connection.role}) to {peer.fingerprint()} (legacy v0)",
            file=sys.stderr,
        )
        await _pipe(connection, sys.stdin.buffer, sys.stdout.buffer)
        return 0

    return asyncio.run(main())


def add_passphrase_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--passphrase-env", metavar="VAR", help="read the key passphrase from this variable"
    )
    group.add_argument("--ask-passphrase", action="store_true", help="prompt for a passphrase")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``p2psc legacy keygen|connect``: the version 0 commands on their own."""
    parser = subparsers.add_parser(
        "legacy",
        help="INSECURE legacy protocol v0 (original C++ p2psc): RSA keygen, connect",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(title="legacy commands", dest="legacy_command")
    keygen = commands.add_parser("keygen", help="write an RSA keypair for version 0 peers")
    keygen.add_argument("out", help="private key file; the public key goes to OUT.pub")
    keygen.add_argument(
        "--bits", type=int, default=DEFAULT_BITS, choices=range(MIN_BITS, MAX_BITS + 1, 1024)
    )
    add_passphrase_options(keygen)
    keygen.set_defaults(func=run_keygen)
    connect = commands.add_parser(
        "connect", help="pair with a version 0 peer and pipe stdin/stdout over the connection"
    )
    connect.add_argument("--key", required=True, help="our RSA private key file")
    connect.add_argument("--peer", required=True, help="their RSA public key (file or PEM)")
    connect.add_argument(
        "--mediator", required=True, type=parse_mediator, help="HOST:PORT of the mediator"
    )
    connect.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for the peer (300)"
    )
    add_passphrase_options(connect)
    connect.set_defaults(func=run_connect)

    def usage(_args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=usage)
