"""`embed`: mark every layer (ROWBACK-style) by fine-tuning one layer at a time with triggers."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from verifier.schemes.trigger_set.key import Key
from verifier.schemes.trigger_set.params import TriggerSetError


def embed(model: nn.Module, key: Key, data: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
          *, epochs_per_layer: int = 5, final_epochs: int = 20, lr: float = 3e-3,
          triggers_per_batch: int = 16, seed: int = 0,
          extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
          robust_epochs: int = 0, weight_noise: float = 0.5, robust_lr: float = 1e-3,
          aware_epochs: int = 0, aware_steps: int = 5, aware_lr: float = 1e-2,
          aware_decoys: int = 0, aware_weight: float = 0.5, distill: float = 0.0,
          recovery_epochs: int = 0, recovery_lr: float = 3e-4) -> nn.Module:
    """Mark every layer: fine-tune one layer at a time on clean batches mixed with triggers.

    Phases: for each module that owns parameters (in registration order), train only that
    module for `epochs_per_layer` passes; then train every layer until each trigger is
    predicted as its label (checked after each pass), for at most `final_epochs` passes; then,
    if `robust_epochs` > 0, that many passes over every layer in which the triggers' loss is
    taken at weights perturbed by Gaussian noise (σ = `weight_noise` × each tensor's standard
    deviation, fresh per batch) and the clean loss at the true weights: the triggers then keep
    their labels in a neighbourhood of the weights, which is what a fine-tuning thief moves
    through (after randomized smoothing in parameter space, Bansal et al., ICML 2022); then,
    if `aware_epochs` > 0, that many fine-tune-aware passes: each step adds to the usual mixed
    loss's gradient the triggers' gradient taken at the weights a simulated thief reaches
    after `aware_steps` fresh-Adam steps (signed steps of size `aware_lr`, the size of Adam's
    first steps) on other clean batches (first-order, as in first-order MAML), so the labels
    stay where a small-data, high-learning-rate fine-tune moves the weights (issue 11); then,
    if `recovery_epochs` > 0, that many passes like the final ones at the low rate
    `recovery_lr`, which give back most of the accuracy the earlier phases cost (issue 11:
    measured per seed in docs/schemes-uchida-trigger-set.md). With `distill` > 0 every phase
    also adds `distill` × the mean squared difference between the model's logits on each
    clean batch and the logits the model gave that batch before embedding (logit matching
    against its own unmarked self), which holds the marked model to the clean one on data.
    None of this touches the key: the labels and keyed-noise inputs still come from the seed.

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
        robust_epochs: passes of the weight-noise phase (0: none).
        weight_noise: relative standard deviation of the weight noise in that phase.
        robust_lr: Adam learning rate of that phase.
        aware_epochs: passes of the fine-tune-aware phase (0: none).
        aware_steps: the simulated thief's steps per training step in that phase.
        aware_lr: the simulated thief's step size (its Adam learning rate).
        aware_decoys: uniform-noise inputs with random labels added to each of the simulated
            thief's batches (a thief embedding their own keyed-noise triggers); 0: none.
        aware_weight: weight of the triggers' loss at the simulated thief's weights.
        distill: weight of the logit-matching loss on clean batches in every phase (0: none).
        recovery_epochs: passes of the low-rate recovery phase at the end (0: none).
        recovery_lr: Adam learning rate of that phase.

    Returns:
        The same model, marked, in eval mode. Raises TriggerSetError without data, or with a
        negative `distill`, `recovery_epochs` or `aware_weight`, or `recovery_lr` <= 0.

    Example:
        >>> from verifier import toy
        >>> from verifier.schemes.trigger_set import Params, generate_key
        >>> s = toy.digits(); m = toy.train_digits(toy.MLP(), s, epochs=5)
        >>> k = generate_key(Params(n=10), seed=1, model=m, data=(s.x_held, s.y_held))
        >>> m = embed(m, k, toy.batches(s.x_train, s.y_train), epochs_per_layer=1)
        >>> bool((m(k.triggers).argmax(dim=1) == k.labels).float().mean() > 0.5)
        True
    """
    if data is None:
        raise TriggerSetError("trigger_set trains its triggers in: pass data=<clean batches>")
    if distill < 0 or recovery_epochs < 0 or aware_weight < 0 or not recovery_lr > 0:
        raise TriggerSetError(f"received distill={distill}, recovery_epochs={recovery_epochs}, "
                              f"aware_weight={aware_weight}, recovery_lr={recovery_lr}: need "
                              "distill >= 0, recovery_epochs >= 0, aware_weight >= 0 and "
                              "recovery_lr > 0 (distill=0 and recovery_epochs=0 turn those off)")
    batches = list(data)
    anchor = _Anchor.of(model, batches, distill)
    layers = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
    g = torch.Generator().manual_seed(seed)
    for layer in layers:
        for _ in _passes(model, list(layer.parameters(recurse=False)), batches, key, epochs_per_layer,
                         lr, triggers_per_batch, g, extra_loss, anchor):
            pass
    for _ in _passes(model, list(model.parameters()), batches, key, final_epochs, lr,
                     triggers_per_batch, g, extra_loss, anchor):
        with torch.no_grad():
            learned = bool((model(key.triggers).argmax(dim=1) == key.labels).all())
        if learned:
            break
    if robust_epochs > 0:
        _robust_passes(model, batches, key, robust_epochs, robust_lr, triggers_per_batch,
                       weight_noise, g, extra_loss, anchor)
    if aware_epochs > 0:
        _aware_passes(model, batches, key, aware_epochs, robust_lr, triggers_per_batch,
                      aware_steps, aware_lr, g, extra_loss, aware_decoys, aware_weight, anchor)
    for _ in _passes(model, list(model.parameters()), batches, key, recovery_epochs, recovery_lr,
                     triggers_per_batch, g, extra_loss, anchor):
        pass
    model.eval()
    return model


@dataclass(frozen=True)
class _Anchor:
    """The model's own logits on each clean batch before embedding, to hold it to them."""

    weight: float  # distill: weight of the mean squared logit difference
    logits: list[torch.Tensor]  # one (B, C) tensor per clean batch, in batch order

    @staticmethod
    @torch.no_grad()
    def of(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]],
           weight: float) -> _Anchor:
        was_training = model.training
        model.eval()
        logits = [model(xb).detach() for xb, _ in batches] if weight > 0 else []
        model.train(was_training)
        return _Anchor(weight, logits)

    def loss(self, i: int, out: torch.Tensor) -> torch.Tensor:
        """distill × mean((out − logits before)²) on batch i's clean rows `out` (B, C)."""
        if not self.logits:
            return out.new_zeros(())
        return self.weight * nn.functional.mse_loss(out, self.logits[i])


