"""Sign an ONNX graph's manifest with the owner's key and store the envelope in the model."""
from __future__ import annotations

import json
from typing import Any

from verifier.evidence.canonical import canonical_json
from verifier.evidence.dsse import sign_envelope
from verifier.evidence.identity import Identity, b64
from verifier.graphsig.manifest import METADATA_KEY, PAYLOAD_TYPE, SIGNER_KEY, graph_manifest


def sign_graph(model: Any, identity: Identity) -> Any:
    """Sign `model`'s manifest and store the DSSE envelope in its metadata_props (in place).

    A previous graph signature is replaced; every other metadata entry is kept (and covered).
    The signer's public key is stored beside the envelope (`SIGNER_KEY`) so that a copy can be
    checked for self-consistency; pin the owner's key to check who signed.

    Args:
        model: an onnx.ModelProto.
        identity: the owner's signing key (`hallmark keygen`).

    Returns:
        The same ModelProto, signed.
    """
    kept = [(p.key, p.value) for p in model.metadata_props
            if p.key not in (METADATA_KEY, SIGNER_KEY)]
    del model.metadata_props[:]
    for k, v in kept:
        model.metadata_props.add(key=k, value=v)
    envelope = sign_envelope(canonical_json(graph_manifest(model)), PAYLOAD_TYPE, [identity])
    model.metadata_props.add(key=SIGNER_KEY, value=b64(identity.public_key))
    model.metadata_props.add(key=METADATA_KEY,
                             value=json.dumps(envelope, sort_keys=True, separators=(",", ":")))
    return model
