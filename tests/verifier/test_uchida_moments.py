"""`uchida` with `Params(host="moments")`: second moments of the canonical unit descriptors, a
host far larger than the bits, which an attacker's own mark cannot simply overwrite."""
from __future__ import annotations

import copy

import pytest
import torch

from verifier import Suspect, keyfile, toy
from verifier.evaluation import attacks
from verifier.schemes import uchida
from verifier.schemes.uchida import Params, UchidaError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def split() -> toy.Split:
    return toy.digits()


@pytest.fixture(scope="module")
def marked_mlp(split) -> tuple[torch.nn.Module, uchida.Key]:
    torch.manual_seed(0)
    init = toy.MLP()
    key = uchida.generate_key(Params(host="moments"), seed=100, model=init)
    return uchida.embed(init, key, toy.batches(split.x_train, split.y_train, seed=0, epochs=20),
                        epochs=1, lr=3e-3), key


def test_a_moments_key_sizes_its_host_from_every_layer_but_the_last_and_round_trips() -> None:
    key = uchida.generate_key(Params(host="moments"), seed=1, model=toy.MLP())
    assert key.host_size == 65 * 66 // 2 + 97 * 98 // 2 == 6898  # fc1 and fc2 descriptors
    assert key.public_params()["host_size"] == 6898
    assert uchida.Key.from_bytes(key.to_bytes()) == key
    _, tensors, meta = keyfile.load(key.to_bytes(), "uchida")
    assert meta["host"] == "moments"


def test_a_moments_key_on_one_layer_is_refused_with_the_fix() -> None:
    with pytest.raises(UchidaError, match="needs a chain of >= 2 layers"):
        uchida.generate_key(Params(host="moments", layers=("fc1.weight",)), seed=1, model=toy.MLP())


@pytest.mark.parametrize("arch", [toy.MLP, toy.CNN])
def test_the_moments_host_does_not_move_under_permutation_rescaling_and_dummy_units(arch) -> None:
    torch.manual_seed(3)
    model = arch()
    key = uchida.generate_key(Params(host="moments"), seed=2, model=model)
    before = uchida.host_vector(model.state_dict(), key, dtype=torch.float64)
    assert before.shape == (key.host_size,)
    wide = attacks.dummy_neurons(model, 1.0, seed=4)
    stolen = attacks.rescale_units(attacks.permute_hidden(wide, 1.0, seed=4), 8.0, seed=4)
    after = uchida.host_vector(stolen.state_dict(), key, dtype=torch.float64)
    assert torch.allclose(after, before, rtol=0, atol=1e-6)


def test_the_owners_moments_mark_survives_an_attackers_ten_epoch_overwrite(marked_mlp, split) -> None:
    marked, key = marked_mlp
    assert uchida.test(Suspect.from_module(marked), key).log10_p <= -60
    theirs = uchida.generate_key(Params(host="moments"), seed=900, model=marked)
    stolen = uchida.embed(copy.deepcopy(marked), theirs,
                          list(toy.batches(split.x_train, split.y_train, seed=9)), epochs=10, lr=1e-3)
    assert uchida.test(Suspect.from_module(stolen), theirs).log10_p <= -24  # the thief's mark is in
    assert uchida.test(Suspect.from_module(stolen), key).log10_p <= -12  # and the owner's stays


def test_a_moments_key_gives_fair_coin_counts_on_independent_rewritten_models(split) -> None:
    counts = []
    for i in range(10):
        torch.manual_seed(800 + i)
        other = toy.train(toy.MLP(), toy.batches(split.x_train, split.y_train, seed=800 + i, epochs=2))
        key = uchida.generate_key(Params(host="moments"), seed=900 + i, model=other)
        stolen = attacks.rescale_units(attacks.dummy_neurons(other, 0.5, seed=i), 4.0, seed=i)
        result = uchida.test(Suspect.from_module(stolen), key)
        assert result.p_value > 1e-4 and result.null == "exact"
        counts.append(int(result.statistic))
    assert 100 < sum(counts) / len(counts) < 156
