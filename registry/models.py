"""The system of record: owners, models, commitments, suspects, verifications, reports, log."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, models
from django.db.models import F, Q
from django.utils import timezone

from verifier import scan

# Verification.status
QUEUED, FETCHING, CHECKING, FINALIZING, DONE, FAILED = (
    "queued", "fetching", "checking", "finalizing", "done", "failed")
VERIFICATION_STATUSES = [(s, s) for s in (QUEUED, FETCHING, CHECKING, FINALIZING, DONE, FAILED)]
# Verification states a worker may be driving (the sweeper's concern)
ACTIVE = (QUEUED, FETCHING, CHECKING, FINALIZING)
# CheckResult.status: pending (row written at fan-out, not started), running (claimed under a
# lease), then one of the finished states
PENDING, RUNNING, CHECKED, NOT_APPLICABLE, ERROR = (
    "pending", "running", "checked", "not applicable", "error")
CHECK_STATUSES = [(s, s) for s in (PENDING, RUNNING, CHECKED, NOT_APPLICABLE, ERROR)]
UNFINISHED = (PENDING, RUNNING)
# Suspect.kind
FILE, ENDPOINT, HUB = "file", "endpoint", "hub"
# LogEntry.kind
LOG_KINDS = [(k, k) for k in ("owner", "model", "commitment", "report", "licence", "correction",
                              "countersignature")]


def lapsed(now: datetime) -> Q:
    """No live lease: none taken, or its holder stopped renewing it (dead worker)."""
    return Q(lease_until=None) | Q(lease_until__lt=now)


def stale(now: datetime, redrive_after: timedelta) -> Q:
    """Work no live worker holds and no message in flight is likely to reach, so the sweeper
    sends one: sending failed (driven_at null), a worker claimed it after the last message and
    died (driven_at < lease_until, lapsed), or the last message is older than `redrive_after`
    (lost with a broker restart or a dead worker's reservation; a duplicate is harmless)."""
    return lapsed(now) & (Q(driven_at=None) | Q(driven_at__lt=F("lease_until"))
                          | Q(driven_at__lt=now - redrive_after))


class Owner(models.Model):
    """A Django user plus an Ed25519 identity.

    The signing seed is sealed with the registry master key (SecretBox); it is empty when
    the owner keeps the key client-side ("bring your own key").
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                related_name="owner")
    public_key = models.BinaryField(max_length=32)
    keyid = models.CharField(max_length=64, unique=True)  # hex SHA-256 of the public key
    sealed_signing_key = models.BinaryField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    statement = models.TextField(blank=True)  # the signed owner statement (DSSE, canonical JSON)
    log_index = models.BigIntegerField(null=True)  # its "owner" log entry

    def __str__(self) -> str:
        return self.user.get_username()

    @property
    def byok(self) -> bool:
        """True when the registry does not hold this owner's signing key."""
        return not self.sealed_signing_key


class RegisteredModel(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    owner = models.ForeignKey(Owner, on_delete=models.PROTECT, related_name="models")
    name = models.CharField(max_length=200)
    version = models.CharField(max_length=100, default="1")
    description = models.TextField(blank=True)
    artifact_sha256 = models.CharField(max_length=64, blank=True)  # digest of the released file
    base_model_sha256 = models.CharField(max_length=64, blank=True)  # for adapters (SEAL)
    envelope = models.TextField()  # the owner-signed model request (DSSE, canonical JSON)
    created_at = models.DateTimeField(auto_now_add=True)
    log_index = models.BigIntegerField(null=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "name", "version"],
                                               name="one_model_per_owner_name_version")]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


