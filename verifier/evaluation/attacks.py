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


Layer = nn.Linear | nn.Conv2d


def _chain(model: nn.Module) -> list[tuple[Layer, Layer, int]]:
    """(producer, consumer, group) for each hidden layer of a chain of Linear / Conv2d layers.

    The model must compute layer after layer in registration order with only ReLU, max- or
    mean-pooling and channel-major flattening in between (toy.MLP, toy.CNN, toy.DeepCNN):
    then unit i of a producer feeds inputs i·group … (i+1)·group − 1 of its consumer (group > 1
    where a conv's channels are flattened into a dense layer).

    Raises:
        AttackError: naming the module that breaks the chain.
    """
    layers = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
    other = sorted({type(m).__name__ for m in layers if not isinstance(m, (nn.Linear, nn.Conv2d))})
    if other or len(layers) < 2:
        raise AttackError(f"unit-level rewrites need a chain of >= 2 nn.Linear / nn.Conv2d "
                          f"layers; this model has {len(layers)} and also {other}: pass an MLP "
                          "or a plain CNN")
    out = []
    for a, b in zip(layers, layers[1:], strict=False):
        assert isinstance(a, (nn.Linear, nn.Conv2d)) and isinstance(b, (nn.Linear, nn.Conv2d))
        units = int(a.weight.shape[0])  # out_features / out_channels
        fan = int(b.weight.shape[1])  # in_features / in_channels
        if isinstance(a, nn.Linear) and isinstance(b, nn.Conv2d) or fan % units:
            raise AttackError(f"{type(a).__name__} with {units} units does not feed "
                              f"{type(b).__name__} with {fan} inputs: pass an MLP or a plain CNN")
        out.append((a, b, fan // units))
    return out


def _consumer_view(b: Layer, units: int) -> torch.Tensor:
    """The consumer's weight viewed as (out, units, rest): unit i's inputs along dim 1."""
    return b.weight.view(b.weight.shape[0], units, -1)


@torch.no_grad()
def permute_hidden(model: nn.Module, fraction: float = 1.0, seed: int = 1) -> nn.Module:
    """Shuffle a `fraction` of the hidden units (channels) of every hidden layer (outputs unchanged).

    The units chosen in each layer are permuted among themselves (a random permutation of
    them), the producer's rows and the consumer's inputs moved together: the network
    computes exactly the same function (LayerShuffle, Yan et al. KDD 2022). Works on MLPs and
    plain CNNs (see `_chain`).

    Example:
        >>> m = toy.CNN(); x = torch.rand(3, 64)
        >>> bool(torch.allclose(m(x), permute_hidden(m)(x), atol=1e-5))
        True
    """
    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    for a, b, _group in _chain(m):
        h = a.weight.shape[0]
        chosen = torch.randperm(h, generator=g)[:int(round(fraction * h))]
        perm = torch.arange(h)
        perm[chosen] = chosen[torch.randperm(len(chosen), generator=g)]
        a.weight.copy_(a.weight[perm])
        if a.bias is not None:
            a.bias.copy_(a.bias[perm])
        w = _consumer_view(b, h)  # (out, h, rest)
        w.copy_(w[:, perm].clone())
    return m


@torch.no_grad()
def rescale_units(model: nn.Module, spread: float = 4.0, seed: int = 1) -> nn.Module:
    """Scale each ReLU hidden unit (channel) by c ~ log-uniform in [1/spread, spread] (outputs unchanged).

    The producer's row i and bias are multiplied by c_i and the consumer's inputs from unit i
    divided by it; relu, max- and mean-pooling commute with c > 0, so the function is the same
    (NeuronScale). Works on MLPs and plain CNNs (see `_chain`).

    Example:
        >>> m = toy.MLP(); x = torch.rand(3, 64)
        >>> bool(torch.allclose(m(x), rescale_units(m, 8.0)(x), atol=1e-4))
        True
    """
    if spread < 1.0:
        raise AttackError(f"spread must be >= 1, received {spread}")
    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    for a, b, _group in _chain(m):
        h = a.weight.shape[0]
        c = torch.exp((torch.rand(h, generator=g) * 2 - 1) * math.log(spread))  # (h,)
        a.weight.mul_(c.view(h, *([1] * (a.weight.dim() - 1))))
        if a.bias is not None:
            a.bias.mul_(c)
        _consumer_view(b, h).div_(c[None, :, None])
    return m


@torch.no_grad()
def dummy_neurons(model: nn.Module, fraction: float = 0.5, seed: int = 1) -> nn.Module:
    """Widen every hidden layer with `fraction` × its units of dummy units (outputs unchanged).

    Neural structural obfuscation (Yan et al., USENIX Security 2023): the added units change
    the weights' shapes but not the function. The new units cycle through three kinds:

    - zero: fresh random incoming weights and bias, outgoing weights all zero;
    - split (NeuronSplit): a copy of an existing unit j's incoming weights and bias × c > 0,
      with outgoing weights T ⊙ a_j / c while unit j keeps (1 − T) ⊙ a_j (T random per
      weight): relu is positively homogeneous, so the two together compute what j did;
    - clique (NeuronClique, two units): incoming weights along one random direction × c1, c2
      > 0, outgoing u / c1 and −u / c2: their contributions cancel.

    Every layer (original and new units together) is then shuffled, so the dummies do not sit
    at the end. Works on MLPs and plain CNNs (see `_chain`; for conv layers channels play the
    role of units). The result has other shapes than the input: load it as a fresh module,
    not into the original class's state dict.

    Args:
        fraction: units added per hidden layer, as a fraction of its width (0.1, 0.5, 1.0 …).
        seed: the attacker's randomness.

    Example:
        >>> m = toy.CNN(); x = torch.rand(3, 64); wide = dummy_neurons(m, 1.0)
        >>> wide.conv1.weight.shape[0], bool(torch.allclose(m(x), wide(x), atol=1e-5))
        (32, True)
    """
    if fraction < 0:
        raise AttackError(f"fraction must be >= 0, received {fraction}")
    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    links = _chain(m)
    layers = [a for a, _, _ in links] + [links[-1][1]]
    ws = [layer.weight.detach().clone() for layer in layers]
    bs = [None if layer.bias is None else layer.bias.detach().clone() for layer in layers]
    for i, (_, _, group) in enumerate(links):
        w, b, nxt = ws[i], bs[i], ws[i + 1]
        h = w.shape[0]
        cons = nxt.reshape(nxt.shape[0], h, group, *nxt.shape[2:])  # (out', h, group, *k')
        rows, biases, cols = [], [], []
        kinds = ("zero", "split", "clique")
        added, n, turn = 0, int(round(fraction * h)), 0
        while added < n:
            kind = kinds[turn % 3] if n - added >= 2 else "zero"  # a clique needs two units
            turn += 1
            bias = torch.zeros(()) if b is None else b
            if kind == "zero":
                rows.append(w[0].clone().normal_(generator=g) * w.std())
                biases.append(bias.std() * torch.randn((), generator=g) if b is not None else None)
                cols.append(torch.zeros_like(cons[:, 0]))
                added += 1
            elif kind == "split":
                j = int(torch.randint(h, (1,), generator=g))
                c = float(torch.exp(torch.randn((), generator=g)))
                t = torch.rand(cons[:, j].shape, generator=g)
                rows.append(c * w[j])
                biases.append(c * b[j] if b is not None else None)
                cols.append(t * cons[:, j] / c)
                cons[:, j] = (1 - t) * cons[:, j]
                added += 1
            else:
                direction = w[0].clone().normal_(generator=g) * w.std()
                beta = bias.std() * torch.randn((), generator=g) if b is not None else None
                u = torch.randn(cons[:, 0].shape, generator=g) * cons.std()
                for sign in (1.0, -1.0):
                    c = float(torch.exp(torch.randn((), generator=g)))
                    rows.append(c * direction)
                    biases.append(c * beta if beta is not None else None)
                    cols.append(sign * u / c)
                added += 2
        if not rows:
            continue
        w = torch.cat([w, torch.stack(rows)])
        if b is not None:
            b = torch.cat([b, torch.stack([x for x in biases if x is not None])])
        cons = torch.cat([cons, torch.stack(cols, dim=1)], dim=1)  # (out', h + n, group, *k')
        perm = torch.randperm(w.shape[0], generator=g)
        ws[i], bs[i] = w[perm], None if b is None else b[perm]
        ws[i + 1] = cons[:, perm].reshape(nxt.shape[0], -1, *nxt.shape[2:])
    for layer, w, b in zip(layers, ws, bs, strict=True):
        layer.weight = nn.Parameter(w)
        if b is not None:
            layer.bias = nn.Parameter(b)
        if isinstance(layer, nn.Linear):
            layer.out_features, layer.in_features = int(w.shape[0]), int(w.shape[1])
        else:
            layer.out_channels, layer.in_channels = int(w.shape[0]), int(w.shape[1])
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
