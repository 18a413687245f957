"""Screening a key against a reference panel: independent models of the same input domain.

Where a key carries inputs its seed cannot produce (trigger_set's adversarial triggers come
from the owner's model), a forging registrant can pick inputs that *every* model of the domain
answers with the key's labels (clean digits whose true class is the seeded label): a universal
key that would attribute models its registrant never marked. The registry therefore tests such
a key, at upload, against a panel of independently trained models that the operator registers.
Rules encoded here:

- Each panel model is tested with the scheme's own `test` (the same exact or conservative
  p-value a verification would compute).
- A key is refused when any panel model matches it at p ≤ `threshold` (default 1e-3). An
  honest key's triggers are answered by an independent model at chance, so its refusal rate is
  at most `threshold` per panel model (a union bound: at most |panel| · threshold in all, 2 %
  for 20 models at 1e-3), and measured at 0 of the honest keys in docs/quality.md.
- A panel model the key cannot be applied to (another input shape or class count) is skipped;
  when none applies the key is "unscreened", which every report that uses it says.

Example:
    >>> from verifier.schemes import uchida
    >>> k = uchida.generate_key(uchida.Params(bits=8, layers=("w",), shapes=((4, 16),)), seed=1)
    >>> screen(k, []).status
    'unscreened'
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from verifier import schemes
from verifier.suspect import Suspect

DEFAULT_THRESHOLD = 1e-3  # a panel model matching at p <= this refuses the key

SCREENED, UNSCREENED, REFUSED = "screened", "unscreened", "refused"


class ScreeningRefused(ValueError):
    """A key that an independent reference model already matches: it would accuse innocents."""


@dataclass(frozen=True)
class Screening:
    """The outcome of screening one key against a panel."""

    status: str  # "screened" | "unscreened" | "refused"
    threshold: float  # p-value at or below which a panel match refuses the key
    panel_size: int  # panel models offered
    applicable: int  # panel models the key could be tested on
    matches: list[dict[str, Any]] = field(default_factory=list)  # {model, log10_p} at or below threshold
    worst_log10_p: float = 0.0  # the smallest log10 p over applicable panel models

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe summary, stored with the commitment and logged."""
        return {"status": self.status, "threshold": self.threshold, "panel_size": self.panel_size,
                "applicable": self.applicable, "matches": list(self.matches),
                "worst_log10_p": self.worst_log10_p}

    def raise_if_refused(self, scheme: str) -> None:
        """Raise ScreeningRefused with a message saying which panel models matched, and why it matters."""
        if self.status == REFUSED:
            names = ", ".join(f"{m['model']} (log10 p {m['log10_p']:.1f})" for m in self.matches[:5])
            raise ScreeningRefused(
                f"this {scheme} key is matched by independent reference models that were never "
                f"marked with it: {names}; a key that innocent models answer would accuse them. "
                "Make the triggers from your own marked model (adversarial examples, or the "
                "seed-derived keyed-noise variant) rather than inputs any model classifies alike")


def screen(key: Any, panel: Iterable[tuple[str, Suspect]],
           threshold: float = DEFAULT_THRESHOLD) -> Screening:
    """Test `key` against every applicable panel model.

    Args:
        key: any scheme's Key (its module is found by the key's scheme name).
        panel: (name, suspect) pairs of independent reference models.
        threshold: p-value at or below which one panel match refuses the key.

    Returns:
        A Screening: "refused" if any applicable model matches at p ≤ threshold, "screened"
        if at least one applied and none matched, "unscreened" if none applied.
    """
    scheme = schemes.get(_scheme_name(key))
    log_t = math.log10(threshold)
    offered = applicable = 0
    matches: list[dict[str, Any]] = []
    worst = 0.0
    for name, suspect in panel:
        offered += 1
        result = scheme.test(suspect.fresh(), key)
        if not result.applicable:
            continue
        applicable += 1
        worst = min(worst, result.log10_p)
        if result.log10_p <= log_t:
            matches.append({"model": name, "log10_p": max(result.log10_p, -1e308)})
    status = REFUSED if matches else SCREENED if applicable else UNSCREENED
    return Screening(status=status, threshold=threshold, panel_size=offered, applicable=applicable,
                     matches=matches, worst_log10_p=max(worst, -1e308))


def _scheme_name(key: Any) -> str:
    module = type(key).__module__  # verifier.schemes.<name>[.<part>]
    parts = module.split(".")
    if len(parts) < 3 or parts[:2] != ["verifier", "schemes"]:
        raise TypeError(f"expected a Hallmark scheme key, received {type(key).__name__}")
    return parts[2]
