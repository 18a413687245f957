"""`hallmark graph-check MODEL.onnx [--signer KEY]`: verify a graph signature, list changes."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from verifier.cli import CommandError
from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import load_public_key
from verifier.graphsig import check_graph
from verifier.owners.errors import OwnerToolError
from verifier.owners.files import load_onnx, read_model

HELP = ("verify an ONNX model's graph signature and list what changed since signing "
        "(tamper evidence; exit 0 intact, 1 otherwise)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, metavar="MODEL.onnx")
    parser.add_argument("--signer", metavar="FILE_OR_B64",
                        help="the owner's public key to pin (key file or base64); without it "
                             "only self-consistency is checked")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    try:
        signer = load_public_key(args.signer) if args.signer else None
        source = read_model(args.model)
        if source.format != "onnx":
            raise OwnerToolError(f"{args.model} is {source.format}; graph signatures are for "
                                 "ONNX models")
        result = check_graph(load_onnx(args.model), signer)
    except (OwnerToolError, EvidenceError) as e:
        raise CommandError(str(e)) from None
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    else:
        print(f"graph signature: {result.status}: {result.reason}")
        if result.signer:
            print(f"  signer: {result.signer[:16]}…"
                  + ("" if result.pinned else " (not pinned: pass --signer to check who signed)"))
        for c in result.changes:
            print(f"  {c.kind}: {c.what}" + (f" ({c.detail})" if c.detail else ""))
        print(f"  ({result.label})")
    return 0 if result.status == "intact" else 1
