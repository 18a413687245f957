"""Canonical JSON, SHA-256 and strict JSON parsing."""
import json
import math

import pytest

from verifier.evidence.canonical import canonical_json, loads_strict, sha256_hex
from verifier.evidence.errors import EvidenceError


def test_it_sorts_keys_and_drops_whitespace():
    assert canonical_json({"b": [1, 2.5], "a": {"y": None, "x": True}}) == \
        b'{"a":{"x":true,"y":null},"b":[1,2.5]}'


def test_it_writes_utf8_and_escapes_control_characters():
    assert canonical_json(["é—", "\n\x01"]) == '["é—","\\n\\u0001"]'.encode()


def test_equal_values_give_equal_bytes_whatever_the_insertion_order():
    a = {"x": 1, "y": {"p": 1, "q": 2}}
    b = {"y": {"q": 2, "p": 1}, "x": 1}
    assert canonical_json(a) == canonical_json(b)
    assert json.loads(canonical_json(a)) == a


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_it_refuses_nan_and_infinity_naming_where(value):
    with pytest.raises(EvidenceError, match=r"at \$\.checks\[0\]\.log10_p.*-inf"):
        canonical_json({"checks": [{"log10_p": value}]})


def test_it_refuses_non_string_keys_and_non_json_types():
    with pytest.raises(EvidenceError, match="string keys"):
        canonical_json({1: "a"})
    with pytest.raises(EvidenceError, match="bytes"):
        canonical_json({"a": b"raw"})


def test_sha256_hex_is_lower_case_hex():
    assert sha256_hex(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.mark.parametrize("text,match", [
    ('{"a": 1, "a": 2}', "twice"), ('{"a": NaN}', "NaN"), ('[Infinity]', "Infinity"),
    ("{", "not valid JSON"), (b"\xff", "UTF-8"),
])
def test_strict_parsing_rejects_duplicate_keys_non_finite_numbers_and_garbage(text, match):
    with pytest.raises(EvidenceError, match=match):
        loads_strict(text)


def test_keys_outside_the_bmp_sort_by_code_point_as_documented():
    # U+1F600 (one code point above U+FFFF) sorts after U+FFFF here; JCS (UTF-16) would not.
    assert canonical_json({"\U0001F600": 1, "\uffff": 2}) == '{"\uffff":2,"\U0001F600":1}'.encode()


def test_integers_above_two_to_the_53_are_written_exactly_as_documented():
    assert canonical_json({"n": 2**53 + 1}) == b'{"n":9007199254740993}'
    assert canonical_json([10**30]) == b"[1000000000000000000000000000000]"


def test_floats_use_the_python_repr_form_as_documented():
    assert canonical_json([1e-06, 1e16, 0.5]) == b"[1e-06,1e+16,0.5]"