class Commitment(models.Model):
    """A keyed watermark commitment: SHA-256 over scheme, salt and the key blob's digest.

    The key blob itself is sealed in escrow so workers can verify without the owner.
    """

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="commitments")
    scheme = models.CharField(max_length=40)
    public_params = models.JSONField(default=dict)
    digest = models.CharField(max_length=64, unique=True)  # the commitment, hex
    salt = models.BinaryField(max_length=32)
    key_sha256 = models.CharField(max_length=64)
    sealed_key = models.BinaryField()  # SecretBox(master key, key blob)
    envelope = models.TextField()  # the owner-signed commitment request (DSSE, canonical JSON)
    # verifier.screening.Screening.to_dict() at upload, or {"status": "not needed"} for a key
    # whose every random element derives from its seed ({} = committed before screening existed)
    screening = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    log_index = models.BigIntegerField(null=True)
    # The scan index (verifier.scan.Requirement, set at upload): what the key needs from a
    # suspect. "any" + "" (the default) makes a commitment a candidate of every scan.
    needs = models.CharField(max_length=8, default="any")  # "weights" | "predict" | "any"
    index_shape = models.CharField(max_length=64, blank=True)  # e.g. "1024x1024"; "" = none
    requirement = models.JSONField(default=dict)  # Requirement.to_dict(): every shape needed

    class Meta:
        ordering = ["created_at"]
        # A registry scan reads every commitment in log order.
        indexes = [models.Index(fields=["log_index"], name="commitment_log_order"),
                   # A scan's candidates: needs in the suspect's access, index_shape in its shapes.
                   models.Index(fields=["needs", "index_shape"], name="commitment_scan_index")]

    def __str__(self) -> str:
        return f"{self.scheme}:{self.digest[:12]}"

    @staticmethod
    def index_fields(scheme: str, public_params: dict[str, object]) -> dict[str, object]:
        """The scan index fields of a commitment with this scheme and these public params.

        Raises verifier.scan.ScanError for an uchida key without valid "shapes".
        """
        r = scan.requirement(scheme, public_params)
        return {"needs": r.access, "index_shape": r.index_shape, "requirement": r.to_dict()}

    @property
    def screening_status(self) -> str:
        """"screened", "unscreened" or "not needed", as every report row states it."""
        return str(self.screening.get("status", "unscreened"))


