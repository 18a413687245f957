"""Offline audit of signed reports (verifier.audit), on reports issued by a real in-memory log."""
import base64
import copy
import json
import statistics
import time

import pytest

from tests.verifier.report_factory import (
    ALICE,
    MALLORY,
    ORIGIN,
    REGISTRY,
    SUSPECT,
    MiniRegistry,
    result,
    standard_report,
)
from verifier.audit import audit
from verifier.evidence import report as R
from verifier.evidence.canonical import canonical_json
from verifier.evidence.dsse import PAYLOAD_TYPE_INTOTO, sign_envelope
from verifier.evidence.identity import b64, parse_public_key
from verifier.evidence.merkle import MemoryLog
from verifier.evidence.note import sign_checkpoint, vkey
from verifier.evidence.proofbundle import make_bundle, parse_bundle


def _failure(res):
    assert not res.ok, res.checks
    assert res.failure.reason
    return res.failure


def _payload(report):
    return json.loads(base64.b64decode(report["envelope"]["payload"]))


def _resign(report, statement, signers):
    """A report whose envelope was changed and re-signed, keeping the old log proof."""
    out = copy.deepcopy(report)
    out["envelope"] = sign_envelope(canonical_json(statement), PAYLOAD_TYPE_INTOTO, signers)
    return out


def test_it_passes_a_genuine_report_with_every_check_named():
    _, report = standard_report()
    res = audit(R.render_report(report), registry_key=REGISTRY.public_key)
    assert res.ok, res.failure
    assert [c.name for c in res.checks] == ["format", "registry key", "envelope", "signatures",
                                            "statement", "predicate", "decisions",
                                            "log inclusion"]
    assert "equals the pinned registry key" in res.checks[1].reason
    assert res.statement["predicate"]["verdict"]["attributed"] is True
    assert res.checkpoint.origin == ORIGIN and res.checkpoint_note.startswith(ORIGIN)


def test_it_says_when_the_registry_key_was_not_pinned():
    _, report = standard_report()
    res = audit(report)
    assert res.ok and "not pinned" in res.checks[1].reason


def test_it_fails_any_single_changed_byte_of_the_served_report():
    _, report = standard_report()
    raw = R.render_report(report)
    for i in range(len(raw)):
        for flip in (0x01, 0x20):
            changed = raw[:i] + bytes([raw[i] ^ flip]) + raw[i + 1:]
            if changed.rstrip(b"\n") == raw:
                continue
            res = audit(changed, registry_key=REGISTRY.public_key)
            assert not res.ok, (i, flip, changed[max(0, i - 30):i + 30])
            assert res.failure.reason


def _payload_byte(report):
    payload = bytearray(base64.b64decode(report["envelope"]["payload"]))
    payload[payload.index(b'"statistic":') + 12] ^= 1  # 250 -> 350
    report["envelope"]["payload"] = b64(bytes(payload))


def _signature_byte(report):
    sig = bytearray(base64.b64decode(report["envelope"]["signatures"][0]["sig"]))
    sig[5] ^= 1
    report["envelope"]["signatures"][0]["sig"] = b64(bytes(sig))


def _proof_byte(report):
    lines = report["log"]["bundle"].split("\n")
    h = bytearray(base64.b64decode(lines[2]))
    h[0] ^= 1
    lines[2] = b64(bytes(h))
    report["log"]["bundle"] = "\n".join(lines)


def _checkpoint_byte(report):
    head, _, note = report["log"]["bundle"].partition("\n\n")
    lines = note.split("\n")
    root = bytearray(base64.b64decode(lines[2]))
    root[31] ^= 1
    lines[2] = b64(bytes(root))
    report["log"]["bundle"] = head + "\n\n" + "\n".join(lines)


def _checkpoint_signature_byte(report):
    head, _, note = report["log"]["bundle"].partition("\n\n")
    text, _, sig_line = note.rpartition("\n— ")
    name, blob = sig_line.rstrip("\n").split(" ")
    raw = bytearray(base64.b64decode(blob))
    raw[20] ^= 1
    report["log"]["bundle"] = head + "\n\n" + text + f"\n— {name} {b64(bytes(raw))}\n"