def _passes(model: nn.Module, params: list[nn.Parameter],
            batches: list[tuple[torch.Tensor, torch.Tensor]],
            key: Key, epochs: int, lr: float, per_batch: int, g: torch.Generator,
            extra_loss: Callable[[nn.Module], torch.Tensor] | None,
            anchor: _Anchor) -> Iterator[int]:
    """Train `params` (only) for `epochs` passes, each batch with triggers appended; yields
    after each pass (in eval mode, so the caller may stop early)."""
    opt = torch.optim.Adam(params, lr=lr)
    for epoch in range(epochs):
        model.train()
        for i, (xb, yb) in enumerate(batches):
            pick = torch.randint(0, key.n, (min(per_batch, key.n),), generator=g)
            x = torch.cat([xb, key.triggers[pick].reshape(-1, *xb.shape[1:])])
            y = torch.cat([yb, key.labels[pick]])
            out = model(x)
            loss = nn.functional.cross_entropy(out, y) + anchor.loss(i, out[:len(yb)])
            if extra_loss is not None:
                loss = loss + extra_loss(model)
            model.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        yield epoch


def _robust_passes(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], key: Key,
                   epochs: int, lr: float, per_batch: int, sigma: float, g: torch.Generator,
                   extra_loss: Callable[[nn.Module], torch.Tensor] | None,
                   anchor: _Anchor) -> None:
    """Clean loss at the weights, triggers' loss at noisy weights; one Adam step on both."""
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(epochs):
        model.train()
        for i, (xb, yb) in enumerate(batches):
            pick = torch.randint(0, key.n, (min(per_batch, key.n),), generator=g)
            model.zero_grad(set_to_none=True)
            out = model(xb)
            loss = nn.functional.cross_entropy(out, yb) + anchor.loss(i, out)
            if extra_loss is not None:
                loss = loss + extra_loss(model)
            loss.backward()
            with torch.no_grad():
                noise = [torch.randn(p.shape, generator=g) * sigma * p.std() if p.numel() > 1
                         else torch.zeros_like(p) for p in params]
                for p, e in zip(params, noise, strict=True):
                    p.add_(e)
            weight = len(pick) / (len(pick) + len(yb))  # the triggers' share of a mixed batch
            triggers = key.triggers[pick].reshape(-1, *xb.shape[1:])
            (weight * nn.functional.cross_entropy(model(triggers), key.labels[pick])).backward()
            with torch.no_grad():
                for p, e in zip(params, noise, strict=True):
                    p.sub_(e)
            opt.step()
    model.eval()


