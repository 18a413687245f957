"""`output_signature`: keyed lattice signatures in logit gaps, through the scheme contract."""
import math
import warnings

import pytest
import torch

from verifier import keyfile, schemes, toy
from verifier.evaluation import attacks
from verifier.schemes import output_signature as osig
from verifier.suspect import Suspect

torch.set_num_threads(1)  # the machine is shared: keep each test module on one core


@pytest.fixture(scope="module")
def split():
    return toy.digits()


@pytest.fixture(scope="module")
def model(split):
    return toy.trained(split, 0, epochs=8)


@pytest.fixture(scope="module")
def key():
    return osig.generate_key(osig.Params(), seed=21)


@pytest.fixture(scope="module")
def wrapped(model, key):
    return osig.embed(model, key)


def test_it_is_registered_under_its_name_with_the_contract():
    s = schemes.get("output_signature")
    assert (s.NAME, s.ACCESS) == ("output_signature", "black-box")
    assert "wrapped copy" in s.CLAIM and "without the wrapper" in s.CLAIM


def test_it_detects_the_wrapped_model_with_p_below_1e_9_through_predict_only(wrapped, key):
    suspect = Suspect.from_predict(wrapped)
    r = osig.test(suspect, key)
    assert r.applicable and r.null == "exact"
    assert r.p_value < 1e-9
    assert r.statistic == r.n == key.params.queries * (key.params.classes - 2)
    assert r.queries == suspect.queries == key.params.queries
    assert r.details["queries_for_1e-6"] <= 3


@torch.no_grad()
def test_it_never_changes_the_top_two_classes_and_grows_other_gaps_by_less_than_e_delta(
        split, model, wrapped, key):
    x = torch.cat([split.x_test, torch.rand(500, 64, generator=torch.Generator().manual_seed(0))])
    plain, signed = model(x), wrapped(x)
    assert torch.equal(plain.argmax(dim=1), signed.argmax(dim=1))
    top2 = plain.topk(2, dim=1).indices
    assert torch.equal(plain.gather(1, top2), signed.gather(1, top2))  # top and runner-up kept
    diff = (plain - signed).double()
    gap = plain.max(dim=1, keepdim=True).values.double() - plain.double()
    assert (diff >= 0).all()  # the others only go down ...
    assert (diff <= math.expm1(key.params.delta) * gap + 1e-5).all()  # ... by < (e^delta-1) gap
    assert toy.accuracy(wrapped, split.x_test, split.y_test) == \
        toy.accuracy(model, split.x_test, split.y_test)


def test_it_survives_log_probabilities_because_gaps_are_shift_invariant(wrapped, key):
    r = osig.test(Suspect.from_predict(lambda x: torch.log_softmax(wrapped(x), dim=1)), key)
    assert r.p_value < 1e-9


def test_weights_re_served_without_the_wrapper_are_not_detected_as_the_claim_says(model, key):
    r = osig.test(Suspect.from_module(model), key)
    assert r.p_value > 1e-4


def test_rounding_the_outputs_to_integers_removes_it(wrapped, key):
    r = osig.test(Suspect.from_predict(lambda x: wrapped(x).round()), key)
    assert r.p_value > 1e-4


@pytest.mark.parametrize("serve", [
    "probabilities", "log-probabilities", "probabilities at temperature 3",
    "logits at temperature 0.5", "1.7 x logits - 4.2", "logits x 1.001", "logits + 1000",
    "fp16 logits", "fp16 probabilities", "fp16 log-probabilities",
    "fp16 probabilities at temperature 10", "fp16 logits cast back to float32",
])
def test_it_survives_what_an_api_may_serve_instead_of_logits(wrapped, key, serve):
    # issue 11: ratios of gaps are invariant under positive affine maps of the logits, a log
    # undoes a softmax, and fp16 outputs keep the pairs their precision resolves
    transforms = {
        "probabilities": lambda y: torch.softmax(y, dim=1),
        "log-probabilities": lambda y: torch.log_softmax(y, dim=1),
        "probabilities at temperature 3": lambda y: torch.softmax(y / 3, dim=1),
        "logits at temperature 0.5": lambda y: y / 0.5,
        "1.7 x logits - 4.2": lambda y: 1.7 * y - 4.2,
        "logits x 1.001": lambda y: y * 1.001,
        "logits + 1000": lambda y: y + 1000,
        "fp16 logits": lambda y: y.half(),
        "fp16 probabilities": lambda y: torch.softmax(y, dim=1).half(),
        "fp16 log-probabilities": lambda y: torch.log_softmax(y, dim=1).half(),
        "fp16 probabilities at temperature 10": lambda y: torch.softmax(y / 10, dim=1).half(),
        "fp16 logits cast back to float32": lambda y: y.half().float(),
    }
    r = osig.test(Suspect.from_predict(lambda x: transforms[serve](wrapped(x))), key)
    assert r.null == "exact" and r.n >= key.params.queries * 4
    assert r.statistic == r.n and r.log10_p < -24  # beyond the forgery floor, every bit right


