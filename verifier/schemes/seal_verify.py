"""`seal` test internals: reading a suspect's update per target, R1 and the passport alignment.

A suspect's update ΔŴ of a target comes from SEAL module factors, PEFT LoRA factors, or merged
weights minus the base weights registered for the key (`seal_keys`). `verifier.schemes.seal.test`
turns these into the exact bit test; R1 and the alignment are details, never the decision.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from verifier.schemes.seal_keys import _base_for

if TYPE_CHECKING:
    from verifier.schemes.seal import Key

R1_TOLERANCE = 1e-4  # largest relative Frobenius error ‖s·B·C·A − ΔŴ‖ / ‖s·B·C·A‖ for R1


@dataclass(frozen=True)
class _Update:
    """A suspect's update of one target: low-rank factors (s·B̂ (d, q), Â (q, k)) or dense (d, k)."""

    b: torch.Tensor | None = None
    a: torch.Tensor | None = None
    dense_: torch.Tensor | None = None
    erased: int = 0  # entries treated as erasures (merged form)

    def dense(self) -> torch.Tensor:
        if self.dense_ is not None:
            return self.dense_
        assert self.b is not None and self.a is not None
        return self.b @ self.a

    def project(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """uⱼᵀ·ΔŴ·vⱼ for every j, (T,) in float64."""
        if self.dense_ is not None:
            return ((u.double() @ self.dense_.double()) * v.double()).sum(dim=1)
        assert self.b is not None and self.a is not None
        return ((u.double() @ self.b.double()) * (v.double() @ self.a.double().T)).sum(dim=1)

    def energy(self) -> float:
        return float(self.dense().double().pow(2).sum())


_LORA = re.compile(r"^(?P<path>.+)\.lora_(?P<role>[AB])(?:\.[^.]+)?\.weight$")
_SEAL = re.compile(r"^(?P<path>.+)\.seal_(?P<role>[AB])$")
_DENSE = re.compile(r"^(?P<path>.+?)(?:\.base_layer)?\.weight$")
_PREFIX = "base_model.model."


def _index(names: Iterable[str], pattern: re.Pattern[str]) -> dict[str, dict[str, str]]:
    """path -> {role: original name} for the names matching `pattern` (PEFT prefix stripped)."""
    out: dict[str, dict[str, str]] = {}
    for name in sorted(names):
        m = pattern.match(name.removeprefix(_PREFIX))
        if m:
            role = m.groupdict().get("role") or "W"
            out.setdefault(m["path"], {}).setdefault(role, name)
    return out


def _match(paths: Iterable[str], target: str) -> str | None:
    """The unique path naming `target`, allowing a missing or extra leading prefix."""
    hits = [p for p in paths
            if p == target or p.endswith("." + target) or target.endswith("." + p)]
    exact = [p for p in hits if p == target]
    return exact[0] if exact else (hits[0] if len(hits) == 1 else None)


def _updates(weights: Mapping[str, torch.Tensor], key: Key
             ) -> tuple[dict[str, _Update], str, list[str]]:
    """The suspect's update per target it holds, the form found, and notes on skipped targets."""
    s = key.alpha / key.r
    seal_idx, lora_idx = _index(weights, _SEAL), _index(weights, _LORA)
    dense_idx = _index(weights, _DENSE)
    out: dict[str, _Update] = {}
    forms: set[str] = set()
    notes: list[str] = []
    base: dict[str, torch.Tensor] | None = None
    base_reason = ""
    for t in key.targets:
        d, k = key.shapes[t]
        for form, idx in (("seal module", seal_idx), ("lora adapter", lora_idx)):
            p = _match(idx, t)
            if p and {"A", "B"} <= set(idx[p]):
                b, a = weights[idx[p]["B"]].float(), weights[idx[p]["A"]].float()
                if b.dim() != 2 or a.dim() != 2 or b.shape[0] != d or a.shape[1] != k \
                        or b.shape[1] != a.shape[0]:
                    notes.append(f"`{t}`: {form} factors {tuple(b.shape)}·{tuple(a.shape)} "
                                 f"do not give a ({d}, {k}) update; skipped")
                    break
                if form == "seal module":
                    b = b @ key.passports[t][0].float()
                out[t] = _Update(b=s * b, a=a)
                forms.add(form)
                break
        else:
            p = _match(dense_idx, t)
            if p is None:
                notes.append(f"`{t}`: not found in the suspect")
                continue
            w = weights[dense_idx[p]["W"]].float()
            if tuple(w.shape) != (d, k):
                notes.append(f"`{t}`: weight shape {tuple(w.shape)}, expected ({d}, {k}); skipped")
                continue
            if base is None and not base_reason:
                base, base_reason = _base_for(key)
            if base is None:
                notes.append(f"`{t}`: merged weights, but {base_reason}")
                continue
            w_base = base[t]
            erased = (w == 0) & (w_base != 0)  # pruned by the suspect: no information there
            out[t] = _Update(dense_=torch.where(erased, torch.zeros_like(w), w - w_base),
                             erased=int(erased.sum()))
            forms.add("merged weights")
    return out, " + ".join(sorted(forms)), notes


def _r1(key: Key, updates: Mapping[str, _Update]) -> dict[str, Any]:
    """R1: relative error between the owner's s·B·C·A and the suspect's update, per target."""
    if not key.factors:
        return {"checked": False, "reason": "the key holds no owner factors (finalize_key)"}
    s = key.alpha / key.r
    errors = {}
    for t, upd in updates.items():
        b, a = key.factors[t]
        ref = s * b.double() @ key.passports[t][0].double() @ a.double()
        denom = float(ref.norm()) or 1.0
        errors[t] = float((ref - upd.dense().double()).norm()) / denom
    ok = len(errors) == len(key.targets) and max(errors.values(), default=math.inf) <= R1_TOLERANCE
    return {"checked": True, "tolerance": R1_TOLERANCE, "pass": ok,
            "max_rel_error": max(errors.values(), default=math.inf), "rel_error": errors}


def _alignment(key: Key, updates: Mapping[str, _Update]) -> dict[str, Any]:
    """Descriptive: Pearson r of Ĉ = B⁺·(ΔŴ/s)·A⁺ (pooled over targets) with C and with C_p."""
    if not key.factors:
        return {}
    s = key.alpha / key.r
    c_hat, cs, cps = [], [], []
    for t, upd in updates.items():
        b, a = (f.double() for f in key.factors[t])
        c_hat.append((torch.linalg.pinv(b) @ (upd.dense().double() / s) @ torch.linalg.pinv(a)).flatten())
        cs.append(key.passports[t][0].double().flatten())
        cps.append(key.passports[t][1].double().flatten())
    x = torch.cat(c_hat)

    def corr(y: torch.Tensor) -> float:
        xc, yc = x - x.mean(), y - y.mean()
        den = float(xc.norm() * yc.norm())
        return float((xc * yc).sum()) / den if den > 0 else 0.0

    return {"corr_C": corr(torch.cat(cs)), "corr_C_p": corr(torch.cat(cps)),
            "null": "none: descriptive only, not used for the decision"}
