"""What a report states about a Hub suspect: claimed vs verified digests, the union of what
the checks read, the fraction read, and the subject over all of it."""
from __future__ import annotations

from registry.hubreport import CLAIMED, VERIFIED, hub_evidence
from registry.models import FILE, HUB, Suspect
from verifier.models.ranged import subject_digest

HEADER = {"name": "model.safetensors", "size": 1000, "claimed_sha256": "c" * 64,
          "header_sha256": "h" * 64, "header_bytes": 100}


def _suspect(files: list[dict]) -> Suspect:  # type: ignore[type-arg]
    return Suspect(kind=HUB, url="hf://acme/m", hub_repo="acme/m", hub_commit="a" * 40,
                   hub_files=files)


def _read(sha: str, begin: int = 100, end: int = 300) -> dict:  # type: ignore[type-arg]
    return {"read": {"headers": {"model.safetensors": {"sha256": "h" * 64, "bytes": 100,
                                                       "size": 1000}},
                     "tensors": {"fc1.weight": {"file": "model.safetensors", "begin": begin,
                                                "end": end, "sha256": sha}}}}


def test_other_suspects_have_no_hub_evidence():
    assert hub_evidence(Suspect(kind=FILE, url="https://x/m"), []) is None


def test_range_reads_are_listed_with_the_claimed_digest_marked_and_bound_by_the_subject():
    h = hub_evidence(_suspect([HEADER]), [_read("1" * 64), {"reason": "n/a"}, None])
    assert h is not None
    assert h["files"] == [{"name": "model.safetensors", "size": 1000,
                           "claimed_sha256": "c" * 64, "claim": CLAIMED}]
    assert h["evidence"]["tensors"]["fc1.weight"]["sha256"] == "1" * 64
    assert (h["bytes_read"], h["bytes_total"], h["fraction_read"]) == (300, 1000, 0.3)
    assert h["subject_sha256"] == subject_digest(h["evidence"])
    assert "conflict" not in h
    other = hub_evidence(_suspect([HEADER]), [_read("2" * 64)])
    assert other is not None and other["subject_sha256"] != h["subject_sha256"]


def test_two_checks_that_read_different_bytes_are_a_conflict_and_bind_headers_only():
    h = hub_evidence(_suspect([HEADER]), [_read("1" * 64), _read("2" * 64)])
    assert h is not None and "differ" in h["conflict"]
    assert h["evidence"]["tensors"] == {}


def test_a_file_downloaded_whole_that_matched_its_claim_is_verified():
    whole = {"name": "model.onnx", "size": 50, "claimed_sha256": "d" * 64, "sha256": "d" * 64}
    h = hub_evidence(_suspect([whole]), [])
    assert h is not None
    assert h["files"][0]["claim"] == VERIFIED
    assert h["evidence"]["files"] == {"model.onnx": {"sha256": "d" * 64, "size": 50}}
    assert h["fraction_read"] == 1.0
