"""What a registry scan needs: each key's requirement, each suspect's profile, batched tests.

A scan tests a suspect against every commitment in the registry. Most commitments cannot
apply to a given suspect (a key on a 1024×1024 layer says nothing about a model without one),
so the registry indexes each commitment at upload by its `Requirement`, computes the suspect's
`Profile` once, and tests only the commitments the profile `satisfies`; the others are counted
as not applicable. Rules:

- A requirement is conservative: a suspect that does not satisfy it would make the scheme's
  `test` answer "not applicable" (never a p-value), so leaving it untested loses no evidence.
- White-box keys need weights; `uchida` keys also need a tensor of each host layer's shape.
  Shapes, never names, select candidates: a renamed layer is still a candidate (its scheme
  decides by name or content), so a rename cannot hide a model from a scan. An `uchida` key
  on a canonical host ("invariant", "moments") needs weights only: its test accepts hidden
  layers of other widths (dummy units added or merged), so no shape may rule a suspect out.
- Black-box keys need a predict function; a key usable either way needs nothing.
- `test_batch` tests K keys of one scheme against one loaded suspect and returns exactly what
  K calls of the scheme's `test` would (`uchida` shares the host vector and the matmul).

Example:
    >>> from verifier.toy import MLP
    >>> from verifier.schemes import uchida
    >>> k = uchida.generate_key(uchida.Params(bits=8), seed=1, model=MLP())
    >>> r = requirement("uchida", k.public_params())
    >>> satisfies(profile(Suspect.from_module(MLP())), r), r.access
    (True, 'weights')
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from verifier import schemes
from verifier.result import TestResult
from verifier.schemes.uchida.key import CANONICAL
from verifier.suspect import Suspect

WEIGHTS, PREDICT, ANY = "weights", "predict", "any"  # Requirement.access
_SHAPED = ("uchida",)  # schemes whose public params list host shapes that must all be present

Outcome = TestResult | Exception  # an exception: that key's test raised (an error row)


class ScanError(ValueError):
    """Public parameters that do not describe a requirement (the message names the field)."""


def shape_text(shape: Sequence[int]) -> str:
    """A shape as the index stores it: "1024x1024" (dims joined by "x").

    Example:
        >>> shape_text((64, 3, 3, 3))
        '64x3x3x3'
    """
    return "x".join(str(int(d)) for d in shape)


@dataclass(frozen=True)
class Requirement:
    """What one key needs from a suspect before its test can apply."""

    access: str  # WEIGHTS, PREDICT or ANY
    shapes: tuple[tuple[int, ...], ...] = ()  # tensors that must be present (white-box); () = any

    @property
    def index_shape(self) -> str:
        """The one shape the registry's index filters on: the largest required tensor (the
        rarest in practice), "" when no shape is required."""
        if not self.shapes:
            return ""
        return shape_text(max(self.shapes, key=lambda s: _numel(s)))

    def to_dict(self) -> dict[str, Any]:
        return {"access": self.access, "shapes": [list(s) for s in self.shapes]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Requirement:
        return cls(str(d.get("access", ANY)), tuple(tuple(int(x) for x in s)
                                                      for s in d.get("shapes", ())))


@dataclass(frozen=True)
class Profile:
    """What a suspect offers, computed once per scan."""

    weights: bool  # named tensors are readable (white-box)
    predict: bool  # inputs can be sent (black-box)
    shapes: frozenset[tuple[int, ...]] = frozenset()  # every tensor shape present

    def to_dict(self) -> dict[str, Any]:
        return {"weights": self.weights, "predict": self.predict,
                "shapes": sorted(shape_text(s) for s in self.shapes)}


def requirement(scheme: str, public_params: Mapping[str, Any]) -> Requirement:
    """The requirement of a key of `scheme` with these public parameters.

    Args:
        scheme: a registered scheme name.
        public_params: the key's `public_params()` as stored with its commitment.

    Returns:
        The Requirement (see the module's rules).

    Raises:
        schemes.UnknownScheme: the scheme is not installed.
        ScanError: an `uchida` key whose "shapes" is not a list of lists of positive ints.

    Example:
        >>> requirement("uchida", {"shapes": [[4, 16]]})
        Requirement(access='weights', shapes=((4, 16),))
    """
    access = schemes.get(scheme).ACCESS
    if access == "black-box":
        return Requirement(PREDICT)
    if access != "white-box":
        return Requirement(ANY)
    if scheme not in _SHAPED or public_params.get("host") in CANONICAL:  # any hidden width
        return Requirement(WEIGHTS)
    try:
        shapes = tuple(tuple(int(d) for d in s) for s in public_params["shapes"])
        if not shapes or any(not s or min(s) < 1 for s in shapes):
            raise ValueError("empty")
    except (KeyError, TypeError, ValueError):
        raise ScanError(f"an {scheme} key's public params need \"shapes\", a list of host layer "
                        f"shapes, received {public_params.get('shapes')!r}; re-export the key "
                        "with Key.public_params()") from None
    return Requirement(WEIGHTS, shapes)


def profile(suspect: Suspect) -> Profile:
    """The suspect's profile: which access it offers and the shapes of its tensors.

    Lazy weights (a memory-mapped or range-read safetensors file) give their shapes from the
    header, so profiling reads no tensor bytes. A 2-D shape counts in both orientations:
    white-box checks find layers stored transposed (GPT-2's Conv1D, ONNX MatMul), so such a
    suspect stays a candidate. (Fused projections, e.g. one qkv tensor, are found only by a
    verification targeted at the model: a scan matches whole shapes.)

    Example:
        >>> import torch
        >>> profile(Suspect.from_weights({"w": torch.zeros(2, 3)})).to_dict()
        {'weights': True, 'predict': False, 'shapes': ['2x3', '3x2']}
    """
    if not suspect.has_weights:
        return Profile(False, suspect.has_predict, frozenset())
    weights = suspect.weights
    header = getattr(weights, "shapes", None)
    stored = header().values() if callable(header) else (t.shape for t in weights.values())
    shapes = {tuple(s) for s in stored}
    shapes |= {s[::-1] for s in shapes if len(s) == 2}
    return Profile(True, suspect.has_predict, frozenset(shapes))


def satisfies(p: Profile, r: Requirement) -> bool:
    """True when a key with requirement `r` may apply to a suspect with profile `p`."""
    if r.access == PREDICT:
        return p.predict
    if r.access == WEIGHTS:
        return p.weights and all(s in p.shapes for s in r.shapes)
    return True


def test_batch(scheme: str, suspect: Suspect, keys: Sequence[Any],
               reraise: tuple[type[BaseException], ...] = ()) -> list[Outcome]:
    """Test K keys of one scheme against one loaded suspect, in order.

    A scheme that defines `test_many(suspect, keys)` (`uchida`: one host vector per distinct
    host-layer set, projections stacked into one matmul) is called once; any other scheme's
    `test` runs per key on a fresh view of the suspect (its own query count). Either way the
    results are those of K single `test` calls.

    Args:
        scheme: the scheme every key belongs to.
        suspect: the loaded suspect, shared by all keys.
        keys: parsed keys of `scheme`.
        reraise: exceptions that abort the batch instead of becoming one key's error (the
            caller's time limit, a lost database).

    Returns:
        One Outcome per key: its TestResult, or the exception its test raised (so one broken
        key costs one error row, not the batch).
    """
    module = schemes.get(scheme)
    many = getattr(module, "test_many", None)
    if many is not None:
        try:
            return list(many(suspect, keys))
        except reraise:
            raise
        except Exception:  # fall back key by key, so only the broken keys become errors
            pass
    out: list[Outcome] = []
    for key in keys:
        try:
            out.append(module.test(suspect.fresh(), key))
        except reraise:
            raise
        except Exception as e:  # noqa: BLE001 - recorded as that key's error row
            out.append(e)
    return out


test_batch.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
