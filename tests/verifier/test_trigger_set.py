"""The `trigger_set` scheme through the contract: adversarial triggers, layer-wise embedding,
the exact black-box test."""
from __future__ import annotations

import copy
import json
import time

import pytest
import torch
from torch import nn

from verifier import Suspect, keyfile, toy
from verifier.evaluation import attacks
from verifier.schemes import get, trigger_set, uchida
from verifier.schemes.trigger_set import Params, TriggerSetError
from verifier.stats import log10_binom_sf

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def split() -> toy.Split:
    return toy.digits()


@pytest.fixture(scope="module")
def trained(split: toy.Split) -> nn.Module:
    torch.manual_seed(0)
    return toy.train_digits(toy.MLP(), split, epochs=30, seed=0)


@pytest.fixture(scope="module")
def key(trained: nn.Module, split: toy.Split) -> trigger_set.Key:
    return trigger_set.generate_key(Params(), seed=77, model=trained, data=(split.x_held, split.y_held))


@pytest.fixture(scope="module")
def marked(trained: nn.Module, key: trigger_set.Key, split: toy.Split) -> nn.Module:
    return trigger_set.embed(copy.deepcopy(trained), key,
                             toy.batches(split.x_train, split.y_train, seed=3))


def _predict_only(model: nn.Module) -> Suspect:
    """Black-box access with no way back to the weights: a plain function of a batch."""
    m = copy.deepcopy(model).eval()

    @torch.no_grad()
    def predict(x: torch.Tensor) -> torch.Tensor:
        return m(x)

    return Suspect.from_predict(predict)


def test_it_is_registered_under_its_name() -> None:
    assert get("trigger_set") is trigger_set and trigger_set.ACCESS == "black-box"


def test_it_attributes_a_marked_model_through_predict_only(marked, key) -> None:
    suspect = _predict_only(marked)
    r = trigger_set.test(suspect, key)
    assert not suspect.has_weights
    assert r.applicable and r.p_value < 1e-9 and r.null == "exact"
    assert r.queries == r.n == key.n == 100 and r.details["triggers"] == 100
    assert r.statistic >= 95


def test_it_keeps_the_marked_models_accuracy_within_a_point(marked, trained, split) -> None:
    before = toy.accuracy(trained, split.x_test, split.y_test)
    assert toy.accuracy(marked, split.x_test, split.y_test) >= before - 0.01


def test_it_gives_large_p_values_on_independently_trained_models(key, split) -> None:
    for seed in range(5):
        torch.manual_seed(200 + seed)
        other = toy.train_digits(toy.MLP(), split, epochs=10, seed=200 + seed)
        r = trigger_set.test(_predict_only(other), key)
        assert r.applicable and r.p_value > 1e-3


def test_it_still_attributes_after_fine_tuning_all_layers(marked, key, split) -> None:
    attacked = attacks.finetune(marked, split, epochs=5)
    assert trigger_set.test(_predict_only(attacked), key).p_value < 1e-6


def test_it_reports_the_queries_it_made_not_the_suspects_total(marked, key) -> None:
    suspect = _predict_only(marked)
    suspect.predict(torch.zeros(7, 64))
    r = trigger_set.test(suspect, key)
    assert r.queries == key.n and suspect.queries == key.n + 7


def test_it_is_not_applicable_without_a_predict_function(marked, key) -> None:
    r = trigger_set.test(Suspect.from_weights(marked.state_dict()), key)
    assert not r.applicable and "black-box" in r.details["reason"] and r.queries == 0


def test_it_is_not_applicable_to_outputs_that_are_not_one_row_per_trigger(key) -> None:
    r = trigger_set.test(Suspect.from_predict(lambda x: torch.zeros(x.shape[0])), key)
    assert not r.applicable and "one row of class scores" in r.details["reason"]
    assert r.queries == key.n


def test_its_p_value_is_the_exact_tail_over_informative_triggers(key) -> None:
    always = 3  # a suspect that answers class 3 to everything
    r = trigger_set.test(Suspect.from_predict(
        lambda x: nn.functional.one_hot(torch.full((x.shape[0],), always), 10).float()), key)
    k = int((key.labels == always).sum())
    informative = int((key.true_labels != always).sum())
    assert (r.statistic, r.n, r.details["informative"]) == (k, key.n, informative)
    assert r.log10_p == pytest.approx(log10_binom_sf(k, informative, 1 / 9))
    assert r.log10_p <= log10_binom_sf(k, key.n, 1 / 9)  # never above the unconditional bound


