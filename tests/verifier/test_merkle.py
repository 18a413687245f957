"""RFC 6962 / RFC 9162 Merkle trees: published vectors, storage-based proofs, verifiers."""
import hashlib
import random

import pytest

from verifier.evidence.errors import EvidenceError
from verifier.evidence.merkle import (
    EMPTY_ROOT,
    MemoryLog,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    nodes_completed_by_append,
    root,
    root_at,
    verify_consistency,
    verify_inclusion,
)

# The standard 8-leaf tree of RFC 6962 / Certificate Transparency, with the roots for sizes
# 0..8 and the proofs published in transparency-dev/merkle proof/verify_test.go (inherited
# from certificate-transparency-go).
CT_LEAVES = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f")]
CT_ROOTS = [bytes.fromhex(h) for h in (
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")]
# (leaf index, tree size, proof), zero-based indexes.
CT_INCLUSION = [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (0, 1, []),
]
CT_CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]


# --- an independent implementation, straight from RFC 6962 §2.1 -------------------------


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _mth(d: list[bytes]) -> bytes:
    if not d:
        return _h(b"")
    if len(d) == 1:
        return _h(b"\x00" + d[0])
    k = 1
    while k * 2 < len(d):
        k *= 2
    return _h(b"\x01" + _mth(d[:k]) + _mth(d[k:]))


def _path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = 1
    while k * 2 < len(d):
        k *= 2
    if m < k:
        return _path(m, d[:k]) + [_mth(d[k:])]
    return _path(m - k, d[k:]) + [_mth(d[:k])]


def _subproof(m: int, d: list[bytes], whole: bool) -> list[bytes]:
    if m == len(d):
        return [] if whole else [_mth(d)]
    k = 1
    while k * 2 < len(d):
        k *= 2
    if m <= k:
        return _subproof(m, d[:k], whole) + [_mth(d[k:])]
    return _subproof(m - k, d[k:], False) + [_mth(d[:k])]


def _entries(n: int) -> list[bytes]:
    return [b"entry %d" % i for i in range(n)]


@pytest.fixture(scope="module")
def ct_log():
    log = MemoryLog()
    for e in CT_LEAVES:
        log.append(e)
    return log


@pytest.fixture(scope="module")
def big_log():
    log = MemoryLog()
    for e in _entries(70):
        log.append(e)
    return log


# --- published vectors ------------------------------------------------------------------


def test_the_empty_tree_root_is_sha256_of_nothing(ct_log):
    assert EMPTY_ROOT == CT_ROOTS[0] == root([]) == ct_log.root(0)


def test_roots_match_the_published_rfc6962_vectors(ct_log):
    leaves = [leaf_hash(e) for e in CT_LEAVES]
    for size in range(9):
        assert root(leaves[:size]) == CT_ROOTS[size], size
        assert ct_log.root(size) == CT_ROOTS[size], size


@pytest.mark.parametrize("index,size,proof", CT_INCLUSION)
def test_inclusion_proofs_match_the_published_vectors_byte_for_byte(ct_log, index, size, proof):
    expected = [bytes.fromhex(h) for h in proof]
    assert ct_log.inclusion_proof(index, size) == expected
    assert verify_inclusion(leaf_hash(CT_LEAVES[index]), index, size, expected, CT_ROOTS[size])


@pytest.mark.parametrize("old,new,proof", CT_CONSISTENCY)
def test_consistency_proofs_match_the_published_vectors_byte_for_byte(ct_log, old, new, proof):
    expected = [bytes.fromhex(h) for h in proof]
    assert ct_log.consistency_proof(old, new) == expected
    assert verify_consistency(old, new, CT_ROOTS[old], CT_ROOTS[new], expected)


# --- properties over every size up to 70 -------------------------------------------------


def test_storage_roots_and_proofs_agree_with_the_independent_rfc6962_implementation(big_log):
    d = _entries(70)
    for n in range(1, 71):
        assert big_log.root(n) == _mth(d[:n])
        for m in range(n):
            assert big_log.inclusion_proof(m, n) == _path(m, d[:n]), (m, n)
        for m in range(1, n):
            assert big_log.consistency_proof(m, n) == _subproof(m, d[:n], True), (m, n)


def test_every_inclusion_proof_verifies_and_any_bit_flip_fails(big_log):
    rng = random.Random(6962)
    for n in range(1, 71):
        r = big_log.root(n)
        for m in range(n):
            leaf, proof = leaf_hash(b"entry %d" % m), big_log.inclusion_proof(m, n)
            assert verify_inclusion(leaf, m, n, proof, r)
            for i in range(len(proof)):
                bad = bytearray(proof[i])
                bad[rng.randrange(32)] ^= 1 << rng.randrange(8)
                assert not verify_inclusion(leaf, m, n, proof[:i] + [bytes(bad)] + proof[i + 1:], r)
            flipped = bytearray(leaf)
            flipped[rng.randrange(32)] ^= 1 << rng.randrange(8)
            assert not verify_inclusion(bytes(flipped), m, n, proof, r)
            assert not verify_inclusion(leaf, m, n, proof, node_hash(r, r))
            assert not verify_inclusion(leaf, m, n, proof + [r], r)
            assert not verify_inclusion(leaf, m, n, [r] + proof, r)
            if proof:
                assert not verify_inclusion(leaf, m, n, proof[:-1], r)
            if n > 1:
                assert not verify_inclusion(leaf, (m + 1) % n, n, proof, r)


def test_every_consistency_proof_verifies_and_any_bit_flip_fails(big_log):
    rng = random.Random(9162)
    roots = [big_log.root(n) for n in range(71)]
    for n in range(1, 71):
        for m in range(0, n + 1):
            proof = big_log.consistency_proof(m, n)
            assert verify_consistency(m, n, roots[m], roots[n], proof), (m, n)
            for i in range(len(proof)):
                bad = bytearray(proof[i])
                bad[rng.randrange(32)] ^= 1 << rng.randrange(8)
                assert not verify_consistency(m, n, roots[m], roots[n],
                                              proof[:i] + [bytes(bad)] + proof[i + 1:])
            if 0 < m < n:
                assert not verify_consistency(m, n, roots[m], roots[n], [])
                assert not verify_consistency(m, n, roots[m], roots[n], proof[:-1])
                assert not verify_consistency(m, n, roots[m], roots[n], proof + [roots[n]])
                assert not verify_consistency(m, n, roots[n], roots[m], proof)
                assert not verify_consistency(m, n, node_hash(roots[m], roots[m]), roots[n], proof)
                if m > 1:
                    assert not verify_consistency(m - 1, n, roots[m], roots[n], proof)


def test_a_forked_log_has_no_consistency_proof_that_verifies():
    honest, fork = MemoryLog(), MemoryLog()
    for e in _entries(20):
        honest.append(e)
    for e in _entries(12) + [b"rewritten %d" % i for i in range(12, 30)]:
        fork.append(e)
    # The fork can only prove its own history: against the honest root at 20 it fails.
    assert not verify_consistency(20, 30, honest.root(20), fork.root(30), fork.consistency_proof(20, 30))
    assert verify_consistency(20, 30, fork.root(20), fork.root(30), fork.consistency_proof(20, 30))


# --- the storage API ---------------------------------------------------------------------


class _CountingStore:
    """A node table that records every get_nodes call (the number of database queries)."""

    def __init__(self, log: MemoryLog) -> None:
        self.log, self.calls = log, []

    def __call__(self, coords):
        self.calls.append(list(coords))
        return self.log.get_nodes(coords)


def test_each_proof_reads_its_nodes_in_one_call_of_o_log_n_rows():
    log = MemoryLog(keep_entries=False)
    for i in range(1000):
        log.append(b"%d" % i)
    store = _CountingStore(log)
    for call, bound in [(lambda: root_at(1000, store), 10),
                        (lambda: inclusion_proof(617, 1000, store), 2 * 10),
                        (lambda: consistency_proof(333, 1000, store), 2 * 10)]:
        store.calls.clear()
        call()
        assert len(store.calls) == 1 and len(store.calls[0]) <= bound


def test_appending_stores_exactly_the_perfect_subtrees_each_from_its_two_children():
    store: dict = {}
    leaves = [leaf_hash(e) for e in _entries(37)]
    for i, leaf in enumerate(leaves):
        rows = nodes_completed_by_append(i, leaf, lambda cs: {c: store[c] for c in cs})
        assert rows[0] == (0, i, leaf)
        store.update({(lv, j): h for lv, j, h in rows})
    for (level, j), h in store.items():
        assert h == _mth(_entries(37)[j << level:(j + 1) << level])
    assert len(store) == 37 + 18 + 9 + 4 + 2 + 1  # fewer than 2n rows


def test_appending_reads_nothing_for_an_even_index_and_the_left_siblings_otherwise():
    log = MemoryLog()
    for e in _entries(7):
        log.append(e)
    store = _CountingStore(log)
    nodes_completed_by_append(6, leaf_hash(b"x"), store)
    assert store.calls == []
    nodes_completed_by_append(7, leaf_hash(b"x"), store)
    assert store.calls == [[(0, 6), (1, 2), (2, 0)]]


@pytest.mark.parametrize("call,match", [
    (lambda g: inclusion_proof(5, 5, g), "not in a tree of size 5"),
    (lambda g: inclusion_proof(0, 0, g), "size must be an integer >= 1"),
    (lambda g: consistency_proof(6, 5, g), "larger than new size"),
    (lambda g: root_at(-1, g), "size must be an integer >= 0"),
    (lambda g: nodes_completed_by_append(0, b"entry bytes", g), "32-byte leaf hash"),
    (lambda g: inclusion_proof(1, 9, g), "no 32-byte hash for subtree"),
])
def test_it_rejects_impossible_requests_and_an_incomplete_node_table(call, match):
    log = MemoryLog()
    for e in _entries(5):
        log.append(e)
    with pytest.raises(EvidenceError, match=match):
        call(log.get_nodes)


@pytest.mark.parametrize("args", [
    (b"short", 0, 1, [], EMPTY_ROOT), (EMPTY_ROOT, -1, 1, [], EMPTY_ROOT),
    (EMPTY_ROOT, 0, 1, [b"short"], EMPTY_ROOT), (EMPTY_ROOT, 0, True, [], EMPTY_ROOT),
    (EMPTY_ROOT, 1, 1, [], EMPTY_ROOT), (EMPTY_ROOT, 0, 0, [], EMPTY_ROOT),
])
def test_inclusion_verification_answers_false_on_malformed_input(args):
    assert verify_inclusion(*args) is False


def test_consistency_verification_handles_the_trivial_sizes():
    r = leaf_hash(b"a")
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert verify_consistency(0, 5, EMPTY_ROOT, r, [])
    assert not verify_consistency(0, 5, r, r, [])  # a size-0 tree has the empty root
    assert not verify_consistency(3, 3, r, EMPTY_ROOT, [])
    assert not verify_consistency(3, 3, r, r, [r])
    assert not verify_consistency(4, 3, r, r, [r])
    assert not verify_consistency(1, 2, r, b"short", [r])
