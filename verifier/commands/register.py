"""`hallmark register MODEL KEY... --name NAME`: register a marked model and its keys at once."""
from __future__ import annotations

import argparse
from pathlib import Path

from verifier.cli import CommandError
from verifier.commands._registry import add_registry_argument, client, save_json
from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import read_private_key
from verifier.owners.errors import OwnerToolError
from verifier.owners.output import refuse_existing
from verifier.owners.registry_api import prepare_keys, register

HELP = ("register a marked model with one or more watermark key files; prints and saves the "
        "signed receipts")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, metavar="MODEL",
                        help="the marked model as released (file or adapter folder)")
    parser.add_argument("keys", type=Path, nargs="+", metavar="KEY",
                        help="watermark key files (from `hallmark watermark` or a scheme's "
                             "Key.to_bytes())")
    parser.add_argument("--name", help="the model's name (required unless --model-id)")
    parser.add_argument("--version", default="1")
    parser.add_argument("--description", default="")
    parser.add_argument("--model-id", metavar="UUID",
                        help="add the keys to a model you registered before")
    parser.add_argument("--owner-key", metavar="FILE",
                        help="sign the registration with your own key (`hallmark keygen`; "
                             "bring-your-own-key accounts)")
    parser.add_argument("--no-check", action="store_true",
                        help="do not test each key on MODEL before uploading it")
    parser.add_argument("--receipts", type=Path, metavar="FILE",
                        help="where to save the receipts (default: MODEL.receipts.json)")
    add_registry_argument(parser)


def run(args: argparse.Namespace) -> int:
    receipts_path = args.receipts or args.model.with_name(f"{args.model.name}.receipts.json")
    try:
        refuse_existing(receipts_path, "--receipts")
        owner = read_private_key(args.owner_key) if args.owner_key else None
    except (OwnerToolError, EvidenceError) as e:
        raise CommandError(str(e)) from None
    c = client(args)
    try:
        keys = prepare_keys(args.model, list(args.keys), check_on_model=not args.no_check)
        for k in keys:
            checked = ("" if k.log10_p_on_model is None
                       else f", tests positive on the model (log10 p = {k.log10_p_on_model:.1f})")
            print(f"key {k.path}: {k.scheme}{checked}")
        reg = register(c, args.model, keys, name=args.name, version=args.version,
                       description=args.description, owner_key=owner, model_id=args.model_id,
                       progress=print)
    except OwnerToolError as e:
        raise CommandError(str(e)) from None
    except OSError as e:
        raise CommandError(f"cannot reach {c.base_url}: {e}") from None
    print(f"model id: {reg.model['id']}")
    for r in reg.receipts:
        entry = r.get("entry", {})
        kind = entry.get("type", "entry") if isinstance(entry, dict) else "entry"
        print(f"receipt: log index {r['log_index']} at {r['integrated_time']} ({kind}), "
              "signed by the registry: verified")
    save_json(receipts_path, {"registry": c.base_url, "model": reg.model,
                              "commitments": reg.commitments}, "--receipts")
    print(f"receipts saved to {receipts_path}")
    return 0
