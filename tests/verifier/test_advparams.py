"""`advparams`: AdvParams encryption, bit-exact decryption and the exact-copy fingerprint."""
from fractions import Fraction

import pytest
import torch
from safetensors.torch import save

from verifier import keyfile, schemes, toy
from verifier.evaluation import attacks
from verifier.schemes import advparams as ap
from verifier.schemes.advparams import material as ap_material
from verifier.suspect import Suspect

torch.set_num_threads(1)  # the machine is shared: keep each test module on one core


@pytest.fixture(scope="module")
def split():
    return toy.digits()


@pytest.fixture(scope="module")
def model(split):
    return toy.trained(split, 0, epochs=10)


@pytest.fixture(scope="module")
def encrypted(model, split):
    return ap.encrypt(model, ap.Params(), seed=5, data=(split.x_held, split.y_held))


def _bytes(module):
    return save({k: v.contiguous() for k, v in module.state_dict().items()})


def test_it_is_registered_under_its_name_with_the_contract():
    s = schemes.get("advparams")
    assert (s.NAME, s.ACCESS) == ("advparams", "white-box")
    assert "exact-copy fingerprint" in s.CLAIM


def test_it_drops_digits_mlp_accuracy_by_at_least_80_percent_touching_under_1_percent(
        split, model, encrypted):
    enc, key = encrypted
    clean = toy.accuracy(model, split.x_test, split.y_test)
    locked = toy.accuracy(enc, split.x_test, split.y_test)
    assert locked <= 0.2 * clean
    assert key.positions > 0 and key.fraction_touched() < 0.01
    assert key.stats["loss_after"] > ap.Params().loss_multiple * key.stats["loss_before"]


def test_it_drops_the_small_cnn_accuracy_by_at_least_80_percent(split):
    cnn = toy.trained(split, 1, epochs=6, arch=toy.CNN)
    enc, key = ap.encrypt(cnn, ap.Params(), seed=2, data=(split.x_held, split.y_held))
    assert toy.accuracy(enc, split.x_test, split.y_test) <= \
        0.2 * toy.accuracy(cnn, split.x_test, split.y_test)
    assert key.fraction_touched() < 0.001


def test_decryption_restores_the_model_bit_exact(model, encrypted):
    enc, key = encrypted
    plain = ap.decrypt(enc, key)
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in model.state_dict().items())
    assert _bytes(plain) == _bytes(model)
    assert _bytes(enc) != _bytes(model)


def test_it_leaves_its_input_untouched_and_writes_only_the_key_positions(model, encrypted):
    enc, key = encrypted
    differ = sum(int((a != b).sum()) for a, b in
                 zip(model.state_dict().values(), enc.state_dict().values(), strict=True))
    assert differ == key.positions
    for name, index, orig, value in key.entries():
        w = model.state_dict()[name]
        assert w.view(-1)[index].item() == orig != value == enc.state_dict()[name].view(-1)[index]
        # stealth: inside the layer's own range, checked in exact arithmetic on the stored
        # float32 values, so the check holds on any machine whatever values the search found
        low, high, beta = Fraction(float(w.min())), Fraction(float(w.max())), Fraction(0.1)
        assert low + beta * (high - low) <= Fraction(value) <= high - beta * (high - low)


def test_embed_and_generate_key_reproduce_encrypt(model, split, encrypted):
    enc, key = encrypted
    again = ap.generate_key(ap.Params(), seed=5, model=model, data=(split.x_held, split.y_held))
    assert again.to_bytes() == key.to_bytes()
    assert _bytes(ap.embed(model, again)) == _bytes(enc)
    weights = ap.embed(model.state_dict(), key)
    assert isinstance(weights, dict) and all(torch.equal(weights[k], v)
                                             for k, v in enc.state_dict().items())


def test_it_recognises_an_encrypted_copy_with_p_below_1e_9(encrypted):
    enc, key = encrypted
    r = ap.test(Suspect.from_module(enc), key)
    assert r.applicable and r.null == "conservative" and r.claim == ap.CLAIM
    assert r.p_value < 1e-9
    assert r.details["copy"] == "encrypted"
    assert r.details["matches_encrypted"] == key.positions == r.statistic
    assert r.n == key.candidates and r.log10_p == pytest.approx(key.best_log10_p())


