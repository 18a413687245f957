"""`hallmark graph-sign MODEL.onnx --key owner.key --out SIGNED.onnx`: sign an ONNX graph."""
from __future__ import annotations

import argparse
from pathlib import Path

from verifier.cli import CommandError
from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import read_private_key
from verifier.graphsig import LABEL, graph_manifest, sign_graph
from verifier.owners.errors import OwnerToolError
from verifier.owners.files import load_onnx, read_model, save_onnx
from verifier.owners.output import write_atomically

HELP = ("sign an ONNX model's graph manifest (operators, topology, I/O, initializer digests) "
        "with your owner key, stored in its metadata_props")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, metavar="MODEL.onnx")
    parser.add_argument("--key", required=True, metavar="FILE",
                        help="your private key (`hallmark keygen`)")
    parser.add_argument("--out", required=True, type=Path, help="the signed model (must not exist)")


def run(args: argparse.Namespace) -> int:
    try:
        identity = read_private_key(args.key)
        source = read_model(args.model)
        if source.format != "onnx":
            raise OwnerToolError(f"{args.model} is {source.format}; graph signatures are for "
                                 "ONNX models")
        signed = sign_graph(load_onnx(args.model), identity)
        write_atomically(args.out, "--out", lambda target: save_onnx(signed, target))
    except (OwnerToolError, EvidenceError) as e:
        raise CommandError(str(e)) from None
    manifest = graph_manifest(signed)
    print(f"signed {len(manifest['nodes'])} nodes and {len(manifest['initializers'])} "
          f"initializers of {args.model} with key {identity.keyid[:16]}… -> {args.out}")
    print(f"check it with `hallmark graph-check {args.out}` ({LABEL}: a positive check shows "
          "the graph is the one signed; a missing signature proves nothing)")
    return 0
