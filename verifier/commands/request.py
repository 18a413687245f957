"""`hallmark request`: sign a commitment request with your own key (bring-your-own-key owners)."""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from verifier.cli import CommandError
from verifier.evidence.identity import b64, read_private_key
from verifier.evidence.requests import commitment_request, sign_request
from verifier.keyfile import KeyFormatError, scheme_of

HELP = "sign a commitment request for a key file with your own owner key (prints base64)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("keyfile", help="the watermark key blob you will upload")
    p.add_argument("--key", required=True, help="your private key file (from `hallmark keygen`)")
    p.add_argument("--model", required=True, help="the registered model's id (UUID)")


def run(args: argparse.Namespace) -> int:
    try:
        blob = Path(args.keyfile).read_bytes()
        scheme = scheme_of(blob)
    except (OSError, KeyFormatError) as e:
        raise CommandError(f"cannot use {args.keyfile}: {e}") from None
    request = commitment_request(args.model, scheme, hashlib.sha256(blob).hexdigest())
    print(b64(sign_request(read_private_key(args.key), request)))
    return 0