def test_it_recognises_a_decrypted_copy_but_gives_it_no_unproven_p_value(model, encrypted):
    _, key = encrypted
    r = ap.test(Suspect.from_weights(model.state_dict()), key)
    assert r.p_value == 1.0 and r.statistic == 0  # no accusation rests on an assumption
    assert r.details["copy"] == "decrypted"
    assert r.details["log10_p_original_if_assumed"] < -9
    assert r.details["matches_original"] == r.details["generic_positions"] > 0


def test_independent_models_share_no_exact_value_and_get_p_1(split, encrypted):
    _, key = encrypted
    for seed in range(100, 110):
        r = ap.test(Suspect.from_module(toy.trained(split, seed, epochs=2)), key)
        assert r.statistic == 0 and r.p_value == 1.0 and r.details["copy"] == "none"


def test_the_encrypted_bound_holds_for_a_suspect_sharing_all_but_the_dithered_bits(encrypted):
    # an adversary who knows the positions and the greedy values, but not the keyed dither
    enc, key = encrypted
    bits = key.params.dither_bits
    guessed = {k: (v.contiguous().view(torch.int32) & ~((1 << bits) - 1)).view(torch.float32)
               for k, v in enc.state_dict().items()}
    r = ap.test(Suspect.from_weights(guessed), key)
    assert r.details["log10_p_encrypted"] > -4
    assert r.details["matches_encrypted"] <= 2


def test_zeros_never_count_as_original_values(encrypted):
    enc, key = encrypted
    zeros = {k: torch.zeros_like(v) for k, v in enc.state_dict().items()}
    r = ap.test(Suspect.from_weights(zeros), key)
    assert r.statistic == 0 and r.p_value == 1.0


def test_fine_tuning_the_encrypted_model_erases_the_fingerprint(split, encrypted):
    enc, key = encrypted
    repaired = attacks.finetune(enc, split, epochs=1, fraction=0.1)
    r = ap.test(Suspect.from_module(repaired), key)
    assert r.details["matches_encrypted"] == 0 and r.p_value > 1e-4


def test_key_bytes_are_deterministic_and_round_trip_to_the_same_results(encrypted):
    enc, key = encrypted
    blob = key.to_bytes()
    again = ap.Key.from_bytes(blob)
    assert again.to_bytes() == blob and schemes.load_key(blob).to_bytes() == blob
    a = ap.test(Suspect.from_module(enc), key)
    b = ap.test(Suspect.from_module(enc), again)
    assert (a.statistic, a.log10_p, a.details) == (b.statistic, b.log10_p, b.details)
    assert _bytes(ap.decrypt(enc, again)) == _bytes(ap.decrypt(enc, key))


def test_public_params_reveal_no_position_or_value(encrypted):
    _, key = encrypted
    public = key.public_params()
    assert public["positions"] == key.positions and 0 < public["fraction_touched"] < 0.01
    assert not any(name in repr(public) for name, _ in key.tensors)


def test_it_is_not_applicable_without_weights_or_with_other_tensor_names(encrypted):
    enc, key = encrypted
    r = ap.test(Suspect.from_predict(enc), key)
    assert not r.applicable and "black-box" in r.details["reason"]
    r = ap.test(Suspect.from_weights({"x." + k: v for k, v in enc.state_dict().items()}), key)
    assert not r.applicable and "named differently" in r.details["reason"]


def test_a_tensor_of_another_shape_matches_nothing(encrypted):
    enc, key = encrypted
    weights = dict(enc.state_dict())
    weights[key.tensors[0][0]] = torch.zeros(3)
    r = ap.test(Suspect.from_weights(weights), key)
    assert r.applicable
    assert r.details["missing_positions"] == int((key.which == 0).sum())
    assert r.statistic == key.positions - r.details["missing_positions"]


