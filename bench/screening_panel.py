"""Screening against the built-in digits panel: false refusals of honest keys, refusals of forged ones.

Builds the 21 built-in digits panel models (`registry.panel.digits_panel`, no database), then
screens with `verifier.screening.screen` at its default threshold (1e-3):
- honest trigger_set keys: `generate_key` against `--honest` independently trained owner models
  (one key each, seeds 3001…), which must all be accepted;
- universal trigger_set keys (the issue's attack): `--forged` sets of clean held-out digits
  labelled with their true class, which must all be refused.
Prints JSON and writes bench/results/screening.json.

    python -m bench.screening_panel [--honest 20] [--forged 20] [--triggers 40]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch


def run(honest: int, forged: int, triggers: int) -> dict[str, Any]:
    import django

    django.setup()
    from registry import panel
    from verifier import toy
    from verifier.schemes import trigger_set
    from verifier.screening import screen
    from verifier.suspect import Suspect

    torch.set_num_threads(1)
    t0 = time.monotonic()
    models = [(name, Suspect.from_module(m)) for name, _, m in panel.digits_panel()]
    built = time.monotonic() - t0
    split = toy.digits(seed=0)
    honest_worst, refused_honest = [], 0
    for i in range(honest):
        seed = 3001 + i
        owner = toy.trained(split, seed, epochs=10)
        key = trigger_set.generate_key(trigger_set.Params(n=triggers), seed, model=owner,
                                       data=(split.x_held, split.y_held))
        s = screen(key, models)
        refused_honest += s.status == "refused"
        honest_worst.append(s.worst_log10_p)
    refused_forged, forged_best = 0, []
    for j in range(forged):
        idx = torch.randperm(len(split.y_held), generator=torch.Generator().manual_seed(j))[:triggers]
        x, y = split.x_held[idx], split.y_held[idx]
        key = trigger_set.Key(seed=j, triggers=x.clone(), labels=y.clone(),
                              true_labels=(y + 1) % 10, classes=10, eps=0.25)
        s = screen(key, models)
        refused_forged += s.status == "refused"
        forged_best.append(s.worst_log10_p)
    return {"panel_models": len(models), "panel_build_seconds": round(built, 1),
            "threshold": 1e-3, "triggers": triggers,
            "honest_keys": honest, "honest_refused": refused_honest,
            "honest_worst_log10_p_min": min(honest_worst, default=0.0),
            "forged_keys": forged, "forged_refused": refused_forged,
            "forged_worst_log10_p_max": max(forged_best, default=0.0)}


def main() -> None:
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "registry.settings")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--honest", type=int, default=20)
    ap.add_argument("--forged", type=int, default=20)
    ap.add_argument("--triggers", type=int, default=40)
    args = ap.parse_args()
    result = run(args.honest, args.forged, args.triggers)
    print(json.dumps(result, indent=1))
    out = Path(__file__).parent / "results" / "screening.json"
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
