"""Training-time marks in the owner's own loop (verifier.training): a plain PyTorch loop with
the uchida loss term and the trigger mixer, and a transformers Trainer with HallmarkCallback
(uchida and trigger_set; SEAL on a model from `seal_model`, released as a PEFT adapter)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from verifier import forgery, toy
from verifier.schemes import trigger_set, uchida
from verifier.suspect import Suspect
from verifier.training import TriggerMixer, uchida_loss, verify

torch.set_num_threads(1)  # the machine is shared: keep each test module on one core
FLOOR = forgery.floor_log10_p()


@pytest.fixture(scope="module")
def split() -> toy.Split:
    return toy.digits()


@pytest.fixture(scope="module")
def pretrained(split: toy.Split) -> nn.Module:
    torch.manual_seed(0)
    return toy.train_digits(toy.MLP(), split, epochs=6)


def _keys(model: nn.Module, split: toy.Split) -> tuple[uchida.Key, trigger_set.Key]:
    ukey = uchida.generate_key(uchida.Params(), seed=11, model=model)
    tkey = trigger_set.generate_key(trigger_set.Params(n=60), seed=12, model=model,
                                    data=(split.x_held, split.y_held))
    return ukey, tkey


def test_a_plain_loop_with_the_loss_term_and_the_mixer_writes_both_marks(pretrained, split):
    import copy

    model = copy.deepcopy(pretrained)
    ukey, tkey = _keys(model, split)
    reg, mix = uchida_loss(ukey), TriggerMixer(tkey, per_batch=16)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for x, y in toy.batches(split.x_train, split.y_train, epochs=12):
        x, y = mix(x, y)
        loss = nn.functional.cross_entropy(model(x), y) + reg(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert verify(model, ukey).log10_p < FLOOR
    assert verify(model, tkey).log10_p < FLOOR
    assert mix.learned(model) > 0.8  # most triggers learned; the floor check above is the contract
    assert toy.accuracy(model, split.x_test, split.y_test) > 0.85


def test_an_unmarked_model_fails_verify_with_a_message_that_says_what_to_do(pretrained, split):
    ukey, _ = _keys(pretrained, split)
    with pytest.raises(ValueError, match="train longer"):
        verify(pretrained, ukey)
    assert uchida.test(Suspect.from_module(pretrained), ukey).log10_p > -3


def test_the_mixer_refuses_batches_of_another_input_shape(pretrained, split):
    _, tkey = _keys(pretrained, split)
    with pytest.raises(ValueError, match="generate the key with inputs shaped"):
        TriggerMixer(tkey)(torch.zeros(4, 7), torch.zeros(4, dtype=torch.int64))


class _Classifier(nn.Module):
    """A Trainer-style model: forward(input, labels) -> {"loss", "logits"}."""

    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        self.mlp = mlp

    def forward(self, input: torch.Tensor, labels: torch.Tensor | None = None) -> dict:  # noqa: A002
        logits = self.mlp(input)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        return out


class _Digits(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"input": self.x[i], "labels": self.y[i]}


def test_a_transformers_trainer_with_the_callback_writes_both_marks(pretrained, split, tmp_path):
    import copy

    from transformers import Trainer, TrainingArguments

    from verifier.training.hf import HallmarkCallback

    model = _Classifier(copy.deepcopy(pretrained))
    ukey = uchida.generate_key(uchida.Params(), seed=11, model=model)  # "mlp.fc1.weight", …
    _, tkey = _keys(model.mlp, split)  # triggers are adversarial examples of the classifier
    callback = HallmarkCallback(uchida=ukey, trigger_set=tkey,
                                forward=lambda m, x: m(x)["logits"])
    args = TrainingArguments(output_dir=str(tmp_path), num_train_epochs=10,
                             per_device_train_batch_size=64, learning_rate=3e-3,
                             report_to="none", save_strategy="no", logging_strategy="no",
                             disable_tqdm=True, use_cpu=True, seed=0, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=_Digits(split.x_train, split.y_train),
                      callbacks=[callback])
    trainer.train()
    assert callback.steps == trainer.state.global_step > 0
    model.eval()
    assert uchida.test(Suspect.from_module(model), ukey).log10_p < FLOOR
    assert trigger_set.test(Suspect.from_predict(lambda x: model(x)["logits"]), tkey).log10_p < FLOOR
    assert toy.accuracy(lambda x: model(x)["logits"], split.x_test, split.y_test) > 0.85


def _trainer(model: nn.Module, split: toy.Split, callback, tmp_path, epochs: int):  # type: ignore[no-untyped-def]
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), num_train_epochs=epochs,
                             per_device_train_batch_size=64, learning_rate=3e-3,
                             report_to="none", save_strategy="no", logging_strategy="no",
                             disable_tqdm=True, use_cpu=True, seed=0, dataloader_num_workers=0)
    return Trainer(model=model, args=args, train_dataset=_Digits(split.x_train, split.y_train),
                   callbacks=[callback])


def test_a_transformers_trainer_with_the_callback_writes_a_seal_adapter_that_is_attributed(
        pretrained, split, tmp_path):
    import copy

    from verifier.models import load_suspect
    from verifier.schemes import seal
    from verifier.training import seal_model
    from verifier.training.hf import HallmarkCallback

    base = _Classifier(copy.deepcopy(pretrained))
    params = seal.Params(targets=("mlp.fc1", "mlp.fc2"), r=8, alpha=16.0, bits=96)
    key = seal.generate_key(params, seed=21, model=base)
    model = seal_model(base, key)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        f"mlp.{t}.seal_{w}" for t in ("fc1", "fc2") for w in "AB"}
    callback = HallmarkCallback(seal=key, forward=lambda m, x: m(x)["logits"])
    passports = []
    model.register_forward_pre_hook(
        lambda m, _: passports.append(seal.lora.seal_layers(m)["mlp.fc1"].active))
    trainer = _trainer(model, split, callback, tmp_path, epochs=12)
    trainer.train()
    assert set(passports[:4]) == {"C", "C_p"}  # SEAL alternates the passports
    assert seal.lora.seal_layers(model)["mlp.fc1"].active == "C"  # the released one at the end
    assert 0 < callback.steps < trainer.state.global_step  # the hinge after the warm-up
    assert toy.accuracy(lambda x: model(x)["logits"], split.x_test, split.y_test) > 0.85
    key = seal.finalize_key(model, key)
    adapter = seal.release(model, key, tmp_path / "adapter")
    released = seal.test(load_suspect(adapter).suspect, seal.Key.from_bytes(key.to_bytes()))
    assert released.log10_p < FLOOR, released
    other = seal.generate_key(params, seed=22, model=base)  # another owner's key: no match
    assert seal.test(load_suspect(adapter).suspect, other).log10_p > -3


def test_the_seal_callback_refuses_a_model_that_was_not_wrapped_with_the_key(pretrained, split,
                                                                            tmp_path):
    import copy

    from verifier.schemes import seal
    from verifier.training import seal_model
    from verifier.training.hf import HallmarkCallback

    base = _Classifier(copy.deepcopy(pretrained))
    params = seal.Params(targets=("mlp.fc1",), r=4, alpha=8.0, bits=96)
    key = seal.generate_key(params, seed=23, model=base)
    callback = HallmarkCallback(seal=key, forward=lambda m, x: m(x)["logits"])
    with pytest.raises(seal.SealSetupError, match=r"seal_model\(base, key\)"):
        _trainer(copy.deepcopy(base), split, callback, tmp_path, epochs=1).train()
    moved = copy.deepcopy(base)
    with torch.no_grad():
        moved.mlp.fc1.weight.add_(0.01)
    with pytest.raises(seal.SealSetupError, match="not the key's base"):
        seal_model(moved, key)
    with pytest.raises(ValueError, match="seal_warmup"):
        HallmarkCallback(seal=key, seal_warmup=1.0)
    with pytest.raises(ValueError, match="needs an uchida, trigger_set or seal key"):
        HallmarkCallback()
