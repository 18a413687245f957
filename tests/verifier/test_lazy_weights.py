"""A loaded safetensors suspect's weights are a lazy mapping: names from the validated header,
each tensor mapped and scanned for NaN/Inf the first time a test reads it."""
from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from verifier.models import load_suspect
from verifier.models.loaded import MAX_WARNINGS
from verifier.schemes.lsb.positions import draw_positions, layout_of, masked_digest
from verifier.suspect import Suspect

torch.set_num_threads(1)  # the machine is shared: keep each test module on one core


def _save(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    path = tmp_path / "w.safetensors"
    save_file(tensors, path)
    return path


def test_names_order_and_membership_come_from_the_header_without_reading_tensors(tmp_path):
    nan = torch.full((3,), float("nan"))
    loaded = load_suspect(_save(tmp_path, {"b": nan, "a": torch.ones(2), "c": torch.zeros(1)}))
    w = loaded.suspect.weights
    assert (sorted(w), len(w), "a" in w, "zz" in w) == (["a", "b", "c"], 3, True, False)
    assert loaded.details["parameters"] == 6
    assert loaded.warnings == []  # nothing read yet: no tensor was scanned
    with pytest.raises(KeyError):
        w["zz"]


def test_a_nan_or_inf_warning_names_each_tensor_a_test_read_with_exact_counts(tmp_path):
    bad = torch.ones(4, 4)
    bad[0, :3] = float("nan")
    bad[1, 0] = float("-inf")
    loaded = load_suspect(_save(tmp_path, {"fc1.weight": bad, "fc2.weight": bad.clone(),
                                           "fc1.bias": torch.zeros(4)}))
    w = loaded.suspect.weights
    assert float(w["fc1.bias"].sum()) == 0 and loaded.warnings == []
    assert int(torch.isnan(w["fc1.weight"]).sum()) == 3
    w["fc1.weight"]  # a second read does not warn twice
    assert loaded.warnings == ["tensor 'fc1.weight' has 3 NaN values",
                               "tensor 'fc1.weight' has 1 infinite values"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64,
                                   torch.float8_e4m3fn])
def test_nan_values_are_counted_in_every_float_dtype(tmp_path, dtype):
    t = torch.zeros(10, dtype=torch.float32)
    t[2] = t[7] = float("nan")
    loaded = load_suspect(_save(tmp_path, {"t": t.to(dtype)}))
    loaded.suspect.weights["t"]
    assert loaded.warnings == ["tensor 't' has 2 NaN values"]


def test_finite_weights_whose_sum_overflows_are_not_reported(tmp_path):
    huge = torch.full((1000,), 3e38)  # each value is finite; their float32 sum is not
    loaded = load_suspect(_save(tmp_path, {"huge": huge, "int": torch.arange(5)}))
    assert bool(torch.isfinite(loaded.suspect.weights["huge"]).all())
    loaded.suspect.weights["int"]
    assert loaded.warnings == []


def test_past_the_cap_one_summary_line_counts_the_other_tensors(tmp_path):
    n = MAX_WARNINGS + 3
    loaded = load_suspect(_save(tmp_path, {f"t{i:03d}": torch.full((2,), float("nan"))
                                           for i in range(n)}))
    for name in loaded.suspect.weights:
        loaded.suspect.weights[name]
    assert len(loaded.warnings) == MAX_WARNINGS + 1
    assert loaded.warnings[-1] == "... and 3 more tensors with NaN or infinite values"


def test_a_suspect_keeps_the_mapping_it_was_given(tmp_path):
    loaded = load_suspect(_save(tmp_path, {"w": torch.ones(2)}))
    weights = loaded.suspect.weights
    assert Suspect.from_weights(weights).weights is weights
    assert loaded.suspect.fresh().weights is weights


def _reference_digest(weights, layout, positions, k: int) -> bytes:
    """The masked digest as specified: whole tensors copied, masked, then hashed."""
    h = hashlib.sha256(b"hallmark/lsb/masked/v1")
    for name, shape in layout:
        h.update(struct.pack(">I", len(name)) + name.encode())
        t = weights.get(name)
        if t is None or tuple(t.shape) != shape:
            h.update(b"\x00absent")
            continue
        ints = t.to(torch.float32).contiguous().view(torch.int32).flatten().clone()
        ints[torch.tensor([i for n, i in positions if n == name], dtype=torch.int64)] &= ~((1 << k) - 1)
        data = ints.numpy().astype("<i4").tobytes()
        h.update(struct.pack(">I", len(shape)) + b"".join(struct.pack(">Q", d) for d in shape))
        h.update(struct.pack(">Q", len(data)) + data)
    return h.digest()


@pytest.mark.parametrize("k", [1, 4])
def test_the_masked_digest_read_from_the_memory_map_matches_its_specification(tmp_path, k):
    g = torch.Generator().manual_seed(0)
    model = {"a": torch.randn(300, 70, generator=g), "b": torch.randn(5000, generator=g),
             "c": torch.randn(7, generator=g)}
    layout = layout_of(model)
    positions = draw_positions(bytes(32), layout, 900)
    mapped = load_suspect(_save(tmp_path, model)).suspect.weights
    expected = _reference_digest(model, layout, positions, k)
    assert masked_digest(mapped, layout, positions, k) == expected
    assert masked_digest(model, layout, positions, k) == expected
    assert masked_digest({**model, "b": model["b"] + 1}, layout, positions, k) != expected
    # an fp16 copy, a transposed (non-contiguous) tensor, a missing one, another shape
    # an fp16 copy, a strided (non-contiguous) view, a tensor of another shape, a missing one
    odd = {"a": model["a"].half(), "b": torch.randn(10000, generator=g)[::2],
           "c": torch.randn(8, generator=g)}
    assert not odd["b"].is_contiguous()
    assert masked_digest(odd, layout, positions, k) == _reference_digest(odd, layout, positions, k)
    assert masked_digest({"a": model["a"]}, layout, positions, k) == _reference_digest(
        {"a": model["a"]}, layout, positions, k)


def test_uchida_reads_only_its_layer(tmp_path):
    from verifier.schemes import uchida

    g = torch.Generator().manual_seed(1)
    key = uchida.generate_key(uchida.Params(bits=32, layers=("fc1.weight",), shapes=((8, 64),)),
                              seed=5)
    poisoned = torch.full((64, 64), float("nan"))  # a layer no uchida test should read
    loaded = load_suspect(_save(tmp_path, {"fc1.weight": torch.randn(8, 64, generator=g),
                                           "fc2.weight": poisoned}))
    r = uchida.test(loaded.suspect, key)
    assert r.applicable and r.n == 32
    assert loaded.warnings == []  # fc2.weight was never read, so never scanned
