"""Evidence: Ed25519 identities, DSSE envelopes, in-toto statements, commitments, Merkle logs.

Modules (see docs/evidence.md):
- `identity`: Ed25519 `Identity`, `verify_signature`, `keyid_of`, base64, key files;
- `canonical`: `canonical_json`, `sha256_hex`, strict JSON parsing;
- `dsse`: DSSE v1 `pae`, `sign_envelope`, `verify_envelope`;
- `intoto`: in-toto Statement v1 `statement`, `parse_statement`;
- `commitment`: salted commitments to key blobs and their openings;
- `merkle`: RFC 6962/9162 hashing, proofs from stored subtree hashes, verifiers;
- `note`: C2SP signed notes and tlog checkpoints;
- `proofbundle`: C2SP tlog-proof@v1 bundles;
- `logentry`: the byte encoding of every log entry kind;
- `report`: building a hallmark/report/v1 document (audited by `verifier.audit`);
- `errors`: `EvidenceError`.
"""
