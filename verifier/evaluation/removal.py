"""The removal suite: `hallmark evaluate --schemes removal` (issue 11, item 6).

Every scheme's mark on the digits MLP (uchida, trigger_set and seal also on the CNN) is
attacked the way a thief would, each attack swept over its strength, and each point records the
test's log10 p on the attacked copy and the attacker's test accuracy. The result is the
"removal" section of docs/quality.json; the report renders it as a table per scheme and as
robustness curves (`verifier.evaluation.curves`, docs/curves/<scheme>.svg).

Attacks (ATTACKS; strength in brackets):
- finetune [epochs], full training set, fresh Adam lr 1e-3;
- finetune_10pct_lr1e-2 [epochs], first 10 % of the training set at lr 1e-2;
- finetune_last [epochs], last layer only, lr 1e-3;
- reinit_last [epochs]: last layer re-initialised and retrained alone;
- prune [fraction of weights zeroed, global magnitude];
- quantize [bits], symmetric per tensor;
- gaussian_noise [σ, relative to each tensor's std];
- permute_hidden [fraction of hidden units shuffled]: outputs unchanged;
- rescale_units [spread s: per-unit factors in [1/s, s]]: outputs unchanged;
- dummy_neurons [units added per hidden layer, fraction of its width]: zero-outgoing, split
  and cancelling units (Yan et al. 2023), outputs unchanged; n/a where the model is no plain
  chain of Linear / Conv2d layers;
- distill [student epochs]: a fresh MLP trained only on the marked model's softmax outputs for
  the training inputs (as many queries as the training set, no labels);
- overwrite [attacker's embedding effort]: the attacker embeds their own mark of the same
  scheme with their own key (the point also records the attacker's own log10 p);
- postprocess [what is served]: probabilities, log-probabilities, temperature, affine, fp16
  (black-box schemes; a white-box test reads weights, which serving does not change);
- rename [tensor names]: the weights under new state-dict keys (white-box schemes).

An attack that does not apply to a scheme is listed with the reason, not measured.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from verifier import toy
from verifier.evaluation import DETECT_LOG10, attacks, step
from verifier.result import TestResult
from verifier.suspect import Suspect

# What the suite attacks, by target id: each scheme's mark on the digits MLP; uchida and seal also
# on the CNN; trigger_set also with keyed-noise triggers and the fine-tune-aware phase on MLP and CNN.
TARGETS = ("uchida", "uchida-cnn", "trigger_set", "trigger_set-noise", "trigger_set-cnn", "seal",
           "seal-cnn", "lsb", "output_signature")

# name -> (what it does, the strength's axis label)
ATTACKS: dict[str, tuple[str, str]] = {
    "finetune": ("fine-tune all layers on the full training set, fresh Adam lr 1e-3", "epochs"),
    "finetune_10pct_lr1e-2": ("fine-tune all layers on 10 % of the training set, lr 1e-2",
                              "epochs"),
    "finetune_last": ("fine-tune the last layer only, lr 1e-3", "epochs"),
    "reinit_last": ("re-initialise the last layer and retrain it alone, lr 3e-3", "epochs"),
    "prune": ("zero the smallest-magnitude weights (global)", "fraction zeroed"),
    "quantize": ("symmetric per-tensor integer round-trip of every parameter", "bits"),
    "gaussian_noise": ("add Gaussian noise to every parameter", "σ / tensor std"),
    "permute_hidden": ("shuffle hidden units (identical outputs)", "fraction shuffled"),
    "rescale_units": ("per-unit positive rescaling of the ReLU layers (identical outputs)",
                      "spread s"),
    "dummy_neurons": ("add dummy hidden units: zero-outgoing, split and cancelling (identical "
                      "outputs)", "units added / width"),
    "distill": ("fresh student trained on the outputs only (1 query per training input)",
                "student epochs"),
    "overwrite": ("the attacker embeds their own mark of the same scheme", "attacker effort"),
    "postprocess": ("serve post-processed outputs instead of logits", "served"),
    "rename": ("rename every tensor (state-dict keys)", "names"),
}


@dataclass
class _Target:
    """One scheme's marked model and how to test and overwrite it."""

    scheme: str
    title: str
    marked: nn.Module
    test: Callable[[nn.Module], TestResult]  # the owner's test on a (possibly attacked) model
    # effort -> (attacked model, the attacker's own test result on it)
    overwrite: Callable[[float], tuple[nn.Module, TestResult]]
    overwrite_levels: Sequence[float]
    overwrite_label: str
    test_weights: Callable[[dict[str, torch.Tensor]], TestResult] | None = None
    test_predict: Callable[[Callable[[torch.Tensor], torch.Tensor]], TestResult] | None = None
    notes: list[str] = field(default_factory=list)
    student: Callable[[], nn.Module] = toy.MLP  # the architecture a distilling thief trains


