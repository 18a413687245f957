"""Log entry encodings."""
import pytest

from verifier.evidence.canonical import canonical_json, sha256_hex
from verifier.evidence.dsse import sign_envelope
from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import Identity
from verifier.evidence.logentry import envelope_sha256, log_entry, parse_entry, report_entry

ENV = sign_envelope(b"p", "x/y", [Identity.from_seed(bytes(32))])


def test_a_report_entry_names_the_canonical_envelope_digest():
    entry = report_entry(ENV)
    assert entry == canonical_json({"type": "report",
                                    "envelope_sha256": sha256_hex(canonical_json(ENV))})
    assert parse_entry(entry)["envelope_sha256"] == envelope_sha256(ENV)


def test_any_change_to_the_envelope_changes_the_entry():
    changed = dict(ENV, signatures=[dict(ENV["signatures"][0], keyid="x" + ENV["signatures"][0]["keyid"][1:])])
    assert report_entry(changed) != report_entry(ENV)


def test_a_commitment_entry_keeps_its_fields_in_clear():
    entry = log_entry("commitment", ENV, commitment="ab" * 32, scheme="uchida", model="m",
                      owner_keyid="cd" * 32, time="2026-01-01T00:00:00Z")
    fields = parse_entry(entry)
    assert fields["type"] == "commitment" and fields["time"] == "2026-01-01T00:00:00Z"


@pytest.mark.parametrize("kind,fields,match", [
    ("unknown", {}, "unknown log entry type"),
    ("commitment", {"commitment": "ab"}, "needs the field"),
    ("correction", {"envelope_sha256": "ab"}, "corrects"),
])
def test_it_refuses_unknown_kinds_and_missing_fields(kind, fields, match):
    with pytest.raises(EvidenceError, match=match):
        log_entry(kind, **fields)


@pytest.mark.parametrize("entry,match", [
    (b'{"type":"report"}', "lacks envelope_sha256"), (b'{"type":"nope"}', "known"),
    (b'{"envelope_sha256":"a", "type":"report"}', "canonical"), (b"{", "not valid JSON"),
])
def test_it_rejects_malformed_entries(entry, match):
    with pytest.raises(EvidenceError, match="malformed log entry: .*" + match):
        parse_entry(entry)
