import threading

import pytest
from django.conf import settings
from django.db import connection

from registry import translog
from registry.identities import registry_identity
from registry.models import LogEntry, MerkleNode
from verifier.evidence import logentry, merkle, note, proofbundle


def _append(n, start=0):
    return [translog.append("correction", logentry.log_entry(
        "correction", corrects=start + i, envelope_sha256="00" * 32)) for i in range(n)]


@pytest.mark.django_db
def test_every_root_matches_the_reference_merkle_tree():
    entries = _append(13)
    leaves = [bytes(e.leaf_hash) for e in entries]
    for size in range(1, 14):
        cp = translog.checkpoint(size)
        assert bytes(cp.root) == merkle.root(leaves[:size])


@pytest.mark.django_db
def test_inclusion_and_consistency_proofs_verify():
    entries = _append(21)
    root = merkle.root([bytes(e.leaf_hash) for e in entries])
    for e in entries:
        proof = translog.inclusion(e.index, 21)
        assert merkle.verify_inclusion(bytes(e.leaf_hash), e.index, 21, proof, root)
    for old in range(1, 21):
        old_root = merkle.root([bytes(e.leaf_hash) for e in entries[:old]])
        assert merkle.verify_consistency(old, 21, old_root, root, translog.consistency(old, 21))


@pytest.mark.django_db
def test_a_checkpoint_is_signed_once_per_size_and_bundles_verify():
    _append(5)
    first, again = translog.checkpoint(), translog.checkpoint()
    assert first.note == again.note
    ident = registry_identity()
    body = note.verify_note(first.note, [(settings.HALLMARK_LOG_ORIGIN, ident.public_key)])
    assert note.parse_checkpoint(body).size == 5
    entry = LogEntry.objects.get(index=3)
    proof = translog.prove(3)
    cp = proofbundle.verify_bundle(bytes(entry.body), proof.bundle, settings.HALLMARK_LOG_ORIGIN,
                                   ident.public_key)
    assert cp.size == 5


@pytest.mark.django_db
def test_it_refuses_proofs_beyond_the_log():
    _append(3)
    with pytest.raises(translog.LogRangeError, match="beyond|no inclusion"):
        translog.inclusion(3, 3)
    with pytest.raises(translog.LogRangeError):
        translog.consistency(2, 4)


@pytest.mark.django_db(transaction=True)
def test_concurrent_appenders_leave_no_gap_no_duplicate_and_no_fork():
    if connection.vendor != "postgresql":
        pytest.skip("row locks are exercised on PostgreSQL (the scaled mode)")
    errors = []

    def worker(k):
        try:
            _append(40, start=k * 1000)
        except Exception as e:  # surfaced below
            errors.append(e)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    indexes = sorted(LogEntry.objects.values_list("index", flat=True))
    assert indexes == list(range(320))
    leaves = [bytes(h) for h in LogEntry.objects.order_by("index").values_list("leaf_hash", flat=True)]
    assert bytes(translog.checkpoint(320).root) == merkle.root(leaves)
    assert MerkleNode.objects.filter(level=0).count() == 320


@pytest.mark.django_db
def test_a_batch_append_builds_the_same_tree_as_single_appends():
    _append(5)
    batch = translog.append_many("correction", [
        logentry.log_entry("correction", corrects=100 + i, envelope_sha256="11" * 32)
        for i in range(1100)])  # more than one INSERT chunk
    assert [e.index for e in batch] == list(range(5, 1105))
    leaves = [bytes(h) for h in LogEntry.objects.order_by("index").values_list("leaf_hash", flat=True)]
    assert bytes(translog.checkpoint(1105).root) == merkle.root(leaves)
    proof = translog.inclusion(700, 1105)
    assert merkle.verify_inclusion(leaves[700], 700, 1105, proof, merkle.root(leaves))