def evaluate(quick: bool = False, targets: Sequence[str] = TARGETS) -> dict[str, Any]:
    """The "removal" section: every attack swept over its strengths on each scheme's mark.

    Args:
        quick: 5 training epochs and two strengths per attack (a smoke run for tests);
            otherwise 30 epochs and 3 to 5 strengths.
        targets: which targets to attack (ids from TARGETS; default all).

    Returns:
        {"quick", "seconds", "attacks": {name: {"description", "axis"}},
         "schemes": {target id: {"scheme", "model", "acc_marked", "marked_log10_p", "notes",
                              "attacks": [{"name", "applies", "reason"?, "points": [
                                  {"strength", "label", "attacker_acc", "log10_p",
                                   "detected", "attacker_log10_p"?}]}]}}}

    Example:
        >>> section = evaluate(quick=True, targets=("lsb",))  # doctest: +SKIP
        >>> len(section["schemes"]["lsb"]["attacks"]) >= 12  # doctest: +SKIP
        True
    """
    torch.set_num_threads(1)
    start = time.perf_counter()
    unknown = [s for s in targets if s not in TARGETS]
    if unknown:
        raise ValueError(f"the removal suite has no target for {', '.join(unknown)}; "
                         f"expected names from {', '.join(TARGETS)}")
    split = toy.digits()
    epochs = 5 if quick else 30
    out: dict[str, Any] = {}
    for name in targets:
        target = _TARGETS[name](split, epochs, quick)
        out[name] = _sweep(target, split, quick)
    return {"quick": quick, "seconds": time.perf_counter() - start,
            "attacks": {n: {"description": d, "axis": a} for n, (d, a) in ATTACKS.items()},
            "schemes": out}


def _levels(quick: bool) -> dict[str, list[float]]:
    full: dict[str, list[float]] = {
        "finetune": [1, 5, 20], "finetune_10pct_lr1e-2": [2, 5, 10], "finetune_last": [1, 5, 20],
        "reinit_last": [1, 5, 20], "prune": [0.1, 0.3, 0.5, 0.7, 0.9], "quantize": [8, 6, 4, 3],
        "gaussian_noise": [0.05, 0.1, 0.2, 0.4, 0.8], "permute_hidden": [0.25, 0.5, 1.0],
        "rescale_units": [2, 4, 16], "dummy_neurons": [0.1, 0.5, 1.0], "distill": [5, 15, 30]}
    if not quick:
        return {k: [float(x) for x in v] for k, v in full.items()}
    return {k: [float(v[0]), float(v[-1])] for k, v in full.items()}


