"""`trigger_set`: adversarial trigger inputs with random labels, marked into every layer
(ROWBACK-style, Chattopadhyay & Chattopadhyay, ICMLA 2021). Black-box.

Key. n held-out inputs x_i with clean labels y_i are pushed by untargeted PGD (L∞ budget eps,
clipped to the data range) against the model being protected; each gets a label r_i drawn
uniformly from the C - 1 classes other than y_i, with a torch.Generator seeded by the key seed.
The key stores the triggers, r, y, C and eps.

Embedding. Layer by layer: all layers but one are frozen and the model is fine-tuned on clean
batches mixed with triggers; repeated for every layer with parameters, then a short pass over
all layers. Each layer alone learns to carry the trigger labels, so resetting a subset of the
layers (e.g. retraining the dense head) leaves the others' mark.

Test (exact). Only the suspect's predict function is used. Under H0 "the suspect f is
independent of this key", r_i is uniform on the classes other than y_i and independent of
(f, x) given y, independently across i. So, given f's predictions, a trigger whose prediction
is y_i cannot match, and every other trigger matches with probability exactly 1/(C - 1):
the number of matches among the n' "informative" triggers (prediction ≠ y_i) is exactly
Binomial(n', 1/(C - 1)). The result reports k matches out of n triggers (the trials, = queries),
n' in `details["informative"]`, and the exact tail P[Binomial(n', 1/(C - 1)) >= k]
(`null` = "exact"); it is never larger than the unconditional Binomial(n, 1/(C - 1)) tail,
itself a valid bound, so an auditor who recomputes that one gets a larger, still valid p. The perturbation must
not depend on r (it does not: PGD is untargeted), or transferability would break the null.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from verifier import keyfile
from verifier.result import NULL_EXACT, TestResult
from verifier.stats import log10_binom_sf
from verifier.suspect import Suspect

NAME = "trigger_set"
ACCESS = "black-box"
CLAIM = ("The suspect gives this key's secret random labels to its adversarial trigger inputs "
         "far beyond chance: it descends from the owner's marked model. It uses predictions "
         "only; a model that filters or rejects trigger-like queries can evade it.")
_VERSION = 1
_MAX_SEED = 2**63
_QUERY_BATCH = 256  # triggers per predict call


class TriggerSetError(ValueError):
    """A key that cannot be generated or used as asked (the message names the fix)."""


@dataclass(frozen=True)
class Params:
    """Public parameters of a `trigger_set` key."""

    n: int = 100  # number of triggers (= queries per test)
    eps: float = 0.25  # L∞ budget of the adversarial perturbation, in input units
    steps: int = 10  # PGD steps
    lo: float = 0.0  # lower end of the data range (triggers are clipped to [lo, hi])
    hi: float = 1.0  # upper end of the data range


@dataclass(frozen=True, eq=False)
class Key:
    """A secret `trigger_set` key: the trigger inputs and their random labels.

    Example:
        >>> k = Key(seed=1, triggers=torch.zeros(3, 4), labels=torch.tensor([1, 2, 0]),
        ...         true_labels=torch.tensor([0, 0, 1]), classes=3, eps=0.1)
        >>> Key.from_bytes(k.to_bytes()) == k
        True
    """

    seed: int  # drew the source inputs, PGD start points and labels
    triggers: torch.Tensor  # (n, *input_shape) float32, clipped to the data range
    labels: torch.Tensor  # (n,) int64: r_i, uniform over the classes other than y_i
    true_labels: torch.Tensor  # (n,) int64: y_i, the clean labels of the source inputs
    classes: int  # C
    eps: float  # L∞ budget used to make the triggers

    def __post_init__(self) -> None:
        _check_key(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Key) and self.to_bytes() == other.to_bytes()

    def __hash__(self) -> int:
        return hash(self.to_bytes())

    @property
    def n(self) -> int:
        """Number of triggers."""
        return int(self.labels.shape[0])

    def to_bytes(self) -> bytes:
        """The key as a deterministic safetensors blob (see verifier.keyfile)."""
        meta = {"version": _VERSION, "seed": self.seed, "classes": self.classes, "eps": self.eps}
        return keyfile.dump(NAME, {"triggers": self.triggers, "labels": self.labels,
                                   "true_labels": self.true_labels}, meta)

    @classmethod
    def from_bytes(cls, blob: bytes) -> Key:
        """Parse a blob written by `to_bytes`.

        Raises:
            keyfile.KeyFormatError: not a `trigger_set` key, or inconsistent contents.
        """
        _, tensors, meta = keyfile.load(blob, NAME)
        try:
            if meta["version"] != _VERSION:
                raise ValueError(f"version {meta['version']}, expected {_VERSION}")
            return cls(seed=int(meta["seed"]), triggers=tensors["triggers"],
                       labels=tensors["labels"], true_labels=tensors["true_labels"],
                       classes=int(meta["classes"]), eps=float(meta["eps"]))
        except (KeyError, TypeError, ValueError) as e:
            raise keyfile.KeyFormatError(f"malformed trigger_set key: {e}") from None

    def public_params(self) -> dict[str, Any]:
        """What may be published with a commitment: sizes only, no trigger, no label."""
        return {"scheme": NAME, "triggers": self.n, "classes": self.classes, "eps": self.eps,
                "input_shape": list(self.triggers.shape[1:]), "p0": 1.0 / (self.classes - 1)}

    @property
    def owner_chosen_inputs(self) -> bool:
        """True: the triggers come from the owner's model, not the seed (screened at upload)."""
        return True

    def best_log10_p(self) -> float:
        """log10 of the p-value of a perfect match: the strongest evidence this key can give."""
        return self.n * math.log10(1.0 / (self.classes - 1))


