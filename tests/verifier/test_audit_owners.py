"""Owner evidence in reports: logged owner statements and countersignatures, audited offline."""
import base64
import copy
import re

import pytest

from tests.verifier.report_factory import ALICE, MALLORY, REGISTRY, MiniRegistry, result
from verifier.audit import audit
from verifier.evidence import report as R
from verifier.evidence.dsse import sign_envelope
from verifier.evidence.identity import b64
from verifier.evidence.owners import (
    OWNER_PAYLOAD_TYPE,
    countersign,
    countersignature_entry,
    owner_entry,
    owner_statement,
)


def _report(byok: bool = False) -> dict:
    reg = MiniRegistry()
    statement = owner_statement(REGISTRY, ALICE.public_key, "2026-01-01T00:00:00Z",
                                None if byok else ALICE)
    entry = owner_entry(statement, ALICE.public_key)
    owner_index = reg.log.append(entry)
    alice = reg.commit(ALICE, b"alice key", "2026-01-05T09:00:00Z")
    report = reg.issue([(alice, result(-70.0))], byok=[ALICE] if byok else ())
    report["owner_proofs"] = [R.owner_proof_field(ALICE.keyid, statement, entry,
                                                  reg.bundle(owner_index))]
    sig = countersign(report["envelope"], ALICE)
    c_entry = countersignature_entry(report["envelope"], ALICE.keyid, sig, "2026-03-02T08:00:00Z")
    c_index = reg.log.append(c_entry)
    report["countersignatures"] = [R.countersignature_field(
        ALICE.keyid, sig, "2026-03-02T08:00:00Z", c_entry, reg.bundle(c_index))]
    return report


@pytest.mark.parametrize("byok", [False, True])
def test_owner_statements_and_countersignatures_verify_and_say_who_signed_when(byok):
    res = audit(_report(byok), registry_key=REGISTRY.public_key)
    assert res.ok, res.failure
    names = [c.name for c in res.checks]
    assert "owner log" in names
    said = next(c.reason for c in res.checks if c.name == "countersignatures")
    assert f"owner {ALICE.keyid[:16]}… at 2026-03-02T08:00:00Z" in said


def test_an_owner_statement_not_signed_by_the_registry_fails():
    report = _report()
    forged = copy.deepcopy(report["owner_proofs"][0]["statement"])
    report["owner_proofs"][0]["statement"] = sign_envelope(
        base64.b64decode(forged["payload"]), OWNER_PAYLOAD_TYPE, [MALLORY])
    assert audit(report).failure.name == "owner log"


def test_an_escrowed_owner_statement_without_proof_of_possession_fails():
    report = _report()
    st = report["owner_proofs"][0]["statement"]
    st["signatures"] = [s for s in st["signatures"] if s["keyid"] != ALICE.keyid]
    res = audit(report)
    assert res.failure.name == "owner log" and "proof-of-possession" in res.failure.reason


@pytest.mark.parametrize("change,match", [
    (lambda c: c.update(signed_at="2026-03-02T09:00:00Z"), "not the log entry"),
    (lambda c: c.update(sig=b64(bytes(64))), "does not verify"),
    (lambda c: c.update(keyid=MALLORY.keyid), "not one of the report's owners"),
    (lambda c: c.update(bundle=c["bundle"].replace("index ", "index 1", 1)), "inclusion|index"),
])
def test_a_changed_countersignature_fails(change, match):
    report = _report()
    change(report["countersignatures"][0])
    res = audit(report)
    assert res.failure.name == "countersignatures"
    assert re.search(match, res.failure.reason), res.failure.reason


def test_a_countersignature_of_another_report_fails():
    report = _report()
    other = MiniRegistry().issue([])  # another report: Alice's signature over its envelope
    report["countersignatures"][0]["sig"] = countersign(other["envelope"], ALICE)
    res = audit(report)
    assert res.failure.name == "countersignatures" and "does not verify" in res.failure.reason
