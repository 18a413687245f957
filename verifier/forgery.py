"""Forgery cost: how much work a registrant would need to manufacture a p-value.

A registrant who may choose keys after looking at models can search seeds: each fresh seed
gives an independent key, and for a fixed suspect the chance that one key reaches p ≤ p* is at
most p* (the p-value is exact or conservative under H0). A search of N seeds therefore reaches
p* after about 1/p* trials, so a check with p-value p costs a forger about log2(1/p) bits of
work. Rules encoded here:

- `forgery_bits(log10_p)` = −log10_p / log10(2), the work factor of a seed search, in bits.
- A check *attributes* only when it passes Holm at HALLMARK_ALPHA **and** its forgery cost is
  at least the floor (HALLMARK_MIN_FORGERY_BITS, default 80 bits, p ≤ 2^-80 ≈ 8.3e-25).
  A check that passes Holm but is cheaper to forge is "significant, forgeable": reported,
  never attributed.
- A key whose best possible p-value (every bit, trigger or position matching) cannot reach the
  floor can never attribute and is refused at upload (`check_key_strength`).

Example:
    >>> round(forgery_bits(-77.064), 1)
    256.0
    >>> attributes(holm_reject=True, log10_p=-20.0)
    False
"""
from __future__ import annotations

import math

DEFAULT_MIN_FORGERY_BITS = 80  # 2^-80 ≈ 8.3e-25: a seed search of 2^80 trials is out of reach
_LOG10_2 = math.log10(2.0)

SIGNIFICANT = "attributed"
FORGEABLE = "significant, forgeable"


class WeakKeyError(ValueError):
    """A key whose best possible p-value is above the forgery floor: it could never attribute."""


def forgery_bits(log10_p: float) -> float:
    """The work factor of a seed search reaching this p-value, in bits (inf for p = 0)."""
    return math.inf if math.isinf(log10_p) else max(0.0, -log10_p / _LOG10_2)


def floor_log10_p(min_bits: float = DEFAULT_MIN_FORGERY_BITS) -> float:
    """log10 of the p-value floor for `min_bits` of forgery cost (−24.08 for 80 bits)."""
    return -min_bits * _LOG10_2


def attributes(holm_reject: bool, log10_p: float,
               min_bits: float = DEFAULT_MIN_FORGERY_BITS) -> bool:
    """True when a check may attribute: it passed Holm and costs ≥ `min_bits` to forge."""
    return holm_reject and forgery_bits(log10_p) >= min_bits


def check_key_strength(best_log10_p: float, scheme: str,
                       min_bits: float = DEFAULT_MIN_FORGERY_BITS) -> None:
    """Refuse a key that could never reach the floor, even with a perfect match.

    Args:
        best_log10_p: the key's `best_log10_p()`: log10 p of a perfect match.
        scheme: the scheme name, for the message.
        min_bits: the registry's floor.

    Raises:
        WeakKeyError: naming the key's best cost and the fix (more bits or triggers).
    """
    best = forgery_bits(best_log10_p)
    if best < min_bits:
        raise WeakKeyError(
            f"this {scheme} key can reach at most {best:.1f} bits of forgery cost (p ≥ "
            f"10^{best_log10_p:.1f}) even when every bit matches, below the registry's floor of "
            f"{min_bits:g} bits: it could never attribute a model; generate a key with more "
            "bits, triggers or positions")
