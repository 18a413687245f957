"""`hallmark audit REPORT.json`: check a signed report offline (see verifier.audit)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from verifier.audit import audit
from verifier.cli import CommandError
from verifier.evidence.canonical import loads_strict
from verifier.evidence.cosignature import parse_witness_vkey
from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import load_public_key

HELP = "check a report offline: signatures, log proofs, and (with --reveal/--suspect) statistics"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("report", metavar="REPORT.json",
                        help="the report exactly as served by /api/reports/<uuid>")
    parser.add_argument("--registry-key", metavar="FILE_OR_B64",
                        help="pin the registry's public key (key file, vkey or base64)")
    parser.add_argument("--since", metavar="CHECKPOINT_FILE",
                        help="a signed checkpoint kept from an earlier audit: check the log "
                             "did not fork since")
    parser.add_argument("--consistency", metavar="FILE",
                        help='consistency proof JSON {"old_size","new_size","proof"} for --since '
                             "when the report does not carry one")
    parser.add_argument("--reveal", metavar="OPENING.json", nargs="+", action="extend",
                        default=[], help="openings published by owners (hallmark open)")
    parser.add_argument("--suspect", metavar="FILE",
                        help="the suspect file (or, for a Hugging Face repo, a local copy of the "
                             "repo folder): check its digest is the report's subject (and, "
                             "with --reveal, recompute the statistics)")
    parser.add_argument("--strict", action="store_true",
                        help="refuse a report whose bytes are not exactly the canonical JSON "
                             "the registry serves (even re-indenting then fails)")
    parser.add_argument("--witness", metavar="VKEY", action="append", default=[],
                        help="a witness you trust (its vkey, or a file holding it); repeatable")
    parser.add_argument("--quorum", metavar="K", type=int,
                        help="cosignatures required from the --witness keys on every checkpoint "
                             "in the report (default: all of them)")
    parser.add_argument("--save-checkpoint", metavar="FILE",
                        help="after a successful audit, write the verified checkpoint here "
                             "(use it as --since next time)")


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise CommandError(f"cannot read {what} {path}: {e.strerror}") from None


def _text(path: str, what: str) -> str:
    try:
        return _read(path, what).decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError(f"{what} {path} is not UTF-8 text") from None


def _vkey_text(value: str) -> str:
    """A vkey given inline, or the content of the file it names."""
    p = Path(value)
    return _text(value, "witness vkey file").strip() if p.is_file() else value


def run(args: argparse.Namespace) -> int:
    try:
        pinned = load_public_key(args.registry_key) if args.registry_key else None
        reveal = [loads_strict(_read(p, "opening"), f"opening {p}") for p in args.reveal]
        consistency = (loads_strict(_read(args.consistency, "consistency proof"),
                                    "consistency proof") if args.consistency else None)
        witnesses = [parse_witness_vkey(_vkey_text(w)) for w in args.witness]
    except EvidenceError as e:
        raise CommandError(str(e)) from None
    if args.quorum is not None and not witnesses:
        raise CommandError("--quorum needs the witnesses' keys: pass --witness VKEY")
    since = _text(args.since, "checkpoint file") if args.since else None
    result = audit(_read(args.report, "report"), registry_key=pinned, since_checkpoint=since,
                   reveal=reveal or None, suspect_path=args.suspect, consistency=consistency,
                   strict_bytes=args.strict, witnesses=witnesses, quorum=args.quorum)
    if result.ok:
        print("audit OK")
    for check in result.checks:
        print(f"  {'ok  ' if check.ok else 'FAIL'}  {check.name}: {check.reason}")
    if not result.ok:
        failed = result.failure
        assert failed is not None
        print(f"audit FAILED: {failed.name}: {failed.reason}", file=sys.stderr)
        return 1
    if args.save_checkpoint and result.checkpoint_note and result.checkpoint:
        try:
            Path(args.save_checkpoint).write_text(result.checkpoint_note, encoding="utf-8")
        except OSError as e:
            raise CommandError(f"cannot write {args.save_checkpoint}: {e.strerror}") from None
        print(f"kept the checkpoint (size {result.checkpoint.size}) in {args.save_checkpoint}")
    return 0
