"""What a scan needs: requirements, profiles, and batched tests equal to single-key tests."""
from __future__ import annotations

import pytest
import torch

from verifier import Suspect, scan, toy
from verifier.schemes import UnknownScheme, lsb, trigger_set, uchida
from verifier.schemes.uchida import Params

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def marked() -> tuple[torch.nn.Module, uchida.Key]:
    """A toy MLP carrying one uchida key (embedded on random batches, enough to set the bits)."""
    torch.manual_seed(0)
    m = toy.MLP()
    k = uchida.generate_key(Params(bits=128), seed=77, model=m)
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(32, 64, generator=g), torch.randint(0, 10, (32,), generator=g))
            for _ in range(8)]
    return uchida.embed(m, k, data, epochs=15, lr=3e-3), k


def _fields(r):  # type: ignore[no-untyped-def]
    return (r.applicable, r.statistic, r.n, r.log10_p, r.null, r.details, r.claim)


def test_batched_uchida_gives_exactly_the_results_of_one_key_at_a_time(marked):  # type: ignore[no-untyped-def]
    model, owner_key = marked
    other = [uchida.generate_key(Params(bits=64, layers=layers), seed=s, model=model)
             for s, layers in [(1, ()), (2, ("fc2.weight",)), (3, ("fc1.weight",)),
                               (4, ("fc2.weight",)), (5, ())]]
    invariant = uchida.generate_key(Params(bits=128, layers=("fc1.weight", "fc2.weight"),
                                           host="invariant"), seed=6, model=model)
    absent = uchida.generate_key(Params(bits=96, layers=("w",), shapes=((96, 1024),)), seed=8)
    keys = [other[0], owner_key, *other[1:], invariant, absent] * 15  # > one 64-key chunk
    suspect = Suspect.from_module(model)

    batched = uchida.test_many(suspect, keys)
    single = [uchida.test(suspect.fresh(), k) for k in keys]

    assert [_fields(r) for r in batched] == [_fields(r) for r in single]
    assert batched[1].log10_p < -20  # the owner's key is found ...
    assert all(r.log10_p > -6 for r, k in zip(batched, keys, strict=True)
               if k is not owner_key and r.applicable)  # ... and no other
    assert not batched[7].applicable and "no weight named `w`" in batched[7].details["reason"]


def test_batched_uchida_on_a_suspect_without_weights_is_not_applicable_for_every_key(marked):  # type: ignore[no-untyped-def]
    _, key = marked
    results = scan.test_batch("uchida", Suspect.from_predict(lambda x: x), [key, key])
    assert [r.applicable for r in results] == [False, False]


def test_the_generic_batch_tests_each_key_and_keeps_a_broken_key_to_itself(marked):  # type: ignore[no-untyped-def]
    model, _ = marked
    good = lsb.generate_key(lsb.Params(), seed=3, model=model)
    wrong = uchida.generate_key(Params(bits=128), seed=4, model=model)  # not an lsb key
    suspect = Suspect.from_module(model)

    out = scan.test_batch("lsb", suspect, [good, wrong, good])

    assert _fields(out[0]) == _fields(lsb.test(suspect.fresh(), good)) == _fields(out[2])
    assert isinstance(out[1], Exception)


def test_a_batch_lets_the_callers_time_limit_through(marked):  # type: ignore[no-untyped-def]
    class TimeUp(Exception):
        pass

    def predict(x: torch.Tensor) -> torch.Tensor:
        raise TimeUp

    k = trigger_set.generate_key(trigger_set.Params(n=20, variant="keyed_noise", classes=10),
                                 seed=5)
    with pytest.raises(TimeUp):
        scan.test_batch("trigger_set", Suspect.from_predict(predict), [k], reraise=(TimeUp,))
    assert isinstance(scan.test_batch("trigger_set", Suspect.from_predict(predict), [k])[0], TimeUp)


def test_an_uchida_key_requires_weights_with_each_host_shape() -> None:
    k = uchida.generate_key(Params(bits=96, layers=("a", "b"), shapes=((96, 96), (4, 1024))),
                            seed=1)
    r = scan.requirement("uchida", k.public_params())
    assert r == scan.Requirement("weights", ((96, 96), (4, 1024)))
    assert r.index_shape == "96x96"  # the largest: 9,216 weights against 4,096
    assert scan.Requirement.from_dict(r.to_dict()) == r


def test_schemes_without_shapes_require_their_access_only() -> None:
    assert scan.requirement("trigger_set", {}) == scan.Requirement("predict")
    assert scan.requirement("lsb", {"bits": 128}) == scan.Requirement("weights")
    assert scan.requirement("seal", {"shapes": {"q": [4, 4]}}) == scan.Requirement("weights")


def test_an_uchida_requirement_without_shapes_is_refused_with_the_fix() -> None:
    with pytest.raises(scan.ScanError, match=r"\"shapes\".*received \[\[0, 4\]\].*public_params"):
        scan.requirement("uchida", {"shapes": [[0, 4]]})
    with pytest.raises(scan.ScanError, match="received None"):
        scan.requirement("uchida", {})
    with pytest.raises(UnknownScheme, match="expected one of"):
        scan.requirement("nope", {})


def test_a_renamed_layer_keeps_its_model_a_candidate_and_a_missing_shape_does_not() -> None:
    k = uchida.generate_key(Params(bits=64, layers=("fc2.weight",)), seed=1, model=toy.MLP())
    r = scan.requirement("uchida", k.public_params())
    renamed = scan.profile(Suspect.from_weights({"layers.7.w": torch.zeros(96, 96)}))
    other = scan.profile(Suspect.from_weights({"fc2.weight": torch.zeros(96, 95)}))
    assert scan.satisfies(renamed, r) and not scan.satisfies(other, r)


def test_access_decides_for_keys_without_shapes() -> None:
    weights_only = scan.profile(Suspect.from_weights({"w": torch.zeros(2, 2)}))
    endpoint = scan.Profile(weights=False, predict=True)
    assert not scan.satisfies(weights_only, scan.Requirement("predict"))
    assert scan.satisfies(endpoint, scan.Requirement("predict"))
    assert not scan.satisfies(endpoint, scan.Requirement("weights"))
    assert scan.satisfies(weights_only, scan.Requirement("weights"))
    assert scan.satisfies(endpoint, scan.Requirement("any"))
    assert weights_only.to_dict() == {"weights": True, "predict": False, "shapes": ["2x2"]}


def test_a_canonical_host_key_keeps_a_dummy_widened_copy_a_candidate() -> None:
    from verifier.evaluation import attacks

    torch.manual_seed(0)
    model = toy.MLP()
    k = uchida.generate_key(Params(bits=64, host="invariant"), seed=3, model=model)
    r = scan.requirement("uchida", k.public_params())
    assert r == scan.Requirement("weights")  # no shape: hidden widths may change for free
    widened = attacks.dummy_neurons(model, 0.5)
    assert widened.fc2.weight.shape != model.fc2.weight.shape
    assert scan.satisfies(scan.profile(Suspect.from_module(widened)), r)
    assert uchida.test(Suspect.from_module(widened), k).statistic == uchida.test(
        Suspect.from_module(model), k).statistic  # the test reads the copy as the original
    mean = uchida.generate_key(Params(bits=64), seed=3, model=model)  # the plain host still
    assert not scan.satisfies(scan.profile(Suspect.from_module(widened)),  # needs its shapes
                              scan.requirement("uchida", mean.public_params()))
