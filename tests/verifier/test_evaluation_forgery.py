"""The forgery evaluation's admission pipeline and red-team registry (`verifier.evaluation.forgery`):
each upload check refuses the forgery it is for, and honest keys pass."""
from __future__ import annotations

import pytest
import torch

from verifier import Suspect, keyfile, toy
from verifier.evaluation.forgery import Context, admit, red_team_case, red_team_cases
from verifier.schemes import trigger_set
from verifier.schemes.trigger_set import Params

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ctx() -> Context:
    split = toy.digits()
    panel = [(f"mlp-{s}", Suspect.from_predict(toy.trained(split, seed=800 + s, epochs=10)))
             for s in range(2)]
    victims = [("victim", toy.trained(split, seed=850, epochs=10))]
    return Context(split=split, panel=panel, victims=victims,
                   owner=toy.trained(split, seed=860, epochs=10),
                   surrogates=[toy.trained(split, seed=870, epochs=10)], quick=True)


def _case(name: str):
    return next(c for c in red_team_cases("trigger_set") if c.name == name)


@pytest.mark.parametrize(("name", "stage"), [
    ("universal_v1", "format"), ("universal_unseeded_labels", "re-derivation"),
    ("universal_seeded_clean_digits", "screening"), ("universal_class_prototypes", "screening"),
    ("edited_labels_adversarial", "re-derivation"), ("edited_labels_keyed_noise", "re-derivation"),
    ("inflated_classes", "re-derivation"), ("keyed_noise_with_stored_digits", "format"),
    ("weak_key", "floor")])
def test_each_trigger_set_forgery_is_refused_by_the_check_it_targets(ctx, name: str, stage: str) -> None:
    case = _case(name)
    a = admit(case.make(ctx), ctx.panel)
    assert (a.outcome, a.stage) == ("refused", stage) and case.expect == stage


@pytest.mark.parametrize("variant", ["adversarial", "keyed_noise"])
def test_an_honest_key_is_accepted(ctx, variant: str) -> None:
    key = trigger_set.generate_key(Params(variant=variant), seed=3, model=ctx.owner,
                                   data=(ctx.split.x_held, ctx.split.y_held))
    a = admit(key.to_bytes(), ctx.panel)
    assert a.outcome == "accepted" and a.key == key
    assert (a.screening is None) == (variant == "keyed_noise")


def test_a_blob_that_is_no_key_is_refused_as_format(ctx) -> None:
    a = admit(b"\x00" * 16, ctx.panel)
    assert (a.outcome, a.stage) == ("refused", "format") and "not a Hallmark watermark key" in a.message


def test_other_schemes_can_register_red_team_cases() -> None:
    @red_team_case("test_only_scheme", "garbage", "upload garbage", "format")
    def _garbage(ctx: Context) -> bytes:
        return keyfile.dump("test_only_scheme", {}, {})

    assert [c.name for c in red_team_cases("test_only_scheme")] == ["garbage"]
    with pytest.raises(ValueError, match="registered twice"):
        red_team_case("test_only_scheme", "garbage", "again", "format")(_garbage)