def _sweep(t: _Target, split: toy.Split, quick: bool) -> dict[str, Any]:
    acc = _acc_of(split)
    levels = _levels(quick)
    m = t.marked

    def point(strength: float, label: str, attacked: nn.Module, result: TestResult,
              acc_value: float | None = None, **extra: Any) -> dict[str, Any]:
        return {"strength": strength, "label": label,
                "attacker_acc": acc(attacked) if acc_value is None else acc_value,
                "log10_p": result.log10_p, "detected": result.log10_p <= DETECT_LOG10, **extra}

    sweeps: dict[str, Callable[[float], nn.Module]] = {
        "finetune": lambda s: attacks.finetune(m, split, epochs=int(s), lr=1e-3),
        "finetune_10pct_lr1e-2": lambda s: attacks.finetune(m, split, epochs=int(s), lr=1e-2,
                                                            fraction=0.1),
        "finetune_last": lambda s: attacks.finetune(m, split, epochs=int(s), lr=1e-3,
                                                    only=(_last_name(m),)),
        "reinit_last": lambda s: attacks.reinit_last(m, split, epochs=int(s)),
        "prune": lambda s: attacks.prune_global(m, s),
        "quantize": lambda s: attacks.quantize(m, int(s)),
        "gaussian_noise": lambda s: attacks.gaussian_noise(m, s),
        "permute_hidden": lambda s: attacks.permute_hidden(m, s),
        "rescale_units": lambda s: attacks.rescale_units(m, s),
        "dummy_neurons": lambda s: attacks.dummy_neurons(m, s),
        "distill": lambda s: attacks.distill(attacks.served(m), _fresh(t.student), split.x_train,
                                             epochs=int(s)),
    }
    rows: list[dict[str, Any]] = []
    for name, attack in sweeps.items():
        pts = []
        try:
            for s in levels[name]:
                attacked = attack(s)
                pts.append(point(s, f"{s:g}", attacked, t.test(attacked)))
        except attacks.AttackError as e:  # a unit-level rewrite of a model that is no plain chain
            rows.append({"name": name, "applies": False, "reason": str(e), "points": []})
            continue
        step(f"{t.scheme}: {name}")
        rows.append({"name": name, "applies": True, "points": pts})

    pts = []
    for s in t.overwrite_levels:
        attacked, theirs = t.overwrite(s)
        pts.append(point(s, f"{s:g}", attacked, t.test(attacked),
                         attacker_log10_p=theirs.log10_p))
    step(f"{t.scheme}: overwrite")
    rows.append({"name": "overwrite", "applies": True, "axis": t.overwrite_label, "points": pts})

    if t.test_predict is not None:
        pts = []
        for i, post in enumerate(attacks.POSTPROCESS):
            f = attacks.served(m, post)
            acc_value = float((f(split.x_test).argmax(dim=1) == split.y_test).float().mean())
            pts.append(point(float(i), post, m, t.test_predict(f), acc_value))
        rows.append({"name": "postprocess", "applies": True, "points": pts})
    else:
        rows.append({"name": "postprocess", "applies": False,
                     "reason": "white-box test: it reads the weights, which serving leaves as "
                               "they are", "points": []})
    step(f"{t.scheme}: postprocess")

    if t.test_weights is not None:
        rows.append({"name": "rename", "applies": True,
                     "points": [point(0.0, "t0, t1, ...", m, t.test_weights(attacks.renamed(m)))]})
    else:
        rows.append({"name": "rename", "applies": False,
                     "reason": "black-box test: it never reads tensor names", "points": []})
    step(f"{t.scheme}: rename")
    return {"scheme": t.scheme, "model": t.title, "acc_marked": acc(m), "marked_log10_p": t.test(m).log10_p,
            "notes": t.notes + _findings(rows), "attacks": rows}