@pytest.mark.parametrize("serve", ["fp16 probabilities", "probabilities at temperature 3"])
def test_the_null_stays_exact_for_an_independent_model_served_the_same_way(model, serve):
    def predict(x):
        y = model(x)
        return torch.softmax(y, dim=1).half() if serve.startswith("fp16") else \
            torch.softmax(y / 3, dim=1)

    z = []
    for seed in range(150):
        r = osig.test(Suspect.from_predict(predict), osig.generate_key(osig.Params(), seed=seed))
        z.append((r.statistic - r.n / 2) / math.sqrt(r.n / 4))
    mean = sum(z) / len(z)
    sd = math.sqrt(sum((v - mean) ** 2 for v in z) / (len(z) - 1))
    assert abs(mean) < 0.3 and 0.8 < sd < 1.25


def test_fine_tuning_the_model_inside_the_wrapper_keeps_the_signature(split, wrapped, key):
    tuned = attacks.finetune(wrapped, split, epochs=1)  # gradients pass through the wrapper
    assert not torch.equal(tuned.model.fc1.weight, wrapped.model.fc1.weight)
    assert osig.test(Suspect.from_module(tuned), key).p_value < 1e-9


def test_independent_models_get_p_values_that_are_not_small(split):
    log10_ps = []
    for m_seed in range(2):
        m = toy.trained(split, 100 + m_seed, epochs=3)
        for k_seed in range(20):
            k = osig.generate_key(osig.Params(), seed=1000 + 20 * m_seed + k_seed)
            log10_ps.append(osig.test(Suspect.from_module(m), k).log10_p)
    assert min(log10_ps) > -4  # 40 exact p-values: P[min < 1e-4] < 0.004
    assert sum(p > -math.log10(2) for p in log10_ps) >= 10


@pytest.mark.parametrize("outputs", ["on the lattice", "constant"])
def test_the_null_stays_exact_for_outputs_built_to_fool_a_naive_decoder(model, outputs):
    # logits snapped to multiples of delta always decode to bit 0, and constant logits to one
    # fixed bit: the expected bits are keyed fair coins, so matches ~ Bin(n, 1/2) regardless
    def predict(x):
        if outputs == "constant":
            return torch.arange(10.0).expand(len(x), 10) * 0.37
        return (model(x) / 1e-3).round() * 1e-3

    z = []
    for seed in range(150):
        r = osig.test(Suspect.from_predict(predict), osig.generate_key(osig.Params(), seed=seed))
        z.append((r.statistic - r.n / 2) / math.sqrt(r.n / 4))
    mean = sum(z) / len(z)
    sd = math.sqrt(sum((v - mean) ** 2 for v in z) / (len(z) - 1))
    assert abs(mean) < 0.3 and 0.8 < sd < 1.25


def test_queries_quantize_exactly_to_gf2_independent_parity_vectors(key):
    p = key.params
    q = key.queries().view(p.queries, -1).double()
    u = q * 2 ** p.scale_bits - 0.5
    assert torch.equal(u, u.round())  # the wrapper's floor recovers the integers exactly
    rows = [(1 << 64) | sum((int(v) & 1) << i for i, v in enumerate(r)) for r in u.tolist()]
    basis = []
    for row in rows:  # Gaussian elimination over GF(2): every row must be independent
        for b in basis:
            row = min(row, row ^ b)
        assert row != 0
        basis.append(row)
    assert ((q >= p.input_low) & (q < p.input_high)).all()


def test_the_exported_onnx_model_still_carries_the_signature(split, wrapped, key, tmp_path):
    import onnxruntime as ort

    path = tmp_path / "signed.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapped.eval(), (split.x_test[:2],), str(path), dynamo=True,
                          dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def predict(x):
        return torch.from_numpy(session.run(None, {name: x.numpy()})[0])

    r = osig.test(Suspect.from_predict(predict), key)
    assert r.p_value < 1e-9 and r.statistic == r.n
    with torch.no_grad():
        assert torch.equal(predict(split.x_test).argmax(dim=1), wrapped(split.x_test).argmax(dim=1))


def test_key_bytes_are_deterministic_and_round_trip_to_the_same_results(wrapped, key):
    blob = key.to_bytes()
    assert blob == osig.generate_key(osig.Params(), seed=21).to_bytes()
    again = osig.Key.from_bytes(blob)
    assert again.to_bytes() == blob and schemes.load_key(blob).to_bytes() == blob
    a = osig.test(Suspect.from_module(wrapped), key)
    b = osig.test(Suspect.from_module(wrapped), again)
    assert (a.statistic, a.n, a.log10_p) == (b.statistic, b.n, b.log10_p)


