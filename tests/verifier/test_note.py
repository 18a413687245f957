"""C2SP signed notes and tlog checkpoints, against the Go sumdb/note published vectors."""
import base64
import hashlib

import nacl.signing
import pytest

from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import Identity
from verifier.evidence.note import (
    Checkpoint,
    checkpoint_body,
    key_id,
    parse_checkpoint,
    parse_vkey,
    sign_checkpoint,
    sign_note,
    verify_checkpoint,
    verify_note,
    vkey,
)

# golang.org/x/mod/sumdb/note note_test.go: the PeterNeumann and EnochRoot keys and notes.
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = ("If you think cryptography is the answer to your problem,\n"
        "then you don't know what your problem is.\n")
PETER_SIG = ("— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqf"
             "qdngotpRZb6KE6RyyBwJnAM=\n")
ENOCH_SIG = ("— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oO"
             "TGwnWLox33WWd1RvMc+QQ=\n")
PETER = parse_vkey(PETER_VKEY)
ENOCH = parse_vkey(ENOCH_VKEY)


def _peter() -> Identity:
    material = base64.b64decode(PETER_SKEY.split("+", 4)[4])
    assert material[0] == 1
    return Identity.from_seed(material[1:])


def test_it_reproduces_the_go_note_signature_byte_for_byte():
    assert sign_note(TEXT, "PeterNeumann", _peter()) == TEXT + "\n" + PETER_SIG


def test_it_writes_the_go_vkey_and_key_id():
    me = _peter()
    assert vkey("PeterNeumann", me.public_key) == PETER_VKEY
    assert key_id("PeterNeumann", me.public_key).hex() == "c74f20a3"
    assert ("PeterNeumann", me.public_key) == PETER


def test_it_verifies_the_published_go_note():
    assert verify_note(TEXT + "\n" + PETER_SIG, [PETER]) == TEXT


def test_it_ignores_unknown_keys_and_verifies_the_known_one():
    assert verify_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [PETER]) == TEXT
    assert verify_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [PETER, ENOCH]) == TEXT
    assert verify_note(TEXT + "\n" + PETER_SIG + PETER_SIG + ENOCH_SIG, [PETER]) == TEXT


def test_it_rejects_a_note_signed_by_no_known_key():
    with pytest.raises(EvidenceError, match="no verifiable signatures"):
        verify_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [])
    with pytest.raises(EvidenceError, match="no verifiable signatures"):
        verify_note(TEXT + "\n" + ENOCH_SIG, [PETER])


def test_it_ignores_a_key_that_shares_only_the_name():
    other = Identity.from_seed(bytes(32))
    with pytest.raises(EvidenceError, match="no verifiable signatures"):
        verify_note(TEXT + "\n" + PETER_SIG, [("PeterNeumann", other.public_key)])


def test_it_rejects_an_invalid_signature_by_a_known_key():
    bad = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(EvidenceError, match="invalid signature for key PeterNeumann\\+c74f20a3"):
        verify_note(TEXT + "\n" + bad, [PETER])


def test_it_rejects_an_ambiguous_verifier_list():
    # Key IDs are 32 bits, so two keys sharing Peter's name and an ID are found by a birthday
    # search; configuring both would make the verifier's choice ambiguous.
    import random
    rng, seen = random.Random(1), {}
    while True:
        key = rng.randbytes(32)
        kid = key_id("PeterNeumann", key)
        if kid in seen:
            break
        seen[kid] = key
    with pytest.raises(EvidenceError, match="ambiguous key PeterNeumann"):
        verify_note(TEXT + "\n" + PETER_SIG, [("PeterNeumann", seen[kid]), ("PeterNeumann", key)])
    assert verify_note(TEXT + "\n" + PETER_SIG, [PETER, PETER]) == TEXT  # same key twice: fine


def test_it_accepts_sixteen_and_more_signatures():
    ids = [Identity.from_seed(bytes([i]) * 32) for i in range(20)]
    note = TEXT + "\n" + "".join(sign_note(TEXT, f"w{i}.example", k).split("\n\n")[1]
                                 for i, k in enumerate(ids))
    keys = [(f"w{i}.example", k.public_key) for i, k in enumerate(ids)]
    assert verify_note(note, keys) == TEXT
    assert verify_note(note, keys[7:8]) == TEXT


@pytest.mark.parametrize("note", [
    TEXT, TEXT + "\n", TEXT + "\n" + PETER_SIG[:-1], "\x01" + TEXT + "\n" + PETER_SIG,
    b"\xff" + (TEXT + "\n" + PETER_SIG).encode(),
    TEXT + "\n" + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=",
    TEXT + "\n" + PETER_SIG + "Unexpected line.\n", TEXT + "\n" + PETER_SIG * 101,
    TEXT + "\n" + "— PeterNeumann AAA=\n",
])
def test_it_rejects_the_go_malformed_notes(note):
    with pytest.raises(EvidenceError, match="malformed note|not standard padded base64|too short"):
        verify_note(note, [PETER])


