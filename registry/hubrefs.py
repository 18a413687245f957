"""Hugging Face Hub suspect references: `hf://org/name[@rev]` and huggingface.co repo URLs.

Accepted forms (docs/ingestion.md, "Hugging Face Hub suspects"):
- `hf://<org>/<name>` and `hf://<org>/<name>@<revision>` (revision: a branch, tag or commit sha);
- `https://huggingface.co/<org>/<name>`, optionally followed by `/tree/<revision>` or
  `/blob/<revision>/<file>` (the file then names the weights to use, e.g. one shard or an
  `.onnx` model; without it the whole repo is examined).

Rules: org and name are 1-96 characters of letters, digits, `-`, `_`, `.`, not starting or
ending with `-` or `.` and without `..` (the Hub's own rule); a revision has no `..`, no
control characters and is at most 200 characters; a file path is relative, without `..`
parts. Anything else is refused with `HubRefError`, whose message names the fix. Pure Python
(no Django), so the worker parses the stored URL with the same code that accepted it.

Example:
    >>> parse_hub_ref("hf://acme/resnet@v1.0")
    HubRef(repo='acme/resnet', revision='v1.0', file='')
    >>> parse_hub_ref("https://huggingface.co/acme/resnet/blob/main/model.onnx").file
    'model.onnx'
    >>> parse_hub_ref("https://example.com/model.safetensors") is None
    True
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

HUB_HOSTS = ("huggingface.co", "www.huggingface.co", "hf.co")
_PART = re.compile(r"(?!-)(?!.*\.\.)[A-Za-z0-9_.-]{1,96}(?<![-.])")
_REVISION_MAX = 200


class HubRefError(ValueError):
    """A Hub reference that cannot be used; the message names the problem and the fix."""


@dataclass(frozen=True)
class HubRef:
    """A Hub model repo at a revision, optionally one file in it."""

    repo: str  # "org/name"
    revision: str  # branch, tag or commit sha, as given ("main" when none was given)
    file: str  # one file to use, "" for the whole repo

    def url(self) -> str:
        """The canonical `hf://` form of this reference."""
        return f"hf://{self.repo}@{self.revision}" + (f"/{self.file}" if self.file else "")


def is_hub_url(url: str) -> bool:
    """True for `hf://…` and for http(s) URLs on a Hub host (they must then parse); False for
    a URL that does not split at all (a broken IPv6 host): the URL check refuses those."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return False
    return parts.scheme == "hf" or (parts.scheme in ("http", "https")
                                    and (parts.hostname or "") in HUB_HOSTS)


def parse_hub_ref(url: str) -> HubRef | None:
    """The Hub reference in `url`, or None when `url` is not a Hub URL at all.

    Args:
        url: `hf://org/name[@rev]` or `https://huggingface.co/org/name[/tree/rev|/blob/rev/file]`.

    Returns:
        A HubRef, or None for URLs elsewhere (plain http(s) files and endpoints).

    Raises:
        HubRefError: a Hub URL that does not name a model repo in an accepted form.
    """
    url = url.strip()
    if not is_hub_url(url):
        return None
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise HubRefError(f"refusing Hub reference {url[:200]!r}: it has a query or fragment; "
                          "give hf://org/name[@revision] or https://huggingface.co/org/name")
    if parts.scheme == "hf":
        return _parse_hf(url, parts.netloc + parts.path)
    return _parse_web(url, [unquote(p) for p in parts.path.split("/")[1:]])


def _parse_hf(url: str, rest: str) -> HubRef:
    head, _, file = rest.partition("@")
    segments = head.split("/")
    if "@" in rest:
        revision, _, file = file.partition("/")
    else:
        revision, file = "main", ""
    if len(segments) != 2:
        raise HubRefError(f"refusing Hub reference {url[:200]!r}: expected hf://org/name or "
                          "hf://org/name@revision (datasets and spaces are not models)")
    return _ref(url, segments[0], segments[1], revision, file)


def _parse_web(url: str, segments: list[str]) -> HubRef:
    if segments and segments[-1] == "":
        segments = segments[:-1]
    if len(segments) < 2 or segments[0] in ("datasets", "spaces", "api"):
        raise HubRefError(f"refusing Hub URL {url[:200]!r}: it does not name a model repo; "
                          "give https://huggingface.co/org/name (datasets and spaces are not "
                          "models)")
    org, name, rest = segments[0], segments[1], segments[2:]
    if not rest:
        return _ref(url, org, name, "main", "")
    if rest[0] == "tree" and len(rest) == 2:
        return _ref(url, org, name, rest[1], "")
    if rest[0] in ("blob", "resolve") and len(rest) >= 3:
        return _ref(url, org, name, rest[1], "/".join(rest[2:]))
    raise HubRefError(f"refusing Hub URL {url[:200]!r}: after org/name only /tree/<revision> "
                      "or /blob/<revision>/<file> is understood; link to the repo, a revision "
                      "or one file")


def _ref(url: str, org: str, name: str, revision: str, file: str) -> HubRef:
    for what, part in (("organization", org), ("repo name", name)):
        if not _PART.fullmatch(part):
            raise HubRefError(f"refusing Hub reference {url[:200]!r}: the {what} {part[:100]!r} "
                              "is not a Hub name (1-96 letters, digits, '-', '_', '.'); check "
                              "the spelling")
    if (not revision or len(revision) > _REVISION_MAX or ".." in revision
            or any(ord(c) < 0x21 or ord(c) == 0x7F for c in revision)):
        raise HubRefError(f"refusing Hub reference {url[:200]!r}: the revision "
                          f"{revision[:100]!r} is not a branch, tag or commit sha; give one")
    if file and (file.startswith("/") or any(p in ("", ".", "..") for p in file.split("/"))
                 or any(ord(c) < 0x20 for c in file)):
        raise HubRefError(f"refusing Hub reference {url[:200]!r}: the file path {file[:100]!r} "
                          "is not a plain relative path in the repo; link to the file as the "
                          "Hub shows it")
    return HubRef(f"{org}/{name}", revision, file)