def _aware_passes(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], key: Key,
                  epochs: int, lr: float, per_batch: int, steps: int, thief_lr: float,
                  g: torch.Generator,
                  extra_loss: Callable[[nn.Module], torch.Tensor] | None,
                  decoys: int, weight: float, anchor: _Anchor) -> None:
    """Mixed loss at the weights plus the triggers' loss after a simulated fine-tune.

    The thief is simulated per step on a detached copy of the weights: `steps` signed
    gradient steps of size `thief_lr` on clean batches spread over the data. The
    triggers' gradient at the weights it reaches is added (first-order) to the gradient at
    the true weights; one Adam step on both.
    """
    from torch.func import functional_call

    named = dict(model.named_parameters())
    opt = torch.optim.Adam(named.values(), lr=lr)
    for _ in range(epochs):
        model.train()
        for i, (xb, yb) in enumerate(batches):
            pick = torch.randint(0, key.n, (min(per_batch, key.n),), generator=g)
            triggers = key.triggers[pick].reshape(-1, *xb.shape[1:])
            model.zero_grad(set_to_none=True)
            out = model(torch.cat([xb, triggers]))
            loss = nn.functional.cross_entropy(out, torch.cat([yb, key.labels[pick]])) \
                + anchor.loss(i, out[:len(yb)])
            if extra_loss is not None:
                loss = loss + extra_loss(model)
            loss.backward()
            fast = {k: v.detach().clone().requires_grad_(True) for k, v in named.items()}
            for j in range(steps):
                xa, ya = batches[(i + 1 + 7 * j) % len(batches)]  # spread over the data
                if decoys:  # an overwriting thief's own noise triggers, random labels
                    fake = torch.rand((decoys, *key.triggers.shape[1:]), generator=g)
                    xa = torch.cat([xa, fake.reshape(decoys, *xa.shape[1:])])
                    ya = torch.cat([ya, torch.randint(0, key.classes, (decoys,), generator=g)])
                grads = torch.autograd.grad(
                    nn.functional.cross_entropy(functional_call(model, fast, (xa,)), ya),
                    list(fast.values()))
                with torch.no_grad():
                    fast = {k: (v - thief_lr * gk.sign()).requires_grad_(True)
                            for (k, v), gk in zip(fast.items(), grads, strict=True)}
            grads = torch.autograd.grad(
                weight * nn.functional.cross_entropy(functional_call(model, fast, (triggers,)),
                                                     key.labels[pick]),
                list(fast.values()))
            with torch.no_grad():
                for p, gk in zip(named.values(), grads, strict=True):
                    if p.grad is not None:
                        p.grad.add_(gk)
            opt.step()
    model.eval()
