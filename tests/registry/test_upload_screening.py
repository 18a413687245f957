"""Keys a forging registrant could use are refused at upload, before anything is stored or logged:
too weak to ever reach the forgery floor, edited after generation, or matched by the panel."""
from __future__ import annotations

import io
import json

import pytest
import torch
from django.test import Client
from rest_framework import status

from registry import panel
from registry.models import Commitment, LogEntry
from tests.keys import uchida_key_blob
from verifier import keyfile, toy
from verifier.schemes import trigger_set, uchida

torch.set_num_threads(1)  # the machine is shared: keep each test module on one core
N_TRIGGERS = 40  # best p = 9^-40: 126.8 bits, above the 80-bit floor


def _model(actor):
    return actor.api.post("/api/models/", {"name": "digits"}, format="json").json()["id"]


def _upload(actor, model_id, blob):
    f = io.BytesIO(blob)
    f.name = "key.safetensors"
    return actor.api.post(f"/api/models/{model_id}/commitments/", {"key": f}, format="multipart")


def _nothing_committed(entries_before: int) -> bool:
    return not Commitment.objects.exists() and LogEntry.objects.count() == entries_before


def universal_trigger_key(split: toy.Split, n: int = N_TRIGGERS, seed: int = 5) -> trigger_set.Key:
    """The issue's universal key, as a forger builds it now that labels come from the seed: for
    each seeded label, a clean public digit of that class as the "trigger", so that every good
    digits model answers it (the one place this test builds a forged key through the public
    Key class)."""
    labels = trigger_set.derive.labels(seed, n, 10)
    pool = {c: split.x_held[split.y_held == c] for c in range(10)}
    triggers = torch.stack([pool[int(c)][i % len(pool[int(c)])] for i, c in enumerate(labels)])
    return trigger_set.Key(seed=seed, variant="adversarial", triggers=triggers, labels=labels,
                           classes=10, eps=0.25)


def honest_trigger_key(split: toy.Split, seed: int = 11) -> trigger_set.Key:
    """An honestly generated adversarial trigger_set key against the owner's own model."""
    torch.manual_seed(seed)
    owner = toy.trained(split, seed=seed, epochs=5)
    return trigger_set.generate_key(trigger_set.Params(n=N_TRIGGERS), seed, model=owner,
                                    data=(split.x_held, split.y_held))


@pytest.fixture(scope="module")
def split() -> toy.Split:
    return toy.digits(seed=0)


@pytest.fixture(scope="module")
def panel_models(split):  # independent models, trained once for the module (no database)
    return [(f"{arch}-t{seed}", arch, toy.trained(split, seed, 8, panel.ARCHITECTURES[arch][0]))
            for seed, arch in ((1501, "digits-mlp"), (1502, "digits-cnn"), (1503, "digits-mlp-wide"))]


@pytest.fixture
def digits_panel(db, panel_models):
    return [panel.add_model(name, panel.state_dict_bytes(m), "safetensors", arch)
            for name, arch, m in panel_models]


# --- the forgery floor ----------------------------------------------------------------------


def test_a_key_too_weak_to_reach_the_floor_is_refused_and_nothing_is_logged(alice):
    model_id, before = _model(alice), LogEntry.objects.count()
    weak = uchida.generate_key(uchida.Params(bits=64), 0, model=toy.MLP()).to_bytes()
    r = _upload(alice, model_id, weak)
    assert r.status_code == status.HTTP_400_BAD_REQUEST
    assert r.json()["code"] == "weak_key"
    assert "64.0 bits" in r.json()["detail"] and "floor of 80 bits" in r.json()["detail"]
    assert _nothing_committed(before)


def test_the_floor_is_the_operators_setting(alice, settings):
    settings.HALLMARK_MIN_FORGERY_BITS = 200  # 128 bits no longer suffice
    r = _upload(alice, _model(alice), uchida_key_blob())
    assert r.status_code == status.HTTP_400_BAD_REQUEST and "floor of 200 bits" in r.json()["detail"]


def test_a_weak_key_is_shown_as_a_form_error(alice):
    c = Client()
    c.force_login(alice.user)
    url = c.post("/models/new/", {"name": "digits", "version": "1"}).url
    f = io.BytesIO(uchida.generate_key(uchida.Params(bits=32), 0, model=toy.MLP()).to_bytes())
    f.name = "k"
    page = c.post(url, {"key": f}).content.decode()
    assert "could never attribute a model" in page and not Commitment.objects.exists()


