"""The `seal` scheme on a small MLP: keys, SEAL training, PEFT release, the exact test, R0/R1."""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import statistics
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from verifier import keyfile, toy
from verifier.evaluation import attacks
from verifier.evaluation import seal as seal_eval
from verifier.forgery import WeakKeyError, check_key_strength
from verifier.schemes import available, get, load_key, seal
from verifier.schemes.seal import Params, PassportError, SealSetupError, material
from verifier.schemes.seal import lora as seal_lora
from verifier.schemes.seal import verify as seal_verify
from verifier.suspect import Suspect

torch.set_num_threads(1)

PARAMS = Params(targets=("fc1", "fc2"), r=8, alpha=16.0, bits=64)
SEED = 4242


@pytest.fixture(scope="module")
def split() -> toy.Split:
    return toy.digits(0)


@pytest.fixture(scope="module")
def base(split: toy.Split) -> toy.MLP:
    model = seal_eval.digits_base(split, seed=0, epochs=15)
    seal.register_base(model, PARAMS.targets)
    return model


def _data(split: toy.Split, seed: int, epochs: int = 12) -> list[toy.Batch]:
    return list(toy.batches(split.x_train, split.y_train, seed=seed, epochs=epochs))


@pytest.fixture(scope="module")
def marked(base: toy.MLP, split: toy.Split) -> torch.nn.Module:
    key = seal.generate_key(PARAMS, SEED, model=base)
    return seal.embed(base, key, _data(split, 1))


@pytest.fixture(scope="module")
def key(base: toy.MLP, marked: torch.nn.Module) -> seal.Key:
    return seal.finalize_key(marked, seal.generate_key(PARAMS, SEED, model=base))


