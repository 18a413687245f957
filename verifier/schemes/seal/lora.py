"""LoRA mechanics behind the `seal` scheme: the passport layer, training with alternating
passports, hiding the passport by factorization, merging, and writing a standard PEFT adapter.

Maths, per adapted `nn.Linear` with frozen weight W0 of shape (d, k):

    y = W0·x + b0 + s·B·C_t·A·x,   s = alpha / r
    B: (d, r) trainable, zero at start      A: (r, k) trainable, Kaiming-uniform at start
    C_t: (r, r) fixed passport: C on even batches, C_p on odd batches (no extra loss needed
         for both to become load-bearing; SEAL, Oh et al. 2025)

Release ("hiding"): C = U·Σ·Vᵀ, B′ = B·U·Σ^½, A′ = Σ^½·Vᵀ·A, so s·B′·A′ = s·B·C·A and the
file is an ordinary LoRA adapter (PEFT computes ΔW = (lora_alpha / r)·lora_B·lora_A). Neither
C nor C_p appears in it. With identity passports and no alternation this layer is plain LoRA,
which is how evaluations train their baseline.

Nothing here knows about keys, bits or p-values: that is `verifier.schemes.seal`.
"""
from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

PASSPORT = "C"  # the released passport, hidden in B′ and A′
PASSPORT_P = "C_p"  # the second, never released passport


class SealSetupError(ValueError):
    """A model, target list or adapter that SEAL cannot work with (the message says why)."""


class SealLinear(nn.Module):
    """An nn.Linear plus the SEAL update s·B·C_t·A, with fixed r×r passports C and C_p.

    The passports are non-persistent buffers: they never appear in `state_dict()`, so saving
    the module cannot leak them. The trainable factors are `seal_B` (d, r) and `seal_A` (r, k).

    Example:
        >>> layer = SealLinear(nn.Linear(4, 3), r=2, alpha=4.0, passport=torch.eye(2),
        ...                    passport_p=2 * torch.eye(2), generator=torch.Generator())
        >>> layer(torch.zeros(5, 4)).shape
        torch.Size([5, 3])
    """

    passport: torch.Tensor  # (r, r) C, a non-persistent buffer
    passport_p: torch.Tensor  # (r, r) C_p, a non-persistent buffer

    def __init__(self, base: nn.Linear, r: int, alpha: float, passport: torch.Tensor,
                 passport_p: torch.Tensor, generator: torch.Generator) -> None:
        super().__init__()
        d, k = base.weight.shape
        if passport.shape != (r, r) or passport_p.shape != (r, r):
            raise SealSetupError(f"passports must be ({r}, {r}) for r={r}, received "
                                 f"{tuple(passport.shape)} and {tuple(passport_p.shape)}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.r = r
        self.alpha = float(alpha)
        self.scaling = float(alpha) / r  # s
        self.seal_A = nn.Parameter(torch.empty(r, k))  # (r, k)
        nn.init.kaiming_uniform_(self.seal_A, a=math.sqrt(5), generator=generator)
        self.seal_B = nn.Parameter(torch.zeros(d, r))  # (d, r): ΔW = 0 at the start
        self.register_buffer("passport", passport.detach().float().clone(), persistent=False)
        self.register_buffer("passport_p", passport_p.detach().float().clone(), persistent=False)
        self.active = PASSPORT  # which passport forward() uses

    def current(self) -> torch.Tensor:
        """The passport in use, (r, r)."""
        return self.passport if self.active == PASSPORT else self.passport_p

    def delta(self, which: str = PASSPORT) -> torch.Tensor:
        """ΔW = s·B·C·A with C the named passport, (d, k)."""
        c = self.passport if which == PASSPORT else self.passport_p
        return self.scaling * self.seal_B @ c @ self.seal_A

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., k) -> (..., d)
        low = F.linear(F.linear(x, self.seal_A), self.current())  # (..., r): C_t·A·x
        return self.base(x) + self.scaling * F.linear(low, self.seal_B)


def _parent(model: nn.Module, path: str) -> tuple[nn.Module, str]:
    """The module holding `path`'s last component, and that component's name."""
    parent_path, _, leaf = path.rpartition(".")
    try:
        parent = model.get_submodule(parent_path) if parent_path else model
    except AttributeError:
        raise SealSetupError(f"target `{path}` is not a module of this model; "
                             "list targets by their path in model.named_modules()") from None
    if not hasattr(parent, leaf):
        raise SealSetupError(f"target `{path}` is not a module of this model; "
                             "list targets by their path in model.named_modules()")
    return parent, leaf


