"""`hallmark open --key KEYBLOB --salt B64 --scheme S`: write the opening of a commitment."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from verifier.cli import CommandError
from verifier.evidence.commitment import make_opening, new_salt
from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import b64, unb64

HELP = "reveal a committed key: write the opening JSON (scheme, salt, key) and print the commitment"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", required=True, metavar="KEYBLOB",
                        help="the scheme's key file (safetensors blob) that was committed to")
    parser.add_argument("--salt", metavar="B64",
                        help="the commitment's salt, as in the registration receipt (omit to "
                             "draw a new one for a new commitment)")
    parser.add_argument("--scheme", metavar="S",
                        help="the scheme name (default: the one stored in the key file)")
    parser.add_argument("--out", metavar="FILE",
                        help="where to write the opening (default: KEYBLOB.opening.json)")


def run(args: argparse.Namespace) -> int:
    from verifier import keyfile

    try:
        blob = Path(args.key).read_bytes()
    except OSError as e:
        raise CommandError(f"cannot read key file {args.key}: {e.strerror}") from None
    try:
        stored = keyfile.scheme_of(blob)
    except keyfile.KeyFormatError as e:
        raise CommandError(f"{args.key}: {e}") from None
    scheme = args.scheme or stored
    if scheme != stored:
        raise CommandError(f"{args.key} is a {stored!r} key, not {scheme!r}; drop --scheme or "
                           "pass the right key file")
    try:
        salt = unb64(args.salt) if args.salt else new_salt()
        opening = make_opening(scheme, salt, blob)
    except EvidenceError as e:
        raise CommandError(f"--salt: {e}" if args.salt else str(e)) from None
    out = args.out or f"{args.key}.opening.json"
    try:
        Path(out).write_text(json.dumps(opening, indent=2, sort_keys=True) + "\n",
                             encoding="utf-8")
    except OSError as e:
        raise CommandError(f"cannot write {out}: {e.strerror}") from None
    print(f"opening written to {out}")
    if not args.salt:
        print(f"salt: {b64(salt)} (new; register the commitment with it)")
    print(f"commitment: {opening['commitment']}")
    return 0
