"""`hallmark decrypt`: restore an AdvParams-encrypted model with a signed licence."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from verifier.cli import CommandError
from verifier.evidence.canonical import loads_strict
from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import keyid_of, load_public_key
from verifier.licence import decrypt_with_licence, licence_signers, verify_licence

HELP = "Decrypt an AdvParams-encrypted model (safetensors) with the licence issued for it."

MAX_LICENCE_BYTES = 16 * 1024 * 1024  # a licence larger than this is refused


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL.safetensors",
                        help="the encrypted model, exactly as published")
    parser.add_argument("--licence", required=True, metavar="LICENCE.json",
                        help="the licence (a DSSE envelope signed by the registry and the owner)")
    parser.add_argument("--out", required=True, metavar="OUT.safetensors",
                        help="where to write the decrypted model (must not exist)")
    parser.add_argument("--registry-key", metavar="B64",
                        help="the registry's public key (base64, note vkey or key file); without "
                             "it the key named in the licence is used and only self-consistency "
                             "is checked")


def run(args: argparse.Namespace) -> int:
    model, out = Path(args.model), Path(args.out)
    if out.exists():
        raise CommandError(f"{out} already exists; choose another --out (decrypt never "
                           "overwrites a file)")
    try:
        raw = Path(args.licence).read_bytes()
    except OSError as e:
        raise CommandError(f"cannot read licence {args.licence}: {e.strerror}") from None
    if len(raw) > MAX_LICENCE_BYTES:
        raise CommandError(f"licence {args.licence} is {len(raw)} bytes, over the "
                           f"{MAX_LICENCE_BYTES}-byte cap")
    try:
        doc = loads_strict(raw, f"licence {args.licence}")
        if not isinstance(doc, dict):
            raise EvidenceError(f"licence {args.licence} must be a JSON object (a DSSE envelope)")
        named_registry, owner_key = licence_signers(doc)
        if args.registry_key:
            registry_key = load_public_key(args.registry_key)
        else:
            registry_key = named_registry
            print("hallmark: warning: no --registry-key given; the licence was checked against "
                  f"the registry key it names itself ({keyid_of(registry_key)[:16]}…), which "
                  "proves integrity, not that the registry issued it", file=sys.stderr)
        licence = verify_licence(doc, registry_key, owner_key)
    except EvidenceError as e:
        raise CommandError(f"licence {args.licence} rejected: {e}") from None
    try:
        weights = load_file(str(model))
    except (OSError, SafetensorError) as e:
        raise CommandError(f"cannot read {model} as safetensors: {e}") from None
    try:
        plain = decrypt_with_licence(weights, licence)
    except EvidenceError as e:
        raise CommandError(str(e)) from None
    # write beside the target, then rename: no half-written output on failure
    fd, tmp = tempfile.mkstemp(prefix=".hallmark-decrypt-", suffix=".safetensors",
                               dir=out.parent if str(out.parent) else ".")
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in plain.items()}, tmp)
        os.replace(tmp, out)
    except OSError as e:
        raise CommandError(f"cannot write {out}: {e.strerror}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(f"decrypted {licence.key.positions} weights of {licence.model_name or model.name} "
          f"for {licence.licensee} (licence issued {licence.issued_at}) -> {out}")
    return 0