def _findings(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Notes computed from the measured points: overwriting and priority, distillation."""
    by = {r["name"]: r for r in rows}
    out = []
    for p in by["overwrite"]["points"]:
        mine = p["log10_p"] <= DETECT_LOG10
        theirs = p["attacker_log10_p"] <= DETECT_LOG10
        who = ("both marks are detected, so the registry's priority rule (earliest log index, "
               "registry/reporting.py) names the owner, whose commitment precedes the thief's"
               if mine and theirs else
               "only the owner's mark is detected" if mine else
               "the owner's mark is missed: only the thief's mark attributes the copy, and "
               "priority cannot help" if theirs else "neither mark is detected")
        out.append(f"overwrite at {p['label']}: owner's log10 p {p['log10_p']:.1f}, thief's "
                   f"{p['attacker_log10_p']:.1f}, attacker accuracy "
                   f"{100 * p['attacker_acc']:.2f} %: {who}")
    best = min(by["distill"]["points"], key=lambda p: p["log10_p"])
    out.append(f"distillation (issue 11 item 5): the strongest owner's evidence in a student is "
               f"log10 p {best['log10_p']:.1f} (student accuracy "
               f"{100 * best['attacker_acc']:.2f} %): "
               + ("detected" if best["detected"] else "the mark does not survive distillation"))
    return out


def _acc_of(split: toy.Split) -> Callable[[nn.Module], float]:
    return lambda model: toy.accuracy(model, split.x_test, split.y_test)


def _last_name(model: nn.Module) -> str:
    """The qualified name of the last nn.Linear ("fc3", or "model.fc3" inside a wrapper)."""
    return [n for n, mod in model.named_modules() if isinstance(mod, nn.Linear)][-1]


def _fresh(make: Callable[[], nn.Module], seed: int = 7) -> nn.Module:
    torch.manual_seed(seed)
    return make()


def _data(split: toy.Split, seed: int, epochs: int) -> list[toy.Batch]:
    return list(toy.batches(split.x_train, split.y_train, seed=seed, epochs=epochs))


# ---------------------------------------------------------------------------------------------
# One target per scheme: the marked MLP, the owner's test, the attacker's overwrite.

def _uchida(split: toy.Split, epochs: int, quick: bool,
            make: Callable[[], nn.Module] = toy.MLP) -> _Target:
    from verifier.schemes import uchida

    torch.manual_seed(0)
    init = make()
    # the invariant host: the mark read after undoing unit permutation and positive rescaling
    params = uchida.Params(host="invariant")
    key = uchida.generate_key(params, seed=100, model=init)
    marked = uchida.embed(init, key, _data(split, 0, epochs), epochs=1, lr=3e-3)

    def overwrite(effort: float) -> tuple[nn.Module, TestResult]:
        import copy

        theirs = uchida.generate_key(params, seed=900, model=marked)
        m = uchida.embed(copy.deepcopy(marked), theirs, _data(split, 9, 1), epochs=int(effort),
                         lr=1e-3)
        return m, uchida.test(Suspect.from_module(m), theirs)

    title = "MLP 64-96-96-10 on digits" if make is toy.MLP else "CNN (2 conv + 2 dense) on digits"
    return _Target("uchida", title, marked,
                   lambda m: uchida.test(Suspect.from_module(m), key), overwrite,
                   [1.0, 10.0] if quick else [1.0, 3.0, 10.0], "attacker's epochs",
                   test_weights=lambda w: uchida.test(Suspect.from_weights(w), key), student=make)


def _trigger_set(split: toy.Split, epochs: int, quick: bool) -> _Target:
    import copy

    from verifier.schemes import trigger_set as ts

    model = toy.trained(split, 0, epochs)
    held = (split.x_held, split.y_held)
    key = ts.generate_key(ts.Params(), seed=100, model=model, data=held)
    ts.embed(model, key, toy.batches(split.x_train, split.y_train, seed=0))

    def test(m: nn.Module) -> TestResult:
        return ts.test(Suspect.from_predict(attacks.served(m)), key)

    def overwrite(effort: float) -> tuple[nn.Module, TestResult]:
        m = copy.deepcopy(model)
        theirs = ts.generate_key(ts.Params(), seed=900, model=m, data=held)
        ts.embed(m, theirs, toy.batches(split.x_train, split.y_train, seed=9),
                 epochs_per_layer=int(effort))
        return m, ts.test(Suspect.from_predict(attacks.served(m)), theirs)

    return _Target("trigger_set", "MLP 64-96-96-10 on digits, adversarial triggers", model, test,
                   overwrite, [1.0, 5.0], "attacker's epochs per layer",
                   test_predict=lambda f: ts.test(Suspect.from_predict(f), key))


def _keyed_noise(split: toy.Split, epochs: int, quick: bool, make: Callable[[], nn.Module],
                 title: str, **embed_kwargs: Any) -> _Target:
    """Keyed-noise triggers with the fine-tune-aware phase (issue 11 item 3)."""
    import copy

    from verifier.schemes import trigger_set as ts

    model = toy.trained(split, 0, epochs, arch=make)
    params = ts.Params(variant=ts.KEYED_NOISE)
    key = ts.generate_key(params, seed=100, model=model)
    ts.embed(model, key, toy.batches(split.x_train, split.y_train, seed=0),
             aware_epochs=2 if quick else 30, recovery_epochs=1 if quick else 5, **embed_kwargs)

    def test(m: nn.Module) -> TestResult:
        return ts.test(Suspect.from_predict(attacks.served(m)), key)

    def overwrite(effort: float) -> tuple[nn.Module, TestResult]:
        m = copy.deepcopy(model)
        theirs = ts.generate_key(params, seed=900, model=m)
        ts.embed(m, theirs, toy.batches(split.x_train, split.y_train, seed=9),
                 epochs_per_layer=int(effort))
        return m, ts.test(Suspect.from_predict(attacks.served(m)), theirs)

    return _Target("trigger_set", title, model, test, overwrite, [1.0, 5.0],
                   "attacker's epochs per layer",
                   test_predict=lambda f: ts.test(Suspect.from_predict(f), key), student=make)


def _seal(split: toy.Split, epochs: int, quick: bool,
          make: Callable[[], nn.Module] = toy.MLP) -> _Target:
    from verifier.evaluation.seal_settings import digits_base
    from verifier.schemes import seal

    base = digits_base(split, seed=0, epochs=epochs, arch=make)
    r = 16
    # on the CNN the dense layers carry the adapter: fc1 reads the flattened conv2 channels, so
    # the channel permutation moves fc1's columns in blocks of 16 and its rows, and fc2's columns
    params = seal.Params(targets=("fc1", "fc2"), r=r, alpha=2.0 * r, bits=128)
    seal.register_base(base, params.targets)
    key = seal.generate_key(params, seed=10_000, model=base)
    adapter_epochs = 10 if quick else 60
    marked = seal.embed(base, key, _data(split, 1, adapter_epochs))
    key = seal.finalize_key(marked, key)
    merged = seal.merge(marked, key)

    def overwrite(effort: float) -> tuple[nn.Module, TestResult]:
        seal.register_base(merged, params.targets)
        theirs = seal.generate_key(params, seed=90_000, model=merged)
        m = seal.embed(merged, theirs, _data(split, 9, int(effort)))
        theirs = seal.finalize_key(m, theirs)
        out = seal.merge(m, theirs)
        return out, seal.test(Suspect.from_module(out), theirs)

    title = ("MLP 64-96-96-10 on digits, SEAL adapter merged (r = 16, 128 bits)" if make is toy.MLP
             else "CNN (2 conv + 2 dense) on digits, SEAL adapter on fc1+fc2 merged (r = 16, 128 bits)")
    return _Target("seal", title,
                   merged, lambda m: seal.test(Suspect.from_module(m), key), overwrite,
                   [10.0] if quick else [10.0, 60.0], "attacker's adapter epochs",
                   test_weights=lambda w: seal.test(Suspect.from_weights(w), key), student=make)


def _lsb(split: toy.Split, epochs: int, quick: bool) -> _Target:
    from verifier.schemes import lsb

    model = toy.trained(split, 0, epochs)
    key = lsb.generate_key(lsb.Params(), seed=1, model=model)
    signed = lsb.embed(model, key)

    def overwrite(effort: float) -> tuple[nn.Module, TestResult]:
        theirs = lsb.generate_key(lsb.Params(), seed=900, model=signed)
        m = lsb.embed(signed, theirs)
        return m, lsb.test(Suspect.from_module(m), theirs)

    return _Target("lsb", "MLP 64-96-96-10 on digits", signed,
                   lambda m: lsb.test(Suspect.from_module(m), key), overwrite, [1.0],
                   "attacker signs (1 = once)",
                   test_weights=lambda w: lsb.test(Suspect.from_weights(w), key))


def _output_signature(split: toy.Split, epochs: int, quick: bool) -> _Target:
    from verifier.schemes import output_signature as osig

    model = toy.trained(split, 0, epochs)
    key = osig.generate_key(osig.Params(), seed=1)
    wrapped = osig.embed(model, key)

    def test(m: nn.Module) -> TestResult:
        return osig.test(Suspect.from_predict(attacks.served(m)), key)

    def overwrite(effort: float) -> tuple[nn.Module, TestResult]:
        theirs = osig.generate_key(osig.Params(), seed=900)
        m = osig.embed(wrapped, theirs)
        return m, osig.test(Suspect.from_predict(attacks.served(m)), theirs)

    return _Target("output_signature", "MLP 64-96-96-10 on digits, signed-output wrapper",
                   wrapped, test, overwrite, [1.0], "attacker wraps (1 = once)",
                   test_predict=lambda f: osig.test(Suspect.from_predict(f), key))


_TARGETS: dict[str, Callable[[toy.Split, int, bool], _Target]] = {
    "uchida": _uchida,
    "uchida-cnn": lambda split, epochs, quick: _uchida(split, epochs, quick, toy.CNN),
    "trigger_set": _trigger_set,
    "trigger_set-noise": lambda split, epochs, quick: _keyed_noise(
        split, epochs, quick, toy.MLP, "MLP 64-96-96-10 on digits, keyed-noise triggers, "
        "weight-noise (10 epochs), fine-tune-aware (30 epochs, 15 steps, 32 decoys, logit "
        "matching 0.5) and recovery (5 epochs) phases",
        robust_epochs=10, aware_steps=15, aware_decoys=32, distill=0.5),
    "trigger_set-cnn": lambda split, epochs, quick: _keyed_noise(
        split, epochs, quick, toy.CNN, "CNN (2 conv + 2 dense) on digits, keyed-noise triggers, "
        "fine-tune-aware (30 epochs) and recovery (5 epochs) phases"),
    "seal": _seal,
    "seal-cnn": lambda split, epochs, quick: _seal(split, epochs, quick, toy.CNN),
    "lsb": _lsb, "output_signature": _output_signature,
}
