"""The append-only transparency log in the database (RFC 6962 hashing, C2SP checkpoints).

Appends take a row lock on LogHead (on PostgreSQL inside the `hallmark_log_append` function of
migration 0003, one statement), so concurrent appenders are serialized: no index is
skipped or used twice and the tree never forks. Each append stores the leaf and every
perfect subtree it completes, so any root or proof needs O(log n) stored nodes, read in
one query.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

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
    row lock until commit, which serializes appenders.

    On PostgreSQL the same round trip also lets the transaction's commit return before its WAL
    reaches the disk (`SET LOCAL synchronous_commit TO OFF`); otherwise the flush (~2-8 ms
    here), paid while the lock is held, would cap appends at a few hundred per second. Safe
    because nothing is shown as logged before a synchronous commit flushes it: PostgreSQL
    flushes the WAL in order, so the (synchronous) commit that stores the first checkpoint
    covering an entry, or any later ordinary commit, makes the entry durable first. A crash
    before that loses the entry together with the rest of its transaction, as if it had never
    been asked for; a signed checkpoint never covers a lost entry, so the tree cannot fork.
    """
    q = connection.ops.quote_name
    size = q("size")
    sql = (f"UPDATE {q(LogHead._meta.db_table)} SET {size} = {size} + {int(count)} "
           f"WHERE id = 1 RETURNING {size}")
    postgres = connection.vendor == "postgresql"
    with connection.cursor() as cur:
        for attempt in range(2):
            if postgres:  # two statements, one round trip (no parameters: the count is an int)
                cur.execute(f"SET LOCAL synchronous_commit TO OFF; {sql}")
                cur.nextset()
            else:
                cur.execute(sql)
            row = cur.fetchone()
            if row is not None or attempt:
                break
            # the first append ever: create the row, then take its lock
            LogHead.objects.bulk_create([LogHead(pk=1, size=0)], ignore_conflicts=True)
    return int(row[0]) - count


def append(kind: str, data: bytes) -> LogEntry:
    """Append one entry (bytes from `verifier.evidence.logentry`).

    On PostgreSQL one statement does it all under the row lock (the `hallmark_log_append`
    function of migration 0003, same hashing and rules as `append_many`).
    """
    if connection.vendor != "postgresql":
        return append_many(kind, [data])[0]
    now = timezone.now()
    with transaction.atomic(savepoint=False), connection.cursor() as cur:
        cur.execute("SELECT hallmark_log_append(%s, %s, %s)", [kind, data, now])
        (index,) = cur.fetchone()
    return LogEntry(index=index, kind=kind, body=data, leaf_hash=merkle.leaf_hash(data),
                    created_at=now)


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
        _insert(rows, nodes)
    return rows


def _insert(rows: list[LogEntry], nodes: list[MerkleNode]) -> None:
    """Multi-row INSERTs, 500 rows at a time (the ORM's bulk_create costs more than the
    round trips at this size)."""
    now = timezone.now()
    for r in rows:
        r.created_at = now
    _insert_rows(LogEntry, ("index", "kind", "body", "leaf_hash", "created_at"),
                 [(r.index, r.kind, r.body, r.leaf_hash, now) for r in rows])
    _insert_rows(MerkleNode, ("level", "index", "hash"), [(n.level, n.index, n.hash) for n in nodes])


def _insert_rows(model: type, columns: tuple[str, ...], values: list[tuple[object, ...]]) -> None:
    q = connection.ops.quote_name
    head = f"INSERT INTO {q(model._meta.db_table)} ({', '.join(map(q, columns))}) VALUES "
    one = f"({', '.join(['%s'] * len(columns))})"
    with connection.cursor() as cur:
        for i in range(0, len(values), 500):
            chunk = values[i:i + 500]
            cur.execute(head + ", ".join([one] * len(chunk)), [v for row in chunk for v in row])


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


def inclusions(indexes: list[int], tree_size: int) -> dict[int, list[bytes]]:
    """Inclusion proofs of many entries at one size, reading the nodes in one query."""
    if not 0 < tree_size <= size() or any(not 0 <= i < tree_size for i in indexes):
        raise LogRangeError(f"no inclusion proofs for indexes {sorted(indexes)[:5]}… in a tree "
                            f"of size {tree_size} (the log has {size()} entries)")
    wanted = sorted(set(indexes))
    return dict(zip(wanted, merkle.inclusion_proofs(wanted, tree_size, _get_nodes), strict=True))


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
