"""Hostile single files and folders: each is built at test time, refused with a clear message,
and leaves nothing behind (no code ran, no scratch files)."""
from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from safetensors.torch import save_file

from tests.hostile.loopback import files_under
from verifier.models import LoadLimits, ModelFormatError, load_suspect
from verifier.toy import MLP

DEFAULTS = LoadLimits()


class MakeDir:
    """A payload whose unpickling would create `path` (a marker proving code ran)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.path),))


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    d = tmp_path / "scratch"
    d.mkdir()
    return d


def refuse(path: Path, scratch: Path, *phrases: str, limits: LoadLimits = DEFAULTS) -> str:
    """Assert load_suspect refuses `path` with every phrase in its message and leaves no files."""
    with pytest.raises(ModelFormatError) as err:
        load_suspect(path, limits, scratch_dir=scratch)
    message = str(err.value)
    for phrase in phrases:
        assert phrase in message, message
    assert files_under(scratch) == []
    assert os.listdir(scratch) == []
    return message


def raw_safetensors(path: Path, header: dict | bytes, data: bytes = b"",
                    declared: int | None = None) -> Path:
    """A safetensors-shaped file with any header, data and declared header length."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if declared is None else declared) + raw + data)
    return path


def tiny_onnx(folder: Path, location: str | None = None, name: str = "model.onnx") -> Path:
    """x (n, 4) @ w (4, 3); with `location`, w is stored as external data at that location."""
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    if location is not None:
        t = model.graph.initializer[0]
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        t.external_data.add(key="location", value=location)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(model.SerializeToString())
    return path


# --- pickles: nothing is ever unpickled outside torch.load(weights_only=True) in a child ------


def test_it_refuses_a_raw_pickle_whose_unpickling_would_run_code(tmp_path: Path, scratch: Path) -> None:
    marker = tmp_path / "PWNED"
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(MakeDir(marker), protocol=4))
    refuse(path, scratch, "weights_only=True", "never opened", "safetensors.torch.save_file")
    assert not marker.exists()


def test_it_refuses_a_torch_save_archive_carrying_a_code_running_payload(tmp_path: Path,
                                                                         scratch: Path) -> None:
    marker = tmp_path / "PWNED"
    path = tmp_path / "weights.pt"
    torch.save({"fc1.weight": torch.ones(2, 2), "x": MakeDir(marker)}, path)
    refuse(path, scratch, "refuses", "posix.mkdir", "torch.onnx.export")
    assert not marker.exists()


def test_it_refuses_a_legacy_torch_save_file_carrying_a_code_running_payload(tmp_path: Path,
                                                                            scratch: Path) -> None:
    marker = tmp_path / "PWNED"
    path = tmp_path / "weights.bin"
    torch.save({"x": MakeDir(marker)}, path, _use_new_zipfile_serialization=False)
    refuse(path, scratch, "posix.mkdir", "never opened")
    assert not marker.exists()


