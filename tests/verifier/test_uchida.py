"""The `uchida` scheme through the contract: keys, embedding, extraction, the exact test."""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import hmac
import json
import math
import statistics
import struct
import time

import pytest
import torch

from verifier import Suspect, forgery, keyfile, toy
from verifier.evaluation import attacks
from verifier.forgery import WeakKeyError, check_key_strength
from verifier.schemes import get, uchida
from verifier.schemes.uchida import CapacityError, LayerMismatch, Params, UchidaError, projection
from verifier.stats import log10_binom_sf

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def split() -> toy.Split:
    return toy.digits()


@pytest.fixture(scope="module")
def trained(split: toy.Split) -> torch.nn.Module:
    torch.manual_seed(0)
    return toy.train_digits(toy.MLP(), split, epochs=30, seed=0)


@pytest.fixture(scope="module")
def key(trained: torch.nn.Module) -> uchida.Key:
    return uchida.generate_key(Params(), seed=1234, model=trained)


@pytest.fixture(scope="module")
def marked(trained: torch.nn.Module, key: uchida.Key, split: toy.Split) -> torch.nn.Module:
    return uchida.embed(copy.deepcopy(trained), key, toy.batches(split.x_train, split.y_train, seed=3))


def test_it_is_registered_under_its_name() -> None:
    assert get("uchida") is uchida and uchida.ACCESS == "white-box"


def test_it_attributes_a_marked_model_with_p_below_1e_minus_9(marked, key) -> None:
    r = uchida.test(Suspect.from_module(marked), key)
    assert r.applicable and r.scheme == "uchida"
    assert r.p_value < 1e-9 and r.null == "exact" and r.n == 256
    assert r.details["zero_projections"] == 0 and r.statistic >= 240


def test_it_keeps_the_marked_models_accuracy(marked, trained, split) -> None:
    before = toy.accuracy(trained, split.x_test, split.y_test)
    after = toy.accuracy(marked, split.x_test, split.y_test)
    assert after >= before - 0.01


def test_it_gives_large_p_values_on_independently_trained_models(key, split) -> None:
    for seed in range(5):
        torch.manual_seed(100 + seed)
        other = toy.train_digits(toy.MLP(), split, epochs=5, seed=100 + seed)
        r = uchida.test(Suspect.from_module(other), key)
        assert r.applicable and r.p_value > 1e-3 and r.null == "exact"


def test_it_gives_large_p_values_for_fresh_keys_on_the_marked_model(marked) -> None:
    for seed in range(5):
        other_key = uchida.generate_key(Params(), seed=9000 + seed, model=marked)
        assert uchida.test(Suspect.from_module(marked), other_key).p_value > 1e-3


@pytest.mark.parametrize("attack", ["finetune", "prune", "int8"])
def test_it_still_attributes_after_a_removal_attack(attack, marked, key, split) -> None:
    attacked = {"finetune": lambda: attacks.finetune(marked, split, epochs=5),
                "prune": lambda: attacks.prune_global(marked, 0.5),
                "int8": lambda: attacks.quantize_int8(marked)}[attack]()
    assert uchida.test(Suspect.from_module(attacked), key).p_value < 1e-6


def test_it_marks_conv_layers_while_training_a_cnn(split) -> None:
    torch.manual_seed(0)
    cnn = toy.CNN()
    k = uchida.generate_key(Params(), seed=5, model=cnn)
    assert k.layers == ("conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight")
    assert k.host_size == 1 * 9 + 16 * 9 + 512 + 64
    uchida.embed(cnn, k, toy.batches(split.x_train, split.y_train, seed=0, epochs=3), epochs=1, lr=3e-3)
    assert uchida.test(Suspect.from_module(cnn), k).p_value < 1e-9


def test_its_key_bytes_are_deterministic_and_round_trip(key, marked) -> None:
    blob = key.to_bytes()
    assert blob == key.to_bytes()
    assert uchida.generate_key(Params(), seed=1234, model=marked).to_bytes() == blob
    again = uchida.Key.from_bytes(blob)
    assert again == key and again.to_bytes() == blob
    s = Suspect.from_module(marked)
    assert uchida.test(s, again).to_dict() == uchida.test(s, key).to_dict()


