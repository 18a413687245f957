"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs from stored subtree hashes, and verifiers.

Hashing (RFC 6962 §2.1): leaf = SHA-256(0x00 ‖ entry), node = SHA-256(0x01 ‖ left ‖ right);
the root of n > 1 leaves is node(MTH(first k), MTH(rest)) with k the largest power of two
below n; the empty tree's root is SHA-256("").

Storage model (what the registry keeps): the hash of every *perfect aligned subtree* as
(level, index) -> hash, where level 0 holds the leaf hashes and node (l, i) covers leaves
[i·2^l, (i+1)·2^l). A log of n entries stores fewer than 2n rows and never rewrites one:
appending leaf i creates (0, i) and each perfect subtree it completes (`nodes_completed_by_append`).
Every root, inclusion proof and consistency proof is a fold over O(log n) such rows, fetched
with ONE call `get_nodes(coords) -> {coord: hash}` (one database query), never by rehashing the log.

Vocabulary: an *entry* is the logged bytes; a *leaf* is its leaf hash (`leaf_hash(entry)`).
"""
from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping, Sequence

from verifier.evidence.errors import EvidenceError

Coord = tuple[int, int]  # (level, index) of a perfect aligned subtree
GetNodes = Callable[[list[Coord]], Mapping[Coord, bytes]]
EMPTY_ROOT = hashlib.sha256(b"").digest()
HASH_SIZE = 32


def leaf_hash(entry: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 ‖ entry).

    Example:
        >>> leaf_hash(b"").hex()[:16]
        '6e340b9cffb37a98'
    """
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 ‖ left ‖ right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """The Merkle tree hash of a list of leaf hashes (the recursive reference definition).

    For tests and small trees; the registry uses `root_at` over stored subtrees.

    Example:
        >>> root([]) == EMPTY_ROOT and root([leaf_hash(b"")]) == leaf_hash(b"")
        True
    """
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hashes[0]
    k = _split(n)
    return node_hash(root(leaf_hashes[:k]), root(leaf_hashes[k:]))


# --- which stored subtrees a computation needs ------------------------------------------------


def _split(n: int) -> int:
    """The largest power of two strictly below n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _cover(begin: int, end: int) -> list[Coord]:
    """The perfect aligned subtrees tiling leaves [begin, end), left to right, largest first.

    For the ranges RFC 6962 recursion produces (begin a multiple of a power of two at least
    end - begin), their right fold is the range's Merkle tree hash.
    """
    out = []
    while begin < end:
        size = begin & -begin if begin else 1 << ((end - begin).bit_length() - 1)
        while begin + size > end:
            size >>= 1
        level = size.bit_length() - 1
        out.append((level, begin >> level))
        begin += size
    return out


def _inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes form PATH(index, D[0:size]) (RFC 6962 §2.1.1), leaf first."""
    a, b, path = 0, size, []
    while b - a > 1:
        k = _split(b - a)
        if index < a + k:
            path.append((a + k, b))
            b = a + k
        else:
            path.append((a, a + k))
            a = a + k
    return path[::-1]