def test_it_refuses_a_full_pickle_of_an_nn_module(tmp_path: Path, scratch: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(MLP(8), path)
    refuse(path, scratch, "verifier.toy.MLP", "full pickles are never opened")


def test_it_refuses_a_torchscript_archive_without_loading_it(tmp_path: Path, scratch: Path) -> None:
    path = tmp_path / "model.pt"
    torch.jit.script(MLP(8)).save(str(path))
    refuse(path, scratch, "TorchScript archives are refused", "torch.onnx.export")


def test_it_refuses_a_pickle_that_holds_no_tensors(tmp_path: Path, scratch: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save([1, 2, 3], path)
    refuse(path, scratch, "does not hold a state dict", "list")


def test_it_stops_a_torch_load_that_takes_too_long(tmp_path: Path, scratch: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(MLP(8).state_dict(), path)
    refuse(path, scratch, "took longer than 0.05 s", limits=LoadLimits(torch_wall_seconds=0.05))


# --- safetensors headers ------------------------------------------------------------------------


def test_it_refuses_a_safetensors_header_length_past_the_end(tmp_path: Path, scratch: Path) -> None:
    path = raw_safetensors(tmp_path / "w.safetensors", {"w": {"dtype": "F32", "shape": [1],
                                                              "data_offsets": [0, 4]}},
                           b"\0" * 4, declared=10_000)
    refuse(path, scratch, "10000-byte safetensors header, past the end")


def test_it_refuses_overlapping_offsets(tmp_path: Path, scratch: Path) -> None:
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}
    path = raw_safetensors(tmp_path / "w.safetensors", header, b"\0" * 12)
    refuse(path, scratch, "overlaps tensor 'a'", "without overlap")


def test_it_refuses_a_gap_between_tensors(tmp_path: Path, scratch: Path) -> None:
    header = {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
              "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}
    path = raw_safetensors(tmp_path / "w.safetensors", header, b"\0" * 12)
    refuse(path, scratch, "bytes 4-8 of the data buffer belong to no tensor")


def test_it_refuses_bytes_after_the_last_tensor(tmp_path: Path, scratch: Path) -> None:
    header = {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    path = raw_safetensors(tmp_path / "w.safetensors", header, b"\0" * 4 + b"polyglot tail")
    refuse(path, scratch, "the tensors cover 4 bytes but the data buffer holds 17")


def test_it_refuses_a_header_over_100_mb(tmp_path: Path, scratch: Path) -> None:
    path = tmp_path / "big.safetensors"
    declared = 100_000_001
    with open(path, "wb") as f:  # sparse: the header length is within the file, nothing written
        f.write(struct.pack("<Q", declared) + b"{")
        f.truncate(8 + declared)
    refuse(path, scratch, "100000001-byte safetensors header, over the 100000000-byte cap")


def test_it_refuses_a_dtype_and_shape_that_do_not_match_the_byte_count(tmp_path: Path,
                                                                      scratch: Path) -> None:
    header = {"w": {"dtype": "F32", "shape": [3, 3], "data_offsets": [0, 12]}}
    path = raw_safetensors(tmp_path / "w.safetensors", header, b"\0" * 12)
    refuse(path, scratch, "F32 with shape [3, 3], which needs 36 bytes", "span 12")


def test_it_refuses_an_unknown_dtype(tmp_path: Path, scratch: Path) -> None:
    header = {"w": {"dtype": "OBJECT", "shape": [1], "data_offsets": [0, 8]}}
    path = raw_safetensors(tmp_path / "w.safetensors", header, b"\0" * 8)
    refuse(path, scratch, "unknown dtype 'OBJECT'")


@pytest.mark.parametrize("shape", [[-1], [1.5], [True], "4", [[2]]])
def test_it_refuses_a_shape_that_is_not_a_list_of_non_negative_integers(tmp_path: Path,
                                                                        scratch: Path,
                                                                        shape: object) -> None:
    header = {"w": {"dtype": "U8", "shape": shape, "data_offsets": [0, 0]}}
    path = raw_safetensors(tmp_path / "w.safetensors", header)
    refuse(path, scratch, "a shape is a list of non-negative integers")


def test_it_refuses_duplicate_tensor_names(tmp_path: Path, scratch: Path) -> None:
    raw = (b'{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
           b'"w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}')
    path = raw_safetensors(tmp_path / "w.safetensors", raw, b"\0\0")
    refuse(path, scratch, "repeats the key 'w'")


@pytest.mark.parametrize("raw,phrase", [
    (b"{not json}", "is not valid JSON"),
    (b'{"a": NaN}', "non-JSON value NaN"),
    (b"{\xff\xfe}", "is not UTF-8"),
    (b'{"w": [1, 2]}', "must have exactly dtype, shape and data_offsets"),
    (b'{"__metadata__": {"k": 1}}', "not a string-to-string map"),
])
def test_it_refuses_a_header_that_is_not_a_valid_json_object(tmp_path: Path, scratch: Path,
                                                             raw: bytes, phrase: str) -> None:
    path = raw_safetensors(tmp_path / "w.safetensors", raw)
    refuse(path, scratch, phrase)


def test_it_refuses_a_deeply_nested_header(tmp_path: Path, scratch: Path) -> None:
    path = raw_safetensors(tmp_path / "w.safetensors", b"{" + b'"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    refuse(path, scratch, "nested too deeply")


def test_it_refuses_more_tensors_than_the_cap(tmp_path: Path, scratch: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file({f"t{i}": torch.zeros(1) for i in range(4)}, path)
    refuse(path, scratch, "holds 4 tensors, over the cap of 3", limits=LoadLimits(max_tensors=3))


def test_it_accepts_nan_and_inf_weights_and_reports_them(tmp_path: Path, scratch: Path) -> None:
    w = torch.ones(4, 4)
    w[0, :3] = float("nan")
    w[1, 0] = float("inf")
    path = tmp_path / "w.safetensors"
    save_file({"fc1.weight": w, "fc1.bias": torch.zeros(4)}, path)
    loaded = load_suspect(path, scratch_dir=scratch)
    assert torch.isnan(loaded.suspect.weights["fc1.weight"]).sum() == 3
    # reported for the tensors read (a safetensors suspect is scanned lazily)
    assert loaded.warnings == ["tensor 'fc1.weight' has 3 NaN values",
                               "tensor 'fc1.weight' has 1 infinite values"]
    assert files_under(scratch) == []


# --- not a model at all -------------------------------------------------------------------------


def test_it_refuses_an_empty_file(tmp_path: Path, scratch: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"")
    refuse(path, scratch, "empty file (0 bytes)")


def test_it_refuses_random_bytes_whatever_the_extension(tmp_path: Path, scratch: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes()
                     .replace(b"\x08", b"\x09", 1))
    refuse(path, scratch, "not a recognized model format", "send safetensors weights")


def test_it_refuses_bytes_that_only_look_like_onnx(tmp_path: Path, scratch: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x07" + b"\xff" * 64)
    refuse(path, scratch, "is not a valid ONNX model")


def test_it_refuses_a_gzip_file(tmp_path: Path, scratch: Path) -> None:
    import gzip

    path = tmp_path / "model.safetensors.gz"
    path.write_bytes(gzip.compress(b"\0" * 1000))
    refuse(path, scratch, "gzip-compressed", "uncompressed .tar")


def test_it_refuses_a_device_file(scratch: Path) -> None:
    refuse(Path("/dev/zero"), scratch, "not a regular file")


def test_it_refuses_a_file_over_the_size_cap(tmp_path: Path, scratch: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(64)}, path)
    refuse(path, scratch, "over the cap of 100 bytes", limits=LoadLimits(max_file_bytes=100))


# --- ONNX external data -------------------------------------------------------------------------


def test_it_refuses_onnx_external_data_at_dotdot_etc_passwd(tmp_path: Path, scratch: Path) -> None:
    folder = tmp_path / "a" / "b" / "model"
    tiny_onnx(folder, "../../etc/passwd")
    refuse(folder, scratch, "'../../etc/passwd'", "leaves its folder")


def test_it_refuses_onnx_external_data_at_an_absolute_path(tmp_path: Path, scratch: Path) -> None:
    folder = tmp_path / "model"
    tiny_onnx(folder, "/etc/passwd")
    refuse(folder, scratch, "'/etc/passwd'", "is an absolute path")


def test_it_refuses_onnx_external_data_through_a_symlink(tmp_path: Path, scratch: Path) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\0" * 48)
    folder = tmp_path / "model"
    tiny_onnx(folder, "w.bin")
    (folder / "w.bin").symlink_to(secret)
    refuse(folder, scratch, "symbolic link")


def test_it_refuses_onnx_external_data_that_is_a_hardlink(tmp_path: Path, scratch: Path) -> None:
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"\0" * 48)
    folder = tmp_path / "model"
    model = tiny_onnx(folder, "w.bin")
    os.link(outside, folder / "w.bin")
    refuse(folder, scratch, "hard link")
    with pytest.raises(ModelFormatError, match="hardlink or special file"):  # the ONNX check alone
        load_suspect(model, LoadLimits(onnx_external_data_beside_file=True), scratch_dir=scratch)


def test_it_refuses_external_data_of_a_bare_onnx_file(tmp_path: Path, scratch: Path) -> None:
    folder = tmp_path / "cache"
    model = tiny_onnx(folder, "w.bin")
    (folder / "w.bin").write_bytes(np.arange(12, dtype=np.float32).tobytes())
    refuse(model, scratch, "received as a single file", ".zip or .tar")


def test_it_refuses_external_data_ranges_past_the_end_of_the_file(tmp_path: Path,
                                                                  scratch: Path) -> None:
    folder = tmp_path / "model"
    model_path = tiny_onnx(folder, "w.bin")
    model = onnx.load(str(model_path), load_external_data=False)
    model.graph.initializer[0].external_data.add(key="offset", value="40")
    model_path.write_bytes(model.SerializeToString())
    (folder / "w.bin").write_bytes(b"\0" * 48)
    refuse(folder, scratch, "is 8 bytes but the tensor's type and shape need 48")
    model.graph.initializer[0].external_data.add(key="length", value="48")
    model_path.write_bytes(model.SerializeToString())
    refuse(folder, scratch, "asks for bytes 40-88 of a 48-byte file")


def test_it_refuses_unknown_external_data_fields(tmp_path: Path, scratch: Path) -> None:
    folder = tmp_path / "model"
    model_path = tiny_onnx(folder, "w.bin")
    model = onnx.load(str(model_path), load_external_data=False)
    model.graph.initializer[0].external_data.add(key="basepath", value="/")
    model_path.write_bytes(model.SerializeToString())
    (folder / "w.bin").write_bytes(b"\0" * 48)
    refuse(folder, scratch, "only location, offset, length and checksum are allowed")


def test_it_refuses_a_folder_with_two_models(tmp_path: Path, scratch: Path) -> None:
    folder = tmp_path / "model"
    tiny_onnx(folder, name="a.onnx")
    tiny_onnx(folder, name="b.onnx")
    refuse(folder, scratch, "holds 0 safetensors files and 2 ONNX models")


def test_it_refuses_a_folder_holding_only_pickled_weights(tmp_path: Path, scratch: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    torch.save(MLP(8).state_dict(), folder / "pytorch_model.bin")
    refuse(folder, scratch, "no safetensors weights, ONNX model or PEFT adapter",
           "pickled weights are refused inside archives")
