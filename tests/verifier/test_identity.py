"""Ed25519 identities, base64 helpers and key files."""
import hashlib
import json
import os
import stat

import nacl.signing
import pytest

from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import (
    Identity,
    b64,
    keyid_of,
    load_public_key,
    parse_public_key,
    public_key_json,
    read_private_key,
    unb64,
    unb64_strict,
    verify_signature,
    write_private_key,
    write_public_key,
)
from verifier.evidence.note import vkey

SEED = bytes(range(32))


def test_it_derives_the_same_key_from_the_same_seed():
    a, b = Identity.from_seed(SEED), Identity.from_seed(SEED)
    assert a.public_key == b.public_key and a.seed == SEED
    assert a.public_key == bytes(nacl.signing.SigningKey(SEED).verify_key)


def test_it_generates_distinct_identities():
    assert Identity.generate().public_key != Identity.generate().public_key


def test_its_keyid_is_the_hex_sha256_of_the_raw_public_key():
    me = Identity.from_seed(SEED)
    assert me.keyid == hashlib.sha256(me.public_key).hexdigest() == keyid_of(me.public_key)


def test_its_signatures_verify_independently_with_nacl():
    me = Identity.from_seed(SEED)
    sig = me.sign(b"message")
    nacl.signing.VerifyKey(me.public_key).verify(b"message", sig)
    assert verify_signature(me.public_key, b"message", sig)


@pytest.mark.parametrize("change", ["message", "signature", "key"])
def test_it_rejects_a_signature_after_any_change(change):
    me, other = Identity.from_seed(SEED), Identity.from_seed(bytes(32))
    msg, sig, key = b"message", bytearray(me.sign(b"message")), me.public_key
    if change == "message":
        msg = b"messagE"
    elif change == "signature":
        sig[10] ^= 1
    else:
        key = other.public_key
    assert not verify_signature(key, msg, bytes(sig))


@pytest.mark.parametrize("key,sig", [(b"short", bytes(64)), (bytes(32), b"short"),
                                     ("text", bytes(64)), (bytes(32), None)])
def test_it_answers_false_for_malformed_keys_and_signatures(key, sig):
    assert verify_signature(key, b"m", sig) is False


@pytest.mark.parametrize("seed", [b"", bytes(31), bytes(33), "x" * 32])
def test_it_rejects_a_seed_that_is_not_32_bytes(seed):
    with pytest.raises(EvidenceError, match="32 bytes"):
        Identity.from_seed(seed)


def test_it_rejects_a_public_key_that_is_not_32_bytes():
    with pytest.raises(EvidenceError, match="32 raw bytes"):
        keyid_of(bytes(31))


def test_it_decodes_standard_and_url_safe_base64_with_or_without_padding():
    data = bytes([0xfb, 0xff, 0xfe, 0x01])
    assert b64(data) == "+//+AQ=="
    for text in ("+//+AQ==", "+//+AQ", "-__-AQ==", "-__-AQ"):
        assert unb64(text) == data


@pytest.mark.parametrize("text", ["+_8=", "a b=", "abc!", "A", "QQ=", "QR==", "QUJ=", 3])
def test_it_refuses_mixed_invalid_or_non_canonical_base64(text):
    with pytest.raises(EvidenceError):
        unb64(text)


@pytest.mark.parametrize("text", ["QUI", "-__-AQ==", "QUI=x", "QUJ="])
def test_strict_base64_accepts_only_standard_padded_canonical_text(text):
    with pytest.raises(EvidenceError):
        unb64_strict(text, "value")


def test_strict_base64_checks_the_decoded_size():
    assert unb64_strict(b64(bytes(32)), "root", 32) == bytes(32)
    with pytest.raises(EvidenceError, match="root decodes to 31 bytes, expected 32"):
        unb64_strict(b64(bytes(31)), "root", 32)


def test_it_writes_a_private_key_file_readable_only_by_its_owner(tmp_path):
    me = Identity.from_seed(SEED)
    path = tmp_path / "owner.key"
    write_private_key(path, me)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert doc == {"type": "hallmark-ed25519-private", "seed": b64(SEED)}
    assert read_private_key(path).public_key == me.public_key


def test_it_refuses_to_overwrite_a_key_file_unless_asked(tmp_path):
    path = tmp_path / "owner.key"
    write_private_key(path, Identity.from_seed(SEED))
    with pytest.raises(EvidenceError, match="already exists"):
        write_private_key(path, Identity.generate())
    assert read_private_key(path).seed == SEED
    other = Identity.generate()
    write_private_key(path, other, overwrite=True)
    assert read_private_key(path).seed == other.seed


@pytest.mark.parametrize("content,match", [
    ('{"type": "hallmark-ed25519-public", "seed": "AA=="}', "not a Hallmark private key"),
    ("[1, 2]", "not a Hallmark private key"),
    ("not json", "not valid JSON"),
    ('{"type": "hallmark-ed25519-private", "seed": "AAAA"}', "32 bytes"),
])
def test_it_rejects_a_file_that_is_not_a_private_key(tmp_path, content, match):
    path = tmp_path / "bad.key"
    path.write_text(content)
    with pytest.raises(EvidenceError, match=match):
        read_private_key(path)


def test_it_names_a_missing_key_file(tmp_path):
    with pytest.raises(EvidenceError, match="cannot read key file"):
        read_private_key(tmp_path / "missing.key")


def test_it_reads_a_public_key_in_every_printed_form(tmp_path):
    key = Identity.from_seed(SEED).public_key
    path = tmp_path / "owner.pub"
    write_public_key(path, key)
    assert json.loads(path.read_text()) == public_key_json(key)
    forms = [path.read_text(), json.dumps({"keyid": keyid_of(key), "ed25519": b64(key)}),
             vkey("hallmark.example/log", key), b64(key), b64(key).rstrip("=")]
    assert all(parse_public_key(f) == key for f in forms)
    assert load_public_key(str(path)) == key and load_public_key(b64(key)) == key


@pytest.mark.parametrize("text,match", [
    (json.dumps({"keyid": "00", "ed25519": b64(bytes(32))}), "keyid"),
    ('{"key": "x"}', '"ed25519"'),
    ("AAAA", "not a public key"),
    ("name+00000000+" + b64(b"\x01" + bytes(32)), "not a public key"),
])
def test_it_rejects_text_that_is_not_a_valid_public_key(text, match):
    with pytest.raises(EvidenceError, match=match):
        parse_public_key(text)
