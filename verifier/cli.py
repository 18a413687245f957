"""The `hallmark` command. Each subcommand is a module in `verifier/commands/` exposing
`HELP` (one line), `add_arguments(parser)` and `run(args) -> int` (the exit code)."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

import verifier.commands as _commands


class CommandError(Exception):
    """An expected failure of a subcommand: printed as `hallmark: <message>`, exit code 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hallmark", description=(
        "Watermark, register and audit neural-network models with the Hallmark registry."))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(_commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"verifier.commands.{info.name}")
        name = info.name.replace("_", "-")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `hallmark` console script."""
    args = _parser().parse_args(argv)
    try:
        return int(args._run(args))
    except CommandError as e:
        print(f"hallmark: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # `python -m verifier.cli` runs this file as `__main__`; the commands raise
    # `verifier.cli.CommandError`, so run the `main` of that module, not of this copy
    from verifier.cli import main as _main

    sys.exit(_main())
