"""Verify an ONNX model's graph signature and say exactly what changed since it was signed.

Statuses (`GraphCheck.status`):
- "intact": the signature verifies and the graph equals the signed manifest;
- "changed": the signature verifies, and `changes` lists every difference;
- "unsigned": no signature in metadata_props (never signed, or stripped: e.g. re-exported);
- "invalid": a signature is there but does not verify (edited envelope, another key than the
  pinned one, malformed), so nothing it says can be relied on.

Change kinds: "node added", "node removed", "node rewired" (its inputs or outputs differ),
"node edited" (op_type, domain or attributes differ), "initializer added", "initializer
removed", "initializer changed", "input changed", "output changed", "opset changed",
"metadata stripped", "metadata changed", "metadata added". Nodes are matched by name
(exporters name them); unnamed nodes by position, so inserting one shifts those after it.

Every result carries `LABEL`: this is declared provenance, removable by re-export.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from verifier.evidence.dsse import verify_envelope
from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import keyid_of, unb64
from verifier.graphsig.manifest import (
    LABEL,
    MANIFEST_TYPE,
    METADATA_KEY,
    PAYLOAD_TYPE,
    SIGNER_KEY,
    graph_manifest,
)


@dataclass(frozen=True)
class Change:
    """One difference between the signed manifest and the model as it is."""

    kind: str  # e.g. "node rewired" (module docstring lists them)
    what: str  # the node id, initializer, input/output or metadata key concerned
    detail: str = ""  # what it was and what it is


@dataclass
class GraphCheck:
    """The outcome of `check_graph`."""

    status: str  # "intact" | "changed" | "unsigned" | "invalid"
    reason: str  # one sentence
    signer: str | None = None  # keyid of the verified signer
    pinned: bool = False  # True when the signer was checked against a key the caller gave
    changes: list[Change] = field(default_factory=list)
    label: str = LABEL

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, for reports."""
        return asdict(self)


def _metadata(model: Any) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def _diff_named(kind: str, old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    out = [Change(f"{kind} removed", k) for k in old if k not in new]
    out += [Change(f"{kind} added", k) for k in new if k not in old]
    out += [Change(f"{kind} changed", k, f"{old[k]} -> {new[k]}") for k in old
            if k in new and old[k] != new[k]]
    return out


def _diff_io(kind: str, old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[Change]:
    a, b = {v["name"]: v for v in old}, {v["name"]: v for v in new}
    out = [Change(f"{kind} changed", k, "removed") for k in a if k not in b]
    out += [Change(f"{kind} changed", k, "added") for k in b if k not in a]
    out += [Change(f"{kind} changed", k, f"type {a[k]['elem_type']} shape {a[k]['shape']} -> "
                                         f"type {b[k]['elem_type']} shape {b[k]['shape']}")
            for k in a if k in b and a[k] != b[k]]
    return out


def _diff_nodes(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[Change]:
    a, b = {n["id"]: n for n in old}, {n["id"]: n for n in new}
    out = [Change("node removed", k, f"{a[k]['op_type']}({', '.join(a[k]['inputs'])})")
           for k in a if k not in b]
    out += [Change("node added", k, f"{b[k]['op_type']}({', '.join(b[k]['inputs'])})")
            for k in b if k not in a]
    for k in a:
        if k not in b:
            continue
        x, y = a[k], b[k]
        if (x["op_type"], x["domain"], x["attributes_sha256"]) != (
                y["op_type"], y["domain"], y["attributes_sha256"]):
            out.append(Change("node edited", k, f"{x['op_type']} -> {y['op_type']}"
                              + ("" if x["attributes_sha256"] == y["attributes_sha256"]
                                 else " (attributes changed)")))
        if (x["inputs"], x["outputs"]) != (y["inputs"], y["outputs"]):
            out.append(Change("node rewired", k, f"{x['inputs']} -> {x['outputs']} became "
                                                 f"{y['inputs']} -> {y['outputs']}"))
    return out


def _diff_initializers(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    out = [Change("initializer removed", k) for k in old if k not in new]
    out += [Change("initializer added", k) for k in new if k not in old]
    out += [Change("initializer changed", k,
                   "values differ" if old[k]["dims"] == new[k]["dims"]
                   else f"dims {old[k]['dims']} -> {new[k]['dims']}")
            for k in old if k in new and old[k] != new[k]]
    return out


def diff(signed: dict[str, Any], now: dict[str, Any]) -> list[Change]:
    """Every difference between two manifests, in a stable order."""
    meta = [Change("metadata stripped", k) for k in signed["metadata"] if k not in now["metadata"]]
    meta += [Change("metadata added", k) for k in now["metadata"] if k not in signed["metadata"]]
    meta += [Change("metadata changed", k) for k in signed["metadata"]
             if k in now["metadata"] and signed["metadata"][k] != now["metadata"][k]]
    opsets = [Change("opset changed", c.what, c.detail or c.kind)
              for c in _diff_named("opset", signed["opsets"], now["opsets"])]
    return [*opsets, *_diff_io("input", signed["inputs"], now["inputs"]),
            *_diff_io("output", signed["outputs"], now["outputs"]),
            *_diff_nodes(signed["nodes"], now["nodes"]),
            *_diff_initializers(signed["initializers"], now["initializers"]), *meta]


def check_graph(model: Any, signer: bytes | None = None) -> GraphCheck:
    """Verify the graph signature of an onnx.ModelProto and diff it against the graph.

    Args:
        model: the ModelProto (e.g. `onnx.load(path)`).
        signer: the owner's 32-byte public key to pin; without it the key stored beside the
            signature is used, which shows integrity, not who signed.

    Returns:
        GraphCheck (module docstring: statuses and change kinds).
    """
    meta = _metadata(model)
    if METADATA_KEY not in meta:
        return GraphCheck("unsigned", f"no `{METADATA_KEY}` in metadata_props: the model was "
                                      "never signed, or the signature was stripped (re-export "
                                      "drops it)")
    try:
        envelope = json.loads(meta[METADATA_KEY])
        embedded = unb64(meta.get(SIGNER_KEY, ""))
        if signer is None and not embedded:
            raise EvidenceError(f"the `{SIGNER_KEY}` entry is missing, so the signer is "
                                "unknown; pass the owner's public key (--signer)")
        key = signer if signer is not None else embedded
        if signer is not None and embedded and embedded != signer:
            raise EvidenceError("the stored signer key is not the pinned owner key")
        payload = verify_envelope(envelope, {keyid_of(key): key}, [keyid_of(key)])
        if envelope.get("payloadType") != PAYLOAD_TYPE:
            raise EvidenceError(f"payloadType is {envelope.get('payloadType')!r}, expected "
                                f"{PAYLOAD_TYPE!r}")
        signed = json.loads(payload)
        if signed.get("type") != MANIFEST_TYPE:
            raise EvidenceError(f"the manifest type is {signed.get('type')!r}")
    except (ValueError, TypeError, AttributeError, EvidenceError) as e:
        return GraphCheck("invalid", f"the graph signature does not verify: {e}")
    changes = diff(signed, graph_manifest(model))
    keyid = keyid_of(key)
    if not changes:
        return GraphCheck("intact", "the signature verifies and the graph is the one signed",
                          keyid, signer is not None)
    return GraphCheck("changed", f"the signature verifies but the graph changed since signing "
                                 f"({len(changes)} change(s))", keyid, signer is not None, changes)