def test_every_mangled_vkey_is_refused():
    for i in range(len(PETER_VKEY) + 1):
        for j in range(i + 1, len(PETER_VKEY) + 1):
            if (i, j) != (0, len(PETER_VKEY)):
                with pytest.raises(EvidenceError):
                    parse_vkey(PETER_VKEY[i:j])
    for i in range(len(PETER_VKEY)):
        with pytest.raises(EvidenceError):
            parse_vkey(PETER_VKEY[:i] + chr(ord(PETER_VKEY[i]) + 1) + PETER_VKEY[i + 1:])
    with pytest.raises(EvidenceError):  # wrong length key, with adjusted key hash
        parse_vkey("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==")
    with pytest.raises(EvidenceError):  # unknown algorithm, with adjusted key hash
        parse_vkey("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")


def test_a_note_it_signs_verifies_with_an_independent_nacl_check():
    me = Identity.from_seed(bytes(range(32)))
    body = checkpoint_body("hallmark.test/log", 42, hashlib.sha256(b"r").digest())
    note = sign_note(body, "hallmark.test/log", me)
    text, sig_line = note.split("\n\n")
    assert text + "\n" == body
    prefix = "— hallmark.test/log "
    assert sig_line.startswith(prefix) and sig_line.endswith("\n")
    blob = base64.b64decode(sig_line[len(prefix):-1], validate=True)
    expected_id = hashlib.sha256(b"hallmark.test/log\n\x01" + me.public_key).digest()[:4]
    assert blob[:4] == expected_id
    nacl.signing.VerifyKey(me.public_key).verify(body.encode(), blob[4:])


def test_any_changed_character_of_a_signed_checkpoint_fails():
    me = Identity.from_seed(bytes(range(32)))
    note = sign_checkpoint("hallmark.test/log", 42, hashlib.sha256(b"r").digest(), me)
    assert verify_checkpoint(note, "hallmark.test/log", me.public_key).size == 42
    for i, ch in enumerate(note):
        changed = note[:i] + ("A" if ch != "A" else "B") + note[i + 1:]
        with pytest.raises(EvidenceError):
            verify_checkpoint(changed, "hallmark.test/log", me.public_key)


def test_it_parses_the_c2sp_example_checkpoint():
    cp = parse_checkpoint("example.com/behind-the-sofa\n20852163\n"
                          "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n")
    assert cp == Checkpoint("example.com/behind-the-sofa", 20852163,
                            base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="), ())


def test_a_checkpoint_round_trips_with_extension_lines():
    body = checkpoint_body("o", 0, bytes(32), ("ext one",))
    assert body == "o\n0\n" + base64.b64encode(bytes(32)).decode() + "\next one\n"
    assert parse_checkpoint(body) == Checkpoint("o", 0, bytes(32), ("ext one",))


ROOT = base64.b64encode(bytes(32)).decode()


@pytest.mark.parametrize("body,match", [
    (f"o\n1\n{ROOT}", "end with a newline"), ("o\n1\n", "expected origin, size and root"),
    (f"o\n01\n{ROOT}\n", "leading zeros"), (f"o\n-1\n{ROOT}\n", "decimal"),
    (f"o\n1\n{ROOT[:-4]}\n", "decodes to 30 bytes"), (f"o\n1\n{ROOT}\n\n", "empty line"),
    (f"\n1\n{ROOT}\n", "empty line"), (f"o\n1\n{ROOT.replace('=', '')}\n", "base64"),
])
def test_it_rejects_a_malformed_checkpoint(body, match):
    with pytest.raises(EvidenceError, match=match):
        parse_checkpoint(body)


def test_it_rejects_a_checkpoint_for_another_origin_or_key():
    me, other = Identity.from_seed(bytes(32)), Identity.from_seed(bytes([9]) * 32)
    note = sign_note(checkpoint_body("evil.example/log", 1, bytes(32)), "hallmark.test/log", me)
    with pytest.raises(EvidenceError, match="for origin 'evil.example/log'"):
        verify_checkpoint(note, "hallmark.test/log", me.public_key)
    note = sign_checkpoint("hallmark.test/log", 1, bytes(32), other)
    with pytest.raises(EvidenceError, match="no verifiable signatures"):
        verify_checkpoint(note, "hallmark.test/log", me.public_key)


@pytest.mark.parametrize("call,match", [
    (lambda me: sign_note("no newline", "n", me), "end with a newline"),
    (lambda me: sign_note("a\x07\n", "n", me), "control character"),
    (lambda me: sign_note("a\n", "bad name", me), "key name"),
    (lambda me: sign_note("a\n", "a+b", me), "key name"),
    (lambda me: checkpoint_body("", 1, bytes(32)), "origin"),
    (lambda me: checkpoint_body("o", -1, bytes(32)), "size"),
    (lambda me: checkpoint_body("o", 1, bytes(31)), "32-byte"),
    (lambda me: checkpoint_body("o", 1, bytes(32), ("",)), "extension"),
])
def test_it_refuses_to_sign_malformed_notes(call, match):
    with pytest.raises(EvidenceError, match=match):
        call(Identity.from_seed(bytes(32)))