@pytest.mark.parametrize("change,check,match", [
    (_payload_byte, "signatures", "bad signature"),
    (_signature_byte, "signatures", "bad signature"),
    (_proof_byte, "log inclusion", "inclusion proof fails"),
    (_checkpoint_byte, "log inclusion", "invalid signature"),
    (_checkpoint_signature_byte, "log inclusion", "invalid signature"),
    (lambda r: r["log"].update(index=r["log"]["index"] - 1), "log inclusion", "log.index"),
    (lambda r: r["log"].update(origin="evil.example/log"), "registry key", "origin"),
    (lambda r: r["public_keys"]["registry"].update(keyid="0" * 64), "registry key", "keyid"),
])
def test_it_fails_a_changed_payload_signature_proof_or_checkpoint_with_a_reason(change, check, match):
    _, report = standard_report()
    change(report)
    failed = _failure(audit(R.render_report(report)))
    assert failed.name == check and match in failed.reason


def test_it_fails_a_changed_envelope_even_when_it_is_re_signed():
    _, report = standard_report()
    st = _payload(report)
    st["predicate"]["checks"][0]["claim"] = "changed after logging"
    forged = _resign(report, st, [REGISTRY, ALICE])
    failed = _failure(audit(forged))
    assert failed.name == "log inclusion" and "inclusion proof fails" in failed.reason


def test_it_fails_a_signature_by_an_unknown_key():
    _, report = standard_report()
    forged = _resign(report, _payload(report), [REGISTRY, ALICE, MALLORY])
    failed = _failure(audit(forged))
    assert failed.name == "signatures" and "unknown key" in failed.reason


def test_it_fails_a_report_signed_by_a_key_other_than_the_one_it_names():
    _, report = standard_report()
    forged = _resign(report, _payload(report), [MALLORY, ALICE])
    assert "unknown key" in _failure(audit(forged)).reason


@pytest.mark.parametrize("removed", [REGISTRY, ALICE])
def test_it_fails_a_report_with_a_signature_removed(removed):
    _, report = standard_report()
    report["envelope"]["signatures"] = [s for s in report["envelope"]["signatures"]
                                        if s["keyid"] != removed.keyid]
    failed = _failure(audit(report))
    assert failed.name == "signatures" and "signature removed" in failed.reason


def test_a_bring_your_own_key_owner_need_not_sign_but_any_signature_must_verify():
    _, report = standard_report(byok=[ALICE])
    assert [s["keyid"] for s in report["envelope"]["signatures"]] == [REGISTRY.keyid]
    assert audit(report).ok
    _, cosigned = standard_report(byok=[ALICE], signers=[REGISTRY, ALICE])
    assert audit(cosigned).ok
    cosigned["envelope"]["signatures"][1]["sig"] = cosigned["envelope"]["signatures"][0]["sig"]
    assert "bad signature" in _failure(audit(cosigned)).reason


def test_it_fails_when_the_registry_key_is_not_the_pinned_one():
    _, report = standard_report()
    failed = _failure(audit(report, registry_key=MALLORY.public_key))
    assert failed.name == "registry key" and "not the pinned registry key" in failed.reason


def test_it_pins_the_registry_by_its_published_vkey():
    _, report = standard_report()
    published = report["public_keys"]["registry"]["vkey"]
    assert published.startswith(ORIGIN + "+")
    assert audit(R.render_report(report), registry_key=parse_public_key(published)).ok


def test_it_fails_a_report_whose_vkey_names_another_key_or_origin():
    _, report = standard_report()
    for bad in (vkey(ORIGIN, MALLORY.public_key), vkey("other.example/log", REGISTRY.public_key)):
        changed = copy.deepcopy(report)
        changed["public_keys"]["registry"]["vkey"] = bad
        failed = _failure(audit(changed))
        assert failed.name == "registry key" and "vkey" in failed.reason


# --- consistency with a checkpoint the auditor kept ---------------------------------------


def _with_consistency(reg, report, kept_size):
    now = parse_bundle(report["log"]["bundle"])
    size = int(now.checkpoint_note.split("\n")[1])
    old, new = sorted((kept_size, size))
    return report | {"consistency": R.consistency_field(old, new, reg.log.consistency_proof(old, new))}


def test_it_accepts_an_earlier_checkpoint_of_the_same_log():
    reg, report = standard_report()
    kept = reg.checkpoint(4)
    res = audit(_with_consistency(reg, report, 4), since_checkpoint=kept)
    assert res.ok and res.checks[-1].name == "consistency"


