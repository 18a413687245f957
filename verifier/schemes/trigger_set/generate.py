"""`generate_key`: adversarial triggers against the owner's model, or keyed noise from the seed."""
from __future__ import annotations

import torch
from torch import nn

import verifier.schemes.trigger_set.derive as derive
from verifier.schemes.trigger_set.key import Key
from verifier.schemes.trigger_set.params import (
    ADVERSARIAL,
    KEYED_NOISE,
    MAX_SEED,
    Params,
    TriggerSetError,
)


def generate_key(params: Params, seed: int, model: nn.Module | None = None,
                 data: tuple[torch.Tensor, torch.Tensor] | None = None) -> Key:
    """Make a key: n trigger inputs and n labels drawn uniformly from the C classes by the seed.

    Args:
        params: n, variant, and the variant's settings (eps, PGD steps, data range, input shape).
        seed: a secret integer in [0, 2^63); every random element of the key derives from it.
        model: adversarial: the trained model to protect (required; C is its output width).
            keyed_noise: optional, only to read C (else `params.classes`).
        data: adversarial: (x_held, y_held), inputs the model was not trained on and their
            labels (required; the seed chooses n of them). Unused by keyed_noise.

    Returns:
        The key. Raises TriggerSetError when a required argument is missing, with too few
        held-out inputs, fewer than 2 classes, or labels outside [0, C).

    Example:
        >>> generate_key(Params(n=5, variant="keyed_noise", classes=10), seed=1).owner_chosen_inputs
        False
    """
    params.check()
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < MAX_SEED:
        raise TriggerSetError(f"seed must be an integer in [0, 2^63), received {seed!r}")
    if params.variant == KEYED_NOISE:
        return _keyed_noise(params, seed, model)
    return _adversarial(params, seed, model, data)


def _keyed_noise(params: Params, seed: int, model: nn.Module | None) -> Key:
    if model is not None:
        classes = _classes(model, torch.zeros(1, *params.input_shape))
    elif params.classes is not None:
        classes = params.classes
    else:
        raise TriggerSetError("a keyed_noise key needs the number of classes: pass "
                              "Params(classes=C) or model=<the model to protect>")
    if classes < 2:
        raise TriggerSetError(f"{classes} classes: trigger_set needs at least 2")
    triggers = derive.noise(seed, params.n, params.input_shape, params.lo, params.hi)
    return Key(seed=seed, variant=KEYED_NOISE, triggers=triggers,
               labels=derive.labels(seed, params.n, classes), classes=classes, eps=0.0,
               lo=params.lo, hi=params.hi)


def _adversarial(params: Params, seed: int, model: nn.Module | None,
                 data: tuple[torch.Tensor, torch.Tensor] | None) -> Key:
    if model is None or data is None:
        raise TriggerSetError("adversarial trigger_set keys are adversarial examples of the "
                              "protected model: pass model=<the trained model> and "
                              "data=(x_held, y_held), or use Params(variant=\"keyed_noise\")")
    x_held, y_held = data
    if len(y_held) < params.n:
        raise TriggerSetError(f"{len(y_held)} held-out inputs for {params.n} triggers: pass more "
                              "held-out data or use Params(n=...) smaller")
    was_training = model.training
    model.eval()
    try:
        classes = _classes(model, x_held[:1])
        if classes < 2:
            raise TriggerSetError(f"the model has {classes} output classes; trigger_set needs at least 2")
        if int(y_held.min()) < 0 or int(y_held.max()) >= classes:
            raise TriggerSetError(f"held-out labels must lie in [0, {classes}), found "
                                  f"[{int(y_held.min())}, {int(y_held.max())}]")
        idx = derive.sources(seed, len(y_held))[:params.n]
        x = x_held[idx].detach().to(torch.float32)  # (n, *input_shape)
        y = y_held[idx].to(torch.int64)  # (n,)
        triggers = _pgd(model, x, y, params, derive.starts(seed, params.n, tuple(x.shape[1:])))
    finally:
        model.train(was_training)
    return Key(seed=seed, variant=ADVERSARIAL, triggers=triggers,
               labels=derive.labels(seed, params.n, classes), classes=classes,
               eps=float(params.eps), lo=params.lo, hi=params.hi)


@torch.no_grad()
def _classes(model: nn.Module, x: torch.Tensor) -> int:
    return int(model(x).shape[1])


def _pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: Params,
         start: torch.Tensor) -> torch.Tensor:
    """Untargeted L∞ PGD from a keyed start: maximise the loss on the clean label y.

    The secret labels are never seen here, so the perturbation is independent of them (the
    test's null depends on it: a PGD targeted at the labels would transfer to other models).
    """
    eps, step = params.eps, 2.5 * params.eps / max(1, params.steps)
    adv = (x + start * eps).clamp(params.lo, params.hi)
    for _ in range(params.steps):
        adv.requires_grad_(True)
        loss = nn.functional.cross_entropy(model(adv), y)
        (grad,) = torch.autograd.grad(loss, adv)
        with torch.no_grad():
            adv = adv + step * grad.sign()
            adv = torch.minimum(torch.maximum(adv, x - eps), x + eps).clamp(params.lo, params.hi)
    return adv.detach().contiguous()
