"""Red-team cases and the admission pipeline a forged key must pass (imports no scheme's cases).

A case is one forgery a dishonest registrant could try: `make(ctx)` returns the key blob they
would upload. `admit` runs the registry's upload checks on it, in order, and says which one
stopped it:

1. "format" — `Key.from_bytes` refuses the blob (`keyfile.KeyFormatError`);
2. "re-derivation" — the key's random material is not what its seed derives
   (`keyfile.KeyMaterialError`, naming the field);
3. "floor" — even a perfect match could not reach the forgery floor (`forgery.WeakKeyError`);
4. "screening" — a key with owner-chosen inputs that a reference-panel model already matches
   (`screening.screen`, p <= 1e-3).

A key that passes all four is "accepted"; the evaluation then tests it on victims (independent
models outside the panel) and counts the ones it would attribute (log10 p below the floor).

Schemes add cases with `@red_team_case(scheme, name, attack, expect)` in a module of this package
(see `trigger_set.py`) imported by `verifier.evaluation.forgery`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from verifier import forgery, keyfile, screening, toy
from verifier.schemes import UnknownScheme, load_key
from verifier.suspect import Suspect

ACCEPTED, REFUSED = "accepted", "refused"
STAGES = ("format", "re-derivation", "floor", "screening")


@dataclass
class Context:
    """What a case may use: public data, models the forger could train, the registry's panel."""

    split: toy.Split  # public digits (a forger has them too)
    panel: list[tuple[str, Suspect]]  # the registry's reference panel
    victims: list[tuple[str, nn.Module]]  # independent models, outside the panel, never marked
    owner: nn.Module  # an honest owner's trained model (for keys a forger edits)
    surrogates: list[nn.Module] = field(default_factory=list)  # the forger's own public models
    quick: bool = False


@dataclass(frozen=True)
class RedTeamCase:
    """One forgery attempt: the blob a forger would upload and what should stop it."""

    scheme: str  # the scheme whose key is forged
    name: str  # short id, unique per scheme
    attack: str  # what the forger does, one sentence
    expect: str  # the check that should stop it: one of STAGES, or "priority" / "seed search"
    make: Callable[[Context], bytes]  # builds the forged blob


@dataclass(frozen=True)
class Admission:
    """The outcome of the registry's upload checks on one blob."""

    outcome: str  # "accepted" | "refused"
    stage: str  # the check that refused it ("" if accepted)
    message: str  # the refusal's message, or the screening summary
    key: Any = None  # the parsed key, when parsing succeeded
    screening: dict[str, Any] | None = None


_CASES: list[RedTeamCase] = []


def red_team_case(scheme: str, name: str, attack: str, expect: str
                  ) -> Callable[[Callable[[Context], bytes]], Callable[[Context], bytes]]:
    """Register `make` as a red-team case of `scheme` (a decorator).

    Example:
        >>> @red_team_case("example", "empty", "upload garbage", "format")
        ... def _empty(ctx: Context) -> bytes:
        ...     return b""
        >>> [c.name for c in red_team_cases("example")]
        ['empty']
    """
    def register(make: Callable[[Context], bytes]) -> Callable[[Context], bytes]:
        if any(c.scheme == scheme and c.name == name for c in _CASES):
            raise ValueError(f"red-team case {scheme}/{name} is registered twice")
        _CASES.append(RedTeamCase(scheme, name, attack, expect, make))
        return make
    return register


def red_team_cases(scheme: str | None = None) -> list[RedTeamCase]:
    """The registered cases, of one scheme or all, in registration order."""
    return [c for c in _CASES if scheme is None or c.scheme == scheme]


def admit(blob: bytes, panel: Sequence[tuple[str, Suspect]],
          min_bits: float = forgery.DEFAULT_MIN_FORGERY_BITS,
          threshold: float = screening.DEFAULT_THRESHOLD) -> Admission:
    """Run the upload checks on a key blob, in the order the registry runs them.

    Returns:
        An Admission naming the first check that refused the key, or "accepted".
    """
    try:
        key = load_key(blob)
    except keyfile.KeyMaterialError as e:
        return Admission(REFUSED, "re-derivation", str(e))
    except (keyfile.KeyFormatError, UnknownScheme) as e:
        return Admission(REFUSED, "format", str(e))
    except ValueError as e:  # a scheme's own error type for inconsistent contents
        return Admission(REFUSED, "format", f"{type(e).__name__}: {e}")
    try:
        forgery.check_key_strength(key.best_log10_p(), type(key).__module__.split(".")[2], min_bits)
    except forgery.WeakKeyError as e:
        return Admission(REFUSED, "floor", str(e), key=key)
    if not key.owner_chosen_inputs:
        return Admission(ACCEPTED, "", "inputs derive from the seed: no screening needed", key=key)
    result = screening.screen(key, panel, threshold=threshold)
    if result.status == screening.REFUSED:
        return Admission(REFUSED, "screening", f"{len(result.matches)} of {result.applicable} "
                         f"panel models match (worst log10 p {result.worst_log10_p:.1f})",
                         key=key, screening=result.to_dict())
    return Admission(ACCEPTED, "", f"screening: {result.status}, worst log10 p "
                     f"{result.worst_log10_p:.1f} over {result.applicable} panel models",
                     key=key, screening=result.to_dict())
