"""The append-only transparency log in the database (RFC 6962 hashing, C2SP checkpoints).

Appends take a row lock on LogHead, so concurrent appenders are serialized: no index is
skipped or used twice and the tree never forks. Each append stores the leaf and every
perfect subtree it completes, so any root or proof needs O(log n) stored nodes, read in
one query.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F

from registry.identities import registry_identity
from registry.models import Checkpoint, LogEntry, LogHead, MerkleNode
from verifier.evidence import merkle, note, proofbundle


class LogRangeError(ValueError):
    """A proof was asked for an index or size the log does not have."""


def _get_nodes(coords: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    if not coords:
        return {}
    wanted = set(coords)
    levels = {lvl for lvl, _ in wanted}
    indexes = {idx for _, idx in wanted}
    rows = MerkleNode.objects.filter(level__in=levels, index__in=indexes).values_list(
        "level", "index", "hash")
    return {(lvl, idx): bytes(h) for lvl, idx, h in rows if (lvl, idx) in wanted}


def _reserve(count: int) -> int:
    """Reserve `count` consecutive indexes and return the first; the UPDATE holds the LogHead
    row lock until commit, which serializes appenders."""
    if not LogHead.objects.filter(pk=1).update(size=F("size") + count):
        LogHead.objects.bulk_create([LogHead(pk=1, size=0)], ignore_conflicts=True)  # first ever
        LogHead.objects.filter(pk=1).update(size=F("size") + count)
    return LogHead.objects.values_list("size", flat=True).get(pk=1) - count


def append(kind: str, data: bytes) -> LogEntry:
    """Append one entry (bytes from `verifier.evidence.logentry`)."""
    return append_many(kind, [data])[0]


def append_many(kind: str, entries: list[bytes]) -> list[LogEntry]:
    """Append entries in order in one transaction (joining the caller's, if any)."""
    with transaction.atomic(savepoint=False):
        first = _reserve(len(entries))
        rows, nodes, fresh = [], [], {}

        def get_nodes(coords: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
            found = {c: fresh[c] for c in coords if c in fresh}
            return {**found, **_get_nodes([c for c in coords if c not in fresh])}

        for index, data in enumerate(entries, start=first):
            leaf = merkle.leaf_hash(data)
            rows.append(LogEntry(index=index, kind=kind, body=data, leaf_hash=leaf))
            for lvl, idx, h in merkle.nodes_completed_by_append(index, leaf, get_nodes):
                fresh[(lvl, idx)] = h
                nodes.append(MerkleNode(level=lvl, index=idx, hash=h))
        LogEntry.objects.bulk_create(rows)
        MerkleNode.objects.bulk_create(nodes)
    return rows


def size() -> int:
    head = LogHead.objects.filter(pk=1).first()
    return head.size if head else 0


def checkpoint(tree_size: int | None = None) -> Checkpoint:
    """The signed checkpoint for `tree_size` (default: the current size), signed at most once."""
    n = size() if tree_size is None else tree_size
    existing = Checkpoint.objects.filter(size=n).first()
    if existing is not None:
        return existing
    if n > size():
        raise LogRangeError(f"tree size {n} is beyond the log's size {size()}")
    root = merkle.root_at(n, _get_nodes)
    body = note.checkpoint_body(settings.HALLMARK_LOG_ORIGIN, n, root)
    signed = note.sign_note(body, settings.HALLMARK_LOG_ORIGIN, registry_identity())
    try:
        with transaction.atomic():
            return Checkpoint.objects.create(size=n, root=root, note=signed)
    except IntegrityError:  # signed concurrently by another process: same bytes, keep theirs
        return Checkpoint.objects.get(size=n)


def inclusion(index: int, tree_size: int) -> list[bytes]:
    if not 0 <= index < tree_size <= size():
        raise LogRangeError(f"no inclusion proof for index {index} in a tree of size {tree_size} "
                            f"(the log has {size()} entries)")
    return merkle.inclusion_proof(index, tree_size, _get_nodes)


def consistency(old_size: int, new_size: int) -> list[bytes]:
    if not 0 < old_size <= new_size <= size():
        raise LogRangeError(f"no consistency proof from {old_size} to {new_size} "
                            f"(the log has {size()} entries)")
    return merkle.consistency_proof(old_size, new_size, _get_nodes)


@dataclass(frozen=True)
class Proof:
    index: int
    bundle: str  # c2sp.org/tlog-proof@v1 text with the signed checkpoint


def prove(index: int) -> Proof:
    """A tlog-proof bundle for entry `index` against the latest signed checkpoint."""
    cp = checkpoint()
    return Proof(index, proofbundle.make_bundle(index, inclusion(index, cp.size), cp.note))