def base_linear(model: nn.Module, path: str) -> nn.Linear:
    """The frozen base `nn.Linear` at `path`, whether or not it is already SEAL-wrapped.

    Raises:
        SealSetupError: the path does not exist or is not an nn.Linear.
    """
    parent, leaf = _parent(model, path)
    module = getattr(parent, leaf)
    if isinstance(module, SealLinear):
        return module.base
    if not isinstance(module, nn.Linear):
        raise SealSetupError(f"target `{path}` is a {type(module).__name__}, expected nn.Linear; "
                             "SEAL adapts linear layers only")
    return module


def seal_layers(model: nn.Module) -> dict[str, SealLinear]:
    """Every SEAL-wrapped layer of `model`, by path."""
    return {name: m for name, m in model.named_modules() if isinstance(m, SealLinear)}


def wrap(model: nn.Module, targets: Sequence[str], r: int, alpha: float,
         passports: Mapping[str, tuple[torch.Tensor, torch.Tensor]], seed: int) -> nn.Module:
    """Replace each target nn.Linear of `model` (in place) by a SealLinear.

    Args:
        model: the base model; its target layers become frozen.
        targets: module paths of the nn.Linear layers to adapt.
        r: LoRA rank.
        alpha: LoRA scale numerator (s = alpha / r).
        passports: per target, (C, C_p), each (r, r). Identity passports give plain LoRA.
        seed: seeds the Kaiming-uniform initialization of every A.

    Returns:
        The same model object.

    Raises:
        SealSetupError: a target is missing, not an nn.Linear, already wrapped, or lacks passports.
    """
    g = torch.Generator().manual_seed(int(seed) % (2 ** 63))
    for t in targets:
        parent, leaf = _parent(model, t)
        if isinstance(getattr(parent, leaf), SealLinear):
            raise SealSetupError(f"target `{t}` is already SEAL-wrapped; embed into the base model")
        base = base_linear(model, t)
        if t not in passports:
            raise SealSetupError(f"no passports given for target `{t}`")
        c, c_p = passports[t]
        setattr(parent, leaf, SealLinear(base, r, alpha, c, c_p, g))
    return model


def set_passport(model: nn.Module, which: str) -> None:
    """Make every SEAL layer of `model` use passport `which` ("C" or "C_p")."""
    if which not in (PASSPORT, PASSPORT_P):
        raise SealSetupError(f"passport must be `{PASSPORT}` or `{PASSPORT_P}`, received `{which}`")
    for layer in seal_layers(model).values():
        layer.active = which


def logits(model: nn.Module, inputs: Any) -> torch.Tensor:
    """Call `model` on a batch (a tensor or a dict of tensors) and return its logits, (N, C)."""
    out = model(**inputs) if isinstance(inputs, Mapping) else model(inputs)
    return out.logits if hasattr(out, "logits") else out


def train(model: nn.Module, data: Iterable[tuple[Any, torch.Tensor]], *, lr: float = 3e-3,
          trainable: Sequence[str] = (), alternate: bool = True,
          extra_loss: Callable[[nn.Module], torch.Tensor] | None = None) -> nn.Module:
    """Train the SEAL factors (and parameters under `trainable` prefixes) with Adam.

    Passports alternate batch by batch (C on even batches, C_p on odd) when `alternate`; the
    task loss is cross-entropy, plus `extra_loss(model)` if given. Every other parameter is
    frozen during training and its `requires_grad` flag is restored afterwards.

    Args:
        model: a model with SEAL layers (see `wrap`).
        data: (inputs, labels) batches; inputs a tensor or a dict of tensors.
        lr: Adam learning rate.
        trainable: parameter-name prefixes trained alongside B and A (e.g. a classifier head).
        alternate: alternate C / C_p (SEAL); False trains with C only.
        extra_loss: an added loss term, e.g. the scheme's bit hinge.

    Returns:
        The model, in eval mode, with passport C active.
    """
    layers = seal_layers(model)
    if not layers:
        raise SealSetupError("the model has no SEAL layers; call wrap() (or seal.embed) first")
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    names = {f"{path}.seal_{w}" for path in layers for w in "AB"}
    params = [p for n, p in model.named_parameters()
              if n in names or (trainable and n.startswith(tuple(trainable)))]
    for n, p in model.named_parameters():
        p.requires_grad_(n in names or bool(trainable and n.startswith(tuple(trainable))))
    opt = torch.optim.Adam(params, lr=lr)
    model.train()
    try:
        for i, (xb, yb) in enumerate(data):
            set_passport(model, PASSPORT_P if alternate and i % 2 else PASSPORT)
            loss = F.cross_entropy(logits(model, xb), yb)
            if extra_loss is not None:
                loss = loss + extra_loss(model)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        set_passport(model, PASSPORT)
        model.eval()
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])
    return model


