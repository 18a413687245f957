"""`uchida` extraction and the exact test: signs of X·w against the key's bits.

Under H0 "the suspect is independent of this key" the matches between b and the extracted
bits are Binomial(T, 1/2), whatever X and the suspect are, because b is a sequence of fair
coins drawn from the seed independently of both (and a key whose bits are not the seed's
cannot be built, see `key`). A projection exactly 0 has no bit and counts as a mismatch, which
can only make the p-value larger (the null is then labelled "conservative").
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from verifier.result import NULL_CONSERVATIVE, NULL_EXACT, TestResult
from verifier.schemes.uchida.host import host_vector
from verifier.schemes.uchida.key import NAME, Key, LayerMismatch
from verifier.schemes.uchida.locate import Placement, placements
from verifier.schemes.uchida.projection import apply, factors, layout
from verifier.stats import log10_binom_sf
from verifier.suspect import Suspect

ACCESS = "white-box"
CLAIM = ("The suspect's weights carry this key's secret projection bits far beyond chance: its "
         "weights descend from the owner's marked model. It says nothing about a model that was "
         "only queried (distilled). Its host layers are read under the committed names, or, when "
         "renamed or re-laid out, found by shape with the p-value corrected for every reading tried.")


def project(weights: Mapping[str, torch.Tensor], key: Key) -> torch.Tensor:
    """X·w in float64: one real number per bit, positive where the extracted bit is 1.

    Returns:
        (T,) float64. Raises LayerMismatch as `host_vector` does.

    Example:
        >>> from verifier.schemes.uchida.key import Params, generate_key
        >>> k = generate_key(Params(bits=4, layers=("w",), shapes=((1, 16),)), seed=1)
        >>> y = project({"w": torch.ones(1, 16)}, k)
        >>> y.shape, y.dtype
        (torch.Size([4]), torch.float64)
    """
    with torch.no_grad():  # detached, and reading only the key's layers (and their biases)
        w = host_vector(weights, key, dtype=torch.float64)
    u, v = factors(key.seed, len(key.bits), key.host_size)
    return apply(w, u, v, len(key.bits))


@torch.no_grad()
def extract(weights: Mapping[str, torch.Tensor], key: Key) -> torch.Tensor:
    """The bits the weights carry under this key.

    Returns:
        (T,) int8: 1 where (X·w)_j > 0, 0 where < 0, and -1 where the projection is exactly 0
        (no bit: never counted as a match).

    Example:
        >>> from verifier.toy import MLP
        >>> from verifier.schemes.uchida.key import Params, generate_key
        >>> m = MLP(); k = generate_key(Params(bits=32), seed=3, model=m)
        >>> extract(m.state_dict(), k).shape
        torch.Size([32])
    """
    return _bits(project(weights, key))  # (T,)


@torch.no_grad()
def test(suspect: Suspect, key: Key) -> TestResult:
    """Count the key's bits that the suspect's weights carry; exact binomial tail at p = 1/2.

    When a key layer is missing or has another shape under its name, the layers are sought by
    shape (renamed, transposed or fused tensors, `locate.placements`): the best count over the
    C placements is reported with p × C (`details["host_search"]`, null "conservative"). Not
    applicable when the suspect offers no weights or no placement exists (the reason is in
    `details["reason"]`).

    Example:
        >>> from verifier.toy import MLP
        >>> from verifier.schemes.uchida.key import Params, generate_key
        >>> m = MLP(); k = generate_key(Params(bits=64), seed=2, model=m)
        >>> test(Suspect.from_module(m), k).p_value > 1e-6   # an unmarked model
        True
    """
    if not suspect.has_weights:
        return TestResult.not_applicable(NAME, _NO_WEIGHTS)
    try:
        return _exact(key, _bits(project(suspect.weights, key)))
    except LayerMismatch as e:
        return _test_by_shape(suspect.weights, key, str(e))


_NO_WEIGHTS = "uchida is a white-box test: the suspect offers no weights (black-box access only)"
_CHUNK = 64  # keys whose stacked V factors share one matmul: (N1, N2) @ (N2, ≤ 64·t2)


@torch.no_grad()
def test_many(suspect: Suspect, keys: Sequence[Key]) -> list[TestResult]:
    """`test` for K keys against one suspect, giving the same results as K calls of `test`.

    The host vector is computed once per distinct (host rule, layers, shapes), not once per
    key; within a group the keys' V factors are stacked so one (N1, N2) @ (N2, Σt2) matmul
    serves up to 64 keys, and each key then needs only its (t1, N1) @ (N1, t2) product. A
    group whose layers are not under their names is searched by shape, key by key, as `test`
    does. The weights are read lazily: only the keys' layers are touched.

    Args:
        suspect: the loaded suspect.
        keys: uchida keys, in any order (results come back in the same order).

    Returns:
        One TestResult per key.

    Example:
        >>> from verifier.toy import MLP
        >>> from verifier.schemes.uchida.key import Params, generate_key
        >>> m = MLP(); ks = [generate_key(Params(bits=64), seed=s, model=m) for s in (1, 2)]
        >>> batched = test_many(Suspect.from_module(m), ks)
        >>> [r.log10_p for r in batched] == [test(Suspect.from_module(m), k).log10_p for k in ks]
        True
    """
    out: list[TestResult | None] = [None] * len(keys)
    tails: dict[tuple[int, int], float] = {}  # exact binomial tails, by (matches, T)
    if not suspect.has_weights:
        return [TestResult.not_applicable(NAME, _NO_WEIGHTS) for _ in keys]
    weights = suspect.weights
    groups: dict[tuple[object, ...], list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault((k.host, k.layers, k.shapes), []).append(i)
    for members in groups.values():
        try:
            w = host_vector(weights, keys[members[0]], dtype=torch.float64)  # (M,)
        except LayerMismatch as e:
            for i in members:
                out[i] = _test_by_shape(weights, keys[i], str(e))
            continue
        n1, n2, _ = layout(w.numel())
        grid = w.reshape(n1, n2) if w.numel() == n1 * n2 else \
            torch.nn.functional.pad(w, (0, n1 * n2 - w.numel())).view(n1, n2)  # (N1, N2)
        for start in range(0, len(members), _CHUNK):
            chunk = members[start:start + _CHUNK]
            uv = [factors(keys[i].seed, len(keys[i].bits), keys[i].host_size) for i in chunk]
            gv = grid @ torch.cat([v for _, v in uv]).T  # (N1, Σ t2)
            at = 0
            for i, (u, v) in zip(chunk, uv, strict=True):
                y = (u @ gv[:, at:at + v.shape[0]]).reshape(-1)[:len(keys[i].bits)]  # (T,)
                at += v.shape[0]
                out[i] = _exact(keys[i], _bits(y), tails)
    return [r for r in out if r is not None]


test_many.__test__ = False  # type: ignore[attr-defined]  # the batched `test`, not a pytest test


def _bits(y: torch.Tensor) -> torch.Tensor:
    """Extracted bits from projections y (T,): 1, 0, or -1 where a projection is exactly 0."""
    got = (y > 0).to(torch.int8)
    got[y == 0] = -1
    return got


def _exact(key: Key, got: torch.Tensor,
           tails: dict[tuple[int, int], float] | None = None) -> TestResult:
    """The exact binomial test of extracted bits; `tails` memoizes the tail per
    (matches, T) across a batch (the same function, computed once)."""
    matches, zeros = _count(got, key)
    n = len(key.bits)
    if tails is None:
        log10_p = log10_binom_sf(matches, n, 0.5)
    elif (matches, n) in tails:
        log10_p = tails[matches, n]
    else:
        log10_p = tails[matches, n] = log10_binom_sf(matches, n, 0.5)
    return _result(key, matches, zeros, log10_p, exact=zeros == 0)


def _count(got: torch.Tensor, key: Key) -> tuple[int, int]:
    """(matches, zero projections) of extracted bits against the key's."""
    want = torch.tensor(key.bits, dtype=torch.int8)
    return int((got == want).sum()), int((got < 0).sum())


