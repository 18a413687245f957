"""`hallmark check-signature MODEL --signature SIG --public-key PEM`: verify an OpenSSF
model-signing bundle (key-based, or Sigstore with --identity/--issuer)."""
from __future__ import annotations

import argparse
from pathlib import Path

from verifier.cli import CommandError
from verifier.owners.errors import OwnerToolError
from verifier.owners.modelsig import SignatureCheck, verify_model

HELP = ("verify a model-signing (OpenSSF) signature of a model file or folder; exit 0 when it "
        "verifies")


def add_signature_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    """--signature, --public-key, --identity, --issuer (shared with report and submit)."""
    parser.add_argument("--signature", type=Path, required=required, metavar="SIG",
                        help="a model-signing bundle (e.g. model.sig)")
    parser.add_argument("--public-key", type=Path, metavar="PEM",
                        help="the publisher's elliptic-curve public key (key-based signatures)")
    parser.add_argument("--identity", help="the signer's Sigstore identity (keyless signatures)")
    parser.add_argument("--issuer", help="the OIDC issuer of --identity")


def check(model: Path, args: argparse.Namespace) -> SignatureCheck:
    try:
        return verify_model(model, args.signature, public_key=args.public_key,
                            identity=args.identity, issuer=args.issuer)
    except OwnerToolError as e:
        raise CommandError(str(e)) from None


def describe(result: SignatureCheck) -> str:
    return (f"model-signing signature: {'OK' if result.ok else 'FAILED'} ({result.method}): "
            f"{result.detail} [{result.label}]")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, metavar="MODEL", help="the model file or folder")
    add_signature_arguments(parser, required=True)


def run(args: argparse.Namespace) -> int:
    result = check(args.model, args)
    print(describe(result))
    return 0 if result.ok else 1
