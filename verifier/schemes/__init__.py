"""The watermark schemes, by registered name.

Every scheme is a module `verifier.schemes.<name>` with the same small contract:

- `NAME` (str), `ACCESS` ("white-box" | "black-box" | "white-box or black-box"),
  `CLAIM` (one sentence: what a positive test proves, and what it does not);
- `Params`: a dataclass of public parameters, and `generate_key(params, seed, model=None) -> Key`;
- `Key`: `to_bytes()` / `Key.from_bytes(blob)` as a deterministic safetensors blob
  (see `verifier.keyfile`), and `public_params() -> dict` (what may be published: no secrets);
  every random element of a key (bits, labels, positions, pads, dither, projections) is an
  output of the scheme's keyed DRBG over the seed, and `from_bytes` re-derives it and raises
  `keyfile.KeyMaterialError` (naming the field) when the blob's material differs;
  `best_log10_p() -> float`: log10 of the p-value a perfect match would give (the registry
  refuses keys that could never reach the forgery floor, see `verifier.forgery`);
  `owner_chosen_inputs -> bool` (property): True when the key carries inputs its seed cannot
  produce (adversarial triggers), which the registry screens against a reference panel
  (`verifier.screening`);
- `embed(model, key, data=None, **options) -> model`: training-time schemes fine-tune with
  their loss on `data` (an iterable of `(inputs, labels)` batches); post-training schemes
  edit weights or wrap the model;
- `test(suspect, key) -> TestResult`: the statistic and its exact or conservative p-value
  under H0 "the suspect is independent of this key"; a suspect without the access the scheme
  needs gets `TestResult.not_applicable(...)`, never an error.
"""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Any

from verifier import keyfile

# Every scheme Hallmark knows, in the order reports list them.
KNOWN = ("uchida", "trigger_set", "seal", "lsb", "output_signature", "advparams")


class UnknownScheme(LookupError):
    """A scheme name that Hallmark does not implement."""


def available() -> list[str]:
    """The names of the schemes installed in this copy of Hallmark."""
    return [n for n in KNOWN if importlib.util.find_spec(f"verifier.schemes.{n}") is not None]


def get(name: str) -> ModuleType:
    """The scheme module registered under `name`.

    Raises:
        UnknownScheme: with the list of valid names.

    Example:
        >>> get("uchida").NAME
        'uchida'
    """
    if name not in available():
        raise UnknownScheme(f"unknown scheme `{name}`; expected one of {', '.join(available())}")
    return importlib.import_module(f"verifier.schemes.{name}")


def load_key(blob: bytes) -> Any:
    """Parse any scheme's key blob, dispatching on the scheme name stored inside it."""
    return get(keyfile.scheme_of(blob)).Key.from_bytes(blob)