def test_public_params_reveal_no_secret(key):
    public = key.public_params()
    assert public["queries"] == key.params.queries and public["input_shape"] == [64]
    assert "secret" not in public and key.secret.hex() not in repr(public)


def test_it_is_not_applicable_to_weights_only_or_to_another_number_of_classes(wrapped, key):
    r = osig.test(Suspect.from_weights(wrapped.state_dict()), key)
    assert not r.applicable and "only weights" in r.details["reason"]
    r = osig.test(Suspect.from_predict(lambda x: wrapped(x)[:, :5]), key)
    assert not r.applicable and "(48, 10)" in r.details["reason"]


def test_non_finite_outputs_count_as_mismatches(wrapped, key):
    def predict(x):
        y = wrapped(x).clone()
        y[::2] = float("nan")
        return y

    r = osig.test(Suspect.from_predict(predict), key)
    assert r.n == key.params.queries * 10 // 2 + key.params.queries * 8 // 2
    assert r.statistic == key.params.queries * 8 // 2


def test_it_rejects_bad_params():
    with pytest.raises(osig.OutputSignatureError, match="queries must lie in"):
        osig.Params(input_shape=(4,), queries=6)
    with pytest.raises(osig.OutputSignatureError, match="overflow exact float64"):
        osig.Params(input_shape=(3, 224, 224), hash_bits=24, queries=8)
    with pytest.raises(osig.OutputSignatureError, match="delta"):
        osig.Params(delta=0.0)
    with pytest.raises(osig.OutputSignatureError, match="quantization steps"):
        osig.Params(input_low=0.0, input_high=0.001)
    with pytest.raises(osig.OutputSignatureError, match="int or bytes"):
        osig.generate_key(osig.Params(), seed="x")


def test_it_refuses_to_wrap_a_model_that_does_not_fit_the_key(key):
    with pytest.raises(osig.OutputSignatureError, match="classes=3"):
        osig.embed(torch.nn.Linear(64, 3), key)
    with pytest.raises(osig.OutputSignatureError, match="cannot take inputs"):
        osig.embed(torch.nn.Linear(10, 10), key)
    with pytest.raises(osig.OutputSignatureError, match="nn.Module"):
        osig.embed(lambda x: x, key)


def test_it_rejects_key_blobs_of_other_schemes_or_with_a_short_secret(key):
    with pytest.raises(keyfile.KeyFormatError, match="expected `output_signature`"):
        osig.Key.from_bytes(keyfile.dump("lsb", {"x": torch.zeros(1)}, {}))
    _, _, meta = keyfile.load(key.to_bytes())
    with pytest.raises(keyfile.KeyFormatError, match="secret of 3 bytes"):
        osig.Key.from_bytes(keyfile.dump(
            "output_signature", {"secret": torch.zeros(3, dtype=torch.uint8)}, meta))


# --------------------------------------------------------------------------- forgery (issue 9)

@pytest.mark.parametrize("field", ["hash_a", "queries", "bits"])
def test_a_key_carrying_material_of_its_own_is_refused_naming_it(key, field):
    # every hash coefficient, query and bit is derived from the secret: a blob that stores its
    # own copy could only be substituting chosen material, so it is refused, not ignored
    _, tensors, meta = keyfile.load(key.to_bytes())
    tensors[field] = torch.zeros(4)
    with pytest.raises(keyfile.KeyMaterialError, match=f"`{field}`") as e:
        osig.Key.from_bytes(keyfile.dump("output_signature", tensors, meta))
    assert e.value.field == field and e.value.scheme == "output_signature"


def test_the_hash_key_and_queries_are_functions_of_the_secret_alone(key):
    again = osig.Key.from_bytes(key.to_bytes())
    assert all(torch.equal(a, b) for a, b in zip(again.hash_key(), key.hash_key(), strict=True))
    assert torch.equal(again.queries(), key.queries())
    other = osig.Key(key.params, bytes(a ^ 1 for a in key.secret))  # a forger's only freedom
    assert not torch.equal(other.queries(), key.queries())
    assert not torch.equal(other.hash_key()[0], key.hash_key()[0])


def test_best_log10_p_is_the_p_value_of_a_perfect_match(wrapped, key):
    r = osig.test(Suspect.from_module(wrapped), key)
    assert r.statistic == r.n == key.params.queries * (key.params.classes - 2)
    assert r.log10_p == pytest.approx(key.best_log10_p())


def test_a_class_served_as_impossible_carries_no_bit_but_the_row_still_reads(wrapped, key):
    def predict(x):
        y = torch.log_softmax(wrapped(x), dim=1)
        # each row's least likely class as -inf: what fp16 log-probabilities do to tiny classes
        return y.scatter(1, y.argmin(dim=1, keepdim=True), float("-inf"))

    r = osig.test(Suspect.from_predict(predict), key)
    assert r.statistic == r.n and r.log10_p < -24
