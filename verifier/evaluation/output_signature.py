"""Measured quality of `output_signature` on a digits MLP served behind a predict function.

What the row shows: the wrapper changes no prediction and moves each logit below the runner-up
by less than (e^delta - 1) of its gap; the test needs a handful of black-box queries; attacks
on the weights INSIDE the wrapper leave it in place (the wrapper does not depend on them), and
so do output post-processings (probabilities, temperature, affine maps, fp16), while serving
the stolen weights without the wrapper, or rounding the outputs coarsely, removes it, as the
CLAIM says.

False positives: `pairs` independent (key, suspect) pairs; each suspect is an independently
trained MLP wrapped with its own, independent key (another owner's signed endpoint).
"""
from __future__ import annotations

import math
import random
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
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
from verifier.schemes import output_signature as osig
from verifier.suspect import Suspect


def _row(name: str, predict: Callable[[torch.Tensor], torch.Tensor], split: toy.Split,
         key: osig.Key) -> dict[str, Any]:
    r = osig.test(Suspect.from_predict(predict), key)
    with torch.no_grad():
        acc = float((predict(split.x_test).argmax(dim=1) == split.y_test).float().mean())
    return attack_entry(name, acc, r, queries=r.queries)


def onnx_predict(model: nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Export `model` with the dynamo ONNX exporter and serve it with onnxruntime."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = str(Path(folder) / "model.onnx")
        torch.onnx.export(model.eval(), (example,), path, dynamo=True, verbose=False,
                          dynamic_shapes=({0: torch.export.Dim("batch")},))
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def evaluate(quick: bool = False) -> dict[str, Any]:
    """One row for `output_signature` on the digits MLP (schema: `verifier.evaluation`).

    Args:
        quick: fewer epochs and 20 instead of 100 false-positive pairs (tests, demos).
    """
    start = time.perf_counter()
    split = toy.digits()
    epochs, null_epochs, pairs = (10, 3, 20) if quick else (30, 10, 100)
    params = osig.Params()
    model = toy.trained(split, 0, epochs)
    key = osig.generate_key(params, seed=1)
    wrapped = osig.embed(model, key)
    acc_clean = toy.accuracy(model, split.x_test, split.y_test)
    acc_marked = toy.accuracy(wrapped, split.x_test, split.y_test)
    marked = osig.test(Suspect.from_predict(wrapped), key)
    with torch.no_grad():
        probe = torch.cat([split.x_test, torch.rand(1000, 64, generator=torch.Generator()
                                                    .manual_seed(0))])
        moved = float((model(probe) - wrapped(probe)).abs().max())
        same_top = bool(torch.equal(model(probe).argmax(1), wrapped(probe).argmax(1)))

    def served(m: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda x: m.eval()(x).detach()

    rows = [
        _row("finetune_all",
             served(attacks.finetune(wrapped, split, epochs=5)), split, key),
        _row("finetune_last",
             served(attacks.finetune(wrapped, split, epochs=5, only=("model.fc3",))), split, key),
        _row("prune_50",
             served(attacks.prune_global(wrapped, 0.5)), split, key),
        _row("int8", served(attacks.quantize_int8(wrapped)),
             split, key),
        _row("ONNX export, served by onnxruntime", onnx_predict(wrapped, split.x_test[:2]),
             split, key),
        _row("log-probabilities instead of logits",
             lambda x: torch.log_softmax(wrapped(x).detach(), dim=1), split, key),
        _row("stolen weights re-served without the wrapper", served(model), split, key),
        _row("probabilities instead of logits",
             lambda x: torch.softmax(wrapped(x).detach(), dim=1), split, key),
        _row("probabilities at temperature 3",
             lambda x: torch.softmax(wrapped(x).detach() / 3, dim=1), split, key),
        _row("affine map of the logits (1.7 x logits - 4.2)",
             lambda x: 1.7 * wrapped(x).detach() - 4.2, split, key),
        _row("logits x 1.001", lambda x: wrapped(x).detach() * 1.001, split, key),
        _row("fp16 logits", lambda x: wrapped(x).detach().half(), split, key),
        _row("fp16 probabilities", lambda x: torch.softmax(wrapped(x).detach(), dim=1).half(),
             split, key),
        _row("outputs rounded to 2 decimals",
             lambda x: (wrapped(x).detach() * 100).round() / 100, split, key),
        _row("outputs rounded to integers", lambda x: wrapped(x).detach().round(), split, key),
    ]

    null, randomized = [], []
    coin = random.Random(0)  # only for the randomized p-values that check exactness
    for i in range(pairs):
        other = toy.trained(split, 1000 + i, null_epochs)
        other_signed = osig.embed(other, osig.generate_key(params, seed=9000 + i))
        owner_key = osig.generate_key(params, seed=5000 + i)
        r = osig.test(Suspect.from_predict(served(other_signed)), owner_key)
        null.append(r.log10_p)
        randomized.append(randomized_binomial_p(int(r.statistic), r.n, 0.5, coin.random()))

    notes = [
        "proves the outputs came from a wrapped copy; says nothing about weights stolen and "
        "re-served without the wrapper (row 'stolen weights re-served without the wrapper'), "
        "and rounding the outputs coarsely removes it",
        "finetune_all, finetune_last, prune_50 and int8 attack the weights INSIDE the wrapper "
        "and keep the signature by construction: they show the wrapper survives training, "
        "pruning, quantization and ONNX export, not that the signature is robust",
        f"fidelity: top-1 identical on {len(probe)} inputs: {same_top}; largest logit change "
        f"{moved:.2e} (delta = {params.delta:g} on log gap ratios: a gap grows by less than "
        f"{math.expm1(params.delta):.3f} of itself); the log of each gap's ratio to the "
        "runner-up's gap is moved onto a keyed lattice (QIM): ratios survive log-probabilities, "
        "probabilities, temperature and any positive affine map, and fp16 outputs keep the "
        "pairs their precision resolves",
        f"{params.queries} keyed queries x {params.classes - 2} classes below the runner-up = "
        f"{params.queries * (params.classes - 2)} bits; the hash is a keyed linear hash mod "
        f"2^{params.hash_bits} computed exactly in float64 (also inside ONNX); queries with "
        "GF(2)-independent parity vectors make the keyed bits exactly independent fair coins",
        f"false positives: {pairs} pairs, each an independently trained MLP wrapped with its "
        "own key, tested against another key",
    ]
    return {"scheme": "output_signature", "model": "mlp-digits (64-96-96-10) behind predict()",
            "acc_clean": acc_clean, "acc_marked": acc_marked,
            "delta_pp": 100.0 * (acc_marked - acc_clean), "marked": marked_summary(marked),
            "attacks": rows, "fpr": fpr_summary(null, randomized),
            "queries_for_1e-6": marked.details["queries_for_1e-6"],
            "notes": notes, "seconds": time.perf_counter() - start}
