"""`seal` on merged copies whose targets were renamed, stored transposed or fused: found by content
against the public base, never by the key, so the bit test keeps its exact null."""
from __future__ import annotations

import copy
import statistics

import pytest
import torch

from tests.verifier import test_seal as seal_tests
from verifier import toy
from verifier.schemes import seal
from verifier.schemes.seal import verify as seal_verify
from verifier.suspect import Suspect

torch.set_num_threads(1)

PARAMS, permuted_and_rescaled = seal_tests.PARAMS, seal_tests.permuted_and_rescaled
# the same module-scoped fixtures as test_seal: the digits base, the owner's SEAL model and key
split, base, marked, key = seal_tests.split, seal_tests.base, seal_tests.marked, seal_tests.key


def _gpt_style(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every layer renamed (`fc1` -> `h.0.c_fc`) and stored (in, out), as GPT-2's Conv1D does."""
    out = {}
    for i, layer in enumerate(("fc1", "fc2", "fc3")):
        out[f"h.{i}.c_fc.weight"] = state[f"{layer}.weight"].T.contiguous()
        out[f"h.{i}.c_fc.bias"] = state[f"{layer}.bias"]
    return out


@pytest.fixture(scope="module")
def merged(marked, key) -> torch.nn.Module:
    return seal.merge(marked, key)


def test_a_renamed_transposed_permuted_and_rescaled_merged_copy_is_found_and_attributed(
        merged, key) -> None:
    plain = seal.test(Suspect.from_module(merged), key)
    stolen = _gpt_style(permuted_and_rescaled(merged, seed=3).state_dict())
    result = seal.test(Suspect.from_weights(stolen), key)
    notes = result.details["notes"]
    assert any("`fc1`: not found in the suspect; read from `h.0.c_fc.weight.T`" in n for n in notes)
    assert any("`fc2`: not found in the suspect; read from `h.1.c_fc.weight.T`" in n for n in notes)
    assert sum("units aligned to the base" in n for n in notes) == 2
    assert result.statistic >= plain.statistic - 2 and result.null == "exact"
    assert result.log10_p < -15


def test_a_target_inside_a_fused_weight_is_picked_by_its_units_not_by_its_position(merged, key) -> None:
    state = {k: v.clone() for k, v in merged.state_dict().items()}
    decoy = torch.randn(state["fc2.weight"].shape, generator=torch.Generator().manual_seed(0)) * 0.1
    state["mixed.weight"] = torch.cat([decoy, state.pop("fc2.weight")])  # (192, 96): decoy first
    state["mixed.bias"] = torch.cat([torch.zeros(96), state.pop("fc2.bias")])
    result = seal.test(Suspect.from_weights(state), key)
    assert any("read from `mixed.weight[1/2]`" in n for n in result.details["notes"])
    assert result.details["targets_found"] == 2 and result.log10_p < -15


def test_a_shape_mismatch_under_the_target_name_is_searched_too(merged, key) -> None:
    state = {k: v.clone() for k, v in merged.state_dict().items()}
    state["fc1.weight"] = state["fc1.weight"].T.contiguous()  # (64, 96) under the right name
    result = seal.test(Suspect.from_weights(state), key)
    assert any("`fc1`: weight shape (64, 96), expected (96, 64); read from `fc1.weight.T`" in n
               for n in result.details["notes"])
    assert result.log10_p < -15


def test_the_search_reads_the_suspect_and_the_base_never_the_key_material(merged, key, base) -> None:
    stolen = _gpt_style(permuted_and_rescaled(merged, seed=5).state_dict())
    other = seal.generate_key(PARAMS, 31337, model=base)  # other seed: other bits and passports
    mine, _, notes_mine = seal_verify.suspect_updates(stolen, key)
    theirs, _, notes_theirs = seal_verify.suspect_updates(stolen, other)
    assert notes_mine == notes_theirs
    for t in key.targets:
        assert torch.equal(mine[t].dense(), theirs[t].dense())


def test_an_independent_renamed_model_is_skipped(split, base) -> None:
    other = _gpt_style(permuted_and_rescaled(toy.trained(split, 902, epochs=10), seed=1).state_dict())
    result = seal.test(Suspect.from_weights(other), seal.generate_key(PARAMS, 700, model=base))
    assert not result.applicable  # its units match none of the base's: nothing read as a target


def test_a_renamed_fine_tune_of_the_public_base_is_found_and_gets_fair_coin_counts(split, base) -> None:
    tuned = toy.train_digits(copy.deepcopy(base), split, epochs=3, seed=5)  # the base, not the owner's
    suspect = Suspect.from_weights(_gpt_style(permuted_and_rescaled(tuned, seed=2).state_dict()))
    results = [seal.test(suspect, seal.generate_key(PARAMS, 800 + i, model=base)) for i in range(20)]
    assert all(r.details["targets_found"] == 2 for r in results)
    assert min(r.p_value for r in results) > 1e-4
    assert abs(statistics.mean(r.statistic for r in results) - 32) < 4 * 4 / 20 ** 0.5


def test_a_tensor_that_matches_no_base_unit_is_not_read_as_a_target(key) -> None:
    g = torch.Generator().manual_seed(1)
    noise = {"a.weight": torch.randn(96, 64, generator=g), "b.weight": torch.randn(96, 96, generator=g)}
    result = seal.test(Suspect.from_weights(noise), key)
    assert not result.applicable
    assert "no tensor of a compatible shape matches the base's units" in result.details["reason"]
