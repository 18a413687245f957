"""verifier.keyfile: deterministic safetensors key blobs."""
from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from verifier import keyfile
from verifier.keyfile import KeyFormatError


def _tensors() -> dict[str, torch.Tensor]:
    return {"b": torch.arange(6, dtype=torch.int64).reshape(2, 3),
            "a": torch.linspace(-1, 1, 5),
            "mask": torch.tensor([True, False, True])}


def test_it_writes_the_same_bytes_for_the_same_key() -> None:
    assert keyfile.dump("uchida", _tensors(), {"T": 3, "x": [1, 2]}) == \
        keyfile.dump("uchida", _tensors(), {"T": 3, "x": [1, 2]})


def test_its_bytes_do_not_depend_on_insertion_order() -> None:
    t = _tensors()
    reordered = {k: t[k] for k in reversed(list(t))}
    assert keyfile.dump("uchida", t, {"T": 3, "z": 1}) == keyfile.dump("uchida", reordered, {"z": 1, "T": 3})


def test_it_writes_different_bytes_for_different_contents() -> None:
    t = _tensors()
    other = dict(t, a=t["a"] + 1e-6)
    assert keyfile.dump("uchida", t, {}) != keyfile.dump("uchida", other, {})
    assert keyfile.dump("uchida", t, {"T": 3}) != keyfile.dump("uchida", t, {"T": 4})


def test_it_round_trips_tensors_metadata_and_scheme() -> None:
    blob = keyfile.dump("trigger_set", _tensors(), {"classes": 10, "eps": 0.25})
    scheme, tensors, meta = keyfile.load(blob, "trigger_set")
    assert scheme == "trigger_set" and keyfile.scheme_of(blob) == "trigger_set"
    assert meta == {"classes": 10, "eps": 0.25}
    for name, t in _tensors().items():
        assert tensors[name].dtype == t.dtype and torch.equal(tensors[name], t)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16,
                                   torch.int64, torch.int32, torch.int16, torch.int8,
                                   torch.uint8, torch.bool])
def test_it_round_trips_every_supported_dtype(dtype: torch.dtype) -> None:
    t = (torch.arange(12) % 3).to(dtype).reshape(3, 4)
    _, tensors, _ = keyfile.load(keyfile.dump("uchida", {"t": t}, {}))
    assert tensors["t"].dtype == dtype and torch.equal(tensors["t"], t)


def test_its_blobs_are_valid_safetensors_with_an_aligned_header() -> None:
    blob = keyfile.dump("uchida", _tensors(), {"T": 3})
    (n,) = struct.unpack("<Q", blob[:8])
    assert n % 8 == 0
    header = json.loads(blob[8:8 + n])
    assert header["__metadata__"]["hallmark_scheme"] == "uchida"
    assert set(st_load(blob)) == set(_tensors())


def test_it_refuses_a_key_of_another_scheme_naming_both() -> None:
    blob = keyfile.dump("lsb", _tensors(), {})
    with pytest.raises(KeyFormatError, match="`lsb`, expected `uchida`"):
        keyfile.load(blob, "uchida")


@pytest.mark.parametrize("blob", [b"", b"garbage", b"\xff" * 64, struct.pack("<Q", 10**9) + b"{}"])
def test_it_refuses_garbage_bytes(blob: bytes) -> None:
    with pytest.raises(KeyFormatError, match="not a Hallmark watermark key"):
        keyfile.load(blob)


def test_it_refuses_a_truncated_blob() -> None:
    blob = keyfile.dump("uchida", _tensors(), {"T": 3})
    with pytest.raises(KeyFormatError, match="not a Hallmark watermark key"):
        keyfile.load(blob[:-4])


def test_it_refuses_a_safetensors_file_without_hallmark_metadata() -> None:
    with pytest.raises(KeyFormatError, match="not a Hallmark watermark key"):
        keyfile.load(st_save({"a": torch.zeros(2)}))


def test_it_refuses_metadata_that_is_not_json() -> None:
    blob = st_save({"a": torch.zeros(2)}, metadata={"hallmark_scheme": "uchida", "meta": "{oops"})
    with pytest.raises(KeyFormatError, match="not a Hallmark watermark key"):
        keyfile.load(blob)


def test_it_refuses_to_write_an_unsupported_dtype() -> None:
    with pytest.raises(KeyFormatError, match="key tensor `c` has unsupported dtype"):
        keyfile.dump("uchida", {"c": torch.zeros(2, dtype=torch.complex64)}, {})


def test_it_refuses_a_blob_over_the_size_cap_before_parsing_it() -> None:
    with pytest.raises(KeyFormatError, match="over the"):
        keyfile.load(bytes(keyfile.MAX_KEY_BYTES + 1))
