"""`test`: query the triggers through the suspect's predict function; exact binomial tail at 1/C.

The statistic uses only the seeded labels and the suspect's predictions, never a field the
registrant could set freely (keys of version 1 also conditioned on stored "clean labels",
which a forger controlled: docs/schemes-uchida-trigger-set.md, "Forgery").
"""
from __future__ import annotations

from dataclasses import replace

import torch

from verifier.result import NULL_EXACT, TestResult
from verifier.schemes.trigger_set.key import Key
from verifier.schemes.trigger_set.params import KEYED_NOISE, NAME, TriggerSetError
from verifier.stats import log10_binom_sf
from verifier.suspect import Suspect

CLAIM = ("The suspect gives this key's secret seeded labels to its trigger inputs far beyond "
         "chance: it descends from the owner's marked model. It uses predictions only; a model "
         "that filters or rejects trigger-like queries can evade it.")
# The null label of an adversarial key's p-value: exact under one assumption that the seed
# cannot guarantee (the triggers are the owner's inputs), which screening tests.
NULL_SCREENED = "exact if triggers indep. of labels"  # <= 40 chars: CheckResult.null
ASSUMPTION_ADVERSARIAL = (
    "the labels are seeded (re-derived from the key seed) and uniform on the C classes; the "
    "trigger inputs were chosen by the owner, so the p-value is exact only if they were chosen "
    "without regard to the labels or to the suspect (honest untargeted PGD against the owner's "
    "own model). A forger who picks inputs that innocent models already answer with the labels "
    "breaks it: the registry screens such keys against a reference panel of independent models "
    "and refuses any that a panel model matches; a forger holding the suspect's weights before "
    "registering could still make targeted triggers, which only registration priority answers")
ASSUMPTION_KEYED_NOISE = (
    "inputs and labels are independent outputs of the keyed DRBG over the seed (re-derived from "
    "it), so for any model independent of the key each prediction equals its label with "
    "probability exactly 1/C; forging needs a seed search of about 1/p trials")
_QUERY_BATCH = 256  # triggers per predict call


@torch.no_grad()
def test(suspect: Suspect, key: Key) -> TestResult:
    """Query the triggers through the suspect's predict function; exact binomial tail.

    Under H0 "the suspect is independent of this key", each label is uniform on the C classes
    and independent of the suspect and of its trigger (keyed_noise: always, by the DRBG;
    adversarial: if the owner chose the triggers without regard to the labels, which screening
    tests), so the number k of predictions equal to their label is Binomial(n, 1/C) and
    p = P[Binomial(n, 1/C) >= k]. Never reads weights. Not applicable when the suspect offers
    no predict function, cannot take the triggers' shape, or returns something other than one
    row of C scores per trigger.

    Example:
        >>> from verifier.schemes.trigger_set import Params, generate_key
        >>> k = generate_key(Params(n=20, variant="keyed_noise", classes=10), seed=1)
        >>> test(Suspect.from_predict(lambda x: torch.zeros(x.shape[0], 10)), k).queries
        20
    """
    if not suspect.has_predict:
        return TestResult.not_applicable(NAME, "trigger_set is a black-box test: the suspect "
                                               "offers no predict function (weights only)")
    before = suspect.queries
    try:
        outputs = [suspect.predict(key.triggers[i:i + _QUERY_BATCH])
                   for i in range(0, key.n, _QUERY_BATCH)]
    except RuntimeError as e:  # torch's shape errors: the suspect takes other inputs
        reason = (f"the suspect cannot take this key's inputs of shape {list(key.input_shape)} "
                  f"({str(e).splitlines()[0][:200]})")
        return replace(TestResult.not_applicable(NAME, reason), queries=suspect.queries - before)
    queries = suspect.queries - before
    shapes = [tuple(o.shape) for o in outputs]
    if any(len(s) != 2 for s in shapes) or sum(s[0] for s in shapes) != key.n:
        reason = (f"the suspect returned outputs of shape {shapes} for {key.n} triggers; "
                  "expected one row of class scores per input")
        return replace(TestResult.not_applicable(NAME, reason), queries=queries)
    if any(s[1] != key.classes for s in shapes):
        reason = (f"the suspect scores {shapes[0][1]} classes and this key labels "
                  f"{key.classes}: it is for another task")
        return replace(TestResult.not_applicable(NAME, reason), queries=queries)
    pred = torch.cat(outputs).argmax(dim=1)  # (n,)
    k, _, log10_p = p_value(pred, key)
    noise = key.variant == KEYED_NOISE
    return TestResult.from_log10_p(
        NAME, statistic=k, n=key.n, log10_p=log10_p, null=NULL_EXACT if noise else NULL_SCREENED,
        queries=queries, claim=CLAIM,
        details={"matches": k, "triggers": key.n, "trigger_accuracy": k / key.n,
                 "p0": 1.0 / key.classes, "classes": key.classes, "variant": key.variant,
                 "owner_chosen_inputs": key.owner_chosen_inputs,
                 "assumption": ASSUMPTION_KEYED_NOISE if noise else ASSUMPTION_ADVERSARIAL})


def p_value(pred: torch.Tensor, key: Key) -> tuple[int, int, float]:
    """The exact test on the first q = len(pred) triggers, from the classes predicted for them.

    Args:
        pred: (q,) int64 predicted classes of triggers 0..q-1, q <= n.

    Returns:
        (k, q, log10 P[Binomial(q, 1/C) >= k]), k the predictions equal to their label.

    Example:
        >>> from verifier.schemes.trigger_set import Params, generate_key
        >>> k = generate_key(Params(n=3, variant="keyed_noise", classes=10), seed=1)
        >>> p_value(k.labels, k)[:2]
        (3, 3)
    """
    q = int(pred.shape[0])
    if not 0 < q <= key.n:
        raise TriggerSetError(f"{q} predictions for a key of {key.n} triggers")
    k = int((pred == key.labels[:q]).sum())
    return k, q, log10_binom_sf(k, q, 1.0 / key.classes)
