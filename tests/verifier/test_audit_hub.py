"""`hallmark audit --suspect <repo folder>` for Hub reports: the subject recomputed from the
evidence, every listed digest re-read from the local copy."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from verifier.audit.hubsuspect import check_hub_digest, hub_suspect
from verifier.evidence.errors import EvidenceError
from verifier.models.ranged import RangedTensors, local_reader, read_header, subject_digest


@pytest.fixture
def repo(tmp_path):  # type: ignore[no-untyped-def]
    save_file({"fc1.weight": torch.ones(3, 4), "fc1.bias": torch.zeros(3)},
              str(tmp_path / "model.safetensors"))
    read = local_reader(tmp_path)
    t = RangedTensors([read_header("model.safetensors",
                                   (tmp_path / "model.safetensors").stat().st_size, read)], read)
    t["fc1.weight"]
    ev = t.evidence()
    return tmp_path, {"repo": "acme/m", "commit": "a" * 40, "evidence": ev}, subject_digest(ev)


def test_a_matching_local_copy_passes(repo):
    folder, hub, subject = repo
    assert "1 header(s), 1 tensor range(s)" in check_hub_digest(hub, subject, str(folder))
    assert hub_suspect(hub, str(folder)).weights["fc1.weight"].sum().item() == 12.0


def test_evidence_that_does_not_give_the_signed_subject_is_refused(repo):
    folder, hub, subject = repo
    with pytest.raises(EvidenceError, match="gives subject"):
        check_hub_digest(hub, "0" * 64, str(folder))


def test_a_local_copy_with_one_changed_tensor_is_refused(repo):
    folder, hub, subject = repo
    save_file({"fc1.weight": torch.full((3, 4), 2.0), "fc1.bias": torch.zeros(3)},
              str(folder / "model.safetensors"))
    with pytest.raises(EvidenceError, match="local copy of acme/m@aaaaaaaaaaaa differs: tensor "
                                            "fc1.weight"):
        check_hub_digest(hub, subject, str(folder))


def test_a_missing_file_is_refused_naming_it(repo, tmp_path_factory):
    _, hub, subject = repo
    with pytest.raises(EvidenceError, match="header of model.safetensors"):
        check_hub_digest(hub, subject, str(tmp_path_factory.mktemp("empty")))
