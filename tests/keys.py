"""Real key blobs for tests (made with the schemes themselves, on small real models)."""
from __future__ import annotations

import torch

from verifier import toy
from verifier.schemes import uchida


def uchida_key_blob(seed: int = 0) -> bytes:
    torch.manual_seed(seed)
    return uchida.generate_key(uchida.Params(bits=128), seed,
                               model=toy.MLP()).to_bytes()