def test_it_accepts_a_later_checkpoint_of_the_same_log():
    reg, report = standard_report()
    reg.filler(5)
    kept = reg.checkpoint()
    assert audit(_with_consistency(reg, report, reg.log.size), since_checkpoint=kept).ok


def test_it_accepts_the_proof_as_an_argument_and_the_same_checkpoint_without_one():
    reg, report = standard_report()
    c = _with_consistency(reg, report, 2)["consistency"]
    assert audit(report, since_checkpoint=reg.checkpoint(2), consistency=c).ok
    assert audit(report, since_checkpoint=parse_bundle(report["log"]["bundle"]).checkpoint_note).ok


def test_it_fails_a_checkpoint_from_a_forked_log():
    reg, report = standard_report()
    fork = MemoryLog()
    for entry in [b"other entry 0", b"rewritten history", b"more"]:
        fork.append(entry)
    kept = sign_checkpoint(ORIGIN, 3, fork.root(), REGISTRY)  # the registry signed a fork
    failed = _failure(audit(_with_consistency(reg, report, 3), since_checkpoint=kept))
    assert failed.name == "consistency" and "forked or rewritten" in failed.reason


def test_it_fails_a_forked_checkpoint_of_the_same_size():
    reg, report = standard_report()
    size = reg.log.size
    kept = sign_checkpoint(ORIGIN, size, b"\x07" * 32, REGISTRY)
    assert "forked" in _failure(audit(report, since_checkpoint=kept)).reason


@pytest.mark.parametrize("kept,consistency,match", [
    ("not a note", None, "the kept checkpoint"),
    (None, None, "no consistency proof"),
    (None, {"old_size": 1, "new_size": 2, "proof": []}, "needed 2 ->"),
])
def test_it_fails_a_kept_checkpoint_it_cannot_check(kept, consistency, match):
    reg, report = standard_report()
    kept = reg.checkpoint(2) if kept is None else kept
    failed = _failure(audit(report, since_checkpoint=kept, consistency=consistency))
    assert failed.name == "consistency" and match in failed.reason


def test_it_fails_a_kept_checkpoint_signed_by_another_key():
    reg, report = standard_report()
    kept = sign_checkpoint(ORIGIN, 2, reg.log.root(2), MALLORY)
    assert "no verifiable signatures" in _failure(audit(report, since_checkpoint=kept)).reason


# --- the signed content must be internally consistent --------------------------------------


@pytest.mark.parametrize("tamper,check,match", [
    (lambda p: p["checks"][0].update(decision="not attributed"), "decisions", "Holm"),
    (lambda p: p.update(tests_run=2), "decisions", "tests_run"),
    (lambda p: p["checks"][0].update(alpha=0.5), "decisions", "Holm threshold"),
    (lambda p: p["verdict"].update(attributed=False), "decisions", "verdict.attributed"),
    (lambda p: p["checks"][0].update(decision="maybe"), "predicate", "decision"),
    (lambda p: p["checks"][0].update(p_value=0.5), "predicate", "10^log10_p"),
    (lambda p: p["checks"][0].update(commitment="0" * 64), "predicate", "does not list"),
    (lambda p: p["checks"][0].update(owner_keyid=MALLORY.keyid), "predicate", "owners"),
    (lambda p: p["checks"][0].update(scheme="lsb"), "predicate", "commitment"),
    (lambda p: p["times"].update(signed="2026-03-01T09:00:00Z"), "predicate", "out of order"),
    (lambda p: p["times"].update(signed="yesterday"), "predicate", "RFC 3339"),
    (lambda p: p["registry"].update(origin="other/log"), "predicate", "origin"),
    (lambda p: p["owners"][0].update(keyid=MALLORY.keyid), "signatures", "unknown key"),
    (lambda p: p.pop("verdict"), "predicate", "verdict is missing"),
    (lambda p: p["commitments"].append(dict(p["commitments"][0])), "predicate", "twice"),
    (lambda p: p.update(scan={"commitments": 5, "candidates": 1, "not_applicable": {"lsb": 3}}),
     "predicate", "add up to 4"),
    (lambda p: p.update(scan={"commitments": 3, "candidates": 2, "not_applicable": {"lsb": 1}}),
     "predicate", "2 but the report has 1 check rows"),
    (lambda p: p.update(scan={"commitments": 1, "candidates": 1, "not_applicable": {"lsb": -1}}),
     "predicate", "integers >= 0"),
])
def test_it_fails_a_signed_report_whose_content_does_not_add_up(tamper, check, match):
    reg = MiniRegistry()
    alice = reg.commit(ALICE, b"key", "2026-01-05T09:00:00Z")
    failed = _failure(audit(reg.issue([(alice, result(-70.0))], tamper=tamper)))
    assert failed.name == check and match in failed.reason


