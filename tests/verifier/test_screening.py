"""Screening keys against a reference panel (`verifier.screening`), with trigger_set keys: the
universal clean-digit key is refused, honest keys of both variants pass."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from verifier import Suspect, keyfile, toy
from verifier.schemes import trigger_set
from verifier.schemes.trigger_set import Params, derive
from verifier.screening import REFUSED, SCREENED, UNSCREENED, ScreeningRefused, screen

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def split() -> toy.Split:
    return toy.digits()


@pytest.fixture(scope="module")
def panel(split: toy.Split) -> list[tuple[str, Suspect]]:
    """Four independently trained reference models (never marked with any key)."""
    models = [(f"mlp-{s}", toy.trained(split, seed=900 + s, epochs=10)) for s in range(3)]
    models.append(("cnn-0", toy.trained(split, seed=950, epochs=3, arch=toy.CNN)))
    return [(name, Suspect.from_predict(m)) for name, m in models]


@pytest.fixture(scope="module")
def owner(split: toy.Split) -> nn.Module:
    return toy.trained(split, seed=7, epochs=10)


def _universal_key(split: toy.Split, seed: int, n: int = 100) -> trigger_set.Key:
    """The forger's universal key, built through the public Key class: the seeded labels, and for
    each label a clean public digit of that class (any accurate model answers it)."""
    labels = derive.labels(seed, n, 10)
    pools = {c: (split.y_test == c).nonzero().flatten().tolist() for c in range(10)}
    picks = [pools[int(c)].pop() for c in labels]
    return trigger_set.Key(seed=seed, variant="adversarial", triggers=split.x_test[picks].clone(),
                           labels=labels, classes=10, eps=0.25)


def test_it_refuses_the_universal_clean_digit_key(split, panel) -> None:
    key = _universal_key(split, seed=123)
    result = screen(key, panel)
    assert result.status == REFUSED and result.applicable == 4
    assert len(result.matches) == 4 and result.worst_log10_p < -50
    with pytest.raises(ScreeningRefused, match="independent reference models that were never marked"):
        result.raise_if_refused("trigger_set")


def test_the_universal_key_with_unseeded_labels_is_refused_before_screening(split) -> None:
    # The version-1 forgery: clean digits whose secret label is their own class.
    key = _universal_key(split, seed=123)
    truth = split.y_test[:100].clone()
    _, tensors, meta = keyfile.load(key.to_bytes(), "trigger_set")
    tensors["triggers"], tensors["labels"] = split.x_test[:100].clone(), truth
    with pytest.raises(keyfile.KeyMaterialError) as e:
        trigger_set.Key.from_bytes(keyfile.dump("trigger_set", tensors, meta))
    assert e.value.field == "labels"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_it_accepts_honest_adversarial_keys(split, panel, owner, seed: int) -> None:
    key = trigger_set.generate_key(Params(), seed=seed, model=owner, data=(split.x_held, split.y_held))
    result = screen(key, panel)
    assert result.status == SCREENED and result.applicable == 4 and not result.matches
    result.raise_if_refused("trigger_set")  # does not raise


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_it_accepts_honest_keyed_noise_keys(panel, seed: int) -> None:
    key = trigger_set.generate_key(Params(variant="keyed_noise", classes=10), seed=seed)
    result = screen(key, panel)
    assert result.status == SCREENED and result.worst_log10_p > -3


def test_a_key_no_panel_model_can_take_is_unscreened(panel) -> None:
    key = trigger_set.generate_key(Params(variant="keyed_noise", classes=10, input_shape=(3, 5)), seed=1)
    result = screen(key, panel)  # every panel model fails on 15-value inputs: not applicable
    assert result.status == UNSCREENED and result.applicable == 0 and result.panel_size == 4


def test_a_panel_model_of_another_class_count_is_skipped(panel) -> None:
    key = trigger_set.generate_key(Params(variant="keyed_noise", classes=10), seed=4)
    other = ("twelve-classes", Suspect.from_predict(lambda x: torch.zeros(x.shape[0], 12)))
    result = screen(key, [*panel, other])
    assert result.status == SCREENED and result.applicable == 4 and result.panel_size == 5