def test_a_suspect_that_always_answers_the_clean_label_has_p_one(key) -> None:
    truth = key.true_labels
    r = trigger_set.test(Suspect.from_predict(
        lambda x: nn.functional.one_hot(truth[:x.shape[0]], 10).float()), key)
    assert r.statistic == 0 and r.details["informative"] == 0 and r.p_value == 1.0


def test_its_prefix_p_value_checks_its_input(key) -> None:
    with pytest.raises(TriggerSetError, match="predictions for a key of 100 triggers"):
        trigger_set.p_value(torch.zeros(101, dtype=torch.int64), key)


def test_its_labels_are_never_the_clean_label_and_cover_the_other_classes(trained, split) -> None:
    k = trigger_set.generate_key(Params(n=300, steps=0), seed=5, model=trained,
                                 data=(split.x_held, split.y_held))
    shift = (k.labels - k.true_labels) % 10  # uniform on 1..9 by construction
    assert int(shift.min()) >= 1
    counts = torch.bincount(shift, minlength=10)[1:].float()
    chi2 = float(((counts - 300 / 9) ** 2 / (300 / 9)).sum())
    assert chi2 < 27.9  # 8 degrees of freedom, P[chi2 > 27.9] = 5e-4


def test_its_labels_do_not_depend_on_the_model(trained, split) -> None:
    held = (split.x_held, split.y_held)
    a = trigger_set.generate_key(Params(n=50), seed=9, model=trained, data=held)
    b = trigger_set.generate_key(Params(n=50), seed=9, model=toy.MLP(), data=held)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.true_labels, b.true_labels)
    assert not torch.equal(a.triggers, b.triggers)


def test_its_triggers_are_adversarial_and_within_the_budget(trained, key, split) -> None:
    dist = (key.triggers[:, None, :] - split.x_held[None, :, :]).abs().amax(dim=2)  # (n, held)
    assert float(dist.min(dim=1).values.max()) <= 0.25 + 1e-6
    assert float(key.triggers.min()) >= 0.0 and float(key.triggers.max()) <= 1.0
    with torch.no_grad():
        wrong = (trained(key.triggers).argmax(dim=1) != key.true_labels).float().mean()
    assert wrong >= 0.8


def test_its_key_bytes_are_deterministic_and_round_trip(trained, key, marked, split) -> None:
    blob = key.to_bytes()
    assert blob == key.to_bytes()
    again = trigger_set.generate_key(Params(), seed=77, model=trained, data=(split.x_held, split.y_held))
    assert again.to_bytes() == blob
    parsed = trigger_set.Key.from_bytes(blob)
    assert parsed == key
    assert trigger_set.test(_predict_only(marked), parsed).to_dict() == \
        trigger_set.test(_predict_only(marked), key).to_dict()


def test_its_public_params_hold_no_trigger_or_label(key) -> None:
    public = key.public_params()
    text = json.dumps(public)
    assert public["triggers"] == 100 and public["classes"] == 10
    assert public["p0"] == pytest.approx(1 / 9) and len(text) < 300


def test_it_embeds_together_with_uchida_on_one_mlp_within_the_demo_budget(split) -> None:
    start = time.perf_counter()
    torch.manual_seed(4)
    model = toy.train_digits(toy.MLP(), split, epochs=30, seed=4)
    ukey = uchida.generate_key(uchida.Params(), seed=11, model=model)
    tkey = trigger_set.generate_key(Params(), seed=12, model=model, data=(split.x_held, split.y_held))
    trigger_set.embed(model, tkey, toy.batches(split.x_train, split.y_train, seed=4),
                      extra_loss=uchida.regularizer(ukey))
    assert time.perf_counter() - start < 20.0
    suspect = Suspect.from_module(model)
    assert trigger_set.test(suspect, tkey).p_value < 1e-9
    assert uchida.test(suspect, ukey).p_value < 1e-9


def test_it_marks_every_layer_of_a_cnn(split) -> None:
    torch.manual_seed(1)
    cnn = toy.train_digits(toy.CNN(), split, epochs=3, seed=1)
    before = copy.deepcopy(cnn.state_dict())
    k = trigger_set.generate_key(Params(n=20), seed=3, model=cnn, data=(split.x_held, split.y_held))
    batches = list(toy.batches(split.x_train[:320], split.y_train[:320], seed=1))
    trigger_set.embed(cnn, k, batches, epochs_per_layer=1, final_epochs=10)
    assert all(not torch.equal(before[n], t) for n, t in cnn.state_dict().items())
    assert trigger_set.test(_predict_only(cnn), k).p_value < 1e-9


