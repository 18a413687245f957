"""The manifest an owner signs: what an ONNX graph is, in a canonical JSON document.

Rules:
- nodes are listed in graph order, each with its name, op_type, domain, input and output
  names, and the SHA-256 of its attributes (each attribute's serialized protobuf, sorted by
  name); a node without a name is named "#<index>:<op_type>";
- initializers by name: element type, dims and SHA-256 of the values (of the array's bytes,
  little-endian, so raw_data and typed fields storing the same values hash alike);
- graph inputs (initializers excluded) and outputs: name, element type and shape
  (a symbolic dimension by its name);
- opset imports and the other `metadata_props` (SHA-256 of each value), the signature's own
  entries (envelope, signer key) excluded;
- subgraphs (If/Loop bodies) are covered through the attribute digests, not listed node by node.
"""
from __future__ import annotations

import hashlib
from typing import Any

METADATA_KEY = "hallmark.graph_signature"  # the metadata_props entry holding the envelope
SIGNER_KEY = "hallmark.graph_signer"  # the signer's public key (base64), beside the envelope
PAYLOAD_TYPE = "application/vnd.hallmark.onnx-graph-manifest+json"
MANIFEST_TYPE = "hallmark/onnx-graph-manifest/v1"
LABEL = "declared provenance: removable by re-export"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def node_id(index: int, node: Any) -> str:
    """A node's identity in the manifest: its name, or its position and op_type."""
    return node.name or f"#{index}:{node.op_type}"


def _node(index: int, node: Any) -> dict[str, Any]:
    attrs = b"".join(a.SerializeToString(deterministic=True)
                     for a in sorted(node.attribute, key=lambda a: a.name))
    return {"id": node_id(index, node), "op_type": node.op_type, "domain": node.domain,
            "inputs": list(node.input), "outputs": list(node.output),
            "attributes_sha256": _sha256(attrs)}


def _initializer(init: Any) -> dict[str, Any]:
    import numpy as np
    from onnx import numpy_helper

    arr = np.ascontiguousarray(numpy_helper.to_array(init))
    data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    return {"elem_type": int(init.data_type), "dims": [int(d) for d in init.dims],
            "sha256": _sha256(data)}


def _value(v: Any) -> dict[str, Any]:
    t = v.type.tensor_type
    shape = [d.dim_param if d.HasField("dim_param") else int(d.dim_value)
             for d in t.shape.dim] if t.HasField("shape") else None
    return {"name": v.name, "elem_type": int(t.elem_type), "shape": shape}


def graph_manifest(model: Any) -> dict[str, Any]:
    """The manifest of an onnx.ModelProto (see the module rules).

    Example:
        >>> import onnx
        >>> from onnx import helper, TensorProto
        >>> g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="r")], "g",
        ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        ...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        >>> [n["op_type"] for n in graph_manifest(helper.make_model(g))["nodes"]]
        ['Relu']
    """
    graph = model.graph
    init_names = {i.name for i in graph.initializer}
    return {
        "type": MANIFEST_TYPE,
        "opsets": {o.domain or "ai.onnx": int(o.version) for o in model.opset_import},
        "inputs": [_value(v) for v in graph.input if v.name not in init_names],
        "outputs": [_value(v) for v in graph.output],
        "nodes": [_node(i, n) for i, n in enumerate(graph.node)],
        "initializers": {i.name: _initializer(i) for i in graph.initializer},
        "metadata": {p.key: _sha256(p.value.encode()) for p in model.metadata_props
                     if p.key not in (METADATA_KEY, SIGNER_KEY)},
    }