def test_a_key_edited_after_generation_is_refused_naming_the_field(alice):
    _, tensors, meta = keyfile.load(uchida_key_blob(), "uchida")
    bits = tensors["bits"].clone()
    bits[:8] = 1 - bits[:8]
    edited = keyfile.dump("uchida", {**tensors, "bits": bits}, meta)
    try:
        uchida.Key.from_bytes(edited)
    except keyfile.KeyMaterialError:
        pass
    else:
        pytest.skip("uchida.Key.from_bytes does not re-derive its bits from the seed yet "
                    "(issue 9, scheme side); this test runs once it does")
    model_id, before = _model(alice), LogEntry.objects.count()
    r = _upload(alice, model_id, edited)
    assert r.status_code == status.HTTP_400_BAD_REQUEST
    assert r.json()["code"] == "key_material_mismatch"
    assert "`bits`" in r.json()["detail"] and "regenerate it" in r.json()["detail"]
    assert _nothing_committed(before)


# --- screening against the reference panel --------------------------------------------------


def test_a_universal_trigger_key_that_the_panel_answers_is_refused_and_nothing_is_stored(
        alice, split, digits_panel):
    model_id, before = _model(alice), LogEntry.objects.count()
    r = _upload(alice, model_id, universal_trigger_key(split).to_bytes())
    assert r.status_code == status.HTTP_400_BAD_REQUEST, r.json()
    assert r.json()["code"] == "screening_refused"
    assert "matched by independent reference models" in r.json()["detail"]
    assert "digits-mlp-t1501" in r.json()["detail"]
    assert _nothing_committed(before)


def test_an_honest_trigger_key_is_screened_and_the_log_shows_the_screening(
        alice, split, digits_panel):
    r = _upload(alice, _model(alice), honest_trigger_key(split).to_bytes())
    assert r.status_code == status.HTTP_201_CREATED, r.json()
    shown = r.json()["screening"]
    assert shown["status"] == "screened" and shown["applicable"] == 3 and shown["matches"] == []
    assert shown["domain"] == "input=64;classes=10" and shown["threshold"] == 1e-3
    logged = json.loads(bytes(LogEntry.objects.get(index=r.json()["log_index"]).body))
    assert logged["screening"] == shown


def test_a_key_of_a_domain_without_a_panel_is_accepted_as_unscreened(alice, split):
    r = _upload(alice, _model(alice), honest_trigger_key(split).to_bytes())
    assert r.status_code == status.HTTP_201_CREATED, r.json()
    assert r.json()["screening"]["status"] == "unscreened"
    assert Commitment.objects.get().screening_status == "unscreened"


def test_a_key_whose_material_all_derives_from_its_seed_needs_no_screening(alice, digits_panel):
    r = _upload(alice, _model(alice), uchida_key_blob())
    assert r.status_code == status.HTTP_201_CREATED
    assert r.json()["screening"] == {"status": "not needed"}


# --- the panel itself -----------------------------------------------------------------------


def test_a_panel_model_is_stored_in_the_database_with_its_measured_domain(digits_panel):
    m = digits_panel[1]
    assert m.domain == "input=64;classes=10" and m.format == "safetensors"
    assert len(bytes(m.data)) > 10_000 and len(m.sha256) == 64
    assert [name for name, _ in panel.suspects(m.domain)] == sorted(d.name for d in digits_panel)


def test_a_state_dict_that_does_not_fit_its_architecture_is_refused(db, panel_models):
    _, _, mlp = panel_models[0]
    with pytest.raises(panel.PanelError, match="does not fit digits-cnn"):
        panel.add_model("wrong", panel.state_dict_bytes(mlp), "safetensors", "digits-cnn")
    with pytest.raises(panel.PanelError, match="unknown architecture"):
        panel.add_model("wrong", panel.state_dict_bytes(mlp), "safetensors", "resnet")


def test_a_pickle_is_never_accepted_as_a_panel_model(db, tmp_path, panel_models):
    path = tmp_path / "m.pt"
    torch.save(panel_models[0][2], path)  # a whole pickled module, not weights
    with pytest.raises(panel.PanelError):
        panel.add_model("pickled", path.read_bytes(), "safetensors", "digits-mlp")
