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


def _locked_head() -> LogHead:
    """The LogHead row, locked for this transaction (created on the first append ever)."""
    try:
        return LogHead.objects.select_for_update().get(pk=1)
    except LogHead.DoesNotExist:
        LogHead.objects.bulk_create([LogHead(pk=1, size=0)], ignore_conflicts=True)
        return LogHead.objects.select_for_update().get(pk=1)


def append(kind: str, data: bytes) -> LogEntry:
    """Append one entry (bytes from `verifier.evidence.logentry`), serialized by a row lock."""
    leaf = merkle.leaf_hash(data)
    with transaction.atomic():
        head = _locked_head()
        index = head.size
        entry = LogEntry.objects.create(index=index, kind=kind, body=data, leaf_hash=leaf)
        completed = merkle.nodes_completed_by_append(index, leaf, _get_nodes)
        MerkleNode.objects.bulk_create(
            [MerkleNode(level=lvl, index=idx, hash=h) for lvl, idx, h in completed])
        head.size = index + 1
        head.save(update_fields=["size"])
    return entry


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
