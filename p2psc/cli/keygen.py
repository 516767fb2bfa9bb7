"""``p2psc keygen``: create an X25519 identity key file, or show the public key of one.

    p2psc keygen OUT.pem [--passphrase-env VAR | --passphrase-file FILE] [--force]
    p2psc keygen --show FILE [--passphrase-env VAR | --passphrase-file FILE]
    p2psc keygen --rsa OUT.pem [--bits N] [...]   (INSECURE legacy v0 key, for C++ peers)

The private key file is PKCS#8 PEM written with mode 0600 (encrypted when a passphrase is given).
An existing file is never replaced without --force, because losing an identity key cannot be
undone. The passphrase is read from an environment variable, a file or a prompt, never from the
command line, where other users could see it in the process list.

Output: the public key as 64 hex characters (what peers pass as `their_key`) and its
fingerprint, the first 8 bytes of SHA-256 of the raw key, for humans to compare.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from p2psc.errors import KeyFileError
from p2psc.keys import Keypair, PublicKey

__all__ = ["read_passphrase", "register"]

MAX_PASSPHRASE_FILE = 4096


def read_passphrase(
    env: str | None, file: str | None, *, ask: bool = False, confirm: bool = False
) -> bytes | None:
    """The passphrase from ``$env``, the first line of ``file`` or a prompt; else None."""
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise KeyFileError(f"environment variable {env} is not set")
        if not value:
            raise KeyFileError(f"environment variable {env} is empty")
        return value.encode("utf-8")
    if file is not None:
        try:
            with open(file, "rb") as fh:
                data = fh.read(MAX_PASSPHRASE_FILE + 1)
        except OSError as exc:
            raise KeyFileError(f"cannot read {file}: {exc.strerror or exc}") from None
        if len(data) > MAX_PASSPHRASE_FILE:
            raise KeyFileError(f"{file} is larger than {MAX_PASSPHRASE_FILE} bytes")
        line = data.splitlines()[0] if data else b""
        if not line:
            raise KeyFileError(f"{file} holds an empty passphrase")
        return line
    if ask:
        first = getpass.getpass("passphrase: ").encode("utf-8")
        if not first:
            raise KeyFileError("empty passphrase")
        if confirm and getpass.getpass("again: ").encode("utf-8") != first:
            raise KeyFileError("the passphrases differ")
        return first
    return None


def _print_public(public: PublicKey) -> None:
    print(f"public key:  {public.hex()}")
    print(f"fingerprint: {public.fingerprint()}")


def _run(args: argparse.Namespace) -> int:
    creating = args.show is None
    passphrase = read_passphrase(
        args.passphrase_env, args.passphrase_file, ask=args.ask_passphrase, confirm=creating
    )
    if args.rsa:
        return _run_rsa(args, passphrase)
    if args.show is not None:
        if args.out is not None:
            print("p2psc keygen: give either OUT or --show FILE, not both", file=sys.stderr)
            return 2
        _print_public(PublicKey.load(args.show, passphrase))
        return 0
    if args.out is None:
        print("p2psc keygen: missing OUT (the key file to write) or --show FILE", file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.is_dir():
        raise KeyFileError(f"{out} is a directory")
    keypair = Keypair.generate()
    keypair.save(out, passphrase, overwrite=args.force)
    encrypted = "encrypted, " if passphrase else ""
    print(f"wrote {out} ({encrypted}mode 0600)")
    _print_public(keypair.public_key)
    return 0


def _run_rsa(args: argparse.Namespace, passphrase: bytes | None) -> int:
    """INSECURE LEGACY: an RSA keypair for version 0 peers (OUT and OUT.pub)."""
    from p2psc.legacy.cli import WARNING, keygen_rsa

    if args.show is not None or args.out is None:
        print("p2psc keygen: --rsa needs OUT and does not support --show", file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.exists() and not args.force:
        raise KeyFileError(f"{out} exists; refusing to overwrite it")
    fingerprint = keygen_rsa(out, bits=args.bits, passphrase=passphrase, overwrite=args.force)
    print(f"wrote {out} (private, mode 0600) and {out}.pub (public)")
    print(f"fingerprint: {fingerprint}")
    print(WARNING, file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "keygen",
        help="create an identity key file and print its public key and fingerprint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out", nargs="?", metavar="OUT.pem", help="private key file to write")
    parser.add_argument("--show", metavar="FILE", help="print the public key of an existing file")
    secret = parser.add_mutually_exclusive_group()
    secret.add_argument("--passphrase-env", metavar="VAR", help="passphrase from $VAR")
    secret.add_argument("--passphrase-file", metavar="F", help="passphrase: first line of F")
    secret.add_argument("--ask-passphrase", action="store_true", help="prompt for a passphrase")
    parser.add_argument("--force", action="store_true", help="replace an existing OUT file")
    parser.add_argument(
        "--rsa",
        action="store_true",
        help="INSECURE legacy: an RSA key for protocol version 0 (original C++ peers)",
    )
    parser.add_argument(
        "--bits", type=int, default=2048, choices=(2048, 3072, 4096), help="RSA size (--rsa)"
    )
    parser.set_defaults(func=_run)