@pytest.fixture(scope="module")
def released(marked: torch.nn.Module, key: seal.Key, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return seal.release(marked, key, tmp_path_factory.mktemp("adapter"))


@pytest.fixture(scope="module")
def adapter(released: Path) -> dict[str, torch.Tensor]:
    return load_file(str(released / "adapter_model.safetensors"))


def _forge(key: seal.Key, adapter: dict[str, torch.Tensor],
           passports: dict[str, tuple[torch.Tensor, torch.Tensor]], seed: int) -> seal.Key:
    """A claim built after the fact from the released adapter: B = B′, A = C⁻¹·A′."""
    factors = {}
    for t in key.targets:
        b2 = adapter[f"base_model.model.{t}.lora_B.weight"]
        a2 = adapter[f"base_model.model.{t}.lora_A.weight"]
        factors[t] = (b2, torch.linalg.solve(passports[t][0].double(), a2.double()).float())
    return dataclasses.replace(key, seed=seed, factors=factors, passports=passports)


# ---------------------------------------------------------------- release and attribution

def test_the_released_adapter_is_a_standard_peft_adapter_that_peft_loads(
        released: Path, base: toy.MLP, marked: torch.nn.Module, split: toy.Split) -> None:
    from peft import PeftModel

    assert sorted(p.name for p in released.iterdir() if p.suffix in (".json", ".safetensors")) == [
        "adapter_config.json", "adapter_model.safetensors"]
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), str(released))
    x = split.x_test
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), marked(x), atol=1e-5, rtol=1e-5)
    config = json.loads((released / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"]) == ("LORA", 8, 16)
    assert sorted(config["target_modules"]) == ["fc1", "fc2"]


def test_the_released_adapter_is_attributed_with_p_below_1e_9(
        adapter: dict[str, torch.Tensor], key: seal.Key) -> None:
    result = seal.test(Suspect.from_weights(adapter), key)
    assert result.applicable and result.null == "exact"
    assert result.log10_p < -9
    assert result.n == PARAMS.bits and result.statistic == result.details["matches"]
    assert result.details["form"] == "lora adapter"
    assert result.details["R1"]["pass"] and result.details["R1"]["max_rel_error"] < 1e-4
    assert result.details["passport_alignment"]["corr_C"] > 0.99


def test_the_released_files_show_no_passport(released: Path, adapter: dict[str, torch.Tensor],
                                             key: seal.Key, marked: torch.nn.Module) -> None:
    assert all(name.endswith(("lora_A.weight", "lora_B.weight")) for name in adapter)
    assert not any(tuple(t.shape) == (key.r, key.r) for t in adapter.values())
    assert "passport" not in (released / "adapter_config.json").read_text().lower()
    layers = seal_lora.seal_layers(marked)
    for t in key.targets:
        b_released = adapter[f"base_model.model.{t}.lora_B.weight"]
        assert not torch.allclose(b_released, layers[t].seal_B, atol=1e-3)  # C is absorbed
        for c in key.passports[t]:  # neither passport is recoverable from B′ alone
            assert not torch.allclose(torch.linalg.pinv(layers[t].seal_B) @ b_released, c, atol=1e-2)
    assert "passport" not in " ".join(marked.state_dict())  # not even in the owner's checkpoint


def test_a_merged_model_is_attributed_through_the_registered_base(
        marked: torch.nn.Module, key: seal.Key) -> None:
    merged = seal.merge(marked, key)
    assert isinstance(merged.fc1, torch.nn.Linear)
    result = seal.test(Suspect.from_weights(merged.state_dict()), key)
    assert result.details["form"] == "merged weights"
    assert result.log10_p < -9 and result.details["R1"]["pass"]


def test_a_merged_model_is_not_applicable_when_the_base_is_unknown(
        marked: torch.nn.Module, key: seal.Key) -> None:
    stranger = dataclasses.replace(key, base_digest="0" * 64)
    result = seal.test(Suspect.from_module(seal.merge(marked, key)), stranger)
    assert not result.applicable
    assert "register_base" in result.details["reason"]


def test_the_in_memory_seal_model_and_a_peft_model_are_attributed(
        marked: torch.nn.Module, released: Path, base: toy.MLP, key: seal.Key) -> None:
    from peft import PeftModel

    own = seal.test(Suspect.from_module(marked), key)
    assert own.details["form"] == "seal module" and own.log10_p < -9
    peft_model = PeftModel.from_pretrained(copy.deepcopy(base), str(released))
    theirs = seal.test(Suspect.from_module(peft_model), key)
    assert theirs.details["form"] == "lora adapter" and theirs.log10_p < -9


def test_refactoring_or_padding_the_adapter_rank_changes_nothing(
        adapter: dict[str, torch.Tensor], key: seal.Key) -> None:
    g = torch.Generator().manual_seed(3)
    moved = dict(adapter)
    for t in key.targets:
        b2, a2 = adapter[f"base_model.model.{t}.lora_B.weight"], adapter[f"base_model.model.{t}.lora_A.weight"]
        m = torch.randn(key.r, key.r, generator=g, dtype=torch.float64) + 3 * torch.eye(key.r, dtype=torch.float64)
        b3 = (b2.double() @ m).float()
        a3 = torch.linalg.solve(m, a2.double()).float()
        moved[f"base_model.model.{t}.lora_B.weight"] = torch.cat([b3, torch.randn(b3.shape[0], 2, generator=g)], 1)
        moved[f"base_model.model.{t}.lora_A.weight"] = torch.cat([a3, torch.zeros(2, a3.shape[1])], 0)
    before = seal.test(Suspect.from_weights(adapter), key)
    after = seal.test(Suspect.from_weights(moved), key)
    assert after.statistic == before.statistic and after.details["R1"]["pass"]


def test_the_mark_survives_finetuning_pruning_and_int8_of_the_merged_model(
        marked: torch.nn.Module, key: seal.Key, split: toy.Split) -> None:
    merged = seal.merge(marked, key)
    clean = toy.accuracy(merged, split.x_test, split.y_test)
    for attacked in (attacks.finetune(merged, split, epochs=3, lr=1e-3),
                     attacks.prune_global(merged, 0.5), attacks.quantize_int8(merged)):
        result = seal.test(Suspect.from_module(attacked), key)
        assert toy.accuracy(attacked, split.x_test, split.y_test) > clean - 0.05
        assert result.log10_p < -9
    pruned = seal.test(Suspect.from_module(attacks.prune_global(merged, 0.5)), key)
    assert pruned.details["erased_entries"] > 0
    tuned = seal.test(Suspect.from_module(attacks.finetune(merged, split, epochs=3)), key)
    assert not tuned.details["R1"]["pass"]  # not an unmodified copy, yet attributed


def test_the_adapter_carries_the_task_with_either_passport(
        marked: torch.nn.Module, base: toy.MLP, split: toy.Split) -> None:
    with_c = toy.accuracy(marked, split.x_test, split.y_test)
    seal_lora.set_passport(marked, seal_lora.PASSPORT_P)
    try:
        with_cp = toy.accuracy(marked, split.x_test, split.y_test)
    finally:
        seal_lora.set_passport(marked, seal_lora.PASSPORT)
    without = toy.accuracy(base, split.x_test, split.y_test)
    assert with_c > without + 0.3 and with_cp > without + 0.3


def permuted_and_rescaled(model: torch.nn.Module, seed: int) -> toy.MLP:
    """The same function with every hidden unit permuted and rescaled by a positive factor."""
    g = torch.Generator().manual_seed(seed)
    w = {k: v.clone() for k, v in model.state_dict().items()}
    for layer, nxt in (("fc1", "fc2"), ("fc2", "fc3")):
        n = w[f"{layer}.weight"].shape[0]
        perm, c = torch.randperm(n, generator=g), torch.exp(torch.randn(n, generator=g))
        w[f"{layer}.weight"] = w[f"{layer}.weight"][perm] * c[:, None]
        w[f"{layer}.bias"] = w[f"{layer}.bias"][perm] * c
        w[f"{nxt}.weight"] = w[f"{nxt}.weight"][:, perm] / c[None, :]
    out = toy.MLP()
    out.load_state_dict(w)
    return out


def test_a_merged_copy_with_permuted_and_rescaled_units_is_aligned_and_attributed(
        marked: torch.nn.Module, key: seal.Key, split: toy.Split) -> None:
    merged = seal.merge(marked, key)
    plain = seal.test(Suspect.from_module(merged), key)
    assert plain.details["R1"]["pass"] and not any("aligned" in n for n in plain.details["notes"])
    stolen = permuted_and_rescaled(merged, seed=3)
    assert torch.allclose(stolen(split.x_test), merged(split.x_test), atol=1e-4)  # same function
    result = seal.test(Suspect.from_module(stolen), key)
    # the same evidence up to float32 rounding of w·c (a bit whose projection is ~0 may flip)
    assert result.statistic >= plain.statistic - 2 and result.null == "exact"
    assert result.log10_p < -15
    assert sum("units aligned to the base" in n for n in result.details["notes"]) == 2
    tuned = attacks.finetune(permuted_and_rescaled(merged, seed=4), split, epochs=3, lr=1e-3)
    assert seal.test(Suspect.from_module(tuned), key).log10_p < -9


def test_alignment_reads_only_the_suspect_and_the_base_never_the_key_material(
        marked: torch.nn.Module, key: seal.Key, base: toy.MLP) -> None:
    stolen = permuted_and_rescaled(seal.merge(marked, key), seed=5).state_dict()
    other = seal.generate_key(PARAMS, 31337, model=base)  # other seed: other bits and passports
    mine, _, _ = seal_verify.suspect_updates(stolen, key)
    theirs, _, _ = seal_verify.suspect_updates(stolen, other)
    for t in key.targets:
        assert torch.equal(mine[t].dense(), theirs[t].dense())


def test_an_independent_model_with_permuted_units_still_gets_fair_coin_counts(
        split: toy.Split, base: toy.MLP) -> None:
    other = permuted_and_rescaled(toy.trained(split, 901, epochs=10), seed=1)
    results = [seal.test(Suspect.from_module(other), seal.generate_key(PARAMS, 500 + i, model=base))
               for i in range(20)]
    assert min(r.p_value for r in results) > 1e-4
    assert abs(statistics.mean(r.statistic for r in results) - 32) < 4 * 4 / 20 ** 0.5


# ---------------------------------------------------------------- the null

def test_independent_adapters_get_p_values_that_are_not_small(
        base: toy.MLP, split: toy.Split, key: seal.Key) -> None:
    from scipy import stats

    plain = seal_eval.plain_lora(base, PARAMS.targets, 8, 16.0, _data(split, 7, 6), seed=7)
    other_key = seal.generate_key(PARAMS, 99, model=base)
    other = seal.embed(base, other_key, _data(split, 8, 6))
    suspects = [Suspect.from_module(plain), Suspect.from_module(seal.merge(other, other_key))]
    against_owner = [seal.test(s, key) for s in suspects]
    assert all(r.log10_p > -3 for r in against_owner)
    nulls = [seal.test(s, seal.generate_key(PARAMS, 10_000 + i, model=base)).p_value
             for s in suspects for i in range(60)]
    assert min(nulls) > 1e-4
    assert stats.kstest(nulls, "uniform", alternative="greater").pvalue > 1e-3


def test_the_base_model_itself_gets_p_one_with_a_conservative_null(
        base: toy.MLP, key: seal.Key) -> None:
    result = seal.test(Suspect.from_module(base), key)
    assert result.statistic == 0 and result.p_value == 1.0
    assert result.null == "conservative" and result.details["zero_projections"] == PARAMS.bits


def test_suspects_without_weights_or_targets_are_not_applicable(key: seal.Key) -> None:
    blind = seal.test(Suspect.from_predict(lambda x: x), key)
    assert not blind.applicable
    unrelated = seal.test(Suspect.from_weights({"conv.weight": torch.zeros(3, 3)}), key)
    assert not unrelated.applicable and "not found" in unrelated.details["reason"]
    wrong = seal.test(Suspect.from_weights({"fc1.weight": torch.zeros(5, 5)}), key)
    assert not wrong.applicable and "shape" in wrong.details["reason"]


# ---------------------------------------------------------------- R0 and forgeries

def _edited_blob(key: seal.Key, **tensors: torch.Tensor) -> bytes:
    """The key's blob with some tensors replaced: an edit after generation."""
    _, stored, meta = keyfile.load(key.to_bytes(), "seal")
    return keyfile.dump("seal", {**stored, **{n.replace("__", ":"): t for n, t in tensors.items()}},
                        meta)


def test_the_identity_passport_forgery_cannot_even_be_built(
        adapter: dict[str, torch.Tensor], key: seal.Key) -> None:
    eye = torch.eye(key.r)
    with pytest.raises(keyfile.KeyMaterialError, match="`fc1:C`") as built:
        _forge(key, adapter, {t: (eye, eye) for t in key.targets}, seed=1)
    assert (built.value.field, built.value.scheme) == ("fc1:C", "seal")
    blob = _edited_blob(key, **{f"{t}__{n}": eye for t in key.targets for n in ("C", "C_p")})
    with pytest.raises(keyfile.KeyMaterialError, match="`fc1:C`.*regenerate it"):
        seal.Key.from_bytes(blob)


@pytest.mark.parametrize(("passports", "reason"), [
    (lambda c: (3.0 * torch.eye(c.shape[0]), c), "scaled identity"),
    (lambda c: (torch.diag(torch.tensor([1.0] * (c.shape[0] - 1) + [0.0])) + 0.5 * c.triu(1), c),
     "rank-deficient"),
    (lambda c: (c, 2.0 * c), "multiple of C"),
])
def test_trivial_passports_break_r0_and_are_never_what_a_seed_derives(
        key: seal.Key, passports, reason: str) -> None:
    c = key.passports["fc1"][0]
    bad_c, bad_cp = passports(c)
    assert any(reason in p for p in material.triviality(bad_c, bad_cp))
    field = "fc1:C" if not torch.equal(bad_c, c) else "fc1:C_p"
    with pytest.raises(keyfile.KeyMaterialError, match=f"`{field}`"):
        dataclasses.replace(key, passports={**key.passports, "fc1": (bad_c, bad_cp)})
    with pytest.raises(keyfile.KeyMaterialError, match=f"`{field}`"):
        seal.Key.from_bytes(_edited_blob(key, fc1__C=bad_c, fc1__C_p=bad_cp))


@pytest.mark.parametrize("field", ["fc1:C", "fc1:C_p", "fc2:C", "fc2:C_p"])
def test_a_key_with_one_passport_altered_after_generation_is_refused_naming_it(
        key: seal.Key, field: str) -> None:
    _, stored, _ = keyfile.load(key.to_bytes(), "seal")
    altered = stored[field].clone()
    altered[0, 0] += 1e-3  # one entry, far above float rounding
    with pytest.raises(keyfile.KeyMaterialError, match=f"`{field}`") as refused:
        seal.Key.from_bytes(_edited_blob(key, **{field.replace(":", "__"): altered}))
    assert refused.value.field == field
    t, name = field.split(":")
    passports = dict(key.passports)
    passports[t] = (altered, passports[t][1]) if name == "C" else (passports[t][0], altered)
    with pytest.raises(keyfile.KeyMaterialError, match=f"`{field}`"):
        dataclasses.replace(key, passports=passports)


def test_a_key_with_its_seed_altered_after_generation_is_refused(key: seal.Key) -> None:
    _, stored, meta = keyfile.load(key.to_bytes(), "seal")
    meta["seed"] = str(key.seed + 1)
    with pytest.raises(keyfile.KeyMaterialError, match="`fc1:C`"):
        seal.Key.from_bytes(keyfile.dump("seal", stored, meta))


def test_a_forger_with_seed_derived_passports_passes_r0_and_r1_but_gets_no_small_p(
        adapter: dict[str, torch.Tensor], key: seal.Key) -> None:
    forged_seed = 777
    forged = _forge(key, adapter, {t: seal.passports_from_seed(forged_seed, t, key.r)
                                   for t in key.targets}, seed=forged_seed)
    assert seal.check_passports(forged) == []
    result = seal.test(Suspect.from_weights(adapter), forged)
    assert result.details["R1"]["pass"]  # the published SEAL rule would accept this claim
    assert result.log10_p > -3  # the committed random bits do not


def test_generate_key_refuses_rank_one_passports(base: toy.MLP) -> None:
    with pytest.raises(PassportError, match="r ≥ 2"):
        seal.generate_key(dataclasses.replace(PARAMS, r=1), 1, model=base)


# ---------------------------------------------------------------- keys

def test_key_bytes_are_deterministic_and_a_reloaded_key_gives_the_same_result(
        base: toy.MLP, key: seal.Key, adapter: dict[str, torch.Tensor]) -> None:
    fresh = seal.generate_key(PARAMS, SEED, model=base)
    assert fresh.to_bytes() == seal.generate_key(PARAMS, SEED, model=base).to_bytes()
    assert fresh.to_bytes() != seal.generate_key(PARAMS, SEED + 1, model=base).to_bytes()
    blob = key.to_bytes()
    again = seal.Key.from_bytes(blob)
    assert again.to_bytes() == blob and load_key(blob).to_bytes() == blob
    suspect = Suspect.from_weights(adapter)
    assert seal.test(suspect, again).to_dict() == seal.test(suspect, key).to_dict()


def test_keys_with_fewer_than_80_bits_can_never_reach_the_forgery_floor(base: toy.MLP) -> None:
    weak = seal.generate_key(PARAMS, SEED, model=base)
    assert weak.best_log10_p() == pytest.approx(64 * math.log10(0.5))
    with pytest.raises(WeakKeyError, match="at most 64.0 bits.*more bits"):
        check_key_strength(weak.best_log10_p(), "seal")
    with pytest.raises(WeakKeyError):
        check_key_strength(seal.generate_key(Params(bits=79), SEED, model=base).best_log10_p(), "seal")
    check_key_strength(seal.generate_key(Params(bits=80), SEED, model=base).best_log10_p(), "seal")
    default = seal.generate_key(Params(), SEED, model=base)
    check_key_strength(default.best_log10_p(), "seal", min_bits=120)  # defaults: 128 bits
    assert not default.owner_chosen_inputs


def test_public_params_reveal_no_secret(key: seal.Key) -> None:
    public = key.public_params()
    assert set(public) == {"r", "alpha", "targets", "bits", "base_digest", "base_name",
                           "owner_factors"}
    assert str(key.seed) not in json.dumps(public)


def test_malformed_key_blobs_are_refused_with_a_key_format_error(key: seal.Key) -> None:
    with pytest.raises(keyfile.KeyFormatError):
        seal.Key.from_bytes(b"not a key")
    with pytest.raises(keyfile.KeyFormatError, match="expected `seal`"):
        seal.Key.from_bytes(keyfile.dump("uchida", {}, {}))
    _, tensors, meta = keyfile.load(key.to_bytes())
    del tensors["fc2:C_p"]
    with pytest.raises(keyfile.KeyFormatError, match="incomplete"):
        seal.Key.from_bytes(keyfile.dump("seal", tensors, meta))
    _, tensors, meta = keyfile.load(key.to_bytes())
    tensors["fc1:A"] = tensors["fc1:A"][:, :3]
    with pytest.raises(keyfile.KeyFormatError, match="factors of `fc1`"):
        seal.Key.from_bytes(keyfile.dump("seal", tensors, meta))


def test_the_scheme_is_registered_under_its_name() -> None:
    assert "seal" in available()
    module = get("seal")
    assert (module.NAME, module.ACCESS) == ("seal", "white-box") and module.CLAIM


# ---------------------------------------------------------------- usage errors

def test_usage_errors_are_typed_and_name_the_fix(base: toy.MLP, key: seal.Key,
                                                 split: toy.Split, tmp_path: Path) -> None:
    with pytest.raises(SealSetupError, match="model=base"):
        seal.generate_key(PARAMS, 1)
    with pytest.raises(SealSetupError, match="not a module"):
        seal.generate_key(dataclasses.replace(PARAMS, targets=("fc9",)), 1, model=base)
    with pytest.raises(SealSetupError, match="expected nn.Linear"):
        seal.generate_key(dataclasses.replace(PARAMS, targets=("conv1",)), 1, model=toy.CNN())
    with pytest.raises(SealSetupError, match="pass data"):
        seal.embed(base, key)
    with pytest.raises(SealSetupError, match="unknown embed options"):
        seal.embed(base, key, _data(split, 1, 1), learning_rate=1.0)
    with pytest.raises(SealSetupError, match="warmup"):
        seal.embed(base, key, _data(split, 1, 1), warmup=1.5)
    with pytest.raises(SealSetupError, match="base digest"):
        seal.embed(toy.MLP(), key, _data(split, 1, 1))
    with pytest.raises(SealSetupError, match="not a SEAL layer"):
        seal.release(base, key, tmp_path)
    other = seal.generate_key(PARAMS, SEED + 5, model=base)
    trained_other = seal.embed(base, other, _data(split, 1, 1))
    with pytest.raises(SealSetupError, match="other passports"):
        seal.finalize_key(trained_other, key)
