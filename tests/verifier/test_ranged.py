"""Range-read safetensors: headers validated, only the tensors asked for are read and hashed."""
from __future__ import annotations

import hashlib
import json
import struct

import pytest
import torch
from safetensors.torch import save

from verifier import Suspect
from verifier.models import ModelFormatError
from verifier.models.ranged import (
    RangedTensors,
    local_reader,
    merge_evidence,
    read_header,
    recheck,
    subject_digest,
)


class Recorder:
    """A reader over in-memory files that records every range asked for."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.reads = files, []

    def __call__(self, name: str, begin: int, end: int) -> bytes:
        self.reads.append((name, begin, end))
        return self.files[name][begin:end]


def _shards() -> dict[str, bytes]:
    return {"a.safetensors": save({"fc1.weight": torch.arange(12.0).reshape(3, 4),
                                   "fc1.bias": torch.ones(3)}),
            "b.safetensors": save({"fc2.weight": torch.full((2, 3), 7.0)})}


def _open(files: dict[str, bytes]) -> tuple[RangedTensors, Recorder]:
    read = Recorder(files)
    headers = [read_header(n, len(b), read) for n, b in sorted(files.items())]
    return RangedTensors(headers, read), read


def test_listing_names_reads_no_tensor_bytes():
    t, read = _open(_shards())
    before = list(read.reads)
    assert sorted(t) == ["fc1.bias", "fc1.weight", "fc2.weight"] and len(t) == 3
    assert "fc2.weight" in t and "nope" not in t
    assert read.reads == before  # headers only: two reads per file
    assert all(end <= 8 + struct.unpack("<Q", _shards()[n][:8])[0] for n, _, end in read.reads)


def test_it_reads_exactly_the_tensor_asked_for_and_records_its_digest():
    files = _shards()
    t, read = _open(files)
    w = t["fc2.weight"]
    assert torch.equal(w, torch.full((2, 3), 7.0))
    name, begin, end = read.reads[-1]
    assert name == "b.safetensors" and end - begin == 2 * 3 * 4
    ev = t.evidence()
    assert ev["tensors"] == {"fc2.weight": {"file": "b.safetensors", "begin": begin, "end": end,
                                            "sha256": hashlib.sha256(files[name][begin:end])
                                            .hexdigest()}}
    assert set(ev["headers"]) == {"a.safetensors", "b.safetensors"}
    assert ev["bytes_total"] == sum(len(b) for b in files.values())
    assert ev["bytes_read"] < ev["bytes_total"]


def test_a_suspect_keeps_the_lazy_mapping_so_nothing_is_read_up_front():
    t, read = _open(_shards())
    n = len(read.reads)
    s = Suspect.from_weights(t)
    assert s.weights is t and len(read.reads) == n
    assert s.fresh().weights["fc1.bias"].sum().item() == 3.0


def test_a_short_read_is_refused_naming_the_file():
    files = _shards()
    read = Recorder(files)
    header = read_header("a.safetensors", len(files["a.safetensors"]), read)
    t = RangedTensors([header], lambda n, a, b: files[n][a:b - 1])
    with pytest.raises(ModelFormatError, match="a.safetensors.*truncated or changed"):
        t["fc1.weight"]


def test_a_header_past_the_end_of_the_file_is_refused():
    blob = struct.pack("<Q", 10_000) + b"{}"
    with pytest.raises(ModelFormatError, match="past the end"):
        read_header("x.safetensors", len(blob), Recorder({"x.safetensors": blob}))


def test_a_header_whose_offsets_do_not_tile_the_file_is_refused():
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    blob = struct.pack("<Q", len(header)) + header + b"\0" * 12  # 4 bytes too many
    with pytest.raises(ModelFormatError, match="tile the buffer exactly"):
        read_header("x.safetensors", len(blob), Recorder({"x.safetensors": blob}))


def test_a_tensor_held_by_two_shards_is_refused():
    files = {"a.safetensors": save({"w": torch.ones(2)}),
             "b.safetensors": save({"w": torch.ones(2)})}
    with pytest.raises(ModelFormatError, match="in both 'a.safetensors' and 'b.safetensors'"):
        _open(files)


def test_the_subject_digest_binds_headers_and_every_tensor_read():
    files = _shards()
    t, _ = _open(files)
    headers_only = subject_digest(t.evidence())
    t["fc1.bias"]
    with_tensor = subject_digest(t.evidence())
    assert headers_only != with_tensor
    forged = t.evidence()
    forged["tensors"]["fc1.bias"]["sha256"] = "0" * 64
    assert subject_digest(forged) != with_tensor
    assert subject_digest(t.evidence()) == with_tensor  # deterministic


def test_merge_refuses_two_reads_of_one_tensor_that_differ():
    t, _ = _open(_shards())
    t["fc1.bias"]
    ev = t.evidence()
    other = json.loads(json.dumps(ev))
    other["tensors"]["fc1.bias"]["sha256"] = "f" * 64
    assert merge_evidence([ev, ev])["tensors"] == ev["tensors"]
    with pytest.raises(ModelFormatError, match="differ"):
        merge_evidence([ev, other])


def test_recheck_against_a_local_copy_finds_a_changed_tensor(tmp_path):
    files = _shards()
    for n, b in files.items():
        (tmp_path / n).write_bytes(b)
    t = RangedTensors([read_header(n, len(b), local_reader(tmp_path)) for n, b in files.items()],
                      local_reader(tmp_path))
    t["fc2.weight"]
    ev = t.evidence()
    assert recheck(ev, local_reader(tmp_path)) == []
    blob = bytearray(files["b.safetensors"])
    blob[-1] ^= 1
    (tmp_path / "b.safetensors").write_bytes(bytes(blob))
    problems = recheck(ev, local_reader(tmp_path))
    assert len(problems) == 1 and problems[0].startswith("tensor fc2.weight in b.safetensors"), problems


def test_the_local_reader_refuses_paths_outside_the_folder(tmp_path):
    with pytest.raises(ModelFormatError, match="outside"):
        local_reader(tmp_path)("../etc/passwd", 0, 8)
