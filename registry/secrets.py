"""The registry's own secrets: its Ed25519 signing key and the escrow master key.

Each is read from the environment (`HALLMARK_SIGNING_KEY`, `HALLMARK_MASTER_KEY`, base64 of 32
bytes, or `*_FILE`), or else generated on first run into the data folder with mode 0600.
Production mode (`HALLMARK_PRODUCTION=1`) refuses to generate: an operator must provide them.
"""
from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path

from nacl.secret import SecretBox
from nacl.utils import random as nacl_random

from registry.env import ConfigError, envsecret
from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import unb64_strict


def _decode32(name: str, value: str) -> bytes:
    try:
        return unb64_strict(value, name, 32)
    except EvidenceError:
        raise ConfigError(f"{name} must be base64 of exactly 32 random bytes; generate one with "
                          "`python -c \"import os,base64;print(base64.b64encode(os.urandom(32)).decode())\"`"
                          ) from None


def _generated(path: Path) -> bytes:
    """32 random bytes kept in `path` (mode 0600), created atomically on first use."""
    if path.exists():
        return _decode32(str(path), path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = nacl_random(32)
    # A temporary name of our own (mkstemp: O_EXCL, mode 0600), so processes starting at the
    # same moment never write into one another's file; `link` then publishes exactly one.
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    tmp = Path(name)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(secret).decode())
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)  # fails if another process won the race: then use theirs
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return _decode32(str(path), path.read_text().strip())


def load_secret(name: str, data_dir: Path, production: bool) -> bytes:
    """The 32-byte secret `name` from the environment, or generated into the data folder."""
    value = envsecret(name)
    if value:
        return _decode32(name, value)
    if production:
        raise ConfigError(f"{name} (or {name}_FILE) must be set in production mode; "
                          "Hallmark refuses to generate registry secrets in production")
    return _generated(data_dir / "secrets" / name.lower())


def seal(master_key: bytes, plaintext: bytes) -> bytes:
    """Encrypt-at-rest with XSalsa20-Poly1305 (PyNaCl SecretBox, random nonce)."""
    return bytes(SecretBox(master_key).encrypt(plaintext))


def unseal(master_key: bytes, sealed: bytes) -> bytes:
    return bytes(SecretBox(master_key).decrypt(sealed))
