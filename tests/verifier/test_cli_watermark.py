"""`hallmark watermark SCHEME MODEL --out OUT --key-out KEY`, through verifier.cli.main, on
real files: safetensors, a PEFT adapter saved by peft, ONNX exported by torch."""
from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from verifier import forgery, toy
from verifier.cli import main
from verifier.models import load_suspect
from verifier.schemes import advparams, lsb, output_signature

torch.set_num_threads(1)  # the machine is shared: keep each test module on one core
FLOOR = forgery.floor_log10_p()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A trained digits MLP as safetensors (with metadata) and ONNX, held-out data, an adapter."""
    import peft

    folder = tmp_path_factory.mktemp("owner")
    split = toy.digits()
    torch.manual_seed(0)
    model = toy.train_digits(toy.MLP(), split, epochs=8).eval()
    save_file(model.state_dict(), str(folder / "model.safetensors"), metadata={"team": "vision"})
    save_file({"x": split.x_held, "y": split.y_held}, str(folder / "held.safetensors"))
    save_file({"x": split.x_test, "y": split.y_test}, str(folder / "test.safetensors"))
    torch.onnx.export(model, (torch.zeros(2, 64),), str(folder / "model.onnx"), dynamo=False,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["fc1", "fc2"],
                             init_lora_weights=False)
    peft.get_peft_model(toy.MLP(), config).save_pretrained(str(folder / "adapter"))
    return {"safetensors": folder / "model.safetensors", "onnx": folder / "model.onnx",
            "adapter": folder / "adapter", "held": folder / "held.safetensors",
            "test": folder / "test.safetensors"}


def _watermark(scheme: str, model: Path, tmp_path: Path, out_name: str, *extra: str
               ) -> tuple[int, Path, Path]:
    out, key = tmp_path / out_name, tmp_path / f"{scheme}.key"
    code = main(["watermark", scheme, str(model), "--out", str(out), "--key-out", str(key),
                 *extra])
    return code, out, key


def _test(scheme_module, path: Path, key: Path):  # type: ignore[no-untyped-def]
    return scheme_module.test(load_suspect(path).suspect, scheme_module.Key.from_bytes(
        key.read_bytes()))


def test_lsb_signs_a_safetensors_file_and_keeps_everything_but_low_bits(files, tmp_path, capsys):
    code, out, key = _watermark("lsb", files["safetensors"], tmp_path, "signed.safetensors")
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert lsb.CLAIM in printed and "white-box" in printed and "self-check" in printed
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    result = _test(lsb, out, key)
    assert result.log10_p < FLOOR and result.details["signature_valid"]
    assert result.details["masked_digest_match"]
    before, after = load_file(files["safetensors"]), load_file(out)
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[n], after[n]) for n in before)
    assert all(torch.allclose(before[n], after[n], rtol=2e-5, atol=0) for n in before)
    with safe_open(str(out), framework="pt") as f:
        assert f.metadata() == {"team": "vision"}


def test_an_unmarked_file_does_not_test_positive_with_that_key(files, tmp_path, capsys):
    code, _, key = _watermark("lsb", files["safetensors"], tmp_path, "signed.safetensors")
    assert code == 0
    assert _test(lsb, files["safetensors"], key).log10_p > -3


def test_lsb_signs_a_peft_adapter_folder_and_copies_its_config(files, tmp_path, capsys):
    code, out, key = _watermark("lsb", files["adapter"], tmp_path, "signed-adapter")
    assert code == 0, capsys.readouterr().err
    assert (out / "adapter_config.json").read_bytes() == (
        files["adapter"] / "adapter_config.json").read_bytes()
    loaded = load_suspect(out)
    assert loaded.format == "peft-adapter"
    assert _test(lsb, out, key).details["signature_valid"]


def test_lsb_signs_an_onnx_model_that_still_predicts_the_same(files, tmp_path, capsys):
    code, out, key = _watermark("lsb", files["onnx"], tmp_path, "signed.onnx")
    assert code == 0, capsys.readouterr().err
    x = load_file(files["test"])["x"]
    plain, signed = load_suspect(files["onnx"]).suspect, load_suspect(out).suspect
    assert torch.equal(plain.predict(x).argmax(1), signed.predict(x).argmax(1))
    assert _test(lsb, out, key).log10_p < FLOOR


def test_output_signature_is_appended_to_an_onnx_graph_without_changing_top1(files, tmp_path,
                                                                             capsys):
    code, out, key = _watermark("output_signature", files["onnx"], tmp_path, "served.onnx")
    assert code == 0, capsys.readouterr().err
    assert output_signature.CLAIM in capsys.readouterr().out
    x = load_file(files["test"])["x"]
    plain, signed = load_suspect(files["onnx"]).suspect, load_suspect(out).suspect
    a, b = plain.predict(x), signed.predict(x)
    assert torch.equal(a.argmax(1), b.argmax(1))
    assert bool((b <= a + 1e-4).all())  # the wrapper only ever moves logits down
    assert _test(output_signature, out, key).log10_p < FLOOR
    assert _test(output_signature, files["onnx"], key).log10_p > -3


def test_output_signature_wraps_weights_with_the_owners_arch_and_writes_onnx(files, tmp_path,
                                                                             capsys):
    code, out, key = _watermark("output_signature", files["safetensors"], tmp_path, "served.onnx",
                                "--arch", "verifier.toy:MLP", "--input-shape", "64")
    assert code == 0, capsys.readouterr().err
    assert load_suspect(out).format == "onnx"
    assert _test(output_signature, out, key).log10_p < FLOOR


def test_advparams_encrypts_weights_that_the_key_restores_bit_exact(files, tmp_path, capsys):
    code, out, key = _watermark("advparams", files["safetensors"], tmp_path, "enc.safetensors",
                                "--arch", "verifier.toy:MLP", "--data", str(files["held"]))
    assert code == 0, capsys.readouterr().err
    assert "hallmark decrypt" in capsys.readouterr().out
    k = advparams.Key.from_bytes(key.read_bytes())
    enc, plain = load_file(out), load_file(files["safetensors"])
    test = load_file(files["test"])
    model = toy.MLP()
    model.load_state_dict(enc)
    assert toy.accuracy(model, test["x"], test["y"]) < 0.3
    restored = advparams.decrypt(enc, k)
    assert all(torch.equal(restored[n], plain[n]) for n in plain)
    assert _test(advparams, out, key).log10_p < FLOOR


def test_it_never_overwrites_and_leaves_nothing_on_failure(files, tmp_path, capsys):
    out, key = tmp_path / "served.onnx", tmp_path / "k.key"
    out.write_bytes(b"precious")
    assert main(["watermark", "lsb", str(files["safetensors"]), "--out", str(out),
                 "--key-out", str(key)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == b"precious" and not key.exists()
    # weights cannot run: output_signature says how to give it a runnable model
    code, out2, key2 = _watermark("output_signature", files["safetensors"], tmp_path, "s.onnx")
    assert code == 2
    assert "--arch" in capsys.readouterr().err
    assert not out2.exists() and not key2.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["served.onnx"]


def test_it_refuses_a_pickle_and_names_the_formats_it_writes(files, tmp_path, capsys):
    pt = tmp_path / "model.pt"
    torch.save(toy.MLP().state_dict(), pt)
    code, out, key = _watermark("lsb", pt, tmp_path, "signed.pt")
    assert code == 2
    err = capsys.readouterr().err
    assert "torch-state-dict" in err and "safetensors.torch.save_file" in err
    assert not out.exists() and not key.exists()


def test_advparams_without_the_architecture_says_why_it_needs_it(files, tmp_path, capsys):
    code, *_ = _watermark("advparams", files["safetensors"], tmp_path, "enc.safetensors",
                          "--data", str(files["held"]))
    assert code == 2
    assert "--arch package.module:factory" in capsys.readouterr().err


def test_a_bad_param_names_the_valid_ones(files, tmp_path, capsys):
    code, *_ = _watermark("lsb", files["safetensors"], tmp_path, "s.safetensors",
                          "--param", "bits=3")
    assert code == 2
    assert "k, repetitions" in capsys.readouterr().err


def test_an_owner_signing_key_is_not_taken_for_a_watermark_key(tmp_path, capsys):
    owner = tmp_path / "owner.key"
    assert main(["keygen", "--out", str(owner)]) == 0
    capsys.readouterr()
    assert main(["open", "--key", str(owner)]) == 2
    err = capsys.readouterr().err
    assert "hallmark watermark" in err and "not a watermark key" in err
    assert json.dumps(err)  # printable


def test_a_training_time_scheme_is_pointed_to_the_training_helpers(files, tmp_path, capsys):
    code, out, key = _watermark("uchida", files["safetensors"], tmp_path, "u.safetensors")
    assert code == 2
    err = capsys.readouterr().err
    assert "lsb, output_signature, advparams" in err and "docs/owners.md" in err
    assert not out.exists() and not key.exists()


def test_a_dynamo_export_with_its_data_file_beside_it_gets_the_output_signature(files, tmp_path,
                                                                               capsys):
    model = toy.MLP()
    model.load_state_dict(load_file(files["safetensors"]))
    exported = tmp_path / "dynamo" / "model.onnx"
    exported.parent.mkdir()
    torch.onnx.export(model.eval(), (torch.zeros(2, 64),), str(exported), dynamo=True,
                      dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    assert (tmp_path / "dynamo" / "model.onnx.data").exists()  # torch's default layout
    code, out, key = _watermark("output_signature", exported, tmp_path, "served.onnx")
    assert code == 0, capsys.readouterr().err
    assert _test(output_signature, out, key).log10_p < FLOOR  # one self-contained file


def test_the_console_entry_point_prints_errors_without_a_traceback(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "verifier.cli", "watermark", "lsb",
                           str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "o"),
                           "--key-out", str(tmp_path / "k")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2
    assert done.stderr.startswith("hallmark: cannot read") and "Traceback" not in done.stderr


def test_a_model_the_scheme_cannot_mark_gets_the_schemes_own_message(tmp_path, capsys):
    half = tmp_path / "half.safetensors"
    save_file({k: v.to(torch.bfloat16) for k, v in toy.MLP().state_dict().items()}, str(half))
    code, out, key = _watermark("lsb", half, tmp_path, "signed.safetensors")
    assert code == 2
    assert "hallmark: lsb: the model has no float32 tensors" in capsys.readouterr().err
    assert not out.exists() and not key.exists()
