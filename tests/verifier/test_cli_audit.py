"""`hallmark audit`, `keygen`, `sign` and `open`, through verifier.cli.main."""
import base64
import json
import os
import stat

import pytest

from tests.verifier.report_factory import (
    ALICE,
    MALLORY,
    REGISTRY,
    MiniRegistry,
    result,
    standard_report,
)
from verifier.cli import main
from verifier.evidence import report as R
from verifier.evidence.commitment import commit
from verifier.evidence.dsse import PAYLOAD_TYPE_INTOTO, sign_envelope, verify_envelope
from verifier.evidence.identity import b64, read_private_key, verify_signature, write_public_key
from verifier.keyfile import dump


@pytest.fixture
def report_file(tmp_path):
    reg, report = standard_report()
    path = tmp_path / "report.json"
    path.write_bytes(R.render_report(report))
    return reg, report, path


def test_audit_prints_audit_ok_and_one_line_per_check(report_file, capsys):
    _, _, path = report_file
    assert main(["audit", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "audit OK"
    assert [line.split(":")[0].split()[-1] for line in out[1:]] == [
        "format", "key", "envelope", "signatures", "statement", "predicate", "decisions",
        "inclusion"]
    assert all(line.startswith("  ok  ") for line in out[1:])


def test_audit_fails_a_report_with_one_changed_byte(report_file, capsys):
    _, _, path = report_file
    raw = bytearray(path.read_bytes())
    pos = raw.index(b'"payload":"') + len(b'"payload":"') + 40
    raw[pos] = ord("A") if raw[pos] != ord("A") else ord("B")
    path.write_bytes(bytes(raw))
    assert main(["audit", str(path)]) == 1
    captured = capsys.readouterr()
    assert "audit OK" not in captured.out
    assert captured.err.startswith("audit FAILED: signatures: bad signature")


def test_audit_fails_a_signature_by_an_unknown_key_and_a_removed_signature(report_file, capsys):
    reg, report, path = report_file
    removed = report | {"envelope": report["envelope"] | {
        "signatures": report["envelope"]["signatures"][:1]}}
    path.write_bytes(R.render_report(removed))
    assert main(["audit", str(path)]) == 1
    assert "signature removed" in capsys.readouterr().err
    payload = base64.b64decode(report["envelope"]["payload"])
    extra = sign_envelope(payload, PAYLOAD_TYPE_INTOTO, [REGISTRY, ALICE, MALLORY])
    path.write_bytes(R.render_report(report | {"envelope": extra}))
    assert main(["audit", str(path)]) == 1
    assert "audit FAILED: signatures: unknown key" in capsys.readouterr().err


def test_audit_pins_the_registry_key_from_a_file_or_base64(report_file, tmp_path, capsys):
    _, _, path = report_file
    pub = tmp_path / "registry.pub"
    write_public_key(pub, REGISTRY.public_key)
    assert main(["audit", str(path), "--registry-key", str(pub)]) == 0
    assert main(["audit", str(path), "--registry-key", b64(MALLORY.public_key)]) == 1
    assert "not the pinned registry key" in capsys.readouterr().err
    assert main(["audit", str(path), "--registry-key", "garbage"]) == 2
    assert "not a public key" in capsys.readouterr().err


def test_audit_keeps_a_checkpoint_and_checks_the_next_report_against_it(tmp_path, capsys):
    reg = MiniRegistry()
    alice = reg.commit(ALICE, b"key", "2026-01-05T09:00:00Z")
    first = tmp_path / "first.json"
    first.write_bytes(R.render_report(reg.issue([(alice, result(-70.0))])))
    kept = tmp_path / "kept.checkpoint"
    assert main(["audit", str(first), "--save-checkpoint", str(kept)]) == 0
    assert "kept the checkpoint (size 2)" in capsys.readouterr().out
    reg.filler(3)
    second = reg.issue([(alice, result(-60.0))])
    size = reg.log.size
    second["consistency"] = R.consistency_field(2, size, reg.log.consistency_proof(2, size))
    path = tmp_path / "second.json"
    path.write_bytes(R.render_report(second))
    assert main(["audit", str(path), "--since", str(kept)]) == 0
    assert "consistency: kept checkpoint (size 2) is consistent" in capsys.readouterr().out
    # a proof file instead of the report's member
    proof = tmp_path / "proof.json"
    proof.write_text(json.dumps(second.pop("consistency")))
    path.write_bytes(R.render_report(second))
    assert main(["audit", str(path), "--since", str(kept)]) == 1
    assert main(["audit", str(path), "--since", str(kept), "--consistency", str(proof)]) == 0


def test_audit_checks_openings_given_with_reveal(tmp_path, capsys):
    reg = MiniRegistry()
    alice = reg.commit(ALICE, b"alice key", "2026-01-05T09:00:00Z")
    path = tmp_path / "report.json"
    path.write_bytes(R.render_report(reg.issue([(alice, result(-70.0))])))
    opening = tmp_path / "opening.json"
    opening.write_text(json.dumps(alice.opening))
    assert main(["audit", str(path), "--reveal", str(opening)]) == 0
    assert "opening 1: opens commitment" in capsys.readouterr().out
    opening.write_text("{not json")
    assert main(["audit", str(path), "--reveal", str(opening)]) == 2


def test_audit_refuses_unreadable_inputs_with_exit_code_2(tmp_path, capsys):
    assert main(["audit", str(tmp_path / "missing.json")]) == 2
    assert "cannot read report" in capsys.readouterr().err


def test_audit_strict_refuses_a_re_indented_report(report_file, capsys):
    _, report, path = report_file
    path.write_text(json.dumps(report, indent=2))
    assert main(["audit", str(path)]) == 0
    assert main(["audit", str(path), "--strict"]) == 1
    assert "canonical JSON form" in capsys.readouterr().err


def test_keygen_writes_a_private_key_readable_only_by_its_owner(tmp_path, capsys):
    key = tmp_path / "owner.key"
    assert main(["keygen", "--out", str(key)]) == 0
    out = capsys.readouterr().out
    identity = read_private_key(key)
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert f"keyid: {identity.keyid}" in out and b64(identity.public_key) in out
    assert json.loads((tmp_path / "owner.key.pub").read_text())["keyid"] == identity.keyid
    assert main(["keygen", "--out", str(key)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


def test_sign_signs_exactly_the_file_bytes(tmp_path, capsys):
    key = tmp_path / "owner.key"
    main(["keygen", "--out", str(key)])
    capsys.readouterr()
    doc = tmp_path / "request.json"
    doc.write_bytes(b'{"b": 1,\n "a": 2}\n')
    assert main(["sign", "--key", str(key), str(doc)]) == 0
    sig = base64.b64decode(capsys.readouterr().out.strip())
    pub = read_private_key(key).public_key
    assert verify_signature(pub, doc.read_bytes(), sig)
    assert not verify_signature(pub, b'{"a":2,"b":1}', sig)


def test_sign_can_wrap_the_bytes_in_a_dsse_envelope(tmp_path, capsys):
    key = tmp_path / "owner.key"
    main(["keygen", "--out", str(key)])
    capsys.readouterr()
    doc = tmp_path / "payload.bin"
    doc.write_bytes(b"payload")
    assert main(["sign", "--key", str(key), str(doc), "--envelope", "application/x"]) == 0
    env = json.loads(capsys.readouterr().out)
    me = read_private_key(key)
    assert verify_envelope(env, {me.keyid: me.public_key}, {me.keyid}) == b"payload"


@pytest.mark.parametrize("argv,match", [
    (["sign", "--key", "{dir}/none.key", "{dir}/doc"], "cannot read key file"),
    (["sign", "--key", "{dir}/doc", "{dir}/doc"], "not valid JSON"),
    (["sign", "--key", "{dir}/owner.key", "{dir}/none"], "cannot read"),
])
def test_sign_reports_bad_inputs_with_exit_code_2(tmp_path, capsys, argv, match):
    main(["keygen", "--out", str(tmp_path / "owner.key")])
    (tmp_path / "doc").write_text("x")
    capsys.readouterr()
    assert main([a.format(dir=tmp_path) for a in argv]) == 2
    assert match in capsys.readouterr().err


def _key_blob(tmp_path):
    import torch
    path = tmp_path / "uchida.key"
    path.write_bytes(dump("uchida", {"bits": torch.ones(8)}, {"T": 8}))
    return path


def test_open_writes_the_opening_and_prints_the_commitment(tmp_path, capsys):
    blob = _key_blob(tmp_path)
    salt = bytes(range(32))
    out = tmp_path / "opening.json"
    assert main(["open", "--key", str(blob), "--salt", b64(salt), "--scheme", "uchida",
                 "--out", str(out)]) == 0
    expected = commit("uchida", salt, blob.read_bytes())
    assert f"commitment: {expected}" in capsys.readouterr().out
    assert json.loads(out.read_text()) == {"scheme": "uchida", "salt": b64(salt),
                                           "key": b64(blob.read_bytes()), "commitment": expected}


def test_open_draws_a_new_salt_when_none_is_given(tmp_path, capsys):
    blob = _key_blob(tmp_path)
    assert main(["open", "--key", str(blob)]) == 0
    out = capsys.readouterr().out
    assert "salt: " in out and (tmp_path / "uchida.key.opening.json").exists()


@pytest.mark.parametrize("extra,match", [
    (["--scheme", "lsb"], "is a 'uchida' key"), (["--salt", "AAAA"], "--salt"),
    (["--salt", "!!"], "not base64"),
])
def test_open_rejects_a_wrong_scheme_or_salt(tmp_path, capsys, extra, match):
    blob = _key_blob(tmp_path)
    assert main(["open", "--key", str(blob), *extra]) == 2
    assert match in capsys.readouterr().err


def test_open_rejects_a_file_that_is_not_a_key(tmp_path, capsys):
    bad = tmp_path / "bad.key"
    bad.write_bytes(b"not a key")
    assert main(["open", "--key", str(bad)]) == 2
    assert "not a Hallmark watermark key" in capsys.readouterr().err
