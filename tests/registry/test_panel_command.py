"""`manage.py panel`: operators add, list and remove reference models; the digits panel builds once."""
from __future__ import annotations

import io

import pytest
import torch
from django.core.management import CommandError, call_command

from registry import panel
from registry.models import ReferenceModel
from verifier import toy

torch.set_num_threads(1)  # the machine is shared: keep each test module on one core


def _run(*args: str) -> str:
    out = io.StringIO()
    call_command("panel", *args, stdout=out)
    return out.getvalue()


def test_an_operator_adds_lists_and_removes_a_safetensors_model(db, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "cnn.safetensors"
    path.write_bytes(panel.state_dict_bytes(toy.CNN()))
    assert "to domain input=64;classes=10" in _run("add", "cnn-1", str(path), "--format",
                                                   "safetensors", "--architecture", "digits-cnn")
    assert "cnn-1" in _run("list")
    assert bytes(ReferenceModel.objects.get(name="cnn-1").data) == path.read_bytes()
    with pytest.raises(CommandError, match="exists"):
        _run("add", "cnn-1", str(path), "--format", "safetensors", "--architecture", "digits-cnn")
    _run("remove", "cnn-1")
    with pytest.raises(CommandError, match="no panel model is named"):
        _run("remove", "cnn-1")


def test_an_onnx_model_joins_the_domain_its_outputs_show(db, tmp_path):
    from registry.demo import export_onnx

    torch.manual_seed(0)
    path = tmp_path / "m.onnx"
    export_onnx(toy.MLP(classes=7), path)
    _run("add", "onnx-7", str(path), "--format", "onnx", "--input-shape", "64")
    assert ReferenceModel.objects.get(name="onnx-7").domain == "input=64;classes=7"
    (name, suspect), = panel.suspects("input=64;classes=7")
    assert name == "onnx-7" and suspect.predict(torch.zeros(3, 64)).shape == (3, 7)
    with pytest.raises(CommandError, match="does not accept inputs of shape"):
        _run("add", "onnx-bad", str(path), "--format", "onnx", "--input-shape", "32")


def test_a_file_that_is_not_what_it_claims_is_refused(db, tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(panel.state_dict_bytes(toy.MLP()))
    with pytest.raises(CommandError, match="not onnx"):
        _run("add", "x", str(path), "--format", "onnx", "--input-shape", "64")
    with pytest.raises(CommandError, match="cannot read"):
        _run("add", "x", str(tmp_path / "missing"), "--format", "onnx", "--input-shape", "64")
    assert not ReferenceModel.objects.exists()


def test_the_digits_panel_adds_only_the_models_it_lacks(db):
    assert panel.ensure_digits_panel(seeds=[9001, 9002], epochs=1) == 2
    assert panel.ensure_digits_panel(seeds=[9001, 9002, 9003], epochs=1) == 1
    names = sorted(ReferenceModel.objects.values_list("name", flat=True))
    assert names == ["digits-cnn-s9002", "digits-mlp-s9003", "digits-mlp-wide-s9001"]
