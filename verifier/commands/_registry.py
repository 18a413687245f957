"""Shared by the commands that talk to a registry: --registry, credentials, the client."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from verifier.cli import CommandError
from verifier.client import Client
from verifier.owners.config import credentials
from verifier.owners.errors import OwnerToolError
from verifier.owners.output import write_atomically


def add_registry_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registry", metavar="URL",
                        help="the registry's base URL (default: HALLMARK_URL, else the config "
                             "file written by `hallmark login`); the token is never taken from "
                             "the command line")


def client(args: argparse.Namespace, need_token: bool = True) -> Client:
    """A client for the registry named by --registry / HALLMARK_URL / the config file."""
    try:
        creds = credentials(args.registry, need_token=need_token)
    except OwnerToolError as e:
        raise CommandError(str(e)) from None
    return Client(creds.url, creds.token)


def save_json(path: Path, doc: Any, flag: str) -> None:
    """Write a JSON document (never over an existing file)."""
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    try:
        write_atomically(path, flag, lambda target: target.write_text(text, encoding="utf-8"))
    except OwnerToolError as e:
        raise CommandError(str(e)) from None
    except OSError as e:
        raise CommandError(f"cannot write {path}: {e.strerror}") from None
