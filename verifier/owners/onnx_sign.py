"""The output-signature wrapper appended to an existing ONNX graph.

`verifier.schemes.output_signature.embed` wraps a torch module. An owner who only has the ONNX
file has no module to wrap, so the wrapper alone is exported (its inner model is a stand-in
that returns a second graph input, the logits) and spliced after the owner's graph:

    x ──> owner's graph ──> logits ──┐
    └────────────────────────────────┴──> signer (keyed dither, lattice) ──> signed logits

The signed output keeps the original output's name, so consumers of the model see no change
but the signature; the signer's nodes and initializers are prefixed `hallmark_sig/`.
"""
from __future__ import annotations

import tempfile
import warnings
from typing import Any

import torch
from torch import nn

from verifier.owners.errors import OwnerToolError
from verifier.schemes import output_signature

_PREFIX = "hallmark_sig/"


class _Logits(nn.Module):
    """Stand-in inner model: returns the logits handed to `_Signer.forward` (zeros otherwise)."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.classes = classes
        self.value: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, ...) -> (N, C)
        if self.value is None:
            return torch.zeros(x.shape[0], self.classes)
        return self.value


class _Signer(nn.Module):
    """The scheme's wrapper around `_Logits`: forward(x, logits) -> signed logits."""

    def __init__(self, key: output_signature.Key) -> None:
        super().__init__()
        self.inner = _Logits(key.params.classes)
        self.signed = output_signature.embed(self.inner, key)

    def forward(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        self.inner.value = logits
        try:
            return self.signed(x)  # type: ignore[no-any-return]
        finally:
            self.inner.value = None


def export_torchscript(module: nn.Module, example: tuple[torch.Tensor, ...], path: str,
                       **options: Any) -> None:
    """`torch.onnx.export` with the TorchScript exporter, its deprecation notice silenced.

    Used for small graphs of elementwise ops (the signer, a wrapped classifier): it exports
    them exactly and in well under a second, where the dynamo exporter takes ~20 s.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, example, path, dynamo=False, **options)


def _export_signer(key: output_signature.Key, opset: int) -> Any:
    """The signer as an ONNX ModelProto with inputs "x", "logits" and output "signed"."""
    import onnx

    params = key.params
    example = (torch.zeros(2, *params.input_shape), torch.zeros(2, params.classes))
    with tempfile.TemporaryDirectory(prefix="hallmark-signer-") as tmp:
        path = f"{tmp}/signer.onnx"
        export_torchscript(_Signer(key).eval(), example, path, opset_version=opset,
                           input_names=["x", "logits"], output_names=["signed"],
                           dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"},
                                         "signed": {0: "batch"}})
        return onnx.load(path)


def _io(model: Any) -> tuple[Any, Any]:
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise OwnerToolError(
            f"the ONNX model has {len(inputs)} input(s) and {len(graph.output)} output(s); the "
            "output signature wraps a classifier with one input tensor and one logits output")
    return inputs[0], graph.output[0]


def _opset(model: Any) -> int:
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    return int(versions[0]) if versions else 18


def sign_onnx(model: Any, key: output_signature.Key) -> Any:
    """Append the key's output signature to an ONNX classifier (the ModelProto is modified).

    Args:
        model: an onnx.ModelProto with one float input (N, *input_shape) and one (N, C) output.
        key: an `output_signature` key made for that input shape and C classes.

    Returns:
        The same ModelProto, whose output now carries the signature.

    Raises:
        OwnerToolError: more than one input or output.
    """
    import onnx

    inp, out = _io(model)
    opset = _opset(model)
    if not 11 <= opset <= 20:  # the range the exporter writes; the owner's ops keep their opset
        raise OwnerToolError(f"the ONNX model uses opset {opset}; the output signature can be "
                             "appended to opsets 11-20: re-export the model with "
                             "torch.onnx.export(..., opset_version=18)")
    signer = onnx.compose.add_prefix(_export_signer(key, opset), _PREFIX)
    unsigned = f"{_PREFIX}unsigned_{out.name}"
    for node in model.graph.node:
        node.output[:] = [unsigned if o == out.name else o for o in node.output]
        node.input[:] = [unsigned if i == out.name else i for i in node.input]
    rename = {f"{_PREFIX}x": inp.name, f"{_PREFIX}logits": unsigned, f"{_PREFIX}signed": out.name}
    for node in signer.graph.node:
        node.input[:] = [rename.get(i, i) for i in node.input]
        node.output[:] = [rename.get(o, o) for o in node.output]
    model.graph.initializer.extend(signer.graph.initializer)
    model.graph.node.extend(signer.graph.node)
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                        "hallmark.output_signature": "v1"})
    return model
