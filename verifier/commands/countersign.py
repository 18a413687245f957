"""`hallmark countersign report.json --key owner.key`: sign a report as one of its owners.

The key never leaves this machine: the report is audited offline first (an owner never signs
a report that does not check out), then the owner's key signs the envelope's DSSE PAE, exactly
as a signature inside the envelope would. Prints {"keyid", "sig"}; with --registry, --report-id
and --token it also sends the signature to POST /api/reports/<id>/signatures.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from verifier.audit import audit
from verifier.cli import CommandError
from verifier.client import APIError, Client
from verifier.evidence.canonical import loads_strict
from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import load_public_key, read_private_key
from verifier.evidence.owners import countersign

HELP = "countersign a report with your own key (offline); optionally send it to the registry"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("report", metavar="REPORT.json", help="the report as served")
    parser.add_argument("--key", required=True, metavar="FILE",
                        help="your private key (hallmark keygen); it is only read locally")
    parser.add_argument("--registry-key", metavar="FILE_OR_VKEY",
                        help="pin the registry's key for the audit done before signing")
    parser.add_argument("--registry", metavar="URL", help="send the signature to this registry")
    parser.add_argument("--report-id", metavar="UUID", help="the report's id (with --registry)")
    parser.add_argument("--token", metavar="TOKEN", help="your API token (with --registry)")


def run(args: argparse.Namespace) -> int:
    try:
        identity = read_private_key(args.key)
        raw = Path(args.report).read_bytes()
        pinned = load_public_key(args.registry_key) if args.registry_key else None
    except EvidenceError as e:
        raise CommandError(str(e)) from None
    except OSError as e:
        raise CommandError(f"cannot read {args.report}: {e.strerror}") from None
    result = audit(raw, registry_key=pinned)
    if not result.ok:
        failed = result.failure
        assert failed is not None
        raise CommandError(f"refusing to countersign: the report fails its audit at "
                           f"{failed.name}: {failed.reason}")
    assert result.statement is not None
    owners = {o["keyid"] for o in result.statement["predicate"]["owners"]}
    if identity.keyid not in owners:
        raise CommandError(f"your key {identity.keyid[:16]}… is not one of the report's owners; "
                           "countersign with the key you registered")
    envelope = loads_strict(raw, "report")["envelope"]
    signed = {"keyid": identity.keyid, "sig": countersign(envelope, identity)}
    print(json.dumps(signed, sort_keys=True))
    if args.registry:
        if not (args.report_id and args.token):
            raise CommandError("--registry needs --report-id and --token")
        try:
            answer = Client(args.registry, args.token).countersign(args.report_id, signed["sig"])
        except APIError as e:
            raise CommandError(f"the registry refused the countersignature: {e}") from None
        print(f"countersignature logged at index {answer['log_index']}")
    return 0
