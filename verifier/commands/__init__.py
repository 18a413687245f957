"""Subcommands of `hallmark`, one module each (see verifier.cli)."""