def test_it_survives_retraining_the_dense_head_of_a_deep_cnn(split) -> None:
    torch.manual_seed(0)
    unmarked = toy.train_digits(toy.DeepCNN(), split, epochs=10, seed=0)
    k = trigger_set.generate_key(Params(n=40), seed=100, model=unmarked,
                                 data=(split.x_held, split.y_held))
    marked = trigger_set.embed(copy.deepcopy(unmarked), k,
                               toy.batches(split.x_train, split.y_train, seed=0),
                               epochs_per_layer=2, final_epochs=10, triggers_per_batch=8)
    attacked = attacks.retrain_dense(marked, split)
    marked_acc = toy.accuracy(marked, split.x_test, split.y_test)
    assert toy.accuracy(attacked, split.x_test, split.y_test) >= marked_acc - 0.05
    assert trigger_set.test(_predict_only(attacked), k).p_value < 1e-6
    control = attacks.retrain_dense(unmarked, split)
    assert trigger_set.test(_predict_only(control), k).p_value > 1e-3


def test_it_needs_the_model_and_held_out_data_to_generate_a_key(trained, split) -> None:
    with pytest.raises(TriggerSetError, match=r"pass model=<the trained model> and data="):
        trigger_set.generate_key(Params(), seed=1)
    with pytest.raises(TriggerSetError, match="data="):
        trigger_set.generate_key(Params(), seed=1, model=trained)


def test_it_refuses_fewer_held_out_inputs_than_triggers(trained, split) -> None:
    with pytest.raises(TriggerSetError, match="300 held-out inputs for 301 triggers"):
        trigger_set.generate_key(Params(n=301), seed=1, model=trained, data=(split.x_held, split.y_held))


def test_it_refuses_a_model_with_two_classes(split) -> None:
    two = nn.Linear(64, 2)
    with pytest.raises(TriggerSetError, match="at least 3"):
        trigger_set.generate_key(Params(n=5), seed=1, model=two, data=(split.x_held, split.y_held % 2))


def test_it_refuses_labels_outside_the_models_classes(trained, split) -> None:
    with pytest.raises(TriggerSetError, match=r"labels must lie in \[0, 10\)"):
        trigger_set.generate_key(Params(n=5), seed=1, model=trained,
                                 data=(split.x_held, split.y_held + 5))


@pytest.mark.parametrize("params", [Params(n=0), Params(eps=-0.1), Params(lo=1.0, hi=0.0)])
def test_it_refuses_invalid_parameters(trained, split, params) -> None:
    with pytest.raises(TriggerSetError, match="invalid Params"):
        trigger_set.generate_key(params, seed=1, model=trained, data=(split.x_held, split.y_held))


def test_it_refuses_a_seed_outside_63_bits(trained, split) -> None:
    with pytest.raises(TriggerSetError, match="seed must be an integer"):
        trigger_set.generate_key(Params(), seed=-5, model=trained, data=(split.x_held, split.y_held))


def test_it_refuses_to_embed_without_data(trained, key) -> None:
    with pytest.raises(TriggerSetError, match="pass data="):
        trigger_set.embed(copy.deepcopy(trained), key)


def test_it_refuses_the_key_of_another_scheme(key) -> None:
    blob = keyfile.dump("uchida", {"labels": key.labels}, {})
    with pytest.raises(keyfile.KeyFormatError, match="expected `trigger_set`"):
        trigger_set.Key.from_bytes(blob)


def test_it_refuses_garbage_bytes_as_a_key() -> None:
    with pytest.raises(keyfile.KeyFormatError):
        trigger_set.Key.from_bytes(b"\x00" * 40)


@pytest.mark.parametrize("change", ["label_is_clean", "classes", "labels_shape", "version"])
def test_it_refuses_an_inconsistent_key_blob(key, change: str) -> None:
    _, tensors, meta = keyfile.load(key.to_bytes(), "trigger_set")
    if change == "label_is_clean":
        tensors["labels"] = tensors["true_labels"].clone()
    elif change == "classes":
        meta["classes"] = 2
    elif change == "labels_shape":
        tensors["labels"] = tensors["labels"][:-1]
    else:
        meta["version"] = 0
    with pytest.raises(keyfile.KeyFormatError, match="malformed trigger_set key"):
        trigger_set.Key.from_bytes(keyfile.dump("trigger_set", tensors, meta))
