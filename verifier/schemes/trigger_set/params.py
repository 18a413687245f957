"""Public parameters and names of `trigger_set` (imports nothing from the package)."""
from __future__ import annotations

from dataclasses import dataclass

NAME = "trigger_set"
ADVERSARIAL = "adversarial"  # triggers: PGD examples of the owner's model (owner-chosen, screened)
KEYED_NOISE = "keyed_noise"  # triggers: noise images drawn from the seed (re-derived, exact null)
VARIANTS = (ADVERSARIAL, KEYED_NOISE)
MAX_SEED = 2**63


class TriggerSetError(ValueError):
    """A key that cannot be generated or used as asked (the message names the fix)."""


@dataclass(frozen=True)
class Params:
    """Public parameters of a `trigger_set` key."""

    n: int = 100  # number of triggers (= queries per test)
    variant: str = ADVERSARIAL  # "adversarial" (ROWBACK-style) or "keyed_noise" (seed-derived inputs)
    eps: float = 0.25  # adversarial: L∞ budget of the perturbation, in input units
    steps: int = 10  # adversarial: PGD steps
    lo: float = 0.0  # lower end of the data range (triggers lie in [lo, hi])
    hi: float = 1.0  # upper end of the data range
    input_shape: tuple[int, ...] = (64,)  # keyed_noise: shape of one input (adversarial: the data's)
    classes: int | None = None  # keyed_noise without a model: C (with a model: its output width)

    def check(self) -> None:
        """Raise TriggerSetError naming what is invalid."""
        if self.variant not in VARIANTS:
            raise TriggerSetError(f"unknown trigger_set variant `{self.variant}`; expected one of "
                                  f"{', '.join(VARIANTS)}")
        if self.n < 1 or self.eps < 0 or self.steps < 0 or not self.lo < self.hi \
                or not self.input_shape or min(self.input_shape) < 1:
            raise TriggerSetError(f"invalid {self}: need n >= 1, eps >= 0, steps >= 0, lo < hi "
                                  "and a non-empty input_shape of positive sizes")