def test_the_registry_loads_its_key_by_the_scheme_name_inside(key) -> None:
    from verifier.schemes import load_key

    assert load_key(key.to_bytes()) == key


def test_a_different_seed_gives_different_bits(trained) -> None:
    a = uchida.generate_key(Params(), seed=1, model=trained)
    b = uchida.generate_key(Params(), seed=2, model=trained)
    assert a.bits != b.bits and a.to_bytes() != b.to_bytes()


def test_its_bits_look_like_fair_coins(trained) -> None:
    bits = [b for s in range(20) for b in uchida.generate_key(Params(), seed=s, model=trained).bits]
    assert abs(statistics.mean(bits) - 0.5) < 4 * 0.5 / len(bits) ** 0.5


def test_its_public_params_hold_no_secret(key) -> None:
    public = key.public_params()
    json.dumps(public)
    assert public["bits"] == 256 and public["layers"] == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert "seed" not in public and str(key.seed) not in json.dumps(public)
    assert all(not isinstance(v, (list, tuple)) or len(v) != 256 for v in public.values())


def test_it_is_not_applicable_without_weights(marked, key) -> None:
    r = uchida.test(Suspect.from_predict(marked), key)
    assert not r.applicable and r.p_value == 1.0 and "white-box" in r.details["reason"]


def test_it_is_not_applicable_when_a_layer_is_missing(marked, key) -> None:
    weights = {k: v for k, v in marked.state_dict().items() if k != "fc2.weight"}
    r = uchida.test(Suspect.from_weights(weights), key)
    assert not r.applicable and "`fc2.weight`" in r.details["reason"]


def test_it_is_not_applicable_when_a_layer_has_another_shape(key) -> None:
    weights = toy.MLP(hidden=80).state_dict()
    r = uchida.test(Suspect.from_weights(weights), key)
    assert not r.applicable and "(80, 64)" in r.details["reason"] and "(96, 64)" in r.details["reason"]


def test_it_counts_a_zero_projection_as_a_mismatch(key) -> None:
    zeros = {k: torch.zeros_like(v) for k, v in toy.MLP().state_dict().items()}
    bits = uchida.extract(zeros, key)
    assert bool((bits == -1).all())
    r = uchida.test(Suspect.from_weights(zeros), key)
    assert r.statistic == 0 and r.p_value == 1.0 and r.null == "conservative"
    assert r.details["zero_projections"] == 256


def test_its_bits_are_the_signs_of_the_projection(marked, key) -> None:
    y = uchida.project(marked.state_dict(), key)
    assert y.dtype == torch.float64 and y.shape == (256,)
    assert torch.equal(uchida.extract(marked.state_dict(), key), (y > 0).to(torch.int8))


def test_negating_the_host_layers_flips_every_bit(marked, key) -> None:
    w = dict(marked.state_dict())
    flipped = {k: (-v if k in key.layers else v) for k, v in w.items()}
    assert torch.equal(uchida.extract(flipped, key), 1 - uchida.extract(w, key))
    r = uchida.test(Suspect.from_weights(flipped), key)
    assert r.statistic == 256 - uchida.test(Suspect.from_weights(w), key).statistic


def test_it_ignores_a_permutation_of_the_host_layers_output_units(split) -> None:
    torch.manual_seed(1)
    m = toy.train_digits(toy.MLP(), split, epochs=5, seed=1)
    k = uchida.generate_key(Params(bits=64, layers=("fc1.weight",)), seed=3, model=m)
    uchida.embed(m, k, toy.batches(split.x_train, split.y_train, seed=1))
    perm = torch.randperm(96, generator=torch.Generator().manual_seed(0))
    w = dict(m.state_dict())
    permuted = dict(w, **{"fc1.weight": w["fc1.weight"][perm], "fc1.bias": w["fc1.bias"][perm],
                          "fc2.weight": w["fc2.weight"][:, perm]})
    same = toy.MLP()
    same.load_state_dict(permuted)
    assert torch.allclose(same(split.x_test), m(split.x_test), atol=1e-5)  # same function
    assert torch.equal(uchida.extract(permuted, k), uchida.extract(w, k))
    assert uchida.test(Suspect.from_weights(permuted), k).p_value < 1e-6


