"""The AdvParams key: which candidates were moved, from what, to what; re-derived where keyed.

Fields, and where each comes from:
- `tensors`: the eligible float32 tensors (name, shape) of the encrypted model, by name: read
  from the model (a forger may list any layout, which only re-draws the keyed material below);
- `which`, `index`: the moved weights; each must be one of the key's keyed candidates
  (`material.draw_candidates`), else `KeyMaterialError("positions")`;
- `enc`: the encrypted values; their low `dither_bits` bits must be the candidate's keyed
  dither (`material.draw_dither`), else `KeyMaterialError("dither")`; the high bits come from
  the greedy search (the model);
- `orig`: the original values (the model), restored by decryption; they carry no proof;
- `stats`: loss and accuracy before/after, informational.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from verifier import keyfile
from verifier.schemes.advparams.material import (
    Layout,
    candidate_count,
    draw_candidates,
    draw_dither,
)
from verifier.schemes.advparams.params import NAME, AdvParamsError, Params
from verifier.stats import log10_binom_sf


@dataclass(frozen=True)
class Key:
    """An AdvParams key: which weights were moved, from what, to what.

    It is the decryption material: whoever holds it can restore the original model.
    """

    params: Params  # public parameters of the encryption
    secret: bytes  # 32 bytes: seeds the data subset, the candidates and their dither
    tensors: Layout  # (name, shape) of every eligible tensor of the model, by name
    which: torch.Tensor  # (P,) int64 index into `tensors`
    index: torch.Tensor  # (P,) int64 flat (row-major) index within that tensor
    orig: torch.Tensor  # (P,) float32 original values (restored bit-exact by decrypt)
    enc: torch.Tensor  # (P,) float32 encrypted values (low dither_bits keyed)
    stats: dict[str, Any]  # loss / accuracy before and after on the set, parameter count, data digest

    @property
    def positions(self) -> int:
        """Number of encrypted weights."""
        return int(self.index.numel())

    @property
    def candidates(self) -> int:
        """Number of keyed candidate weights: the n of the test's conservative bound."""
        return candidate_count(self.tensors, self.params.candidates)

    def fraction_touched(self) -> float:
        """Encrypted weights as a fraction of all the model's parameters."""
        return self.positions / max(1, int(self.stats["total_parameters"]))

    def to_bytes(self) -> bytes:
        """The key as a deterministic safetensors blob (see `verifier.keyfile`)."""
        return keyfile.dump(NAME, {"which": self.which, "index": self.index, "orig": self.orig,
                                   "enc": self.enc,
                                   "secret": torch.tensor(list(self.secret), dtype=torch.uint8)},
                            {"params": asdict(self.params), "stats": self.stats,
                             "tensors": [[n, list(s)] for n, s in self.tensors]})

    @classmethod
    def from_bytes(cls, blob: bytes) -> Key:
        """Parse a blob written by `to_bytes` and re-derive its keyed material.

        Raises:
            keyfile.KeyFormatError: not an advparams key blob, or malformed.
            keyfile.KeyMaterialError: a position that is not a keyed candidate (`positions`),
                or an encrypted value without its keyed low bits (`dither`).
        """
        _, t, meta = keyfile.load(blob, NAME)
        try:
            key = cls(Params(**meta["params"]), bytes(t["secret"].tolist()),
                      tuple((str(n), tuple(int(d) for d in s)) for n, s in meta["tensors"]),
                      t["which"], t["index"], t["orig"], t["enc"], dict(meta["stats"]))
        except (KeyError, TypeError, ValueError, AdvParamsError) as e:
            raise keyfile.KeyFormatError(
                f"malformed advparams key: {type(e).__name__}: {e}") from None
        key._check_shapes()
        key._check_material()
        return key

    def _check_shapes(self) -> None:
        p = self.positions
        ok = (len(self.secret) == 32
              and all(x.shape == (p,) for x in (self.which, self.index, self.orig, self.enc))
              and self.which.dtype == self.index.dtype == torch.int64
              and self.orig.dtype == self.enc.dtype == torch.float32
              and bool(((self.which >= 0) & (self.which < len(self.tensors))).all()))
        if not ok:
            raise keyfile.KeyFormatError("malformed advparams key: a 32-byte secret, and `which`, "
                                         "`index`, `orig`, `enc` 1-D of equal length, "
                                         "int64/float32, in range")
        names = [n for n, _ in self.tensors]
        if names != sorted(set(names)) or any(math.prod(s) < 1 or min(s, default=1) < 0
                                              for _, s in self.tensors):
            raise keyfile.KeyFormatError("malformed advparams key: `tensors` must list distinct, "
                                         "non-empty tensors sorted by name")
        for w, i in zip(self.which.tolist(), self.index.tolist(), strict=True):
            if not 0 <= i < math.prod(self.tensors[w][1]):
                raise keyfile.KeyFormatError(
                    f"malformed advparams key: index {i} outside tensor `{self.tensors[w][0]}`")
        pairs = list(zip(self.which.tolist(), self.index.tolist(), strict=True))
        if pairs != sorted(set(pairs)):
            raise keyfile.KeyFormatError("malformed advparams key: positions must be distinct and "
                                         "sorted by (tensor, index): a repeated position would "
                                         "count twice")

    def _check_material(self) -> None:
        """Positions among the keyed candidates, encrypted values carrying the keyed dither."""
        cands = draw_candidates(self.secret, self.tensors, self.params.candidates)
        ordinal = {c: j for j, c in enumerate(cands)}
        dither = draw_dither(self.secret, self.tensors, len(cands), self.params.dither_bits)
        mask = (1 << self.params.dither_bits) - 1
        low = (self.enc.view(torch.int32).to(torch.int64) & mask).tolist()
        for w, i, r in zip(self.which.tolist(), self.index.tolist(), low, strict=True):
            j = ordinal.get((w, i))
            if j is None:
                raise keyfile.KeyMaterialError("positions", NAME)
            if dither[j] != r:
                raise keyfile.KeyMaterialError("dither", NAME)

    @property
    def owner_chosen_inputs(self) -> bool:
        """False: candidates and dither derive from the secret."""
        return False

    def best_log10_p(self) -> float:
        """log10 of the p-value when every encrypted value matches: P[Bin(M, 2^-L) >= P]."""
        return log10_binom_sf(self.positions, self.candidates, 2.0 ** -self.params.dither_bits)

    def public_params(self) -> dict[str, Any]:
        """What may be published: parameters and counts; no positions, no values."""
        return {**asdict(self.params), "positions": self.positions,
                "candidates_drawn": self.candidates,
                "fraction_touched": self.fraction_touched(),
                "total_parameters": self.stats["total_parameters"]}

    def entries(self) -> list[tuple[str, int, float, float]]:
        """The key as a list of (tensor name, flat index, original, encrypted)."""
        return [(self.tensors[w][0], i, o, e) for w, i, o, e in
                zip(self.which.tolist(), self.index.tolist(), self.orig.tolist(),
                    self.enc.tolist(), strict=True)]
