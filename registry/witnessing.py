"""Witnessed checkpoints: each new checkpoint is sent to the HALLMARK_WITNESSES, and what the
registry publishes (/api/log/checkpoint, report and receipt proofs) is the newest checkpoint
that every configured witness cosigned.

Rules encoded here:
- A witness is sent the consistency proof from the last size it cosigned (from our
  Cosignature rows; 0 at first). On 409 it answers its own latest size, and we retry once
  from there, when that size is not above the checkpoint's.
- A witness that is down, or refuses, is logged and retried at most every RETRY_SECONDS per
  checkpoint; publishing never waits on a failing witness longer than the timeout.
- The published checkpoint is the newest one with a cosignature from every configured witness
  that covers the entry being proved; when there is none (no witness configured, or all down),
  the newest checkpoint, uncosigned, so the log stays usable and an auditor's
  `--witness --quorum` says exactly what is missing.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import Count, Max, Subquery

from registry import translog
from registry.models import Checkpoint, Cosignature, LogHead
from verifier.evidence import proofbundle
from verifier.evidence.cosignature import Witness, add_cosignatures, parse_witness_vkey
from verifier.witness.client import WitnessConflict, WitnessError, add_checkpoint

RETRY_SECONDS = 30  # between two attempts at one witness for one checkpoint
log = logging.getLogger("hallmark.witnessing")


def configured() -> list[tuple[str, Witness]]:
    """(submission URL, witness) for each entry of HALLMARK_WITNESSES."""
    return [(url, parse_witness_vkey(vkey)) for url, vkey in settings.HALLMARK_WITNESSES]


def _last_cosigned_size(witness: Witness) -> int:
    size = Cosignature.objects.filter(witness=witness.vkey).aggregate(
        s=Max("checkpoint_id"))["s"]
    return int(size or 0)


def _proof(old: int, new: int) -> list[bytes]:
    return translog.consistency(old, new) if 0 < old < new else []


def _ask(url: str, witness: Witness, cp: Checkpoint) -> str:
    old = min(_last_cosigned_size(witness), cp.size)
    timeout = settings.HALLMARK_WITNESS_TIMEOUT
    try:
        return add_checkpoint(url, witness, old, _proof(old, cp.size), cp.note, timeout)
    except WitnessConflict as e:
        if e.latest_size > cp.size:
            raise WitnessError(f"witness {witness.name} has cosigned size {e.latest_size}, "
                               f"above {cp.size}", 409) from None
        return add_checkpoint(url, witness, e.latest_size, _proof(e.latest_size, cp.size),
                              cp.note, timeout)


def cosign(cp: Checkpoint) -> int:
    """Ask every configured witness lacking a cosignature on `cp` for one; returns how many
    witnesses have cosigned `cp` afterwards."""
    have = set(cp.cosignatures.values_list("witness", flat=True))
    for url, witness in configured():
        if witness.vkey in have or not cache.add(
                f"hallmark:witness:{witness.key_id.hex()}:{cp.size}", 1, RETRY_SECONDS):
            continue
        started = time.monotonic()
        try:
            line = _ask(url, witness, cp)
        except WitnessError as e:
            log.warning("witness %s checkpoint %s failed (%s) in %.2fs: %s", witness.name,
                        cp.size, e.status or "unreachable", time.monotonic() - started, e)
            continue
        # stored concurrently by another process: same witness, same checkpoint, keep theirs
        with contextlib.suppress(IntegrityError), transaction.atomic():
            Cosignature.objects.create(checkpoint=cp, witness=witness.vkey, line=line)
        have.add(witness.vkey)
        log.info("witness %s cosigned checkpoint %s OK in %.2fs", witness.name, cp.size,
                 time.monotonic() - started)
    return len(have)


def cosigned_note(cp: Checkpoint) -> str:
    """The checkpoint's signed note with every stored cosignature line (sorted by witness)."""
    lines = [c.line for c in cp.cosignatures.order_by("witness")]
    return add_cosignatures(cp.note, lines)


def published(covering: int = 0) -> Checkpoint:
    """The checkpoint to publish: the newest that every configured witness cosigned, of size
    >= `covering`; the newest checkpoint when there is none (see the module docstring)."""
    latest = translog.checkpoint()
    witnesses = [w.vkey for _, w in configured()]
    if not witnesses:
        return latest
    cosign(latest)
    # Served by the (witness, checkpoint) index: only checkpoints that have cosignatures.
    best = (Cosignature.objects.filter(witness__in=witnesses, checkpoint_id__gte=covering)
            .values("checkpoint_id").annotate(n=Count("witness", distinct=True))
            .filter(n=len(witnesses)).order_by("-checkpoint_id").first())
    if best is None or best["checkpoint_id"] == latest.size:
        return latest
    return Checkpoint.objects.get(size=best["checkpoint_id"])


@dataclass(frozen=True)
class Snapshot:
    """One published checkpoint and its cosigned note: every proof of one document uses it."""

    size: int
    note: str

    def bundle(self, index: int) -> str:
        """A tlog-proof of entry `index` against this checkpoint."""
        return proofbundle.make_bundle(index, translog.inclusion(index, self.size), self.note)

    def bundles(self, indexes: list[int]) -> dict[int, str]:
        """tlog-proofs of many entries against this checkpoint (one database read)."""
        if not indexes:
            return {}
        proofs = translog.inclusions(indexes, self.size)
        return {i: proofbundle.make_bundle(i, p, self.note) for i, p in proofs.items()}


def snapshot(covering: int = 0) -> Snapshot:
    """The published checkpoint covering entries below `covering`, with its cosignatures."""
    cp = published(covering)
    return Snapshot(cp.size, cosigned_note(cp))


def published_note() -> str:
    """The published checkpoint's note (what GET /api/log/checkpoint serves), in one query
    when the checkpoint of the log's current size is signed and cosigned by every configured
    witness, which is the steady state between appends; otherwise `snapshot(0).note`, which
    signs the new checkpoint and asks the witnesses.

    Returns:
        The signed note with its stored cosignature lines, as `cosigned_note` builds it.
    """
    head = LogHead.objects.filter(pk=1).values("size")
    rows = list(Checkpoint.objects.filter(size=Subquery(head))  # one query: a LEFT JOIN
                .values_list("note", "cosignatures__witness", "cosignatures__line")
                .order_by("cosignatures__witness"))
    if rows:
        lines = [(w, line) for _, w, line in rows if w is not None]
        if {w.vkey for _, w in configured()} <= {w for w, _ in lines}:
            return add_cosignatures(rows[0][0], [line for _, line in lines])
    return snapshot().note