@pytest.mark.parametrize("m", [256, 97, 64])
def test_its_projection_has_full_rank_at_capacity_and_touches_every_weight(m: int) -> None:
    cap = projection.layout(m)[2]
    k = uchida.generate_key(Params(bits=cap, layers=("w",), shapes=((1, m),)), seed=m)
    basis = torch.eye(m, dtype=torch.float64)
    x = torch.stack([uchida.project({"w": basis[i].view(1, m)}, k) for i in range(m)], dim=1)  # (T, M)
    assert x.shape == (cap, m)
    assert int(torch.linalg.matrix_rank(x)) == cap
    assert bool((x != 0).all())  # every bit depends on every weight
    if cap == m == 256:  # the host fills the grid: rows are orthogonal with norm sqrt(M)
        assert torch.allclose(x @ x.T, m * torch.eye(m, dtype=torch.float64), atol=1e-8)


def test_it_extracts_one_key_from_a_million_weight_host_in_milliseconds() -> None:
    w = torch.randn(1, 2**20, generator=torch.Generator().manual_seed(0))
    params = Params(layers=("w",), shapes=((1, 2**20),))
    times = []
    for seed in range(7):
        k = uchida.generate_key(params, seed=seed)
        start = time.perf_counter()
        uchida.extract({"w": w}, k)
        times.append(time.perf_counter() - start)
    # ~3-7 ms on one shared core; a dense 256 x 2^20 Gaussian X would take ~1 s
    assert statistics.median(times) < 0.05


def test_its_regularizer_is_a_differentiable_scalar_scaled_by_lambda(trained) -> None:
    k1 = uchida.generate_key(Params(lam=1.0), seed=8, model=trained)
    k2 = uchida.generate_key(Params(lam=2.0), seed=8, model=trained)
    m = copy.deepcopy(trained)
    loss = uchida.regularizer(k1)(m)
    assert loss.dim() == 0
    assert uchida.regularizer(k2)(m).item() == pytest.approx(2 * loss.item())
    loss.backward()
    assert m.fc1.weight.grad is not None and m.fc1.bias.grad is None


def test_it_replays_a_one_shot_iterator_each_epoch(trained, split) -> None:
    k = uchida.generate_key(Params(bits=32), seed=4, model=trained)
    batches = list(toy.batches(split.x_train, split.y_train, seed=2))
    a = uchida.embed(copy.deepcopy(trained), k, batches, epochs=2)
    b = uchida.embed(copy.deepcopy(trained), k, iter(batches), epochs=2)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


def test_it_refuses_to_embed_without_data(trained, key) -> None:
    with pytest.raises(UchidaError, match="pass data="):
        uchida.embed(copy.deepcopy(trained), key)


def test_it_refuses_to_embed_into_a_model_without_the_key_layers(key, split) -> None:
    with pytest.raises(LayerMismatch, match="shape"):
        uchida.embed(toy.MLP(hidden=80), key, toy.batches(split.x_train, split.y_train))


def test_it_needs_layer_shapes_to_generate_a_key() -> None:
    with pytest.raises(UchidaError, match="pass model=<the model to mark>"):
        uchida.generate_key(Params(), seed=1)
    with pytest.raises(UchidaError, match="pass model=<the model to mark>"):
        uchida.generate_key(Params(shapes=((4, 4),)), seed=1)  # shapes without layer names


def test_it_generates_a_key_from_shapes_alone() -> None:
    k = uchida.generate_key(Params(bits=8, layers=("fc1.weight",), shapes=((96, 64),)), seed=1)
    assert k == uchida.generate_key(Params(bits=8, layers=("fc1.weight",)), seed=1, model=toy.MLP())


def test_it_refuses_more_bits_than_the_host_carries() -> None:
    with pytest.raises(CapacityError, match=r"257 bits do not fit a host vector of 256 values.*bits<=256"):
        uchida.generate_key(Params(bits=257), seed=1, model=toy.MLP())
    with pytest.raises(CapacityError, match="capacity 63"):
        uchida.generate_key(Params(bits=64, layers=("w",), shapes=((2, 65),)), seed=1)


def test_it_refuses_a_layer_the_model_does_not_have() -> None:
    with pytest.raises(UchidaError, match="no parameter named 'fc9.weight'"):
        uchida.generate_key(Params(layers=("fc9.weight",)), seed=1, model=toy.MLP())