def test_it_needs_a_model_and_labelled_data(model, split):
    with pytest.raises(ap.AdvParamsError, match="model=... and data="):
        ap.generate_key(ap.Params(), seed=1, model=model)
    with pytest.raises(ap.AdvParamsError, match="pair"):
        ap.encrypt(model, ap.Params(), 1, data=split.x_held)
    with pytest.raises(ap.AdvParamsError, match="int64 labels"):
        ap.encrypt(model, ap.Params(), 1, data=(split.x_held, split.y_held.float()))
    with pytest.raises(ap.AdvParamsError, match="nn.Module"):
        ap.encrypt(model.state_dict(), ap.Params(), 1, data=(split.x_held, split.y_held))
    with pytest.raises(ap.AdvParamsError, match="int or bytes"):
        ap.encrypt(model, ap.Params(), None, data=(split.x_held, split.y_held))


def test_it_refuses_to_decrypt_or_encrypt_the_wrong_model(split, model, encrypted):
    enc, key = encrypted
    with pytest.raises(ap.AdvParamsError, match="encrypted values"):
        ap.decrypt(model, key)
    with pytest.raises(ap.AdvParamsError, match="original values"):
        ap.embed(enc, key)
    with pytest.raises(ap.AdvParamsError, match="missing or not float32"):
        ap.decrypt(toy.CNN(), key)


def test_it_rejects_bad_params():
    for bad, word in ((dict(beta=0.5), "beta"), (dict(step=0.0), "step"),
                      (dict(loss_multiple=0.5), "loss_multiple"),
                      (dict(dither_bits=0), "dither_bits"), (dict(samples=0), "samples"),
                      (dict(candidates=0), "candidates"), (dict(candidates=1 << 21), "candidates")):
        with pytest.raises(ap.AdvParamsError, match=word):
            ap.Params(**bad)


def test_it_rejects_malformed_key_blobs(encrypted):
    _, key = encrypted
    with pytest.raises(keyfile.KeyFormatError, match="expected `advparams`"):
        ap.Key.from_bytes(keyfile.dump("lsb", {"x": torch.zeros(1)}, {}))
    _, tensors, meta = keyfile.load(key.to_bytes())
    tensors["index"] = tensors["index"] + 10 ** 9
    with pytest.raises(keyfile.KeyFormatError, match="outside tensor"):
        ap.Key.from_bytes(keyfile.dump("advparams", tensors, meta))
    tensors["enc"] = tensors["enc"][:-1]
    with pytest.raises(keyfile.KeyFormatError, match="equal length"):
        ap.Key.from_bytes(keyfile.dump("advparams", tensors, meta))


def test_the_stealth_bound_holds_in_float32_for_values_at_the_edge_of_the_range():
    # a tensor whose bounds fall between float32 values: the dither must never step outside
    w = torch.linspace(-0.3, 0.3, 4096).view(64, 64)
    lo, hi = ap_material.stealth_bounds(w, 0.1)
    bound = Fraction(float(w.min())) + Fraction(0.1) * (Fraction(float(w.max())) - Fraction(float(w.min())))
    below = torch.nextafter(torch.tensor(lo), torch.tensor(-1.0)).item()  # the float32 before lo
    assert Fraction(lo) >= bound > Fraction(below)  # lo is the smallest float32 inside the bound
    for r in range(0, 1 << 20, 4099):
        v = ap_material.dithered(lo, lo, hi, r, 20)
        assert v is not None and lo <= v <= hi and ap_material.f32_bits(v) & 0xFFFFF == r


# --------------------------------------------------------------------------- forgery (issue 9)

@pytest.fixture(scope="module")
def few_candidates(model, split):
    return ap.encrypt(model, ap.Params(candidates=4096), seed=6, data=(split.x_held, split.y_held))


def _edited(key, **changes):
    _, tensors, meta = keyfile.load(key.to_bytes())
    for name, change in changes.items():
        tensors[name] = change(tensors[name].clone())
    return keyfile.dump("advparams", tensors, meta)


def test_an_honest_key_round_trips_byte_identically(few_candidates):
    _, key = few_candidates
    assert key.candidates == 4096 < key.stats["total_parameters"]
    assert ap.Key.from_bytes(key.to_bytes()).to_bytes() == key.to_bytes()


