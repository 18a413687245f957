"""Measured quality of `uchida` on digits: the MLP (linear host layers) and the CNN (conv too).

Protocol (per model):
- Fidelity: for each seed, one initialisation trained twice on the same batches: without the
  mark, and with λ·BCE added from the first step (`uchida.embed` over the whole schedule, as
  Uchida et al. train). acc_clean / acc_marked are means over seeds; notes give each Δ.
- Power and attacks: the seed-0 marked model, then a fine-tune of all layers (5 epochs, fresh
  Adam, lr 1e-3, and a stronger 20 epochs at lr 3e-3), 50 % global magnitude pruning and an
  int8 round-trip, each with the attacker's accuracy.
- False positives: `pairs` independently initialised and trained unmarked models, each tested
  against a fresh key (its own seed); the null is exact for any model, so these measure the
  implementation, and randomized p-values check that it is exactly Binomial(T, 1/2).
- Invariant and moments hosts (`Params(host="invariant")`, `Params(host="moments")`, rows
  "… invariant host", "… moments host"): the same protocol, plus an attack row that widens the
  marked model by dummy units (100 %), permutes and rescales it; each null model is rewritten
  the same way (dummies 50 %, every unit permuted, rescaled with spread 4) before it is tested,
  so the canonical form (merging, dropping, normalizing) runs on every independent model: no
  step of it may manufacture a match.
- Overwriting (every row): the attacker embeds their own key of the same parameters into the
  seed-0 marked model for 10 epochs (Adam lr 1e-3, as the removal suite's strongest point);
  the entry records the owner's log10 p and the attacker's own.
- Cost: one key's extraction from a 2^20-value host vector and from a 1.2M-weight conv layer.
"""
from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from verifier import toy
from verifier.evaluation import (
    attack_entry,
    attacks,
    fpr_summary,
    marked_summary,
    randomized_binomial_p,
)
from verifier.schemes import uchida
from verifier.suspect import Suspect

_ARCHS: dict[str, tuple[str, Callable[[], nn.Module]]] = {
    "mlp": ("MLP 64-96-96-10 on digits (host: fc1, fc2, fc3 weights, M = 256)", toy.MLP),
    "cnn": ("CNN (2 conv + 2 dense) on digits (host: every conv/linear weight, M = 729)", toy.CNN),
}


def evaluate(quick: bool = False) -> dict[str, Any]:
    """Rows for `uchida` on the digits MLP and CNN, with each host rule (mean, invariant, moments).

    Args:
        quick: 2 seeds, 10 epochs and 10 null pairs instead of 5, 30 and 100.
    """
    torch.set_num_threads(1)
    return {"rows": [_row(arch, quick, host) for host in uchida.HOSTS for arch in ("mlp", "cnn")]}


def _rewritten(model: nn.Module, dummies: float, seed: int) -> nn.Module:
    """The same function with other weights: dummy units added, all units permuted, rescaled."""
    wide = attacks.dummy_neurons(model, dummies, seed=seed)
    return attacks.rescale_units(attacks.permute_hidden(wide, 1.0, seed=seed), 4.0, seed=seed)