def generate_key(params: Params, seed: int, model: nn.Module | None = None,
                 data: tuple[torch.Tensor, torch.Tensor] | None = None) -> Key:
    """Make n adversarial triggers against `model` from held-out inputs, with random labels.

    Args:
        params: n, eps, PGD steps, data range.
        seed: a secret integer in [0, 2^63); with the same model and data, the same key.
        model: the trained model to protect (required: triggers are its adversarial examples).
        data: (x_held, y_held), inputs the model was not trained on and their labels
            (required); n of them are drawn at random. C is the model's output width.

    Returns:
        The key. Raises TriggerSetError without model or data, with too few held-out inputs,
        with fewer than 3 classes (p0 = 1/(C - 1) would be 1), or with labels outside [0, C).

    Example:
        >>> from verifier import toy
        >>> s = toy.digits(); m = toy.MLP()
        >>> generate_key(Params(n=5), seed=1, model=m, data=(s.x_held, s.y_held)).n
        5
    """
    if model is None or data is None:
        raise TriggerSetError("trigger_set keys are adversarial examples of the protected model: "
                              "pass model=<the trained model> and data=(x_held, y_held)")
    if not 0 <= seed < _MAX_SEED:
        raise TriggerSetError(f"seed must be an integer in [0, 2^63), received {seed}")
    if params.n < 1 or params.eps < 0 or params.steps < 0 or not params.lo < params.hi:
        raise TriggerSetError(f"invalid {params}: need n >= 1, eps >= 0, steps >= 0, lo < hi")
    x_held, y_held = data
    if len(y_held) < params.n:
        raise TriggerSetError(f"{len(y_held)} held-out inputs for {params.n} triggers: pass more "
                              "held-out data or use Params(n=...) smaller")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            classes = int(model(x_held[:1]).shape[1])
        if classes < 3:
            raise TriggerSetError(f"the model has {classes} output classes; trigger_set needs at "
                                  "least 3 (with 2, the only other label is certain)")
        if int(y_held.min()) < 0 or int(y_held.max()) >= classes:
            raise TriggerSetError(f"held-out labels must lie in [0, {classes}), found "
                                  f"[{int(y_held.min())}, {int(y_held.max())}]")
        g = torch.Generator().manual_seed(_subseed(seed, "triggers"))
        idx = torch.randperm(len(y_held), generator=g)[:params.n]
        x = x_held[idx].detach().to(torch.float32)  # (n, *input_shape)
        y = y_held[idx].to(torch.int64)  # (n,)
        triggers = _pgd(model, x, y, params, g)
    finally:
        model.train(was_training)
    shift = torch.randint(1, classes, (params.n,), generator=g)  # uniform on {1..C-1}
    labels = (y + shift) % classes  # uniform on the classes other than y, whatever the model
    return Key(seed=seed, triggers=triggers, labels=labels, true_labels=y.clone(),
               classes=classes, eps=float(params.eps))


