"""`uchida`'s invariant host against dummy neurons (Yan et al., USENIX Security 2023): units
that do not change the outputs (zero outgoing weights, NeuronSplit, NeuronClique) are taken out
by the canonical form, a widened chain is still found by the key, and on independent models the
canonical form manufactures no match."""
from __future__ import annotations

import pytest
import torch

from verifier import Suspect, toy
from verifier.evaluation import attacks
from verifier.schemes import uchida
from verifier.schemes.uchida import LayerMismatch, Params
from verifier.schemes.uchida.locate import placements

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def split() -> toy.Split:
    return toy.digits()


def _marked(make, split: toy.Split) -> tuple[torch.nn.Module, uchida.Key]:
    torch.manual_seed(0)
    init = make()
    key = uchida.generate_key(Params(host="invariant"), seed=100, model=init)
    return uchida.embed(init, key, toy.batches(split.x_train, split.y_train, seed=0, epochs=4),
                        epochs=1, lr=3e-3), key


def _stolen(model: torch.nn.Module, fraction: float, seed: int) -> torch.nn.Module:
    """Dummy-widened, every unit permuted, rescaled: the same function, other weights and shapes."""
    wide = attacks.dummy_neurons(model, fraction, seed=seed)
    return attacks.rescale_units(attacks.permute_hidden(wide, 1.0, seed=seed), 8.0, seed=seed)


@pytest.mark.parametrize("arch", [toy.MLP, toy.CNN, toy.DeepCNN])
def test_dummy_neurons_keep_the_outputs_and_widen_every_hidden_layer(arch, split) -> None:
    torch.manual_seed(0)
    model = arch()
    wide = attacks.dummy_neurons(model, fraction=1.0, seed=3)
    with torch.no_grad():
        assert torch.allclose(model(split.x_test), wide(split.x_test), atol=1e-4)
    shapes = [(n, t.shape) for n, t in model.state_dict().items() if n.endswith("weight")]
    for (name, before), after in zip(shapes, [wide.state_dict()[n].shape for n, _ in shapes], strict=True):
        assert after[0] == (before[0] if name == shapes[-1][0] else 2 * before[0]), name


@pytest.mark.parametrize("arch", [toy.MLP, toy.CNN])
def test_a_permuted_rescaled_dummy_widened_copy_has_the_same_invariant_host(arch, split) -> None:
    marked, key = _marked(arch, split)
    before = uchida.host_vector(marked.state_dict(), key, dtype=torch.float64)
    for fraction, seed in ((0.1, 1), (0.5, 2), (1.0, 3)):
        stolen = _stolen(marked, fraction, seed)
        assert stolen.state_dict()[key.layers[0]].shape[0] > key.shapes[0][0]  # really wider
        after = uchida.host_vector(stolen.state_dict(), key, dtype=torch.float64)
        assert torch.allclose(after, before, rtol=0, atol=1e-6), fraction


@pytest.mark.parametrize("arch", [toy.MLP, toy.CNN])
def test_the_full_verification_detects_a_dummy_widened_copy_under_the_keys_names(arch, split) -> None:
    marked, key = _marked(arch, split)
    owner = uchida.test(Suspect.from_module(marked), key)
    assert owner.log10_p <= -24
    result = uchida.test(Suspect.from_module(_stolen(marked, 1.0, seed=4)), key)
    assert result.statistic == owner.statistic and result.null == "exact"
    assert "host_search" not in result.details


@pytest.mark.parametrize("arch", [toy.MLP, toy.CNN])
def test_a_renamed_dummy_widened_layer_chain_is_still_found_by_the_key(arch, split) -> None:
    marked, key = _marked(arch, split)
    # renaming alone loses the biases (`t1.bias` is not `t0.weight`'s): compare like with like
    owner = uchida.test(Suspect.from_weights(attacks.renamed(marked)), key)
    weights = attacks.renamed(_stolen(marked, 0.5, seed=5))
    found = placements(weights, key)
    assert found and all(len(p.sources) == len(key.layers) for p in found)
    result = uchida.test(Suspect.from_weights(weights), key)
    assert result.details["host_search"]["placements"] == len(found)
    assert result.statistic == owner.statistic
    assert result.log10_p <= -24


def test_on_independent_models_the_canonical_form_changes_nothing_and_manufactures_no_match(split) -> None:
    # An independent, trained MLP has no two units of one direction and no dead unit: its
    # canonical form is the model itself, so a dummy-widened copy reads exactly its host, and
    # the counts against fresh keys are fair coins (no p-value near the registry's thresholds).
    counts = []
    for i in range(12):
        torch.manual_seed(500 + i)
        other = toy.train(toy.MLP(), toy.batches(split.x_train, split.y_train, seed=500 + i, epochs=2))
        key = uchida.generate_key(Params(host="invariant"), seed=600 + i, model=other)
        plain = uchida.host_vector(other.state_dict(), key, dtype=torch.float64)
        stolen = _stolen(other, 0.5, seed=700 + i)
        assert torch.allclose(uchida.host_vector(stolen.state_dict(), key, dtype=torch.float64),
                              plain, rtol=0, atol=1e-6)
        result = uchida.test(Suspect.from_module(stolen), key)
        assert result.p_value > 1e-4 and result.null == "exact"
        counts.append(int(result.statistic))
    assert 100 < sum(counts) / len(counts) < 156  # around T/2 = 128


def test_a_chain_whose_widths_do_not_connect_is_not_read_as_the_key(split) -> None:
    torch.manual_seed(0)
    model = toy.MLP()
    key = uchida.generate_key(Params(host="invariant"), seed=9, model=model)
    broken = dict(model.state_dict())
    broken["fc1.weight"], broken["fc1.bias"] = torch.randn(120, 64), torch.randn(120)  # fc2 reads 96
    with pytest.raises(LayerMismatch, match="reads 96 inputs, not the 120 units"):
        uchida.host_vector(broken, key)
    assert not uchida.test(Suspect.from_weights(broken), key).applicable


def test_a_mean_host_key_still_requires_the_exact_shapes() -> None:
    torch.manual_seed(0)
    model = toy.MLP()
    key = uchida.generate_key(Params(), seed=9, model=model)
    wide = attacks.dummy_neurons(model, 0.5, seed=1)
    with pytest.raises(LayerMismatch, match="the key expects"):
        uchida.host_vector(wide.state_dict(), key)


def test_one_unit_split_into_many_copies_merges_back_into_one() -> None:
    # 150 copies of one unit: more than the 64 neighbours each unit is compared with, so the
    # copies are merged through chains of neighbours
    torch.manual_seed(0)
    model = toy.MLP()
    key = uchida.generate_key(Params(host="invariant"), seed=9, model=model)
    before = uchida.host_vector(model.state_dict(), key, dtype=torch.float64)
    w = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    scales = torch.exp(torch.randn(150, generator=g))  # (150,) positive
    shares = torch.softmax(torch.randn(150, generator=g), dim=0)  # (150,) sum to 1
    row, bias, col = w["fc1.weight"][0], w["fc1.bias"][0], w["fc2.weight"][:, 0]
    w["fc1.weight"] = torch.cat([w["fc1.weight"][1:], scales[:, None] * row])
    w["fc1.bias"] = torch.cat([w["fc1.bias"][1:], scales * bias])
    w["fc2.weight"] = torch.cat([w["fc2.weight"][:, 1:], col[:, None] * (shares / scales)], dim=1)
    after = uchida.host_vector(w, key, dtype=torch.float64)
    assert torch.allclose(after, before, rtol=0, atol=1e-6)
