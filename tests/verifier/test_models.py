"""verifier.models.load_suspect on real, well-formed models of every accepted format."""
from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import onnx
import pytest
import torch
from safetensors.torch import save_file

from verifier.models import LoadedModel, LoadLimits, ModelFormatError, load_suspect
from verifier.toy import CNN, MLP

torch.set_num_threads(1)
DEFAULTS = LoadLimits()


@pytest.fixture(scope="module")
def mlp() -> MLP:
    torch.manual_seed(0)
    return MLP(hidden=16).eval()


@pytest.fixture(scope="module")
def mlp_onnx(mlp: MLP, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MLP exported by torch.onnx.export (the dynamo exporter) with a dynamic batch."""
    path = tmp_path_factory.mktemp("onnx") / "mlp.onnx"
    torch.onnx.export(mlp, (torch.zeros(2, 64),), dynamo=True,
                      dynamic_shapes=({0: "batch"},), verbose=False).save(str(path))
    return path


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    d = tmp_path / "scratch"
    d.mkdir()
    return d


def load(path: Path, scratch: Path, limits: LoadLimits = DEFAULTS) -> LoadedModel:
    loaded = load_suspect(path, limits, scratch_dir=scratch)
    assert os.listdir(scratch) == []  # nothing left behind
    return loaded


def assert_same_weights(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(want)
    for name in want:
        assert torch.equal(got[name], want[name]), name


def zip_folder(folder: Path, path: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, prefix + str(f.relative_to(folder)))
    return path


# --- safetensors ---------------------------------------------------------------------------------


def test_it_loads_safetensors_weights_with_their_names_and_values(mlp: MLP, tmp_path: Path,
                                                                 scratch: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file(mlp.state_dict(), path)
    loaded = load(path, scratch)
    assert loaded.format == "safetensors" and loaded.warnings == []
    assert loaded.suspect.has_weights and not loaded.suspect.has_predict
    assert_same_weights(dict(loaded.suspect.weights), mlp.state_dict())
    assert loaded.details["tensors"] == 6
    assert loaded.details["parameters"] == sum(p.numel() for p in mlp.parameters())


def test_it_detects_safetensors_by_content_whatever_the_extension(mlp: MLP, tmp_path: Path,
                                                                 scratch: Path) -> None:
    path = tmp_path / "pytorch_model.bin"
    save_file(mlp.state_dict(), path)
    assert load(path, scratch).format == "safetensors"


def test_it_maps_safetensors_tensors_without_copying(tmp_path: Path, scratch: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.ones(1000), "b": torch.zeros(1000)}, path)
    w = load(path, scratch).suspect.weights
    # both tensors point into one mapping of the file, 4000 bytes apart, as in the header
    assert abs(w["b"].data_ptr() - w["a"].data_ptr()) == 4000


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16, torch.int64,
                                   torch.int8, torch.uint8, torch.bool, torch.float8_e4m3fn])
def test_it_reads_each_safetensors_dtype(tmp_path: Path, scratch: Path, dtype: torch.dtype) -> None:
    t = (torch.arange(12).reshape(3, 4) % 3).to(dtype)
    path = tmp_path / "w.safetensors"
    save_file({"t": t, "empty": torch.zeros(0, 3, dtype=dtype)}, path)
    w = load(path, scratch).suspect.weights
    assert w["t"].dtype == dtype and torch.equal(w["t"].float(), t.float())
    assert w["empty"].shape == (0, 3)


# --- ONNX ----------------------------------------------------------------------------------------


def test_it_loads_an_onnx_export_of_a_torch_mlp_with_both_access_kinds(mlp: MLP, mlp_onnx: Path,
                                                                      scratch: Path) -> None:
    loaded = load(mlp_onnx, scratch)
    assert loaded.format == "onnx" and loaded.warnings == []
    s = loaded.suspect
    assert s.has_weights and s.has_predict
    # the dynamo exporter keeps the torch parameter names ("fc1.weight", …) as initializer names
    assert_same_weights(dict(s.weights), mlp.state_dict())
    x = torch.rand(100, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = mlp(x)
    got = s.predict(x)
    assert got.shape == (100, 10)
    assert torch.allclose(got, want, atol=1e-5, rtol=0)
    assert s.queries == 100
    assert loaded.details["io"]["inputs"][0]["shape"] == ["batch", 64]


def test_it_runs_an_onnx_model_with_a_fixed_batch_size_in_chunks(tmp_path: Path,
                                                                 scratch: Path) -> None:
    torch.manual_seed(2)
    cnn = CNN().eval()
    path = tmp_path / "cnn.onnx"
    torch.onnx.export(cnn, (torch.zeros(4, 1, 8, 8),), dynamo=True).save(str(path))
    loaded = load(path, scratch)
    assert loaded.details["io"]["inputs"][0]["shape"] == [4, 1, 8, 8]
    assert_same_weights(dict(loaded.suspect.weights), cnn.state_dict())
    x = torch.rand(10, 64, generator=torch.Generator().manual_seed(3))  # 10 = 4 + 4 + 2 (padded)
    with torch.no_grad():
        want = cnn(x)
    assert torch.allclose(loaded.suspect.predict(x), want, atol=1e-5, rtol=0)


def test_it_reads_onnx_external_data_kept_inside_the_model_folder(mlp: MLP, mlp_onnx: Path,
                                                                  tmp_path: Path,
                                                                  scratch: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    model = onnx.load(str(mlp_onnx))
    onnx.save_model(model, str(folder / "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=0)
    assert (folder / "model.onnx.data").stat().st_size > 0
    for source in (folder, zip_folder(folder, tmp_path / "model.zip", prefix="model/")):
        loaded = load(source, scratch)
        assert loaded.format == "onnx"
        assert loaded.details["external_data_bytes"] > 0
        assert_same_weights(dict(loaded.suspect.weights), mlp.state_dict())
        x = torch.rand(5, 64)
        with torch.no_grad():
            assert torch.allclose(loaded.suspect.predict(x), mlp(x), atol=1e-5, rtol=0)


def test_a_bare_onnx_file_reads_data_beside_it_only_when_allowed(mlp: MLP, mlp_onnx: Path,
                                                                 tmp_path: Path,
                                                                 scratch: Path) -> None:
    folder = tmp_path / "local"
    folder.mkdir()
    onnx.save_model(onnx.load(str(mlp_onnx)), str(folder / "m.onnx"), save_as_external_data=True,
                    location="m.data", size_threshold=0)
    with pytest.raises(ModelFormatError, match="received as a single file"):
        load(folder / "m.onnx", scratch)
    loaded = load(folder / "m.onnx", scratch, LoadLimits(onnx_external_data_beside_file=True))
    assert_same_weights(dict(loaded.suspect.weights), mlp.state_dict())


# --- PyTorch state dicts -------------------------------------------------------------------------


def test_it_loads_a_torch_state_dict_through_weights_only_in_a_child(mlp: MLP, tmp_path: Path,
                                                                     scratch: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(mlp.state_dict(), path)
    loaded = load(path, scratch)
    assert loaded.format == "torch-state-dict" and loaded.details["container"] == "zip"
    assert_same_weights(dict(loaded.suspect.weights), mlp.state_dict())


def test_it_unwraps_a_training_checkpoint_and_says_so(mlp: MLP, tmp_path: Path,
                                                      scratch: Path) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": mlp.state_dict(), "epoch": 3, "lr": 1e-3}, path)
    loaded = load(path, scratch)
    assert_same_weights(dict(loaded.suspect.weights), mlp.state_dict())
    assert loaded.warnings == ["used the checkpoint's 'state_dict' entry as the state dict"]


def test_it_loads_a_legacy_torch_save_file(mlp: MLP, tmp_path: Path, scratch: Path) -> None:
    path = tmp_path / "model.bin"
    torch.save(mlp.state_dict(), path, _use_new_zipfile_serialization=False)
    loaded = load(path, scratch)
    assert loaded.details["container"] == "legacy pickle"
    assert_same_weights(dict(loaded.suspect.weights), mlp.state_dict())


# --- PEFT adapters -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A real LoRA adapter saved by the peft library on a tiny MLP."""
    import peft

    torch.manual_seed(4)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["fc1", "fc2"],
                             init_lora_weights=False)
    model = peft.get_peft_model(MLP(hidden=16), config)
    folder = tmp_path_factory.mktemp("peft") / "adapter"
    model.save_pretrained(str(folder))
    from safetensors.torch import load_file

    return folder, load_file(folder / "adapter_model.safetensors")


