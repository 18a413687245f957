"""The `lsb` key: the secret, the signed model's layout and masked digest; the rest re-derived.

Fields, and where each comes from:
- `secret`: the seed's hash; seeds every keyed stream below and the Ed25519 signing key;
- `layout`, `masked_digest`: read from the model at generation (they cannot come from the
  seed); the key is only worth something for a suspect with that layout, and the signature
  covers the digest;
- `positions`: drawn by the DRBG from (secret, layout) and stored for the reader; `from_bytes`
  re-derives them and refuses a key whose stored positions differ (`KeyMaterialError`);
- the pad, the filler and the signature bits are never stored: they are recomputed from the
  secret and the digest whenever they are needed; the stored `public_key` is checked against
  the secret.
"""
from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import asdict, dataclass
from typing import Any

import nacl.signing
import torch

from verifier import keyfile
from verifier.schemes._keyed import drbg_u64
from verifier.schemes.lsb.params import NAME, SIGNATURE_BITS, Params
from verifier.schemes.lsb.positions import Layout, Positions, draw_positions

DOMAIN = b"hallmark/lsb/v1"  # prefix of the signed message: DOMAIN ‖ masked digest


def keyed_bits(secret: bytes, label: bytes, n: int) -> torch.Tensor:
    """`n` keyed pseudo-random bits: (n,) uint8 in {0, 1}, least significant bit first."""
    stream = drbg_u64(secret, label)
    words = [next(stream) for _ in range(math.ceil(n / 64))]
    return torch.tensor([(w >> j) & 1 for w in words for j in range(64)][:n], dtype=torch.uint8)


