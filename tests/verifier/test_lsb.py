"""`lsb`: keyed LSB signatures in float32 weights, through the scheme contract."""
import copy
import math

import pytest
import torch

from verifier import keyfile, schemes, toy
from verifier.evaluation import attacks
from verifier.schemes import lsb
from verifier.suspect import Suspect

torch.set_num_threads(1)  # the machine is shared: keep each test module on one core


@pytest.fixture(scope="module")
def split():
    return toy.digits()


@pytest.fixture(scope="module")
def model(split):
    return toy.trained(split, 0, epochs=8)


@pytest.fixture(scope="module")
def key(model):
    return lsb.generate_key(lsb.Params(), seed=11, model=model)


@pytest.fixture(scope="module")
def signed(model, key):
    return lsb.embed(model, key)


def test_it_is_registered_under_its_name_with_the_contract():
    s = schemes.get("lsb")
    assert (s.NAME, s.ACCESS) == ("lsb", "white-box")
    assert "exact copy and integrity only" in s.CLAIM
    for attr in ("Params", "Key", "generate_key", "embed", "test"):
        assert hasattr(s, attr)


def test_it_detects_a_signed_copy_with_p_below_1e_9_and_a_valid_signature(signed, key):
    r = lsb.test(Suspect.from_module(signed), key)
    assert r.applicable and r.null == "exact"
    assert (r.statistic, r.n) == (key.params.n_bits, key.params.n_bits)
    assert r.p_value < 1e-9
    assert r.details["masked_digest_match"] is True
    assert r.details["signature_valid"] is True
    assert r.claim == lsb.CLAIM


def test_signing_leaves_the_input_untouched_and_accuracy_unchanged(split, model, signed, key):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lsb.embed(model, key)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert toy.accuracy(signed, split.x_test, split.y_test) == \
        toy.accuracy(model, split.x_test, split.y_test)
    changed = 0
    for name, w in model.state_dict().items():
        s = signed.state_dict()[name]
        rel = ((s - w).abs() / w.abs().clamp_min(1e-30)).max()
        assert rel < 2.0 ** (key.params.k - 23)
        changed += int((s != w).sum())
    assert 0 < changed <= key.params.positions


def test_an_unsigned_model_is_the_same_masked_identity_but_carries_no_signature(model, key):
    r = lsb.test(Suspect.from_module(model), key)
    assert r.details["masked_digest_match"] is True  # only the marked bits differ
    assert r.details["signature_valid"] is False
    assert r.p_value > 1e-4


def test_it_tells_a_tampered_copy_from_an_exact_copy(signed, key):
    weights = {k: v.clone() for k, v in signed.state_dict().items()}
    marked = {(n, i) for n, i in key.positions}
    i = next(i for i in range(weights["fc2.weight"].numel()) if ("fc2.weight", i) not in marked)
    weights["fc2.weight"].view(-1)[i] += 1e-3  # one weight, away from the signature bits
    r = lsb.test(Suspect.from_weights(weights), key)
    assert r.p_value < 1e-9  # the bits are still there ...
    assert r.details["masked_digest_match"] is False  # ... but this is not the signed model
    assert r.details["signature_valid"] is False


def test_independent_models_get_p_values_that_are_not_small(split):
    log10_ps = []
    for m_seed in range(2):
        m = toy.trained(split, 100 + m_seed, epochs=3)
        for k_seed in range(20):
            k = lsb.generate_key(lsb.Params(), seed=1000 + 10 * m_seed + k_seed, model=m)
            r = lsb.test(Suspect.from_module(m), k)
            assert r.null == "exact" and not r.details["signature_valid"]
            log10_ps.append(r.log10_p)
    assert min(log10_ps) > -4  # 40 exact p-values: P[min < 1e-4] < 0.004
    assert sum(p > -math.log10(2) for p in log10_ps) >= 10  # not piled up near zero