def test_it_loads_a_real_peft_lora_adapter_folder(adapter: tuple[Path, dict], scratch: Path) -> None:
    folder, tensors = adapter
    loaded = load(folder, scratch)
    assert loaded.format == "peft-adapter"
    assert_same_weights(dict(loaded.suspect.weights), tensors)
    assert "base_model.model.fc1.lora_A.weight" in loaded.suspect.weights
    cfg = loaded.details["adapter"]
    assert (cfg["peft_type"], cfg["r"], cfg["lora_alpha"]) == ("LORA", 4, 8)
    assert sorted(cfg["target_modules"]) == ["fc1", "fc2"]
    assert "base_model_name_or_path" in cfg


def test_it_loads_a_peft_adapter_from_a_zip_or_a_tar(adapter: tuple[Path, dict], tmp_path: Path,
                                                     scratch: Path) -> None:
    folder, tensors = adapter
    tar_path = tmp_path / "adapter.tar"
    with tarfile.open(tar_path, "w") as tf:
        tf.add(folder, arcname="adapter")
    for path in (zip_folder(folder, tmp_path / "adapter.zip"), tar_path):
        loaded = load(path, scratch)
        assert loaded.format == "peft-adapter"
        assert_same_weights(dict(loaded.suspect.weights), tensors)
        assert loaded.details["archive"]["members"] >= 2


# --- bundles -------------------------------------------------------------------------------------


def test_it_loads_a_bundle_of_weights_and_a_runnable_onnx(mlp: MLP, mlp_onnx: Path,
                                                          tmp_path: Path, scratch: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("suspect/model.onnx", mlp_onnx.read_bytes())
        zf.writestr("suspect/weights.safetensors",
                    __import__("safetensors.torch").torch.save(mlp.state_dict()))
        zf.writestr("suspect/README.md", "a stolen copy")
    path = tmp_path / "bundle.zip"
    path.write_bytes(buf.getvalue())
    loaded = load(path, scratch)
    assert loaded.format == "bundle" and loaded.warnings == []
    assert loaded.details["consistency"] == {"compared": 6, "max_abs_diff": 0.0}
    assert loaded.details["files"] == ["README.md", "model.onnx", "weights.safetensors"]
    s = loaded.suspect
    assert_same_weights(dict(s.weights), mlp.state_dict())
    x = torch.rand(20, 64)
    with torch.no_grad():
        assert torch.allclose(s.predict(x), mlp(x), atol=1e-5, rtol=0)
