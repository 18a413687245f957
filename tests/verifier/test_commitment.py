"""Salted commitments to key blobs and their openings."""
import hashlib
import json
import struct

import pytest

from verifier.evidence.commitment import (
    commit,
    make_opening,
    new_salt,
    parse_opening,
    verify_opening,
)
from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import b64

SALT = bytes(range(32))
KEY = b"a safetensors key blob"


def _independent(scheme: str, salt: bytes, blob: bytes) -> str:
    """The documented layout, written out by hand."""
    parts = [b"hallmark/commitment/v1", scheme.encode(), salt, hashlib.sha256(blob).digest()]
    return hashlib.sha256(b"".join(struct.pack(">Q", len(p)) + p for p in parts)).hexdigest()


def test_it_follows_the_documented_length_prefixed_layout():
    assert commit("uchida", SALT, KEY) == _independent("uchida", SALT, KEY)


def test_it_is_deterministic_and_binds_scheme_salt_and_key():
    c = commit("uchida", SALT, KEY)
    assert c == commit("uchida", SALT, KEY)
    others = {commit("trigger_set", SALT, KEY), commit("uchida", bytes(32), KEY),
              commit("uchida", SALT, KEY + b"!")}
    assert c not in others and len(others) == 3


def test_new_salts_are_32_fresh_random_bytes():
    salts = {new_salt() for _ in range(50)}
    assert len(salts) == 50 and all(len(s) == 32 for s in salts)


def test_a_salt_hides_equal_keys():
    assert commit("uchida", new_salt(), KEY) != commit("uchida", new_salt(), KEY)


def test_it_verifies_only_the_true_opening():
    c = commit("uchida", SALT, KEY)
    assert verify_opening(c, "uchida", SALT, KEY)
    assert not verify_opening(c, "uchida", SALT, KEY[:-1])
    assert not verify_opening(c, "lsb", SALT, KEY)
    assert not verify_opening(c, "uchida", bytes(32), KEY)
    assert not verify_opening(c, "uchida", b"short", KEY)  # malformed: False, never raises


@pytest.mark.parametrize("scheme,salt,blob,match", [
    ("Uchida", SALT, KEY, "scheme"), ("", SALT, KEY, "scheme"), ("a b", SALT, KEY, "scheme"),
    ("uchida", bytes(31), KEY, "32 random bytes"), ("uchida", SALT, b"", "key blob"),
])
def test_it_rejects_malformed_inputs(scheme, salt, blob, match):
    with pytest.raises(EvidenceError, match=match):
        commit(scheme, salt, blob)


def test_an_opening_round_trips_through_json():
    doc = make_opening("uchida", SALT, KEY)
    assert doc == {"scheme": "uchida", "salt": b64(SALT), "key": b64(KEY),
                   "commitment": commit("uchida", SALT, KEY)}
    o = parse_opening(json.dumps(doc))
    assert (o.scheme, o.salt, o.key_blob, o.commitment) == ("uchida", SALT, KEY, doc["commitment"])


@pytest.mark.parametrize("field,value,match", [
    ("commitment", "00" * 32, "does not open"), ("key", b64(b"other key"), "does not open"),
    ("scheme", "lsb", "does not open"), ("salt", b64(bytes(32)), "does not open"),
    ("salt", b64(bytes(8)), "32 random bytes"), ("commitment", "XY", "64 lower-case hex"),
    ("key", "%%%", "not base64"), ("scheme", None, "'scheme' field is missing"),
])
def test_it_rejects_an_opening_that_does_not_open_its_commitment(field, value, match):
    doc = make_opening("uchida", SALT, KEY)
    doc[field] = value
    with pytest.raises(EvidenceError, match=match):
        parse_opening(doc)


def test_it_rejects_an_opening_that_is_not_an_object_or_has_duplicate_keys():
    with pytest.raises(EvidenceError, match="JSON object"):
        parse_opening("[]")
    with pytest.raises(EvidenceError, match="twice"):
        parse_opening('{"scheme": "a", "scheme": "b"}')
