"""`lsb` constants, the error type and the public parameters (imports nothing from `lsb`)."""
from __future__ import annotations

import math
from dataclasses import dataclass

NAME = "lsb"
ACCESS = "white-box"
CLAIM = ("exact copy and integrity only: signature_valid with masked_digest_match shows the "
         "suspect is a bit-exact copy of the signed model, and only a valid owner signature "
         "attributes; a small p-value alone shows it kept the owner's keyed low bits in some "
         "weights (integrity only: it never names an owner), which survive only where a "
         "modification did not touch them (partial fine-tuning, pruning); fp16/bf16/int8 "
         "conversion or retraining erases the mark, so a negative test says nothing about "
         "whether the suspect was derived from the owner's model")

SIGNATURE_BITS = 512  # an Ed25519 signature is 64 bytes


class LSBError(ValueError):
    """A model or key that the `lsb` scheme cannot use (the message says what and how to fix)."""


@dataclass(frozen=True)
class Params:
    """Public parameters of an `lsb` key."""

    k: int = 4  # low mantissa bits overwritten per chosen weight (relative change < 2**(k-23))
    repetitions: int = 3  # repetition-code factor: each signature bit is written this many times

    def __post_init__(self) -> None:
        if not 1 <= self.k <= 16:
            raise LSBError(f"Params.k must lie in [1, 16], received {self.k}; k <= 8 keeps the "
                           "relative change of a weight below 3.1e-5")
        if self.repetitions < 1 or self.repetitions % 2 == 0:
            raise LSBError("Params.repetitions must be a positive odd number (majority vote), "
                           f"received {self.repetitions}")

    @property
    def positions(self) -> int:
        """Number of weights that carry bits."""
        return math.ceil(SIGNATURE_BITS * self.repetitions / self.k)

    @property
    def n_bits(self) -> int:
        """Bits written and tested: `positions * k` (the codeword plus keyed filler bits)."""
        return self.positions * self.k