@torch.no_grad()
def hide(b: torch.Tensor, c: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Absorb passport C into the factors: B′ = B·U·Σ^½ and A′ = Σ^½·Vᵀ·A, so B′·A′ = B·C·A.

    Args:
        b: (d, r) owner's B.
        c: (r, r) passport C.
        a: (r, k) owner's A.

    Returns:
        (B′ (d, r), A′ (r, k)) in float32, computed in float64.

    Example:
        >>> b, c, a = torch.randn(5, 2), torch.randn(2, 2), torch.randn(2, 3)
        >>> b2, a2 = hide(b, c, a)
        >>> torch.allclose(b2 @ a2, b @ c @ a, atol=1e-5)
        True
    """
    u, s, vh = torch.linalg.svd(c.double())
    root = s.sqrt()  # (r,)
    return (b.double() @ (u * root)).float(), ((root[:, None] * vh) @ a.double()).float()


@torch.no_grad()
def released_factors(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per SEAL layer, the releasable (B′ (d, r), A′ (r, k)) with passport C hidden."""
    return {path: hide(layer.seal_B, layer.passport, layer.seal_A)
            for path, layer in seal_layers(model).items()}


@torch.no_grad()
def unwrap(model: nn.Module, merged: bool = True) -> nn.Module:
    """A plain copy of a SEAL-wrapped model: each SealLinear becomes an nn.Linear again.

    Args:
        model: a model with SEAL layers (left untouched).
        merged: True folds the released update s·B′·A′ into the weights (what `merge_and_unload`
            of the PEFT adapter gives); False returns the untouched base.

    Returns:
        A new model whose parameters all have requires_grad=True, as if freshly loaded.
    """
    out = copy.deepcopy(model)
    factors = released_factors(out) if merged else {}
    for path, layer in seal_layers(out).items():
        parent, leaf = _parent(out, path)
        base = layer.base
        if merged:
            b2, a2 = factors[path]
            base.weight.add_(layer.scaling * (b2 @ a2))
        setattr(parent, leaf, base)
    for p in out.parameters():
        p.requires_grad_(True)
    return out


@torch.no_grad()
def save_peft_adapter(model: nn.Module, out_dir: str | Path, *,
                      modules_to_save: Sequence[str] = (),
                      base_model_name_or_path: str | None = None) -> Path:
    """Write the released adapter of a SEAL-wrapped model as a standard PEFT LoRA adapter.

    The files are what `peft` itself writes (`adapter_model.safetensors`,
    `adapter_config.json`): lora_A = A′, lora_B = B′, lora_alpha = alpha, r = r, plus the
    weights of `modules_to_save` (e.g. a trained classifier head). No passport is written.

    Args:
        model: the trained SEAL-wrapped model (left untouched).
        out_dir: directory to create or fill.
        modules_to_save: module names saved in full beside the adapter.
        base_model_name_or_path: recorded in the config for whoever loads the adapter.

    Returns:
        The output directory.

    Raises:
        SealSetupError: the model has no SEAL layers, or its layers disagree on r or alpha.
    """
    from peft import LoraConfig, get_peft_model

    layers = seal_layers(model)
    if not layers:
        raise SealSetupError("the model has no SEAL layers: nothing to release")
    ranks = {(lay.r, lay.alpha) for lay in layers.values()}
    if len(ranks) != 1:
        raise SealSetupError(f"SEAL layers disagree on (r, alpha): {sorted(ranks)}")
    ((r, alpha),) = ranks
    plain = unwrap(model, merged=False)
    config = LoraConfig(
        r=r, lora_alpha=int(alpha) if float(alpha).is_integer() else alpha,  # type: ignore[arg-type]
        target_modules=sorted(layers), lora_dropout=0.0, bias="none",
        modules_to_save=list(modules_to_save) or None,
        base_model_name_or_path=base_model_name_or_path)
    with warnings.catch_warnings():  # the base_model_name_or_path reset, undone below
        warnings.filterwarnings("ignore", message=".*base_model_name_or_path.*")
        peft_model: Any = get_peft_model(plain, config)
    inner: Any = peft_model.base_model.model
    for path, (b2, a2) in released_factors(model).items():
        lora = inner.get_submodule(path)
        lora.lora_A["default"].weight.copy_(a2)
        lora.lora_B["default"].weight.copy_(b2)
    for name in modules_to_save:
        saved = inner.get_submodule(name).modules_to_save["default"]
        saved.load_state_dict(model.get_submodule(name).state_dict())
    # get_peft_model resets the name for models without a Hugging Face config; put it back
    peft_model.peft_config["default"].base_model_name_or_path = base_model_name_or_path
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # peft looks for the base's config to check the vocabulary
        warnings.filterwarnings("ignore", message="Could not find a config file")
        peft_model.save_pretrained(str(out))
    return out