class Suspect(models.Model):
    """A submitted URL; digest, size and format once fetched."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    url = models.URLField(max_length=2000)
    kind = models.CharField(max_length=10, default=FILE)
    sha256 = models.CharField(max_length=64, blank=True)
    size = models.BigIntegerField(null=True)
    format = models.CharField(max_length=40, blank=True)
    fetched_at = models.DateTimeField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Hub suspects (kind "hub"): the repo, the commit sha its revision resolved to at the first
    # fetch (pinned), and every file used with its size and claimed LFS digest.
    hub_repo = models.CharField(max_length=200, blank=True)
    hub_commit = models.CharField(max_length=64, blank=True)
    hub_files = models.JSONField(default=list, blank=True)

    class Meta:
        # Priority: the first time a digest (or URL) was seen by the registry.
        indexes = [models.Index(fields=["sha256", "fetched_at"], name="suspect_first_seen"),
                   models.Index(fields=["url", "created_at"], name="suspect_url_seen")]


class PinnedRange(models.Model):
    """A byte range of a Hub suspect's file as first read by any check on any host; every later
    read of the same range (another check, another host) must find the same SHA-256."""

    suspect = models.ForeignKey(Suspect, on_delete=models.CASCADE, related_name="pinned_ranges")
    file = models.CharField(max_length=1000)  # path in the repo
    begin = models.BigIntegerField()  # first byte
    end = models.BigIntegerField()  # one past the last byte
    sha256 = models.CharField(max_length=64)
    pinned_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        # One pin per range; also serves the lookup (suspect, file, begin, end) of each read.
        constraints = [models.UniqueConstraint(fields=["suspect", "file", "begin", "end"],
                                               name="one_pin_per_range")]


class Verification(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    suspect = models.ForeignKey(Suspect, on_delete=models.PROTECT, related_name="verifications")
    requested_by = models.ForeignKey(Owner, on_delete=models.PROTECT, related_name="verifications")
    target = models.ForeignKey(RegisteredModel, null=True, blank=True, on_delete=models.PROTECT,
                               related_name="verifications")  # None: scan the whole registry
    status = models.CharField(max_length=12, choices=VERIFICATION_STATUSES, default=QUEUED)
    error_code = models.CharField(max_length=40, blank=True)
    error_message = models.TextField(blank=True)
    checks_expected = models.IntegerField(default=0)
    checks_done = models.IntegerField(default=0)
    queries = models.IntegerField(default=0)  # black-box queries made across all checks
    submitted_at = models.DateTimeField(auto_now_add=True)
    fetch_claimed_at = models.DateTimeField(null=True)  # when a worker last claimed the fetch
    fetched_at = models.DateTimeField(null=True)
    finished_at = models.DateTimeField(null=True)
    # The suspect's declared provenance (verifier.provenance), set with the fetch and signed
    # in the report beside the verdict, never in it; {} for verifications made before it.
    provenance = models.JSONField(default=dict, blank=True)
    # Publisher keys (EC public key PEMs) the requester named for the suspect's model-signing
    # bundle, tried beside the key shipped in the suspect.
    publisher_keys = models.JSONField(default=list, blank=True)
    # A worker fetching or finalizing holds a lease it keeps renewing; past it, the worker is dead.
    lease_until = models.DateTimeField(null=True)
    # When a message was last sent for the current state; null when sending it failed.
    driven_at = models.DateTimeField(null=True, default=timezone.now)
    # A scan's selection, set at fan-out: {"profile": ..., "commitments": N, "candidates": n,
    # "not_applicable": {scheme: count}} (commitments not tested: no row each); {} targeted.
    scan = models.JSONField(default=dict)

    class Meta:
        ordering = ["-submitted_at"]
        # The sweeper: active verifications by state and by when they were last driven.
        indexes = [models.Index(fields=["status", "driven_at"], name="verification_sweep",
                                condition=Q(status__in=ACTIVE))]

    def claim(self, from_status: str, to_status: str) -> bool:
        """Atomically move from one status to the next; False if someone else already did."""
        changed = Verification.objects.filter(pk=self.pk, status=from_status).update(
            status=to_status, lease_until=None, driven_at=timezone.now())
        if changed:
            self.status = to_status
        return bool(changed)

    def claim_fetch(self, lease: timedelta) -> bool:
        """Claim the fetch under a lease: a queued verification, or a fetching one whose lease
        ran out (its worker died). A duplicate delivery during a live fetch gets False."""
        now = timezone.now()
        claimable = Q(status=QUEUED) | Q(status=FETCHING) & lapsed(now)
        changed = Verification.objects.filter(claimable, pk=self.pk).update(
            status=FETCHING, fetch_claimed_at=now, lease_until=now + lease)
        if changed:
            self.status, self.fetch_claimed_at = FETCHING, now
        return bool(changed)

    def claim_finalize(self, lease: timedelta) -> bool:
        """Claim the finalize step under a lease (no other live finalize of this verification)."""
        now = timezone.now()
        return bool(Verification.objects.filter(lapsed(now), pk=self.pk, status=FINALIZING).update(
            lease_until=now + lease))

    def release(self) -> None:
        """Give the lease back (an infrastructure failure: a retry may claim again at once)."""
        Verification.objects.filter(pk=self.pk).update(lease_until=None)

    def unfinished_checks(self) -> int:
        return self.checks.filter(status__in=UNFINISHED).count()

    def count_check_done(self, n: int = 1, queries: int = 0) -> bool:
        """Add `n` finished checks and the black-box `queries` they made, in one statement;
        True when the last check expected is among them."""
        table, q = Verification._meta.db_table, connection.ops.quote_name
        with connection.cursor() as cur:
            cur.execute(f"UPDATE {q(table)} SET {q('checks_done')} = {q('checks_done')} + %s, "
                        f"{q('queries')} = {q('queries')} + %s WHERE {q('id')} = %s "
                        f"RETURNING {q('checks_done')}, {q('checks_expected')}",
                        [n, queries, self.pk])
            self.checks_done, self.checks_expected = cur.fetchone()
        return self.checks_done >= self.checks_expected

    @property
    def progress(self) -> str:
        return f"{self.checks_done}/{self.checks_expected}"


class CheckResult(models.Model):
    """One scheme on one commitment within one verification (idempotent by the constraint)."""

    verification = models.ForeignKey(Verification, on_delete=models.CASCADE, related_name="checks")
    commitment = models.ForeignKey(Commitment, on_delete=models.PROTECT, related_name="checks")
    scheme = models.CharField(max_length=40)
    status = models.CharField(max_length=16, choices=CHECK_STATUSES, default=PENDING)
    attempts = models.IntegerField(default=0)  # runs started and not released (lost workers + 1)
    statistic = models.FloatField(null=True)
    n = models.IntegerField(null=True)
    log10_p = models.FloatField(null=True)  # -inf is stored as -1e308
    null = models.CharField(max_length=40, blank=True)
    queries = models.IntegerField(default=0)
    claim = models.TextField(blank=True)
    details = models.JSONField(default=dict)
    may_attribute = models.BooleanField(default=True)  # False: integrity-only evidence
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True)
    seconds = models.FloatField(null=True)
    lease_until = models.DateTimeField(null=True)  # renewed by the running worker
    driven_at = models.DateTimeField(null=True, default=timezone.now)  # last message sent; null: failed
    batch = models.IntegerField(null=True)  # the check batch (one task) it was fanned out in
    runner = models.CharField(max_length=32, blank=True)  # the batch run that claimed it

    class Meta:
        constraints = [models.UniqueConstraint(fields=["verification", "commitment", "scheme"],
                                               name="one_check_per_verification_commitment_scheme")]
        # The sweeper: unfinished checks whose message is lost or whose worker died.
        indexes = [models.Index(fields=["status", "driven_at"], name="check_sweep",
                                condition=Q(status__in=UNFINISHED)),
                   # A batch task claims its rows: verification × batch.
                   models.Index(fields=["verification", "batch"], name="check_batch")]

    def claim_run(self, lease: timedelta) -> bool:
        """Claim a pending check, or a running one whose lease ran out (its worker died), and
        count the run; False if a live worker holds it or it is finished."""
        now = timezone.now()
        claimable = Q(status=PENDING) | Q(status=RUNNING) & lapsed(now)
        changed = CheckResult.objects.filter(claimable, pk=self.pk).update(
            status=RUNNING, attempts=F("attempts") + 1, lease_until=now + lease, runner="")
        if changed:
            self.refresh_from_db(fields=["status", "attempts", "lease_until"])
        return bool(changed)

    def release(self) -> None:
        """Back to pending, uncounted (an infrastructure failure, not a lost worker)."""
        CheckResult.objects.filter(pk=self.pk, status=RUNNING).update(
            status=PENDING, attempts=F("attempts") - 1, lease_until=None)

    @staticmethod
    def claim_batch(verification_id: int, batch: int, lease: timedelta, runner: str) -> int:
        """Claim every claimable row of one batch (pending, or running under a lapsed lease)
        for the run `runner`, counting the run; returns how many rows it took. Rows a live
        worker holds (e.g. a single re-driven check) and finished rows are left alone."""
        now = timezone.now()
        claimable = Q(status=PENDING) | Q(status=RUNNING) & lapsed(now)
        return CheckResult.objects.filter(claimable, verification_id=verification_id,
                                          batch=batch).update(
            status=RUNNING, attempts=F("attempts") + 1, lease_until=now + lease, runner=runner)

    @staticmethod
    def store(values: dict[int, dict[str, object]]) -> None:
        """Write each row's field values (every row the same field names) in one pipelined
        statement per row. `bulk_update` builds a CASE per field over every row, which cost
        7 of 11 s of a 250-row batch in Python; this costs milliseconds, on any backend."""
        if not values:
            return
        names = list(next(iter(values.values())))
        fields = [CheckResult._meta.get_field(n) for n in names]
        qn = connection.ops.quote_name
        sql = (f"UPDATE {qn(CheckResult._meta.db_table)} SET "
               f"{', '.join(f'{qn(f.column)} = %s' for f in fields)} WHERE {qn('id')} = %s")
        params = [[f.get_db_prep_save(row[f.name], connection) for f in fields] + [pk]  # type: ignore[attr-defined]
                  for pk, row in values.items()]
        with connection.cursor() as cursor:
            cursor.executemany(sql, params)

    @staticmethod
    def release_batch(runner: str) -> None:
        """Give back the rows run `runner` still holds, uncounted (an infrastructure failure)."""
        CheckResult.objects.filter(runner=runner, status=RUNNING).update(
            status=PENDING, attempts=F("attempts") - 1, lease_until=None, runner="")


class Report(models.Model):
    """The signed envelope, exactly as signed; never changed after signing."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    verification = models.OneToOneField(Verification, on_delete=models.PROTECT, related_name="report")
    envelope = models.TextField()  # canonical JSON of the DSSE envelope
    log_index = models.BigIntegerField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # The served document (registry.reporting.store_document): rendered at signing against the
    # checkpoint published then, re-rendered only when a countersignature is logged.
    document = models.BinaryField(null=True)
    etag = models.CharField(max_length=70, blank=True)  # strong ETag: '"<sha256 of document>"'


