"""The LEIP-style graph signature of an ONNX suspect, checked and pinned to a registered owner.

The suspect's ONNX model (a .onnx file, or the one ONNX model of its folder or archive) is
checked with `verifier.graphsig.check_graph`. When the signer key stored beside the signature
is a registered owner's key (looked up by keyid through the caller's `owner_key`), the check
is pinned to that key and the result names the owner; otherwise it shows integrity only (anyone
can sign with a key of their own).

Statuses: those of `check_graph` ("intact", "changed", "unsigned", "invalid"), plus "absent"
(the suspect holds no ONNX model) and "error" (its ONNX model could not be read again).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import keyid_of, unb64
from verifier.graphsig import check_graph
from verifier.graphsig.manifest import SIGNER_KEY
from verifier.models import LoadLimits, ModelFormatError, read_onnx

OwnerKey = Callable[[str], "bytes | None"]  # keyid -> a registered owner's Ed25519 key, or None


def _is_onnx(path: Path) -> bool:
    """An ONNX ModelProto starts with field 1 (ir_version) as a varint; safetensors do not."""
    with open(path, "rb") as f:
        head = f.read(16)
    return head[:1] == b"\x08" and head[8:9] != b"{"


def onnx_of(path: Path) -> tuple[Path, Path | None] | None:
    """The suspect's ONNX file and the folder its external data may come from, if any."""
    if path.is_file():
        return (path, None) if _is_onnx(path) else None
    found = sorted(p for p in path.iterdir() if p.suffix.lower() == ".onnx" and p.is_file()
                   and not p.is_symlink() and _is_onnx(p))
    return (found[0], path) if len(found) == 1 else None


def _signer(model: Any) -> bytes | None:
    stored = {p.key: p.value for p in model.metadata_props}.get(SIGNER_KEY)
    try:
        key = unb64(stored) if stored else b""
    except (EvidenceError, ValueError):
        return None
    return key if len(key) == 32 else None


def check_suspect_graph(path: Path, owner_key: OwnerKey | None = None,
                        limits: LoadLimits = LoadLimits()) -> dict[str, Any]:  # noqa: B008
    """Check the graph signature of a suspect's ONNX model.

    Args:
        path: the suspect file, or its model folder (`verifier.models.model_files`).
        owner_key: looks up a registered owner's public key by keyid (None: pin nothing).
        limits: the caps used to read the ONNX model again.

    Returns:
        JSON-safe: `GraphCheck.to_dict()` plus "file", "owner_keyid" (the registered owner
        whose key verified it, else None); or {"status": "absent" | "error", "reason": ...}.

    Example:
        >>> check_suspect_graph(Path("weights.safetensors"))["status"]  # doctest: +SKIP
        'absent'
    """
    found = onnx_of(path)
    if found is None:
        return {"status": "absent", "reason": "the suspect holds no ONNX model"}
    onnx_path, data_folder = found
    try:
        model = read_onnx(onnx_path, data_folder, limits)
    except ModelFormatError as e:
        return {"status": "error", "reason": f"the ONNX model could not be read: {e}"}
    signer = _signer(model)
    owner = owner_key(keyid_of(signer)) if signer is not None and owner_key else None
    pinned = owner is not None and owner == signer
    result = check_graph(model, signer if pinned else None).to_dict()
    name = onnx_path.name if data_folder is not None else None  # a cached file's name says nothing
    return {**result, "file": name, "owner_keyid": keyid_of(signer) if pinned and signer else None}
