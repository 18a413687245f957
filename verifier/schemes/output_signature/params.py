"""`output_signature` constants, the error type and the public parameters."""
from __future__ import annotations

import math
from dataclasses import dataclass

NAME = "output_signature"
ACCESS = "black-box"
CLAIM = ("outputs came from a wrapped copy: a positive test shows the suspect's logits carry "
         "the owner's keyed output signature, i.e. it serves the owner's SignedOutput wrapper "
         "(whatever model sits inside it); it proves nothing about weights stolen and re-served "
         "without the wrapper; it survives probabilities, log-probabilities, temperature, any "
         "positive affine map of the logits and fp16 outputs, but coarse rounding of the "
         "outputs removes it")


class OutputSignatureError(ValueError):
    """Parameters, models or keys the scheme cannot use (the message says what and the fix)."""


@dataclass(frozen=True)
class Params:
    """Public parameters of an `output_signature` key."""

    input_shape: tuple[int, ...] = (64,)  # shape of one input, without the batch dimension
    classes: int = 10  # number of logits the model returns
    delta: float = 0.1  # lattice step on log gap ratios: a gap grows by less than e**delta - 1
    scale_bits: int = 8  # inputs are quantized as floor(x * 2**scale_bits) before hashing
    hash_bits: int = 16  # the keyed hash works modulo 2**hash_bits
    queries: int = 48  # inputs the test sends; at most prod(input_shape) + 1
    input_low: float = 0.0  # the test's random inputs are drawn uniformly from
    input_high: float = 1.0  # [input_low, input_high) on the quantization grid

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        dim = math.prod(self.input_shape)
        checks = [
            (self.classes >= 3, f"classes must be >= 3 (bits live below the runner-up), received "
                                 f"{self.classes}"),
            (dim >= 1, f"input_shape must be non-empty, received {self.input_shape}"),
            (0.0 < self.delta < 1.0, f"delta must lie in (0, 1), received {self.delta}"),
            (0 <= self.scale_bits <= 24, f"scale_bits must lie in [0, 24], received "
                                         f"{self.scale_bits}"),
            (2 <= self.hash_bits <= 24, f"hash_bits must lie in [2, 24], received "
                                        f"{self.hash_bits}"),
            # q @ A.T sums D products below 2**(2b): exact in float64 only below 2**53
            (dim * 2 ** (2 * self.hash_bits) < 2 ** 53,
             f"inputs of {dim} values overflow exact float64 hashing at hash_bits="
             f"{self.hash_bits}; lower hash_bits"),
            (1 <= self.queries <= dim + 1,
             f"queries must lie in [1, {dim + 1}] for an input of {dim} values (the exact null "
             f"needs linearly independent queries), received {self.queries}"),
            (self.input_high - self.input_low >= 2 ** -self.scale_bits * 2,
             f"[input_low, input_high) = [{self.input_low}, {self.input_high}) holds fewer than "
             f"two quantization steps of 2**-{self.scale_bits}; widen it or raise scale_bits"),
        ]
        for ok, message in checks:
            if not ok:
                raise OutputSignatureError(f"Params: {message}")
