"""A Hub repo at one commit: the revision resolved once, the files listed, the layout chosen.

Metadata (revision → commit sha, file names, sizes, the Hub's claimed LFS SHA-256) comes from
`huggingface_hub.HfApi.model_info` against the configured endpoint; the endpoint's addresses
are checked against the fetch policy first (it is the operator's setting, but a typo must not
reach a private service). Bytes never go through huggingface_hub: see `workers.hub.ranges`.

Layouts (`plan`), in order:
1. one file named in the URL (`/blob/<rev>/<file>`): a `.safetensors` file is read by ranges,
   anything else (`.onnx`) is downloaded with the repo's other model files;
2. `model.safetensors.index.json`: the shards it names, read by ranges;
3. `adapter_config.json`: a PEFT adapter folder, downloaded (adapters are small);
4. an `.onnx` model: downloaded with its external data (and a safetensors file beside it,
   which makes a bundle);
5. exactly one `.safetensors` file: read by ranges.
Anything else is refused, naming what the repo holds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from registry.hubrefs import HubRef
from workers.netguard import Deadline, FetchError, FetchPolicy, parse_target, resolve_checked

INDEX = "model.safetensors.index.json"
_SKIPPED = (".gitattributes",)  # never model content
_DOCS = (".md", ".txt", ".png", ".jpg")


@dataclass(frozen=True)
class HubFile:
    """One file of the repo at the commit, as the Hub lists it."""

    name: str  # path in the repo
    size: int  # bytes, as the Hub states
    claimed_sha256: str  # the Hub's LFS SHA-256 ("" when it gives none): claimed, not verified


@dataclass(frozen=True)
class Snapshot:
    """The repo at the commit its revision resolved to."""

    repo: str  # "org/name"
    commit: str  # 40-hex commit sha
    files: tuple[HubFile, ...]  # every file at the commit

    def file(self, name: str) -> HubFile:
        for f in self.files:
            if f.name == name:
                return f
        raise FetchError(f"{self.repo}@{self.commit[:12]} has no file {name!r}; it holds "
                         f"{_names(self.files)}", permanent=True)


@dataclass(frozen=True)
class Plan:
    """What to read: byte ranges of safetensors files, or whole files into a folder."""

    mode: str  # "ranged" | "folder"
    files: tuple[HubFile, ...]  # the safetensors files (ranged) or every file to download
    index: HubFile | None  # model.safetensors.index.json, for a sharded checkpoint


def resolve(ref: HubRef, endpoint: str, token: str | None, policy: FetchPolicy) -> Snapshot:
    """Resolve `ref.revision` to a commit sha and list the files there.

    Raises:
        FetchError: permanent for an unknown repo or revision, a gated repo without a token or
            a refused endpoint address; transient when the Hub fails or cannot be reached.
    """
    from huggingface_hub import HfApi  # imported late: only Hub suspects need it
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    resolve_checked(parse_target(endpoint), policy, None, Deadline(policy.connect_timeout))
    api = HfApi(endpoint=endpoint, token=token or False)
    where = f"{ref.repo}@{ref.revision} on {endpoint}"
    try:
        info = api.model_info(ref.repo, revision=ref.revision, files_metadata=True,
                              timeout=policy.timeout_seconds)
    except OfflineModeIsEnabled:
        raise FetchError(f"could not read {where}: this worker runs with HF_HUB_OFFLINE (or "
                         "TRANSFORMERS_OFFLINE) set, which blocks every Hub request; unset it "
                         "on workers that verify Hub suspects", permanent=True) from None
    except GatedRepoError:
        raise FetchError(f"could not read {where}: the repo is gated; accept its terms and "
                         "set HALLMARK_HF_TOKEN to a read token with access", permanent=True) \
            from None
    except RevisionNotFoundError:
        raise FetchError(f"could not read {where}: no such branch, tag or commit; check the "
                         "revision", permanent=True) from None
    except RepositoryNotFoundError:
        raise FetchError(f"could not read {where}: no such model repo (or it is private); "
                         "check the name", permanent=True) from None
    except HfHubHTTPError as e:
        code = e.response.status_code if e.response is not None else 0
        raise FetchError(f"could not read {where}: the Hub answered HTTP {code}; "
                         + ("retry later" if code >= 500 or code in (0, 408, 429)
                            else "check the repo"), permanent=0 < code < 500 and
                         code not in (408, 429)) from None
    except Exception as e:  # httpx's network errors: the Hub is unreachable for now
        raise FetchError(f"could not reach the Hub for {where} ({type(e).__name__}); retry "
                         "later", permanent=False) from None
    sha = str(info.sha or "")
    if len(sha) != 40 or any(c not in "0123456789abcdef" for c in sha):
        raise FetchError(f"could not read {where}: the Hub gave no commit sha ({sha[:60]!r}); "
                         "retry later", permanent=False)
    return Snapshot(ref.repo, sha, tuple(_file(s) for s in info.siblings or []))


def _file(sibling: Any) -> HubFile:
    lfs = sibling.lfs
    claimed = str(lfs.sha256) if lfs is not None and getattr(lfs, "sha256", None) else ""
    return HubFile(str(sibling.rfilename), int(sibling.size or 0), claimed)


def resolve_url(endpoint: str, repo: str, commit: str, name: str) -> str:
    """The Hub's `resolve` URL of one file at a commit (it redirects to the CDN)."""
    return f"{endpoint}/{repo}/resolve/{commit}/{quote(name)}"


def plan(snap: Snapshot, ref: HubRef) -> Plan:
    """Choose what to read (see the module docstring).

    Raises:
        FetchError: permanent, when the repo holds no model in a supported layout.
    """
    if ref.file:
        chosen = snap.file(ref.file)
        if chosen.name.endswith(".safetensors"):
            return Plan("ranged", (chosen,), None)
        return Plan("folder", _model_files(snap, chosen.name.rsplit("/", 1)[0]
                                           if "/" in chosen.name else ""), None)
    names = {f.name for f in snap.files}
    if INDEX in names:
        return Plan("ranged", (), snap.file(INDEX))
    if "adapter_config.json" in names or any(n.endswith(".onnx") and "/" not in n for n in names):
        return Plan("folder", _model_files(snap, ""), None)
    weights = [f for f in snap.files if f.name.endswith(".safetensors") and "/" not in f.name]
    if len(weights) == 1:
        return Plan("ranged", (weights[0],), None)
    raise FetchError(f"{snap.repo}@{snap.commit[:12]} holds no model this registry reads "
                     f"({_names(snap.files)}); expected safetensors (one file, or shards with "
                     f"{INDEX}), a PEFT adapter, or ONNX. Link one file with "
                     "/blob/<revision>/<file>", permanent=True)


def _model_files(snap: Snapshot, folder: str) -> tuple[HubFile, ...]:
    """Every file in `folder` (top level of it) except Git and documentation files."""
    out = []
    for f in snap.files:
        parent = f.name.rsplit("/", 1)[0] if "/" in f.name else ""
        base = f.name.rsplit("/", 1)[-1]
        if parent == folder and base not in _SKIPPED and not base.lower().endswith(_DOCS):
            out.append(f)
    return tuple(out)


def _names(files: tuple[HubFile, ...]) -> str:
    shown = ", ".join(f.name for f in files[:8])
    return (shown + (f" and {len(files) - 8} more" if len(files) > 8 else "")) or "no files"

