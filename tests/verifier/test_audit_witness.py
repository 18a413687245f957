"""Witnessed reports: `hallmark audit --witness VKEY --quorum K` against a real witness, a
forked log refused by the witness and caught by the audit, priority from proofs alone."""
import copy
import hashlib

import pytest

from tests.verifier.report_factory import ALICE, ORIGIN, REGISTRY, SUSPECT, MiniRegistry, result
from verifier.audit import audit
from verifier.cli import main
from verifier.evidence import report as R
from verifier.evidence.cosignature import Witness as WitnessKey
from verifier.evidence.identity import Identity, b64, unb64
from verifier.evidence.proofbundle import parse_bundle
from verifier.witness.client import request_body
from verifier.witness.protocol import Witness
from verifier.witness.state import WitnessState

W1 = Identity.from_seed(bytes([11]) * 32)
W2 = Identity.from_seed(bytes([12]) * 32)
K1, K2 = WitnessKey("w1.test/w", W1.public_key), WitnessKey("w2.test/w", W2.public_key)


def _witness(tmp_path, ident: Identity, key: WitnessKey) -> Witness:
    return Witness(key.name, ident, {ORIGIN: [REGISTRY.public_key]},
                   WitnessState(tmp_path / f"{key.name.replace('/', '_')}.json"),
                   clock=lambda: 1_767_225_600)


def _issue(reg: MiniRegistry, first_seen: str | None = None) -> dict:
    alice = reg.commit(ALICE, b"alice key", "2026-01-05T09:00:00Z")
    reg.filler(2)
    return reg.issue([(alice, result(-70.0))], commitment_proofs=True,
                     with_priority=first_seen is not None, first_seen=first_seen)


def _note(report: dict) -> str:
    return parse_bundle(report["log"]["bundle"]).checkpoint_note


def _with_lines(report: dict, lines: str) -> dict:
    """The report with cosignature lines added to its checkpoint, in every bundle."""
    note, out = _note(report), copy.deepcopy(report)
    out["log"]["bundle"] = out["log"]["bundle"].replace(note, note + lines)
    for p in out.get("commitment_proofs", []):
        p["bundle"] = p["bundle"].replace(note, note + lines)
    return out


def _cosign(report: dict, *witnesses: Witness, old: int = 0, proof=()) -> dict:
    lines = ""
    for w in witnesses:
        answer = w.add_checkpoint(request_body(old, list(proof), _note(report)))
        assert answer.status == 200, answer.body
        lines += answer.body.decode()
    return _with_lines(report, lines)


def test_a_report_cosigned_by_a_quorum_of_trusted_witnesses_passes(tmp_path):
    report = _cosign(_issue(MiniRegistry()), _witness(tmp_path, W1, K1),
                     _witness(tmp_path, W2, K2))
    res = audit(report, registry_key=REGISTRY.public_key, witnesses=[K1, K2], quorum=2)
    assert res.ok, res.failure
    check = next(c for c in res.checks if c.name == "witnesses")
    assert "quorum 2 of 2" in check.reason and "w1.test/w at 2026-01-01T00:00:00Z" in check.reason


def test_it_fails_below_the_quorum_and_passes_at_it(tmp_path):
    report = _cosign(_issue(MiniRegistry()), _witness(tmp_path, W1, K1))
    assert audit(report, witnesses=[K1, K2], quorum=1).ok
    res = audit(report, witnesses=[K1, K2], quorum=2)
    assert res.failure.name == "witnesses" and "quorum is 2" in res.failure.reason


def test_a_report_without_cosignatures_fails_a_witness_quorum():
    res = audit(_issue(MiniRegistry()), witnesses=[K1])
    assert res.failure.name == "witnesses" and "0 valid cosignature" in res.failure.reason


def test_a_changed_cosignature_fails(tmp_path):
    report = _cosign(_issue(MiniRegistry()), _witness(tmp_path, W1, K1))
    line = _note(report).splitlines()[-1]
    name, blob = line.split(" ")[1:]
    raw = bytearray(unb64(blob))
    raw[-1] ^= 1
    bad = _with_lines(_issue(MiniRegistry()), f"\u2014 {name} {b64(bytes(raw))}\n")
    res = audit(bad, witnesses=[K1])
    assert res.failure.name == "witnesses" and "invalid cosignature" in res.failure.reason


def test_a_forked_log_is_refused_by_the_witness_and_caught_by_the_audit(tmp_path):
    witness = _witness(tmp_path, W1, K1)
    honest_reg = MiniRegistry()
    honest = _cosign(_issue(honest_reg), witness)
    size = honest_reg.log.size
    # The operator rewrites history: one entry more in front, then the same registrations.
    forked_reg = MiniRegistry()
    forked_reg.log.append(b"a rewritten first entry")
    forked = _issue(forked_reg)
    proof = forked_reg.log.consistency_proof(size)
    assert witness.add_checkpoint(request_body(size, proof, _note(forked))).status == 422
    # Shown to an auditor, the forked report has no cosignature, and a copied one fails.
    assert audit(forked, registry_key=REGISTRY.public_key).ok  # the registry's word alone
    assert audit(forked, witnesses=[K1]).failure.name == "witnesses"
    copied = _with_lines(forked, _note(honest).splitlines(keepends=True)[-1])
    res = audit(copied, witnesses=[K1])
    assert res.failure.name == "witnesses" and "invalid cosignature" in res.failure.reason
    assert audit(honest, witnesses=[K1]).ok


