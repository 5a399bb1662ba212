"""Command line: a hospital's long-lived secure-sum identity.

Usage::

    python -m oneliac_flwr.keys init --out DIR        # create DIR/identity.ed25519, print its fingerprint
    python -m oneliac_flwr.keys fingerprint --key PATH  # print the fingerprint of an existing identity

The fingerprint (SHA-256 of the raw Ed25519 public key, 64 hex digits) is what the
other hospitals pin, as the line ``<organization-id> <fingerprint>`` of their pin file;
exchange it out of band (``docs/deployment.md``). ``init`` never overwrites an
identity. Exit code 0 on success, 2 on an error (the message names the file).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from oneliac_flwr.errors import ConfigError
from oneliac_flwr.secure.identity import IDENTITY_FILE, Identity

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m oneliac_flwr.keys", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser("init", help=f"create DIR/{IDENTITY_FILE} and print its fingerprint")
    init.add_argument("--out", required=True, help="directory of the identity (created if absent, mode 0700)")
    show = commands.add_parser("fingerprint", help="print the fingerprint of an existing identity")
    show.add_argument("--key", required=True, help=f"identity file, or its directory (holding {IDENTITY_FILE})")
    args = parser.parse_args(argv)
    try:
        identity = Identity.create(args.out) if args.command == "init" else Identity.load(args.key)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(identity.fingerprint)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
