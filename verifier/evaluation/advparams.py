"""Measured quality of `advparams` (AdvParams encryption) on the digits MLP and the small CNN.

One row per model. Columns, read for an active scheme: `acc_clean` is the plain model, `acc_marked` the published
ENCRYPTED model (the drop is the point: target >= 80 % relative), and the decrypted model is
bit-identical to the plain one (`extra`). `marked` tests the encrypted copy; the attacks run on
the DECRYPTED model, the copy a leaking licensee would hand on, and ask whether the exact-copy
fingerprint survives (it is not meant to). The repair attempt fine-tunes the ENCRYPTED model on
10 % of the training data, the attack AdvParams is designed to make expensive.

False positives: `pairs` independent (owner model, key, suspect) triples; the suspect is an
independently trained model, encrypted with its own key for even pairs, plain for odd pairs.
"""
from __future__ import annotations

import time
from typing import Any

from safetensors.torch import save
from torch import nn

from verifier import forgery, toy
from verifier.evaluation import attack_entry, attacks, fpr_summary, marked_summary
from verifier.schemes import advparams as ap
from verifier.suspect import Suspect


def _bytes(model: nn.Module) -> bytes:
    return save({k: v.contiguous() for k, v in model.state_dict().items()})


def _attack(name: str, model: nn.Module, split: toy.Split, key: ap.Key) -> dict[str, Any]:
    r = ap.test(Suspect.from_module(model), key)
    return attack_entry(name, toy.accuracy(model, split.x_test, split.y_test), r,
                        copy=r.details["copy"])


def _encryption(split: toy.Split, arch: type[nn.Module], epochs: int, params: ap.Params
                ) -> dict[str, Any]:
    """Encrypt one trained model and measure locking, restore and the repair attempt."""
    model = toy.trained(split, 0, epochs, arch)
    enc, key = ap.encrypt(model, params, seed=1, data=(split.x_held, split.y_held))
    dec = ap.decrypt(enc, key)
    repaired = attacks.finetune(enc, split, epochs=5, fraction=0.1)
    acc = {name: toy.accuracy(m, split.x_test, split.y_test)
           for name, m in (("clean", model), ("encrypted", enc), ("decrypted", dec),
                           ("repaired", repaired))}
    return {"model": model, "enc": enc, "dec": dec, "key": key, "repaired": repaired,
            "acc": acc, "summary": {
                "acc_clean": acc["clean"], "acc_encrypted": acc["encrypted"],
                "acc_decrypted": acc["decrypted"],
                "acc_repaired_finetune_10pct": acc["repaired"],
                "relative_drop": 1.0 - acc["encrypted"] / acc["clean"],
                "positions": key.positions, "total_parameters": key.stats["total_parameters"],
                "fraction_touched": key.fraction_touched(),
                "bit_exact_restore": _bytes(dec) == _bytes(model),
                "encrypted_tensors": sorted({n for n, *_ in key.entries()})}}


