"""Measured quality of the `lsb` scheme on a digits MLP: fidelity, power, fragility, false positives.

The row states what the scheme is: exact copy and integrity only. Conversions (fp16, int8)
erase it; partial changes (pruning, fine-tuning) leave only the bits of weights they do not
touch, always with a broken signature and digest; the row says so rather than imply robustness.

False positives: `pairs` independent (owner model, key, suspect) triples; each suspect is an
independently trained MLP signed with its own, independent `lsb` key (other owners' signed
models are exactly what a registry scan meets), tested against the owner's key.
"""
from __future__ import annotations

import copy
import random
import time
from typing import Any

from torch import nn

from verifier import toy
from verifier.evaluation import (
    attack_entry,
    attacks,
    fpr_summary,
    marked_summary,
    randomized_binomial_p,
)
from verifier.schemes import lsb
from verifier.suspect import Suspect


def _attack(name: str, model: nn.Module, split: toy.Split, key: lsb.Key) -> dict[str, Any]:
    r = lsb.test(Suspect.from_module(model), key)
    return attack_entry(name, toy.accuracy(model, split.x_test, split.y_test), r,
                        masked_digest_match=r.details["masked_digest_match"],
                        signature_valid=r.details["signature_valid"])


def evaluate(quick: bool = False) -> dict[str, Any]:
    """One row for `lsb` on the digits MLP (schema: `verifier.evaluation`).

    Args:
        quick: fewer epochs and 20 instead of 100 false-positive pairs (tests, demos).
    """
    start = time.perf_counter()
    split = toy.digits()
    epochs, null_epochs, pairs = (10, 3, 20) if quick else (30, 10, 100)
    params = lsb.Params()
    model = toy.trained(split, 0, epochs)
    key = lsb.generate_key(params, seed=1, model=model)
    signed = lsb.embed(model, key)
    acc_clean = toy.accuracy(model, split.x_test, split.y_test)
    acc_marked = toy.accuracy(signed, split.x_test, split.y_test)
    marked = lsb.test(Suspect.from_module(signed), key)

    tampered = {k: v.clone() for k, v in signed.state_dict().items()}
    spot = next(i for i in range(tampered["fc2.weight"].numel())
                if ("fc2.weight", i) not in set(key.positions))
    tampered["fc2.weight"].view(-1)[spot] += 1e-3
    tamper = lsb.test(Suspect.from_weights(tampered), key)

    rows = [
        _attack("finetune_all",
                attacks.finetune(signed, split, epochs=5), split, key),
        _attack("finetune_last",
                attacks.finetune(signed, split, epochs=5, only=("fc3",)), split, key),
        _attack("prune_50", attacks.prune_global(signed, 0.5), split, key),
        _attack("int8", attacks.quantize_int8(signed), split, key),
        _attack("fp16 round-trip (half precision and back)", copy.deepcopy(signed).half().float(), split, key),
    ]

    null, randomized = [], []
    coin = random.Random(0)  # only for the randomized p-values that check exactness
    for i in range(pairs):
        owner = toy.trained(split, 1000 + 2 * i, null_epochs)
        other = toy.trained(split, 1001 + 2 * i, null_epochs)
        owner_key = lsb.generate_key(params, seed=5000 + i, model=owner)
        other_signed = lsb.embed(other, lsb.generate_key(params, seed=9000 + i, model=other))
        r = lsb.test(Suspect.from_module(other_signed), owner_key)
        null.append(r.log10_p)
        randomized.append(randomized_binomial_p(int(r.statistic), r.n, 0.5, coin.random()))

    notes = [
        "exact copy and integrity only: fp16/bf16/int8 conversion or retraining erases the "
        "mark, and a negative test says nothing about derivation; bits survive only in weights "
        "a modification leaves untouched (pruning keeps the unpruned half, last-layer "
        "fine-tuning keeps fc1/fc2, full fine-tuning keeps the weights of the always-blank "
        "border pixels, whose gradient is zero), always with a broken signature and digest",
        f"k={params.k} low mantissa bits x {params.positions} keyed positions = "
        f"{params.n_bits} bits (Ed25519 signature over the masked-weight digest, "
        f"repetition {params.repetitions}, XOR keyed pad: exact Bin(n, 1/2) null for any suspect)",
        f"marked copy: masked_digest_match={marked.details['masked_digest_match']}, "
        f"signature_valid={marked.details['signature_valid']}",
        f"one weight changed by 1e-3 away from the marked bits: log10 p = "
        f"{tamper.log10_p:.1f} (bits intact) but masked_digest_match="
        f"{tamper.details['masked_digest_match']}, signature_valid="
        f"{tamper.details['signature_valid']}: a tampered copy is told from an exact copy",
        f"attribution: only a valid owner signature attributes (marked copy may_attribute="
        f"{marked.may_attribute}, tampered copy may_attribute={tamper.may_attribute}); every "
        "attack row above is integrity-only evidence, reported but never naming an owner",
        f"false positives: {pairs} pairs, each an independently trained MLP signed with its own "
        "lsb key, tested against another independent model's key",
    ]
    return {"scheme": "lsb", "model": "mlp-digits (64-96-96-10)",
            "acc_clean": acc_clean, "acc_marked": acc_marked,
            "delta_pp": 100.0 * (acc_marked - acc_clean), "marked": marked_summary(marked),
            "attacks": rows, "fpr": fpr_summary(null, randomized), "queries_for_1e-6": None,
            "notes": notes, "seconds": time.perf_counter() - start}