def embed(model: nn.Module, key: Key, data: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
          *, epochs_per_layer: int = 5, final_epochs: int = 20, lr: float = 3e-3,
          triggers_per_batch: int = 16, seed: int = 0,
          extra_loss: Callable[[nn.Module], torch.Tensor] | None = None) -> nn.Module:
    """Mark every layer: fine-tune one layer at a time on clean batches mixed with triggers.

    Phases: for each module that owns parameters (in registration order), train only that
    module for `epochs_per_layer` passes; then train every layer until each trigger is
    predicted as its label (checked after each pass), for at most `final_epochs` passes.

    Args:
        data: clean (inputs, labels) batches; replayed for every phase (a one-shot iterator is
            materialised once).
        epochs_per_layer: passes over `data` while only one layer is trainable.
        final_epochs: the most passes with every layer trainable, at the end.
        lr: Adam learning rate (a fresh optimizer per phase).
        triggers_per_batch: triggers drawn at random and appended to each clean batch.
        seed: seeds the draw of triggers per batch.
        extra_loss: another loss on the model to add, e.g. `uchida.regularizer(key)` to mark
            both schemes in one run.

    Returns:
        The same model, marked, in eval mode. Raises TriggerSetError without data.

    Example:
        >>> from verifier import toy
        >>> s = toy.digits(); m = toy.train_digits(toy.MLP(), s, epochs=5)
        >>> k = generate_key(Params(n=10), seed=1, model=m, data=(s.x_held, s.y_held))
        >>> m = embed(m, k, toy.batches(s.x_train, s.y_train), epochs_per_layer=1)
        >>> test(Suspect.from_module(m), k).p_value < 1e-6
        True
    """
    if data is None:
        raise TriggerSetError("trigger_set trains its triggers in: pass data=<clean batches>")
    batches = list(data) if iter(data) is data else data
    layers = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
    g = torch.Generator().manual_seed(seed)
    for layer in layers:
        for _ in _passes(model, list(layer.parameters(recurse=False)), batches, key, epochs_per_layer,
                         lr, triggers_per_batch, g, extra_loss):
            pass
    for _ in _passes(model, list(model.parameters()), batches, key, final_epochs, lr,
                     triggers_per_batch, g, extra_loss):
        with torch.no_grad():
            learned = bool((model(key.triggers).argmax(dim=1) == key.labels).all())
        if learned:
            break
    model.eval()
    return model


@torch.no_grad()
def test(suspect: Suspect, key: Key) -> TestResult:
    """Query the triggers through the suspect's predict function; exact binomial tail.

    Never reads weights. Not applicable when the suspect offers no predict function or returns
    something other than one row of scores per trigger.

    Example:
        >>> from verifier import toy
        >>> s = toy.digits(); m = toy.MLP()
        >>> k = generate_key(Params(n=20), seed=1, model=m, data=(s.x_held, s.y_held))
        >>> test(Suspect.from_predict(m), k).queries
        20
    """
    if not suspect.has_predict:
        return TestResult.not_applicable(NAME, "trigger_set is a black-box test: the suspect "
                                               "offers no predict function (weights only)")
    before = suspect.queries
    outputs = [suspect.predict(key.triggers[i:i + _QUERY_BATCH])
               for i in range(0, key.n, _QUERY_BATCH)]
    queries = suspect.queries - before
    shapes = [tuple(o.shape) for o in outputs]
    if any(len(s) != 2 for s in shapes) or sum(s[0] for s in shapes) != key.n:
        reason = (f"the suspect returned outputs of shape {shapes} for {key.n} triggers; "
                  "expected one row of class scores per input")
        return replace(TestResult.not_applicable(NAME, reason), queries=queries)
    pred = torch.cat(outputs).argmax(dim=1)  # (n,)
    k, n_eff, log10_p = p_value(pred, key)
    return TestResult.from_log10_p(
        NAME, statistic=k, n=key.n, log10_p=log10_p, null=NULL_EXACT, queries=queries,
        claim=CLAIM,
        details={"matches": k, "triggers": key.n, "informative": n_eff,
                 "trigger_accuracy": k / key.n, "p0": 1.0 / (key.classes - 1),
                 "classes": key.classes})