def test_it_refuses_a_bias_as_host_layer() -> None:
    with pytest.raises(UchidaError, match="dim >= 2"):
        uchida.generate_key(Params(bits=8, layers=("fc1.bias",)), seed=1, model=toy.MLP())


def test_it_refuses_a_model_without_any_weight_matrix() -> None:
    with pytest.raises(UchidaError, match="no weight of dim >= 2"):
        uchida.generate_key(Params(bits=8), seed=1, model={"scale": torch.ones(3)})


@pytest.mark.parametrize("seed", [-1, 2**63])
def test_it_refuses_a_seed_outside_63_bits(seed: int) -> None:
    with pytest.raises(UchidaError, match="seed must be an integer"):
        uchida.generate_key(Params(), seed=seed, model=toy.MLP())


def test_it_refuses_zero_bits() -> None:
    with pytest.raises(UchidaError, match="bits must be >= 1"):
        uchida.generate_key(Params(bits=0), seed=1, model=toy.MLP())


def test_it_refuses_the_key_of_another_scheme(key) -> None:
    blob = keyfile.dump("trigger_set", {"bits": torch.zeros(3, dtype=torch.uint8)}, {})
    with pytest.raises(keyfile.KeyFormatError, match="expected `uchida`"):
        uchida.Key.from_bytes(blob)


def test_it_refuses_garbage_bytes_as_a_key() -> None:
    with pytest.raises(keyfile.KeyFormatError):
        uchida.Key.from_bytes(b"not a key at all")


@pytest.mark.parametrize("change", ["bits", "shapes", "version", "dtype"])
def test_it_refuses_an_inconsistent_key_blob(key, change: str) -> None:
    _, tensors, meta = keyfile.load(key.to_bytes(), "uchida")
    if change == "bits":
        tensors["bits"] = tensors["bits"] + 1  # values 1 and 2
    elif change == "shapes":
        meta["shapes"] = meta["shapes"][:1]
    elif change == "version":
        meta["version"] = 99
    else:
        tensors["bits"] = tensors["bits"].to(torch.int64)
    with pytest.raises(keyfile.KeyFormatError, match="malformed uchida key"):
        uchida.Key.from_bytes(keyfile.dump("uchida", tensors, meta))


# ---------------------------------------------------------------- forgery

@pytest.fixture(scope="module")
def public_models(split: toy.Split) -> list[torch.nn.Module]:
    """Twelve independently trained MLPs: nine a forger can see, three victims it cannot."""
    return [toy.trained(split, 500 + i, epochs=5) for i in range(12)]


def test_the_majority_sign_forgery_would_work_but_its_key_cannot_be_built(public_models) -> None:
    seen, victims = public_models[:9], public_models[9:]
    honest = uchida.generate_key(Params(), seed=77, model=seen[0])
    signs = torch.stack([uchida.project(m.state_dict(), honest) for m in seen]).sign()  # (9, T)
    forged_bits = tuple(int(v) for v in (signs.sum(dim=0) > 0))  # the majority sign per bit
    for victim in victims:  # the forged bits would attribute models their forger never saw
        got = uchida.extract(victim.state_dict(), honest)
        matches = int((got == torch.tensor(forged_bits, dtype=torch.int8)).sum())
        assert log10_binom_sf(matches, 256, 0.5) < -3
        assert uchida.test(Suspect.from_module(victim), honest).p_value > 1e-3  # honest bits do not
    with pytest.raises(keyfile.KeyMaterialError, match="`bits`.*regenerate it") as built:
        dataclasses.replace(honest, bits=forged_bits)
    assert (built.value.field, built.value.scheme) == ("bits", "uchida")
    _, tensors, meta = keyfile.load(honest.to_bytes(), "uchida")
    tensors["bits"] = torch.tensor(forged_bits, dtype=torch.uint8)
    with pytest.raises(keyfile.KeyMaterialError, match="`bits`"):
        uchida.Key.from_bytes(keyfile.dump("uchida", tensors, meta))


@pytest.mark.parametrize("index", [0, 100, 255])
def test_a_key_with_one_bit_flipped_after_generation_is_refused_naming_the_bits(
        key, index: int) -> None:
    _, tensors, meta = keyfile.load(key.to_bytes(), "uchida")
    tensors["bits"][index] ^= 1
    with pytest.raises(keyfile.KeyMaterialError) as refused:
        uchida.Key.from_bytes(keyfile.dump("uchida", tensors, meta))
    assert refused.value.field == "bits" and "uchida" in str(refused.value)