def test_it_accepts_a_scan_whose_counts_add_up():
    reg = MiniRegistry()
    alice = reg.commit(ALICE, b"key", "2026-01-05T09:00:00Z")
    scan = {"log_index": 9, "commitments": 1001, "candidates": 1,
            "not_applicable": {"uchida": 990, "trigger_set": 10}, "profile": {"weights": True}}
    res = audit(reg.issue([(alice, result(-70.0))], tamper=lambda p: p.update(scan=scan)))
    assert res.ok, res.failure


def test_it_applies_holm_over_the_tests_that_ran_only():
    reg = MiniRegistry()
    a = reg.commit(ALICE, b"key a", "2026-01-05T09:00:00Z")
    b = reg.commit(ALICE, b"key b", "2026-01-05T09:00:00Z", scheme="trigger_set")
    c = reg.commit(ALICE, b"key c", "2026-01-05T09:00:00Z", scheme="lsb")
    report = reg.issue([(a, result(-6.5)), (b, result(-2.0, "trigger_set")),
                        (c, R.TestResult.not_applicable("lsb", "no weights"))])
    res = audit(report)
    assert res.ok, res.failure
    decisions = [c["decision"] for c in res.statement["predicate"]["checks"]]
    # p = 10^-6.5 passes Holm over the 2 tests that ran (not over 3), but costs only 21.6 bits
    assert decisions == ["significant, forgeable", "not attributed", "not applicable"]


# --- the forgery floor: attribution needs Holm, a forgery cost >= the floor, and may_attribute --


def _one_check(log10_p, may_attribute=True, tamper=None):
    reg = MiniRegistry()
    alice = reg.commit(ALICE, b"key", "2026-01-05T09:00:00Z")
    return reg.issue([(alice, result(log10_p, may_attribute=may_attribute))], tamper=tamper)


def test_a_check_between_the_holm_threshold_and_the_floor_is_significant_but_forgeable():
    report = _one_check(-20.0)  # passes Holm at 1e-6; 66.4 bits < 80
    res = audit(report)
    assert res.ok, res.failure
    check = res.statement["predicate"]["checks"][0]
    assert check["decision"] == "significant, forgeable"
    assert check["forgery_bits"] == pytest.approx(66.44, abs=0.01)
    assert res.statement["predicate"]["verdict"]["attributed"] is False
    assert res.statement["predicate"]["min_forgery_bits"] == 80


def test_integrity_only_evidence_never_attributes_however_small_its_p():
    res = audit(_one_check(-200.0, may_attribute=False))
    assert res.ok, res.failure
    assert res.statement["predicate"]["checks"][0]["decision"] == "integrity only"
    assert res.statement["predicate"]["verdict"]["attributed"] is False


@pytest.mark.parametrize("log10_p,may_attribute,flip_to", [
    (-20.0, True, "attributed"),  # a forgeable check promoted to an attribution
    (-70.0, True, "significant, forgeable"),
    (-200.0, False, "attributed"),  # integrity-only evidence naming an owner
])
def test_it_fails_a_report_whose_decision_does_not_follow_from_p_alpha_and_floor(
        log10_p, may_attribute, flip_to):
    def flip(p):
        p["checks"][0]["decision"] = flip_to
        p["verdict"]["attributed"] = flip_to == "attributed"
    failed = _failure(audit(_one_check(log10_p, may_attribute, tamper=flip)))
    assert failed.name == "decisions" and "forgery floor of 80 bits" in failed.reason