@pytest.mark.parametrize("low_bits_zeroed", [16, 23])
def test_the_null_stays_exact_for_weights_whose_low_bits_are_all_zero(model, low_bits_zeroed):
    # bf16-derived weights have 16 zero low bits; 23 zeroes the whole mantissa: the keyed pad
    # must still make every expected bit a fair coin, so matches ~ Bin(n, 1/2)
    ints = {k: (v.contiguous().view(torch.int32) & ~((1 << low_bits_zeroed) - 1)).view(torch.float32)
            for k, v in model.state_dict().items()}
    z = []
    for seed in range(200):
        k = lsb.generate_key(lsb.Params(), seed=seed, model=model)
        r = lsb.test(Suspect.from_weights(ints), k)
        z.append((r.statistic - r.n / 2) / math.sqrt(r.n / 4))
    mean = sum(z) / len(z)
    sd = math.sqrt(sum((v - mean) ** 2 for v in z) / (len(z) - 1))
    assert abs(mean) < 0.3 and 0.8 < sd < 1.2


@pytest.mark.parametrize("attack", ["fp16", "int8"])
def test_fp16_or_int8_conversion_erases_it_as_the_claim_says(signed, key, attack):
    stolen = (copy.deepcopy(signed).half().float() if attack == "fp16"
              else attacks.quantize_int8(signed))
    r = lsb.test(Suspect.from_module(stolen), key)
    assert r.p_value > 1e-4
    assert r.details["masked_digest_match"] is False


def test_fine_tuning_breaks_the_signature_and_the_digest(split, signed, key):
    # weights that training never reaches (those of the always-blank border pixels of the
    # digits) keep their bits, so the count may stay significant: still a copy, never "intact"
    stolen = attacks.finetune(signed, split, epochs=1)
    r = lsb.test(Suspect.from_module(stolen), key)
    assert r.statistic < r.n
    assert r.details["masked_digest_match"] is False
    assert r.details["signature_valid"] is False


def test_it_signs_named_weights_as_well_as_modules(model, key, signed):
    weights = lsb.embed(model.state_dict(), key)
    assert isinstance(weights, dict)
    assert all(torch.equal(weights[k], v) for k, v in signed.state_dict().items())


def test_key_bytes_are_deterministic_and_round_trip_to_the_same_results(model, key, signed):
    blob = key.to_bytes()
    assert blob == lsb.generate_key(lsb.Params(), seed=11, model=model).to_bytes()
    again = lsb.Key.from_bytes(blob)
    assert again.to_bytes() == blob
    assert schemes.load_key(blob).to_bytes() == blob
    a = lsb.test(Suspect.from_module(signed), key)
    b = lsb.test(Suspect.from_module(signed), again)
    assert (a.statistic, a.log10_p, a.details) == (b.statistic, b.log10_p, b.details)


def test_positions_and_payload_depend_on_the_key(model):
    a = lsb.generate_key(lsb.Params(), seed=1, model=model)
    b = lsb.generate_key(lsb.Params(), seed=2, model=model)
    overlap = len(set(a.positions) & set(b.positions))
    assert overlap < a.params.positions // 10
    assert not torch.equal(a.expected_bits(), b.expected_bits())
    assert len({n for n, _ in a.positions}) > 1  # spread over several tensors


def test_public_params_reveal_no_secret(key):
    public = key.public_params()
    assert public["n_bits"] == key.params.n_bits and public["k"] == key.params.k
    assert public["public_key"] == key.public_key.hex()
    text = repr(public)
    assert key.secret.hex() not in text and "positions" in public
    assert not any(name in text for name, _ in key.positions)


def test_it_is_not_applicable_to_a_black_box_suspect(signed, key):
    r = lsb.test(Suspect.from_predict(signed), key)
    assert not r.applicable and r.p_value == 1.0 and "black-box" in r.details["reason"]


def test_it_is_not_applicable_when_no_marked_tensor_is_present(signed, key):
    renamed = {"model." + k: v for k, v in signed.state_dict().items()}
    r = lsb.test(Suspect.from_weights(renamed), key)
    assert not r.applicable and "named differently" in r.details["reason"]