def _row(arch: str, quick: bool, host: str = "mean") -> dict[str, Any]:
    start = time.perf_counter()
    title, make = _ARCHS[arch]
    invariant = host != "mean"  # computed on the canonical form: rewrites change nothing
    if invariant:
        m_host = uchida.generate_key(uchida.Params(host=host), seed=0, model=make()).host_size
        m_mean = uchida.generate_key(uchida.Params(), seed=0, model=make()).host_size
        title = title.replace(f"M = {m_mean}", f"M = {m_host}") + f", {host} host"
    split = toy.digits()
    seeds, epochs, pairs = (2, 10, 10) if quick else (5, 30, 100)
    null_epochs = (2 if quick else 5) if arch == "cnn" else (3 if quick else 10)
    params = uchida.Params(host=host)

    clean_acc, marked_acc, marked_models, keys = [], [], [], []
    for s in range(seeds):
        torch.manual_seed(s)
        init = make()
        clean = toy.train(copy.deepcopy(init), toy.batches(split.x_train, split.y_train, seed=s,
                                                           epochs=epochs))
        key = uchida.generate_key(params, seed=100 + s, model=init)
        marked = uchida.embed(init, key, toy.batches(split.x_train, split.y_train, seed=s,
                                                     epochs=epochs), epochs=1, lr=3e-3)
        clean_acc.append(toy.accuracy(clean, split.x_test, split.y_test))
        marked_acc.append(toy.accuracy(marked, split.x_test, split.y_test))
        marked_models.append(marked)
        keys.append(key)
    model, key = marked_models[0], keys[0]
    result = uchida.test(Suspect.from_module(model), key)
    per_seed = [uchida.test(Suspect.from_module(m), k).statistic for m, k in zip(marked_models, keys, strict=True)]

    candidates = [
        ("finetune_all", lambda: attacks.finetune(model, split, epochs=5, lr=1e-3)),
        ("finetune_all_strong", lambda: attacks.finetune(model, split, epochs=20, lr=3e-3)),
        ("prune_50", lambda: attacks.prune_global(model, 0.5)),
        ("int8", lambda: attacks.quantize_int8(model))]
    if arch == "cnn":
        candidates.append(("retrain_dense", lambda: attacks.retrain_dense(model, split)))
    if invariant:
        candidates.append(("dummies_100_permute_rescale", lambda: _rewritten(model, 1.0, seed=1)))
    theirs = uchida.generate_key(params, seed=900, model=model)
    candidates.append(("overwrite_10", lambda: uchida.embed(
        copy.deepcopy(model), theirs, list(toy.batches(split.x_train, split.y_train, seed=9)),
        epochs=10, lr=1e-3)))
    rows = []
    for name, attack in candidates:
        attacked = attack()
        r = uchida.test(Suspect.from_module(attacked), key)
        extra = {"attacker_log10_p": uchida.test(Suspect.from_module(attacked), theirs).log10_p
                 } if name == "overwrite_10" else {}
        rows.append(attack_entry(name, toy.accuracy(attacked, split.x_test, split.y_test), r,
                                 statistic=r.statistic, **extra))

    null, randomized = [], []
    u = torch.rand(pairs, generator=torch.Generator().manual_seed(0))
    for i in range(pairs):
        torch.manual_seed(10_000 + i)
        other = toy.train(make(), toy.batches(split.x_train, split.y_train, seed=10_000 + i,
                                               epochs=null_epochs))
        key_i = uchida.generate_key(params, seed=20_000 + i, model=other)
        if invariant:  # the canonical form has work to do on every null model
            other = _rewritten(other, 0.5, seed=30_000 + i)
        r = uchida.test(Suspect.from_module(other), key_i)
        null.append(r.log10_p)
        randomized.append(randomized_binomial_p(int(r.statistic), r.n, 0.5, float(u[i])))

    deltas = [100 * (m - c) for m, c in zip(marked_acc, clean_acc, strict=True)]
    notes = [
        f"T = {params.bits} bits, λ = {params.lam}, trained in from the first step "
        f"({epochs} epochs, Adam lr 3e-3); Δ per seed (pp): "
        + ", ".join(f"{d:+.2f}" for d in deltas)
        + f"; mean {statistics.mean(deltas):+.2f}; test set of {len(split.y_test)} images "
        f"(1 image = {100 / len(split.y_test):.2f} pp)",
        f"matching bits on the marked model of each seed: {per_seed} of {params.bits}",
        f"false positives: {pairs} independently initialised models trained {null_epochs} "
        "epochs without the mark, each against a fresh key; KS of randomized p-values tests "
        "that the null is exactly Binomial(T, 1/2)"
        + ("; each null model was first widened by 50 % dummy units (zero-outgoing, split, "
           "cancelling), every unit permuted and rescaled (spread 4), so the key is read "
           "through the canonical form's merging, dropping and normalizing" if invariant else ""),
    ]
    if invariant:
        notes.append("dummies_100_permute_rescale: the marked model widened by 100 % dummy "
                      "units per hidden layer (attacks.dummy_neurons), then every unit permuted "
                      "and rescaled (spread 4): identical outputs, other shapes")
    if arch == "mlp" and not invariant:
        notes.append(_finetune_note(split, params))
        notes.append(_timing_note())
    if arch == "cnn" and not invariant:
        rd = next(a for a in rows if a["name"] == "retrain_dense")
        notes.append(f"retrain_dense re-draws fc1/fc2, which hold 576 of the 729 host values; "
                     f"{rd['statistic']:.0f}/256 bits still match (log10 p = {rd['log10_p']:.1f}), "
                     "carried by the conv part of each projection. A key on the conv layers "
                     "alone (Params(layers=('conv1.weight', 'conv2.weight')), T <= 153) does "
                     "not depend on the dense layers at all")
    return {"scheme": uchida.NAME, "model": title,
            "acc_clean": statistics.mean(clean_acc), "acc_marked": statistics.mean(marked_acc),
            "delta_pp": 100 * (statistics.mean(marked_acc) - statistics.mean(clean_acc)),
            "marked": marked_summary(result), "attacks": rows,
            "fpr": fpr_summary(null, randomized), "queries_for_1e-6": None,
            "notes": notes, "seconds": time.perf_counter() - start}


def _finetune_note(split: toy.Split, params: uchida.Params) -> str:
    """Embedding into an already trained MLP with `embed`'s defaults (the demo's path)."""
    torch.manual_seed(0)
    model = toy.train_digits(toy.MLP(), split, epochs=30, seed=0)
    before = toy.accuracy(model, split.x_test, split.y_test)
    key = uchida.generate_key(params, seed=300, model=model)
    uchida.embed(model, key, toy.batches(split.x_train, split.y_train, seed=0))
    after = toy.accuracy(model, split.x_test, split.y_test)
    r = uchida.test(Suspect.from_module(model), key)
    return (f"marking a trained MLP afterwards (embed defaults: 10 epochs, lr 1e-3): accuracy "
            f"{100 * before:.2f} % -> {100 * after:.2f} %, {int(r.statistic)}/{r.n} bits, "
            f"log10 p = {r.log10_p:.1f}")


@torch.no_grad()
def _timing_note(repeats: int = 20) -> str:
    """Median wall time of one key's extraction (X regenerated from the seed each time)."""
    g = torch.Generator().manual_seed(0)
    cases = {"host vector of 2^20 values": torch.randn(1, 2**20, generator=g),
             "conv layer 256x512x3x3 (1.18M weights, M = 4608)": torch.randn(256, 512, 3, 3, generator=g)}
    out = []
    for label, weight in cases.items():
        params = uchida.Params(layers=("w",), shapes=(tuple(weight.shape),))
        times = []
        for i in range(repeats + 1):
            key = uchida.generate_key(params, seed=i)
            t = time.perf_counter()
            uchida.extract({"w": weight}, key)
            times.append(time.perf_counter() - t)
        out.append(f"{label}: {1e3 * statistics.median(times[1:]):.1f} ms")
    return (f"one key's extraction, T = {uchida.Params().bits}, 1 thread, median of {repeats} "
            "fresh keys: " + "; ".join(out))
