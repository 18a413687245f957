"""Declared provenance of a suspect (verifier.provenance): model-signing bundles made by the
`model-signing` library (folder and single-file, valid, tampered, added file, unknown key,
garbage) and graph signatures pinned to registered owners, through `check_provenance`."""
from __future__ import annotations

import copy
import shutil
import zipfile
from pathlib import Path

import model_signing
import onnx
import pytest
import torch
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from safetensors.torch import save_file

from verifier import toy
from verifier.evidence.identity import Identity
from verifier.graphsig import sign_graph
from verifier.models import ModelFormatError
from verifier.owners.modelsig import sign_model
from verifier.owners.onnx_sign import export_torchscript
from verifier.provenance import (
    LABEL,
    PUBLIC_KEY,
    SIGNATURE,
    CandidateKey,
    absent,
    check_provenance,
    key_sha256,
)

OWNER, STRANGER = Identity.from_seed(bytes([3]) * 32), Identity.from_seed(bytes([4]) * 32)


def _ec_pair(folder: Path, name: str) -> tuple[Path, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = folder / f"{name}.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return private, key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, bytes]]:
    folder = tmp_path_factory.mktemp("keys")
    return {"publisher": _ec_pair(folder, "publisher"), "other": _ec_pair(folder, "other")}


def _onnx(path: Path) -> None:
    torch.manual_seed(0)
    export_torchscript(toy.MLP(hidden=8).eval(), (torch.zeros(2, 64),), str(path),
                       input_names=["input"], output_names=["logits"],
                       dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def _folder_signed(folder: Path, private: Path, public: bytes) -> Path:
    """The documented folder convention: model files, model.sig and model.pub.pem."""
    torch.manual_seed(0)
    save_file(toy.MLP(hidden=8).state_dict(), str(folder / "model.safetensors"))
    _onnx(folder / "model.onnx")
    (folder / PUBLIC_KEY).write_bytes(public)
    hashing = model_signing.hashing.Config().set_ignored_paths(paths=[SIGNATURE, PUBLIC_KEY])
    model_signing.signing.Config().use_elliptic_key_signer(private_key=str(private)) \
        .set_hashing_config(hashing).sign(folder, folder / SIGNATURE)
    return folder


def _zip(folder: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w") as zf:
        for p in sorted(folder.rglob("*")):
            zf.write(p, f"{folder.name}/{p.relative_to(folder)}")
    return out


@pytest.fixture
def signed_folder(tmp_path, keys) -> Path:
    folder = tmp_path / "release"
    folder.mkdir()
    return _folder_signed(folder, keys["publisher"][0], keys["publisher"][1])


def test_a_folder_signature_in_a_zip_is_valid_and_names_the_key(signed_folder, keys, tmp_path):
    section = check_provenance(_zip(signed_folder, tmp_path / "s.zip"))
    signing = section["model_signing"]
    assert signing["status"] == "valid", signing
    assert signing["key_sha256"] == key_sha256(keys["publisher"][1])
    assert signing["key_source"] == f"shipped with the suspect ({PUBLIC_KEY})"
    assert sorted(signing["signed_files"]) == ["model.onnx", "model.safetensors"]
    assert section["label"] == LABEL == "declared provenance: removable by re-export"
    assert section["affects_verdict"] is False
    assert section["graph_signature"]["status"] == "unsigned"


def test_one_changed_byte_in_a_model_file_makes_the_signature_invalid(signed_folder, tmp_path):
    weights = signed_folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    signing = check_provenance(_zip(signed_folder, tmp_path / "t.zip"))["model_signing"]
    assert signing["status"] == "invalid"
    assert "model.safetensors" in signing["detail"], signing


def test_a_file_added_after_signing_makes_the_signature_invalid(signed_folder):
    (signed_folder / "extra.json").write_text("{}")
    signing = check_provenance(signed_folder)["model_signing"]
    assert signing["status"] == "invalid" and "extra.json" in signing["detail"], signing


def test_without_the_signers_key_the_signature_is_unverified_never_valid(signed_folder, keys):
    (signed_folder / PUBLIC_KEY).write_bytes(keys["other"][1])  # someone else's key shipped
    signing = check_provenance(signed_folder)["model_signing"]
    assert signing["status"] == "unverified"
    assert signing["key_sha256"] == key_sha256(keys["publisher"][1])
    (signed_folder / PUBLIC_KEY).unlink()
    # the folder signature ignores model.pub.pem, so a key given by the caller verifies it
    given = CandidateKey(keys["publisher"][1], "named in the request")
    signing = check_provenance(signed_folder, publisher_keys=[given])["model_signing"]
    assert signing["status"] == "valid" and signing["key_source"] == "named in the request"


def test_a_single_file_signature_from_hallmark_watermark_sign_is_valid(tmp_path, keys):
    folder = tmp_path / "one"
    folder.mkdir()
    torch.manual_seed(1)
    save_file(toy.MLP(hidden=8).state_dict(), str(folder / "signed.safetensors"))
    sign_model(folder / "signed.safetensors", keys["publisher"][0], tmp_path / "signed.sig")
    shutil.copy(tmp_path / "signed.sig", folder / SIGNATURE)
    (folder / PUBLIC_KEY).write_bytes(keys["publisher"][1])
    signing = check_provenance(_zip(folder, tmp_path / "one.zip"))["model_signing"]
    assert signing["status"] == "valid", signing
    assert signing["signed_files"] == ["signed.safetensors"]
    (folder / "second.safetensors").write_bytes((folder / "signed.safetensors").read_bytes())
    signing = check_provenance(folder)["model_signing"]
    assert signing["status"] == "invalid" and "holds 2 other entries" in signing["detail"]


def test_a_bundle_that_is_not_model_signing_json_is_invalid(tmp_path):
    folder = tmp_path / "junk"
    folder.mkdir()
    save_file({"w": torch.ones(2)}, str(folder / "w.safetensors"))
    for junk in (b"\x00\xff not json", b'{"dsseEnvelope": {"payload": "!!"}}', b"[1, 2]"):
        (folder / SIGNATURE).write_bytes(junk)
        signing = check_provenance(folder)["model_signing"]
        assert signing["status"] == "invalid", junk
        assert "is not a model-signing bundle" in signing["detail"]


def test_a_single_file_or_a_folder_without_model_sig_has_no_signature(signed_folder, tmp_path):
    section = check_provenance(signed_folder / "model.safetensors")
    assert section["model_signing"]["status"] == "absent"
    assert section["graph_signature"]["status"] == "absent"
    (signed_folder / SIGNATURE).unlink()
    assert check_provenance(signed_folder)["model_signing"]["status"] == "absent"
    assert absent("an endpoint")["model_signing"]["detail"] == "an endpoint"


def test_a_graph_signature_by_a_registered_owner_is_pinned_and_names_the_owner(tmp_path):
    path = tmp_path / "m.onnx"
    _onnx(path)
    onnx.save(sign_graph(onnx.load(str(path)), OWNER), str(path))
    registered = {OWNER.keyid: OWNER.public_key}
    graph = check_provenance(path, owner_key=registered.get)["graph_signature"]
    assert (graph["status"], graph["pinned"], graph["owner_keyid"]) == (
        "intact", True, OWNER.keyid)
    graph = check_provenance(path, owner_key={}.get)["graph_signature"]  # not registered
    assert (graph["status"], graph["pinned"], graph["owner_keyid"]) == ("intact", False, None)


def test_a_changed_or_stripped_graph_signature_is_reported_with_what_changed(tmp_path):
    path = tmp_path / "m.onnx"
    _onnx(path)
    model = sign_graph(onnx.load(str(path)), STRANGER)
    model.graph.node[0].name = "renamed"
    onnx.save(model, str(path))
    graph = check_provenance(path)["graph_signature"]
    assert graph["status"] == "changed" and graph["label"] == LABEL
    assert {c["kind"] for c in graph["changes"]} >= {"node added", "node removed"}
    del model.metadata_props[:]
    onnx.save(model, str(path))
    assert check_provenance(path)["graph_signature"]["status"] == "unsigned"


def test_an_unsafe_archive_is_refused_as_the_loader_refuses_it(tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../escape.safetensors", b"x")
    with pytest.raises(ModelFormatError, match=r"\.\."):
        check_provenance(bad)


def test_only_elliptic_curve_pem_keys_have_a_model_signing_hint():
    assert key_sha256(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n") is None
    ed = OWNER.public_key
    assert key_sha256(ed) is None


def _issued(section: object):  # type: ignore[no-untyped-def]
    from tests.verifier.report_factory import ALICE, MiniRegistry, result

    reg = MiniRegistry()
    alice = reg.commit(ALICE, b"key", "2026-01-05T09:00:00Z")
    return reg.issue([(alice, result(-70.0))],
                     tamper=lambda p: p.update(provenance=copy.deepcopy(section)))


def test_the_audit_accepts_a_signed_provenance_section_beside_the_verdict(signed_folder):
    from verifier.audit import audit

    res = audit(_issued(check_provenance(signed_folder)))
    assert res.ok, res.failure


@pytest.mark.parametrize("edit,match", [
    (lambda s: s.update(affects_verdict=True), "affects_verdict must be false"),
    (lambda s: s.pop("affects_verdict"), "affects_verdict must be false"),
    (lambda s: s["model_signing"].update(status="trusted"), "model_signing.status is 'trusted'"),
    (lambda s: s["graph_signature"].update(status="ok"), "graph_signature.status is 'ok'"),
    (lambda s: s.pop("label"), "provenance.label is missing"),
])
def test_the_audit_refuses_a_provenance_section_that_could_be_read_as_a_verdict(edit, match):
    from verifier.audit import audit

    section = absent("an endpoint")
    edit(section)
    res = audit(_issued(section))
    assert not res.ok
    assert match in str(res.failure), res.failure


def test_a_folder_signed_by_hallmark_ships_its_signature_and_key_inside_and_verifies(
        tmp_path, keys):
    folder = tmp_path / "adapter"
    folder.mkdir()
    torch.manual_seed(2)
    save_file(toy.MLP(hidden=8).state_dict(), str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text('{"r": 4}')
    sign_model(folder, keys["publisher"][0], tmp_path / "adapter.sig")  # as watermark --sign
    shutil.copy(tmp_path / "adapter.sig", folder / SIGNATURE)
    (folder / PUBLIC_KEY).write_bytes(keys["publisher"][1])
    signing = check_provenance(_zip(folder, tmp_path / "adapter.zip"))["model_signing"]
    assert signing["status"] == "valid", signing
    assert sorted(signing["signed_files"]) == ["adapter_config.json", "adapter_model.safetensors"]
    (folder / "adapter_config.json").write_text('{"r": 8}')
    assert check_provenance(folder)["model_signing"]["status"] == "invalid"