def test_a_missing_tensor_counts_as_mismatches_and_makes_the_p_value_conservative(signed, key):
    weights = dict(signed.state_dict())
    dropped = key.positions[0][0]
    del weights[dropped]
    r = lsb.test(Suspect.from_weights(weights), key)
    assert r.null == "conservative"
    assert r.details["missing_positions"] == sum(n == dropped for n, _ in key.positions)
    assert r.statistic == key.params.n_bits - key.params.k * r.details["missing_positions"]


def test_it_rejects_bad_params():
    with pytest.raises(lsb.LSBError, match="Params.k"):
        lsb.Params(k=0)
    with pytest.raises(lsb.LSBError, match="odd"):
        lsb.Params(repetitions=2)


def test_it_needs_a_model_to_generate_a_key():
    with pytest.raises(lsb.LSBError, match="model="):
        lsb.generate_key(lsb.Params(), seed=1)
    with pytest.raises(lsb.LSBError, match="int or bytes"):
        lsb.generate_key(lsb.Params(), seed=1.5, model=torch.nn.Linear(64, 64))


def test_it_refuses_models_it_cannot_sign():
    with pytest.raises(lsb.LSBError, match="no float32"):
        lsb.generate_key(lsb.Params(), seed=1, model={"w": torch.zeros(10, dtype=torch.float16)})
    with pytest.raises(lsb.LSBError, match="at least 768 float32 weights"):
        lsb.generate_key(lsb.Params(), seed=1, model=torch.nn.Linear(4, 4))


def test_it_refuses_to_sign_another_model_than_the_keyed_one(split, key):
    with pytest.raises(lsb.LSBError, match="masked digest"):
        lsb.embed(toy.trained(split, 7, epochs=1), key)
    with pytest.raises(lsb.LSBError, match="names, shapes"):
        lsb.embed(toy.CNN(), key)
    with pytest.raises(lsb.LSBError, match="nn.Module or a mapping"):
        lsb.embed([1, 2], key)


def test_it_rejects_key_blobs_of_other_schemes_or_with_a_wrong_public_key(key):
    with pytest.raises(keyfile.KeyFormatError, match="expected `lsb`"):
        lsb.Key.from_bytes(keyfile.dump("advparams", {"x": torch.zeros(1)}, {}))
    _, tensors, meta = keyfile.load(key.to_bytes())
    meta["public_key"] = "00" * 32
    with pytest.raises(keyfile.KeyMaterialError, match="public_key"):
        lsb.Key.from_bytes(keyfile.dump("lsb", tensors, meta))
    del meta["layout"]
    with pytest.raises(keyfile.KeyFormatError, match="malformed lsb key"):
        lsb.Key.from_bytes(keyfile.dump("lsb", tensors, meta))


# --------------------------------------------------------------------------- forgery (issue 9)

def _blob_with(key, **changes):
    _, tensors, meta = keyfile.load(key.to_bytes())
    for name, change in changes.items():
        if name in tensors:
            tensors[name] = change(tensors[name].clone())
        else:
            meta[name] = change(meta[name])
    return keyfile.dump("lsb", tensors, meta)


@pytest.mark.parametrize(("changes", "field"), [
    (dict(position_index=lambda t: t.index_put_((torch.tensor(0),), t[0] ^ 1)), "positions"),
    (dict(position_tensor=lambda t: t.index_put_((torch.tensor(5),), (t[5] + 1) % 6)),
     "positions"),
    (dict(public_key=lambda v: v[::-1]), "public_key"),
])
def test_a_key_with_keyed_material_altered_after_generation_is_refused_naming_it(
        key, changes, field):
    with pytest.raises(keyfile.KeyMaterialError, match=f"`{field}`") as e:
        lsb.Key.from_bytes(_blob_with(key, **changes))
    assert e.value.field == field and e.value.scheme == "lsb"


def test_another_secret_gives_other_positions_so_a_swapped_secret_is_refused(key):
    with pytest.raises(keyfile.KeyMaterialError, match="`positions`"):
        lsb.Key.from_bytes(_blob_with(key, secret=lambda t: t ^ 1))


