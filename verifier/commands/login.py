"""`hallmark login --registry URL --username NAME`: store an API token in the config file."""
from __future__ import annotations

import argparse
import getpass
import os
import sys

from verifier.cli import CommandError
from verifier.client import APIError, Client
from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import b64, load_public_key
from verifier.owners.config import config_path, write_config
from verifier.owners.errors import OwnerToolError
from verifier.owners.registry_api import problem

HELP = ("log in to a registry (or --signup) and keep the API token in the config file "
        "(mode 0600)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registry", metavar="URL", default=os.environ.get("HALLMARK_URL"),
                        help="the registry's base URL (default: HALLMARK_URL)")
    parser.add_argument("--username", required=True)
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password from standard input (for scripts) instead of "
                             "prompting")
    parser.add_argument("--signup", action="store_true",
                        help="create the owner account first (the registry then holds your "
                             "signing key, unless you give --public-key)")
    parser.add_argument("--public-key", metavar="FILE_OR_B64",
                        help="with --signup: your own Ed25519 public key (`hallmark keygen` "
                             "writes OWNER.key.pub); sign registrations with "
                             "`hallmark register --owner-key OWNER.key`")


def _password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("password: ")
    else:
        raise CommandError("no terminal to ask for the password: pass --password-stdin and pipe "
                           "it in")
    if not password:
        raise CommandError("empty password")
    return password


def run(args: argparse.Namespace) -> int:
    if not args.registry:
        raise CommandError("pass --registry URL (or set HALLMARK_URL)")
    c = Client(args.registry)
    if args.public_key and not args.signup:
        raise CommandError("--public-key is given at sign-up only; add --signup")
    try:
        public_key = b64(load_public_key(args.public_key)) if args.public_key else None
    except EvidenceError as e:
        raise CommandError(f"--public-key: {e}") from None
    password = _password(args.password_stdin)
    try:
        if args.signup:
            c.signup(args.username, password, public_key)
        else:
            c.login(args.username, password)
    except APIError as e:
        raise CommandError(problem(e)) from None
    except OSError as e:
        raise CommandError(f"cannot reach {args.registry}: {e}") from None
    assert c.token is not None
    path = config_path()
    try:
        write_config(path, c.base_url, c.token)
    except OwnerToolError as e:
        raise CommandError(str(e)) from None
    print(f"{'signed up and logged' if args.signup else 'logged'} in to {c.base_url} as "
          f"{args.username}; token kept in {path} (mode 0600)")
    return 0
