"""Measured quality of the schemes: `hallmark evaluate` and the rows it writes.

Each scheme with an evaluation has a module `verifier.evaluation.<scheme>` exposing
`evaluate(quick: bool) -> dict`, returning one row, or `{"rows": [row, ...]}` when the scheme
is measured on several models. `hallmark evaluate --schemes a,b` runs them, merges their rows
into docs/quality.json (rows of schemes not re-run are kept) and renders docs/quality.md from
that JSON alone (`verifier.evaluation.report`). `quick=True` is a smoke run (fewer seeds,
epochs and null pairs); its rows are marked as such.

Row schema (JSON; every p-value is a log10, so nothing underflows):

    {"scheme": "uchida",                  # registered scheme name
     "model": "MLP on digits",            # what was marked, on what data
     "acc_clean": 0.962,                  # test accuracy without the mark, in [0, 1]
     "acc_marked": 0.965,                 # with the mark
     "delta_pp": 0.3,                     # 100 * (acc_marked - acc_clean)
     "marked": {"log10_p": -77.1,         # the test on the marked model
                "null": "exact",          # "exact" | "conservative" | "empirical(n=…)"
                "statistic": 256, "n": 256},
     "attacks": [{"name": "finetune_all",         # see report.ATTACKS for the usual names
                  "attacker_acc": 0.97,           # the attacker's test accuracy after it
                  "log10_p": -70.2,               # the test on the attacked model
                  "detected": true}],             # log10_p <= log10(1e-6)
     "fpr": {"pairs": 100,                # independent (model, key) pairs under H0
             "null_log10_p": [...],       # one log10 p per pair
             "alpha": {"1e-3": {"false_positives": 0, "upper95": 0.0295},
                       "1e-6": {"false_positives": 0, "upper95": 0.0295}},
             "ks_p": 0.81},               # one-sided KS (see fpr_summary), or null
     "queries_for_1e-6": 8,               # black-box queries for p < 1e-6, or null
     "notes": ["..."],                    # what the numbers mean, what was not measured
     "seconds": 41.3}                     # wall time of this row's measurement

Optional keys a row may add: "fpr"."ks_randomized_p" (two-sided KS of randomized p-values,
which are exactly uniform under an exact null), "fpr"."min_null_log10_p", and per-attack
extras (e.g. "queries"). `hallmark evaluate` adds "run": {"date", "machine", "quick"}.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from verifier.result import TestResult
from verifier.stats import clopper_pearson_upper, log10_binom_sf

ALPHAS = (1e-3, 1e-6)  # false-positive levels every row reports
DETECT_LOG10 = -6.0  # an attacked model counts as detected when log10 p <= this (alpha = 1e-6)


# Progress of a running evaluation: the command installs a callback (a tqdm bar); the shared
# row helpers below report each marked model, attack and null set through it, so every
# scheme's evaluation shows progress without importing a progress library itself.
_progress: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar(
    "hallmark_evaluation_progress", default=None)


@contextlib.contextmanager
def progress_to(callback: Callable[[str], None]) -> Iterator[None]:
    """Within the block, each finished step of an evaluation calls `callback(label)`.

    Example:
        >>> seen = []
        >>> with progress_to(seen.append):
        ...     _ = fpr_summary([-1.0, -0.5])
        >>> seen
        ['null set (2 pairs)']
    """
    token = _progress.set(callback)
    try:
        yield
    finally:
        _progress.reset(token)


def step(label: str) -> None:
    """Report one finished step of an evaluation to the installed callback (if any)."""
    callback = _progress.get()
    if callback is not None:
        callback(label)


def alpha_label(alpha: float) -> str:
    """The JSON key of a level: 1e-3 -> "1e-3"."""
    return f"{alpha:.0e}".replace("e-0", "e-")


def marked_summary(result: TestResult) -> dict[str, Any]:
    """The row's "marked" entry from a test result."""
    step(f"marked model ({result.scheme})")
    return {"log10_p": result.log10_p, "null": result.null, "statistic": result.statistic,
            "n": result.n}


def attack_entry(name: str, attacker_acc: float, result: TestResult, **extra: Any) -> dict[str, Any]:
    """One entry of a row's "attacks" list."""
    step(f"attack {name}")
    return {"name": name, "attacker_acc": attacker_acc, "log10_p": result.log10_p,
            "detected": result.log10_p <= DETECT_LOG10, **extra}


def randomized_binomial_p(k: int, n: int, p0: float, u: float) -> float:
    """P[S > k] + u · P[S = k] for S ~ Binomial(n, p0) and u ~ U(0, 1) drawn independently.

    Under an exact binomial null this p-value is exactly uniform, which the plain tail
    P[S >= k] (stochastically larger, because S is discrete) is not: use it to test that a
    null really is exact, not to decide.
    """
    if not 0.0 <= u <= 1.0:
        raise ValueError(f"u must lie in [0, 1], received {u}")
    above = 10.0 ** log10_binom_sf(k + 1, n, p0)
    at_least = 10.0 ** log10_binom_sf(k, n, p0)
    return above + u * (at_least - above)


def fpr_summary(null_log10_p: Sequence[float],
                randomized_p: Sequence[float] | None = None) -> dict[str, Any]:
    """The row's "fpr" entry from the log10 p-values of independent null pairs.

    Rules:
    - false positives at each alpha in ALPHAS: pairs with p <= alpha, with the exact
      (Clopper-Pearson) one-sided 95 % upper bound on the rate;
    - "ks_p": one-sided Kolmogorov-Smirnov test of H: P[p <= x] <= x for every x (p-values
      uniform or stochastically larger, i.e. valid). Exact discrete p-values are
      stochastically larger than uniform, so a two-sided test would reject a correct test;
      only the anti-conservative direction counts against it;
    - "ks_randomized_p" (if `randomized_p` is given): two-sided KS of randomized p-values,
      exactly uniform when the null is exact.
    scipy is a development dependency, imported here only.

    Example:
        >>> fpr_summary([-0.1, -0.5, -1.2])["alpha"]["1e-3"]["false_positives"]
        0
    """
    step(f"null set ({len(null_log10_p)} pairs)")
    from scipy import stats as sps

    n = len(null_log10_p)
    out: dict[str, Any] = {"pairs": n, "null_log10_p": [float(v) for v in null_log10_p],
                           "alpha": {}}
    for a in ALPHAS:
        fp = sum(v <= math.log10(a) for v in null_log10_p)
        out["alpha"][alpha_label(a)] = {"false_positives": fp,
                                        "upper95": clopper_pearson_upper(fp, n)}
    p = [10.0 ** v for v in null_log10_p]
    out["ks_p"] = float(sps.kstest(p, "uniform", alternative="greater").pvalue) if n else None
    out["min_null_log10_p"] = min(null_log10_p) if n else None
    if randomized_p is not None:
        out["ks_randomized_p"] = float(sps.kstest(list(randomized_p), "uniform").pvalue) if n else None
    return out