def test_two_checkpoints_of_one_size_with_different_roots_are_refused_with_409(tmp_path):
    witness = _witness(tmp_path, W1, K1)
    reg = MiniRegistry()
    _cosign(_issue(reg), witness)
    twin = MiniRegistry()
    twin.filler(reg.log.size)  # same size, other entries: another root
    answer = witness.add_checkpoint(request_body(reg.log.size, [], twin.checkpoint()))
    assert (answer.status, answer.body) == (409, f"{reg.log.size}\n".encode())


def test_a_shrinking_tree_is_refused_and_its_report_fails_the_quorum(tmp_path):
    witness = _witness(tmp_path, W1, K1)
    reg = MiniRegistry()
    big = _cosign(_issue(reg), witness)
    reg.filler(5)
    grown = reg.checkpoint()
    assert witness.add_checkpoint(request_body(reg.log.size - 5, reg.log.consistency_proof(
        reg.log.size - 5), grown)).status == 200
    small = MiniRegistry()
    shrunk = _issue(small)
    assert witness.add_checkpoint(request_body(reg.log.size, [], _note(shrunk))).status == 400
    assert audit(shrunk, witnesses=[K1]).failure.name == "witnesses"
    assert audit(big, witnesses=[K1]).ok


def test_priority_fails_when_a_cited_commitments_proof_is_altered():
    report = _issue(MiniRegistry(), first_seen="2026-02-01T00:00:00Z")
    ok = audit(report)
    assert ok.ok and "priority proofs" in [c.name for c in ok.checks]
    bad = copy.deepcopy(report)
    lines = bad["commitment_proofs"][0]["bundle"].split("\n")
    lines[2] = b64(bytes(32))  # the first inclusion proof hash
    bad["commitment_proofs"][0]["bundle"] = "\n".join(lines)
    res = audit(bad)
    assert res.failure.name == "commitment log" and "inclusion proof fails" in res.failure.reason


def test_an_attributed_commitment_without_its_proof_fails_and_others_may_go_without():
    reg = MiniRegistry()
    alice = reg.commit(ALICE, b"alice key", "2026-01-05T09:00:00Z")
    other = reg.commit(ALICE, b"other key", "2026-01-06T09:00:00Z")
    report = reg.issue([(alice, result(-70.0)), (other, result(-0.5))], commitment_proofs=True,
                       with_priority=True, first_seen="2026-02-01T00:00:00Z")
    proofs = report["commitment_proofs"]
    only_attributed = copy.deepcopy(report)
    only_attributed["commitment_proofs"] = [p for p in proofs if p["digest"] == alice.digest]
    assert audit(only_attributed).ok
    without = copy.deepcopy(report)
    without["commitment_proofs"] = [p for p in proofs if p["digest"] == other.digest]
    res = audit(without)
    assert res.failure.name == "commitment log" and "has no log proof" in res.failure.reason


def test_the_cli_requires_the_witness_quorum(tmp_path, capsys):
    report = _cosign(_issue(MiniRegistry()), _witness(tmp_path, W1, K1))
    path = tmp_path / "report.json"
    path.write_bytes(R.render_report(report))
    vkey_file = tmp_path / "w1.vkey"
    vkey_file.write_text(K1.vkey + "\n")
    assert main(["audit", str(path), "--witness", str(vkey_file), "--quorum", "1"]) == 0
    assert "witnesses: quorum 1 of 1" in capsys.readouterr().out
    assert main(["audit", str(path), "--witness", K1.vkey, "--witness", K2.vkey]) == 1
    assert main(["audit", str(path), "--quorum", "1"]) == 2


def test_suspect_alone_checks_the_subject_on_the_right_and_a_wrong_file(tmp_path, capsys):
    path = tmp_path / "report.json"
    path.write_bytes(R.render_report(_issue(MiniRegistry())))
    right, wrong = tmp_path / "right.bin", tmp_path / "wrong.bin"
    right.write_bytes(SUSPECT)
    wrong.write_bytes(SUSPECT + b"\0")
    assert main(["audit", str(path), "--suspect", str(right)]) == 0
    assert hashlib.sha256(SUSPECT).hexdigest()[:16] in capsys.readouterr().out
    assert main(["audit", str(path), "--suspect", str(wrong)]) == 1
    assert "suspect digest" in capsys.readouterr().err


@pytest.mark.parametrize("quorum", [0, 3])
def test_an_impossible_quorum_is_an_error_naming_the_fix(tmp_path, quorum):
    report = _cosign(_issue(MiniRegistry()), _witness(tmp_path, W1, K1))
    res = audit(report, witnesses=[K1, K2], quorum=quorum)
    assert res.failure.name == "witnesses" and "--witness" in res.failure.reason