def _result(key: Key, matches: int, zeros: int, log10_p: float, exact: bool,
            **details: object) -> TestResult:
    n = len(key.bits)
    return TestResult.from_log10_p(
        NAME, statistic=matches, n=n, log10_p=log10_p,
        null=NULL_EXACT if exact else NULL_CONSERVATIVE, claim=CLAIM,
        details={"matches": matches, "bits": n, "bit_error_rate": (n - matches) / n,
                 "zero_projections": zeros, "layers": list(key.layers), "p0": 0.5, **details})


def _test_by_shape(weights: Mapping[str, torch.Tensor], key: Key, why: str) -> TestResult:
    """The key's layers are not under their names: try every placement by shape, Bonferroni.

    Each placement's count is Binomial(T, 1/2) under H0 (the placements depend on shapes only),
    so min over C placements of p, times C, is a valid p-value (`locate`); null "conservative".
    """
    try:
        found = placements(weights, key)
    except LayerMismatch as e:
        return TestResult.not_applicable(NAME, f"{why}; {e}")
    if not found:
        return TestResult.not_applicable(NAME, f"{why}; no tensor has a compatible shape either "
                                               "(renamed, transposed or fused)")
    best: tuple[int, int, Placement] | None = None
    for placement in found:
        matches, zeros = _count(extract(placement.weights, key), key)
        if best is None or matches > best[0]:
            best = (matches, zeros, placement)
    assert best is not None
    matches, zeros, chosen = best
    tries = len(found)
    log10_p = min(0.0, log10_binom_sf(matches, len(key.bits), 0.5) + math.log10(tries))
    return _result(key, matches, zeros, log10_p, exact=False,
                   host_search={"reason": why, "placements": tries, "chosen": list(chosen.sources)})


test.__test__ = False  # type: ignore[attr-defined]  # the contract's `test`, not a pytest test
