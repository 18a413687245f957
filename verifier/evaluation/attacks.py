"""Removal attacks a thief can afford, applied to a copy of a stolen model.

Each returns a new model and leaves its input untouched. An attack only "succeeds" (SoK,
Lukas et al. 2022) if it removes the mark while the attacker keeps accuracy within 5 points,
so evaluations report the attacker's accuracy beside every p-value.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn

from verifier import toy


def finetune(model: nn.Module, split: toy.Split, epochs: int = 5, lr: float = 1e-3,
             seed: int = 1, only: tuple[str, ...] | None = None,
             fraction: float = 1.0) -> nn.Module:
    """Fine-tune a copy with a fresh Adam on (a `fraction` of) the training data.

    Args:
        only: parameter-name prefixes to train (e.g. ("fc3",) for the last layer); all if None.
    """
    m = copy.deepcopy(model)
    params = [p for n, p in m.named_parameters() if only is None or n.startswith(only)]
    n = max(1, int(len(split.y_train) * fraction))
    torch.manual_seed(seed)
    data = toy.batches(split.x_train[:n], split.y_train[:n], seed=seed, epochs=epochs)
    return toy.train(m, data, lr=lr, params=params)


def retrain_dense(model: nn.Module, split: toy.Split, epochs: int = 20, seed: int = 1,
                  lr: float = 3e-3) -> nn.Module:
    """Re-initialize every nn.Linear of a copy and retrain only those (the ROWBACK threat)."""
    m = copy.deepcopy(model)
    torch.manual_seed(seed)
    dense = [mod for mod in m.modules() if isinstance(mod, nn.Linear)]
    for mod in dense:
        mod.reset_parameters()
    params = [p for mod in dense for p in mod.parameters()]
    data = toy.batches(split.x_train, split.y_train, seed=seed, epochs=epochs)
    return toy.train(m, data, lr=lr, params=params)


@torch.no_grad()
def prune_global(model: nn.Module, fraction: float = 0.5) -> nn.Module:
    """Zero the `fraction` of weights (tensors with dim > 1) with the smallest magnitude."""
    m = copy.deepcopy(model)
    weights = [p for p in m.parameters() if p.dim() > 1]
    mags = torch.cat([p.abs().flatten() for p in weights])
    k = int(fraction * mags.numel())
    if k == 0:
        return m
    threshold = mags.kthvalue(k).values
    for p in weights:
        p.mul_((p.abs() > threshold).to(p.dtype))
    return m


@torch.no_grad()
def quantize_int8(model: nn.Module) -> nn.Module:
    """Round-trip every float tensor through symmetric per-tensor int8 (as a quantized export would)."""
    return quantize(model, 8)


class AttackError(ValueError):
    """An attack asked of a model it cannot be applied to (the message names the fix)."""


def _dense_chain(model: nn.Module) -> list[nn.Linear]:
    """The nn.Linear layers of an MLP in order, each feeding the next through a ReLU.

    Raises:
        AttackError: if the model has parametrized modules other than nn.Linear (a CNN) or
            consecutive layers do not chain (out_features of one != in_features of the next).
    """
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    other = [type(m).__name__ for m in model.modules()
             if not isinstance(m, nn.Linear) and any(True for _ in m.parameters(recurse=False))]
    if other or len(layers) < 2:
        raise AttackError(f"unit-level rewrites need an MLP of >= 2 nn.Linear layers; this model "
                          f"has {len(layers)} and also {sorted(set(other))}: pass an MLP")
    for a, b in zip(layers, layers[1:], strict=False):
        if a.out_features != b.in_features:
            raise AttackError(f"nn.Linear layers do not chain ({a.out_features} outputs feed "
                              f"{b.in_features} inputs): pass a plain MLP")
    return layers


@torch.no_grad()
def permute_hidden(model: nn.Module, fraction: float = 1.0, seed: int = 1) -> nn.Module:
    """Shuffle a `fraction` of the hidden units of every hidden layer of an MLP (outputs unchanged).

    The units chosen in each layer are permuted among themselves (a random permutation of
    them), the rows of the layer and the columns of the next moved together: the network
    computes exactly the same function (LayerShuffle, Yan et al. KDD 2022).

    Example:
        >>> m = toy.MLP(); x = torch.rand(3, 64)
        >>> bool(torch.allclose(m(x), permute_hidden(m)(x), atol=1e-5))
        True
    """
    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    layers = _dense_chain(m)
    for layer, nxt in zip(layers, layers[1:], strict=False):
        h = layer.out_features
        chosen = torch.randperm(h, generator=g)[:int(round(fraction * h))]
        perm = torch.arange(h)
        perm[chosen] = chosen[torch.randperm(len(chosen), generator=g)]
        layer.weight.copy_(layer.weight[perm])
        if layer.bias is not None:
            layer.bias.copy_(layer.bias[perm])
        nxt.weight.copy_(nxt.weight[:, perm])
    return m


@torch.no_grad()
def rescale_units(model: nn.Module, spread: float = 4.0, seed: int = 1) -> nn.Module:
    """Scale each ReLU hidden unit by c ~ log-uniform in [1/spread, spread] (outputs unchanged).

    Row i of a layer and its bias are multiplied by c_i and column i of the next layer divided
    by it; relu(c·z) = c·relu(z) for c > 0, so the function is the same (NeuronScale).

    Example:
        >>> m = toy.MLP(); x = torch.rand(3, 64)
        >>> bool(torch.allclose(m(x), rescale_units(m, 8.0)(x), atol=1e-4))
        True
    """
    if spread < 1.0:
        raise AttackError(f"spread must be >= 1, received {spread}")
    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    layers = _dense_chain(m)
    for layer, nxt in zip(layers, layers[1:], strict=False):
        u = torch.rand(layer.out_features, generator=g) * 2 - 1  # (H,) in [-1, 1)
        c = torch.exp(u * math.log(spread))  # (H,)
        layer.weight.mul_(c[:, None])
        if layer.bias is not None:
            layer.bias.mul_(c)
        nxt.weight.div_(c[None, :])
    return m


@torch.no_grad()
def gaussian_noise(model: nn.Module, sigma: float = 0.1, seed: int = 1) -> nn.Module:
    """Add N(0, (sigma · std of the tensor)^2) noise to every parameter tensor."""
    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    for p in m.parameters():
        scale = p.std() if p.numel() > 1 else p.abs()
        p.add_(sigma * scale * torch.randn(p.shape, generator=g))
    return m


@torch.no_grad()
def quantize(model: nn.Module, bits: int = 8) -> nn.Module:
    """Round-trip every parameter through symmetric per-tensor `bits`-bit integers."""
    if not 2 <= bits <= 16:
        raise AttackError(f"bits must lie in [2, 16], received {bits}")
    m = copy.deepcopy(model)
    top = 2 ** (bits - 1) - 1
    for p in m.parameters():
        scale = p.abs().max().clamp_min(1e-12) / top
        p.copy_((p / scale).round().clamp(-top, top) * scale)
    return m


def reinit_last(model: nn.Module, split: toy.Split, epochs: int = 5, seed: int = 1,
                lr: float = 3e-3) -> nn.Module:
    """Re-initialize the last nn.Linear of a copy and retrain only it on the training set."""
    m = copy.deepcopy(model)
    torch.manual_seed(seed)
    last = [mod for mod in m.modules() if isinstance(mod, nn.Linear)][-1]
    last.reset_parameters()
    data = toy.batches(split.x_train, split.y_train, seed=seed, epochs=epochs)
    return toy.train(m, data, lr=lr, params=list(last.parameters()))


def distill(teacher: Callable[[torch.Tensor], torch.Tensor], student: nn.Module,
            inputs: torch.Tensor, epochs: int = 30, seed: int = 1, lr: float = 3e-3,
            temperature: float = 1.0) -> nn.Module:
    """Train `student` (in place) only on the teacher's outputs for unlabeled `inputs`.

    One query per input: the teacher's served outputs (logits) are fetched once, turned into
    soft labels softmax(out / T), and the student minimises KL(soft labels ‖ student) over
    `epochs` passes. No true label is used.

    Args:
        teacher: the served predict function of the stolen model, (N, ...) -> (N, C) logits.
        student: a freshly initialised model (trained in place and returned).
        inputs: (N, ...) unlabeled in-distribution inputs; N is the number of queries.
    """
    with torch.no_grad():
        soft = torch.softmax(teacher(inputs).float() / temperature, dim=1)  # (N, C)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    student.train()
    for xb, pb in toy.batches(inputs, soft, seed=seed, epochs=epochs):
        log_q = torch.log_softmax(student(xb) / temperature, dim=1)
        loss = nn.functional.kl_div(log_q, pb, reduction="batchmean")
        opt.zero_grad()
        loss.backward()
        opt.step()
    student.eval()
    return student


# What a thief may serve instead of the logits, each keeping the top-1 prediction.
POSTPROCESS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "logits": lambda z: z,
    "probabilities": lambda z: torch.softmax(z, dim=1),
    "log-probabilities": lambda z: torch.log_softmax(z, dim=1),
    "temperature 2": lambda z: z / 2.0,
    "affine 1.001·z + 0.5": lambda z: 1.001 * z + 0.5,
    "fp16": lambda z: z.half().float(),
}


def served(model: nn.Module, post: str = "logits") -> Callable[[torch.Tensor], torch.Tensor]:
    """The predict function of `model` served through the post-processing named `post`."""
    if post not in POSTPROCESS:
        raise AttackError(f"unknown post-processing `{post}`; expected one of {', '.join(POSTPROCESS)}")
    f = POSTPROCESS[post]

    @torch.no_grad()
    def predict(x: torch.Tensor) -> torch.Tensor:
        return f(model.eval()(x).detach().float())

    return predict


def renamed(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict under new, meaningless names ("t0.weight" ...), values unchanged."""
    out: dict[str, torch.Tensor] = {}
    for i, (name, t) in enumerate(model.state_dict().items()):
        out[f"t{i}.{name.rsplit('.', 1)[-1]}"] = t.detach().clone()
    return out
