"""Typed readers of environment variables that fail loudly (after healthchecks' settings).

Every variable Hallmark reads is listed, with one line of explanation, in `.env.example`.
"""
from __future__ import annotations

import os
from pathlib import Path


class ConfigError(RuntimeError):
    """A setting is missing, malformed or unsafe; the message names the variable and the fix."""


def envstr(name: str, default: str) -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean; use 1/0, true/false, yes/no or on/off")


def envint(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw.replace("_", ""))
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer; set it to a whole number") from None


def envfloat(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number; set it to e.g. 1e-6") from None


def envsecret(name: str) -> str | None:
    """A secret from `NAME`, or from the file named by `NAME_FILE` (Docker/Kubernetes secrets)."""
    value = os.environ.get(name)
    path = os.environ.get(f"{name}_FILE")
    if value and path:
        raise ConfigError(f"both {name} and {name}_FILE are set; set only one of them")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as e:
            raise ConfigError(f"{name}_FILE={path!r} cannot be read ({e.strerror}); "
                              "point it at a readable file") from None
    return value or None


def envwitnesses(name: str) -> list[tuple[str, str]]:
    """Witnesses as (submission URL, witness vkey) pairs from "URL VKEY, URL VKEY, ...".

    Each vkey is checked (c2sp.org/tlog-cosignature type 0x04) so that a typo fails at start-up.
    """
    from verifier.evidence.cosignature import parse_witness_vkey
    from verifier.evidence.errors import EvidenceError

    out = []
    for item in (i.strip() for i in os.environ.get(name, "").split(",")):
        if not item:
            continue
        parts = item.split()
        if len(parts) != 2 or not parts[0].startswith(("http://", "https://")):
            raise ConfigError(f"{name}: {item[:60]!r} is not 'URL VKEY'; write e.g. "
                              "'http://witness:7380 witness.example/w1+1a2b3c4d+BA...'")
        try:
            parse_witness_vkey(parts[1])
        except EvidenceError as e:
            raise ConfigError(f"{name}: {e} (print a witness's vkey with `hallmark witness "
                              "--print-vkey ...`)") from None
        out.append((parts[0], parts[1]))
    return out
