"""`seal` verification: the suspect's update per target, the exact bit test, R1, alignment.

A suspect's update ΔŴ of a target comes from SEAL module factors, PEFT LoRA factors, or merged
weights minus the base weights registered for the key (`base`). `test` turns these into the
exact bit test; R1 and the passport alignment are details, never the decision.

The statistic: the number k of bits j with b_j·proj_j > 0, proj_j = Σ_m u_{j,m}ᵀ·ΔŴ_m·v_{j,m}.
p = P[Bin(T, 1/2) ≥ k] is EXACT under H0 "the suspect is independent of this key": the bits
are fair coins drawn from the seed independently of the projections, of the passports and of
the suspect (and a key cannot carry other bits: they are never stored, always re-derived), so
each agrees with any fixed sign with probability 1/2 independently of the others; a zero
projection counts as a mismatch, which only makes the test conservative. See
docs/schemes-seal.md for the derivation.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from verifier.result import NULL_CONSERVATIVE, NULL_EXACT, TestResult
from verifier.schemes._layout import View, views
from verifier.schemes.seal.align import (
    MIN_MATCH,
    SURE_MATCH,
    Aligned,
    align_chain,
    align_rows,
    unit_match,
)
from verifier.schemes.seal.base import base_for, base_model_weights
from verifier.schemes.seal.key import NAME, Key, check_shapes
from verifier.schemes.seal.material import projections, secret_bits
from verifier.stats import log10_binom_sf
from verifier.suspect import Suspect

ACCESS = "white-box"
CLAIM = ("The suspect's low-rank update (its LoRA adapter, or its weights minus the registered "
         "base model) carries secret projection bits of this key, so it was derived from the "
         "owner's SEAL adapter; it proves priority only if the key was committed before the "
         "suspect appeared, and it says nothing about the base model itself.")

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


def suspect_updates(weights: Mapping[str, torch.Tensor], key: Key
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
    prev: tuple[torch.Tensor, torch.Tensor] | None = None  # previous target's moved units
    used: set[str] = set()  # suspect tensors already read as a target
    chain: dict[str, Aligned] | None = None  # targets aligned through the base's whole chain
    full = base_model_weights(key.base_digest)
    if full is not None:
        chain = align_chain(weights, full, key.targets, key.r)
    for t in key.targets:
        d, k = key.shapes[t]
        w: torch.Tensor | None = None
        why = ""
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
            name = dense_idx[p]["W"] if p is not None else None
            named = weights[name].float() if name is not None else None
            if name is not None and named is not None and tuple(named.shape) == (d, k):
                w = named
                used.add(name)
            else:
                why = ("not found in the suspect" if named is None
                       else f"weight shape {tuple(named.shape)}, expected ({d}, {k})")
            if base is None and not base_reason:
                base, base_reason = base_for(key.base_digest, key.base_name, key.targets)
            if base is None:
                notes.append(f"`{t}`: {why}" if w is None else f"`{t}`: merged weights, but {base_reason}")
                continue
            w_base = base[t]
            if w is None:  # renamed, transposed or fused: find it by content against the base
                found_view = _by_content(weights, w_base, used, prev, key.r)
                if found_view is None:
                    notes.append(f"`{t}`: {why}, and no tensor of a compatible shape matches the "
                                 "base's units; skipped")
                    continue
                w = found_view.weight.float()
                used.add(found_view.tensor)
                notes.append(f"`{t}`: {why}; read from `{found_view.source}`, the tensor of its "
                             "shape whose units match the base's best")
            if chain is not None and name == f"{t}.weight" and t in chain:
                al = chain[t]
            else:
                al = _aligned(w, w_base, key.r, prev)
            prev = (al.perm, al.scale) if al.moved else None
            if al.moved:
                w = al.weight.float()
                notes.append(f"`{t}`: units aligned to the base (rows permuted: "
                             f"{int((al.perm != torch.arange(d)).sum())} of {d}, largest "
                             f"rescaling ×{float(al.scale.max() / al.scale.min()):.3g})")
            erased = (w == 0) & (w_base != 0)  # pruned by the suspect: no information there
            out[t] = _Update(dense_=torch.where(erased, torch.zeros_like(w), w - w_base),
                             erased=int(erased.sum()))
            forms.add("merged weights")
    return out, " + ".join(sorted(forms)), notes


def _by_content(weights: Mapping[str, torch.Tensor], w_base: torch.Tensor, used: set[str],
                prev: tuple[torch.Tensor, torch.Tensor] | None, rank: int) -> View | None:
    """The suspect tensor (renamed, transposed or a fused block) whose units match the base best.

    Candidates are `_layout.views` of the target's shape not already read as another target;
    the score is `unit_match` against the base (with the previous target's permutation and
    scales on the columns when that matches better). Nothing here reads the key's bits,
    projections or passports, so the choice is independent of them and the null stays exact.
    None when no candidate reaches the alignment's minimum match (no copy of the base's units).
    """
    best: tuple[float, View] | None = None
    for view in views(weights, tuple(w_base.shape)):
        if view.tensor in used:
            continue
        score = unit_match(view.weight, w_base)
        if prev is not None and prev[0].numel() == w_base.shape[1]:
            score = max(score, unit_match(view.weight, w_base, prev[0], prev[1]))
        if best is None or score > best[0]:
            best = (score, view)
    if best is not None and best[0] >= MIN_MATCH:
        return best[1]
    # An update larger than the base (an adapter that carries the task) hides the units from
    # plain cosines; the low-rank alignment still sees them: outside the update's row space a
    # copy's rows match the base's at ~1 (`SURE_MATCH`), an unrelated tensor's far below.
    sure: tuple[float, View] | None = None
    for view in views(weights, tuple(w_base.shape)):
        if view.tensor not in used:
            score = align_rows(view.weight, w_base, rank).match
            if score >= SURE_MATCH and (sure is None or score > sure[0]):
                sure = (score, view)
    return sure[1] if sure is not None else None


def _aligned(w: torch.Tensor, w_base: torch.Tensor, rank: int,
             prev: tuple[torch.Tensor, torch.Tensor] | None) -> Aligned:
    """The suspect weight aligned to the base (see `align`), with `moved` set when it was moved.

    A previous target's permutation is applied to this target's columns when that makes the
    rows match the base better (it then reads the previous target's outputs). The alignment is
    used only when it moved something: a row permutation, or a scale off 1 by more than
    `_MOVED`; an unmoved copy keeps its exact difference W_s − W_base.
    """
    al = align_rows(w, w_base, rank)
    if prev is not None and prev[0].numel() == w.shape[1]:
        chained = align_rows(w, w_base, rank, col_perm=prev[0], col_scale=prev[1])
        if chained.match > al.match:
            al = chained
    return al


def r1_check(key: Key, updates: Mapping[str, _Update]) -> dict[str, Any]:
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


def passport_alignment(key: Key, updates: Mapping[str, _Update]) -> dict[str, Any]:
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


@torch.no_grad()
def test(suspect: Suspect, key: Key) -> TestResult:
    """Test a suspect's weights against a SEAL key (exact bit test, R1, alignment).

    Args:
        suspect: white-box access: a PEFT adapter's tensors, a merged model's weights, or an
            in-memory module (SEAL-wrapped, PEFT-wrapped or plain).
        key: the owner's key (with owner factors for R1).

    Returns:
        statistic = matching bits k out of n = T, p = P[Bin(T, 1/2) ≥ k] (exact; "conservative"
        when some projection is exactly zero, e.g. a suspect identical to the base); details hold
        the form found, R1, the alignment and notes (R0 holds for every Key: its constructor
        refuses passports that are not the seed's). No weights, or none of the targets, gives
        `TestResult.not_applicable`.

    Raises:
        KeyFormatError: the key's tensors disagree with its own r and target shapes.
    """
    if not suspect.has_weights:
        return TestResult.not_applicable(NAME, "seal is white-box: the suspect offers no weights")
    check_shapes(key)
    found, form, notes = suspect_updates(suspect.weights, key)
    if not found:
        return TestResult.not_applicable(
            NAME, "none of the key's target layers could be read from the suspect: "
                  + "; ".join(notes))
    signs = secret_bits(key.seed, key.bits)
    proj = torch.zeros(key.bits, dtype=torch.float64)
    for t, upd in found.items():
        proj += upd.project(*projections(key.seed, t, key.bits, key.shapes[t]))
    agree = signs.double() * proj  # a zero projection is not > 0: counted as a mismatch
    k = int((agree > 0).sum())
    zeros = int((proj == 0).sum())
    energy = sum(u.energy() for u in found.values())
    details: dict[str, Any] = {
        "R0": "pass", "form": form, "targets_found": len(found),
        "targets_total": len(key.targets), "matches": k, "bits": key.bits,
        "mean_signed_z": float(agree.mean()) / math.sqrt(energy) if energy > 0 else 0.0,
        "erased_entries": sum(u.erased for u in found.values()), "zero_projections": zeros,
        "R1": r1_check(key, found), "passport_alignment": passport_alignment(key, found), "notes": notes}
    null = NULL_CONSERVATIVE if zeros else NULL_EXACT  # a zero can only lower k
    return TestResult.from_log10_p(NAME, float(k), key.bits, log10_binom_sf(k, key.bits, 0.5),
                                   null, details=details, claim=CLAIM)


test.__test__ = False  # type: ignore[attr-defined]  # the contract's `test`, not a pytest test