def test_a_key_with_its_seed_altered_after_generation_is_refused(key) -> None:
    _, tensors, meta = keyfile.load(key.to_bytes(), "uchida")
    meta["seed"] = key.seed + 1
    with pytest.raises(keyfile.KeyMaterialError, match="`bits`"):
        uchida.Key.from_bytes(keyfile.dump("uchida", tensors, meta))
    with pytest.raises(keyfile.KeyMaterialError, match="`bits`"):
        dataclasses.replace(key, seed=key.seed + 1)


def test_its_bits_are_the_seeds_hmac_drbg_output_on_every_machine() -> None:
    # recomputed from the documented rule with hashlib alone: no torch, numpy or CPU in the path
    secret = hashlib.sha256(b"hallmark/uchida/seed/v2" + (5).to_bytes(16, "big", signed=True)).digest()
    words = [int.from_bytes(hmac.new(secret, b"bits" + struct.pack(">Q", 0), hashlib.sha256)
                            .digest()[i:i + 8], "big") for i in range(0, 32, 8)]
    expected = tuple(int(c) for c in f"{words[0]:064b}{words[1]:064b}")[:100]  # MSB first
    assert uchida.derive_bits(5, 100) == expected
    assert uchida.generate_key(Params(bits=100, layers=("w",), shapes=((1, 100),)), seed=5).bits \
        == expected


def test_a_version_1_key_is_refused_with_the_fix(key) -> None:
    _, tensors, meta = keyfile.load(key.to_bytes(), "uchida")
    meta["version"] = 1
    with pytest.raises(keyfile.KeyFormatError, match="regenerate the key with generate_key"):
        uchida.Key.from_bytes(keyfile.dump("uchida", tensors, meta))


def test_keys_with_fewer_than_80_bits_can_never_reach_the_forgery_floor() -> None:
    def key_of(bits: int) -> uchida.Key:
        return uchida.generate_key(Params(bits=bits), seed=1, model=toy.MLP())

    assert key_of(64).best_log10_p() == pytest.approx(64 * math.log10(0.5))
    with pytest.raises(WeakKeyError, match="at most 64.0 bits"):
        check_key_strength(key_of(64).best_log10_p(), "uchida")
    with pytest.raises(WeakKeyError):
        check_key_strength(key_of(79).best_log10_p(), "uchida")
    check_key_strength(key_of(80).best_log10_p(), "uchida")
    check_key_strength(key_of(Params().bits).best_log10_p(), "uchida", min_bits=250)  # 256 bits
    assert not key_of(80).owner_chosen_inputs


# ---------------------------------------------------------------- invariant host (align.py)

def _permuted_and_rescaled(model: torch.nn.Module, seed: int) -> toy.MLP:
    """The same function with every hidden unit permuted and rescaled by a positive factor."""
    g = torch.Generator().manual_seed(seed)
    w = {k: v.clone() for k, v in model.state_dict().items()}
    for layer, nxt in (("fc1", "fc2"), ("fc2", "fc3")):
        n = w[f"{layer}.weight"].shape[0]
        perm, c = torch.randperm(n, generator=g), torch.exp(2 * torch.randn(n, generator=g))
        w[f"{layer}.weight"] = w[f"{layer}.weight"][perm] * c[:, None]
        w[f"{layer}.bias"] = w[f"{layer}.bias"][perm] * c
        w[f"{nxt}.weight"] = w[f"{nxt}.weight"][:, perm] / c[None, :]
    out = toy.MLP()
    out.load_state_dict(w)
    return out


@pytest.fixture(scope="module")
def invariant_key(trained) -> uchida.Key:
    return uchida.generate_key(Params(host="invariant"), seed=2024, model=trained)


@pytest.fixture(scope="module")
def invariant_marked(trained, invariant_key, split) -> torch.nn.Module:
    return uchida.embed(copy.deepcopy(trained), invariant_key,
                        toy.batches(split.x_train, split.y_train, seed=5), epochs=10, lr=1e-3)


