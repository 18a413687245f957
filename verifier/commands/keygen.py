"""`hallmark keygen --out owner.key`: make an Ed25519 owner key that never leaves this machine."""
from __future__ import annotations

import argparse

from verifier.cli import CommandError
from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import (
    Identity,
    b64,
    write_private_key,
    write_public_key,
)

HELP = "create an Ed25519 signing key (bring-your-own-key owners); prints the public key"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="where to write the private key (mode 0600; never overwritten)")
    parser.add_argument("--pub", metavar="FILE",
                        help="also write the public key file here (default: OUT.pub)")


def run(args: argparse.Namespace) -> int:
    identity = Identity.generate()
    try:
        write_private_key(args.out, identity)
    except EvidenceError as e:
        raise CommandError(str(e)) from None
    except OSError as e:
        raise CommandError(f"cannot write {args.out}: {e.strerror}") from None
    pub = args.pub or f"{args.out}.pub"
    try:
        write_public_key(pub, identity.public_key)
    except OSError as e:
        raise CommandError(f"cannot write {pub}: {e.strerror}") from None
    print(f"private key: {args.out} (mode 0600; keep it secret, keep a backup)")
    print(f"public key file: {pub}")
    print(f"keyid: {identity.keyid}")
    print(f"public key: {b64(identity.public_key)}")
    return 0
