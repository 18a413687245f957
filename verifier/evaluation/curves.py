"""Robustness curves of the removal suite: one SVG per target (scheme × model), by matplotlib.

Each measured attack gets a panel: log10 p of the owner's test (left axis, with the detection
line at p = 1e-6) and the attacker's test accuracy (right axis) against the attack's strength.
Categorical strengths (what is served, tensor names) are drawn at their index with their
label. The files are deterministic: Agg backend, fixed SVG hash salt, no date, text kept as
text, so re-rendering an unchanged quality.json gives identical bytes.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from verifier.evaluation import DETECT_LOG10

FOLDER = "curves"  # beside quality.md: docs/curves/<scheme>.svg


def path_for(target: str) -> str:
    """The SVG's path relative to the Markdown report ("curves/<target id>.svg")."""
    return f"{FOLDER}/{target}.svg"


def write(section: Mapping[str, Any], md_dir: Path) -> list[Path]:
    """Draw one SVG per scheme of a "removal" section into `md_dir`/curves/.

    Args:
        section: `verifier.evaluation.removal.evaluate`'s result (as read back from JSON).
        md_dir: the folder of the Markdown report.

    Returns:
        The paths written, in the section's scheme order.

    Example:
        >>> write({"attacks": {}, "schemes": {}}, Path("/tmp"))
        []
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "hallmark", "svg.fonttype": "none",
                         "font.size": 7, "axes.titlesize": 7})
    axes_of = section.get("attacks") or {}
    written = []
    for scheme, data in section["schemes"].items():
        measured = [a for a in data["attacks"] if a.get("applies") and a["points"]]
        cols = 4
        rows = max(1, math.ceil(len(measured) / cols))
        fig, grid = plt.subplots(rows, cols, figsize=(11, 2.3 * rows), squeeze=False)
        for ax in grid.flat[len(measured):]:
            ax.set_visible(False)
        for ax, attack in zip(grid.flat, measured, strict=False):
            _panel(ax, attack, (axes_of.get(attack["name"]) or {}).get("axis", "strength"))
        fig.suptitle(f"{data.get('scheme', scheme)}: {data['model']} (blue: log10 p, left; orange: attacker "
                     f"accuracy, right; dashed: p = 1e-6)", fontsize=8)
        fig.tight_layout()
        out = md_dir / path_for(scheme)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, format="svg", metadata={"Date": None, "Creator": "hallmark evaluate"})
        plt.close(fig)
        written.append(out)
    return written


def _panel(ax: Any, attack: Mapping[str, Any], axis: str) -> None:
    pts = attack["points"]
    categorical = attack["name"] in ("postprocess", "rename", "overwrite")
    xs = list(range(len(pts))) if categorical else [float(p["strength"]) for p in pts]
    log_p = [max(float(p["log10_p"]), -400.0) for p in pts]  # "-inf" strings parse; clip
    acc = [100 * float(p["attacker_acc"]) for p in pts]
    ax.plot(xs, log_p, "o-", color="tab:blue", markersize=3)
    ax.axhline(DETECT_LOG10, color="tab:blue", linestyle="--", linewidth=0.8)
    ax.set_ylim(1.05 * min(min(log_p), DETECT_LOG10 - 1.0), 1.0)  # always show 0 and 1e-6
    ax.set_ylabel("log10 p", color="tab:blue")
    ax.set_title(attack["name"])
    ax.set_xlabel(attack.get("axis", axis))
    if categorical:
        ax.set_xticks(xs, [str(p["label"]) for p in pts], rotation=20, ha="right")
    right = ax.twinx()
    right.plot(xs, acc, "s-", color="tab:orange", markersize=3)
    right.set_ylim(0, 100)
    right.set_ylabel("attacker acc %", color="tab:orange")
