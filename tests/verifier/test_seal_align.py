"""`seal` alignment of merged suspects whose hidden units (or conv channels) were permuted and
rescaled: recovered exactly on an MLP and a CNN (across the conv → flatten → Linear boundary),
and never manufactured on models that are no copy of the owner's adapter."""
from __future__ import annotations

import statistics

import pytest
import torch

from verifier import toy
from verifier.evaluation import attacks
from verifier.evaluation import seal as seal_eval
from verifier.schemes import seal
from verifier.schemes.seal import align
from verifier.schemes.seal import verify as seal_verify
from verifier.suspect import Suspect

torch.set_num_threads(1)

PARAMS = seal.Params(targets=("fc1", "fc2"), r=8, alpha=16.0, bits=64)


def _data(split: toy.Split, seed: int, epochs: int) -> list[toy.Batch]:
    return list(toy.batches(split.x_train, split.y_train, seed=seed, epochs=epochs))


def _stolen(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every hidden unit / channel permuted, then rescaled by factors in [1/16, 16]: same function."""
    return attacks.rescale_units(attacks.permute_hidden(model, 1.0, seed=seed), 16.0, seed=seed)


class Setting:
    """A public base trained on mirrored digits, an owner's SEAL adapter on it, merged."""

    def __init__(self, arch: type[torch.nn.Module], split: toy.Split) -> None:
        self.base = seal_eval.digits_base(split, seed=0, epochs=8, arch=arch)
        seal.register_base(self.base, PARAMS.targets)
        key = seal.generate_key(PARAMS, 4242, model=self.base)
        marked = seal.embed(self.base, key, _data(split, 1, 15))
        self.key = seal.finalize_key(marked, key)
        self.merged = seal.merge(marked, self.key)


@pytest.fixture(scope="module")
def split() -> toy.Split:
    return toy.digits(0)


@pytest.fixture(scope="module", params=[toy.MLP, toy.CNN], ids=["mlp", "cnn"])
def setting(request: pytest.FixtureRequest, split: toy.Split) -> Setting:
    return Setting(request.param, split)


def test_the_update_is_not_small_next_to_the_base_so_row_cosines_alone_cannot_align(
        setting: Setting) -> None:
    w = setting.base.state_dict()["fc1.weight"]
    delta = setting.merged.state_dict()["fc1.weight"] - w
    assert float(delta.norm() / w.norm()) > 0.3  # the regime where plain |cosine| matching failed


def test_alignment_recovers_every_unit_and_scale_of_a_permuted_rescaled_copy(
        setting: Setting, split: toy.Split) -> None:
    stolen = _stolen(setting.merged, seed=3)
    with torch.no_grad():
        assert torch.allclose(stolen(split.x_test), setting.merged(split.x_test), atol=1e-3)
    got = align.align_chain(stolen.state_dict(), setting.base.state_dict(), PARAMS.targets, PARAMS.r)
    assert got is not None
    for t in PARAMS.targets:
        want = setting.merged.state_dict()[f"{t}.weight"].double()
        assert got[t].moved
        assert float((got[t].weight - want).norm() / want.norm()) < 1e-5
    # fc1's rows are its own units; on the CNN its columns came back in blocks of 4·4 per channel
    assert not torch.equal(got["fc1"].perm, torch.arange(got["fc1"].perm.numel()))


def test_a_permuted_rescaled_copy_is_attributed_as_the_plain_copy(setting: Setting) -> None:
    plain = seal.test(Suspect.from_module(setting.merged), setting.key)
    assert not any("aligned" in n for n in plain.details["notes"])
    result = seal.test(Suspect.from_module(_stolen(setting.merged, seed=5)), setting.key)
    assert result.statistic == plain.statistic and result.null == "exact"
    assert result.log10_p < -15
    assert sum("units aligned to the base" in n for n in result.details["notes"]) == 2


def test_a_clean_copy_keeps_its_exact_difference_from_the_base(setting: Setting) -> None:
    weights = setting.merged.state_dict()
    updates, _, notes = seal_verify.suspect_updates(weights, setting.key)
    assert notes == []
    for t in PARAMS.targets:
        assert torch.equal(updates[t].dense(),
                           weights[f"{t}.weight"] - setting.base.state_dict()[f"{t}.weight"])


def test_the_alignment_reads_the_suspect_and_the_base_never_the_key_material(
        setting: Setting) -> None:
    stolen = _stolen(setting.merged, seed=7).state_dict()
    other = seal.generate_key(PARAMS, 31337, model=setting.base)
    mine, _, _ = seal_verify.suspect_updates(stolen, setting.key)
    theirs, _, _ = seal_verify.suspect_updates(stolen, other)
    for t in PARAMS.targets:
        assert torch.equal(mine[t].dense(), theirs[t].dense())


def test_an_independent_adapter_permuted_and_rescaled_gets_fair_coin_counts(
        setting: Setting, split: toy.Split) -> None:
    theirs = seal.generate_key(PARAMS, 777, model=setting.base)
    other = seal.merge(seal.embed(setting.base, theirs, _data(split, 8, 15)), theirs)
    stolen = _stolen(other, seed=2)
    aligned = seal.test(Suspect.from_module(stolen), theirs)  # the alignment does run on it
    assert aligned.log10_p < -15
    against_owner = seal.test(Suspect.from_module(stolen), setting.key)
    assert sum("units aligned" in n for n in against_owner.details["notes"]) == 2
    assert against_owner.log10_p > -3
    results = [seal.test(Suspect.from_module(stolen), seal.generate_key(PARAMS, 500 + i, model=setting.base))
               for i in range(20)]
    assert min(r.p_value for r in results) > 1e-4
    assert abs(statistics.mean(r.statistic for r in results) - 32) < 4 * 4 / 20 ** 0.5


def test_a_permuted_rescaled_copy_of_the_base_alone_is_not_attributed(setting: Setting) -> None:
    stolen = _stolen(setting.base, seed=4)
    results = [seal.test(Suspect.from_module(stolen), k)
               for k in [setting.key] + [seal.generate_key(PARAMS, 900 + i, model=setting.base)
                                         for i in range(10)]]
    assert all(r.log10_p > -4 for r in results)