class ReferenceModel(models.Model):
    """An independent model of one input domain, in the panel that screens keys at upload.

    The model bytes live in the database because hosts share only PostgreSQL and Redis.
    `format` is "onnx", or "safetensors" with `architecture` naming a constructor in
    `registry.panel.ARCHITECTURES` (a state dict is never unpickled).
    """

    name = models.CharField(max_length=200, unique=True)
    domain = models.CharField(max_length=200)  # registry.panel.domain_of(key.public_params())
    format = models.CharField(max_length=20)  # "safetensors" | "onnx"
    architecture = models.CharField(max_length=100, blank=True)  # for safetensors state dicts
    data = models.BinaryField()  # the model file's bytes
    sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["domain", "name"]
        # Screening loads the panel of one domain at each upload.
        indexes = [models.Index(fields=["domain"], name="reference_model_domain")]

    def __str__(self) -> str:
        return f"{self.name} ({self.domain})"


class Licence(models.Model):
    """A decryption licence for an AdvParams-encrypted model, issued to a named licensee."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    commitment = models.ForeignKey(Commitment, on_delete=models.PROTECT, related_name="licences")
    licensee = models.CharField(max_length=200)
    document = models.TextField()  # canonical JSON of the signed licence envelope
    log_index = models.BigIntegerField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)


class LogEntry(models.Model):
    """One leaf of the append-only transparency log (RFC 6962 hashing)."""

    index = models.BigIntegerField(primary_key=True)
    kind = models.CharField(max_length=20, choices=LOG_KINDS)
    body = models.BinaryField()  # canonical JSON, exactly the bytes that were hashed
    leaf_hash = models.BinaryField(max_length=32)
    created_at = models.DateTimeField(auto_now_add=True)


class MerkleNode(models.Model):
    """The hash of a perfect aligned subtree: leaves [index·2^level, (index+1)·2^level)."""

    level = models.SmallIntegerField()
    index = models.BigIntegerField()
    hash = models.BinaryField(max_length=32)

    class Meta:
        # Proofs fetch O(log n) nodes by (level, index) in one query.
        constraints = [models.UniqueConstraint(fields=["level", "index"], name="one_node_per_position")]


class LogHead(models.Model):
    """A single row locked by every append, so appends are serialized (no fork, no gap)."""

    id = models.SmallIntegerField(primary_key=True, default=1)
    size = models.BigIntegerField(default=0)


class Checkpoint(models.Model):
    """A signed checkpoint (C2SP signed note); at most one per tree size."""

    size = models.BigIntegerField(primary_key=True)
    root = models.BinaryField(max_length=32)
    note = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)


class Cosignature(models.Model):
    """A witness's cosignature line on a checkpoint (c2sp.org/tlog-cosignature), as received."""

    checkpoint = models.ForeignKey(Checkpoint, on_delete=models.CASCADE,
                                   related_name="cosignatures")
    witness = models.CharField(max_length=300)  # the witness's vkey
    line = models.TextField()  # "— <name> <base64>\n"
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["checkpoint", "witness"],
                                               name="one_cosignature_per_witness")]
        # The latest size a witness cosigned: filter by witness, max checkpoint.
        indexes = [models.Index(fields=["witness", "checkpoint"], name="cosignature_by_witness")]


class Countersignature(models.Model):
    """An owner's own signature over a report's DSSE PAE, added after signing (BYOK owners)."""

    report = models.ForeignKey(Report, on_delete=models.PROTECT, related_name="countersignatures")
    owner = models.ForeignKey(Owner, on_delete=models.PROTECT, related_name="countersignatures")
    sig = models.TextField()  # base64 Ed25519 signature over PAE(payloadType, payload)
    log_index = models.BigIntegerField(null=True)  # its "countersignature" log entry
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["report", "owner"],
                                               name="one_countersignature_per_owner")]
