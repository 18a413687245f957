"""`uchida`: projection bits trained into the weights (Uchida et al., ICMR 2017). White-box.

The key holds T fair-coin bits b, a seed and the names and shapes of the host layers. The
host vector w (length M) is built from those layers (`host_vector`); the owner trains so that
sign(X·w) = b, with X a secret (T, M) projection regenerated from the seed, never stored.
The bits are derived from the seed too, and a key whose bits differ is refused
(`keyfile.KeyMaterialError`): nobody can pick bits after looking at a model.

Projection. A dense Gaussian X of 256 × 1M costs ~1 GB and ~0.1 s per key, too much for a
registry that tests thousands of keys against one suspect. We use a seeded Kronecker
projection instead: w is laid out row-major in an (N1, N2) grid (N2 = ceil(sqrt M),
zero-padded), and bit j = (a, b) of a t1 × t2 grid of bits is

    y_j = u_a · W · v_b,   U = (t1, N1), V = (t2, N2) with orthogonal rows of norm sqrt(N),

so X = U ⊗ V: every entry of every row is non-zero (each bit is spread over all weights),
rows are orthogonal when w fills the grid, X has the same scale as Uchida's N(0, 1) matrix,
and one key costs two small QR factorizations plus an (M × t2) product: ~3 ms for
M = 2^20 on one core (docs/schemes-uchida-trigger-set.md). Signs of the QR factors are
normalised (positive diag R), so X is the same on every LAPACK.

Test. The matches between b and the extracted bits are Binomial(T, 1/2) under H0 "the suspect
is independent of this key" (exact; "conservative" when a projection is exactly 0).

Modules, each importing only those above it: `projection` (X from the seed), `key` (Params,
Key, generate_key, bit derivation), `align` (the invariant and moments hosts: canonical form of
conv and Linear chains, dummy units taken out), `host` (the host vector), `locate` (readings of renamed, transposed or fused
host layers by shape), `embed` (regularizer, embed), `verify` (project, extract, test: under
the key's names, else over every reading with a Bonferroni correction). This module is the
contract and re-exports them.
"""
from __future__ import annotations

from verifier.schemes.uchida.embed import embed, regularizer
from verifier.schemes.uchida.host import host_vector
from verifier.schemes.uchida.key import (
    HOSTS,
    NAME,
    CapacityError,
    Key,
    LayerMismatch,
    Params,
    UchidaError,
    derive_bits,
    generate_key,
)
from verifier.schemes.uchida.verify import ACCESS, CLAIM, extract, project, test, test_many

__all__ = [
    "ACCESS", "CLAIM", "HOSTS", "NAME", "CapacityError", "Key", "LayerMismatch", "Params", "UchidaError",
    "derive_bits", "embed", "extract", "generate_key", "host_vector", "project",
    "regularizer", "test", "test_many",
]