def test_a_position_that_is_not_a_keyed_candidate_is_refused(few_candidates):
    _, key = few_candidates
    w, i = int(key.which[-1]), int(key.index[-1])
    size = key.tensors[w][1][0] * key.tensors[w][1][1]
    taken = {(int(a), int(b)) for a, b in zip(key.which, key.index, strict=True)}
    # the next index in the tensor that is no candidate of this seed (most are not: 4096 of 16320)
    blob = None
    for j in range(i + 1, size):
        if (w, j) in taken:
            continue
        blob = _edited(key, index=lambda t, j=j: t.index_put_((torch.tensor(len(t) - 1),),
                                                             torch.tensor(j)))
        try:
            ap.Key.from_bytes(blob)
        except keyfile.KeyMaterialError as e:
            assert e.field == "positions" and "`positions`" in str(e)
            return
    pytest.fail("every later index was a candidate")


@pytest.mark.parametrize(("field", "change"), [
    ("dither", dict(enc=lambda t: (t.view(torch.int32) ^ 1).view(torch.float32))),
    ("positions", dict(secret=lambda t: t ^ 1)),
])
def test_a_key_with_keyed_material_altered_after_generation_is_refused_naming_it(
        few_candidates, field, change):
    _, key = few_candidates
    with pytest.raises(keyfile.KeyMaterialError, match=f"`{field}`"):
        ap.Key.from_bytes(_edited(key, **change))


def test_a_repeated_position_is_refused_since_it_would_count_twice(encrypted):
    _, key = encrypted
    twice = ap.Key(key.params, key.secret, key.tensors, key.which.repeat(2), key.index.repeat(2),
                   key.orig.repeat(2), key.enc.repeat(2), key.stats)
    with pytest.raises(keyfile.KeyFormatError, match="count twice"):
        ap.Key.from_bytes(twice.to_bytes())


def _written_to_match(victim, params, secret, dither_ok):
    """The issue's attack: a key whose 'encrypted' values are a given model's own weights."""
    tensors = {n: p.detach() for n, p in sorted(victim.named_parameters()) if p.dim() >= 2}
    layout = tuple((n, tuple(p.shape)) for n, p in tensors.items())
    cands = ap_material.draw_candidates(secret, layout, params.candidates)
    dither = ap_material.draw_dither(secret, layout, len(cands), params.dither_bits)
    mask = (1 << params.dither_bits) - 1
    rows = []
    for (t, i), r in sorted(zip(cands, dither, strict=True))[:100]:
        value = tensors[layout[t][0]].reshape(-1)[i].view(torch.int32).item()
        if dither_ok:  # keep the keyed low bits, copy only the high bits of the victim
            value = (value & ~mask) | r
        rows.append((t, i, value))
    which, index, enc = (torch.tensor(c) for c in zip(*rows, strict=True))
    enc = enc.to(torch.int32).view(torch.float32)
    return ap.Key(params, secret, layout, which.to(torch.int64), index.to(torch.int64),
                  enc.clone(), enc, {"total_parameters": 16522})


def test_a_key_written_to_match_a_given_model_is_refused_or_gets_no_p_value(split):
    victim = toy.trained(split, 41, epochs=2)
    params, secret = ap.Params(), bytes(range(32))
    free = _written_to_match(victim, params, secret, dither_ok=False)
    assert ap.test(Suspect.from_module(victim), free).statistic == 100  # matches in memory ...
    with pytest.raises(keyfile.KeyMaterialError, match="`dither`"):  # ... refused as a key
        ap.Key.from_bytes(free.to_bytes())
    keyed = _written_to_match(victim, params, secret, dither_ok=True)
    assert ap.Key.from_bytes(keyed.to_bytes()).to_bytes() == keyed.to_bytes()  # well-formed
    r = ap.test(Suspect.from_module(victim), keyed)
    assert r.statistic <= 1 and r.log10_p > -3  # the keyed low bits are what it cannot choose


def test_best_log10_p_reaches_the_forgery_floor_for_the_digits_models(encrypted):
    from verifier import forgery

    _, key = encrypted
    forgery.check_key_strength(key.best_log10_p(), "advparams")
    weak = ap.Key(ap.Params(dither_bits=4), key.secret, key.tensors, key.which, key.index,
                  key.orig, key.enc, key.stats)
    with pytest.raises(forgery.WeakKeyError, match="below the registry's floor"):
        forgery.check_key_strength(weak.best_log10_p(), "advparams")
