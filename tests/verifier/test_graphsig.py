"""ONNX graph signatures (verifier.graphsig): an intact model, each kind of change, a stripped
or forged signature, and the `graph-sign` / `graph-check` commands."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from verifier import toy
from verifier.cli import main
from verifier.evidence.identity import Identity, b64, write_private_key, write_public_key
from verifier.graphsig import LABEL, METADATA_KEY, check_graph, sign_graph
from verifier.owners.onnx_sign import export_torchscript

OWNER, OTHER = Identity.from_seed(bytes([7]) * 32), Identity.from_seed(bytes([8]) * 32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("graph") / "mlp.onnx"
    torch.manual_seed(0)
    export_torchscript(toy.MLP(hidden=8).eval(), (torch.zeros(2, 64),), str(path),
                       input_names=["input"], output_names=["logits"],
                       dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path


@pytest.fixture
def signed(exported: Path) -> onnx.ModelProto:
    model = onnx.load(str(exported))
    model.metadata_props.add(key="author", value="vision team")
    return sign_graph(model, OWNER)


def _kinds(model: onnx.ModelProto) -> list[tuple[str, str]]:
    result = check_graph(model, OWNER.public_key)
    assert result.status == "changed" and result.label == LABEL
    return [(c.kind, c.what) for c in result.changes]


def _node(model: onnx.ModelProto, op_type: str, n: int = 0) -> onnx.NodeProto:
    return [x for x in model.graph.node if x.op_type == op_type][n]


def test_an_intact_signed_model_checks_as_intact_after_a_save_and_load(signed, tmp_path):
    path = tmp_path / "signed.onnx"
    onnx.save(signed, str(path))
    result = check_graph(onnx.load(str(path)), OWNER.public_key)
    assert (result.status, result.signer, result.pinned, result.changes) == (
        "intact", OWNER.keyid, True, [])
    assert result.label == "declared provenance: removable by re-export"


def test_a_node_added_is_named(signed):
    signed.graph.node.append(helper.make_node("Identity", ["input"], ["copy"], name="spy"))
    assert _kinds(signed) == [("node added", "spy")]


def test_a_node_removed_and_its_consumer_rewired_are_both_reported(signed):
    relu = _node(signed, "Relu")
    consumer = next(n for n in signed.graph.node if relu.output[0] in n.input)
    consumer.input[:] = [relu.input[0] if i == relu.output[0] else i for i in consumer.input]
    signed.graph.node.remove(relu)
    assert _kinds(signed) == [("node removed", relu.name), ("node rewired", consumer.name)]


def test_a_rewired_node_is_reported_with_its_old_and_new_inputs(signed):
    gemm = _node(signed, "Gemm", 2)
    gemm.input[1], gemm.input[2] = gemm.input[2], gemm.input[1]
    result = check_graph(signed, OWNER.public_key)
    assert [(c.kind, c.what) for c in result.changes] == [("node rewired", gemm.name)]
    assert "became" in result.changes[0].detail


def test_an_edited_attribute_is_reported(signed):
    gemm = _node(signed, "Gemm")
    gemm.attribute.append(helper.make_attribute("alpha", 2.0))
    assert _kinds(signed) == [("node edited", gemm.name)]


def test_one_changed_weight_is_reported_by_initializer_name(signed):
    init = next(i for i in signed.graph.initializer if i.name == "fc2.weight")
    arr = numpy_helper.to_array(init).copy()
    arr[0, 0] = np.nextafter(arr[0, 0], np.float32(1))  # one ulp
    init.CopyFrom(numpy_helper.from_array(arr, "fc2.weight"))
    assert _kinds(signed) == [("initializer changed", "fc2.weight")]


def test_a_changed_output_signature_is_reported(signed):
    signed.graph.output[0].type.tensor_type.elem_type = onnx.TensorProto.DOUBLE
    assert _kinds(signed) == [("output changed", "logits")]


def test_stripped_metadata_is_reported(signed):
    kept = [p for p in signed.metadata_props if p.key != "author"]
    del signed.metadata_props[:]
    signed.metadata_props.extend(kept)
    assert _kinds(signed) == [("metadata stripped", "author")]


def test_a_stripped_signature_leaves_an_unsigned_model(signed):
    kept = [p for p in signed.metadata_props if p.key != METADATA_KEY]
    del signed.metadata_props[:]
    signed.metadata_props.extend(kept)
    result = check_graph(signed, OWNER.public_key)
    assert result.status == "unsigned" and "stripped" in result.reason and not result.changes


def test_without_the_stored_signer_key_the_check_asks_for_the_owners_key(signed):
    kept = [p for p in signed.metadata_props if p.key != "hallmark.graph_signer"]
    del signed.metadata_props[:]
    signed.metadata_props.extend(kept)
    result = check_graph(signed)
    assert result.status == "invalid" and "--signer" in result.reason
    assert check_graph(signed, OWNER.public_key).status == "intact"


def test_a_signature_by_another_key_than_the_pinned_one_is_invalid(exported):
    model = sign_graph(onnx.load(str(exported)), OTHER)
    result = check_graph(model, OWNER.public_key)
    assert result.status == "invalid"
    assert check_graph(model).status == "intact"  # self-consistent, but not the owner's


def test_an_edited_manifest_inside_the_envelope_is_invalid(signed):
    entry = next(p for p in signed.metadata_props if p.key == METADATA_KEY)
    envelope = json.loads(entry.value)
    payload = json.loads(__import__("base64").b64decode(envelope["payload"]))
    payload["initializers"].pop("fc1.weight")
    envelope["payload"] = b64(json.dumps(payload).encode())
    entry.value = json.dumps(envelope)
    result = check_graph(signed, OWNER.public_key)
    assert result.status == "invalid" and "bad signature" in result.reason


def test_graph_sign_and_graph_check_from_the_command_line(exported, tmp_path, capsys):
    key, pub, out = tmp_path / "owner.key", tmp_path / "owner.pub", tmp_path / "signed.onnx"
    write_private_key(key, OWNER)
    write_public_key(pub, OWNER.public_key)
    assert main(["graph-sign", str(exported), "--key", str(key), "--out", str(out)]) == 0
    assert main(["graph-check", str(out), "--signer", str(pub)]) == 0
    assert "graph signature: intact" in capsys.readouterr().out
    model = onnx.load(str(out))
    model.graph.node.append(helper.make_node("Identity", ["input"], ["copy"], name="spy"))
    tampered = tmp_path / "tampered.onnx"
    onnx.save(model, str(tampered))
    assert main(["graph-check", str(tampered), "--signer", str(pub)]) == 1
    printed = capsys.readouterr().out
    assert "node added: spy" in printed and LABEL in printed
    assert main(["graph-check", str(exported)]) == 1
    assert "unsigned" in capsys.readouterr().out


def _add_initializer(m: onnx.ModelProto) -> None:
    m.graph.initializer.append(numpy_helper.from_array(np.zeros(3, np.float32), "extra"))


def _remove_initializer(m: onnx.ModelProto) -> None:
    m.graph.initializer.remove(next(i for i in m.graph.initializer if i.name == "fc2.bias"))


def _set_metadata(key: str, value: str):  # type: ignore[no-untyped-def]
    def edit(m: onnx.ModelProto) -> None:
        entries = {p.key: p.value for p in m.metadata_props}
        entries[key] = value
        onnx.helper.set_model_props(m, entries)
    return edit


@pytest.mark.parametrize("edit,expected", [
    (_add_initializer, ("initializer added", "extra")),
    (_remove_initializer, ("initializer removed", "fc2.bias")),
    (lambda m: m.graph.input[0].type.tensor_type.shape.dim[1].__setattr__("dim_value", 65),
     ("input changed", "input")),
    (lambda m: m.opset_import[0].__setattr__("version", m.opset_import[0].version - 1),
     ("opset changed", "ai.onnx")),
    (_set_metadata("author", "someone else"), ("metadata changed", "author")),
    (_set_metadata("licence", "MIT"), ("metadata added", "licence")),
])
def test_every_other_kind_of_change_is_named(signed, edit, expected):
    edit(signed)
    assert _kinds(signed) == [expected]
