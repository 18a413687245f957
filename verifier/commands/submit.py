"""`hallmark submit URL`: file a suspect, wait with a progress bar, print the verdict, save it."""
from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any

from verifier.cli import CommandError
from verifier.client import APIError
from verifier.commands._registry import add_registry_argument, client
from verifier.commands.report import add_suspect_signature_arguments, show
from verifier.owners.errors import OwnerToolError
from verifier.owners.output import refuse_existing
from verifier.owners.registry_api import call, problem

HELP = ("submit a suspect model by URL, wait for the verification (progress bar), print the "
        "verdict and save the signed report")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="where the registry can download the suspect (http/https), or a Hugging Face repo: hf://org/name[@revision]")
    parser.add_argument("--target", metavar="MODEL_ID",
                        help="check against this model of yours only (default: the whole "
                             "registry)")
    parser.add_argument("--out", type=Path, metavar="FILE",
                        help="where to save the report (default: report-VERIFICATION_ID.json)")
    parser.add_argument("--timeout", type=float, default=1800.0, metavar="SECONDS",
                        help="give up waiting after this long (default 1800); the "
                             "verification goes on, fetch it later with `hallmark report`")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--publisher-key", type=Path, action="append", default=[],
                        metavar="PUBLIC.pem",
                        help="an elliptic-curve public key the registry checks the suspect's "
                             "model.sig with, beside the key shipped in it (repeatable)")
    add_suspect_signature_arguments(parser)
    add_registry_argument(parser)


def _publisher_key(path: Path) -> str:
    """A --publisher-key file's PEM text, refused early unless it is an EC public key."""
    from verifier.provenance import key_sha256

    try:
        pem = path.read_bytes()[:8192]
    except OSError as e:
        raise CommandError(f"--publisher-key {path}: {e.strerror}") from None
    if key_sha256(pem) is None:
        raise CommandError(f"--publisher-key {path} is not an elliptic-curve public key in PEM; "
                           "export it with `openssl ec -in publisher.pem -pubout -out "
                           "publisher.pub.pem`")
    return pem.decode("ascii", errors="replace")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.out is not None:
        try:
            refuse_existing(args.out, "--out")
        except OwnerToolError as e:
            raise CommandError(str(e)) from None
    keys = [_publisher_key(p) for p in args.publisher_key]
    c = client(args)
    try:
        v = call(functools.partial(c.submit, args.url, args.target, keys or None))
    except APIError as e:
        raise CommandError(f"submitting {args.url}: {problem(e)}") from None
    except OSError as e:
        raise CommandError(f"cannot reach {c.base_url}: {e}") from None
    print(f"verification {v['id']} queued")
    bar = tqdm(total=0, unit="check", desc="queued", disable=args.quiet, leave=True)

    def progress(state: dict[str, Any]) -> None:
        bar.total = state.get("checks_expected") or 0
        bar.n = state.get("checks_done") or 0
        bar.set_description(str(state["status"]))
        bar.refresh()

    try:
        done = c.wait(v["id"], timeout=args.timeout, on_progress=progress)
    except TimeoutError as e:
        raise CommandError(f"{e}; fetch the result later with `hallmark report` once the "
                           f"verification page shows a report") from None
    except APIError as e:
        raise CommandError(f"waiting for verification {v['id']}: {problem(e)}") from None
    finally:
        bar.close()
    if done["status"] != "done" or not done.get("report"):
        raise CommandError(f"verification {v['id']} {done['status']}: "
                           f"{done.get('error_code') or ''} {done.get('error_message') or ''}"
                           .rstrip())
    print(f"verification {v['id']} done: {done['checks_done']} check(s), "
          f"{done.get('queries') or 0} black-box queries")
    return show(c, str(done["report"]), args.out or Path(f"report-{v['id']}.json"), args)
