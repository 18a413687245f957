"""The `output_signature` key: parameters and a secret; hash key and queries re-derived."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from verifier import keyfile
from verifier.schemes._keyed import drbg_u64
from verifier.schemes.output_signature.keyed import secret_from, uniform_ints
from verifier.schemes.output_signature.params import NAME, Params


@dataclass(frozen=True)
class Key:
    """An `output_signature` key: the parameters and a 32-byte secret.

    The hash matrix, offsets and the test's queries are re-derived from the secret.
    """

    params: Params  # public parameters
    secret: bytes  # 32 bytes: seeds the keyed hash (A, c) and the query inputs

    def hash_key(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The keyed hash: A (C, D) and c (C,), integers in [0, 2**hash_bits) as float64."""
        p = self.params
        dim, modulus = math.prod(p.input_shape), 1 << p.hash_bits
        values = uniform_ints(drbg_u64(self.secret, b"hash"), p.classes * (dim + 1), 0, modulus)
        t = torch.tensor(values, dtype=torch.float64).view(p.classes, dim + 1)
        return t[:, :dim].contiguous(), t[:, dim].contiguous()

    def queries(self) -> torch.Tensor:
        """The test's inputs, (queries, *input_shape) float32, drawn from the key.

        Each input is (u + 1/2) / 2**scale_bits for a keyed integer vector u, so the wrapper
        quantizes it back to u exactly. Candidates are kept only if [u mod 2, 1] is linearly
        independent over GF(2) of those kept so far: the condition for exactly independent,
        uniform hashes (module docstring).
        """
        p = self.params
        dim, scale = math.prod(p.input_shape), 1 << p.scale_bits
        low, high = math.ceil(p.input_low * scale), math.floor(p.input_high * scale)
        stream = drbg_u64(self.secret, b"queries")
        basis: dict[int, int] = {}  # GF(2) row echelon form: leading bit -> row
        kept: list[list[int]] = []
        while len(kept) < p.queries:
            u = uniform_ints(stream, dim, low, high)
            row = 1 << dim | sum((v & 1) << i for i, v in enumerate(u))  # bit `dim` is the 1
            while row:
                lead = row.bit_length() - 1
                if lead not in basis:
                    basis[lead] = row
                    kept.append(u)
                    break
                row ^= basis[lead]
        u_t = torch.tensor(kept, dtype=torch.float64)  # (queries, D)
        return ((u_t + 0.5) / scale).to(torch.float32).view(p.queries, *p.input_shape)

    def to_bytes(self) -> bytes:
        """The key as a deterministic safetensors blob (see `verifier.keyfile`)."""
        meta = asdict(self.params)
        meta["input_shape"] = list(self.params.input_shape)
        return keyfile.dump(NAME, {"secret": torch.tensor(list(self.secret), dtype=torch.uint8)},
                            {"params": meta})

    @classmethod
    def from_bytes(cls, blob: bytes) -> Key:
        """Parse a blob written by `to_bytes`: parameters and a secret, nothing else.

        Raises:
            keyfile.KeyFormatError: not an output_signature key blob, or malformed.
            keyfile.KeyMaterialError: the blob carries material of its own (a hash key, queries,
                bits...): all of it is derived from the secret, so a stored copy could only be
                an attempt to substitute chosen material.
        """
        _, t, meta = keyfile.load(blob, NAME)
        extra = sorted(set(t) - {"secret"}) + sorted(set(meta) - {"params"})
        if extra:
            raise keyfile.KeyMaterialError(extra[0], NAME)
        try:
            params = Params(**meta["params"])
            secret = bytes(t["secret"].tolist())
        except (KeyError, TypeError, ValueError) as e:
            raise keyfile.KeyFormatError(
                f"malformed output_signature key: {type(e).__name__}: {e}") from None
        if len(secret) != 32:
            raise keyfile.KeyFormatError(
                f"malformed output_signature key: secret of {len(secret)} bytes, expected 32")
        return cls(params, secret)

    @property
    def owner_chosen_inputs(self) -> bool:
        """False: queries and hash derive from the secret."""
        return False

    def best_log10_p(self) -> float:
        """log10 of the p-value of a perfect match, P[Bin(n, 1/2) >= n] with n = queries * (C - 2)
        (every class below the runner-up of every query carries one keyed bit)."""
        return self.params.queries * (self.params.classes - 2) * math.log10(0.5)

    def public_params(self) -> dict[str, Any]:
        """What may be published: the parameters (no secret, no hash key, no queries)."""
        d = asdict(self.params)
        d["input_shape"] = list(self.params.input_shape)
        return d


def generate_key(params: Params, seed: int | bytes, model: nn.Module | None = None) -> Key:
    """Derive an `output_signature` key (independent of the model).

    Args:
        params: public parameters (input shape, classes, lattice step, query count).
        seed: an int (reproducible) or bytes (in production: `secrets.token_bytes(32)`).
        model: unused; accepted for the common contract.

    Returns:
        The Key.

    Example:
        >>> generate_key(Params(queries=8), seed=1).queries().shape
        torch.Size([8, 64])
    """
    return Key(params, secret_from(seed))