def _consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes form PROOF(old, D[0:new]) (RFC 6962 §2.1.2), in order."""
    a, b, m, whole, out = 0, new_size, old_size, True, []
    while m != b - a:
        k = _split(b - a)
        if m <= k:
            out.append((a + k, b))
            b = a + k
        else:
            out.append((a, a + k))
            m -= k
            a += k
            whole = False
    if not whole:
        out.append((a, b))
    return out[::-1]


def _fetch(coords: Iterable[Coord], get_nodes: GetNodes) -> Mapping[Coord, bytes]:
    """One call to `get_nodes` for every coordinate needed, checking that all came back."""
    wanted = sorted(set(coords))
    if not wanted:
        return {}
    nodes = get_nodes(wanted)
    for c in wanted:
        h = nodes.get(c)
        if not isinstance(h, (bytes, bytearray)) or len(h) != HASH_SIZE:
            raise EvidenceError(f"log storage returned no 32-byte hash for subtree (level, index) "
                                f"= {c}; the node table is incomplete for this tree size")
    return nodes


def _fold(cover: Sequence[Coord], nodes: Mapping[Coord, bytes]) -> bytes:
    h = bytes(nodes[cover[-1]])
    for c in reversed(cover[:-1]):
        h = node_hash(bytes(nodes[c]), h)
    return h


def _prove(ranges: Sequence[tuple[int, int]], get_nodes: GetNodes) -> list[bytes]:
    covers = [_cover(a, b) for a, b in ranges]
    nodes = _fetch((c for cover in covers for c in cover), get_nodes)
    return [_fold(cover, nodes) for cover in covers]


def _check_size(name: str, value: int, low: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise EvidenceError(f"{name} must be an integer >= {low}, received {value!r}")


# --- the storage-friendly API --------------------------------------------------------------


def nodes_completed_by_append(index: int, leaf: bytes,
                              get_nodes: GetNodes) -> list[tuple[int, int, bytes]]:
    """The rows to store when appending the leaf with index `index` to a log of `index` leaves.

    Args:
        index: the new leaf's index (= the log's size before the append).
        leaf: the new leaf's hash, `leaf_hash(entry)`.
        get_nodes: fetches stored subtree hashes; called at most once, with the left siblings.

    Returns:
        [(0, index, leaf), then (level, i, hash) for every perfect subtree this leaf completes,
        lowest first], each computed from its two children. Store them all.

    Example:
        >>> store = {}
        >>> get = lambda coords: {c: store[c] for c in coords}
        >>> for i in range(4):
        ...     store.update({(l, j): h for l, j, h in
        ...                   nodes_completed_by_append(i, leaf_hash(b"%d" % i), get)})
        >>> sorted(store) == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (2, 0)]
        True
    """
    _check_size("index", index)
    if not isinstance(leaf, (bytes, bytearray)) or len(leaf) != HASH_SIZE:
        raise EvidenceError("leaf must be a 32-byte leaf hash (leaf_hash(entry)), not the entry")
    need = []
    level = 1
    while (index + 1) % (1 << level) == 0:
        need.append((level - 1, ((index + 1) >> (level - 1)) - 2))
        level += 1
    nodes = _fetch(need, get_nodes)
    out = [(0, index, bytes(leaf))]
    h = bytes(leaf)
    for lvl, sibling in enumerate(need, start=1):
        h = node_hash(bytes(nodes[sibling]), h)
        out.append((lvl, ((index + 1) >> lvl) - 1, h))
    return out


def root_at(size: int, get_nodes: GetNodes) -> bytes:
    """The root hash of the log's first `size` leaves (one `get_nodes` call, ≤ log2 n rows)."""
    _check_size("size", size)
    if size == 0:
        return EMPTY_ROOT
    cover = _cover(0, size)
    return _fold(cover, _fetch(cover, get_nodes))


def inclusion_proof(index: int, size: int, get_nodes: GetNodes) -> list[bytes]:
    """The RFC 9162 inclusion proof of leaf `index` in the tree of the first `size` leaves.

    Returns:
        The audit path, from the leaf's sibling up to the root's child (≤ ⌈log2 size⌉ hashes).
    """
    _check_size("size", size, 1)
    _check_size("index", index)
    if index >= size:
        raise EvidenceError(f"leaf index {index} is not in a tree of size {size}")
    return _prove(_inclusion_ranges(index, size), get_nodes)


def inclusion_proofs(indexes: Sequence[int], size: int,
                     get_nodes: GetNodes) -> list[list[bytes]]:
    """`inclusion_proof` of each index, with one `get_nodes` call for all of them (a report's
    many proofs in one database query).

    Example:
        >>> log = MemoryLog()
        >>> _ = [log.append(bytes([i])) for i in range(5)]
        >>> inclusion_proofs([0, 3], 5, log.get_nodes) == [log.inclusion_proof(0),
        ...                                                 log.inclusion_proof(3)]
        True
    """
    _check_size("size", size, 1)
    for index in indexes:
        _check_size("index", index)
        if index >= size:
            raise EvidenceError(f"leaf index {index} is not in a tree of size {size}")
    covers = [[_cover(a, b) for a, b in _inclusion_ranges(i, size)] for i in indexes]
    nodes = _fetch((c for proof in covers for cover in proof for c in cover), get_nodes)
    return [[_fold(cover, nodes) for cover in proof] for proof in covers]


