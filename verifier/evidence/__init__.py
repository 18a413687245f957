"""Evidence: Ed25519 identities, DSSE envelopes, in-toto statements, commitments, Merkle logs."""