@pytest.mark.parametrize("tamper,match", [
    (lambda p: p["checks"][0].update(forgery_bits=100.0), "forgery cost"),
    (lambda p: p["checks"][0].pop("forgery_bits"), "forgery_bits is missing"),
    (lambda p: p["checks"][0].update(may_attribute=None), "may_attribute"),
    (lambda p: p.pop("min_forgery_bits"), "min_forgery_bits"),
    (lambda p: p.update(min_forgery_bits=0), "min_forgery_bits"),
])
def test_it_fails_a_report_whose_forgery_fields_are_missing_or_wrong(tamper, match):
    failed = _failure(audit(_one_check(-70.0, tamper=tamper)))
    assert failed.name == "decisions" and match in failed.reason


def test_a_lower_floor_in_the_signed_predicate_changes_the_decision_the_audit_expects():
    def lower(p):  # a registry whose operator set HALLMARK_MIN_FORGERY_BITS=60
        p["min_forgery_bits"] = 60
        p["checks"][0]["decision"] = "attributed"
        p["verdict"]["attributed"] = True
    res = audit(_one_check(-20.0, tamper=lower))
    assert res.ok, res.failure


def test_it_fails_a_check_with_an_unknown_screening():
    failed = _failure(audit(_one_check(-70.0, tamper=lambda p: p["checks"][0].update(
        screening="trust me"))))
    assert failed.name == "predicate" and "screening" in failed.reason


def test_it_accepts_checks_that_errored_with_null_statistics():
    def add_error(p):
        p["checks"].append({"scheme": "lsb", "commitment": "e" * 64, "model": "m-1",
                            "owner_keyid": ALICE.keyid, "statistic": None, "n": None,
                            "log10_p": None, "p_value": None, "null": None, "alpha": None,
                            "decision": "error", "error": "timed out", "queries": 0,
                            "claim": "", "details": {}})
        p["commitments"].append(R.commitment_ref("e" * 64, "lsb", 0, "2026-01-01T00:00:00Z"))
    _, report = standard_report(tamper=add_error)
    assert audit(report).ok


def _errored_check(p):  # type: ignore[no-untyped-def]
    p["checks"].append({"scheme": "lsb", "commitment": "e" * 64, "model": "m-1",
                        "owner_keyid": ALICE.keyid, "statistic": None, "n": None,
                        "log10_p": None, "p_value": None, "null": None, "alpha": None,
                        "decision": "error", "error": "the worker was lost 3 times",
                        "queries": 0, "claim": "", "details": {}})
    p["commitments"].append(R.commitment_ref("e" * 64, "lsb", 0, "2026-01-01T00:00:00Z"))


def _unattributed_with(outcome, errored):  # type: ignore[no-untyped-def]
    def tamper(p):  # type: ignore[no-untyped-def]
        if errored:
            _errored_check(p)
        p["verdict"].update(outcome=outcome)
    reg = MiniRegistry()
    alice = reg.commit(ALICE, b"key", "2026-01-05T09:00:00Z")
    return audit(reg.issue([(alice, result(-1.0))], tamper=tamper))


def test_it_accepts_an_inconclusive_verdict_when_a_check_did_not_run():
    res = _unattributed_with("inconclusive", errored=True)
    assert res.ok, res.failure
    assert res.statement["predicate"]["verdict"]["outcome"] == "inconclusive"


def test_it_fails_a_plain_not_attributed_verdict_while_a_check_is_missing():
    failed = _failure(_unattributed_with("not attributed", errored=True))
    assert failed.name == "outcome" and "must be 'inconclusive'" in failed.reason


@pytest.mark.parametrize("outcome,match", [("inconclusive", "give 'not attributed'"),
                                           ("attributed", "give 'not attributed'"),
                                           ("unsure", "expected one of")])
def test_it_fails_an_outcome_the_checks_do_not_give(outcome, match):
    failed = _failure(_unattributed_with(outcome, errored=False))
    assert failed.name == "outcome" and match in failed.reason


# --- priority: the ambiguity attack ------------------------------------------------------


def _ambiguity(**kw):
    """Alice registers; the suspect is first seen; Mallory forges a matching commitment later."""
    reg = MiniRegistry()
    alice = reg.commit(ALICE, b"alice key", "2026-01-05T09:00:00Z")
    reg.filler(4)
    forged = reg.commit(MALLORY, b"forged key", "2026-02-20T12:00:00Z")
    return reg.issue([(forged, result(-40.0)), (alice, result(-70.0))], with_priority=True,
                     first_seen="2026-02-01T00:00:00Z", **kw), alice, forged


