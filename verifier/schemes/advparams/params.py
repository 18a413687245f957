"""`advparams` constants, the error type and the public parameters (imports nothing from it)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

NAME = "advparams"
ACCESS = "white-box"
CLAIM = ("exact-copy fingerprint: a positive test shows the suspect holds, bit for bit, the "
         "owner's encrypted values at the key's secret positions (an encrypted copy; the bound is "
         "proven by the keyed candidates and dither). A decrypted copy is recognised and reported "
         "in the details (matches with the original values), but carries no p-value: nothing "
         "proves how rarely an independent model reproduces a trained weight, and a key's "
         "original values are whatever its writer put there, so attribute decrypted copies with "
         "the owner's other watermarks; "
         "fine-tuning or quantization, which change those weights, erase it (pruning only "
         "removes the ones it zeroes), and AdvParams itself protects access to the encrypted "
         "model, not ownership of a decrypted one")

Weights = Mapping[str, torch.Tensor]
Data = tuple[torch.Tensor, torch.Tensor]


class AdvParamsError(ValueError):
    """Models, data or keys the scheme cannot use (the message says what and the fix)."""


@dataclass(frozen=True)
class Params:
    """Public parameters of an AdvParams encryption."""

    beta: float = 0.1  # stealth margin: values stay in [min + beta*range, max - beta*range]
    step: float = 0.1  # each greedy move is step * (the tensor's range), then clipped
    loss_multiple: float = 5.0  # stop only once the loss exceeds this multiple of the original
    target_drop: float = 0.9  # ... and accuracy on the set fell by this fraction (relative)
    max_positions: int = 400  # give up moving new weights after this many
    samples: int = 256  # labelled examples drawn from `data` to compute gradients on
    include_biases: bool = False  # also encrypt 1-D parameters (default: weights only)
    candidates: int = 65536  # keyed weights the search may move (all eligible ones if fewer)
    dither_bits: int = 20  # keyed low mantissa bits of each encrypted value (the proven bound):
    # each match costs a forger about dither_bits - log2(candidates) bits; the encrypted value
    # moves by less than 2**(dither_bits-23) of itself (1/8 at 20), inside the stealth bounds
    generic_bits: int = 12  # an original counts for the test if it has this many significant bits
    orig_bound_log2: int = 8  # assumed bound 2**-this on matching one generic original by chance

    def __post_init__(self) -> None:
        checks = [
            (0.0 <= self.beta < 0.5, f"beta must lie in [0, 0.5), received {self.beta}"),
            (0.0 < self.step <= 1.0, f"step must lie in (0, 1], received {self.step}"),
            (self.loss_multiple >= 1.0, f"loss_multiple must be >= 1, received "
                                        f"{self.loss_multiple}"),
            (0.0 <= self.target_drop < 1.0, f"target_drop must lie in [0, 1), received "
                                            f"{self.target_drop}"),
            (self.max_positions >= 1, f"max_positions must be >= 1, received "
                                      f"{self.max_positions}"),
            (self.samples >= 1, f"samples must be >= 1, received {self.samples}"),
            # re-drawn by every Key.from_bytes: a cap keeps a hostile key from costing minutes
            (1 <= self.candidates <= 1 << 20, f"candidates must lie in [1, 2**20], received "
                                              f"{self.candidates}"),
            (1 <= self.dither_bits <= 22, f"dither_bits must lie in [1, 22], received "
                                          f"{self.dither_bits}"),
            (1 <= self.generic_bits <= 24, f"generic_bits must lie in [1, 24], received "
                                           f"{self.generic_bits}"),
            (1 <= self.orig_bound_log2 <= 24, f"orig_bound_log2 must lie in [1, 24], received "
                                              f"{self.orig_bound_log2}"),
        ]
        for ok, message in checks:
            if not ok:
                raise AdvParamsError(f"Params: {message}")