def consistency_proof(old_size: int, new_size: int, get_nodes: GetNodes) -> list[bytes]:
    """The RFC 9162 consistency proof that the tree of `old_size` leaves is a prefix of `new_size`.

    Returns:
        The proof hashes; empty when old_size is 0 or equals new_size.
    """
    _check_size("old_size", old_size)
    _check_size("new_size", new_size)
    if old_size > new_size:
        raise EvidenceError(f"old size {old_size} is larger than new size {new_size}; a "
                            "consistency proof goes from the smaller tree to the larger")
    if old_size == 0 or old_size == new_size:
        return []
    return _prove(_consistency_ranges(old_size, new_size), get_nodes)


# --- verifiers (RFC 9162 §2.1.3.2 and §2.1.4.2) -------------------------------------------


def _is_hash(h: object) -> bool:
    return isinstance(h, (bytes, bytearray)) and len(h) == HASH_SIZE


def _is_count(n: object) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 0


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes],
                     root: bytes) -> bool:
    """RFC 9162 §2.1.3.2: does `proof` show leaf hash `leaf` at `index` in the tree with `root`?

    Never raises: malformed input does not verify.
    """
    if not (_is_hash(leaf) and _is_hash(root) and _is_count(index) and _is_count(size)):
        return False
    if not all(_is_hash(p) for p in proof) or index >= size:
        return False
    fn, sn, r = index, size - 1, bytes(leaf)
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(bytes(p), r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, bytes(p))
        fn >>= 1
        sn >>= 1
    return sn == 0 and hmac.compare_digest(r, bytes(root))


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2: is the tree (old_size, old_root) a prefix of (new_size, new_root)?

    Equal sizes need equal roots and an empty proof; old size 0 needs the empty-tree root and
    an empty proof. Never raises: malformed input does not verify.
    """
    if not (_is_count(old_size) and _is_count(new_size) and _is_hash(old_root)
            and _is_hash(new_root) and all(_is_hash(p) for p in proof)):
        return False
    if old_size > new_size:
        return False
    if old_size == new_size:
        return not proof and hmac.compare_digest(bytes(old_root), bytes(new_root))
    if old_size == 0:
        return not proof and hmac.compare_digest(bytes(old_root), EMPTY_ROOT)
    if not proof:
        return False
    path = [bytes(p) for p in proof]
    if old_size & (old_size - 1) == 0:
        path.insert(0, bytes(old_root))
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return (sn == 0 and hmac.compare_digest(fr, bytes(old_root))
            and hmac.compare_digest(sr, bytes(new_root)))


class MemoryLog:
    """An append-only log kept in a dict, over the same storage API the registry uses.

    For tests, benchmarks and offline tools; the registry keeps the same rows in its database.

    Example:
        >>> log = MemoryLog()
        >>> [log.append(e) for e in (b"a", b"b", b"c")]
        [0, 1, 2]
        >>> verify_inclusion(leaf_hash(b"b"), 1, 3, log.inclusion_proof(1), log.root())
        True
    """

    def __init__(self, keep_entries: bool = True) -> None:
        self.nodes: dict[Coord, bytes] = {}  # (level, index) -> hash of each perfect subtree
        self.entries: list[bytes] = []  # the logged entries (empty when keep_entries is False)
        self._keep = keep_entries
        self._size = 0

    @property
    def size(self) -> int:
        """Number of entries appended so far."""
        return self._size

    def get_nodes(self, coords: list[Coord]) -> dict[Coord, bytes]:
        """The `get_nodes` callback over this log's node table."""
        return {c: self.nodes[c] for c in coords if c in self.nodes}

    def append(self, entry: bytes) -> int:
        """Append an entry; returns its index."""
        return self.append_leaf(leaf_hash(entry), entry)

    def append_leaf(self, leaf: bytes, entry: bytes | None = None) -> int:
        """Append a precomputed leaf hash (the entry is kept only if given and kept)."""
        index = self._size
        for level, i, h in nodes_completed_by_append(index, leaf, self.get_nodes):
            self.nodes[(level, i)] = h
        if self._keep and entry is not None:
            self.entries.append(entry)
        self._size += 1
        return index

    def root(self, size: int | None = None) -> bytes:
        """Root hash at `size` (default: the current size)."""
        return root_at(self._size if size is None else size, self.get_nodes)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Inclusion proof of `index` at `size` (default: the current size)."""
        return inclusion_proof(index, self._size if size is None else size, self.get_nodes)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """Consistency proof from `old_size` to `new_size` (default: the current size)."""
        return consistency_proof(old_size, self._size if new_size is None else new_size,
                                 self.get_nodes)
