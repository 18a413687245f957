"""The scale-free lattice of `output_signature`: where the keyed bits live in a row of logits.

For one input, let g_j = top - logit_j be the gaps to the top logit and g_2 the smallest
positive gap (the runner-up's). Every class j with g_j > g_2 carries one keyed bit d_j in
{0, 1/2} in the log of its gap ratio (quantization index modulation):

    r_j = log(g_j / g_2),     r'_j = delta * (ceil(r_j / delta - d_j) + d_j) >= r_j > 0

and its logit becomes top - g_2 * exp(r'_j). The top and the runner-up are never changed and
every other logit only moves down (by less than (e^delta - 1) * g_j), so the predicted class,
the runner-up and the ranking of the top two never change.

Why ratios of gaps: they are unchanged by any positive affine map of the logits (a * logits +
b, a > 0: temperature, a shift, "x 1.001"), by serving log-probabilities (logits minus a
per-row constant) and, after a log, by serving probabilities (softmax of tempered logits
too). `decode` undoes a probability output with a log, then reads each ratio; low-precision
outputs (fp16) are handled by counting only the (input, class) pairs whose ratio the output's
own precision pins down to well within the decoding window. Every choice `decode` makes
(probabilities or not, precision, which pairs count) is a function of the outputs alone, so
under H0 the counted pairs are independent of the keyed bits and the null stays exact.
"""
from __future__ import annotations

import math

import torch

_FP16_EPS = 2.0 ** -11  # relative rounding error of float16 (10 stored mantissa bits)
_FP32_EPS = 2.0 ** -24
_FP64_EPS = 2.0 ** -53
_FP16_TINY, _FP32_TINY = 2.0 ** -14, 2.0 ** -126  # smallest normal values


def encode(logits: torch.Tensor, d: torch.Tensor, delta: float) -> torch.Tensor:
    """Move each row's logits onto the keyed lattice: (N, C) float64 in, (N, C) float64 out.

    Args:
        logits: (N, C) float64 logits of the inner model.
        d: (N, C) keyed dither in {0, 1/2}.
        delta: the lattice step on log gap ratios.
    """
    top = logits.max(dim=1, keepdim=True).values  # (N, 1)
    gap = top - logits  # (N, C) >= 0
    g2 = torch.where(gap > 0, gap, torch.full_like(gap, math.inf)).min(dim=1, keepdim=True).values
    carries = gap > g2  # (N, C): neither the top (ties) nor the runner-up (ties)
    safe_gap = torch.where(carries, gap, torch.ones_like(gap))
    safe_g2 = torch.where(torch.isfinite(g2), g2, torch.ones_like(g2))
    r = torch.log(safe_gap / safe_g2)  # > 0 where carries
    signed = delta * (torch.ceil(r / delta - d) + d)  # >= r, > 0
    return torch.where(carries, top - safe_g2 * torch.exp(signed), logits)


def _precision(y: torch.Tensor) -> float:
    """The relative rounding error of the narrowest float type that holds every value of `y`."""
    if torch.equal(y.to(torch.float16).to(torch.float64), y):
        return _FP16_EPS
    if torch.equal(y.to(torch.float32).to(torch.float64), y):
        return _FP32_EPS
    return _FP64_EPS


def _looks_like_probabilities(y: torch.Tensor) -> bool:
    """Every value in [0, 1] and every row summing to 1 (within fp16 rounding)."""
    return bool(((y >= 0) & (y <= 1)).all()) and bool(((y.sum(dim=1) - 1).abs() < 1e-2).all())


def decode(outputs: torch.Tensor, delta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Read the lattice bits back from a suspect's outputs.

    Rules (all from the outputs alone):
    - outputs that look like probabilities are turned into log-probabilities; a zero
      probability carries no bit, and a subnormal one counts only when its precision allows;
    - a logit or log-probability of -inf (a class served as impossible) carries no bit; rows
      with a NaN or +inf carry no reading: the caller counts them as mismatches;
    - a pair counts when its gap exceeds the runner-up's and the output's precision bounds the
      error of its log gap ratio by delta / 8 (a quarter of the decoding half-window).

    Returns:
        ((N, C) bool counted, (N, C) float64 decoded bits in {0, 1}, (N, 1) bool finite rows).
    """
    y = outputs.to(torch.float64)
    minus_inf = y == -math.inf  # a class served as impossible: no bit, the row still reads
    finite_values = y[torch.isfinite(y)]
    eps = _precision(finite_values) if finite_values.numel() else _FP32_EPS
    readable = ~minus_inf
    if bool(torch.isfinite(y).all()) and _looks_like_probabilities(y):
        # rounding error of a probability: eps relative for normal values, half the subnormal
        # spacing (tiny * 2 * eps) absolute below; the log turns both into a relative error
        tiny = _FP16_TINY if eps == _FP16_EPS else _FP32_TINY
        readable = y > 0
        z = torch.log(y.clamp_min(tiny * eps))
        err = torch.maximum(torch.full_like(z, eps), tiny * eps / y.clamp_min(tiny * eps))
    else:
        z = torch.where(minus_inf, torch.zeros_like(y), y)
        err = z.abs() * eps
    finite = torch.isfinite(z).all(dim=1, keepdim=True)  # (N, 1): no NaN, no +inf
    z = torch.where(finite, z, torch.zeros_like(z))
    err = torch.where(finite, err, torch.zeros_like(err))
    # an impossible class sits below every other one; it is never the top nor the runner-up
    z = torch.where(minus_inf, z.min(dim=1, keepdim=True).values - 1, z)
    top_value, top_index = z.max(dim=1, keepdim=True)
    gap = top_value - z  # (N, C)
    gap_err = err + err.gather(1, top_index)  # (N, C)
    positive = (gap > 0) & readable
    g2, g2_index = torch.where(positive, gap, torch.full_like(gap, math.inf)).min(dim=1, keepdim=True)
    g2_err = gap_err.gather(1, g2_index)
    carries = positive & (gap > g2) & torch.isfinite(g2)
    safe_gap = torch.where(carries, gap, torch.ones_like(gap))
    safe_g2 = torch.where(torch.isfinite(g2), g2, torch.ones_like(g2))
    ratio_err = gap_err / safe_gap + g2_err / safe_g2  # bound on the error of log(g_j / g_2)
    counted = carries & (ratio_err < delta / 8)
    r = torch.log(safe_gap / safe_g2) / delta
    frac = r - torch.floor(r)  # position within a lattice cell
    decoded = ((frac >= 0.25) & (frac < 0.75)).to(torch.float64)
    return counted, decoded, finite
