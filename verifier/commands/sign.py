"""`hallmark sign --key owner.key FILE`: an Ed25519 signature over exactly the file's bytes.

The bytes are signed as they are (no JSON canonicalization, no newline handling), so what the
registry checks is exactly what the owner saw. With --envelope TYPE the output is instead a DSSE
envelope of the file's bytes with that payloadType, signed by the key.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from verifier.cli import CommandError
from verifier.evidence.dsse import sign_envelope
from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import b64, read_private_key

HELP = "sign a file's exact bytes with your Ed25519 key; prints the base64 signature"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", required=True, metavar="FILE", help="private key (hallmark keygen)")
    parser.add_argument("file", metavar="FILE", help="the file whose bytes are signed")
    parser.add_argument("--envelope", metavar="PAYLOAD_TYPE",
                        help="print a DSSE envelope with this payloadType instead")


def run(args: argparse.Namespace) -> int:
    try:
        identity = read_private_key(args.key)
    except EvidenceError as e:
        raise CommandError(str(e)) from None
    try:
        data = Path(args.file).read_bytes()
    except OSError as e:
        raise CommandError(f"cannot read {args.file}: {e.strerror}") from None
    if args.envelope:
        try:
            print(json.dumps(sign_envelope(data, args.envelope, [identity]), sort_keys=True))
        except EvidenceError as e:
            raise CommandError(str(e)) from None
    else:
        print(b64(identity.sign(data)))
    return 0
