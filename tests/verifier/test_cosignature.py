"""C2SP tlog-cosignature v1 (Ed25519): the bytes on the line, checked independently."""
import base64
import hashlib
import struct

import nacl.signing
import pytest

from verifier.evidence.cosignature import (
    Witness,
    add_cosignatures,
    cosign,
    parse_witness_vkey,
    signed_message,
    verify_cosignatures,
)
from verifier.evidence.errors import EvidenceError
from verifier.evidence.identity import Identity
from verifier.evidence.note import sign_checkpoint, vkey

TEXT = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
ME = Identity.from_seed(bytes(range(32)))
W = Witness("witness.example.com/w1", ME.public_key)


def test_a_cosignature_line_has_the_spec_key_id_timestamp_and_signed_message():
    line = cosign(TEXT, W.name, ME, 1679315147)
    dash, name, blob = line.rstrip("\n").split(" ")
    assert (dash, name) == ("\u2014", W.name)
    raw = base64.b64decode(blob, validate=True)
    assert raw[:4] == hashlib.sha256(W.name.encode() + b"\n\x04" + ME.public_key).digest()[:4]
    assert struct.unpack(">Q", raw[4:12]) == (1679315147,)
    message = b"cosignature/v1\ntime 1679315147\n" + TEXT.encode()
    nacl.signing.VerifyKey(ME.public_key).verify(message, raw[12:])  # raises if wrong
    assert signed_message(TEXT, 1679315147) == message


def test_a_witness_vkey_has_type_0x04_and_round_trips():
    text = W.vkey
    name, kid, material = text.split("+", 2)
    assert base64.b64decode(material)[0] == 0x04 and kid == W.key_id.hex()
    assert parse_witness_vkey(text) == W
    with pytest.raises(EvidenceError, match="signature type 0x04"):
        parse_witness_vkey(vkey(W.name, ME.public_key))  # a plain note key is not a witness key


def test_verification_ignores_unknown_keys_and_the_logs_own_signature():
    note = sign_checkpoint("example.com/log", 3, bytes(32), ME)
    assert verify_cosignatures(note, [Witness("example.com/log", ME.public_key)]) == []
    text = note[:note.index("\n\n") + 1]
    cosigned = add_cosignatures(note, [cosign(text, W.name, ME, 7)])
    other = Witness("other.example/w", Identity.from_seed(bytes(32)).public_key)
    assert [c.timestamp for c in verify_cosignatures(cosigned, [other, W])] == [7]
    assert add_cosignatures(cosigned, [cosign(text, W.name, ME, 7)]) == cosigned


def test_a_cosignature_moved_to_another_checkpoint_fails():
    line = cosign(TEXT, W.name, ME, 5)
    other = sign_checkpoint("example.com/behind-the-sofa", 20852164, bytes(32), ME)
    with pytest.raises(EvidenceError, match="invalid cosignature by witness"):
        verify_cosignatures(other + line, [W])


@pytest.mark.parametrize("ts", [-1, 2**63, True, 1.5])
def test_a_timestamp_outside_u63_is_refused(ts):
    with pytest.raises(EvidenceError, match="timestamp"):
        signed_message(TEXT, ts)
