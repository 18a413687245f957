"""C2SP tlog-proof@v1 bundles: writing, strict parsing and offline verification."""
import base64
import hashlib

import pytest

from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import Identity
from verifier.evidence.merkle import MemoryLog
from verifier.evidence.note import sign_checkpoint
from verifier.evidence.proofbundle import Bundle, make_bundle, parse_bundle, verify_bundle

ORIGIN = "hallmark.test/log"
LOG_KEY = Identity.from_seed(bytes([7]) * 32)


@pytest.fixture(scope="module")
def logged():
    log = MemoryLog()
    for i in range(11):
        log.append(b"entry %d" % i)
    note = sign_checkpoint(ORIGIN, log.size, log.root(), LOG_KEY)
    return log, note, make_bundle(6, log.inclusion_proof(6), note)


def test_it_writes_the_c2sp_layout(logged):
    log, note, text = logged
    proof = log.inclusion_proof(6)
    assert text == ("c2sp.org/tlog-proof@v1\nindex 6\n"
                    + "".join(base64.b64encode(h).decode() + "\n" for h in proof) + "\n" + note)


def test_it_round_trips_with_and_without_extra_data(logged):
    log, note, text = logged
    assert parse_bundle(text) == Bundle(6, tuple(log.inclusion_proof(6)), note, None)
    with_extra = make_bundle(0, log.inclusion_proof(0), note, extra=b"context")
    assert with_extra.split("\n")[1] == "extra " + base64.b64encode(b"context").decode()
    assert parse_bundle(with_extra).extra == b"context"


def test_it_verifies_an_entry_offline_and_returns_the_checkpoint(logged):
    log, _, text = logged
    cp = verify_bundle(b"entry 6", text, ORIGIN, LOG_KEY.public_key)
    assert (cp.origin, cp.size, cp.root) == (ORIGIN, 11, log.root())


def test_a_proof_with_no_hashes_verifies_for_a_one_entry_log():
    log = MemoryLog()
    log.append(b"only")
    text = make_bundle(0, [], sign_checkpoint(ORIGIN, 1, log.root(), LOG_KEY))
    assert verify_bundle(b"only", text, ORIGIN, LOG_KEY.public_key).size == 1


def test_it_rejects_another_entry(logged):
    with pytest.raises(EvidenceError, match="inclusion proof fails"):
        verify_bundle(b"entry 5", logged[2], ORIGIN, LOG_KEY.public_key)


def test_it_rejects_a_checkpoint_signed_by_another_key_or_for_another_origin(logged):
    with pytest.raises(EvidenceError, match="checkpoint in the proof bundle: note has no verif"):
        verify_bundle(b"entry 6", logged[2], ORIGIN, Identity.from_seed(bytes(32)).public_key)
    with pytest.raises(EvidenceError, match="checkpoint in the proof bundle"):
        verify_bundle(b"entry 6", logged[2], "other.example/log", LOG_KEY.public_key)


def test_it_rejects_an_index_outside_the_checkpointed_tree(logged):
    log, note, _ = logged
    text = make_bundle(11, log.inclusion_proof(6), note)
    with pytest.raises(EvidenceError, match="outside the checkpointed tree of size 11"):
        verify_bundle(b"entry 6", text, ORIGIN, LOG_KEY.public_key)


def test_any_changed_character_of_a_bundle_fails(logged):
    text = logged[2]
    for i, ch in enumerate(text):
        for new in {"A" if ch != "A" else "B", "7" if ch != "7" else "8"}:
            changed = text[:i] + new + text[i + 1:]
            with pytest.raises(EvidenceError):
                verify_bundle(b"entry 6", changed, ORIGIN, LOG_KEY.public_key)


H64 = base64.b64encode(hashlib.sha256(b"x").digest()).decode()


@pytest.mark.parametrize("text,match", [
    ("wrong-header\nindex 0\n\ncheckpoint\n", "first line"),
    ("c2sp.org/tlog-proof@v1\nextra !!notbase64!!\nindex 0\n\ncheckpoint\n", "extra data"),
    ("c2sp.org/tlog-proof@v1\n\n\ncheckpoint\n", "missing the 'index N' line"),
    ("c2sp.org/tlog-proof@v1\nindex notanumber\n\ncheckpoint\n", "not a decimal"),
    ("c2sp.org/tlog-proof@v1\nindex -5\n\ncheckpoint\n", "not a decimal"),
    ("c2sp.org/tlog-proof@v1\nindex 05\n\ncheckpoint\n", "leading zeros"),
    ("c2sp.org/tlog-proof@v1\nindex 0\n!!notbase64!!\n\ncheckpoint\n", "proof hash 0"),
    ("c2sp.org/tlog-proof@v1\nindex 0\n" + base64.b64encode(bytes(64)).decode()
     + "\n\ncheckpoint\n", "decodes to 64 bytes"),
    ("c2sp.org/tlog-proof@v1\nindex 0\n" + H64 + "\n", "no blank line"),
    (b"bytes", "expected text"),
])
def test_it_rejects_malformed_bundles_like_the_go_reference(text, match):
    with pytest.raises(EvidenceError, match=match):
        parse_bundle(text)


@pytest.mark.parametrize("args,match", [
    ((-1, [], "cp\n"), "index"), ((0, [b"short"], "cp\n"), "32 bytes"),
    ((0, [], "no newline"), "ending with a newline"),
])
def test_it_refuses_to_write_a_malformed_bundle(args, match):
    with pytest.raises(EvidenceError, match=match):
        make_bundle(*args)