def test_a_permuted_and_rescaled_copy_computes_the_same_function_and_loses_the_plain_mark(
        marked, key, split) -> None:
    copy_ = _permuted_and_rescaled(marked, seed=1)
    assert torch.allclose(copy_(split.x_test), marked(split.x_test), atol=1e-4)
    assert uchida.test(Suspect.from_module(marked), key).log10_p < -24
    assert uchida.test(Suspect.from_module(copy_), key).p_value > 1e-6  # the "mean" host is lost


def test_the_invariant_host_does_not_move_under_permutation_and_rescaling(invariant_marked,
                                                                           invariant_key) -> None:
    before = uchida.host_vector(invariant_marked.state_dict(), invariant_key, dtype=torch.float64)
    for seed in range(3):
        after = uchida.host_vector(_permuted_and_rescaled(invariant_marked, seed).state_dict(),
                                   invariant_key, dtype=torch.float64)
        assert torch.allclose(after, before, rtol=0, atol=1e-6)  # float32 rounding of w·c, w/c


def test_an_invariant_mark_attributes_a_permuted_and_rescaled_copy_above_the_floor(
        invariant_marked, invariant_key, trained, split) -> None:
    own = uchida.test(Suspect.from_module(invariant_marked), invariant_key)
    assert own.statistic >= 240 and own.null == "exact"
    assert toy.accuracy(invariant_marked, split.x_test, split.y_test) \
        >= toy.accuracy(trained, split.x_test, split.y_test) - 0.01
    stolen = _permuted_and_rescaled(invariant_marked, seed=3)
    result = uchida.test(Suspect.from_module(stolen), invariant_key)
    assert result.statistic == own.statistic and result.log10_p < forgery.floor_log10_p()
    tuned = attacks.finetune(stolen, split, epochs=5)
    assert uchida.test(Suspect.from_module(tuned), invariant_key).log10_p < forgery.floor_log10_p()


def test_an_invariant_key_gives_fair_coin_counts_on_an_independent_model(split) -> None:
    from scipy import stats

    other = toy.trained(split, 800, epochs=10)
    params = Params(host="invariant")
    counts = [uchida.test(Suspect.from_module(other), uchida.generate_key(params, seed=s, model=other))
              for s in range(60)]
    assert min(r.p_value for r in counts) > 1e-4
    matches = [r.statistic for r in counts]
    # each count is Binomial(256, 1/2) whatever the suspect: mean 128, sd 8
    assert abs(statistics.mean(matches) - 128) < 4 * 8 / len(matches) ** 0.5
    assert stats.kstest([(m - 128) / 8 for m in matches], "norm").pvalue > 1e-3


def test_an_invariant_key_round_trips_and_names_its_host(invariant_key) -> None:
    blob = invariant_key.to_bytes()
    again = uchida.Key.from_bytes(blob)
    assert again == invariant_key and again.to_bytes() == blob
    assert invariant_key.public_params()["host"] == "invariant"
    assert "fingerprint" not in json.dumps(invariant_key.public_params())  # nothing to steer


def test_an_invariant_key_needs_a_chain_of_layers() -> None:
    with pytest.raises(UchidaError, match="a conv layer cannot follow a Linear layer"):
        uchida.generate_key(Params(host="invariant", layers=("fc1.weight", "conv2.weight"),
                                   shapes=((16, 32), (32, 16, 3, 3)), bits=64), seed=1)
    with pytest.raises(UchidaError, match="do not chain"):
        uchida.generate_key(Params(host="invariant", layers=("fc2.weight", "fc1.weight"), bits=64),
                            seed=1, model=toy.MLP())
    with pytest.raises(UchidaError, match="do not chain"):
        uchida.generate_key(Params(host="invariant", layers=("conv2.weight", "conv1.weight"), bits=64),
                            seed=1, model=toy.CNN())
    with pytest.raises(UchidaError, match="do not chain"):  # 100 flattened inputs from 32 channels
        uchida.generate_key(Params(host="invariant", layers=("c.weight", "fc.weight"),
                                   shapes=((32, 16, 3, 3), (10, 100)), bits=64), seed=1)
    with pytest.raises(UchidaError, match="host must be one of mean, invariant"):
        uchida.generate_key(Params(host="sorted"), seed=1, model=toy.MLP())
