"""`hallmark report ID`: fetch a signed report, audit it offline, print its verdict, save it."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from verifier.cli import CommandError
from verifier.client import APIError, Client
from verifier.commands._registry import add_registry_argument, client, save_json
from verifier.commands.check_signature import add_signature_arguments, check, describe
from verifier.graphsig import check_graph
from verifier.owners.errors import OwnerToolError
from verifier.owners.files import load_onnx, read_model
from verifier.owners.registry_api import artifact_sha256, problem
from verifier.owners.verdict import audit_report, verdict_lines

HELP = "fetch a report by id, audit it offline, print the verdict and save it (public: no token)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", metavar="REPORT_ID", help="the report's id (UUID)")
    parser.add_argument("--out", type=Path, metavar="FILE",
                        help="where to save the report (default: report-ID.json)")
    add_suspect_signature_arguments(parser)
    add_registry_argument(parser)


def add_suspect_signature_arguments(parser: argparse.ArgumentParser) -> None:
    """--suspect-file and the model-signing options (shared with submit)."""
    parser.add_argument("--suspect-file", type=Path, metavar="FILE",
                        help="the suspect as you downloaded it: its graph signature (ONNX) "
                             "and, with --signature, its model-signing signature are checked "
                             "and shown beside the verdict")
    add_signature_arguments(parser, required=False)


def _publisher_signature(statement: dict[str, Any], args: argparse.Namespace
                         ) -> tuple[list[str], bool]:
    """Lines about a model-signing signature of the suspect, checked locally, and whether it
    holds (the file is the report's subject and the signature verifies); ([], True) if none."""
    if getattr(args, "signature", None) is None:
        return [], True
    if args.suspect_file is None:
        raise CommandError("--signature needs --suspect-file, the suspect's file as downloaded")
    digests = {(s.get("digest") or {}).get("sha256") for s in statement.get("subject", [])
               if isinstance(s, dict)}
    try:
        digest = artifact_sha256(args.suspect_file)
    except OwnerToolError as e:
        raise CommandError(str(e)) from None
    same = digest in digests
    result = check(args.suspect_file, args)
    return [f"suspect file {args.suspect_file}: sha256 {digest[:16]}… "
            f"{'is' if same else 'is NOT'} the report's subject", describe(result)], (
        same and result.ok)


def _graph_signature(args: argparse.Namespace) -> list[str]:
    """Lines about an ONNX suspect file's graph signature (empty for other files)."""
    path = getattr(args, "suspect_file", None)
    if path is None:
        return []
    try:
        source = read_model(path)
        if source.format != "onnx":
            return []
        result = check_graph(load_onnx(path))
    except OwnerToolError as e:
        raise CommandError(str(e)) from None
    return [f"graph signature: {result.status}: {result.reason} [{result.label}]",
            *(f"  {c.kind}: {c.what}" for c in result.changes)]


def show(c: Client, report_id: str, out: Path, args: argparse.Namespace | None = None) -> int:
    """Fetch, audit, print and save a report; 0 when its audit (and the publisher signature
    asked for in `args`) passes, 1 otherwise."""
    try:
        doc: Any = c.report(report_id)
    except APIError as e:
        raise CommandError(f"report {report_id}: {problem(e)}") from None
    except OSError as e:
        raise CommandError(f"cannot reach {c.base_url}: {e}") from None
    save_json(out, doc, "--out")
    result = audit_report(doc)
    if not result.ok or result.statement is None:
        failed = result.failure
        print(f"report saved to {out}, but its audit FAILED: "
              f"{failed.name + ': ' + failed.reason if failed else 'no check ran'}",
              file=sys.stderr)
        return 1
    for line in verdict_lines(result.statement):
        print(line)
    lines, signature_ok = _publisher_signature(result.statement, args) if args else ([], True)
    lines += _graph_signature(args) if args else []
    for line in lines:
        print(line)
    print(f"report {report_id} saved to {out} (audit OK: signatures and log proof; check it "
          f"again any time with `hallmark audit {out}`)")
    return 0 if signature_ok else 1


def run(args: argparse.Namespace) -> int:
    return show(client(args, need_token=False), args.id, args.out or Path(f"report-{args.id}.json"),
                args)