def test_it_names_the_true_owner_first_when_a_forger_registers_after_the_theft():
    report, alice, forged = _ambiguity(commitment_proofs=True)
    res = audit(report)
    assert res.ok, res.failure
    pred = res.statement["predicate"]
    assert pred["verdict"]["earliest_commitment"] == alice.digest
    flags = {c["digest"]: c["proves_priority"] for c in pred["commitments"]}
    assert flags == {alice.digest: True, forged.digest: False}
    assert [c.name for c in res.checks][-4:] == ["priority", "log inclusion", "commitment log",
                                                "priority proofs"]
    assert "1 attributed commitment(s) cannot prove priority" in res.checks[-4].reason
    assert "1 commitment(s) logged before the first sighting" in res.checks[-1].reason


@pytest.mark.parametrize("tamper,match", [
    (lambda p: p["verdict"].update(earliest_commitment=p["commitments"][0]["digest"]),
     "earliest attributed commitment"),
    (lambda p: p["commitments"][0].update(proves_priority=True), "proves_priority"),
    (lambda p: p["suspect"].update(first_seen="2026-03-01T00:00:00Z"), "proves_priority"),
])
def test_it_fails_a_report_that_misstates_priority(tamper, match):
    report, _, _ = _ambiguity(tamper=tamper)
    failed = _failure(audit(report))
    assert failed.name == "priority" and match in failed.reason


def test_a_commitment_registered_after_the_first_sighting_alone_attributes_nobody():
    reg = MiniRegistry()
    forged = reg.commit(MALLORY, b"forged key", "2026-02-20T12:00:00Z")
    report = reg.issue([(forged, result(-40.0))], with_priority=True,
                       first_seen="2026-02-01T00:00:00Z")
    res = audit(report)
    assert res.ok and res.statement["predicate"]["verdict"] == {
        "attributed": False, "earliest_commitment": None}


def test_it_fails_a_commitment_proof_for_another_log_index():
    report, alice, _ = _ambiguity(commitment_proofs=True)
    report["commitment_proofs"][0], report["commitment_proofs"][1] = (
        report["commitment_proofs"][0] | {"bundle": report["commitment_proofs"][1]["bundle"]},
        report["commitment_proofs"][1])
    failed = _failure(audit(report))
    assert failed.name == "commitment log" and "another index" in failed.reason


# --- report encoding ---------------------------------------------------------------------


@pytest.mark.parametrize("raw,match", [
    (b"not json", "not valid JSON"), (b"[]", "not a JSON object"),
    (b'{"format": "a", "format": "b"}', "twice"),
])
def test_it_fails_bytes_that_are_not_a_report(raw, match):
    failed = _failure(audit(raw))
    assert failed.name == "format" and match in failed.reason


@pytest.mark.parametrize("change,match", [
    (lambda r: r.update(note="hi"), "unknown field"),
    (lambda r: r.update(format="hallmark/report/v2"), "expected 'hallmark/report/v1'"),
    (lambda r: r.pop("log"), "'log' is missing"),
    (lambda r: r["log"].update(extra=1), "exactly index, bundle and origin"),
])
def test_it_fails_a_report_with_the_wrong_shape(change, match):
    _, report = standard_report()
    change(report)
    assert match in _failure(audit(report)).reason


def test_a_re_indented_report_passes_unless_strict_bytes_are_required():
    _, report = standard_report()
    pretty = json.dumps(report, indent=2).encode()
    res = audit(pretty)
    assert res.ok and "re-formatted JSON, content checked" in res.checks[0].reason
    assert "canonical JSON form" in _failure(audit(pretty, strict_bytes=True)).reason
    assert audit(R.render_report(report) + b"\n", strict_bytes=True).ok


def test_the_served_layout_is_already_sorted_so_a_compact_renderer_writes_canonical_bytes():
    _, report = standard_report()
    compact = json.dumps(report, separators=(",", ":"), ensure_ascii=False).encode()
    assert compact == canonical_json(report)


def test_an_extra_line_in_the_proof_bundle_is_refused():
    _, report = standard_report()
    b = parse_bundle(report["log"]["bundle"])
    report["log"]["bundle"] = make_bundle(b.index, list(b.proof), b.checkpoint_note, extra=b"x")
    assert "extra data" in _failure(audit(report)).reason


