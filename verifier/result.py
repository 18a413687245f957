"""The outcome of one watermark test: what every scheme's `test` returns."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

NULL_EXACT = "exact"
NULL_CONSERVATIVE = "conservative"


def empirical_null(n: int) -> str:
    """The `null` label of a p-value calibrated on `n` independent null statistics."""
    return f"empirical(n={n})"


@dataclass(frozen=True)
class TestResult:
    """One scheme's test of one suspect against one key.

    The p-value is P[statistic at least this extreme | H0], where H0 is "the suspect is
    independent of this key". `null` says how the p-value was obtained: "exact",
    "conservative" (a provable upper bound) or "empirical(n=…)".

    Example:
        >>> r = TestResult(scheme="uchida", statistic=250, n=256, p_value=1e-70,
        ...                log10_p=-70.0, null="exact")
        >>> r.applicable
        True
    """

    __test__ = False  # not a pytest test class

    scheme: str  # the scheme's registered name
    statistic: float  # e.g. the number of matching bits or trigger labels
    n: int  # number of trials behind the statistic (bits, queries, positions)
    p_value: float  # exact or conservative tail probability under H0 (may underflow to 0.0)
    log10_p: float  # log10 of the p-value, kept when p_value underflows
    null: str  # "exact" | "conservative" | "empirical(n=…)"
    details: dict[str, Any] = field(default_factory=dict)  # scheme-specific, JSON-safe
    applicable: bool = True  # False when the suspect lacks the access this scheme needs
    queries: int = 0  # black-box queries made to the suspect
    claim: str = ""  # what a positive result proves (and what it does not)
    may_attribute: bool = True  # False: integrity-only evidence that must never name an owner

    @classmethod
    def from_log10_p(cls, scheme: str, statistic: float, n: int, log10_p: float, null: str,
                     **kw: Any) -> TestResult:
        """Build a result from a log10 p-value, clamping it into [-inf, 0]."""
        log10_p = min(0.0, log10_p)
        return cls(scheme=scheme, statistic=statistic, n=n, p_value=10.0 ** log10_p,
                   log10_p=log10_p, null=null, **kw)

    @classmethod
    def not_applicable(cls, scheme: str, reason: str) -> TestResult:
        """A test that could not run because the suspect lacks the needed access.

        It carries p = 1 and is left out of the family-wise correction: no test ran.
        """
        return cls(scheme=scheme, statistic=0.0, n=0, p_value=1.0, log10_p=0.0,
                   null=NULL_EXACT, details={"reason": reason}, applicable=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (infinite log10_p becomes the string "-inf")."""
        d = asdict(self)
        if math.isinf(self.log10_p):
            d["log10_p"] = "-inf"
        return d
