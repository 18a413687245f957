"""Hostile archives and adapter folders: path traversal, links, devices, bombs, lies.

Each archive is built at test time; each refusal names the member and the fix, and leaves the
scratch folder empty (nothing unpacked survives) and nothing written outside it.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save, save_file

from tests.hostile.loopback import files_under
from tests.hostile.test_hostile_files import tiny_onnx
from verifier.models import LoadLimits, ModelFormatError, load_suspect

DEFAULTS = LoadLimits()
WEIGHTS = save({"w": torch.arange(12, dtype=torch.float32).reshape(4, 3)})


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    d = tmp_path / "scratch"
    d.mkdir()
    return d


def refuse(path: Path, scratch: Path, *phrases: str, limits: LoadLimits = DEFAULTS) -> str:
    with pytest.raises(ModelFormatError) as err:
        load_suspect(path, limits, scratch_dir=scratch)
    message = str(err.value)
    for phrase in phrases:
        assert phrase in message, message
    assert files_under(scratch) == [] and os.listdir(scratch) == []
    return message


def make_zip(path: Path, members: dict[str, bytes], *, compression: int = zipfile.ZIP_STORED,
             modes: dict[str, int] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = compression
            info.external_attr = (modes or {}).get(name, 0o100644) << 16
            zf.writestr(info, data)
    return path


def make_tar(path: Path, members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> Path:
    with tarfile.open(path, "w") as tf:
        for m in members:
            payload = (data or {}).get(m.name)
            if payload is not None:
                m.size = len(payload)
            tf.addfile(m, io.BytesIO(payload) if payload is not None else None)
    return path


def reg(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


# --- zip ----------------------------------------------------------------------------------------


def test_it_refuses_a_zip_with_a_dotdot_member(tmp_path: Path, scratch: Path) -> None:
    path = make_zip(tmp_path / "m.zip", {"model.safetensors": WEIGHTS, "../evil.txt": b"x"})
    refuse(path, scratch, "'../evil.txt'", "leaves its folder", "zip -r")
    assert not (tmp_path / "evil.txt").exists() and not (scratch.parent / "evil.txt").exists()


def test_it_refuses_a_zip_with_an_absolute_member(tmp_path: Path, scratch: Path) -> None:
    path = make_zip(tmp_path / "m.zip", {"model.safetensors": WEIGHTS,
                                         f"{tmp_path}/planted.txt": b"x"})
    refuse(path, scratch, "is an absolute path")
    assert not (tmp_path / "planted.txt").exists()


def test_it_refuses_a_zip_with_a_backslash_traversal(tmp_path: Path, scratch: Path) -> None:
    path = make_zip(tmp_path / "m.zip", {"..\\..\\evil.txt": b"x"})
    refuse(path, scratch, "a backslash")


def test_it_refuses_a_zip_bomb_by_its_compression_ratio(tmp_path: Path, scratch: Path) -> None:
    path = make_zip(tmp_path / "bomb.zip", {"model.safetensors": b"\0" * (64 << 20)},
                    compression=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 1 << 20
    refuse(path, scratch, "the mark of a zip bomb")


def test_it_refuses_a_zip_that_expands_past_the_cap(tmp_path: Path, scratch: Path) -> None:
    noise = np.random.default_rng(3).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    path = make_zip(tmp_path / "big.zip", {"a.bin": noise, "b.bin": noise},
                    compression=zipfile.ZIP_DEFLATED)
    refuse(path, scratch, "expands to more than 500000 bytes",
           limits=LoadLimits(max_expanded_bytes=500_000))


def test_it_refuses_a_zip_member_that_lies_about_its_size(tmp_path: Path, scratch: Path) -> None:
    path = make_zip(tmp_path / "liar.zip", {"model.safetensors": WEIGHTS})
    raw = bytearray(path.read_bytes())
    # shrink the declared uncompressed size in the central directory and the local header
    true_size = len(WEIGHTS).to_bytes(4, "little")
    fake = (10).to_bytes(4, "little")
    assert raw.count(true_size) >= 2
    path.write_bytes(bytes(raw).replace(true_size, fake))
    refuse(path, scratch, "'model.safetensors' is corrupt")


def test_it_refuses_a_zip_whose_entries_share_their_data(tmp_path: Path, scratch: Path) -> None:
    path = make_zip(tmp_path / "overlap.zip", {"a.safetensors": WEIGHTS, "b.txt": b"x" * 10})
    raw = bytearray(path.read_bytes())
    # point the second central-directory entry at the first entry's local header
    cd = raw.rfind(b"PK\x01\x02")
    raw[cd + 42:cd + 46] = (0).to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    refuse(path, scratch, "overlap")


def test_it_refuses_a_zip_with_a_symlink_member(tmp_path: Path, scratch: Path) -> None:
    path = make_zip(tmp_path / "m.zip", {"model.safetensors": b"/etc/passwd"},
                    modes={"model.safetensors": 0o120777})
    refuse(path, scratch, "is a symbolic link")


def test_it_refuses_a_zip_with_a_device_member(tmp_path: Path, scratch: Path) -> None:
    path = make_zip(tmp_path / "m.zip", {"dev": b""}, modes={"dev": 0o020644})
    refuse(path, scratch, "special file")


def test_it_refuses_a_zip_with_duplicate_members(tmp_path: Path, scratch: Path) -> None:
    path = tmp_path / "dup.zip"
    with zipfile.ZipFile(path, "w") as zf, pytest.warns(UserWarning):
        zf.writestr("model.safetensors", WEIGHTS)
        zf.writestr("model.safetensors", WEIGHTS)
    refuse(path, scratch, "appears twice")


def test_it_refuses_a_zip_with_too_many_members(tmp_path: Path, scratch: Path) -> None:
    path = make_zip(tmp_path / "many.zip", {f"f{i}.txt": b"" for i in range(30)})
    refuse(path, scratch, "more than 20 entries", limits=LoadLimits(max_archive_members=20))


def test_it_refuses_an_encrypted_zip_member(tmp_path: Path, scratch: Path) -> None:
    path = make_zip(tmp_path / "enc.zip", {"model.safetensors": WEIGHTS})
    raw = bytearray(path.read_bytes())
    for sig, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = raw.find(sig)
        raw[at + flag_at] |= 0x1
    path.write_bytes(bytes(raw))
    refuse(path, scratch, "is encrypted")


def test_it_refuses_a_zip_whose_model_is_a_pickle(tmp_path: Path, scratch: Path) -> None:
    buf = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buf)
    path = make_zip(tmp_path / "m.zip", {"model/pytorch_model.bin": buf.getvalue()})
    refuse(path, scratch, "pickled weights are refused inside archives")


def test_it_refuses_a_zip_with_nothing_to_load(tmp_path: Path, scratch: Path) -> None:
    path = make_zip(tmp_path / "m.zip", {"README.md": b"hello"})
    refuse(path, scratch, "no safetensors weights, ONNX model or PEFT adapter", "README.md")


def test_it_refuses_onnx_external_data_escaping_an_unpacked_zip(tmp_path: Path,
                                                                scratch: Path) -> None:
    model = tiny_onnx(tmp_path / "src", "../../../../etc/passwd")
    path = make_zip(tmp_path / "m.zip", {"model/model.onnx": model.read_bytes()})
    refuse(path, scratch, "'../../../../etc/passwd'", "leaves its folder")


# --- tar ----------------------------------------------------------------------------------------


def test_it_refuses_a_tar_with_a_symlink(tmp_path: Path, scratch: Path) -> None:
    link = reg("model/model.safetensors")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    path = make_tar(tmp_path / "m.tar", [link])
    refuse(path, scratch, "is a symbolic link", "links and special files are refused")


def test_it_refuses_a_tar_with_a_hardlink(tmp_path: Path, scratch: Path) -> None:
    link = reg("model/model.safetensors")
    link.type, link.linkname = tarfile.LNKTYPE, "/etc/passwd"
    path = make_tar(tmp_path / "m.tar", [link])
    refuse(path, scratch, "is a hard link")


@pytest.mark.parametrize("kind,phrase", [(tarfile.CHRTYPE, "a device"), (tarfile.BLKTYPE, "a device"),
                                         (tarfile.FIFOTYPE, "a pipe")])
def test_it_refuses_a_tar_with_a_device_or_pipe(tmp_path: Path, scratch: Path, kind: bytes,
                                                phrase: str) -> None:
    dev = reg("model/dev")
    dev.type = kind
    path = make_tar(tmp_path / "m.tar", [dev])
    refuse(path, scratch, phrase)


def test_it_refuses_a_tar_with_a_dotdot_member(tmp_path: Path, scratch: Path) -> None:
    path = make_tar(tmp_path / "m.tar", [reg("model/../../evil.txt")],
                    {"model/../../evil.txt": b"x"})
    refuse(path, scratch, "leaves its folder")
    assert not (tmp_path / "evil.txt").exists()


def test_it_refuses_a_tar_with_an_absolute_member(tmp_path: Path, scratch: Path) -> None:
    name = f"{tmp_path}/planted.txt"
    path = make_tar(tmp_path / "m.tar", [reg(name)], {name: b"x"})
    refuse(path, scratch, "is an absolute path")
    assert not (tmp_path / "planted.txt").exists()


def test_it_refuses_a_tar_that_expands_past_the_cap(tmp_path: Path, scratch: Path) -> None:
    path = make_tar(tmp_path / "m.tar", [reg("a.bin"), reg("b.bin")],
                    {"a.bin": b"\0" * 60_000, "b.bin": b"\0" * 60_000})
    refuse(path, scratch, "expands to more than 100000 bytes",
           limits=LoadLimits(max_expanded_bytes=100_000))


def test_it_refuses_a_truncated_tar(tmp_path: Path, scratch: Path) -> None:
    path = make_tar(tmp_path / "m.tar", [reg("model.safetensors")], {"model.safetensors": WEIGHTS})
    path.write_bytes(path.read_bytes()[:700])
    refuse(path, scratch, "is corrupt", "unexpected end of data")


# --- adapters and bundles -----------------------------------------------------------------------


def adapter_folder(folder: Path, config: dict | None = None, weights: bytes | None = None) -> Path:
    folder.mkdir(parents=True)
    cfg = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["fc1"],
           "base_model_name_or_path": "digits-mlp"}
    (folder / "adapter_config.json").write_text(json.dumps(config if config is not None else cfg))
    lora = {"base_model.model.fc1.lora_A.weight": torch.ones(4, 64),
            "base_model.model.fc1.lora_B.weight": torch.zeros(16, 4)}
    if weights is None:
        save_file(lora, folder / "adapter_model.safetensors")
    else:
        (folder / "adapter_model.safetensors").write_bytes(weights)
    return folder


def test_it_refuses_a_symlink_in_an_adapter_folder(tmp_path: Path, scratch: Path) -> None:
    folder = adapter_folder(tmp_path / "adapter")
    (folder / "adapter_model.safetensors").unlink()
    (folder / "adapter_model.safetensors").symlink_to("/etc/passwd")
    refuse(folder, scratch, "symbolic link", "copy the file itself")


def test_it_refuses_an_adapter_with_only_a_pickled_bin(tmp_path: Path, scratch: Path) -> None:
    folder = adapter_folder(tmp_path / "adapter")
    (folder / "adapter_model.safetensors").rename(folder / "adapter_model.bin")
    refuse(folder, scratch, "no adapter_model.safetensors", "adapter_model.bin is a pickle")


@pytest.mark.parametrize("config,phrase", [
    ({"peft_type": "PREFIX_TUNING", "r": 4, "lora_alpha": 8}, "LoRA adapters only"),
    ({"peft_type": "LORA", "r": 0, "lora_alpha": 8}, "positive integer rank"),
    ({"peft_type": "LORA", "r": 4, "lora_alpha": "8"}, "positive integer rank"),
    ({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": [1]}, "target_modules"),
    ([], "not an object"),
])
def test_it_refuses_an_invalid_adapter_config(tmp_path: Path, scratch: Path, config: object,
                                              phrase: str) -> None:
    folder = adapter_folder(tmp_path / "adapter", config)  # type: ignore[arg-type]
    refuse(folder, scratch, phrase)


def test_it_refuses_an_adapter_without_lora_tensors(tmp_path: Path, scratch: Path) -> None:
    folder = adapter_folder(tmp_path / "adapter", weights=save({"fc1.weight": torch.ones(2)}))
    refuse(folder, scratch, "no lora_A / lora_B tensors")


def test_it_refuses_a_bundle_whose_onnx_contradicts_its_weights(tmp_path: Path,
                                                                 scratch: Path) -> None:
    model = tiny_onnx(tmp_path / "src")
    other = save({"w": torch.zeros(4, 3)})
    path = make_zip(tmp_path / "bundle.zip", {"model.onnx": model.read_bytes(),
                                              "model.safetensors": other})
    refuse(path, scratch, "disagree on 'w'", "export both from the same model")