def _forged_for(victim, seed):
    """The issue's attack: an lsb key whose positions are picked where a model already matches."""
    weights = {k: v.contiguous() for k, v in victim.state_dict().items()}
    params = lsb.Params()
    layout = tuple((n, tuple(weights[n].shape)) for n in sorted(weights))
    digest = bytes(32)  # any digest: the forger only wants the bits to line up
    secret = bytes(range(seed, seed + 32))
    template = lsb.Key(params, secret, layout, (), digest)
    wanted = template.expected_bits().view(-1, params.k).to(torch.int32)
    wanted = (wanted << torch.arange(params.k, dtype=torch.int32)).sum(dim=1).tolist()
    free = {}  # low k bits -> positions of the model holding them
    for name, _ in layout:
        for i, v in enumerate(weights[name].view(torch.int32).view(-1).tolist()):
            free.setdefault(v & ((1 << params.k) - 1), []).append((name, i))
    positions = tuple(free[v].pop() for v in wanted)
    return lsb.Key(params, secret, layout, positions, digest)


def test_a_key_written_to_match_a_given_model_is_refused_and_never_attributes(split):
    victim = toy.trained(split, 31, epochs=2)
    forged = _forged_for(victim, 3)
    r = lsb.test(Suspect.from_module(victim), forged)  # used in memory, bypassing from_bytes
    assert r.log10_p < -400  # the forger's bits do line up ...
    assert r.may_attribute is False and not r.details["signature_valid"]  # ... but name nobody
    assert "integrity only" in r.details["evidence"] and "integrity only" in r.claim
    with pytest.raises(keyfile.KeyMaterialError, match="`positions`"):
        lsb.Key.from_bytes(forged.to_bytes())  # and the registry never accepts the key


def test_only_a_valid_owner_signature_attributes(split, model, key, signed):
    assert lsb.test(Suspect.from_module(signed), key).may_attribute is True
    unsigned = lsb.test(Suspect.from_module(model), key)
    stolen = lsb.test(Suspect.from_module(attacks.finetune(signed, split, epochs=1)), key)
    tampered = {k: v.clone() for k, v in signed.state_dict().items()}
    tampered["fc3.bias"] += 1e-3
    edited = lsb.test(Suspect.from_weights(tampered), key)
    assert edited.log10_p < -400  # every keyed bit kept ...
    for r in (unsigned, stolen, edited):  # ... yet no signature over this digest: never names
        assert r.may_attribute is False and r.details["evidence"].startswith("integrity only")


def test_best_log10_p_is_the_p_value_of_a_perfect_match(key, signed):
    r = lsb.test(Suspect.from_module(signed), key)
    assert r.statistic == r.n and r.log10_p == pytest.approx(key.best_log10_p(), abs=1e-9)


def test_zero_weights_at_keyed_positions_are_marked_and_infinities_refused():
    w = torch.randn(64, 64)
    w.view(-1)[::2] = 0.0  # a half-pruned layer
    key = lsb.generate_key(lsb.Params(), seed=4, model={"w": w})
    signed = lsb.embed({"w": w}, key)
    r = lsb.test(Suspect.from_weights(signed), key)
    assert r.statistic == r.n and r.may_attribute
    was_zero = w == 0
    assert bool((signed["w"][was_zero] != 0).any())  # zeros at keyed positions were marked ...
    assert float(signed["w"][was_zero].abs().max()) < 2.0 ** -140  # ... as tiny subnormals
    w[:] = float("inf")
    with pytest.raises(lsb.LSBError, match="finite weights only"):
        lsb.generate_key(lsb.Params(), seed=4, model={"w": w})


def test_it_detects_a_signed_copy_read_lazily_from_a_safetensors_file(signed, key, tmp_path):
    from safetensors.torch import save_file

    from verifier.models import load_suspect

    path = tmp_path / "signed.safetensors"
    save_file({k: v.contiguous() for k, v in signed.state_dict().items()}, path)
    loaded = load_suspect(path)
    r = lsb.test(loaded.suspect, key)
    assert r.details["masked_digest_match"] is True and r.details["signature_valid"] is True
    assert r.log10_p < -9 and loaded.warnings == []