# --- openings and the suspect ------------------------------------------------------------


def test_it_checks_openings_against_the_listed_commitments(tmp_path):
    reg = MiniRegistry()
    alice = reg.commit(ALICE, b"alice key", "2026-01-05T09:00:00Z")
    other = reg.commit(ALICE, b"unlisted key", "2026-01-05T09:00:00Z")
    report = reg.issue([(alice, result(-70.0))])
    res = audit(report, reveal=[alice.opening])
    assert res.ok and res.checks[-1].name == "opening 1"
    failed = _failure(audit(report, reveal=[other.opening]))
    assert failed.name == "opening 1" and "does not list" in failed.reason
    tampered = alice.opening | {"salt": b64(bytes(32))}
    assert "does not open" in _failure(audit(report, reveal=[tampered])).reason


def test_it_fails_a_suspect_file_that_is_not_the_reported_subject(tmp_path):
    reg = MiniRegistry()
    alice = reg.commit(ALICE, b"alice key", "2026-01-05T09:00:00Z")
    report = reg.issue([(alice, result(-70.0))])
    other = tmp_path / "other.bin"
    other.write_bytes(SUSPECT + b"!")
    failed = _failure(audit(report, reveal=[alice.opening], suspect_path=str(other)))
    assert failed.name == "suspect digest" and "the report is about" in failed.reason
    same = tmp_path / "suspect.bin"
    same.write_bytes(SUSPECT)
    alone = audit(report, suspect_path=str(same))  # no openings: the digest alone is checked
    assert alone.ok, alone.failure
    assert [c.name for c in alone.checks][-1] == "suspect digest"
    failed = _failure(audit(report, suspect_path=str(other)))
    assert failed.name == "suspect digest" and "the report is about" in failed.reason
    assert "cannot read" in _failure(audit(report, suspect_path=str(tmp_path / "no"))).reason


def test_an_audit_takes_well_under_100_ms():
    _, report = standard_report()
    raw = R.render_report(report)
    times = []
    for _ in range(20):
        t = time.perf_counter()
        assert audit(raw, registry_key=REGISTRY.public_key).ok
        times.append(time.perf_counter() - t)
    assert statistics.median(times) < 0.1


# --- recomputing a statistic from scratch (written last: needs models.py and a scheme) -------


def test_it_recomputes_every_opened_statistic_from_the_suspect_file(tmp_path):
    torch = pytest.importorskip("torch")
    uchida = pytest.importorskip("verifier.schemes.uchida")
    pytest.importorskip("verifier.models")
    from safetensors.torch import save_file

    from verifier.suspect import Suspect
    from verifier.toy import MLP

    torch.manual_seed(0)
    model = MLP(hidden=32)
    key = uchida.generate_key(uchida.Params(bits=64), seed=11, model=model)
    path = tmp_path / "suspect.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    measured = uchida.test(Suspect.from_module(model), key)

    reg = MiniRegistry()
    alice = reg.commit(ALICE, key.to_bytes(), "2026-01-05T09:00:00Z", scheme="uchida")
    report = reg.issue([(alice, measured)], subject=path.read_bytes())
    res = audit(report, reveal=[alice.opening], suspect_path=str(path))
    assert res.ok, res.failure
    assert res.checks[-1].name == "recompute" and "equal" in res.checks[-1].reason

    def misreport(p):
        p["checks"][0]["statistic"] = p["checks"][0]["statistic"] + 1
    lying = reg.issue([(alice, measured)], subject=path.read_bytes(), tamper=misreport)
    failed = _failure(audit(lying, reveal=[alice.opening], suspect_path=str(path)))
    assert failed.name == "recompute" and "recomputed statistic" in failed.reason

    def downgrade(p):  # consistent on its face ("integrity only"), but not what the scheme says
        p["checks"][0]["may_attribute"] = False
        p["checks"][0]["decision"] = "not attributed" if measured.log10_p > -6 else "integrity only"
        p["verdict"]["attributed"] = False
    lying = reg.issue([(alice, measured)], subject=path.read_bytes(), tamper=downgrade)
    failed = _failure(audit(lying, reveal=[alice.opening], suspect_path=str(path)))
    assert failed.name == "recompute" and "may_attribute" in failed.reason
