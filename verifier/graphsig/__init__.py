"""Graph-level signatures of ONNX models (after the Latent AI LEIP post): declared provenance.

The owner signs a manifest of the graph — operators, topology, input/output signature,
initializer digests, opsets and the other metadata — with their Ed25519 key (a DSSE envelope)
and stores it in the model's own `metadata_props`. `check_graph` verifies the signature and
lists exactly what changed since signing: nodes added, removed, rewired or edited,
initializers changed, inputs/outputs changed, metadata stripped.

What it is, and what it is not: tamper evidence for copies that keep the signature. Anyone can
remove it (re-export the model, or delete one metadata entry), so its absence proves nothing;
every result carries the label `LABEL`. It is not a watermark scheme (it is not in
`verifier.schemes.KNOWN` and the registry does not run it on suspects): watermarks survive
what this does not, and this says what a watermark cannot (which node changed).

Modules: `manifest` (the signed content), `sign` (sign and embed), `check` (verify and diff).

Example:
    >>> from verifier.graphsig import check_graph, sign_graph  # doctest: +SKIP
    >>> signed = sign_graph(onnx.load("model.onnx"), identity)
    >>> check_graph(signed).status
    'intact'
"""
from verifier.graphsig.check import Change, GraphCheck, check_graph
from verifier.graphsig.manifest import LABEL, METADATA_KEY, PAYLOAD_TYPE, graph_manifest
from verifier.graphsig.sign import sign_graph

__all__ = ["LABEL", "METADATA_KEY", "PAYLOAD_TYPE", "Change", "GraphCheck", "check_graph",
           "graph_manifest", "sign_graph"]
