"""The removal suite: its attacks, its quick run end to end, and the curves it renders."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from verifier import toy
from verifier.evaluation import attacks, removal, report


@pytest.fixture(scope="module")
def split() -> toy.Split:
    return toy.digits()


@pytest.fixture(scope="module")
def trained(split: toy.Split) -> toy.MLP:
    torch.set_num_threads(1)
    return toy.trained(split, 0, epochs=5)


@pytest.fixture(scope="module")
def section() -> dict[str, Any]:
    torch.set_num_threads(1)
    return removal.evaluate(quick=True)


@pytest.mark.parametrize("arch", [toy.MLP, toy.CNN, toy.DeepCNN])
def test_permuting_hidden_units_keeps_the_outputs_and_moves_the_weights(arch, split) -> None:
    torch.manual_seed(0)
    model = arch()
    permuted = attacks.permute_hidden(model, fraction=1.0, seed=3)
    with torch.no_grad():
        assert torch.allclose(model(split.x_test), permuted(split.x_test), atol=1e-5)
    first, last = list(model.state_dict())[0], list(model.state_dict())[-1]
    assert not torch.equal(model.state_dict()[first], permuted.state_dict()[first])
    assert torch.equal(model.state_dict()[last], permuted.state_dict()[last])  # output bias


@pytest.mark.parametrize("arch", [toy.MLP, toy.CNN, toy.DeepCNN])
def test_rescaling_units_keeps_the_outputs_and_moves_the_weights(arch, split) -> None:
    torch.manual_seed(0)
    model = arch()
    scaled = attacks.rescale_units(model, spread=16.0, seed=3)
    with torch.no_grad():
        assert torch.allclose(model(split.x_test), scaled(split.x_test), atol=1e-4)
    first = list(model.state_dict())[0]
    ratio = (scaled.state_dict()[first].flatten(1).norm(dim=1)
             / model.state_dict()[first].flatten(1).norm(dim=1))
    assert ratio.max() / ratio.min() > 2.0


def test_unit_rewrites_refuse_a_model_that_is_not_a_plain_chain_and_name_the_fix() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    with pytest.raises(attacks.AttackError, match="pass an MLP or a plain CNN"):
        attacks.permute_hidden(model)


def test_post_processing_keeps_every_top_1_prediction(trained: toy.MLP, split: toy.Split) -> None:
    top = attacks.served(trained)(split.x_test).argmax(dim=1)
    for post in attacks.POSTPROCESS:
        assert torch.equal(attacks.served(trained, post)(split.x_test).argmax(dim=1), top), post


def test_a_distilled_student_learns_the_task_from_outputs_alone(trained: toy.MLP,
                                                                split: toy.Split) -> None:
    torch.manual_seed(5)
    student = attacks.distill(attacks.served(trained), toy.MLP(), split.x_train, epochs=10)
    agree = float((student(split.x_test).argmax(1) == trained(split.x_test).argmax(1)).float().mean())
    assert agree > 0.85


def test_renamed_weights_keep_values_under_new_names(trained: toy.MLP) -> None:
    renamed = attacks.renamed(trained)
    assert not set(renamed) & set(trained.state_dict())
    assert [t.tolist() for t in renamed.values()] == [t.tolist() for t in trained.state_dict().values()]


def test_the_quick_suite_runs_at_least_twelve_attacks_on_every_scheme(section: dict[str, Any]) -> None:
    assert set(section["schemes"]) == set(removal.TARGETS)
    for scheme, data in section["schemes"].items():
        names = [a["name"] for a in data["attacks"]]
        assert names == list(removal.ATTACKS), scheme
        measured = [a for a in data["attacks"] if a["applies"]]
        assert len(measured) >= 12, scheme
        for a in measured:
            assert a["points"], (scheme, a["name"])
            for p in a["points"]:
                assert 0.0 <= p["attacker_acc"] <= 1.0
                assert p["log10_p"] <= 0.0 and not math.isnan(p["log10_p"])
                assert p["detected"] == (p["log10_p"] <= -6.0)
        assert data["marked_log10_p"] <= -6.0, f"{scheme}: the unattacked mark is not detected"


def test_overwriting_records_both_the_owners_and_the_attackers_mark(section: dict[str, Any]) -> None:
    for scheme, data in section["schemes"].items():
        overwrite = next(a for a in data["attacks"] if a["name"] == "overwrite")
        assert all("attacker_log10_p" in p for p in overwrite["points"]), scheme


def test_function_preserving_rewrites_leave_a_black_box_mark_untouched(section: dict[str, Any]) -> None:
    marks = section["schemes"]["trigger_set-cnn"]
    for a in marks["attacks"]:
        if a["name"] in ("permute_hidden", "rescale_units"):
            assert all(p["log10_p"] == pytest.approx(marks["marked_log10_p"]) for p in a["points"])


def test_the_report_embeds_one_deterministic_curve_per_scheme(section: dict[str, Any],
                                                              tmp_path: Path) -> None:
    md = tmp_path / "quality.md"
    report.write(md, [], {"removal": section})
    first = {p.name: p.read_bytes() for p in (tmp_path / "curves").iterdir()}
    assert sorted(first) == sorted(f"{s}.svg" for s in removal.TARGETS)
    text = md.read_text()
    assert "## Removal suite" in text
    for scheme in removal.TARGETS:
        assert f"](curves/{scheme}.svg)" in text
        assert first[f"{scheme}.svg"].startswith(b"<?xml")
    report.write(md, [], {"removal": section})
    assert {p.name: p.read_bytes() for p in (tmp_path / "curves").iterdir()} == first
    assert md.read_text() == text