@dataclass(frozen=True)
class Key:
    """An `lsb` key: the secret, the layout of the signed model and its masked digest.

    Everything else (positions, pad, signing key, signature) is re-derived from the secret.
    """

    params: Params  # public parameters
    secret: bytes  # 32 bytes: seeds the position DRBG, the pad and the Ed25519 signing key
    layout: Layout  # float32 tensors (name, shape) of the signed model, by name
    positions: Positions  # (tensor name, flat index) of each marked weight, drawn from the secret
    masked_digest: bytes  # SHA-256 of the signed model's weights with the marked bits cleared

    @property
    def signing_key(self) -> nacl.signing.SigningKey:
        """The Ed25519 key that signs the model identity, derived from the secret."""
        return nacl.signing.SigningKey(hmac.new(self.secret, b"sign", hashlib.sha256).digest())

    @property
    def public_key(self) -> bytes:
        """The 32-byte Ed25519 verify key of the signature (publishable)."""
        return bytes(self.signing_key.verify_key)

    def to_bytes(self) -> bytes:
        """The key as a deterministic safetensors blob (see `verifier.keyfile`)."""
        index = torch.tensor([i for _, i in self.positions], dtype=torch.int64)
        names = [n for n, _ in self.layout]
        which = torch.tensor([names.index(n) for n, _ in self.positions], dtype=torch.int64)
        return keyfile.dump(NAME, {
            "secret": torch.tensor(list(self.secret), dtype=torch.uint8),
            "position_index": index, "position_tensor": which,
        }, {"params": asdict(self.params), "layout": [[n, list(s)] for n, s in self.layout],
            "masked_digest": self.masked_digest.hex(), "public_key": self.public_key.hex()})

    @classmethod
    def from_bytes(cls, blob: bytes) -> Key:
        """Parse a blob written by `to_bytes` and re-derive its keyed material.

        Raises:
            keyfile.KeyFormatError: not an lsb key blob, or malformed.
            keyfile.KeyMaterialError: `positions` or `public_key` are not the ones the secret
                derives (the key was edited or forged after generation).
        """
        _, t, meta = keyfile.load(blob, NAME)
        try:
            params = Params(**meta["params"])
            layout = tuple((str(n), tuple(int(d) for d in s)) for n, s in meta["layout"])
            secret = bytes(t["secret"].tolist())
            names = [n for n, _ in layout]
            positions = tuple((names[int(w)], int(i)) for w, i in
                              zip(t["position_tensor"].tolist(), t["position_index"].tolist(),
                                  strict=True))
            key = cls(params, secret, layout, positions, bytes.fromhex(meta["masked_digest"]))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise keyfile.KeyFormatError(f"malformed lsb key: {type(e).__name__}: {e}") from None
        if len(secret) != 32 or len(positions) != params.positions:
            raise keyfile.KeyFormatError(
                f"malformed lsb key: secret of {len(secret)} bytes (expected 32) and "
                f"{len(positions)} positions (expected {params.positions})")
        names = [n for n, _ in layout]
        if names != sorted(set(names)) or any(math.prod(s) < 1 or min(s, default=1) < 0
                                              for _, s in layout):
            raise keyfile.KeyFormatError("malformed lsb key: the layout must list distinct, "
                                         "non-empty tensors sorted by name")
        try:
            derived = draw_positions(secret, layout, params.positions)
        except ValueError as e:
            raise keyfile.KeyFormatError(f"malformed lsb key: {e}") from None
        if derived != positions:
            raise keyfile.KeyMaterialError("positions", NAME)
        if key.public_key.hex() != meta.get("public_key"):
            raise keyfile.KeyMaterialError("public_key", NAME)
        return key

    @property
    def owner_chosen_inputs(self) -> bool:
        """False: positions, pad and signature derive from the secret."""
        return False

    def best_log10_p(self) -> float:
        """log10 of the p-value of a perfect match, P[Bin(n, 1/2) >= n] = 2**-n_bits."""
        return self.params.n_bits * math.log10(0.5)

    def public_params(self) -> dict[str, Any]:
        """What may be published: parameters, the signer's public key; no positions, no pad."""
        return {**asdict(self.params), "n_bits": self.params.n_bits,
                "positions": self.params.positions, "tensors": len(self.layout),
                "public_key": self.public_key.hex()}

    def signature(self) -> bytes:
        """The owner's Ed25519 signature over the masked digest (deterministic, 64 bytes)."""
        return self.signing_key.sign(DOMAIN + self.masked_digest).signature

    def pad(self) -> torch.Tensor:
        """The keyed pad XOR-ed onto the codeword: (n_bits,) uint8 fair coins."""
        return keyed_bits(self.secret, b"pad", self.params.n_bits)

    def codeword(self) -> torch.Tensor:
        """Repetition code of the signature, filled to n_bits with keyed bits: (n_bits,) uint8."""
        sig = torch.tensor(list(self.signature()), dtype=torch.uint8).unsqueeze(1)  # (64, 1)
        bits = ((sig >> torch.arange(7, -1, -1, dtype=torch.uint8)) & 1).flatten()  # (512,)
        # Copies are concatenated (not bit-by-bit repeated), so one weight's k adjacent bits
        # never hold two copies of the same signature bit.
        code = bits.repeat(self.params.repetitions)
        filler = keyed_bits(self.secret, b"filler", self.params.n_bits - code.numel())
        return torch.cat([code, filler])

    def expected_bits(self) -> torch.Tensor:
        """The raw bits written into the weights: codeword XOR keyed pad, (n_bits,) uint8."""
        return self.codeword() ^ self.pad()

    def decode_signature(self, raw: torch.Tensor) -> bytes:
        """Majority vote over the repetition copies of de-padded raw bits: 64 bytes."""
        code = raw ^ self.pad()
        copies = code[:SIGNATURE_BITS * self.params.repetitions].view(self.params.repetitions, -1)
        bits = (copies.sum(dim=0) * 2 > self.params.repetitions).to(torch.uint8).view(-1, 8)
        return bytes((bits.to(torch.int32) << torch.arange(7, -1, -1)).sum(dim=1).tolist())
