"""The forgery evaluation: `hallmark evaluate --schemes forgery` (the "Forgery" section of
docs/quality.md).

Protocol:
- Reference panel: independently trained digits models (MLPs, wide MLPs, CNNs; seeds disjoint
  from every other model here), as the registry's operator would register them.
- False refusals: honestly generated trigger_set keys of both variants (adversarial keys made
  against owner models outside the panel; keyed-noise keys from fresh seeds), each put through
  the upload checks (`cases.admit`: format, re-derivation, floor, screening at p <= 1e-3).
  Target: 0 refused.
- Red team: every registered case (`cases.red_team_case`; trigger_set's in `trigger_set.py`)
  is built, put through the same checks, and reported as refused (by which check) or accepted;
  every key that parses is also tested on victims (independent models outside the panel), and
  the victims it would attribute (log10 p at or below the 80-bit floor) are counted.

Adding another scheme's red-team cases: write `verifier/evaluation/forgery/<scheme>.py` with
`@red_team_case(...)` functions and import it below.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from verifier import forgery, schemes, screening, toy
from verifier.evaluation.forgery import trigger_set as _trigger_set_cases  # noqa: F401 (registers)
from verifier.evaluation.forgery.cases import (
    ACCEPTED,
    Admission,
    Context,
    RedTeamCase,
    admit,
    red_team_case,
    red_team_cases,
)
from verifier.schemes import trigger_set as ts
from verifier.suspect import Suspect

__all__ = ["Admission", "Context", "RedTeamCase", "admit", "evaluate", "red_team_case", "red_team_cases"]

SECTION = "forgery"  # the key of this section in docs/quality.json

_ARCHS: dict[str, Callable[[], nn.Module]] = {
    "mlp": toy.MLP, "wide-mlp": lambda: toy.MLP(hidden=192), "cnn": toy.CNN}


def evaluate(quick: bool = False) -> dict[str, Any]:
    """The forgery section: panel, false refusals of honest keys, and the red-team outcomes.

    Args:
        quick: a 5-model panel, 5 honest keys per variant and fewer training epochs, instead of
            a 20-model panel (10 MLPs, 5 wide MLPs, 5 CNNs) and 20 honest keys per variant.
    """
    start = time.perf_counter()
    torch.set_num_threads(1)
    split = toy.digits()
    ctx = _context(split, quick)
    floor = forgery.floor_log10_p()
    honest = {v: _honest(ctx, v, quick) for v in ts.VARIANTS}
    red = [_red_team_row(ctx, case, floor) for case in red_team_cases()]
    notes = [
        f"panel: {len(ctx.panel)} models ({', '.join(sorted({n.rsplit('-', 1)[0] for n, _ in ctx.panel}))}), "
        "trained from seeds no other model here uses; screening refuses a key that any panel "
        f"model matches at p <= {screening.DEFAULT_THRESHOLD:g}",
        f"victims: {len(ctx.victims)} independent models outside the panel "
        f"({', '.join(n for n, _ in ctx.victims)}); a forged key 'attributes' a victim when its "
        f"test gives log10 p <= {floor:.2f} (the {forgery.DEFAULT_MIN_FORGERY_BITS}-bit floor)",
        "forger's surrogates (for the transfer attack): "
        f"{len(ctx.surrogates)} public models trained by the forger, disjoint from panel and victims",
        f"seed_search_keyed_noise: {200 if quick else 2000} keyed-noise seeds tried against "
        f"{ctx.victims[0][0]}, the best registered; its log10 p on that victim is the first in its "
        "row; reaching the floor this way needs about 10^24 trials",
    ]
    return {"panel": [{"model": n} for n, _ in ctx.panel], "victims": [n for n, _ in ctx.victims],
            "threshold": screening.DEFAULT_THRESHOLD, "floor_bits": forgery.DEFAULT_MIN_FORGERY_BITS,
            "honest": honest, "red_team": red, "notes": notes, "quick": quick,
            "seconds": time.perf_counter() - start}


def _models(split: toy.Split, plan: list[tuple[str, int]], epochs: dict[str, int]
            ) -> list[tuple[str, nn.Module]]:
    return [(f"{arch}-{seed}", toy.trained(split, seed, epochs=epochs[arch], arch=_ARCHS[arch]))
            for arch, seed in plan]


def _context(split: toy.Split, quick: bool) -> Context:
    epochs = {"mlp": 10, "wide-mlp": 10, "cnn": 3} if quick else {"mlp": 30, "wide-mlp": 30, "cnn": 15}
    counts = {"mlp": 2, "wide-mlp": 1, "cnn": 2} if quick else {"mlp": 10, "wide-mlp": 5, "cnn": 5}
    base = {"mlp": 2000, "wide-mlp": 2100, "cnn": 2200}
    panel = _models(split, [(a, base[a] + i) for a, c in counts.items() for i in range(c)], epochs)
    victim_plan = [("mlp", 3000), ("cnn", 3200)] if quick else \
        [("mlp", 3000), ("mlp", 3001), ("wide-mlp", 3100), ("cnn", 3200), ("cnn", 3201)]
    victims = _models(split, victim_plan, epochs)
    surrogate_plan = [("mlp", 4000)] if quick else [("mlp", 4000), ("mlp", 4001), ("cnn", 4100)]
    surrogates = [m for _, m in _models(split, surrogate_plan, epochs)]
    owner = toy.trained(split, 5000, epochs=epochs["mlp"])
    return Context(split=split, panel=[(n, Suspect.from_predict(m)) for n, m in panel],
                   victims=victims, owner=owner, surrogates=surrogates, quick=quick)


def _honest(ctx: Context, variant: str, quick: bool) -> dict[str, Any]:
    """Honest keys of one variant through the upload checks: how many are refused."""
    count = 5 if quick else 20
    held = (ctx.split.x_held, ctx.split.y_held)
    if variant == ts.ADVERSARIAL:
        owners = [ctx.owner] if quick else [ctx.owner] + [m for _, m in _models(
            ctx.split, [("mlp", 5001), ("wide-mlp", 5100), ("cnn", 5200)],
            {"mlp": 30, "wide-mlp": 30, "cnn": 15})]
        keys = [ts.generate_key(ts.Params(), seed=6000 + i, model=owners[i % len(owners)], data=held)
                for i in range(count)]
    else:
        keys = [ts.generate_key(ts.Params(variant=variant, classes=10), seed=7000 + i)
                for i in range(count)]
    results = [admit(k.to_bytes(), ctx.panel) for k in keys]
    worst = [r.screening["worst_log10_p"] for r in results if r.screening]
    return {"keys": count, "refused": sum(r.outcome != ACCEPTED for r in results),
            "refused_by": sorted({r.stage for r in results if r.outcome != ACCEPTED}),
            "screened": len(worst), "worst_panel_log10_p": min(worst) if worst else None}


def _red_team_row(ctx: Context, case: RedTeamCase, floor: float) -> dict[str, Any]:
    start = time.perf_counter()
    blob = case.make(ctx)
    a = admit(blob, ctx.panel)
    row: dict[str, Any] = {"scheme": case.scheme, "case": case.name, "attack": case.attack,
                           "expect": case.expect, "outcome": a.outcome, "stage": a.stage,
                           "message": a.message[:300]}
    if a.key is not None:
        scheme = schemes.get(case.scheme)
        logs = [scheme.test(Suspect.from_predict(m), a.key).log10_p for _, m in ctx.victims]
        row["victims_log10_p"] = logs
        row["victims_attributed"] = sum(lp <= floor for lp in logs)
        row["victims_below_1e-6"] = sum(lp <= -6 for lp in logs)
    row["seconds"] = time.perf_counter() - start
    return row
