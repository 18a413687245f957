"""in-toto Statement v1 construction and structural checks."""
import json

import pytest

from verifier.evidence.canonical import canonical_json
from verifier.evidence.errors import EvidenceError
from verifier.evidence.intoto import STATEMENT_TYPE, parse_statement, statement

DIGEST = "ab" * 32


def test_it_builds_a_statement_v1_about_one_subject():
    s = statement("model.onnx", DIGEST, "https://hallmark.dev/verification/v1", {"k": 1})
    assert s == {"_type": STATEMENT_TYPE,
                 "subject": [{"name": "model.onnx", "digest": {"sha256": DIGEST}}],
                 "predicateType": "https://hallmark.dev/verification/v1", "predicate": {"k": 1}}
    assert parse_statement(canonical_json(s)) == s


@pytest.mark.parametrize("args,match", [
    (("m", "AB" * 32, "urn:x", {}), "lower-case hex"), (("m", "ab", "urn:x", {}), "64"),
    (("", DIGEST, "urn:x", {}), "subject name"), (("m", DIGEST, "", {}), "predicateType"),
    (("m", DIGEST, "urn:x", []), "predicate must be an object"),
])
def test_it_refuses_to_build_a_malformed_statement(args, match):
    with pytest.raises(EvidenceError, match=match):
        statement(*args)


def _mutated(**changes):
    s = statement("m", DIGEST, "urn:x", {}) | changes
    return json.dumps(s).encode()


@pytest.mark.parametrize("payload,match", [
    (b"[]", "expected a JSON object"), (b"{", "not valid JSON"),
    (_mutated(_type="https://in-toto.io/Statement/v0.1"), "_type"),
    (_mutated(subject=[]), "non-empty list"), (_mutated(subject=["x"]), r"subject\[0\]"),
    (_mutated(subject=[{"digest": {}}]), "digest must be a non-empty"),
    (_mutated(subject=[{"digest": {"sha256": "XYZ"}}]), "lower-case hex"),
    (_mutated(subject=[{"digest": {"sha256": "abcd"}}]), "64 hex"),
    (_mutated(subject=[{"name": 3, "digest": {"sha256": DIGEST}}]), "name must be a string"),
    (_mutated(predicateType=""), "predicateType"), (_mutated(predicate=[1]), "predicate"),
    (b'{"_type": "a", "_type": "b"}', "twice"),
])
def test_it_rejects_a_malformed_statement(payload, match):
    with pytest.raises(EvidenceError, match="malformed statement: .*" + match):
        parse_statement(payload)