def _row(arch: type[nn.Module], label: str, quick: bool) -> dict[str, Any]:
    """One row: encryption of one architecture, its fingerprint, attacks and false positives."""
    start = time.perf_counter()
    split = toy.digits()
    cnn = arch is toy.CNN
    epochs, null_epochs, pairs = ((6 if cnn else 10), 3, 20) if quick else \
        ((15 if cnn else 30), (5 if cnn else 10), 100)
    params = ap.Params()
    run = _encryption(split, arch, epochs, params)
    key, leaked, last = run["key"], run["dec"], ("fc2",) if cnn else ("fc3",)
    marked = ap.test(Suspect.from_module(run["enc"]), key)
    decrypted = ap.test(Suspect.from_module(leaked), key)
    rows = [
        _attack("finetune_all", attacks.finetune(leaked, split, epochs=5), split, key),
        _attack("finetune_last", attacks.finetune(leaked, split, epochs=5, only=last), split, key),
        _attack("prune_50", attacks.prune_global(leaked, 0.5), split, key),
        _attack("int8", attacks.quantize_int8(leaked), split, key),
        _attack("repair: fine-tune the ENCRYPTED model on 10 % of the training data, 5 epochs",
                run["repaired"], split, key),
    ]

    null = []
    for i in range(pairs):
        owner = toy.trained(split, 1000 + 2 * i, null_epochs, arch)
        other = toy.trained(split, 1001 + 2 * i, null_epochs, arch)
        _, owner_key = ap.encrypt(owner, params, seed=5000 + i, data=(split.x_held, split.y_held))
        suspect = (ap.encrypt(other, params, seed=9000 + i, data=(split.x_held, split.y_held))[0]
                   if i % 2 == 0 else other)
        null.append(ap.test(Suspect.from_module(suspect), owner_key).log10_p)

    m = run["summary"]
    notes = [
        "exact-copy fingerprint: the p-value comes from encrypted copies only (proven bound); "
        "decrypted copies are recognised in the details but never accused; fine-tuning and "
        "quantization erase it, pruning keeps the (large) key weights it does not zero; the "
        "encryption itself is access control, not ownership evidence",
        f"acc marked = the ENCRYPTED model: {m['acc_clean']:.3f} -> {m['acc_encrypted']:.3f} "
        f"(relative drop {100 * m['relative_drop']:.1f} %, target >= 80 %), {m['positions']} "
        f"of {m['total_parameters']} parameters ({100 * m['fraction_touched']:.4f} %) in "
        f"{', '.join(m['encrypted_tensors'])}; decrypted {m['acc_decrypted']:.3f}, bit-exact "
        f"restore (identical safetensors bytes): {m['bit_exact_restore']}",
        f"repair attempt (fine-tune the encrypted model on 10 % of the training data, 5 "
        f"epochs): accuracy {m['acc_repaired_finetune_10pct']:.3f}: on a model this small a "
        "little data repairs the damage (the greedy search concentrates on the last layer)",
        f"paper: 0.000205 % of parameters, on CNNs with millions of weights; this model has "
        f"{m['total_parameters']}, so a few dozen positions are a larger fraction",
        "the attacks run on the DECRYPTED model (what a leaking licensee hands on), so none is "
        "'detected': a decrypted copy matches the original values "
        f"({decrypted.details['matches_original']} of {decrypted.details['positions']} "
        "positions), but "
        "only an ASSUMED bound would turn that into a p-value "
        f"(log10 p = {decrypted.details['log10_p_original_if_assumed']:.1f} if one assumed "
        f"2^-{params.orig_bound_log2} per position), and Hallmark does not accuse on an "
        "assumption; mark the model with uchida or lsb before encrypting it; the encrypted "
        f"copy's bound P[Bin({key.candidates}, 2^-{params.dither_bits}) >= matches] over the "
        "keyed candidates is PROVEN by the keyed candidates and dither, for any key that "
        "Key.from_bytes accepts (forgery cost of a perfect match: "
        f"{forgery.forgery_bits(key.best_log10_p()):.0f} bits)",
        f"stopping rule: loss > {params.loss_multiple:g} x the original AND accuracy on the "
        f"{params.samples} held-out examples <= {1 - params.target_drop:.2f} x the original "
        "(the paper's loss rule alone stops at a ~6 % drop on these models)",
        f"false positives: {pairs} pairs (independent owner model and key; independently "
        "trained suspect, encrypted with its own key for half of them)",
    ]
    return {"scheme": "advparams", "model": label,
            "acc_clean": m["acc_clean"], "acc_marked": m["acc_encrypted"],
            "delta_pp": 100.0 * (m["acc_encrypted"] - m["acc_clean"]),
            "marked": marked_summary(marked), "attacks": rows, "fpr": fpr_summary(null),
            "queries_for_1e-6": None,
            "extra": {**m, "decrypted_copy_log10_p_if_assumed":
                      decrypted.details["log10_p_original_if_assumed"]},
            "notes": notes, "seconds": time.perf_counter() - start}


def evaluate(quick: bool = False) -> dict[str, Any]:
    """Two rows for `advparams`: the digits MLP and the small CNN (schema: `verifier.evaluation`).

    Args:
        quick: fewer epochs and 20 instead of 100 false-positive pairs (tests, demos).
    """
    return {"rows": [_row(toy.MLP, "mlp-digits (64-96-96-10)", quick),
                     _row(toy.CNN, "cnn-digits (2 conv + 2 dense)", quick)]}
