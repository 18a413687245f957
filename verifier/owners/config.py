"""Where the CLI finds the registry and the owner's API token.

Rules, in order:
- the registry URL: `--registry URL` if given, else HALLMARK_URL, else `url` in the config file;
- the token: HALLMARK_TOKEN, else `token` in the config file, but only when the file's `url`
  is the registry being used (a token is never sent to another registry than the one it was
  issued by); tokens are never taken from the command line, where `ps` and shell histories
  would show them;
- the config file is HALLMARK_CONFIG, else $XDG_CONFIG_HOME/hallmark/config.toml, else
  ~/.config/hallmark/config.toml; a file holding a token must be readable by its owner only
  (mode 0600, as ssh requires of private keys) or it is refused.

Example config.toml (written by `hallmark login`):

    url = "https://hallmark.example.org"
    token = "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"
"""
from __future__ import annotations

import json
import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from verifier.owners.errors import OwnerToolError


@dataclass(frozen=True)
class Credentials:
    """The registry to talk to and, when known, the owner's API token for it."""

    url: str  # base URL, without a trailing slash
    token: str | None  # API token (None: public endpoints only)
    source: str  # where the token came from, for messages ("HALLMARK_TOKEN", a path, "none")


def config_path(env: Mapping[str, str] | None = None) -> Path:
    """The config file's path (it may not exist)."""
    env = os.environ if env is None else env
    if env.get("HALLMARK_CONFIG"):
        return Path(env["HALLMARK_CONFIG"])
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else (
        Path(env.get("HOME", str(Path.home()))) / ".config")
    return base / "hallmark" / "config.toml"


def read_config(path: Path) -> dict[str, str]:
    """The config file's `url` and `token` ({} when it does not exist)."""
    try:
        st = path.stat()
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise OwnerToolError(f"cannot read the config file {path}: {e.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise OwnerToolError(f"the config file {path} is not valid TOML ({e}); fix it or run "
                             "`hallmark login` again") from None
    values = {k: v for k, v in data.items() if k in ("url", "token")}
    if not all(isinstance(v, str) for v in values.values()):
        raise OwnerToolError(f"the config file {path}: `url` and `token` must be strings")
    if "token" in values and stat.S_IMODE(st.st_mode) & 0o077:
        raise OwnerToolError(f"the config file {path} holds a token and is readable by others "
                             f"(mode {stat.S_IMODE(st.st_mode):04o}); run `chmod 600 {path}`")
    return values


def write_config(path: Path, url: str, token: str) -> None:
    """Write `url` and `token` to the config file, created (or replaced) with mode 0600."""
    text = ("# written by `hallmark login`; keep it private (mode 0600)\n"
            f"url = {json.dumps(url)}\ntoken = {json.dumps(token)}\n")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        raise OwnerToolError(f"cannot write the config file {path}: {e.strerror}") from None


def _normal(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise OwnerToolError(f"registry URL {url!r} must start with http:// or https://")
    return url


def credentials(registry: str | None = None, env: Mapping[str, str] | None = None,
                need_token: bool = True) -> Credentials:
    """The registry URL and token, by the rules of the module docstring.

    Raises:
        OwnerToolError: no registry URL, or no token when `need_token`; the message says how
            to provide one.
    """
    env = os.environ if env is None else env
    path = config_path(env)
    stored = read_config(path)
    url = registry or env.get("HALLMARK_URL") or stored.get("url")
    if not url:
        raise OwnerToolError(f"no registry given: pass --registry URL, set HALLMARK_URL, or run "
                             f"`hallmark login --registry URL` (writes {path})")
    url = _normal(url)
    if env.get("HALLMARK_TOKEN"):
        return Credentials(url, env["HALLMARK_TOKEN"], "HALLMARK_TOKEN")
    if stored.get("token") and stored.get("url") and _normal(stored["url"]) == url:
        return Credentials(url, stored["token"], str(path))
    if need_token:
        other = (f" ({path} holds a token for {stored['url']}, which is not sent elsewhere)"
                 if stored.get("token") and stored.get("url") else "")
        raise OwnerToolError(f"no API token for {url}{other}: run `hallmark login --registry "
                             f"{url}` or set HALLMARK_TOKEN")
    return Credentials(url, None, "none")