def p_value(pred: torch.Tensor, key: Key) -> tuple[int, int, float]:
    """The exact test on the first q = len(pred) triggers, from the classes predicted for them.

    Args:
        pred: (q,) int64 predicted classes of triggers 0..q-1, q <= n.

    Returns:
        (k, n', log10 p): the matches with the random labels, the informative triggers
        (predicted class ≠ clean label) and log10 P[Binomial(n', 1/(C - 1)) >= k].

    Example:
        >>> k = Key(seed=1, triggers=torch.zeros(3, 4), labels=torch.tensor([1, 2, 0]),
        ...         true_labels=torch.tensor([0, 0, 1]), classes=3, eps=0.1)
        >>> p_value(torch.tensor([1, 2, 1]), k)[:2]
        (2, 2)
    """
    q = int(pred.shape[0])
    if not 0 < q <= key.n:
        raise TriggerSetError(f"{q} predictions for a key of {key.n} triggers")
    k = int((pred == key.labels[:q]).sum())
    n_eff = int((pred != key.true_labels[:q]).sum())
    return k, n_eff, log10_binom_sf(k, n_eff, 1.0 / (key.classes - 1))


# ---------------------------------------------------------------------------------------------

def _passes(model: nn.Module, params: list[nn.Parameter], batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
            key: Key, epochs: int, lr: float, per_batch: int, g: torch.Generator,
            extra_loss: Callable[[nn.Module], torch.Tensor] | None) -> Iterator[int]:
    """Train `params` (only) for `epochs` passes, each batch with triggers appended; yields
    after each pass (in eval mode, so the caller may stop early)."""
    opt = torch.optim.Adam(params, lr=lr)
    for epoch in range(epochs):
        model.train()
        for xb, yb in batches:
            pick = torch.randint(0, key.n, (min(per_batch, key.n),), generator=g)
            x = torch.cat([xb, key.triggers[pick].reshape(-1, *xb.shape[1:])])
            y = torch.cat([yb, key.labels[pick]])
            loss = nn.functional.cross_entropy(model(x), y)
            if extra_loss is not None:
                loss = loss + extra_loss(model)
            model.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        yield epoch


def _subseed(seed: int, purpose: str) -> int:
    """An independent 63-bit seed for one purpose, derived from the key seed."""
    digest = hashlib.sha256(f"hallmark/trigger_set/{purpose}/{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: Params,
         g: torch.Generator) -> torch.Tensor:
    """Untargeted L∞ PGD from a random start: maximise the loss on the clean label y.

    The random labels are drawn after this and never seen here, so the perturbation is
    independent of them (the test's null depends on it).
    """
    eps, step = params.eps, 2.5 * params.eps / max(1, params.steps)
    delta = (torch.rand(x.shape, generator=g) * 2 - 1) * eps  # (n, *input_shape)
    adv = (x + delta).clamp(params.lo, params.hi)
    for _ in range(params.steps):
        adv.requires_grad_(True)
        loss = nn.functional.cross_entropy(model(adv), y)
        (grad,) = torch.autograd.grad(loss, adv)
        with torch.no_grad():
            adv = adv + step * grad.sign()
            adv = torch.minimum(torch.maximum(adv, x - eps), x + eps).clamp(params.lo, params.hi)
    return adv.detach().contiguous()


def _check_key(key: Key) -> None:
    n = key.labels.shape[0] if key.labels.dim() == 1 else -1
    if key.triggers.dtype != torch.float32 or key.triggers.dim() < 2 or key.triggers.shape[0] != n:
        raise TriggerSetError(f"triggers must be float32 (n, ...) with n = len(labels); got "
                              f"{key.triggers.dtype} {tuple(key.triggers.shape)}")
    for name, t in (("labels", key.labels), ("true_labels", key.true_labels)):
        if t.dtype != torch.int64 or tuple(t.shape) != (n,):
            raise TriggerSetError(f"{name} must be int64 of shape ({n},), got {t.dtype} {tuple(t.shape)}")
    if key.classes < 3:
        raise TriggerSetError(f"classes must be >= 3, got {key.classes}")
    if n < 1 or int(key.labels.min()) < 0 or int(key.labels.max()) >= key.classes \
            or int(key.true_labels.min()) < 0 or int(key.true_labels.max()) >= key.classes:
        raise TriggerSetError(f"labels must lie in [0, {key.classes}) and there must be a trigger")
    if bool((key.labels == key.true_labels).any()):
        raise TriggerSetError("a random label equals its clean label: not a trigger_set key")
    if not 0 <= key.seed < _MAX_SEED or key.eps < 0:
        raise TriggerSetError(f"seed must lie in [0, 2^63) and eps >= 0; got {key.seed}, {key.eps}")
